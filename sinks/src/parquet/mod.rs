//! Partitioned Parquet tables.

mod table;
mod writer;

pub use table::{AlertTable, EventTable, FeatureTable, FlowTable, TableRows};
pub use writer::{ParquetSettings, SinkSummary, TableWriter, run_table};
