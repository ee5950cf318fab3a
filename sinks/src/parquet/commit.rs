//! Commits of a table whose rows come from sources' write-ahead logs: which
//! files hold which records, decided atomically.
//!
//! The table's writer keeps every finished file under its temporary name
//! until a commit, then:
//!
//! 1. writes `TABLE/_commits.json` with the files and the log offsets they
//!    bring the table to, as *pending* (through a temporary file, synced, and a
//!    rename);
//! 2. renames each file into its partition;
//! 3. writes `_commits.json` again with those offsets as *committed*.
//!
//! A process stopped at any point leaves the table consistent at the next
//! start ([`recover`]): before 1, the files are not committed (the next start
//! removes them and the records are read again from the logs); after 1, the
//! commit is completed (the files are finished and synced before 1, so each
//! one is either in place already or still under its temporary name).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::SinkError;

/// The newest log offset in committed files, per source.
pub type Offsets = BTreeMap<String, u64>;

/// The position of a windowed table's commits: every row of a window `w` with
/// `w + 2 <= cut` is in a committed file (window `w` covers panes `w` and
/// `w + 1`; its rows leave the window operators at one of those panes, so once
/// the sink's frontier has passed `w + 1` they have all arrived).
pub const WINDOW_CUT: &str = "window_cut";

/// The pane every row before which has reached a table's sink.
pub type Frontier = Arc<dyn Fn() -> u64 + Send + Sync>;
/// Positions to record with a commit at a window cut.
pub type Extra = Arc<dyn Fn(u64) -> Offsets + Send + Sync>;
/// Told a commit's positions.
pub type After = Arc<dyn Fn(&Offsets) + Send + Sync>;

/// How a table commits ([`super::ParquetSettings::commit`]).
#[derive(Clone, Default)]
pub struct CommitSpec {
    /// What the table's commits said at the start: rows at or below these
    /// positions are in committed files already and are dropped (rows of
    /// records read again from the logs, windows computed again).
    pub committed: Offsets,
    /// For a windowed table: the frontier of the rows reaching the sink, as a
    /// pane. Rows of windows not yet complete are held until they are.
    pub frontier: Option<Frontier>,
    /// Positions recorded with a commit at window cut `cut` (where the sources'
    /// logs must be read from for the windows after it).
    pub extra: Option<Extra>,
    /// Told every commit's positions.
    pub after: Option<After>,
}

impl std::fmt::Debug for CommitSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitSpec")
            .field("committed", &self.committed)
            .field("windowed", &self.frontier.is_some())
            .finish()
    }
}

/// The commit record's name in a table's directory.
pub const COMMIT_FILE: &str = "_commits.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    committed: Offsets,
    pending: Option<Pending>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    offsets: Offsets,
    /// Each file's temporary name and its place.
    files: Vec<(PathBuf, PathBuf)>,
}

fn state_path(root: &Path, table: &str) -> PathBuf {
    root.join(table).join(COMMIT_FILE)
}

fn read_state(path: &Path) -> Result<State, SinkError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            SinkError::Config(format!(
                "{}: not a commit record ({e}); move it away to start the table's commits afresh",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(SinkError::io(path)(e)),
    }
}

fn write_state(path: &Path, s: &State) -> Result<(), SinkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(SinkError::io(dir))?;
    let tmp = dir.join(format!(".{COMMIT_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(s).unwrap_or_default();
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp).map_err(SinkError::io(&tmp))?;
        f.write_all(&text).map_err(SinkError::io(&tmp))?;
        f.sync_all().map_err(SinkError::io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(SinkError::io(path))?;
    super::writer::sync_dir(Some(dir));
    Ok(())
}

fn place(tmp: &Path, dest: &Path) -> Result<(), SinkError> {
    if dest.exists() || !tmp.exists() {
        return Ok(());
    }
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p).map_err(SinkError::io(p))?;
    }
    fs::rename(tmp, dest).map_err(SinkError::io(dest))?;
    super::writer::sync_dir(dest.parent());
    Ok(())
}

/// Completes a commit a stopped process left pending and returns the
/// table's committed offsets (none for a table never committed).
pub fn recover(root: &Path, table: &str) -> Result<Offsets, SinkError> {
    let path = state_path(root, table);
    let mut s = read_state(&path)?;
    if let Some(p) = s.pending.take() {
        for (tmp, dest) in &p.files {
            place(tmp, dest)?;
        }
        s.committed = p.offsets;
        write_state(&path, &s)?;
    }
    Ok(s.committed)
}

/// Commits `files` (finished, synced, under their temporary names) as
/// bringing the table to `offsets`; `publish` moves each file into place.
pub fn commit(
    root: &Path,
    table: &str,
    offsets: &Offsets,
    files: &[(PathBuf, PathBuf)],
    publish: impl FnOnce() -> Result<(), SinkError>,
) -> Result<(), SinkError> {
    let path = state_path(root, table);
    let mut s = read_state(&path)?;
    if files.is_empty() && s.committed == *offsets {
        return Ok(());
    }
    // The finished files' directory entries reach the disk before a record
    // that names them.
    let mut dirs: Vec<&Path> = files.iter().filter_map(|(t, _)| t.parent()).collect();
    dirs.dedup();
    for d in dirs {
        super::writer::sync_dir(Some(d));
    }
    s.pending = Some(Pending {
        offsets: offsets.clone(),
        files: files.to_vec(),
    });
    write_state(&path, &s)?;
    publish()?;
    s.committed = offsets.clone();
    s.pending = None;
    write_state(&path, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offs(v: u64) -> Offsets {
        [("src".to_string(), v)].into_iter().collect()
    }

    #[test]
    fn a_pending_commit_is_completed_at_recovery() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        assert!(recover(root, "events").expect("test step").is_empty());
        let tmp = root.join("events/_in_progress/a.parquet.inprogress");
        let dest = root.join("events/date=2026-01-01/hour=00/a.parquet");
        fs::create_dir_all(tmp.parent().expect("test step")).expect("test step");
        fs::write(&tmp, b"x").expect("test step");
        // Stopped after the pending record, before the rename.
        let r = commit(
            root,
            "events",
            &offs(41),
            &[(tmp.clone(), dest.clone())],
            || Err(SinkError::Config("stopped".into())),
        );
        assert!(r.is_err());
        assert!(tmp.exists() && !dest.exists());
        assert_eq!(recover(root, "events").expect("test step"), offs(41));
        assert!(dest.exists() && !tmp.exists());
        // A later commit builds on it; one with nothing new writes nothing.
        commit(root, "events", &offs(41), &[], || {
            panic!("nothing to publish")
        })
        .expect("test step");
        commit(root, "events", &offs(50), &[], || Ok(())).expect("test step");
        assert_eq!(recover(root, "events").expect("test step"), offs(50));
    }
}
