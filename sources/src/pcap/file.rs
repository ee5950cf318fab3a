//! Recorded captures: which files, in what order, and reading them in batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{NS_PER_SEC, Packet};
use pcap::{Capture, Offline, Precision};

use super::decode::{DecodeStats, PayloadArena, Skip, decode};
use crate::error::SourceError;

/// File name endings treated as captures when a directory is given.
const CAPTURE_EXTENSIONS: [&str; 4] = ["pcap", "pcapng", "cap", "dmp"];

/// A capture file with what ordering needs to know of it.
#[derive(Clone, Debug)]
pub struct CaptureFile {
    pub path: PathBuf,
    /// Size on disk, for the progress bar.
    pub size: u64,
    /// Timestamp of its first packet (ns), if it has one and can be opened.
    pub first_ns: Option<i64>,
}

/// Turns the command line's PATHs into an ordered list of capture files.
///
/// A PATH is a file, a directory (its files ending in .pcap, .pcapng, .cap or .dmp,
/// recursively) or a glob. All files are ordered by the timestamp of their first
/// packet (ties and empty files by name), so that a directory of rotated captures
/// replays as one time-ordered stream.
pub fn expand_inputs(paths: &[String]) -> Result<Vec<CaptureFile>, SourceError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if path.is_dir() {
            let before = files.len();
            walk(path, &mut files)?;
            if files.len() == before {
                return Err(SourceError::NoCaptures(p.clone()));
            }
        } else if path.is_file() {
            files.push(path.to_path_buf());
        } else {
            let matches = glob::glob(p).map_err(|e| SourceError::BadGlob {
                pattern: p.clone(),
                reason: e.to_string(),
            })?;
            let before = files.len();
            files.extend(matches.filter_map(Result::ok).filter(|m| m.is_file()));
            if files.len() == before {
                return Err(SourceError::NotFound { path: p.clone() });
            }
        }
    }
    files.sort();
    files.dedup();
    let mut out: Vec<CaptureFile> = files
        .into_iter()
        .map(|path| {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let first_ns = first_timestamp(&path);
            CaptureFile {
                path,
                size,
                first_ns,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.first_ns.unwrap_or(i64::MAX), &a.path).cmp(&(b.first_ns.unwrap_or(i64::MAX), &b.path))
    });
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd.filter_map(Result::ok) {
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CAPTURE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<Capture<Offline>, SourceError> {
    Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| SourceError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// One capture record as a packet (its time, its decoded headers, its place
/// `seq` in the input) with its transport payload, or why it is none.
/// Recorded files and live capture both read records through here.
pub(crate) fn to_packet<'d>(
    lt: i32,
    header: &pcap::PacketHeader,
    data: &'d [u8],
    seq: u64,
    stats: &mut DecodeStats,
) -> Result<(Packet, &'d [u8]), Skip> {
    let ts_ns = ts_ns(header).ok_or(Skip::BadTimestamp)?;
    let mut p = Packet {
        ts_ns,
        seq,
        ..Packet::default()
    };
    let payload = decode(lt, data, header.len, &mut p, stats)?;
    Ok((p, payload))
}

// time_t and suseconds_t are i64 here but narrower on 32-bit targets.
#[allow(clippy::useless_conversion)]
pub(crate) fn ts_ns(h: &pcap::PacketHeader) -> Option<i64> {
    // With nanosecond precision libpcap scales every file's fraction to ns.
    let sec = i64::from(h.ts.tv_sec);
    let frac = i64::from(h.ts.tv_usec);
    if sec < 0 || !(0..NS_PER_SEC).contains(&frac) {
        return None;
    }
    sec.checked_mul(NS_PER_SEC)?.checked_add(frac)
}

/// Fails unless at least one of `files` opens as a capture, with the reason the
/// first one did not: nothing is worth starting (or creating an output for)
/// when no input can be read.
pub fn check_readable(files: &[CaptureFile]) -> Result<(), SourceError> {
    let mut first = None;
    for f in files {
        match open(&f.path) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(SourceError::Config(match first {
        Some(e) => format!("no capture could be read: {e}"),
        None => "no capture could be read: no input given".into(),
    }))
}

fn first_timestamp(path: &Path) -> Option<i64> {
    let mut cap = open(path).ok()?;
    let pkt = cap.next_packet().ok()?;
    ts_ns(pkt.header)
}

/// Shared counters a progress display reads while the reader runs.
#[derive(Debug, Default)]
pub struct ReadProgress {
    pub packets: AtomicU64,
    /// Bytes of input consumed, estimated from record sizes (exact for pcap files).
    pub input_bytes: AtomicU64,
    pub total_input_bytes: AtomicU64,
}

/// What a finished read saw.
#[derive(Clone, Debug, Default)]
pub struct ReadSummary {
    pub stats: DecodeStats,
    pub files_read: usize,
    /// Files that could not be opened, or broke off before their end, with why.
    pub file_errors: Vec<(PathBuf, String)>,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
}

/// Reads capture files in order and hands decoded packets over in batches.
pub struct FileReader {
    files: Vec<CaptureFile>,
    batch_size: usize,
    /// Payload bytes kept per packet (0: none).
    keep_payload: usize,
    progress: Arc<ReadProgress>,
}

impl FileReader {
    /// Reads `files` in batches of `batch_size` packets, keeping at most
    /// `keep_payload` bytes of each packet's payload (0: none).
    pub fn new(files: Vec<CaptureFile>, batch_size: usize, keep_payload: usize) -> Self {
        let progress = Arc::new(ReadProgress::default());
        progress
            .total_input_bytes
            .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
        FileReader {
            files,
            batch_size: batch_size.max(1),
            keep_payload,
            progress,
        }
    }

    pub fn progress(&self) -> Arc<ReadProgress> {
        self.progress.clone()
    }

    /// Reads every file, calling `emit` with each full batch and the last partial one.
    /// Flow state downstream spans files: `seq` numbers run on across them. Returns
    /// early only when `emit` fails (the pipeline stopped).
    pub fn run<F>(self, mut emit: F) -> Result<ReadSummary, SourceError>
    where
        F: FnMut(Vec<Packet>) -> Result<(), SourceError>,
    {
        let mut sum = ReadSummary::default();
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut payloads = PayloadArena::new(self.keep_payload);
        let mut seq = 0u64;
        for file in &self.files {
            let mut cap = match open(&file.path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping capture");
                    sum.file_errors.push((file.path.clone(), e.to_string()));
                    continue;
                }
            };
            sum.files_read += 1;
            let lt = cap.get_datalink().0;
            let (mut pk, mut by) = (0u64, 0u64);
            loop {
                let pkt = match cap.next_packet() {
                    Ok(p) => p,
                    Err(pcap::Error::NoMorePackets) => break,
                    Err(e) => {
                        let msg = format!("read stopped after {pk} packets: {e}");
                        tracing::warn!(path = %file.path.display(), "{msg}");
                        sum.file_errors.push((file.path.clone(), msg));
                        break;
                    }
                };
                let wire = pkt.header.len;
                sum.stats.packets += 1;
                sum.stats.bytes += u64::from(wire);
                pk += 1;
                by += 16 + u64::from(pkt.header.caplen);
                match to_packet(lt, pkt.header, pkt.data, seq, &mut sum.stats) {
                    Ok((p, payload)) => {
                        let ts = p.ts_ns;
                        payloads.note(batch.len(), payload);
                        seq += 1;
                        sum.stats.ip_packets += 1;
                        sum.stats.ip_bytes += u64::from(p.ip_len);
                        sum.first_ns = Some(sum.first_ns.map_or(ts, |f| f.min(ts)));
                        sum.last_ns = Some(sum.last_ns.map_or(ts, |l| l.max(ts)));
                        batch.push(p);
                        if batch.len() == self.batch_size {
                            self.progress.packets.fetch_add(pk, Ordering::Relaxed);
                            self.progress.input_bytes.fetch_add(by, Ordering::Relaxed);
                            (pk, by) = (0, 0);
                            payloads.finish(&mut batch);
                            emit(std::mem::replace(
                                &mut batch,
                                Vec::with_capacity(self.batch_size),
                            ))?;
                        }
                    }
                    Err(s) => sum.stats.skip(s),
                }
            }
            self.progress.packets.fetch_add(pk, Ordering::Relaxed);
            self.progress.input_bytes.fetch_add(by, Ordering::Relaxed);
        }
        if !batch.is_empty() {
            payloads.finish(&mut batch);
            emit(batch)?;
        }
        Ok(sum)
    }
}

impl crate::Counters for ReadProgress {
    fn snapshot(&self) -> Vec<crate::Counter> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            crate::Counter::new("received", g(&self.packets), crate::Meaning::Received),
            crate::Counter::new("input_bytes", g(&self.input_bytes), crate::Meaning::Bytes),
        ]
    }
}

/// Recorded captures as a [`crate::Source`] of the batch replay: read at full
/// speed, waiting for room in the channel, their timestamps the only clock.
pub struct RecordedCaptures {
    name: String,
    reader: FileReader,
    summary: SummarySlot,
}

/// Where a replay finds what the reader saw, once it has returned.
pub type SummarySlot = Arc<std::sync::Mutex<Option<Result<ReadSummary, SourceError>>>>;

impl RecordedCaptures {
    /// `keep_payload`: payload bytes kept per packet, for application metadata
    /// (0: none).
    pub fn new(
        name: &str,
        files: Vec<CaptureFile>,
        batch_size: usize,
        keep_payload: usize,
    ) -> Self {
        RecordedCaptures {
            name: name.into(),
            reader: FileReader::new(files, batch_size, keep_payload),
            summary: Arc::default(),
        }
    }

    pub fn progress(&self) -> Arc<ReadProgress> {
        self.reader.progress()
    }

    /// Holds the read's summary (or why it failed) once the source has returned.
    pub fn summary(&self) -> SummarySlot {
        self.summary.clone()
    }
}

impl crate::Source for RecordedCaptures {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pcap"
    }

    fn serves(&self) -> Vec<String> {
        vec![format!("{} capture file(s)", self.reader.files.len())]
    }

    fn carries(&self) -> crate::Carries {
        crate::Carries::Packets
    }

    fn clock(&self) -> crate::Clock {
        crate::Clock::Recorded
    }

    fn counters(&self) -> Arc<dyn crate::Counters> {
        self.reader.progress()
    }

    fn start(
        self: Box<Self>,
        out: crate::Output,
        _stop: crate::Stop,
        _rt: &tokio::runtime::Handle,
    ) -> Result<crate::Running, SourceError> {
        let RecordedCaptures {
            name,
            reader,
            summary,
        } = *self;
        let tx = out.into_packets(&name)?;
        crate::Running::thread("pcap-reader".into(), move || {
            let r = reader.run(|batch| tx.blocking_send(batch).map_err(|_| SourceError::Closed));
            let failed = r.as_ref().err().map(|e| SourceError::Failed(e.to_string()));
            if let Ok(mut slot) = summary.lock() {
                *slot = Some(r);
            }
            failed.map_or(Ok(()), Err)
        })
    }
}
