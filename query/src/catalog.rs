//! The tables under an output directory, registered with DataFusion.
//!
//! Every folder of `DIR` that holds Parquet files is a table named after it
//! (`flows`, `events`, `features`, `alerts`, and any other the pipeline
//! writes). Folders laid out in hive partitions (`date=YYYY-MM-DD/hour=HH`) get
//! `date` and `hour` as text columns, so `WHERE date = '2024-01-15' AND hour =
//! '09'` (or ranges on them) skips the other folders' files. Folders whose name
//! starts with `_` or `.` (files being written, the webhook spool) are not
//! tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::QueryError;

/// The partition columns of the pipeline's tables.
pub const PARTITIONS: [&str; 2] = ["date", "hour"];

/// A session whose catalog holds the tables found under `dir`.
pub async fn open(dir: &Path) -> Result<SessionContext, QueryError> {
    let ctx = session();
    for (name, path) in tables(dir)? {
        register(&ctx, &name, &path).await?;
    }
    Ok(ctx)
}

/// A session configured as every query surface uses it: filters pushed into
/// the Parquet scan, `information_schema` for tools that list tables.
pub fn session() -> SessionContext {
    let mut cfg = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("amoskys", "public");
    cfg.options_mut().execution.parquet.pushdown_filters = true;
    // Text as plain Utf8, as written: string views would be new to many Flight
    // SQL and JDBC clients.
    cfg.options_mut().execution.parquet.schema_force_view_types = false;
    SessionContext::new_with_config(cfg)
}

/// The folders of `dir` that hold Parquet files, by name.
pub fn tables(dir: &Path) -> Result<Vec<(String, PathBuf)>, QueryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| QueryError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !path.is_dir() || name.starts_with(['_', '.']) || !has_parquet(&path) {
            continue;
        }
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

fn has_parquet(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.filter_map(Result::ok).any(|e| {
        let p = e.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(['_', '.']));
        if hidden {
            false
        } else if p.is_dir() {
            has_parquet(&p)
        } else {
            p.extension().is_some_and(|x| x == "parquet")
        }
    })
}

/// Whether the table's folder is laid out in `date=…/hour=…` partitions.
fn partitioned(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("date="))
        })
    })
}

/// Registers the Parquet files under `dir` as table `name`.
pub async fn register(ctx: &SessionContext, name: &str, dir: &Path) -> Result<(), QueryError> {
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let format = ParquetFormat::new().with_options(ctx.copied_table_options().parquet);
    let mut opts = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    if partitioned(dir) {
        opts = opts.with_table_partition_cols(
            PARTITIONS
                .iter()
                .map(|p| (p.to_string(), DataType::Utf8))
                .collect(),
        );
    }
    let schema = opts.infer_schema(&ctx.state(), &url).await?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(opts)
        .with_schema(schema);
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Registers `name` as an empty table of `schema` (with the partition columns)
/// unless the catalog has it: a run that produced no alerts still has an
/// `alerts` table, with no rows.
pub fn register_empty(
    ctx: &SessionContext,
    name: &str,
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<(), QueryError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    if ctx.table_exist(name)? {
        return Ok(());
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(
        PARTITIONS
            .iter()
            .map(|p| Field::new(*p, DataType::Utf8, false)),
    );
    let mem = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
    ctx.register_table(name, Arc::new(mem))?;
    Ok(())
}

/// Files a running job is still writing under `dir`, by table: their rows are
/// in no table here until the file is finished (each `roll_interval`).
pub fn unfinished(dir: &Path) -> Vec<(String, usize)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, usize)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let table = e.file_name().to_str()?.to_string();
            let n = std::fs::read_dir(e.path().join(amoskys_sinks::parquet::IN_PROGRESS_DIR))
                .ok()?
                .filter_map(Result::ok)
                .filter(|f| {
                    f.file_name()
                        .to_str()
                        .is_some_and(|n| n.ends_with(".inprogress"))
                })
                .count();
            (n > 0).then_some((table, n))
        })
        .collect();
    out.sort();
    out
}

/// Registers table `recent.table` of the long-running job as what is finished
/// under `dir` (files) and what is not (`recent`'s batches, as of now) together.
/// Call it holding [`Recent::reading`] until the query's plan is made.
pub async fn register_live(
    ctx: &SessionContext,
    recent: &amoskys_sinks::parquet::Recent,
    dir: &Path,
) -> Result<(), QueryError> {
    use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
    use datafusion::catalog::MemorySchemaProvider;
    use datafusion::datasource::MemTable;
    let name = recent.table;
    let internal = match ctx.catalog("amoskys").and_then(|c| c.schema("internal")) {
        Some(s) => s,
        None => {
            let s: Arc<dyn datafusion::catalog::SchemaProvider> =
                Arc::new(MemorySchemaProvider::new());
            if let Some(c) = ctx.catalog("amoskys") {
                c.register_schema("internal", s.clone())?;
            }
            s
        }
    };
    let path = dir.join(name);
    std::fs::create_dir_all(&path).map_err(|source| QueryError::Io {
        path: path.clone(),
        source,
    })?;
    let url = ListingTableUrl::parse(format!("{}/", path.display()))?;
    let format = ParquetFormat::new().with_options(ctx.copied_table_options().parquet);
    let parts: Vec<(String, DataType)> = PARTITIONS
        .iter()
        .map(|p| (p.to_string(), DataType::Utf8))
        .collect();
    let opts = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_table_partition_cols(parts);
    let config = ListingTableConfig::new(url)
        .with_listing_options(opts)
        .with_schema(recent.schema.clone());
    let files = Arc::new(ListingTable::try_new(config)?);
    let schema = datafusion::catalog::TableProvider::schema(files.as_ref());
    let mut batches = Vec::new();
    for (hour, b) in recent.snapshot() {
        let t = amoskys_sinks::parquet::hour_partition(hour);
        let n = b.num_rows();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols.push(Arc::new(StringArray::from(vec![t.0.as_str(); n])));
        cols.push(Arc::new(StringArray::from(vec![t.1.as_str(); n])));
        batches.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    let mem = Arc::new(MemTable::try_new(schema, vec![batches])?);
    internal.register_table(format!("{name}_files"), files)?;
    internal.register_table(format!("{name}_recent"), mem)?;
    ctx.sql(&format!(
        "CREATE VIEW public.\"{name}\" AS SELECT * FROM internal.\"{name}_files\" \
         UNION ALL SELECT * FROM internal.\"{name}_recent\""
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;

    fn write(path: &Path, values: &[i64]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .expect("batch");
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).expect("file"), schema, None)
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }

    /// Folders with Parquet files are tables, partitioned ones with `date` and
    /// `hour`; files being written, spools, hidden and empty folders are not.
    #[test]
    fn folders_with_parquet_are_tables_and_partitions_are_columns() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        write(&d.join("flows/date=2024-01-15/hour=09/a.parquet"), &[1, 2]);
        write(&d.join("flows/date=2024-01-15/hour=10/b.parquet"), &[3]);
        write(&d.join("plain/c.parquet"), &[7]);
        write(&d.join("_webhook_spool/d.parquet"), &[9]);
        write(&d.join(".hidden/e.parquet"), &[9]);
        std::fs::create_dir_all(d.join("empty")).expect("mkdir");
        let unfinished_dir = d
            .join("events")
            .join(amoskys_sinks::parquet::IN_PROGRESS_DIR);
        std::fs::create_dir_all(&unfinished_dir).expect("mkdir");
        std::fs::write(unfinished_dir.join("x.parquet.inprogress"), b"").expect("write");
        let names: Vec<String> = tables(d)
            .expect("tables")
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(names, ["flows", "plain"]);
        assert_eq!(unfinished(d), [("events".to_string(), 1)]);

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let rows = rt.block_on(async {
            let ctx = open(d).await.expect("open");
            let df = ctx
                .sql("SELECT hour, sum(n) AS s FROM flows WHERE date = '2024-01-15' GROUP BY hour ORDER BY hour")
                .await
                .expect("sql");
            df.collect().await.expect("collect")
        });
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .expect("format")
            .to_string();
        assert!(text.contains("| 09   | 3 |"), "{text}");
        assert!(text.contains("| 10   | 3 |"), "{text}");
    }
}
