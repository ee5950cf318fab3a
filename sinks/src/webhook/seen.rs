//! The ids of the alerts a webhook spooled lately, so that an alert raised
//! again after a restart is not sent twice.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use super::io;
use crate::error::SinkError;

/// The ids of the last [`SEEN_IDS`] alerts spooled, kept in `spooled-ids` (one
/// per line, appended and synced after the alerts themselves): an alert raised
/// again after a restart — a window computed again from the sources' logs,
/// with the same deterministic id — is recognised and not spooled twice.
pub(super) struct Seen {
    path: PathBuf,
    file: File,
    pub(super) ids: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
    lines: usize,
}

/// Alert ids remembered. Far more than the alerts of the windows a restart
/// computes again (those of the last minutes).
const SEEN_IDS: usize = 100_000;

impl Seen {
    pub(super) fn open(path: PathBuf) -> Result<Seen, SinkError> {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut s = Seen {
            path,
            file,
            ids: Default::default(),
            order: Default::default(),
            lines: all.len(),
        };
        for id in &all[all.len().saturating_sub(SEEN_IDS)..] {
            s.remember(id.to_string());
        }
        if !text.is_empty() && !text.ends_with('\n') {
            s.file.write_all(b"\n").map_err(io(&s.path))?;
        }
        Ok(s)
    }

    pub(super) fn remember(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > SEEN_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    /// Records `ids` as spooled (synced), rewriting the file with the ids
    /// remembered once it holds twice as many lines.
    pub(super) fn add(&mut self, ids: Vec<String>) -> Result<(), SinkError> {
        let mut buf = String::new();
        for id in &ids {
            buf.push_str(id);
            buf.push('\n');
        }
        self.file
            .write_all(buf.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(io(&self.path))?;
        self.lines += ids.len();
        for id in ids {
            self.remember(id);
        }
        if self.lines > 2 * SEEN_IDS {
            let tmp = self.path.with_extension("tmp");
            let mut text = String::new();
            for id in &self.order {
                text.push_str(id);
                text.push('\n');
            }
            std::fs::write(&tmp, text)
                .and_then(|()| File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .map_err(io(&self.path))?;
            self.file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(io(&self.path))?;
            self.lines = self.order.len();
        }
        Ok(())
    }
}

pub(super) fn id_of(line: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("id")?
        .as_str()
        .map(str::to_string)
}
