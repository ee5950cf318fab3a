use std::path::PathBuf;

use thiserror::Error;

/// Errors a source reports. Bad *packets* are never errors: they are counted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("{path}: no such file, directory or matching glob")]
    NotFound { path: String },
    #[error("{pattern}: invalid glob pattern: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("{}: cannot read directory: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable capture: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    #[error("no capture files found in {0}")]
    NoCaptures(String),
    #[error("the pipeline stopped accepting packets")]
    Closed,
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    /// A source's task or thread failed outside its own error handling.
    #[error("{0}")]
    Failed(String),
}

impl SourceError {
    /// A short, bounded code for metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            SourceError::NotFound { .. } => "not_found",
            SourceError::BadGlob { .. } => "bad_glob",
            SourceError::ReadDir { .. } => "read_dir",
            SourceError::Open { .. } => "open",
            SourceError::NoCaptures(_) => "no_captures",
            SourceError::Closed => "closed",
            SourceError::Config(_) => "config",
            SourceError::Bind { .. } => "bind",
            SourceError::Failed(_) => "failed",
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SourceError::ReadDir { .. })
    }
}
