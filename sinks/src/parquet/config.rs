//! `[sinks.parquet]` of flows.toml, and the writer settings it gives.

use std::path::PathBuf;

use amoskys_schemas::values::{Bounded, PositiveSecs, Secs};
use serde::Deserialize;

use super::ParquetSettings;
use crate::SinkError;

/// `[sinks.parquet]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetConfig {
    /// Output root; `replay --out` overrides it.
    pub path: PathBuf,
    /// zstd level, 1 (fast) to 22 (small).
    pub zstd_level: Bounded<1, 22>,
    /// Rows per row group.
    pub row_group_rows: Bounded<1, 16_777_216>,
    /// Files open at once per table.
    pub max_open_files: Bounded<1, 1024>,
    /// The long-running job closes each file after this long, so readers of the
    /// directory see rows at most this old; a replay closes files when done.
    pub roll_interval: PositiveSecs,
}

impl Default for ParquetConfig {
    fn default() -> Self {
        ParquetConfig {
            path: PathBuf::from("data"),
            zstd_level: Bounded(3),
            row_group_rows: Bounded(131_072),
            max_open_files: Bounded(16),
            roll_interval: PositiveSecs(Secs::from_secs(60)),
        }
    }
}

impl ParquetConfig {
    /// Writer settings for files under `root`, named after the run `run_id`.
    pub fn settings(&self, root: PathBuf, run_id: String) -> Result<ParquetSettings, SinkError> {
        let s = ParquetSettings {
            root,
            zstd_level: self.zstd_level.0 as i32,
            row_group_rows: self.row_group_rows.0 as usize,
            max_open_files: self.max_open_files.0 as usize,
            run_id,
            roll_after: None,
            publish_at_end: false,
            commit: None,
        };
        s.validate()?;
        Ok(s)
    }
}
