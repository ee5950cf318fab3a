//! A recorded log file as a source: each line a message, timed by its own
//! timestamp, for replaying logs beside the captures of the same incident.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use amoskys_schemas::Record;

use super::listener::SyslogCounters;
use super::parse::parse_message;
use crate::SourceError;

/// Longest line kept whole; longer ones are counted as oversized and skipped,
/// as a listener does with its `max_message_bytes`.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// A log file read line by line (a syslog daemon's file: `auth.log`,
/// `secure`, `messages`; or RFC 5424 lines). RFC 3164 timestamps carry no
/// year: the file's modification time stands for the time of reception, so
/// each line takes the year that puts it at most a day after that time.
pub struct RecordedLog {
    name: String,
    path: PathBuf,
    received_ns: i64,
    batch: usize,
    counters: Arc<SyslogCounters>,
}

impl RecordedLog {
    /// Opens `path` (to check that it can be read) and notes its modification time.
    pub fn open(name: &str, path: PathBuf, batch: usize) -> Result<RecordedLog, SourceError> {
        let meta = std::fs::metadata(&path).map_err(|e| SourceError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::File::open(&path).map_err(|e| SourceError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let received_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        Ok(RecordedLog {
            name: name.into(),
            path,
            received_ns,
            batch: batch.max(1),
            counters: Arc::default(),
        })
    }

    pub fn syslog_counters(&self) -> Arc<SyslogCounters> {
        self.counters.clone()
    }

    fn read(self, tx: crate::wal::RecordTx) -> Result<(), SourceError> {
        let file = std::fs::File::open(&self.path).map_err(|e| SourceError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut reader = BufReader::new(file);
        let c = &self.counters;
        let mut line = Vec::new();
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| SourceError::Open {
                    path: self.path.clone(),
                    reason: format!("read stopped: {e}"),
                })?;
            if n == 0 {
                break;
            }
            c.messages.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if n > MAX_LINE_BYTES {
                c.oversized.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match parse_message(&line, self.received_ns, None) {
                Ok(r) => batch.push(Record::from(r)),
                Err(_) => {
                    c.empty.fetch_add(1, Ordering::Relaxed);
                }
            }
            if batch.len() >= self.batch {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(self.batch));
                tx.blocking_send(full).map_err(|_| SourceError::Closed)?;
            }
        }
        if !batch.is_empty() {
            tx.blocking_send(batch).map_err(|_| SourceError::Closed)?;
        }
        Ok(())
    }
}

impl crate::Source for RecordedLog {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn serves(&self) -> Vec<String> {
        vec![format!("file {}", self.path.display())]
    }

    fn carries(&self) -> crate::Carries {
        crate::Carries::Records
    }

    fn clock(&self) -> crate::Clock {
        crate::Clock::Recorded
    }

    fn counters(&self) -> Arc<dyn crate::Counters> {
        self.counters.clone()
    }

    fn start(
        self: Box<Self>,
        out: crate::Output,
        _stop: crate::Stop,
        _rt: &tokio::runtime::Handle,
    ) -> Result<crate::Running, SourceError> {
        let tx = out.into_records(&self.name)?;
        crate::Running::thread(format!("log-{}", self.name), move || self.read(tx))
    }
}
