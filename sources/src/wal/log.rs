//! The segmented log on disk: one directory per source, segments named by the
//! offset of their first record, each record framed and checksummed.
//!
//! ```text
//! segment  = MAGIC(8) record*
//! record   = MARK(4) len(u32 LE) offset(u64 LE) hash(u64 LE) payload(len)
//! hash     = xxHash64 of len, offset and payload
//! ```
//!
//! Offsets count records from the first the source ever logged, one apart.
//! Because each record carries its own offset, a reader that meets a damaged
//! record finds the next good one (by its mark and a matching hash) and knows
//! from the gap in offsets exactly how many records were lost. A bad or cut
//! record at the end of the newest segment is a torn write (the process or the
//! machine stopped mid-append): it is cut off at start-up and counted, never a
//! reason to refuse to start.
//!
//! (Over 600 lines: a third of it is the tests of damage and recovery, kept
//! beside the format they check.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use twox_hash::XxHash64;

const MAGIC: &[u8; 8] = b"AMSKWAL1";
const MARK: [u8; 4] = [0xA5, 0x57, 0x41, 0x4C];
const HEADER: usize = 4 + 4 + 8 + 8;
/// A record's payload is at most this (a batch of syslog lines is far less).
pub const MAX_RECORD: usize = 64 << 20;

fn hash(len: u32, offset: u64, payload: &[u8]) -> u64 {
    let mut h = XxHash64::with_seed(0);
    std::hash::Hasher::write(&mut h, &len.to_le_bytes());
    std::hash::Hasher::write(&mut h, &offset.to_le_bytes());
    std::hash::Hasher::write(&mut h, payload);
    std::hash::Hasher::finish(&h)
}

/// Appends one framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&MARK);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&hash(len, offset, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The record framed at `pos`, if a whole, intact one is there: its offset,
/// payload and end.
fn record_at(buf: &[u8], pos: usize) -> Option<(u64, &[u8], usize)> {
    let h = buf.get(pos..pos + HEADER)?;
    if h[..4] != MARK {
        return None;
    }
    let len = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let offset = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let sum = u64::from_le_bytes(h[16..24].try_into().ok()?);
    let end = (pos + HEADER).checked_add(len as usize)?;
    let payload = buf.get(pos + HEADER..end)?;
    (hash(len, offset, payload) == sum).then_some((offset, payload, end))
}

/// What a segment holds.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    /// Intact records, in order: offset and payload.
    pub records: Vec<(u64, &'a [u8])>,
    /// Where the last intact record ends (the segment's good length).
    pub good_end: usize,
    /// Stretches of bytes between intact records that are not records.
    pub damaged_stretches: u64,
    /// Whether bytes follow the last intact record.
    pub tail: bool,
}

/// Reads a segment's records, stepping over damage. `None` when the file does
/// not start with the log's magic.
pub fn scan(buf: &[u8]) -> Option<Scan<'_>> {
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut s = Scan {
        good_end: MAGIC.len(),
        ..Scan::default()
    };
    let mut pos = MAGIC.len();
    while pos < buf.len() {
        if let Some((offset, payload, end)) = record_at(buf, pos) {
            if pos > s.good_end {
                s.damaged_stretches += 1;
            }
            s.records.push((offset, payload));
            s.good_end = end;
            pos = end;
            continue;
        }
        // Not a record here: look for the next mark that starts one.
        match find_mark(buf, pos + 1) {
            Some(next) => pos = next,
            None => break,
        }
    }
    s.tail = s.good_end < buf.len();
    Some(s)
}

fn find_mark(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + HEADER <= buf.len() {
        let rest = &buf[i..];
        let k = rest.iter().position(|&b| b == MARK[0])?;
        let at = i + k;
        if buf.get(at..at + 4) == Some(&MARK[..]) && record_at(buf, at).is_some() {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// One segment file.
#[derive(Clone, Debug)]
pub struct Segment {
    pub first: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

/// The segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        let Ok(first) = stem.parse::<u64>() else {
            continue;
        };
        v.push(Segment {
            first,
            path: e.path(),
            bytes: e.metadata()?.len(),
        });
    }
    v.sort_by_key(|s| s.first);
    Ok(v)
}

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Intact records above the committed offset: to be replayed.
    pub to_replay: u64,
    /// Records lost to damage (gaps in the offsets between intact records).
    pub damaged_records: u64,
    /// Stretches of damaged bytes found between intact records.
    pub damaged_stretches: u64,
    /// Torn tails cut from the newest segment, and their bytes.
    pub torn_tails: u64,
    pub torn_bytes: u64,
    /// Segments that were not a log's (wrong magic), set aside as `.bad`.
    pub foreign_segments: u64,
}

/// How the log is written.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A new segment is started once the current one holds this many bytes.
    pub segment_bytes: u64,
    /// Bytes the log may hold on disk; past it appends are refused until
    /// committed segments are deleted.
    pub max_bytes: u64,
}

/// Appends records to the newest segment.
pub struct Writer {
    dir: PathBuf,
    opts: LogOptions,
    file: Arc<File>,
    current: Segment,
    next: u64,
    /// Every segment but the current one, oldest first, and their bytes.
    closed: Arc<std::sync::Mutex<Vec<Segment>>>,
    /// The current segment's first offset, for [`release`].
    current_first: Arc<std::sync::atomic::AtomicU64>,
    buf: Vec<u8>,
}

/// Why an append was refused.
#[derive(Debug)]
pub enum Refused {
    /// The log holds `max_bytes` already.
    Full {
        bytes: u64,
        max: u64,
    },
    /// The batch alone (or one of its records, past 64 MiB) is larger than
    /// the log may hold.
    TooLarge {
        bytes: u64,
        max: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { bytes, max } => write!(
                f,
                "the write-ahead log holds {bytes} bytes, its limit is {max} (wal.max_bytes): waiting for output to be committed"
            ),
            Refused::TooLarge { bytes, max } => write!(
                f,
                "a batch of {bytes} bytes is larger than the write-ahead log's limit of {max} (wal.max_bytes)"
            ),
            Refused::Io(e) => write!(f, "cannot append to the write-ahead log: {e}"),
        }
    }
}

impl Writer {
    /// Opens (or creates) the log in `dir`: cuts a torn tail off the newest
    /// segment, counts damage, and starts writing after the last intact record
    /// (or after `committed`, whichever is later).
    pub fn open(
        dir: &Path,
        opts: LogOptions,
        committed: Option<u64>,
    ) -> io::Result<(Writer, Opened)> {
        Self::open_after(dir, opts, committed, None)
    }

    /// [`Writer::open`], with offsets up to `used` taken already (committed
    /// output holds them, whatever the log still has): new records never
    /// reuse them.
    pub fn open_after(
        dir: &Path,
        opts: LogOptions,
        committed: Option<u64>,
        used: Option<u64>,
    ) -> io::Result<(Writer, Opened)> {
        fs::create_dir_all(dir)?;
        let mut found = Opened::default();
        let mut segs = Vec::new();
        let mut last: Option<u64> = None;
        for seg in segments(dir)? {
            let buf = fs::read(&seg.path)?;
            let Some(s) = scan(&buf) else {
                // Not ours, or a header torn at creation: set aside, never read.
                found.foreign_segments += 1;
                let mut bad = seg.path.clone().into_os_string();
                bad.push(".bad");
                fs::rename(&seg.path, bad)?;
                continue;
            };
            found.damaged_stretches += s.damaged_stretches;
            let mut expect = last.map_or(seg.first, |l| l + 1);
            for (off, _) in &s.records {
                if *off > expect {
                    found.damaged_records += off - expect;
                }
                if committed.is_none_or(|c| *off > c) {
                    found.to_replay += 1;
                }
                expect = off + 1;
                last = Some(*off);
            }
            segs.push((seg, s.tail, s.good_end as u64));
        }
        // A tail after the last intact record of the newest segment is a torn
        // write: cut. In older segments it is damage (already counted by the
        // gap to the next segment's records).
        if let Some((seg, tail, good)) = segs.last_mut()
            && *tail
        {
            found.torn_tails += 1;
            found.torn_bytes += seg.bytes - *good;
            let f = OpenOptions::new().write(true).open(&seg.path)?;
            f.set_len(*good)?;
            f.sync_all()?;
            seg.bytes = *good;
            *tail = false;
        }
        let next = last
            .map_or(0, |l| l + 1)
            .max(committed.map_or(0, |c| c + 1))
            .max(used.map_or(0, |u| u + 1));
        let mut closed: Vec<Segment> = segs.into_iter().map(|(s, _, _)| s).collect();
        let (file, current) = match closed.pop() {
            // Appending to the newest segment continues its offsets only if it
            // ends where the log does (or it holds no record and is named
            // after the next offset: the same file).
            Some(seg) if last.map_or(seg.first, |l| l + 1) == next || seg.first == next => {
                let f = OpenOptions::new().append(true).open(&seg.path)?;
                (f, seg)
            }
            other => {
                closed.extend(other);
                create_segment(dir, next)?
            }
        };
        Ok((
            Writer {
                current_first: Arc::new(current.first.into()),
                dir: dir.to_path_buf(),
                opts,
                file: Arc::new(file),
                current,
                next,
                closed: Arc::new(std::sync::Mutex::new(closed)),
                buf: Vec::new(),
            },
            found,
        ))
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The log's bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.current.bytes + self.closed_bytes()
    }

    fn closed_bytes(&self) -> u64 {
        self.closed
            .lock()
            .map(|c| c.iter().map(|s| s.bytes).sum())
            .unwrap_or(0)
    }

    /// The segments other than the current one, and the current one's first
    /// offset, shared with [`release`].
    pub fn segments(
        &self,
    ) -> (
        Arc<std::sync::Mutex<Vec<Segment>>>,
        Arc<std::sync::atomic::AtomicU64>,
    ) {
        (self.closed.clone(), self.current_first.clone())
    }

    /// Appends `payloads` as consecutive records; returns the first one's
    /// offset and the file they are in (to sync). Written with one `write`, so
    /// a crash leaves at most one torn batch at the end.
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<(u64, Arc<File>), Refused> {
        self.buf.clear();
        let first = self.next;
        for (k, p) in payloads.iter().enumerate() {
            if p.as_ref().len() > MAX_RECORD {
                return Err(Refused::TooLarge {
                    bytes: p.as_ref().len() as u64,
                    max: MAX_RECORD as u64,
                });
            }
            frame(&mut self.buf, first + k as u64, p.as_ref());
        }
        if self.buf.len() as u64 > self.opts.max_bytes {
            return Err(Refused::TooLarge {
                bytes: self.buf.len() as u64,
                max: self.opts.max_bytes,
            });
        }
        let total = self.bytes() + self.buf.len() as u64;
        if total > self.opts.max_bytes {
            return Err(Refused::Full {
                bytes: self.bytes(),
                max: self.opts.max_bytes,
            });
        }
        if self.current.bytes >= self.opts.segment_bytes {
            self.roll().map_err(Refused::Io)?;
        }
        let mut f: &File = &self.file;
        if let Err(e) = f.write_all(&self.buf) {
            // Whatever part was written is a torn tail: cut it now, so the
            // next append starts at a record boundary.
            let _ = self.file.set_len(self.current.bytes);
            return Err(Refused::Io(e));
        }
        self.current.bytes += self.buf.len() as u64;
        self.next += payloads.len() as u64;
        Ok((first, self.file.clone()))
    }

    /// Closes the current segment (synced) and starts the next.
    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let (file, seg) = create_segment(&self.dir, self.next)?;
        let old = std::mem::replace(&mut self.current, seg);
        self.file = Arc::new(file);
        // The new segment is current before the old one is listed as closed,
        // under the list's lock: a release in between sees them consistently.
        if let Ok(mut c) = self.closed.lock() {
            self.current_first
                .store(self.current.first, std::sync::atomic::Ordering::Relaxed);
            c.push(old);
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, first: u64) -> io::Result<(File, Segment)> {
    let path = segment_path(dir, first);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    f.write_all(MAGIC)?;
    f.sync_all()?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((
        f,
        Segment {
            first,
            path,
            bytes: MAGIC.len() as u64,
        },
    ))
}

/// Deletes the closed segments whose records all have offsets up to
/// `committed`; returns the bytes freed.
pub fn release(
    closed: &std::sync::Mutex<Vec<Segment>>,
    current_first: &std::sync::atomic::AtomicU64,
    committed: u64,
) -> u64 {
    let Ok(mut c) = closed.lock() else {
        return 0;
    };
    let current_first = current_first.load(std::sync::atomic::Ordering::Relaxed);
    let mut freed = 0;
    let mut keep = Vec::new();
    let firsts: Vec<u64> = c
        .iter()
        .skip(1)
        .map(|s| s.first)
        .chain([current_first])
        .collect();
    for (seg, next_first) in c.drain(..).zip(firsts) {
        // Every record of `seg` is below the next segment's first offset.
        if next_first <= committed.saturating_add(1) && fs::remove_file(&seg.path).is_ok() {
            freed += seg.bytes;
        } else {
            keep.push(seg);
        }
    }
    *c = keep;
    freed
}

/// Reads the intact records of `dir` with offsets above `after`, a segment at
/// a time: `each` gets every segment's records.
pub fn read_after(
    dir: &Path,
    after: Option<u64>,
    mut each: impl FnMut(Vec<(u64, Vec<u8>)>) -> bool,
) -> io::Result<()> {
    let segs = segments(dir)?;
    for (k, seg) in segs.iter().enumerate() {
        // Skip a segment whose successor starts at or below `after`.
        if let (Some(a), Some(n)) = (after, segs.get(k + 1))
            && n.first <= a.saturating_add(1)
        {
            continue;
        }
        let buf = fs::read(&seg.path)?;
        let Some(s) = scan(&buf) else { continue };
        let recs: Vec<(u64, Vec<u8>)> = s
            .records
            .into_iter()
            .filter(|(o, _)| after.is_none_or(|a| *o > a))
            .map(|(o, p)| (o, p.to_vec()))
            .collect();
        if !recs.is_empty() && !each(recs) {
            break;
        }
    }
    Ok(())
}

/// The newest `n` intact records of `dir` (fewer if it holds fewer), oldest first.
pub fn read_last(dir: &Path, n: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for seg in segments(dir)?.iter().rev() {
        if out.len() >= n {
            break;
        }
        let buf = fs::read(&seg.path)?;
        let Some(s) = scan(&buf) else { continue };
        let want = n - out.len();
        let skip = s.records.len().saturating_sub(want);
        let mut mine: Vec<(u64, Vec<u8>)> = s.records[skip..]
            .iter()
            .map(|(o, p)| (*o, p.to_vec()))
            .collect();
        mine.append(&mut out);
        out = mine;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LogOptions {
        LogOptions {
            segment_bytes: 200,
            max_bytes: 1 << 20,
        }
    }

    fn all(dir: &Path, after: Option<u64>) -> Vec<(u64, Vec<u8>)> {
        let mut v = Vec::new();
        read_after(dir, after, |r| {
            v.extend(r);
            true
        })
        .expect("test step");
        v
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("record number {i}").into_bytes()
    }

    fn write(dir: &Path, n: u64) {
        let (mut w, _) = Writer::open(dir, opts(), None).expect("test step");
        for i in 0..n {
            w.append(&[payload(i)]).expect("test step");
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_reopening() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), 30);
        assert!(
            segments(d.path()).expect("test step").len() > 3,
            "segments rolled"
        );
        let (mut w, found) = Writer::open(d.path(), opts(), Some(9)).expect("test step");
        assert_eq!(
            found,
            Opened {
                to_replay: 20,
                ..Opened::default()
            }
        );
        assert_eq!(w.next_offset(), 30);
        w.append(&[payload(30), payload(31)]).expect("test step");
        let got = all(d.path(), Some(9));
        assert_eq!(got.len(), 22);
        for (k, (o, p)) in got.iter().enumerate() {
            assert_eq!(*o, 10 + k as u64);
            assert_eq!(*p, payload(*o));
        }
    }

    #[test]
    fn a_flipped_byte_loses_one_record_and_a_cut_tail_is_cut() {
        let d = tempfile::tempdir().expect("tempdir");
        let big = LogOptions {
            segment_bytes: 1 << 20,
            ..opts()
        };
        let (mut w, _) = Writer::open(d.path(), big.clone(), None).expect("test step");
        for i in 0..10 {
            w.append(&[payload(i)]).expect("test step");
        }
        drop(w);
        let seg = &segments(d.path()).expect("test step")[0];
        let mut buf = fs::read(&seg.path).expect("test step");
        let rec = (buf.len() - MAGIC.len()) / 10;
        // A byte of record 3's payload, and the length field of record 6.
        buf[MAGIC.len() + 3 * rec + HEADER + 2] ^= 0x40;
        buf[MAGIC.len() + 6 * rec + 5] ^= 0x01;
        // Record 9 cut in half.
        buf.truncate(buf.len() - rec / 2);
        fs::write(&seg.path, &buf).expect("test step");
        let (w, found) = Writer::open(d.path(), big, None).expect("test step");
        assert_eq!(found.damaged_records, 2);
        assert_eq!(found.torn_tails, 1);
        assert_eq!(found.to_replay, 7);
        assert_eq!(w.next_offset(), 9);
        let offsets: Vec<u64> = all(d.path(), None).iter().map(|r| r.0).collect();
        assert_eq!(offsets, [0, 1, 2, 4, 5, 7, 8]);
        // The cut tail is gone from the file: appending continues cleanly.
        drop(w);
        let (mut w, found) = Writer::open(d.path(), opts(), None).expect("test step");
        assert_eq!(found.torn_tails, 0);
        w.append(&[payload(9)]).expect("test step");
        assert_eq!(all(d.path(), Some(8)), vec![(9, payload(9))]);
    }

    #[test]
    fn committed_segments_are_deleted_and_the_limit_refuses() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), 30);
        let (mut w, _) = Writer::open(d.path(), opts(), None).expect("test step");
        let before = w.bytes();
        let (closed, current) = w.segments();
        let first_kept = |c: &std::sync::Mutex<Vec<Segment>>| c.lock().expect("test step")[0].first;
        let freed = release(&closed, &current, 14);
        assert!(freed > 0);
        assert!(first_kept(&closed) <= 15, "the segment holding 15 stays");
        assert_eq!(w.bytes(), before - freed);
        assert_eq!(all(d.path(), Some(14)).len(), 15);
        w.opts.max_bytes = w.bytes() + 10;
        assert!(matches!(
            w.append(&[payload(30)]),
            Err(Refused::Full { .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_a_log_is_set_aside() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join(format!("{:020}.wal", 0)), b"garbage").expect("test step");
        let (w, found) = Writer::open(d.path(), opts(), None).expect("test step");
        assert_eq!(found.foreign_segments, 1);
        assert_eq!(w.next_offset(), 0);
    }
}
