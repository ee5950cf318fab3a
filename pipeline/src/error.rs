use thiserror::Error;

use crate::config::ConfigError;

/// Why a pipeline run failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Source(#[from] amoskys_sources::SourceError),
    #[error("{0}")]
    Sink(#[from] amoskys_sinks::SinkError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("dataflow: {0}")]
    Dataflow(String),
    #[error("export-training: {0}")]
    Export(String),
    #[error("train: {0}")]
    Train(String),
    #[error("model: {0}")]
    Model(String),
}

impl PipelineError {
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Config(_) => "config",
            PipelineError::Source(e) => e.code(),
            PipelineError::Sink(e) => e.code(),
            PipelineError::Io { .. } => "io",
            PipelineError::Dataflow(_) => "dataflow",
            PipelineError::Export(_) => "export",
            PipelineError::Train(_) => "train",
            PipelineError::Model(_) => "model",
        }
    }
}
