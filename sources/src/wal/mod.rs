//! The write-ahead log of accepted records: what a live source accepts is
//! appended to a log of its own on local disk before the source acknowledges
//! it, so a killed job loses none of it.
//!
//! A source hands its batches to a [`RecordTx`]. Without a log that is the
//! pipeline's channel. With one, [`RecordTx::send`] appends the batch to the
//! log (in the order the source's tasks hand batches over), waits until the
//! log is synced (group commit: one `fdatasync` covers every batch appended
//! while the previous one ran) and until the batch is in the pipeline's
//! channel, and only then returns — an MQTT source sends its PUBACKs after
//! that. Each batch reaches the pipeline with the offset of its first record;
//! the `events` table records in its commits the offsets it holds, and at the
//! next start the log is read from the first offset not committed.
//!
//! At start-up a torn tail is cut and damaged records are stepped over, both
//! counted ([`log`]). Segments are deleted once every record in them is
//! committed. When the log reaches `max_bytes` (or the disk is full), appends
//! are refused — the source stops accepting (backpressure: MQTT messages stay
//! unacknowledged with the broker, TCP senders are slowed, UDP datagrams are
//! counted as dropped) and retries until room is made.

pub mod log;
mod tx;

pub use tx::{Closed, Handed, RecordTx, TrySend};
use tx::{Inner, Logged, Pending};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use amoskys_schemas::Record;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::{Counter, Counters, Meaning, SourceError};

/// A batch handed to the pipeline: records, and where the first is in its
/// source's log (the others follow one apart).
#[derive(Debug, Default)]
pub struct Batch {
    pub first_offset: Option<u64>,
    pub records: Vec<Record>,
}

impl From<Vec<Record>> for Batch {
    fn from(records: Vec<Record>) -> Self {
        Batch {
            first_offset: None,
            records,
        }
    }
}

/// How records are synced to disk.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// `fdatasync` before acknowledging, shared by every batch appended while
    /// the previous sync ran: survives a power cut.
    #[default]
    Group,
    /// Written to the kernel before acknowledging, never synced by the log:
    /// survives the process being killed, not the machine stopping.
    Off,
}

/// The `[wal]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Keep a write-ahead log for the live record sources (syslog, MQTT, SNMP).
    pub enabled: bool,
    /// Where: one directory per source below it. Default: `_wal` in the
    /// Parquet sink's directory.
    pub dir: Option<PathBuf>,
    pub fsync: Fsync,
    /// Size of a segment, in bytes, before the next is started.
    pub segment_bytes: u64,
    /// Bytes one source's log may hold before the source stops accepting.
    pub max_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            enabled: true,
            dir: None,
            fsync: Fsync::Group,
            segment_bytes: 64 << 20,
            max_bytes: 4 << 30,
        }
    }
}

impl WalConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.segment_bytes < 4096 {
            return Err("wal.segment_bytes must be at least 4096".into());
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err("wal.max_bytes must be at least twice wal.segment_bytes".into());
        }
        Ok(())
    }
}

/// What a source's log did, published with the source's own counters.
#[derive(Debug, Default)]
pub struct WalCounters {
    pub bytes: AtomicU64,
    /// The first offset not yet in a committed file.
    pub oldest_uncommitted: AtomicU64,
    pub appended: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_ns: AtomicU64,
    pub replayed: AtomicU64,
    pub torn_tails: AtomicU64,
    pub damaged: AtomicU64,
    /// Appends refused (log full, disk full or failing).
    pub refused: AtomicU64,
}

/// A source's counters followed by its log's.
pub struct WithLog {
    pub source: Arc<dyn Counters>,
    pub log: Arc<WalCounters>,
}

impl Counters for WithLog {
    fn snapshot(&self) -> Vec<Counter> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let l = &self.log;
        let mut v = self.source.snapshot();
        v.extend([
            Counter::new(
                "wal_bytes",
                g(&l.bytes),
                Meaning::Gauge("amoskys_wal_bytes"),
            ),
            Counter::new(
                "wal_oldest_uncommitted",
                g(&l.oldest_uncommitted),
                Meaning::Gauge("amoskys_wal_oldest_uncommitted_offset"),
            ),
            Counter::new(
                "wal_appended",
                g(&l.appended),
                Meaning::Named("amoskys_wal_appended_records_total"),
            ),
            Counter::new(
                "wal_fsyncs",
                g(&l.fsyncs),
                Meaning::Named("amoskys_wal_fsyncs_total"),
            ),
            Counter::new(
                "wal_fsync_us",
                g(&l.fsync_ns) / 1000,
                Meaning::Named("amoskys_wal_fsync_microseconds_total"),
            ),
            Counter::new(
                "wal_replayed",
                g(&l.replayed),
                Meaning::Named("amoskys_wal_replayed_records_total"),
            ),
            Counter::new(
                "wal_torn_tails",
                g(&l.torn_tails),
                Meaning::Named("amoskys_wal_torn_tails_total"),
            ),
            Counter::new(
                "wal_damaged",
                g(&l.damaged),
                Meaning::Named("amoskys_wal_damaged_records_total"),
            ),
            Counter::new(
                "wal_refused",
                g(&l.refused),
                Meaning::Named("amoskys_wal_refused_appends_total"),
            ),
        ]);
        v
    }
}

/// A source's opened log: the [`RecordTx`] to give the source, the task that
/// syncs and hands over (first the records not yet committed at the last
/// stop), and the handle that deletes committed segments.
pub struct OpenedLog {
    pub tx: RecordTx,
    pub counters: Arc<WalCounters>,
    pub found: log::Opened,
    pub committer: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    pub release: Release,
}

/// Deletes a log's committed segments.
#[derive(Clone)]
pub struct Release {
    closed: Arc<std::sync::Mutex<Vec<log::Segment>>>,
    /// The first offset of the segment being written, which is never deleted.
    current_first: Arc<AtomicU64>,
    counters: Arc<WalCounters>,
}

impl Release {
    /// Every record up to `offset` is in a committed file.
    pub fn committed(&self, offset: u64) {
        let freed = log::release(&self.closed, &self.current_first, offset);
        self.counters.bytes.fetch_sub(
            freed.min(self.counters.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.counters
            .oldest_uncommitted
            .fetch_max(offset + 1, Ordering::Relaxed);
    }
}

/// Batches appended and not yet handed over, at most.
const PENDING_BATCHES: usize = 64;
/// Newest records kept from the last run for [`RecordTx::take_logged_tail`]:
/// more than a broker holds unacknowledged for one client (mosquitto's
/// `max_inflight_messages` defaults to 20, the source acknowledges a batch of
/// at most `batch_size` at a time).
const LOGGED_TAIL: usize = 4096;
/// Records of the log replayed per batch at start-up.
const REPLAY_BATCH: usize = 1024;

/// Opens the log of one source in `dir`, whose records up to `committed` are
/// in committed output; `out` is the pipeline's channel for the source.
pub fn open(
    rt: &tokio::runtime::Handle,
    dir: PathBuf,
    cfg: &WalConfig,
    committed: Option<u64>,
    out: mpsc::Sender<Batch>,
) -> Result<OpenedLog, SourceError> {
    open_after(rt, dir, cfg, committed, None, out)
}

/// [`open`], with the source's offsets up to `used` taken already by
/// committed output: the log never gives them out again, even if its files
/// were lost or moved.
pub fn open_after(
    rt: &tokio::runtime::Handle,
    dir: PathBuf,
    cfg: &WalConfig,
    committed: Option<u64>,
    used: Option<u64>,
    out: mpsc::Sender<Batch>,
) -> Result<OpenedLog, SourceError> {
    let opts = log::LogOptions {
        segment_bytes: cfg.segment_bytes,
        max_bytes: cfg.max_bytes,
    };
    let (writer, found) = log::Writer::open_after(&dir, opts, committed, used).map_err(|e| {
        SourceError::Failed(format!(
            "cannot open the write-ahead log in {}: {e}",
            dir.display()
        ))
    })?;
    if found.torn_tails + found.damaged_records + found.damaged_stretches + found.foreign_segments
        > 0
    {
        tracing::warn!(dir = %dir.display(), torn_tails = found.torn_tails, torn_bytes = found.torn_bytes,
            damaged_records = found.damaged_records, foreign_segments = found.foreign_segments,
            "write-ahead log repaired at start-up");
    }
    let counters = Arc::new(WalCounters::default());
    counters.bytes.store(writer.bytes(), Ordering::Relaxed);
    counters
        .oldest_uncommitted
        .store(committed.map_or(0, |c| c + 1), Ordering::Relaxed);
    counters
        .torn_tails
        .store(found.torn_tails, Ordering::Relaxed);
    counters
        .damaged
        .store(found.damaged_records, Ordering::Relaxed);
    let (closed, current_first) = writer.segments();
    let release = Release {
        closed,
        current_first,
        counters: counters.clone(),
    };
    let upto = writer.next_offset();
    // The records after the last acknowledgement the previous run noted.
    let acked = read_acked(&dir);
    let tail = log::read_last(&dir, LOGGED_TAIL)
        .unwrap_or_default()
        .into_iter()
        .filter(|(o, _)| *o >= acked)
        .filter_map(|(_, p)| bincode::deserialize::<Record>(&p).ok())
        .collect();
    let acked = Arc::new(AtomicU64::new(acked));
    let (ptx, prx) = mpsc::channel(PENDING_BATCHES);
    let logged = Arc::new(Logged {
        rt: rt.clone(),
        writer: tokio::sync::Mutex::new(writer),
        tail: std::sync::Mutex::new(tail),
        acked: acked.clone(),
        pending: ptx,
        counters: counters.clone(),
    });
    let committer = Box::pin(hand_over(
        dir,
        committed,
        upto,
        prx,
        out,
        cfg.fsync,
        counters.clone(),
        acked,
    ));
    Ok(OpenedLog {
        tx: RecordTx(Inner::Logged(logged)),
        counters,
        found,
        committer,
        release,
    })
}

/// The acknowledgement note's file in a log's directory.
const ACKED_FILE: &str = "acked";

/// One past the newest offset the previous run noted as acknowledged (0: none).
fn read_acked(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join(ACKED_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_acked(dir: &std::path::Path, a: u64) {
    let tmp = dir.join(format!(".{ACKED_FILE}.tmp"));
    if std::fs::write(&tmp, format!("{a}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(ACKED_FILE));
    }
}

/// Replays the records after `committed` (up to `upto`, where this run's
/// appends begin), then syncs and hands over appended batches in order.
#[allow(clippy::too_many_arguments)]
async fn hand_over(
    dir: PathBuf,
    committed: Option<u64>,
    upto: u64,
    mut pending: mpsc::Receiver<Pending>,
    out: mpsc::Sender<Batch>,
    fsync: Fsync,
    counters: Arc<WalCounters>,
    acked: Arc<AtomicU64>,
) {
    let mut acked_written = acked.load(Ordering::Relaxed);
    if !replay(&dir, committed, upto, &out, &counters).await {
        return;
    }
    while let Some(p) = pending.recv().await {
        // What the source acknowledged since the last group, noted for the
        // next start (not synced: an older note only widens what is compared).
        let a = acked.load(Ordering::Relaxed);
        if a != acked_written {
            write_acked(&dir, a);
            acked_written = a;
        }
        let mut group = vec![p];
        while group.len() < PENDING_BATCHES {
            match pending.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        if fsync == Fsync::Group {
            let mut files: Vec<Arc<std::fs::File>> = Vec::new();
            for p in &group {
                if !files.iter().any(|f| Arc::ptr_eq(f, &p.file)) {
                    files.push(p.file.clone());
                }
            }
            let t = Instant::now();
            let synced =
                tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| f.sync_data()))
                    .await;
            counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            counters
                .fsync_ns
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if !matches!(synced, Ok(Ok(()))) {
                // The records are in the log's file; whether they reach the
                // disk is the kernel's to say now. Nothing is acknowledged on
                // a failed sync.
                tracing::error!(dir = %dir.display(), "write-ahead log sync failed; stopping the source's hand-over");
                return;
            }
        }
        for mut p in group {
            let batch = Batch {
                first_offset: Some(p.first),
                records: std::mem::take(&mut p.records),
            };
            if out.send(batch).await.is_err() {
                return;
            }
            if let Some(d) = p.done.take() {
                let _ = d.send(());
            }
        }
    }
    let a = acked.load(Ordering::Relaxed);
    if a != acked_written {
        write_acked(&dir, a);
    }
}

/// Hands over the log's records after `committed` and before `upto`, in
/// batches of consecutive offsets. False when the pipeline stopped taking them.
async fn replay(
    dir: &std::path::Path,
    committed: Option<u64>,
    upto: u64,
    out: &mpsc::Sender<Batch>,
    counters: &WalCounters,
) -> bool {
    let (tx, mut rx) = mpsc::channel::<Vec<(u64, Record)>>(4);
    let d = dir.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        log::read_after(&d, committed, |recs| {
            let mut chunk = Vec::with_capacity(REPLAY_BATCH);
            for (off, payload) in recs {
                if off >= upto {
                    break;
                }
                match bincode::deserialize::<Record>(&payload) {
                    Ok(r) => chunk.push((off, r)),
                    Err(e) => {
                        tracing::warn!(offset = off, error = %e, "a logged record could not be read back; skipped")
                    }
                }
                if chunk.len() >= REPLAY_BATCH
                    && tx.blocking_send(std::mem::take(&mut chunk)).is_err()
                {
                    return false;
                }
            }
            chunk.is_empty() || tx.blocking_send(chunk).is_ok()
        })
    });
    while let Some(chunk) = rx.recv().await {
        counters
            .replayed
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        // Split where offsets are not consecutive (records lost to damage).
        let mut batch = Batch::default();
        let mut next = None;
        for (off, r) in chunk {
            if next != Some(off)
                && !batch.records.is_empty()
                && out.send(std::mem::take(&mut batch)).await.is_err()
            {
                return false;
            }
            if batch.records.is_empty() {
                batch.first_offset = Some(off);
            }
            batch.records.push(r);
            next = Some(off + 1);
        }
        if !batch.records.is_empty() && out.send(batch).await.is_err() {
            return false;
        }
    }
    match reader.await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the write-ahead log back");
            true
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::{DeviceKind, DeviceRecord, Entity};

    fn rec(i: u32) -> Record {
        Record::Device(DeviceRecord {
            ts_ns: 0,
            received_ns: 0,
            kind: DeviceKind::Mqtt,
            protocol: "mqtt3.1.1",
            entity: Entity::Name(format!("d{i}").into()),
            topic: Some(format!("t/{i}")),
            payload_bytes: Some(i),
            samples: Vec::new(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_records_after_the_last_acknowledgement_are_candidates_again() {
        let d = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Handle::current();
        let cfg = WalConfig::default();
        let (out, mut rx) = mpsc::channel(16);
        let log = open(&rt, d.path().to_path_buf(), &cfg, None, out).expect("open");
        let task = tokio::spawn(log.committer);
        let mut first = log
            .tx
            .hand(vec![rec(0), rec(1), rec(2)])
            .await
            .expect("hand");
        first.done().await.expect("handed over");
        log.tx.acknowledged(&first);
        // The note is written with the next group.
        let mut second = log.tx.hand(vec![rec(3), rec(4)]).await.expect("hand");
        second.done().await.expect("handed over");
        drop(log.tx);
        task.await.expect("hand-over ends");
        let mut got = 0;
        while let Ok(b) = rx.try_recv() {
            assert_eq!(b.first_offset, Some(got as u64));
            got += b.records.len();
        }
        assert_eq!(got, 5);
        let (out, _rx) = mpsc::channel(16);
        let log = open(&rt, d.path().to_path_buf(), &cfg, Some(4), out).expect("reopen");
        assert_eq!(log.tx.take_logged_tail(), vec![rec(3), rec(4)]);
    }
}
