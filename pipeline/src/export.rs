//! `export-training`: the `features` table turned into model-ready train and
//! validation Parquet, with every transform's parameters written beside them.
//!
//! Per feature, fitted on the training rows only and applied to both splits:
//! impute, log-transform, robust-scale ([`Scaling`], the transform `train`
//! and scoring share).
//!
//! The split is by time: the earliest windows, up to `1 − val_fraction` of the
//! rows, train; validation starts one full window (60 s) after the last training
//! window starts, so no packet or record counts in both (the overlapping window
//! in between is left out and counted). Rows are ordered by window and entity and
//! nothing depends on the clock, so the same input gives the same bytes.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use amoskys_operators::model::Scaling;
use amoskys_schemas::{WINDOW_SECONDS, cols};

use crate::error::PipelineError;

/// What to export and where.
pub struct ExportOptions {
    /// The output root of a run (holds `features/` and `feature_metadata.json`).
    pub data: PathBuf,
    pub out: PathBuf,
    /// Share of the rows (the latest windows) kept for validation, 0 to < 1.
    pub val_fraction: f64,
}

/// What an export did.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub source_rows: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    /// Rows of the windows between the splits, left out so that no data is in both.
    pub purged_rows: usize,
    pub features: usize,
    pub log_transformed: usize,
}

#[derive(Serialize)]
struct FeatureTransform {
    name: String,
    family: String,
    dtype: String,
    /// "zero" or "train_median".
    impute: &'static str,
    impute_value: f64,
    log1p: bool,
    center: f64,
    scale: f64,
    train_null_count: usize,
}

#[derive(Serialize)]
struct SplitInfo {
    val_fraction: f64,
    train_rows: usize,
    validation_rows: usize,
    purged_rows: usize,
    last_train_window_start_us: Option<i64>,
    first_validation_window_start_us: Option<i64>,
}

#[derive(Serialize)]
struct TrainingMetadata {
    format: &'static str,
    version: u32,
    transform: &'static str,
    keys: [&'static str; 2],
    source_rows: usize,
    split: SplitInfo,
    features: Vec<FeatureTransform>,
}

pub(crate) struct Catalogue {
    pub(crate) names: Vec<String>,
    pub(crate) families: Vec<String>,
    pub(crate) dtypes: Vec<String>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PipelineError {
    move |source| PipelineError::Io { context, source }
}

fn bad(msg: String) -> PipelineError {
    PipelineError::Export(msg)
}

pub(crate) fn read_catalogue(data: &Path) -> Result<Catalogue, PipelineError> {
    let path = data.join("feature_metadata.json");
    let text = std::fs::read_to_string(&path).map_err(io(format!("read {}", path.display())))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not JSON: {e}", path.display())))?;
    let feats = doc["features"]
        .as_array()
        .ok_or_else(|| bad(format!("{}: no features list", path.display())))?;
    let field = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap_or_default().to_string();
    Ok(Catalogue {
        names: feats.iter().map(|f| field(f, "name")).collect(),
        families: feats.iter().map(|f| field(f, "family")).collect(),
        dtypes: feats.iter().map(|f| field(f, "dtype")).collect(),
    })
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PipelineError> {
    let rd = std::fs::read_dir(dir).map_err(io(format!("read {}", dir.display())))?;
    for e in rd {
        let p = e.map_err(io(format!("read {}", dir.display())))?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "_in_progress") {
                parquet_files(&p, out)?;
            }
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// The features table, column by column, rows in file order.
pub(crate) struct Table {
    pub(crate) entity: Vec<String>,
    pub(crate) window_us: Vec<i64>,
    /// One column per feature; NaN for null.
    pub(crate) values: Vec<Vec<f64>>,
}

pub(crate) fn read_features(data: &Path, cat: &Catalogue) -> Result<Table, PipelineError> {
    let dir = data.join("features");
    let mut files = Vec::new();
    parquet_files(&dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(bad(format!("no Parquet files under {}", dir.display())));
    }
    // The footers first, one file open at a time: their row counts size each
    // column once (a training set can be GiBs).
    let open = |f: &PathBuf| -> Result<ParquetRecordBatchReaderBuilder<File>, PipelineError> {
        let file = File::open(f).map_err(io(format!("open {}", f.display())))?;
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(format!("{}: {e}", f.display())))
    };
    let mut rows = 0usize;
    for f in &files {
        rows += open(f)?.metadata().file_metadata().num_rows().max(0) as usize;
    }
    let mut t = Table {
        entity: Vec::with_capacity(rows),
        window_us: Vec::with_capacity(rows),
        values: (0..cat.names.len())
            .map(|_| Vec::with_capacity(rows))
            .collect(),
    };
    for f in files {
        let what = |e: &dyn std::fmt::Display| bad(format!("{}: {e}", f.display()));
        let reader = open(&f)?.build().map_err(|e| what(&e))?;
        for batch in reader {
            let batch = batch.map_err(|e| what(&e))?;
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| what(&format!("no column {name}")))
            };
            let ent = col("entity")?;
            let ent = ent
                .as_string_opt::<i32>()
                .ok_or_else(|| what(&"entity is not text"))?;
            t.entity
                .extend((0..ent.len()).map(|i| ent.value(i).to_string()));
            let ws = col(cols::WINDOW_START)?;
            let ws = ws
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| what(&"window_start is not a timestamp"))?;
            t.window_us.extend(ws.values().iter().copied());
            for (name, out) in cat.names.iter().zip(t.values.iter_mut()) {
                let a = col(name)?;
                match a.data_type() {
                    DataType::UInt64 => {
                        let a = a.as_primitive::<UInt64Type>();
                        out.extend((0..a.len()).map(|i| {
                            if a.is_null(i) {
                                f64::NAN
                            } else {
                                a.value(i) as f64
                            }
                        }));
                    }
                    DataType::Float64 => {
                        let a = a.as_primitive::<Float64Type>();
                        out.extend(
                            (0..a.len()).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) }),
                        );
                    }
                    other => return Err(what(&format!("{name} has type {other}"))),
                }
            }
        }
    }
    Ok(t)
}

fn write_split(
    path: &Path,
    names: &[String],
    entity: Vec<&str>,
    window_us: Vec<i64>,
    columns: Vec<Vec<f64>>,
) -> Result<(), PipelineError> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("entity", DataType::Utf8, false),
        Field::new(cols::WINDOW_START, ts, false),
    ];
    fields.extend(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Float64, false)),
    );
    let schema = Arc::new(Schema::new(fields));
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(entity)),
        Arc::new(TimestampMicrosecondArray::from(window_us).with_timezone("UTC")),
    ];
    arrays.extend(
        columns
            .into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| bad(format!("build {}: {e}", path.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_created_by("amoskys-pipeline export-training".into())
        .build();
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    let mut w = ArrowWriter::try_new(file, schema, Some(props))
        .map_err(|e| bad(format!("write {}: {e}", path.display())))?;
    w.write(&batch)
        .and_then(|_| w.close().map(|_| ()))
        .map_err(|e| bad(format!("write {}: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))?;
    Ok(())
}

/// Exports `opts.data`'s features into `opts.out`: `train.parquet`,
/// `validation.parquet` and `training_metadata.json`.
pub fn export_training(opts: &ExportOptions) -> Result<ExportReport, PipelineError> {
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(bad(format!(
            "--val-fraction {} must be at least 0 and below 1",
            opts.val_fraction
        )));
    }
    let cat = read_catalogue(&opts.data)?;
    let t = read_features(&opts.data, &cat)?;
    let n = t.entity.len();
    // Window, then entity: a fixed order whatever the files' order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| (t.window_us[a], &t.entity[a]).cmp(&(t.window_us[b], &t.entity[b])));
    let windows: BTreeSet<i64> = t.window_us.iter().copied().collect();
    let window_us = WINDOW_SECONDS * 1_000_000;
    let want_train = ((n as f64) * (1.0 - opts.val_fraction)).round() as usize;
    // With validation, the last two windows are never training ones: the one
    // after the last training window overlaps it and is left out.
    let trainable = if opts.val_fraction > 0.0 {
        windows.len().saturating_sub(2)
    } else {
        windows.len()
    };
    let mut last_train = None;
    let mut seen = 0usize;
    for &w in windows.iter().take(trainable) {
        if seen >= want_train.max(1) {
            break;
        }
        seen += t.window_us.iter().filter(|&&x| x == w).count();
        last_train = Some(w);
    }
    let last_train = last_train.ok_or_else(|| {
        bad(format!(
            "too few windows to split: {} window(s) (a validation split needs at least 3)",
            windows.len()
        ))
    })?;
    let first_val = windows.range(last_train + window_us..).next().copied();
    let (mut train, mut val, mut purged) = (Vec::new(), Vec::new(), 0usize);
    for &i in &order {
        let w = t.window_us[i];
        if w <= last_train {
            train.push(i);
        } else if first_val.is_some_and(|f| w >= f) {
            val.push(i);
        } else {
            purged += 1;
        }
    }
    if opts.val_fraction > 0.0 && val.is_empty() {
        return Err(bad(format!(
            "too few windows to split: {} window(s); validation needs windows starting at least {} s after the last training window",
            windows.len(),
            WINDOW_SECONDS
        )));
    }

    let mut transforms = Vec::with_capacity(cat.names.len());
    let mut train_cols = Vec::with_capacity(cat.names.len());
    let mut val_cols = Vec::with_capacity(cat.names.len());
    for (k, name) in cat.names.iter().enumerate() {
        let col = &t.values[k];
        let train_values: Vec<f64> = train.iter().map(|&i| col[i]).collect();
        let fit = Scaling::fit(&train_values, cat.dtypes[k] == "count");
        train_cols.push(
            train
                .iter()
                .map(|&i| fit.apply(col[i]))
                .collect::<Vec<f64>>(),
        );
        val_cols.push(val.iter().map(|&i| fit.apply(col[i])).collect::<Vec<f64>>());
        transforms.push(FeatureTransform {
            name: name.clone(),
            family: cat.families[k].clone(),
            dtype: cat.dtypes[k].clone(),
            impute: fit.impute_name(),
            impute_value: fit.impute_value,
            log1p: fit.log1p,
            center: fit.center,
            scale: fit.scale,
            train_null_count: fit.train_nulls,
        });
    }

    std::fs::create_dir_all(&opts.out).map_err(io(format!("create {}", opts.out.display())))?;
    let keys = |rows: &[usize]| {
        (
            rows.iter()
                .map(|&i| t.entity[i].as_str())
                .collect::<Vec<_>>(),
            rows.iter().map(|&i| t.window_us[i]).collect::<Vec<_>>(),
        )
    };
    let (e, w) = keys(&train);
    write_split(
        &opts.out.join("train.parquet"),
        &cat.names,
        e,
        w,
        train_cols,
    )?;
    let (e, w) = keys(&val);
    write_split(
        &opts.out.join("validation.parquet"),
        &cat.names,
        e,
        w,
        val_cols,
    )?;
    let log_transformed = transforms.iter().filter(|t| t.log1p).count();
    let meta = TrainingMetadata {
        format: "amoskys-training-export",
        version: 1,
        transform: "scaled = (g(x) - center) / scale, where x is the value with nulls replaced by \
                    impute_value, and g is log1p when log1p is true (sign(x)·log1p(|x|) for a \
                    negative value, which the training rows never hold), else the identity",
        keys: [cols::ENTITY, cols::WINDOW_START],
        source_rows: n,
        split: SplitInfo {
            val_fraction: opts.val_fraction,
            train_rows: train.len(),
            validation_rows: val.len(),
            purged_rows: purged,
            last_train_window_start_us: Some(last_train),
            first_validation_window_start_us: first_val.filter(|_| !val.is_empty()),
        },
        features: transforms,
    };
    let text = serde_json::to_string_pretty(&meta).map_err(|e| bad(e.to_string()))? + "\n";
    let path = opts.out.join("training_metadata.json");
    std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
    Ok(ExportReport {
        source_rows: n,
        train_rows: train.len(),
        validation_rows: val.len(),
        purged_rows: purged,
        features: cat.names.len(),
        log_transformed,
    })
}
