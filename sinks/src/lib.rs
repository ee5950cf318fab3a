//! Sinks of amoskys-pipeline.
//!
//! Today: hive-partitioned Parquet (`<root>/<table>/date=YYYY-MM-DD/hour=HH/*.parquet`),
//! each file written under a temporary name and renamed into place only after its
//! footer is on disk, so a reader never sees a partial file.

mod error;
pub mod keys;
pub mod parquet;
pub mod webhook;

pub use error::SinkError;
