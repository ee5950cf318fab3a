use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use chrono::{DateTime, Datelike, Timelike};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::recent::Recent;
use crate::error::SinkError;

pub(super) const US_PER_HOUR: i64 = 3_600_000_000;
/// Directory (under each table) holding files still being written. Its leading
/// underscore keeps it out of Arrow/Spark dataset discovery, and the files in it
/// do not end in `.parquet`, so `**/*.parquet` globs skip them too.
pub const IN_PROGRESS_DIR: &str = "_in_progress";

/// How Parquet files are written.
#[derive(Clone, Debug)]
pub struct ParquetSettings {
    /// Root directory; each table is a folder below it.
    pub root: PathBuf,
    pub zstd_level: i32,
    /// Rows per row group (and per Arrow batch handed to the writer).
    pub row_group_rows: usize,
    /// Files open at once per table; past it the least recently written is closed.
    pub max_open_files: usize,
    /// Goes into every file name, so runs writing to one root never collide.
    pub run_id: String,
    /// Close a file once it has been open this long, so readers of the
    /// directory see recent rows (the long-running job); none keeps files open
    /// until their hour is done with.
    pub roll_after: Option<Duration>,
    /// Keep finished files in `_in_progress` and hand them back from
    /// [`TableWriter::finish`] to be published together ([`publish`]), so that
    /// output stopped half-way is never visible (replay).
    pub publish_at_end: bool,
    /// Commit the table's files together, with the log offsets of their rows
    /// ([`super::commit`]), every `roll_after` and at the end; the hook is
    /// told each commit. Finished files wait under their temporary names until
    /// the commit that publishes them.
    pub commit: Option<super::commit::CommitSpec>,
}

impl ParquetSettings {
    pub fn validate(&self) -> Result<(), SinkError> {
        ZstdLevel::try_new(self.zstd_level)
            .map_err(|e| SinkError::Config(format!("zstd_level {}: {e}", self.zstd_level)))?;
        if self.row_group_rows == 0 || self.max_open_files == 0 {
            return Err(SinkError::Config(
                "row_group_rows and max_open_files must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What a table writer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkSummary {
    pub rows: u64,
    pub files: u64,
    /// With `publish_at_end`: each finished file and where it goes.
    pub unpublished: Vec<(PathBuf, PathBuf)>,
}

struct OpenFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: ArrowWriter<File>,
    last_used: u64,
    opened: Instant,
}

/// The `date` and `hour` partition values of an hour (its index since the epoch).
pub fn hour_partition(hour: i64) -> (String, String) {
    let dt = DateTime::from_timestamp_micros(hour.saturating_mul(US_PER_HOUR)).unwrap_or_default();
    (
        format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day()),
        format!("{:02}", dt.hour()),
    )
}

/// Writes one table's batches into hour partitions.
pub struct TableWriter {
    pub(super) settings: ParquetSettings,
    table: &'static str,
    schema: SchemaRef,
    props: WriterProperties,
    open: HashMap<i64, OpenFile>,
    seq: u64,
    tick: u64,
    summary: SinkSummary,
    pub(super) recent: Option<Arc<Recent>>,
    /// Finished files waiting for the next commit.
    uncommitted: Vec<(PathBuf, PathBuf)>,
}

impl TableWriter {
    pub fn new(
        settings: ParquetSettings,
        table: &'static str,
        schema: SchemaRef,
    ) -> Result<Self, SinkError> {
        settings.validate()?;
        let level = ZstdLevel::try_new(settings.zstd_level)?;
        // Dictionary encoding pays for text (addresses, reasons) but not for the
        // numeric columns: zstd already squeezes their repeats, and building their
        // dictionaries cost more than it saved (measured in instructions).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(settings.row_group_rows))
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_created_by(concat!("amoskys-pipeline ", env!("CARGO_PKG_VERSION")).to_string());
        // Statistics (min/max per row group) are kept for the columns queries
        // filter on — times, addresses, protocol and ports — and left out for the
        // measures, where computing them cost 7 % of a replay.
        for f in schema.fields() {
            let col = || f.name().as_str().into();
            match f.data_type() {
                // A Community ID is a hash: as many distinct values as rows, so a
                // dictionary only costs.
                DataType::Utf8 if f.name() == amoskys_schemas::cols::COMMUNITY_ID => {}
                DataType::Utf8 => {
                    props = props
                        .set_column_dictionary_enabled(col(), true)
                        .set_column_statistics_enabled(col(), EnabledStatistics::Chunk);
                }
                DataType::Timestamp(..) | DataType::UInt8 | DataType::UInt16 => {
                    props = props.set_column_statistics_enabled(col(), EnabledStatistics::Chunk);
                }
                _ => {}
            }
        }
        let props = props.build();
        let dir = settings.root.join(table).join(IN_PROGRESS_DIR);
        fs::create_dir_all(&dir).map_err(SinkError::io(&dir))?;
        Ok(TableWriter {
            settings,
            table,
            schema,
            props,
            open: HashMap::new(),
            seq: 0,
            tick: 0,
            summary: SinkSummary::default(),
            recent: None,
            uncommitted: Vec::new(),
        })
    }

    /// Keeps the rows of open files in `recent` for readers, until each file is
    /// finished.
    pub fn with_recent(mut self, recent: Arc<Recent>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// Closes the files open for longer than `roll_after`, and every file when
    /// the rows kept for readers reach `max_recent_rows`.
    pub fn roll(&mut self, max_recent_rows: u64) -> Result<(), SinkError> {
        let full = self
            .recent
            .as_ref()
            .is_some_and(|r| r.rows() >= max_recent_rows);
        let old: Vec<i64> = self
            .open
            .iter()
            .filter(|(_, f)| {
                full || self
                    .settings
                    .roll_after
                    .is_some_and(|d| f.opened.elapsed() >= d)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in old {
            self.close(h)?;
        }
        Ok(())
    }

    /// Appends a batch whose rows all belong to the hour starting at `hour * 1h`.
    pub fn write(&mut self, hour: i64, batch: &RecordBatch) -> Result<(), SinkError> {
        self.tick += 1;
        if !self.open.contains_key(&hour) {
            if self.open.len() >= self.settings.max_open_files {
                let lru = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.last_used)
                    .map(|(h, _)| *h);
                if let Some(h) = lru {
                    self.close(h)?;
                }
            }
            let f = self.create(hour)?;
            self.open.insert(hour, f);
        }
        if let Some(f) = self.open.get_mut(&hour) {
            f.writer.write(batch)?;
            f.last_used = self.tick;
            if let Some(r) = &self.recent {
                r.push(hour, batch);
            }
        }
        self.summary.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn create(&mut self, hour: i64) -> Result<OpenFile, SinkError> {
        let (date, hh) = hour_partition(hour);
        let part = format!("date={date}/hour={hh}");
        self.seq += 1;
        let name = format!("part-{}-{:05}.parquet", self.settings.run_id, self.seq);
        let root = self.settings.root.join(self.table);
        let tmp = root
            .join(IN_PROGRESS_DIR)
            .join(format!("{name}.inprogress"));
        let dest = root.join(part).join(name);
        // Another writer to the directory may have removed an empty scratch
        // directory since this one started.
        if let Some(dir) = tmp.parent() {
            fs::create_dir_all(dir).map_err(SinkError::io(dir))?;
        }
        let file = File::create(&tmp).map_err(SinkError::io(&tmp))?;
        let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))?;
        Ok(OpenFile {
            tmp,
            dest,
            writer,
            last_used: self.tick,
            opened: Instant::now(),
        })
    }

    fn close(&mut self, hour: i64) -> Result<(), SinkError> {
        let Some(f) = self.open.remove(&hour) else {
            return Ok(());
        };
        if self.settings.commit.is_some() {
            let (tmp, dest) = (f.tmp.clone(), f.dest.clone());
            complete(f)?;
            self.uncommitted.push((tmp, dest));
        } else if self.settings.publish_at_end {
            let (tmp, dest) = (f.tmp.clone(), f.dest.clone());
            complete(f)?;
            self.summary.unpublished.push((tmp, dest));
        } else {
            match &self.recent {
                Some(r) => r.closing(hour, || finish(f))?,
                None => finish(f)?,
            }
        }
        self.summary.files += 1;
        Ok(())
    }

    /// Closes every open file and commits them, with every file finished
    /// since the last commit, as holding the rows up to `offsets`.
    pub fn commit(&mut self, offsets: &super::commit::Offsets) -> Result<(), SinkError> {
        let hours: Vec<i64> = self.open.keys().copied().collect();
        for h in hours {
            self.close(h)?;
        }
        let files = std::mem::take(&mut self.uncommitted);
        let publish = || -> Result<(), SinkError> {
            for (tmp, dest) in &files {
                move_into_place(tmp, dest)?;
            }
            Ok(())
        };
        let root = self.settings.root.clone();
        match &self.recent {
            Some(r) => r.closing_all(|| {
                super::commit::commit(&root, self.table, offsets, &files, publish)
            })?,
            None => super::commit::commit(&root, self.table, offsets, &files, publish)?,
        }
        if let Some(after) = self.settings.commit.as_ref().and_then(|c| c.after.as_ref()) {
            after(offsets);
        }
        Ok(())
    }

    /// Closes every open file: footers written, synced, renamed into place.
    pub fn finish(mut self) -> Result<SinkSummary, SinkError> {
        let hours: Vec<i64> = self.open.keys().copied().collect();
        for h in hours {
            self.close(h)?;
        }
        let dir = self.settings.root.join(self.table).join(IN_PROGRESS_DIR);
        // Leave no empty scratch directory behind; one still holding files belongs
        // to another writer and stays.
        let _ = fs::remove_dir(&dir);
        Ok(self.summary)
    }
}

/// Writes the footer and syncs: the file is whole, still under its
/// temporary name.
fn complete(f: OpenFile) -> Result<(), SinkError> {
    let file = f.writer.into_inner()?;
    file.sync_all().map_err(SinkError::io(&f.tmp))?;
    Ok(())
}

fn finish(f: OpenFile) -> Result<(), SinkError> {
    let (tmp, dest) = (f.tmp.clone(), f.dest.clone());
    complete(f)?;
    move_into_place(&tmp, &dest)
}

fn move_into_place(tmp: &Path, dest: &Path) -> Result<(), SinkError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(SinkError::io(parent))?;
    }
    fs::rename(tmp, dest).map_err(SinkError::io(dest))?;
    sync_dir(dest.parent());
    Ok(())
}

/// Moves finished files into place (what [`SinkSummary::unpublished`] lists)
/// and removes the scratch directories they leave empty.
pub fn publish(files: &[(PathBuf, PathBuf)]) -> Result<(), SinkError> {
    for (tmp, dest) in files {
        move_into_place(tmp, dest)?;
    }
    for (tmp, _) in files {
        if let Some(dir) = tmp.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
    Ok(())
}

/// Every file of run `run_id` under `root`'s tables, published or not
/// (symbolic links are not followed).
pub fn run_files(root: &Path, run_id: &str) -> Result<Vec<PathBuf>, SinkError> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<PathBuf>) -> Result<(), SinkError> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Ok(());
        };
        for e in entries {
            let e = e.map_err(SinkError::io(dir))?;
            let path = e.path();
            if e.file_type().map_err(SinkError::io(&path))?.is_dir() {
                walk(&path, prefix, out)?;
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, &format!("part-{run_id}-"), &mut out)?;
    out.sort();
    Ok(out)
}

/// The scratch files of the long-running job's runs under `root` (every
/// table's `_in_progress`, replays' files excepted: each replay looks after
/// its own).
pub fn job_scratch_files(root: &Path) -> Result<Vec<PathBuf>, SinkError> {
    let mut out = Vec::new();
    let Ok(tables) = fs::read_dir(root) else {
        return Ok(out);
    };
    for t in tables {
        let t = t.map_err(SinkError::io(root))?;
        let dir = t.path().join(IN_PROGRESS_DIR);
        let Ok(files) = fs::read_dir(&dir) else {
            continue;
        };
        for f in files {
            let f = f.map_err(SinkError::io(&dir))?;
            let name = f.file_name();
            if !name.to_string_lossy().starts_with("part-replay") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` is a scratch file (in a table's `_in_progress`).
pub fn is_scratch(path: &Path) -> bool {
    path.parent().is_some_and(|p| p.ends_with(IN_PROGRESS_DIR))
}

pub(crate) fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir.and_then(|d| File::open(d).ok()) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::FlowTable;
    use crate::parquet::live::run_table;
    use amoskys_schemas::{Addr, EndReason, FlowRecord, Summary};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn flow(first_s: i64) -> FlowRecord {
        FlowRecord {
            community_id: "1:abc".into(),
            proto: 17,
            src: Addr::v4([10, 0, 0, 1]),
            sport: 53,
            dst: Addr::v4([10, 0, 0, 2]),
            dport: 5353,
            first_ns: first_s * 1_000_000_000,
            last_ns: first_s * 1_000_000_000,
            packets_fwd: 1,
            packets_bwd: 0,
            bytes_fwd: 80,
            bytes_bwd: 0,
            tcp_flags_fwd: 0,
            tcp_flags_bwd: 0,
            fragments: 0,
            size_fwd: Summary {
                n: 1,
                min: 80.0,
                max: 80.0,
                mean: 80.0,
                std: 0.0,
            },
            size_bwd: Summary::default(),
            iat_fwd: Summary::default(),
            iat_bwd: Summary::default(),
            end_reason: EndReason::Idle,
            app: None,
        }
    }

    #[test]
    fn rows_land_in_hour_partitions_as_complete_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = ParquetSettings {
            root: dir.path().to_path_buf(),
            zstd_level: 3,
            row_group_rows: 2,
            max_open_files: 1,
            run_id: "t".into(),
            roll_after: None,
            publish_at_end: false,
            commit: None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        // 2024-01-15 09:59:59, 10:00:00 (x2), then 09:xx again after 10:00 was opened.
        let t0 = 1_705_312_799;
        tx.send(vec![flow(t0), flow(t0 + 1), flow(t0 + 2)])
            .expect("send");
        tx.send(vec![flow(t0 - 10)]).expect("send");
        drop(tx);
        let sum = run_table(FlowTable, settings, rx).expect("run");
        assert_eq!(sum.rows, 4);
        let files = files_under(dir.path());
        let rel: Vec<String> = files
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert!(rel.iter().all(|r| r.ends_with(".parquet")), "{rel:?}");
        assert!(
            rel.iter()
                .any(|r| r.starts_with("flows/date=2024-01-15/hour=09/")),
            "{rel:?}"
        );
        assert!(
            rel.iter()
                .any(|r| r.starts_with("flows/date=2024-01-15/hour=10/")),
            "{rel:?}"
        );
        assert!(!dir.path().join("flows").join(IN_PROGRESS_DIR).exists());
        let total: i64 = files
            .iter()
            .map(|f| {
                SerializedFileReader::new(File::open(f).expect("open"))
                    .expect("parquet")
                    .metadata()
                    .file_metadata()
                    .num_rows()
            })
            .sum();
        assert_eq!(total, 4);
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read_dir").filter_map(Result::ok) {
                if e.path().is_dir() {
                    stack.push(e.path())
                } else {
                    files.push(e.path())
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn files_published_at_the_end_stay_out_of_sight_until_then_and_a_run_lists_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = |run: &str| ParquetSettings {
            root: dir.path().to_path_buf(),
            zstd_level: 3,
            row_group_rows: 2,
            max_open_files: 1,
            run_id: run.into(),
            roll_after: None,
            publish_at_end: true,
            commit: None,
        };
        let t0 = 1_705_312_799;
        let write = |run: &str| {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            tx.send(vec![flow(t0), flow(t0 + 1), flow(t0 + 2)])
                .expect("send");
            drop(tx);
            run_table(FlowTable, settings(run), rx).expect("run")
        };
        let sum = write("a");
        // Two hours, two finished files, none in place yet.
        assert_eq!(sum.unpublished.len(), 2);
        let before = files_under(dir.path());
        assert!(
            before
                .iter()
                .all(|f| f.parent().is_some_and(|p| p.ends_with(IN_PROGRESS_DIR))),
            "{before:?}"
        );
        publish(&sum.unpublished).expect("publish");
        let after = files_under(dir.path());
        let mut dests: Vec<PathBuf> = sum.unpublished.iter().map(|(_, d)| d.clone()).collect();
        dests.sort();
        assert_eq!(after, dests);
        assert!(!dir.path().join("flows").join(IN_PROGRESS_DIR).exists());
        // Another run beside it, unpublished: run `a`'s files are its own.
        let other = write("b");
        let mut published: Vec<PathBuf> = sum.unpublished.iter().map(|(_, d)| d.clone()).collect();
        published.sort();
        assert_eq!(run_files(dir.path(), "a").expect("list"), published);
        let b = run_files(dir.path(), "b").expect("list");
        assert_eq!(b.len(), other.unpublished.len());
        assert!(b.iter().all(|f| is_scratch(f)), "{b:?}");
    }
}
