//! amoskys-pipeline: the binary's library half — configuration, graph assembly and
//! the runtime bridge between sources, the timely dataflow and the sinks.

pub mod bridge;
pub mod config;
pub mod durable;
mod error;
pub mod export;
pub mod generate;
pub mod graph;
mod ingest;
pub mod job;
mod metrics;
pub mod outputs;
pub mod replay;
pub mod run;
pub mod train;

pub use error::PipelineError;
