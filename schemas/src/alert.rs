//! Alerts: what a detection raised about one entity, with the evidence that
//! fired it, and the `alerts` table.

use std::fmt;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::{Entity, HOP_SECONDS, SchemaError, WINDOW_SECONDS};

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

/// One alert. An occurrence seen by several overlapping windows is one alert,
/// raised in the first of them; `id` depends only on the rule, the entity and that
/// window, so the same input gives the same id (the idempotency key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub severity: Severity,
    pub entity: Entity,
    /// The window (pane index of its start) the alert was raised in.
    pub window: u64,
    /// The sources whose features fired it (`pcap`, `syslog`, `snmp`, `mqtt`).
    pub sources: Vec<String>,
    /// The feature values that fired it, by feature name.
    pub evidence: Vec<(String, f64)>,
    pub summary: String,
}

impl Alert {
    pub fn window_start_us(&self) -> i64 {
        (self.window as i64).saturating_mul(HOP_SECONDS * 1_000_000)
    }

    /// The evidence as a JSON object, feature name to value.
    pub fn evidence_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.evidence
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect(),
        )
    }
}

/// The `alerts` table: one row per alert.
pub fn alerts_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        text("id"),
        text("rule"),
        text("severity"),
        text(crate::cols::ENTITY),
        Field::new(crate::cols::WINDOW_START, ts.clone(), false),
        Field::new(crate::cols::WINDOW_END, ts, false),
        text("sources"),
        text("evidence"),
        text("summary"),
    ]))
}

pub fn alerts_to_batch(rows: &[Alert]) -> Result<RecordBatch, SchemaError> {
    let n = rows.len();
    let text = || StringBuilder::with_capacity(n, n * 16);
    let (mut id, mut rule, mut severity, mut entity) = (text(), text(), text(), text());
    let (mut sources, mut evidence, mut summary) = (text(), text(), text());
    let mut start = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for a in rows {
        id.append_value(&a.id);
        rule.append_value(&a.rule);
        severity.append_value(a.severity.to_string());
        entity.append_value(a.entity.to_string());
        let s = a.window_start_us();
        start.append_value(s);
        end.append_value(s + WINDOW_SECONDS * 1_000_000);
        sources.append_value(a.sources.join(","));
        evidence.append_value(a.evidence_json().to_string());
        summary.append_value(&a.summary);
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(rule.finish()),
        Arc::new(severity.finish()),
        Arc::new(entity.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(sources.finish()),
        Arc::new(evidence.finish()),
        Arc::new(summary.finish()),
    ];
    Ok(RecordBatch::try_new(alerts_schema(), arrays)?)
}
