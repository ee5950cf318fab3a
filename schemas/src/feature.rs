use std::sync::Arc;

use std::fmt;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Serialize;

use crate::addr::Addr;
use crate::error::SchemaError;
use crate::time::{HOP_SECONDS, WINDOW_SECONDS};

/// Arrow type of a feature column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureDtype {
    /// A count: non-negative integer, `UInt64`.
    Count,
    /// A real number, `Float64`.
    Float,
}

impl FeatureDtype {
    pub fn arrow(&self) -> DataType {
        match self {
            FeatureDtype::Count => DataType::UInt64,
            FeatureDtype::Float => DataType::Float64,
        }
    }
}

/// What the catalogue says about one feature. The catalogue itself (with how each
/// feature is computed) lives with the operators; everything downstream is derived
/// from these definitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FeatureDef {
    pub name: &'static str,
    pub family: &'static str,
    pub source: &'static str,
    pub unit: &'static str,
    pub dtype: FeatureDtype,
    pub description: &'static str,
    /// When the value is null, in words; `None`: never (the column is not nullable).
    pub null_when: Option<&'static str>,
}

/// What a feature row describes: a host (IP address), or a device named by the
/// source that sees it (an MQTT device, an SNMP agent off port 161).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Entity {
    Ip(Addr),
    Name(Arc<str>),
}

impl Entity {
    /// The hash that routes the entity's data to a worker: the same on every
    /// worker and in every run.
    pub fn route_hash(&self) -> u64 {
        match self {
            Entity::Ip(a) => a.route_hash(),
            Entity::Name(n) => crate::stable_hash(n),
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::Ip(a) => a.fmt(f),
            Entity::Name(n) => f.write_str(n),
        }
    }
}

/// One row of the `features` table: one entity, one window.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureRow {
    pub entity: Entity,
    /// Window index `k`: the window covers `[30k s, 30k s + 60 s)`.
    pub window: u64,
    /// One value per catalogue entry, in catalogue order; NaN stands for null
    /// (no feature is NaN: a computation that is not finite gives null).
    pub values: Box<[f64]>,
}

impl FeatureRow {
    pub fn window_start_us(&self) -> i64 {
        (self.window as i64).saturating_mul(HOP_SECONDS * 1_000_000)
    }

    /// Value `i`, or `None` for null.
    #[inline]
    pub fn get(&self, i: usize) -> Option<f64> {
        self.values.get(i).copied().filter(|v| !v.is_nan())
    }
}

/// The `features` table's columns: the keys, then one column per feature.
pub fn features_schema(defs: &[FeatureDef]) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new(crate::cols::ENTITY, DataType::Utf8, false),
        Field::new(crate::cols::WINDOW_START, ts(), false),
        Field::new(crate::cols::WINDOW_END, ts(), false),
    ];
    fields.extend(
        defs.iter()
            .map(|d| Field::new(d.name, d.dtype.arrow(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// Converts feature rows into one Arrow batch with [`features_schema`].
pub fn features_to_batch(
    schema: &SchemaRef,
    defs: &[FeatureDef],
    rows: &[FeatureRow],
) -> Result<RecordBatch, SchemaError> {
    features_to_batch_with_stats(schema, defs, rows, None)
}

/// [`features_to_batch`], adding each column's values to `stats` (when given)
/// while the column is at hand: one pass over contiguous values per column
/// rather than one over every row's values.
pub fn features_to_batch_with_stats(
    schema: &SchemaRef,
    defs: &[FeatureDef],
    rows: &[FeatureRow],
    mut stats: Option<&mut FeatureStats>,
) -> Result<RecordBatch, SchemaError> {
    let n = rows.len();
    if let Some(r) = rows.iter().find(|r| r.values.len() != defs.len()) {
        return Err(SchemaError::RowWidth {
            got: r.values.len(),
            want: defs.len(),
        });
    }
    let mut entity = StringBuilder::with_capacity(n, n * 15);
    let mut start = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut text = String::with_capacity(40);
    for r in rows {
        text.clear();
        match &r.entity {
            Entity::Ip(a) => a.push_to(&mut text),
            Entity::Name(n) => text.push_str(n),
        }
        entity.append_value(&text);
        let s = r.window_start_us();
        start.append_value(s);
        end.append_value(s + WINDOW_SECONDS * 1_000_000);
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(entity.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
    ];
    // Which columns have any value: a family its source did not see at all (e.g.
    // the event families in a replay) is all null and needs no layout.
    let mut live = vec![false; defs.len()];
    for r in rows {
        for (l, v) in live.iter_mut().zip(r.values.iter()) {
            *l |= !v.is_nan();
        }
    }
    let live_idx: Vec<usize> = (0..defs.len()).filter(|&i| live[i]).collect();
    // Transpose the live columns in blocks of rows: the block's rows stay in cache
    // while each column's values are written contiguously.
    let mut columns: Vec<Vec<f64>> = live_idx.iter().map(|_| Vec::with_capacity(n)).collect();
    for block in rows.chunks(64) {
        for (c, &i) in columns.iter_mut().zip(&live_idx) {
            c.extend(block.iter().map(|r| r.values[i]));
        }
    }
    let mut columns = columns.into_iter();
    for (i, (d, live)) in defs.iter().zip(live).enumerate() {
        let Some(mut values) = live.then(|| columns.next()).flatten() else {
            if let Some(c) = stats.as_mut().and_then(|s| s.columns.get_mut(i)) {
                c.add_nulls(n as u64);
            }
            arrays.push(arrow_array::new_null_array(&d.dtype.arrow(), n));
            continue;
        };
        if let Some(c) = stats.as_mut().and_then(|s| s.columns.get_mut(i)) {
            c.add_column(&values);
        }
        let nan = values.iter().filter(|v| v.is_nan()).count();
        let nulls = (nan > 0).then(|| NullBuffer::from_iter(values.iter().map(|v| !v.is_nan())));
        arrays.push(match d.dtype {
            FeatureDtype::Count => {
                let ints: Vec<u64> = values
                    .iter()
                    .map(|v| if v.is_nan() { 0 } else { *v as u64 })
                    .collect();
                Arc::new(UInt64Array::new(ints.into(), nulls))
            }
            FeatureDtype::Float => {
                if nan > 0 {
                    values
                        .iter_mut()
                        .filter(|v| v.is_nan())
                        .for_each(|v| *v = 0.0);
                }
                Arc::new(Float64Array::new(values.into(), nulls))
            }
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// What one feature column held over a run: rows, nulls, and min, max, mean and
/// population standard deviation of the values present (Welford's update).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ColumnStats {
    pub count: u64,
    pub nulls: u64,
    min: f64,
    max: f64,
    mean: f64,
    m2: f64,
}

impl ColumnStats {
    /// Adds one value; NaN stands for null.
    #[inline]
    pub fn push(&mut self, v: f64) {
        self.count += 1;
        if v.is_nan() {
            self.nulls += 1;
            return;
        }
        let n = (self.count - self.nulls) as f64;
        if n == 1.0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        let d = v - self.mean;
        self.mean += d / n;
        self.m2 += d * (v - self.mean);
    }

    /// Adds `n` nulls.
    pub fn add_nulls(&mut self, n: u64) {
        self.count += n;
        self.nulls += n;
    }

    /// Adds a column's values (NaN stands for null): their own count, extremes,
    /// mean and sum of squared deviations, merged into the running ones
    /// (Chan, Golub and LeVeque's pairwise update), which is what [`push`]
    /// gives value by value, up to rounding.
    ///
    /// [`push`]: ColumnStats::push
    pub fn add_column(&mut self, values: &[f64]) {
        let (mut nb, mut sum, mut min, mut max) = (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        for &v in values.iter().filter(|v| !v.is_nan()) {
            nb += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        self.count += values.len() as u64;
        self.nulls += values.len() as u64 - nb;
        if nb == 0 {
            return;
        }
        let mean_b = sum / nb as f64;
        let m2_b: f64 = values
            .iter()
            .filter(|v| !v.is_nan())
            .map(|v| (v - mean_b) * (v - mean_b))
            .sum();
        let na = self.present() - nb;
        if na == 0 {
            (self.min, self.max, self.mean, self.m2) = (min, max, mean_b, m2_b);
            return;
        }
        let (na, nbf) = (na as f64, nb as f64);
        let n = na + nbf;
        let delta = mean_b - self.mean;
        self.mean += delta * nbf / n;
        self.m2 += m2_b + delta * delta * na * nbf / n;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
    }

    fn present(&self) -> u64 {
        self.count - self.nulls
    }

    /// The statistics as JSON: nulls for min, max, mean and std with no value.
    pub fn to_json(&self) -> serde_json::Value {
        let some = |v: f64| (self.present() > 0).then_some(v);
        serde_json::json!({
            "count": self.count,
            "null_count": self.nulls,
            "min": some(self.min),
            "max": some(self.max),
            "mean": some(self.mean),
            "std": some((self.m2 / self.present().max(1) as f64).max(0.0).sqrt()),
        })
    }
}

/// Per-feature statistics of the rows of a run, in catalogue order.
#[derive(Clone, Debug, Default)]
pub struct FeatureStats {
    pub columns: Vec<ColumnStats>,
}

impl FeatureStats {
    pub fn new(n: usize) -> Self {
        FeatureStats {
            columns: vec![ColumnStats::default(); n],
        }
    }

    pub fn add(&mut self, rows: &[FeatureRow]) {
        for r in rows {
            for (c, v) in self.columns.iter_mut().zip(r.values.iter()) {
                c.push(*v);
            }
        }
    }
}

/// The `feature_metadata.json` document for a catalogue, with the run's
/// per-feature statistics when given.
pub fn metadata_json_with_stats(defs: &[FeatureDef], stats: &FeatureStats) -> serde_json::Value {
    let mut doc = metadata_json(defs);
    if let Some(features) = doc.get_mut("features").and_then(|f| f.as_array_mut()) {
        for (f, st) in features.iter_mut().zip(&stats.columns) {
            if let Some(o) = f.as_object_mut() {
                o.insert("stats".into(), st.to_json());
            }
        }
    }
    doc["rows"] = serde_json::json!(stats.columns.first().map_or(0, |c| c.count));
    doc
}

/// The `feature_metadata.json` document for a catalogue.
pub fn metadata_json(defs: &[FeatureDef]) -> serde_json::Value {
    serde_json::json!({
        "format": "amoskys-feature-metadata",
        "version": 1,
        "table": "features",
        "keys": [crate::cols::ENTITY, crate::cols::WINDOW_START, crate::cols::WINDOW_END],
        "window_seconds": WINDOW_SECONDS,
        "hop_seconds": HOP_SECONDS,
        "feature_count": defs.len(),
        "features": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFS: [FeatureDef; 2] = [
        FeatureDef {
            name: "a",
            family: "t",
            source: "pcap",
            unit: "packets",
            dtype: FeatureDtype::Count,
            description: "a",
            null_when: None,
        },
        FeatureDef {
            name: "b",
            family: "t",
            source: "pcap",
            unit: "s",
            dtype: FeatureDtype::Float,
            description: "b",
            null_when: Some("no data"),
        },
    ];

    #[test]
    fn rows_become_typed_columns() {
        let schema = features_schema(&DEFS);
        let rows = vec![FeatureRow {
            entity: Entity::Name("h".into()),
            window: 2,
            values: vec![3.0, f64::NAN].into(),
        }];
        let b = features_to_batch(&schema, &DEFS, &rows).expect("batch");
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema().field(3).data_type(), &DataType::UInt64);
        assert_eq!(b.column(4).null_count(), 1);
        let bad = vec![FeatureRow {
            entity: Entity::Name("h".into()),
            window: 2,
            values: vec![1.0].into(),
        }];
        assert!(features_to_batch(&schema, &DEFS, &bad).is_err());
        let meta = metadata_json(&DEFS);
        assert_eq!(meta["feature_count"], 2);
        assert_eq!(meta["features"][1]["dtype"], "float");
    }

    #[test]
    fn column_statistics_equal_value_by_value_ones() {
        let xs: Vec<f64> = (0..1000)
            .map(|i| {
                if i % 7 == 0 {
                    f64::NAN
                } else {
                    (i as f64 * 0.37).sin() * 1e6
                }
            })
            .collect();
        let mut one = ColumnStats::default();
        xs.iter().for_each(|v| one.push(*v));
        let mut cols = ColumnStats::default();
        for chunk in xs.chunks(97) {
            cols.add_column(chunk);
        }
        cols.add_nulls(5);
        one.add_nulls(5);
        assert_eq!((cols.count, cols.nulls), (one.count, one.nulls));
        let (a, b) = (cols.to_json(), one.to_json());
        for k in ["min", "max", "mean", "std"] {
            let (x, y) = (
                a[k].as_f64().unwrap_or(f64::NAN),
                b[k].as_f64().unwrap_or(0.0),
            );
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1.0), "{k}: {x} vs {y}");
        }
        // All null: no values.
        let mut none = ColumnStats::default();
        none.add_column(&[f64::NAN, f64::NAN]);
        assert!(none.to_json()["mean"].is_null());
    }

    #[test]
    fn stats_of_a_column_with_nulls() {
        let mut st = FeatureStats::new(2);
        let row = |a: f64, b: f64| FeatureRow {
            entity: Entity::Name("h".into()),
            window: 0,
            values: vec![a, b].into(),
        };
        st.add(&[row(1.0, f64::NAN), row(3.0, f64::NAN), row(8.0, f64::NAN)]);
        let m = metadata_json_with_stats(&DEFS, &st);
        let a = &m["features"][0]["stats"];
        assert_eq!(a["count"], 3);
        assert_eq!(a["null_count"], 0);
        assert_eq!(
            (a["min"].as_f64(), a["max"].as_f64()),
            (Some(1.0), Some(8.0))
        );
        assert_eq!(a["mean"].as_f64(), Some(4.0));
        // population std of 1, 3, 8: sqrt(((9 + 1 + 16) / 3))
        let std = a["std"].as_f64().unwrap_or(f64::NAN);
        assert!((std - (26.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let b = &m["features"][1]["stats"];
        assert_eq!(b["null_count"], 3);
        assert!(b["mean"].is_null());
        assert_eq!(m["rows"], 3);
    }
}
