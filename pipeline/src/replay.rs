//! Batch replay of recorded captures: files → flows and windowed features → Parquet.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amoskys_operators::correlate::{Correlation, CorrelationSettings, IntelShared};
use amoskys_operators::detect::{Detect, DetectCounters, Detector, GroupRules, detect_groups};
use amoskys_operators::{
    AssembleFlows, DhcpObservations, EventWindows, Featurize, FlowConfig, FlowCounters,
    HistoryCounters, PacketFeaturesOnly, WindowCounters, WithHistory, features,
};
use amoskys_schemas::{FeatureStats, Packet, metadata_json, metadata_json_with_stats, pane_of};
use amoskys_sinks::parquet::{AlertTable, FeatureTable, FlowTable, SinkSummary};
use amoskys_sources::pcap::{
    DecodeStats, FileReader, ReadProgress, Skip, check_readable, expand_inputs,
};
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::core::UnorderedInput;

use crate::bridge::{channel_sink, spawn_table_sink};
use crate::config::Config;
use crate::error::PipelineError;

/// Which features a replay computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FeatureSet {
    /// The whole catalogue (docs/FEATURES.md).
    #[default]
    All,
    /// Only the per-host packet features (the first family set): no event
    /// families (always null in a replay), no DHCP rows per hardware address and
    /// no history features; smaller output.
    Packet,
}

impl FeatureSet {
    pub fn defs(self) -> Vec<amoskys_schemas::FeatureDef> {
        match self {
            FeatureSet::All => features::defs(),
            FeatureSet::Packet => features::catalogue().iter().map(|s| s.def).collect(),
        }
    }
}

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
        format!(
            "replayed {} file(s){errs}: {} packets, {} bytes; {} IP, {} not IP{reasons}, {} late; \
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

pub(crate) fn run_id() -> String {
    let now = chrono::Utc::now();
    format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
    .replace('.', "")
}

/// Writes `DIR/feature_metadata.json` (through a temporary file and a rename):
/// the catalogue, and — once a run has ended — each feature's statistics over it.
pub fn write_feature_metadata(
    out: &Path,
    defs: &[amoskys_schemas::FeatureDef],
    stats: Option<&FeatureStats>,
) -> Result<(), PipelineError> {
    let io = |context: String| move |source| PipelineError::Io { context, source };
    std::fs::create_dir_all(out).map_err(io(format!("create {}", out.display())))?;
    let doc = match stats {
        Some(st) => metadata_json_with_stats(defs, st),
        None => metadata_json(defs),
    };
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let tmp = out.join(".feature_metadata.json.tmp");
    let dest = out.join("feature_metadata.json");
    std::fs::write(&tmp, text + "\n").map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &dest).map_err(io(format!("rename to {}", dest.display())))?;
    Ok(())
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
    let defs = opts.feature_set.defs();
    write_feature_metadata(&opts.out, &defs, None)?;

    // Sinks: one thread per table behind a bounded channel of row batches.
    let settings = cfg.sinks.parquet.settings(opts.out.clone())?;
    let (flow_tx, flow_sink) = spawn_table_sink(FlowTable, settings.clone())?;
    let feature_table = FeatureTable::new(defs.clone());
    let feature_stats = feature_table.stats();
    let (feat_tx, feat_sink) = spawn_table_sink(feature_table, settings.clone())?;
    let (alert_tx, alert_sink) = spawn_table_sink(AlertTable, settings)?;
    let webhook = crate::bridge::spawn_webhook(cfg, &opts.out)?;
    let webhook_tx = webhook.as_ref().map(|w| w.tx.clone());
    let detections = cfg.detections.0.clone();
    let user_rules: Vec<_> = cfg.rules.iter().map(|r| r.rule()).collect();
    // Checked once here; each worker builds its own.
    Detector::new(&features::defs(), &detections, &user_rules).map_err(PipelineError::Dataflow)?;
    let detect_counters = Arc::new(DetectCounters::default());
    let dc = detect_counters.clone();
    // Replay reads packets only: of the joins, the indicator matches apply (the
    // incidents need logs). The indicators are read once, at the start.
    let correlation = match &cfg.threat_intel {
        Some(t) => {
            std::fs::metadata(&t.file).map_err(|source| PipelineError::Io {
                context: format!("read the indicator file {}", t.file.display()),
                source,
            })?;
            Some(Arc::new(Correlation {
                settings: CorrelationSettings {
                    enabled: false,
                    ..cfg.correlation.settings()
                },
                intel: Some((t.settings(), Arc::new(IntelShared::default()))),
                counters: detect_counters.clone(),
            }))
        }
        None => None,
    };

    // Source: the reader thread decodes into batches behind a bounded channel.
    let batch_size = cfg.runtime.batch_size.0 as usize;
    let reader = FileReader::new(files, batch_size);
    let progress = reader.progress();
    let (pkt_tx, pkt_rx) = sync_channel::<Vec<Packet>>(16);
    let read_thread = std::thread::Builder::new()
        .name("pcap-reader".into())
        .spawn(move || {
            reader.run(|batch| {
                pkt_tx
                    .send(batch)
                    .map_err(|_| amoskys_sources::SourceError::Closed)
            })
        })
        .map_err(|source| PipelineError::Io {
            context: "spawn reader thread".into(),
            source,
        })?;

    let done = Arc::new(AtomicBool::new(false));
    let bar = (opts.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(progress.clone(), done.clone()));

    let flow_cfg = FlowConfig {
        idle_ns: cfg.flows.idle_timeout.0.as_nanos_i64(),
        active_ns: cfg.flows.active_timeout.0.as_nanos_i64(),
        closed_ns: cfg.flows.closed_timeout.as_nanos_i64(),
        max_flows: (cfg.flows.max_flows.0 as usize).div_ceil(workers),
        community_id_seed: cfg.flows.community_id_seed.0 as u16,
    };
    let driver = Driver {
        lateness_ns: cfg.window.lateness.as_nanos_i64(),
        max_in_flight: cfg.runtime.max_in_flight.0,
        late: Arc::new(AtomicU64::new(0)),
    };
    let flow_counters = Arc::new(FlowCounters::default());
    let window_counters = Arc::new(WindowCounters::default());
    let history_cfg = cfg.features.history(workers);
    let feature_set = opts.feature_set;
    let history_counters = Arc::new(HistoryCounters::default());
    let hc = history_counters.clone();
    let rx = Arc::new(Mutex::new(Some(pkt_rx)));
    let (fc, wc, late) = (
        flow_counters.clone(),
        window_counters.clone(),
        driver.late.clone(),
    );

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let worker_index = worker.index();
        let (mut input, cap) = worker.dataflow::<u64, _, _>(|scope| {
            let ((input, cap), packets) =
                scope.new_unordered_input::<CapacityContainerBuilder<Vec<Packet>>>();
            let flows = packets.clone().assemble_flows(flow_cfg, fc.clone());
            let rows = packets.clone().featurize(wc.clone());
            let rows = match feature_set {
                FeatureSet::All => {
                    let defs = features::defs();
                    // DHCP messages are windowed per client hardware address,
                    // entities of their own beside the IP addresses.
                    let dhcp = packets
                        .clone()
                        .dhcp_observations()
                        .event_windows(wc.clone());
                    let rows =
                        rows.concat(dhcp)
                            .with_history(defs.clone(), history_cfg, hc.clone());
                    let detector = Detector::new(&defs, &detections, &user_rules)
                        .expect("checked before the dataflow");
                    let (rows, mut alerts) = rows.detect(detector, dc.clone());
                    let groups =
                        GroupRules::new(&defs, &user_rules).expect("checked before the dataflow");
                    if !groups.is_empty() {
                        alerts = alerts.concat(detect_groups(rows.clone(), groups, dc.clone()));
                    }
                    if let Some(c) = &correlation {
                        let (joined, feed) = c.build(&defs, rows.clone(), packets.clone(), None);
                        alerts = alerts.concat(joined);
                        if let Some(mut feed) = feed
                            && worker_index == 0
                        {
                            feed.poll(Duration::ZERO);
                        }
                    }
                    if let Some(tx) = &webhook_tx {
                        channel_sink(alerts.clone(), "AlertsToWebhook", tx.clone(), None);
                    }
                    channel_sink(alerts, "AlertsToParquet", alert_tx.clone(), None);
                    rows
                }
                FeatureSet::Packet => rows.packet_features_only(),
            };
            channel_sink(flows, "FlowsToParquet", flow_tx.clone(), None);
            channel_sink(rows, "FeaturesToParquet", feat_tx.clone(), None);
            (input, cap)
        });
        // Worker 0 feeds the dataflow; the others only process what it routes to them.
        let rx = if worker.index() == 0 {
            rx.lock().ok().and_then(|mut r| r.take())
        } else {
            None
        };
        match rx {
            Some(rx) => driver.drive(worker, &mut input, cap, rx, &fc, &wc),
            None => drop(cap),
        }
        while worker.step_or_park(Some(Duration::from_millis(5))) {}
    })
    .map_err(PipelineError::Dataflow)?;
    for r in guards.join() {
        r.map_err(|e| PipelineError::Dataflow(format!("worker failed: {e}")))?;
    }

    let summary = read_thread
        .join()
        .map_err(|_| PipelineError::Dataflow("the capture reader panicked".into()))??;
    done.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    let flow_sum: SinkSummary = flow_sink
        .join()
        .map_err(|_| PipelineError::Dataflow("the flows sink panicked".into()))??;
    let feat_sum: SinkSummary = feat_sink
        .join()
        .map_err(|_| PipelineError::Dataflow("the features sink panicked".into()))??;
    let alert_sum: SinkSummary = alert_sink
        .join()
        .map_err(|_| PipelineError::Dataflow("the alerts sink panicked".into()))??;
    let webhook = webhook.map(crate::bridge::Webhook::finish).transpose()?;
    if let Ok(st) = feature_stats.lock() {
        write_feature_metadata(&opts.out, &defs, Some(&st))?;
    }

    let elapsed = started.elapsed().as_secs_f64();
    let packets = summary.stats.packets;
    Ok(ReplayReport {
        files: summary.files_read,
        file_errors: summary
            .file_errors
            .iter()
            .map(|(p, e)| (p.display().to_string(), e.clone()))
            .collect(),
        decode: summary.stats,
        late: late.load(Ordering::Relaxed),
        window_late_obs: window_counters.late.load(Ordering::Relaxed),
        flows: flow_sum.rows,
        flows_evicted: flow_counters.evicted.load(Ordering::Relaxed),
        feature_rows: feat_sum.rows,
        alerts: alert_sum.rows,
        webhook,
        history_evicted: history_counters.evicted.load(Ordering::Relaxed),
        first_ts_ns: summary.first_ns,
        last_ts_ns: summary.last_ns,
        workers,
        elapsed_s: elapsed,
        packets_per_s: if elapsed > 0.0 {
            packets as f64 / elapsed
        } else {
            0.0
        },
        flow_files: flow_sum.files,
        feature_files: feat_sum.files,
    })
}

/// Worker 0's loop: moves packet batches from the reader into the dataflow, keeps
/// the watermark, and holds back while too much is unprocessed.
#[derive(Clone)]
struct Driver {
    lateness_ns: i64,
    max_in_flight: u64,
    late: Arc<AtomicU64>,
}

impl Driver {
    fn drive(
        &self,
        worker: &mut timely::worker::Worker,
        input: &mut timely::dataflow::operators::core::unordered_input::UnorderedHandle<
            u64,
            CapacityContainerBuilder<Vec<Packet>>,
        >,
        mut cap: ActivateCapability<u64>,
        rx: Receiver<Vec<Packet>>,
        flows: &FlowCounters,
        windows: &WindowCounters,
    ) {
        let mut max_ts = i64::MIN;
        let mut sent = 0u64;
        let mut late = 0u64;
        let mut run: Vec<Packet> = Vec::new();
        loop {
            // Bound what the dataflow holds: packets sent but not yet taken in by
            // the flow tables, observations (two per packet) not yet windowed.
            loop {
                let f = sent.saturating_sub(flows.packets_in.load(Ordering::Relaxed));
                let w = (2 * sent).saturating_sub(windows.obs_in.load(Ordering::Relaxed));
                if f <= self.max_in_flight && w <= 2 * self.max_in_flight {
                    break;
                }
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            let batch = match rx.try_recv() {
                Ok(b) => b,
                Err(TryRecvError::Empty) => {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            };
            // Packets go in as runs of one pane; the watermark moves packet by
            // packet, and what falls behind it is late.
            let mut run_pane = None;
            let mut flush = |run: &mut Vec<Packet>, pane: u64, cap: &ActivateCapability<u64>| {
                sent += run.len() as u64;
                input
                    .activate()
                    .session(&cap.delayed(&pane))
                    .give_container(run);
                run.clear();
            };
            for p in batch {
                if p.ts_ns > max_ts {
                    max_ts = p.ts_ns;
                    let wm = pane_of(max_ts.saturating_sub(self.lateness_ns).max(0));
                    if wm > *cap.time() {
                        if let Some(rp) = run_pane.take() {
                            flush(&mut run, rp, &cap);
                        }
                        cap.downgrade(&wm);
                    }
                }
                let pane = pane_of(p.ts_ns);
                if pane < *cap.time() {
                    late += 1;
                    continue;
                }
                if run_pane != Some(pane) {
                    if let Some(rp) = run_pane {
                        flush(&mut run, rp, &cap);
                    }
                    run_pane = Some(pane);
                }
                run.push(p);
            }
            if let Some(rp) = run_pane {
                flush(&mut run, rp, &cap);
            }
            worker.step();
        }
        self.late.fetch_add(late, Ordering::Relaxed);
        flows.final_pane.store(*cap.time(), Ordering::SeqCst);
        drop(cap);
    }
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
