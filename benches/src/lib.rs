//! Helpers shared by the benchmarks in benches/.

/// The median of a non-empty list of measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How a source's records reach the pipeline in a benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hand {
    /// Straight into the channel.
    Channel,
    /// Through a write-ahead log with this sync policy.
    Log(amoskys_sources::wal::Fsync),
}

impl Hand {
    pub const ALL: [Hand; 3] = [
        Hand::Channel,
        Hand::Log(amoskys_sources::wal::Fsync::Off),
        Hand::Log(amoskys_sources::wal::Fsync::Group),
    ];

    pub fn label(self) -> &'static str {
        match self {
            Hand::Channel => "no log",
            Hand::Log(amoskys_sources::wal::Fsync::Off) => "log, fsync = off",
            Hand::Log(amoskys_sources::wal::Fsync::Group) => "log, fsync = group (default)",
        }
    }
}

/// Where a benchmarked source hands its batches: the pipeline's channel,
/// through a log in a temporary directory (on the target directory's disk,
/// where a job's log would be) when `hand` says so. Call inside the runtime.
pub fn record_channel(
    hand: Hand,
) -> (
    amoskys_sources::wal::RecordTx,
    tokio::sync::mpsc::Receiver<amoskys_sources::wal::Batch>,
    Option<tempfile::TempDir>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    match hand {
        Hand::Channel => (tx.into(), rx, None),
        Hand::Log(fsync) => {
            let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
            let cfg = amoskys_sources::wal::WalConfig {
                fsync,
                ..Default::default()
            };
            let log = amoskys_sources::wal::open(
                &tokio::runtime::Handle::current(),
                dir.path().to_path_buf(),
                &cfg,
                None,
                tx,
            )
            .expect("open log");
            tokio::spawn(log.committer);
            (log.tx, rx, Some(dir))
        }
    }
}
