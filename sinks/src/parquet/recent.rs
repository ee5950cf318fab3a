//! The rows of a table that are not in a finished file yet, kept for readers
//! that want them before the file is closed (the Flight endpoint of the
//! long-running job).
//!
//! A reader takes [`Recent::reading`] (a shared lock), copies the batches, and
//! lists the finished files while still holding it; the writer closes a file
//! — renames it into its partition and forgets its batches — under the
//! exclusive lock. So a reader sees every row exactly once: in a finished file
//! or among the batches, never in both or neither.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// One table's rows not yet in a finished file.
#[derive(Debug)]
pub struct Recent {
    pub table: &'static str,
    /// The schema of the table's files (without the partition columns).
    pub schema: SchemaRef,
    gate: tokio::sync::RwLock<()>,
    /// Per hour partition (the hour's index since the epoch): the batches of its
    /// open file.
    batches: Mutex<BTreeMap<i64, Vec<RecordBatch>>>,
    rows: AtomicU64,
}

impl Recent {
    pub fn new(table: &'static str, schema: SchemaRef) -> Self {
        Recent {
            table,
            schema,
            gate: tokio::sync::RwLock::new(()),
            batches: Mutex::new(BTreeMap::new()),
            rows: AtomicU64::new(0),
        }
    }

    /// Held while a reader copies the batches and lists the finished files.
    pub async fn reading(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// The batches not in a finished file, with their hour.
    pub fn snapshot(&self) -> Vec<(i64, RecordBatch)> {
        let b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.iter()
            .flat_map(|(h, v)| v.iter().map(move |r| (*h, r.clone())))
            .collect()
    }

    /// Rows held.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub(crate) fn push(&self, hour: i64, batch: &RecordBatch) {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.entry(hour).or_default().push(batch.clone());
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    }

    /// Runs `close` (which finishes the hour's file) under the exclusive lock,
    /// then forgets the hour's batches.
    pub(crate) fn closing<T>(&self, hour: i64, close: impl FnOnce() -> T) -> T {
        let _g = self.gate.blocking_write();
        let out = close();
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = b.remove(&hour) {
            let n: u64 = v.iter().map(|r| r.num_rows() as u64).sum();
            self.rows.fetch_sub(n, Ordering::Relaxed);
        }
        out
    }

    /// Runs `close` (which publishes every file) under the exclusive lock,
    /// then forgets every batch.
    pub(crate) fn closing_all<T>(&self, close: impl FnOnce() -> T) -> T {
        let _g = self.gate.blocking_write();
        let out = close();
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.clear();
        self.rows.store(0, Ordering::Relaxed);
        out
    }
}
