//! A table's sink thread: rows from a bounded channel, buffered per hour,
//! written through a [`TableWriter`]; with a commit spec, held and committed
//! as [`super::commit`] describes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::recent::Recent;
use super::table::TableRows;
use super::writer::{ParquetSettings, SinkSummary, TableWriter, US_PER_HOUR};
use crate::error::SinkError;

/// Rows handed to the Parquet writer at a time. The writer still cuts row groups
/// of `row_group_rows`, but holds them encoded: buffering rows as records until a
/// whole row group is reached would cost several times the memory.
const WRITE_BATCH_ROWS: usize = 32768;

/// Drains `rx` into `table`'s files until every sender is gone, then closes them.
/// Rows are buffered per hour up to [`WRITE_BATCH_ROWS`] before each write.
pub fn run_table<T: TableRows>(
    table: T,
    settings: ParquetSettings,
    rx: Receiver<Vec<T::Row>>,
) -> Result<SinkSummary, SinkError> {
    run_table_live(table, settings, rx, None)
}

/// Rows kept for readers, at most, before every open file is closed.
pub const MAX_RECENT_ROWS: u64 = 500_000;

/// How often buffered rows are written out and old files rolled when rows
/// are kept for readers or files roll.
const TICK: Duration = Duration::from_millis(500);

/// What a committing table does with its rows before they are written.
struct Gate<T: TableRows> {
    spec: super::commit::CommitSpec,
    /// The positions the rows taken so far reach.
    positions: super::commit::Offsets,
    /// A windowed table's rows of windows not yet complete.
    held: Vec<T::Row>,
    /// The newest window released.
    newest: Option<u64>,
}

impl<T: TableRows> Gate<T> {
    fn new(spec: super::commit::CommitSpec) -> Self {
        Gate {
            positions: spec.committed.clone(),
            spec,
            held: Vec::new(),
            newest: None,
        }
    }

    fn frontier(&self) -> Option<u64> {
        self.spec.frontier.as_ref().map(|f| f())
    }

    /// The row, if it is to be written now: rows already committed (of records
    /// read again, of windows computed again) are dropped, rows of windows
    /// are held until [`Gate::release`].
    fn admit(&mut self, r: T::Row) -> Option<T::Row> {
        use super::commit::WINDOW_CUT;
        if let Some((src, off)) = T::log_position(&r) {
            if self.spec.committed.get(src).is_some_and(|c| off <= *c) {
                return None;
            }
            match self.positions.get_mut(src) {
                Some(o) => *o = (*o).max(off),
                None => {
                    self.positions.insert(src.to_string(), off);
                }
            }
        }
        if self.spec.frontier.is_some()
            && let Some(w) = T::window(&r)
        {
            if self
                .spec
                .committed
                .get(WINDOW_CUT)
                .is_some_and(|c| w + 2 <= *c)
            {
                return None;
            }
            self.held.push(r);
            return None;
        }
        Some(r)
    }

    /// The rows held whose windows the frontier `f` has passed; the window cut
    /// moves to `f`. At the end (`f` is `u64::MAX`: every window was emitted)
    /// it moves past the newest window written, and no further.
    fn release(&mut self, f: u64) -> Vec<T::Row> {
        let (done, keep): (Vec<T::Row>, Vec<T::Row>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|r| T::window(r).is_some_and(|w| w.saturating_add(2) <= f));
        self.held = keep;
        if let Some(m) = done.iter().filter_map(|r| T::window(r)).max() {
            self.newest = Some(self.newest.map_or(m, |n| n.max(m)));
        }
        let cut = match (f, self.newest) {
            (u64::MAX, Some(n)) => Some(n + 2),
            (u64::MAX, None) => None,
            (f, _) => Some(f),
        };
        if let Some(cut) = cut {
            let c = self
                .positions
                .entry(super::commit::WINDOW_CUT.to_string())
                .or_insert(cut);
            *c = (*c).max(cut);
        }
        done
    }

    /// What a commit now records.
    fn positions(&self) -> super::commit::Offsets {
        let mut p = self.positions.clone();
        if let (Some(extra), Some(cut)) = (&self.spec.extra, p.get(super::commit::WINDOW_CUT)) {
            let more = extra(*cut);
            p.extend(more);
        }
        p
    }
}

/// [`run_table`], also keeping the rows of unfinished files in `recent` (when
/// given): every half second the buffered rows are written (so they are among
/// `recent`'s batches) and files open for `roll_after` are closed.
pub fn run_table_live<T: TableRows>(
    table: T,
    settings: ParquetSettings,
    rx: Receiver<Vec<T::Row>>,
    recent: Option<Arc<Recent>>,
) -> Result<SinkSummary, SinkError> {
    let rows_per_batch = settings.row_group_rows.min(WRITE_BATCH_ROWS);
    let ticking = recent.is_some() || settings.roll_after.is_some();
    let mut w = TableWriter::new(settings, table.name(), table.schema())?;
    if let Some(r) = recent {
        w = w.with_recent(r);
    }
    let mut buffers: HashMap<i64, Vec<T::Row>> = HashMap::new();
    let flush = |w: &mut TableWriter, hour: i64, rows: &mut Vec<T::Row>| -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = table.to_batch(rows)?;
        rows.clear();
        w.write(hour, &batch)
    };
    let mut last_tick = Instant::now();
    let mut gate = w.settings.commit.clone().map(Gate::<T>::new);
    let mut last_commit = Instant::now();
    let commit_every = w.settings.roll_after.unwrap_or(Duration::from_secs(60));
    let take = |r: T::Row,
                gate: &mut Option<Gate<T>>,
                w: &mut TableWriter,
                buffers: &mut HashMap<i64, Vec<T::Row>>|
     -> Result<(), SinkError> {
        let Some(r) = (match gate {
            Some(g) => g.admit(r),
            None => Some(r),
        }) else {
            return Ok(());
        };
        let hour = T::partition_us(&r).div_euclid(US_PER_HOUR);
        let buf = buffers.entry(hour).or_default();
        buf.push(r);
        if buf.len() >= rows_per_batch {
            flush(w, hour, buf)?;
        }
        Ok(())
    };
    loop {
        let got = if ticking {
            match rx.recv_timeout(TICK) {
                Ok(rows) => Some(rows),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(rows) => Some(rows),
                Err(_) => break,
            }
        };
        for r in got.into_iter().flatten() {
            take(r, &mut gate, &mut w, &mut buffers)?;
        }
        if ticking && last_tick.elapsed() >= TICK {
            // A windowed table: the frontier first, then every row sent before
            // it moved; the windows it has passed are complete.
            if let Some(f) = gate.as_ref().and_then(|g| g.frontier()) {
                while let Ok(rows) = rx.try_recv() {
                    for r in rows {
                        take(r, &mut gate, &mut w, &mut buffers)?;
                    }
                }
                for r in gate.as_mut().map(|g| g.release(f)).unwrap_or_default() {
                    let hour = T::partition_us(&r).div_euclid(US_PER_HOUR);
                    buffers.entry(hour).or_default().push(r);
                }
            }
            for (h, rows) in buffers.iter_mut() {
                flush(&mut w, *h, rows)?;
            }
            buffers.clear();
            match &gate {
                Some(g) => {
                    let full = w
                        .recent
                        .as_ref()
                        .is_some_and(|r| r.rows() >= MAX_RECENT_ROWS);
                    if full || last_commit.elapsed() >= commit_every {
                        w.commit(&g.positions())?;
                        last_commit = Instant::now();
                    }
                }
                None => w.roll(MAX_RECENT_ROWS)?,
            }
            last_tick = Instant::now();
        }
    }
    // Every sender is gone: every window is complete.
    for r in gate
        .as_mut()
        .map(|g| g.release(u64::MAX))
        .unwrap_or_default()
    {
        let hour = T::partition_us(&r).div_euclid(US_PER_HOUR);
        buffers.entry(hour).or_default().push(r);
    }
    let mut hours: Vec<i64> = buffers.keys().copied().collect();
    hours.sort_unstable();
    for h in hours {
        if let Some(mut rows) = buffers.remove(&h) {
            flush(&mut w, h, &mut rows)?;
        }
    }
    if let Some(g) = &gate {
        w.commit(&g.positions())?;
    }
    w.finish()
}
