use std::path::PathBuf;

use thiserror::Error;

/// Errors a sink reports.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SinkError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("{0}")]
    Schema(#[from] amoskys_schemas::SchemaError),
    #[error("invalid parquet sink setting: {0}")]
    Config(String),
    #[error("{0}")]
    Webhook(String),
}

impl SinkError {
    /// A short, bounded code for metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            SinkError::Io { .. } => "io",
            SinkError::Parquet(_) => "parquet",
            SinkError::Schema(_) => "schema",
            SinkError::Config(_) => "config",
            SinkError::Webhook(_) => "webhook",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Io { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SinkError {
        let path = path.into();
        move |source| SinkError::Io { path, source }
    }
}
