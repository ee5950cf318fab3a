//! What the long-running job keeps so that a stop of any kind loses nothing
//! and writes nothing twice: the sources' write-ahead logs, the tables'
//! commits, and where each log must be read from at the next start
//! (docs/ARCHITECTURE.md, "Durability").
//!
//! Two positions decide where a source's log is read from. The `events` table
//! commits the newest offset of each source it holds: records above it are
//! written again. The windowed tables (`features`, `alerts`, `scores`) commit a
//! window cut — every window before it is in their files — and with it the
//! lowest offset of any record of the windows after it: those records are read
//! again too, so that the windows open at a stop are computed whole. Each
//! table drops what its own commits already hold.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use amoskys_sinks::parquet::commit::{self, CommitSpec, Offsets, WINDOW_CUT};
use amoskys_sources::wal::{Release, WalConfig};

use crate::error::PipelineError;

/// The tables whose commits are cut at the windows' frontier.
pub const WINDOWED: [&str; 3] = ["features", "alerts", "scores"];

/// Panes read again before the first window not committed: what the
/// detections carry from one window to the next (an occurrence continues into
/// the next window; a template or fingerprint is new if unseen for two
/// minutes) is rebuilt from them, so an alert raised before a stop is not
/// raised again, differently, after it. Their rows are computed and dropped.
pub const CONTEXT_PANES: u64 = 6;

/// The key of a windowed table's commit that says where `source`'s log must be
/// read from for the windows after its cut.
fn replay_key(source: &str) -> String {
    format!("replay/{source}")
}

/// Completes the commits a stopped run left pending in every table, whether
/// or not this run keeps logs: the files a pending commit lists are finished
/// and are put in place, never removed as unfinished.
pub fn complete_commits(out: &Path) -> Result<(), PipelineError> {
    for t in std::iter::once("events").chain(WINDOWED) {
        commit::recover(out, t)?;
    }
    Ok(())
}

/// Where each source's records are, relative to the windows.
#[derive(Default)]
pub struct Durable {
    /// Per pane, per source: the lowest offset of a record of that pane
    /// given to the dataflow.
    panes: Mutex<BTreeMap<u64, HashMap<String, u64>>>,
    /// Per source: the offset after the newest record given to the dataflow.
    next: Mutex<HashMap<String, u64>>,
    /// Per windowed table: where its last commit said the logs are needed from.
    needed: Mutex<HashMap<String, Offsets>>,
    /// The windowed tables of this run: until each has committed once, every
    /// record may be needed.
    expect: Mutex<Vec<String>>,
}

impl Durable {
    /// A source's log is open and hands over records from `first` on: every
    /// windowed commit names it from now on.
    pub fn register(&self, source: &str, first: u64) {
        if let Ok(mut n) = self.next.lock() {
            let e = n.entry(source.to_string()).or_insert(first);
            *e = (*e).max(first);
        }
    }
}

impl Durable {
    /// A batch of `source`'s records went into the dataflow: each one's pane
    /// and offset.
    pub fn note(&self, source: &str, seen: &[(u64, u64)]) {
        if seen.is_empty() {
            return;
        }
        if let Ok(mut p) = self.panes.lock() {
            for &(pane, off) in seen {
                let m = p.entry(pane).or_default();
                match m.get_mut(source) {
                    Some(o) => *o = (*o).min(off),
                    None => {
                        m.insert(source.to_string(), off);
                    }
                }
            }
        }
        if let (Ok(mut n), Some(last)) = (self.next.lock(), seen.iter().map(|s| s.1).max()) {
            let e = n.entry(source.to_string()).or_insert(0);
            *e = (*e).max(last + 1);
        }
    }

    /// Where each source's log is needed from for the windows from `cut - 1`
    /// on (those a commit at `cut` leaves out) and [`CONTEXT_PANES`] before:
    /// its lowest offset in their panes, else the offset after its newest
    /// record given to the dataflow.
    pub fn replay_from(&self, cut: u64) -> Offsets {
        let mut out: Offsets = match self.next.lock() {
            Ok(n) => n.iter().map(|(s, o)| (replay_key(s), *o)).collect(),
            Err(_) => Offsets::new(),
        };
        if let Ok(p) = self.panes.lock() {
            for m in p
                .range(cut.saturating_sub(1 + CONTEXT_PANES)..)
                .map(|(_, m)| m)
            {
                for (s, o) in m {
                    let e = out.entry(replay_key(s)).or_insert(*o);
                    *e = (*e).min(*o);
                }
            }
        }
        out
    }

    /// `table` committed `positions`: what it needs of the logs is now that;
    /// panes no windowed table needs are forgotten.
    pub fn committed(&self, table: &str, positions: &Offsets) {
        let Ok(mut needed) = self.needed.lock() else {
            return;
        };
        needed.insert(table.to_string(), positions.clone());
        let oldest_cut = needed
            .values()
            .filter_map(|p| p.get(WINDOW_CUT).copied())
            .min();
        if let (Some(c), Ok(mut p)) = (oldest_cut, self.panes.lock()) {
            *p = p.split_off(&c.saturating_sub(1 + CONTEXT_PANES));
        }
    }

    /// The windowed tables written in this run.
    pub fn expect(&self, tables: &[&str]) {
        if let Ok(mut e) = self.expect.lock() {
            *e = tables.iter().map(|t| t.to_string()).collect();
        }
    }

    /// The lowest offset of `source`'s log a windowed table still needs
    /// (0 while one of this run's has not committed yet).
    pub fn needed_from(&self, source: &str) -> Option<u64> {
        let key = replay_key(source);
        let needed = self.needed.lock().ok()?;
        let expect = self.expect.lock().ok()?;
        // A table not committed yet, or whose commit does not name the
        // source, may need all of it.
        if expect
            .iter()
            .any(|t| needed.get(t).is_none_or(|p| !p.contains_key(&key)))
        {
            return Some(0);
        }
        needed.values().filter_map(|p| p.get(&key).copied()).min()
    }
}

/// The sources' logs and the tables' commits of one run of the job.
pub struct Logs {
    /// One directory per source below it.
    pub dir: PathBuf,
    pub cfg: WalConfig,
    /// The `events` table's committed offsets.
    pub events: Offsets,
    /// The windowed tables' commits as found at the start.
    pub windowed: HashMap<String, Offsets>,
    /// A windowed table of this run has never committed: every window the
    /// logs hold is computed again.
    pub never_committed: bool,
    /// Each source's handle on its log's segments, filled as the logs open.
    pub release: Arc<Mutex<HashMap<String, Release>>>,
    pub state: Arc<Durable>,
}

impl Logs {
    /// Completes the commits a stopped run left pending and reads where each
    /// table stands.
    /// `scores`: whether this run writes the `scores` table (models).
    pub fn recover(
        out: &Path,
        dir: PathBuf,
        cfg: WalConfig,
        scores: bool,
    ) -> Result<Logs, PipelineError> {
        let events = commit::recover(out, "events")?;
        let mut windowed = HashMap::new();
        let state = Arc::new(Durable::default());
        let mut never = false;
        // A table this run does not write (`scores` without models) neither
        // holds the logs back nor drops rows.
        for t in WINDOWED.into_iter().filter(|t| *t != "scores" || scores) {
            let p = commit::recover(out, t)?;
            if p.is_empty() {
                never = true;
            } else {
                state.committed(t, &p);
                windowed.insert(t.to_string(), p);
            }
        }
        Ok(Logs {
            dir,
            cfg,
            events,
            windowed,
            never_committed: never,
            release: Arc::default(),
            state,
        })
    }

    /// A source's log directory: its name, with anything but letters, digits,
    /// `.`, `_` and `-` replaced.
    pub fn source_dir(&self, name: &str) -> PathBuf {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(safe)
    }

    /// The newest offset of `source` whose record needs no reading again:
    /// committed in `events`, and before every window a windowed table has
    /// not committed. `None`: read the whole log.
    pub fn start_after(&self, source: &str) -> Option<u64> {
        if self.never_committed {
            return None;
        }
        let events = self.events.get(source).copied()?;
        // A windowed table whose commit does not name the source needs all
        // of its log.
        let mut needed = u64::MAX;
        for p in self.windowed.values() {
            needed = needed.min(*p.get(&replay_key(source))?);
        }
        match needed {
            u64::MAX => Some(events),
            n => n.checked_sub(1).map(|n| n.min(events)),
        }
    }

    /// How `table` commits in this run; `frontier` is the pane its rows have
    /// all arrived before (windowed tables).
    pub fn spec(&self, table: &'static str, frontier: Option<commit::Frontier>) -> CommitSpec {
        if table == "events" {
            let release = self.release.clone();
            let state = self.state.clone();
            return CommitSpec {
                committed: self.events.clone(),
                frontier: None,
                extra: None,
                after: Some(Arc::new(move |offsets: &Offsets| {
                    let Ok(r) = release.lock() else { return };
                    for (name, off) in offsets {
                        let Some(h) = r.get(name) else { continue };
                        // Kept while a window not yet committed needs it.
                        let upto = match state.needed_from(name) {
                            Some(0) => continue,
                            Some(n) => (*off).min(n - 1),
                            None => *off,
                        };
                        h.committed(upto);
                    }
                })),
            };
        }
        let state = self.state.clone();
        let replay = self.state.clone();
        CommitSpec {
            committed: self.windowed.get(table).cloned().unwrap_or_default(),
            frontier,
            extra: Some(Arc::new(move |cut| replay.replay_from(cut))),
            after: Some(Arc::new(move |p: &Offsets| state.committed(table, p))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_are_read_from_the_oldest_record_a_window_not_committed_needs() {
        let d = Durable::default();
        // Source "a": one record per pane 100..=115 (offset = pane - 100), and
        // a late record (offset 16) of pane 101.
        let seen: Vec<(u64, u64)> = (100..=115).map(|p| (p, p - 100)).collect();
        d.note("a", &seen);
        d.note("a", &[(101, 16)]);
        // A commit at cut 110: windows 109 on are not in it (panes 109 on),
        // and CONTEXT_PANES before them are read for the detections' state.
        let r = d.replay_from(110);
        assert_eq!(r.get("replay/a"), Some(&(109 - CONTEXT_PANES - 100)));
        // A cut past everything: read from the next record.
        assert_eq!(d.replay_from(200).get("replay/a"), Some(&17));
        // The late record of pane 101 counts where its pane is needed.
        assert_eq!(d.replay_from(102).get("replay/a"), Some(&0));
        d.expect(&["features"]);
        assert_eq!(
            d.needed_from("a"),
            Some(0),
            "nothing released before a first commit"
        );
        let p: Offsets = [(WINDOW_CUT.to_string(), 110)]
            .into_iter()
            .chain(r)
            .collect();
        d.committed("features", &p);
        assert_eq!(d.needed_from("a"), Some(109 - CONTEXT_PANES - 100));
        // Panes no table needs are forgotten: the late record goes with pane 101.
        assert_eq!(
            d.replay_from(0).get("replay/a"),
            Some(&(109 - CONTEXT_PANES - 100))
        );
    }
}
