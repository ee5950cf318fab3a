use std::path::PathBuf;

/// What went wrong answering a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// DataFusion's own message: a query that does not parse or plan, a missing
    /// table or column, a failed read.
    #[error("{}", .0.strip_backtrace())]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("{0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}
