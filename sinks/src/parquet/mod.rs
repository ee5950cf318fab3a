//! Partitioned Parquet tables.

pub mod commit;
mod config;
mod live;
mod recent;
mod table;
mod writer;

pub use config::ParquetConfig;
pub use recent::Recent;

pub use live::{MAX_RECENT_ROWS, run_table, run_table_live};
pub use table::{AlertTable, EventTable, FeatureTable, FlowTable, ScoreTable, TableRows};
pub use writer::{
    IN_PROGRESS_DIR, ParquetSettings, SinkSummary, TableWriter, hour_partition, is_scratch,
    job_scratch_files, publish, run_files,
};
