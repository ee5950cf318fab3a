//! Partitioned Parquet tables.

pub mod commit;
mod config;
mod recent;
mod table;
mod writer;

pub use config::ParquetConfig;
pub use recent::Recent;

pub use table::{AlertTable, EventTable, FeatureTable, FlowTable, ScoreTable, TableRows};
pub use writer::{
    IN_PROGRESS_DIR, MAX_RECENT_ROWS, ParquetSettings, SinkSummary, TableWriter, hour_partition,
    is_scratch, job_scratch_files, publish, run_files, run_table, run_table_live,
};
