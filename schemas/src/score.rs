//! Anomaly scores: what a model said of one entity's window, and the `scores`
//! table.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::{Entity, HOP_SECONDS, SchemaError, WINDOW_SECONDS};

/// One model's score of one feature row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    pub entity: Entity,
    /// The window (pane index of its start).
    pub window: u64,
    pub model: Arc<str>,
    pub score: f64,
    pub threshold: f64,
}

impl ScoreRow {
    pub fn window_start_us(&self) -> i64 {
        (self.window as i64).saturating_mul(HOP_SECONDS * 1_000_000)
    }
}

/// The `scores` table: one row per model per feature row.
pub fn scores_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new(crate::cols::ENTITY, DataType::Utf8, false),
        Field::new(crate::cols::WINDOW_START, ts.clone(), false),
        Field::new(crate::cols::WINDOW_END, ts, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
    ]))
}

pub fn scores_to_batch(rows: &[ScoreRow]) -> Result<RecordBatch, SchemaError> {
    let n = rows.len();
    let mut entity = StringBuilder::with_capacity(n, n * 16);
    let mut model = StringBuilder::with_capacity(n, n * 8);
    let mut start = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let (mut score, mut threshold) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    for r in rows {
        entity.append_value(r.entity.to_string());
        let s = r.window_start_us();
        start.append_value(s);
        end.append_value(s + WINDOW_SECONDS * 1_000_000);
        model.append_value(&r.model);
        score.append_value(r.score);
        threshold.append_value(r.threshold);
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(entity.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(model.finish()),
        Arc::new(score.finish()),
        Arc::new(threshold.finish()),
    ];
    Ok(RecordBatch::try_new(scores_schema(), arrays)?)
}
