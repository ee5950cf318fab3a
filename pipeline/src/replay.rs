//! Batch replay of recorded captures: files → flows and windowed features → Parquet.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use amoskys_sources::Source;
use amoskys_sources::pcap::{
    DecodeStats, ReadProgress, RecordedCaptures, Skip, check_readable, expand_inputs,
};
use amoskys_sources::syslog::RecordedLog;
use serde::Serialize;

use crate::config::Config;
use crate::error::PipelineError;
use crate::graph::GraphSpec;
use crate::job::{Settings, execute};
use crate::outputs::{OutputPlan, Outputs};

pub use crate::graph::FeatureSet;

/// What to replay and where to.
pub struct ReplayOptions {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub config: Config,
    /// Overrides `[runtime] workers` when set.
    pub workers: Option<usize>,
    /// Draw a progress bar on stderr (only if it is a terminal).
    pub progress: bool,
    pub feature_set: FeatureSet,
    /// Log files replayed beside the captures.
    pub logs: Vec<PathBuf>,
}

/// What a replay did; printed as one line, and available as JSON.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub files: usize,
    pub file_errors: Vec<(String, String)>,
    /// Packets and bytes read, decoded, and not decoded by reason.
    #[serde(flatten)]
    pub decode: DecodeStats,
    /// IP packets older than the watermark: counted, and left out of flows and features.
    pub late: u64,
    /// Observations that reached a window operator after their windows closed
    /// (always 0 in a replay, where the reader holds the watermark).
    pub window_late_obs: u64,
    /// Observations of entities past a window's `[window] max_entities`,
    /// counted under `100::<worker>`.
    pub window_overflow_obs: u64,
    /// Log lines taken in (with --syslog), and those already behind the
    /// watermark (written to `events`, left out of the windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<LogReport>,
    pub flows: u64,
    pub flows_evicted: u64,
    pub feature_rows: u64,
    /// Alerts the detections raised (docs/DETECTIONS.md).
    pub alerts: u64,
    /// What the alert webhook did, when one is configured.
    pub webhook: Option<crate::bridge::WebhookReport>,
    /// Entities whose history was forgotten early because the state was full.
    pub history_evicted: u64,
    pub first_ts_ns: Option<i64>,
    pub last_ts_ns: Option<i64>,
    pub workers: usize,
    pub elapsed_s: f64,
    pub packets_per_s: f64,
    pub flow_files: u64,
    pub feature_files: u64,
    /// Files of an earlier replay of the same inputs into the same directory,
    /// removed (the replay replaces them).
    pub replaced_files: usize,
}

/// What the log files of a replay gave.
#[derive(Debug, Default, Serialize)]
pub struct LogReport {
    pub lines: u64,
    pub records: u64,
    pub late: u64,
    pub oversized: u64,
    pub empty: u64,
}

impl ReplayReport {
    /// The one-line summary.
    pub fn line(&self) -> String {
        let d = &self.decode;
        let mut reasons: Vec<String> = Skip::ALL
            .iter()
            .filter(|s| d.skipped(**s) > 0)
            .map(|s| format!("{}={}", s.as_str(), d.skipped(*s)))
            .collect();
        if d.fragments > 0 {
            reasons.push(format!("ip_fragments={}", d.fragments));
        }
        if d.length_mismatch > 0 {
            reasons.push(format!("length_mismatch={}", d.length_mismatch));
        }
        let reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        };
        let errs = if self.file_errors.is_empty() {
            String::new()
        } else {
            format!(", {} file error(s)", self.file_errors.len())
        };
        let logs = match &self.events {
            Some(l) => format!("; {} log line(s), {} behind the watermark", l.lines, l.late),
            None => String::new(),
        };
        format!(
            "replayed {} file(s){errs}: {} packets, {} bytes; {} IP, {} not IP{reasons}, {} late{logs}; \
             {} flows ({} evicted), {} feature rows, {} alerts; {:.2} s, {:.0} packets/s, {} worker(s)",
            self.files,
            d.packets,
            d.bytes,
            d.ip_packets,
            d.skipped_total(),
            self.late,
            self.flows,
            self.flows_evicted,
            self.feature_rows,
            self.alerts,
            self.elapsed_s,
            self.packets_per_s,
            self.workers
        )
    }
}

/// Names a replay's files after its inputs: SHA-256 of each capture's and
/// log's path, size and modification time. A replay of the same files into
/// the same directory replaces the earlier one's output instead of adding to
/// it; other inputs get other names.
fn replay_id(files: &[PathBuf], logs: &[PathBuf]) -> Result<String, PipelineError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (kind, path) in files
        .iter()
        .map(|f| ("capture", f))
        .chain(logs.iter().map(|l| ("log", l)))
    {
        let io = |source| PipelineError::Io {
            context: format!("read {}", path.display()),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let full = std::fs::canonicalize(path).map_err(io)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(format!(
            "{kind}\0{}\0{}\0{mtime}\0",
            full.display(),
            meta.len()
        ));
    }
    let digest = h.finalize();
    Ok(format!(
        "replay{}",
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// Replays the captures in `opts.inputs` into `opts.out`.
pub fn replay(opts: ReplayOptions) -> Result<ReplayReport, PipelineError> {
    let started = Instant::now();
    let cfg = &opts.config;
    let workers = opts
        .workers
        .unwrap_or(cfg.runtime.workers.0 as usize)
        .max(1);
    let files = expand_inputs(&opts.inputs)?;
    check_readable(&files)?;
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let id = replay_id(&paths, &opts.logs)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("replay")
        .enable_all()
        .build()
        .map_err(|source| PipelineError::Io {
            context: "start the runtime".into(),
            source,
        })?;

    let batch = cfg.runtime.batch_size.0 as usize;
    let keep = cfg.flows.application_bytes.0 as usize;
    let reader = RecordedCaptures::new("replay", files, batch, keep);
    let progress = reader.progress();
    let summary = reader.summary();
    let mut sources: Vec<Box<dyn Source>> = vec![Box::new(reader)];
    let mut logs = Vec::new();
    for (k, path) in opts.logs.iter().enumerate() {
        let log = RecordedLog::open(&format!("log{k}"), path.clone(), batch)?;
        logs.push(log.syslog_counters());
        sources.push(Box::new(log));
    }
    let records = !logs.is_empty();

    let (spec, graph, intel) = GraphSpec::from_config(cfg, workers, opts.feature_set, records)?;
    let outputs = Outputs::start(OutputPlan {
        cfg,
        dir: opts.out.clone(),
        defs: opts.feature_set.defs(),
        events: records,
        roll: false,
        recent: false,
        replay_id: Some(id),
        logs: None,
        workers,
    })?;

    let done = Arc::new(AtomicBool::new(false));
    let bar = (opts.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(progress.clone(), done.clone()));
    // Nothing stops a replay but the end of its input.
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let settings = Settings {
        workers,
        lateness_ns: cfg.window.lateness.as_nanos_i64(),
        idle: cfg.window.idle_timeout.0.0,
        max_in_flight: cfg.runtime.max_in_flight.0,
        // The indicators are read once, at the start.
        intel_every: Duration::MAX,
    };
    let outcome = execute(
        &rt, sources, stop, spec, settings, outputs, intel, graph, None,
    );
    done.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    let mut outcome = outcome?;
    let read = summary
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or_else(|| PipelineError::Dataflow("the capture reader did not finish".into()))??;

    let elapsed = started.elapsed().as_secs_f64();
    let packets = read.stats.packets;
    let webhook = outcome.written.webhook.take();
    let (w, g) = (&outcome.written, &outcome.graph);
    Ok(ReplayReport {
        files: read.files_read,
        file_errors: read
            .file_errors
            .iter()
            .map(|(p, e)| (p.display().to_string(), e.clone()))
            .collect(),
        decode: read.stats,
        late: outcome.ingested.late_packets.load(Ordering::Relaxed),
        events: (!logs.is_empty()).then(|| {
            let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            LogReport {
                lines: logs.iter().map(|c| g(&c.messages)).sum(),
                records: outcome.ingested.events.load(Ordering::Relaxed),
                late: outcome.ingested.late.load(Ordering::Relaxed),
                oversized: logs.iter().map(|c| g(&c.oversized)).sum(),
                empty: logs.iter().map(|c| g(&c.empty)).sum(),
            }
        }),
        window_late_obs: g.windows.late.load(Ordering::Relaxed),
        window_overflow_obs: g.windows.overflow.load(Ordering::Relaxed)
            + g.event_windows.overflow.load(Ordering::Relaxed),
        flows: w.flows.rows,
        flows_evicted: g.flows.evicted.load(Ordering::Relaxed),
        feature_rows: w.features.rows,
        alerts: w.alerts.rows,
        webhook,
        history_evicted: g.history.evicted.load(Ordering::Relaxed),
        first_ts_ns: read.first_ns,
        last_ts_ns: read.last_ns,
        workers,
        elapsed_s: elapsed,
        packets_per_s: if elapsed > 0.0 {
            packets as f64 / elapsed
        } else {
            0.0
        },
        flow_files: w.flows.files,
        feature_files: w.features.files,
        replaced_files: w.replaced,
    })
}

fn spawn_progress(p: Arc<ReadProgress>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let total = p.total_input_bytes.load(Ordering::Relaxed).max(1);
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let start = Instant::now();
        while !done.load(Ordering::Relaxed) {
            let pk = p.packets.load(Ordering::Relaxed);
            let rate = pk as f64 / start.elapsed().as_secs_f64().max(1e-3);
            bar.set_position(p.input_bytes.load(Ordering::Relaxed).min(total));
            bar.set_message(format!("{pk} packets, {rate:.0} packets/s"));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}
