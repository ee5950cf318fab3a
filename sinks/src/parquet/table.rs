use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use std::sync::{Arc, Mutex};

use amoskys_schemas::{
    Alert, EventRow, FeatureDef, FeatureRow, FeatureStats, FlowRecord, SchemaError, ScoreRow,
    alerts_schema, alerts_to_batch, events_schema, events_to_batch, features_schema,
    features_to_batch, features_to_batch_with_stats, flows_schema, flows_to_batch, scores_schema,
    scores_to_batch,
};

/// How one table's rows become Arrow batches, and which hour partition a row is in.
pub trait TableRows: Send + 'static {
    type Row: Send + 'static;
    fn name(&self) -> &'static str;
    fn schema(&self) -> SchemaRef;
    /// Microseconds since the epoch that decide the row's `date=`/`hour=` partition.
    fn partition_us(row: &Self::Row) -> i64;
    fn to_batch(&self, rows: &[Self::Row]) -> Result<RecordBatch, SchemaError>;
    /// The source and write-ahead log offset a row came from, for tables
    /// whose commits record them.
    fn log_position(_row: &Self::Row) -> Option<(&str, u64)> {
        None
    }
    /// The window a row belongs to (the pane index of its start), for tables
    /// whose commits are cut at the windows' frontier.
    fn window(_row: &Self::Row) -> Option<u64> {
        None
    }
}

/// The `alerts` table, partitioned by the start of the window that raised each.
pub struct AlertTable;

impl TableRows for AlertTable {
    type Row = Alert;
    fn name(&self) -> &'static str {
        "alerts"
    }
    fn schema(&self) -> SchemaRef {
        alerts_schema()
    }
    fn partition_us(row: &Alert) -> i64 {
        row.window_start_us()
    }
    fn to_batch(&self, rows: &[Alert]) -> Result<RecordBatch, SchemaError> {
        alerts_to_batch(rows)
    }
    fn window(row: &Alert) -> Option<u64> {
        Some(row.window)
    }
}

/// The `scores` table, partitioned by the start of each scored window.
pub struct ScoreTable;

impl TableRows for ScoreTable {
    type Row = ScoreRow;
    fn name(&self) -> &'static str {
        "scores"
    }
    fn schema(&self) -> SchemaRef {
        scores_schema()
    }
    fn partition_us(row: &ScoreRow) -> i64 {
        row.window_start_us()
    }
    fn to_batch(&self, rows: &[ScoreRow]) -> Result<RecordBatch, SchemaError> {
        scores_to_batch(rows)
    }
    fn window(row: &ScoreRow) -> Option<u64> {
        Some(row.window)
    }
}

/// The `flows` table, partitioned by each flow's first packet.
pub struct FlowTable;

impl TableRows for FlowTable {
    type Row = FlowRecord;
    fn name(&self) -> &'static str {
        "flows"
    }
    fn schema(&self) -> SchemaRef {
        flows_schema()
    }
    fn partition_us(row: &FlowRecord) -> i64 {
        row.first_ns.div_euclid(1000)
    }
    fn to_batch(&self, rows: &[FlowRecord]) -> Result<RecordBatch, SchemaError> {
        flows_to_batch(rows)
    }
}

/// The `features` table, partitioned by window start. It keeps per-feature
/// statistics of every row it converts, for `feature_metadata.json`.
pub struct FeatureTable {
    defs: Vec<FeatureDef>,
    schema: SchemaRef,
    stats: Arc<Mutex<FeatureStats>>,
}

impl FeatureTable {
    pub fn new(defs: Vec<FeatureDef>) -> Self {
        let schema = features_schema(&defs);
        let stats = Arc::new(Mutex::new(FeatureStats::new(defs.len())));
        FeatureTable {
            defs,
            schema,
            stats,
        }
    }

    /// The statistics of the rows written so far (complete once the sink ends).
    pub fn stats(&self) -> Arc<Mutex<FeatureStats>> {
        self.stats.clone()
    }
}

impl TableRows for FeatureTable {
    type Row = FeatureRow;
    fn name(&self) -> &'static str {
        "features"
    }
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn partition_us(row: &FeatureRow) -> i64 {
        row.window_start_us()
    }
    fn to_batch(&self, rows: &[FeatureRow]) -> Result<RecordBatch, SchemaError> {
        match self.stats.lock() {
            Ok(mut st) => {
                features_to_batch_with_stats(&self.schema, &self.defs, rows, Some(&mut st))
            }
            Err(_) => features_to_batch(&self.schema, &self.defs, rows),
        }
    }
    fn window(row: &FeatureRow) -> Option<u64> {
        Some(row.window)
    }
}

/// The `events` table (syslog messages, SNMP and MQTT samples), partitioned by event time.
pub struct EventTable;

impl TableRows for EventTable {
    type Row = EventRow;
    fn name(&self) -> &'static str {
        "events"
    }
    fn schema(&self) -> SchemaRef {
        events_schema()
    }
    fn partition_us(row: &EventRow) -> i64 {
        row.ts_ns().div_euclid(1000)
    }
    fn to_batch(&self, rows: &[EventRow]) -> Result<RecordBatch, SchemaError> {
        events_to_batch(rows)
    }
    fn log_position(row: &EventRow) -> Option<(&str, u64)> {
        row.log_offset.map(|o| (&*row.source, o))
    }
}
