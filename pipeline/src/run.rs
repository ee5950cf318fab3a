//! The long-running job: sources on a tokio runtime, records through the
//! dataflow, Parquet out, until SIGINT or SIGTERM.
//!
//! Every source runs as a task (live captures as threads, since libpcap blocks)
//! handing batches to its own bounded channel. Timely worker 0 drains the channels
//! without blocking, keeps a watermark per source (a source quiet for longer than
//! `idle_timeout` stops holding it back), and feeds two inputs: packets (flows,
//! packet features) and records (the `events` table, the syslog, SNMP and MQTT
//! feature families). Both feature streams meet in one row per entity per window.
//!
//! On a signal the sources stop accepting input and return, their channels
//! close, the inputs are closed, and the dataflow and the sinks drain: every
//! record a source accepted is written, in files with footers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amoskys_operators::{
    AssembleFlows, DhcpObservations, EventWindows, Featurize, FeaturizeEvents, FlowConfig,
    FlowCounters, HistoryCounters, MergeRows, WindowCounters, WithHistory, features,
};
use amoskys_schemas::{EventRow, Packet, Record, pane_of};
use amoskys_sinks::parquet::{AlertTable, EventTable, FeatureTable, FlowTable, TableRows};
use amoskys_sources::mqtt::MqttCounters;
use amoskys_sources::pcap::CaptureCounters;
use amoskys_sources::snmp::SnmpCounters;
use amoskys_sources::syslog::{RecordTime, SyslogCounters};
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::{ActivateCapability, Concat};
use tokio::sync::{mpsc, watch};

use crate::bridge::{channel_sink, spawn_live_table_sink};
use crate::config::Config;
use crate::error::PipelineError;
use crate::replay::write_feature_metadata;
use amoskys_operators::correlate::{Correlation, IntelFeed, IntelShared};
use amoskys_operators::count_rules::Counter;
use amoskys_operators::detect::{
    Detect, DetectCounters, Detector, GroupRules, detect_events, detect_groups,
};
use amoskys_operators::device_watch::DeviceWatch;

/// Batches a source may have waiting for the dataflow.
const SOURCE_CHANNEL_BATCHES: usize = 64;

/// What a run did.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    /// Records (syslog messages, SNMP polls, MQTT messages) taken into the dataflow.
    pub events: u64,
    /// Packets taken into the dataflow.
    pub packets: u64,
    /// Records older than the watermark when they arrived (still written to `events`).
    pub late: u64,
    /// Packets older than the watermark: counted, left out of flows and features.
    pub late_packets: u64,
    pub flows: u64,
    pub feature_rows: u64,
    /// Alerts the detections raised (docs/DETECTIONS.md).
    pub alerts: u64,
    /// What the alert webhook did, when one is configured.
    pub webhook: Option<crate::bridge::WebhookReport>,
    pub sources: Vec<SourceReport>,
}

/// One source's counters, by name.
#[derive(Debug, Default, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: &'static str,
    pub counters: Vec<(&'static str, u64)>,
}

impl SourceReport {
    pub fn get(&self, k: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == k)
            .map_or(0, |(_, v)| *v)
    }
}

/// The counters of one source, whatever its kind.
#[derive(Clone)]
enum Counters {
    Syslog(Arc<SyslogCounters>),
    Mqtt(Arc<MqttCounters>),
    Snmp(Arc<SnmpCounters>),
    Pcap(Arc<CaptureCounters>),
}

impl Counters {
    fn kind(&self) -> &'static str {
        match self {
            Counters::Syslog(_) => "syslog",
            Counters::Mqtt(_) => "mqtt",
            Counters::Snmp(_) => "snmp",
            Counters::Pcap(_) => "pcap",
        }
    }

    /// (name, value) pairs; `received` and `bytes` first where they apply.
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        match self {
            Counters::Syslog(c) => vec![
                ("received", g(&c.messages)),
                ("bytes", g(&c.bytes)),
                ("oversized", g(&c.oversized)),
                ("empty", g(&c.empty)),
                ("dropped", g(&c.dropped)),
                ("kernel_dropped", c.udp_kernel_drops()),
                ("connections", g(&c.connections)),
                ("connections_refused", g(&c.connections_refused)),
                ("tls_failures", g(&c.tls_failures)),
                ("cut_at_stop", g(&c.cut_at_stop)),
            ],
            Counters::Mqtt(c) => vec![
                ("received", g(&c.messages)),
                ("bytes", g(&c.bytes)),
                ("samples", g(&c.samples)),
                ("opaque", g(&c.opaque)),
                ("truncated", g(&c.truncated)),
                ("redelivered", g(&c.redelivered)),
                ("connects", g(&c.connects)),
                ("connection_errors", g(&c.connection_errors)),
                ("connected", g(&c.connected)),
            ],
            Counters::Snmp(c) => vec![
                ("received", g(&c.polls)),
                ("samples", g(&c.samples)),
                ("poll_failures", g(&c.poll_failures)),
                ("bad_values", g(&c.bad_values)),
                ("agents_down", g(&c.agents_down)),
                ("truncated_walks", g(&c.truncated_walks)),
                ("reboots", g(&c.reboots)),
            ],
            Counters::Pcap(c) => vec![
                ("received", g(&c.packets)),
                ("bytes", g(&c.bytes)),
                ("ip_packets", g(&c.ip_packets)),
                ("not_ip", g(&c.not_ip)),
                ("dropped", g(&c.dropped)),
                ("kernel_dropped", g(&c.kernel_dropped)),
                ("if_dropped", g(&c.if_dropped)),
            ],
        }
    }
}

/// Counters of the run, shared between worker 0 and the metrics publisher.
#[derive(Default)]
struct Live {
    events: AtomicU64,
    packets: AtomicU64,
    /// Events handed to the events sink's channel.
    delivered: Arc<AtomicU64>,
    late: AtomicU64,
    late_packets: AtomicU64,
    /// The input's watermark, as a pane.
    watermark_pane: AtomicU64,
}

/// A source's channel depth, in batches.
enum Depth {
    Records(mpsc::WeakSender<Vec<Record>>),
    Packets(mpsc::WeakSender<Vec<Packet>>),
}

impl Depth {
    fn get(&self) -> usize {
        match self {
            Depth::Records(t) => t.upgrade().map_or(0, |t| t.max_capacity() - t.capacity()),
            Depth::Packets(t) => t.upgrade().map_or(0, |t| t.max_capacity() - t.capacity()),
        }
    }
}

/// Publishes the run's counters to the metrics facade (a Prometheus exporter when
/// one is installed): once a second, and a last time when `done` fires.
#[allow(clippy::too_many_arguments)]
async fn publish_metrics(
    live: Arc<Live>,
    flows: Arc<FlowCounters>,
    windows: Arc<WindowCounters>,
    history: Arc<HistoryCounters>,
    alerts: Arc<DetectCounters>,
    webhook: Option<Arc<amoskys_sinks::webhook::WebhookCounters>>,
    intel: Option<Arc<IntelShared>>,
    sources: Vec<(String, Counters, Depth)>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        for (name, c, depth) in &sources {
            let id = name.clone();
            let kind = c.kind();
            for (k, v) in c.snapshot() {
                let labels = [
                    ("component_kind", "source".to_string()),
                    ("component_type", kind.to_string()),
                    ("component_id", id.clone()),
                ];
                match k {
                    "received" => {
                        metrics::counter!("amoskys_component_received_events_total", &labels)
                            .absolute(v)
                    }
                    "bytes" => {
                        metrics::counter!("amoskys_component_received_bytes_total", &labels)
                            .absolute(v)
                    }
                    "oversized" | "empty" | "dropped" | "kernel_dropped"
                    | "if_dropped" | "truncated" | "truncated_walks" | "cut_at_stop" => {
                        let reason = if k == "dropped" { "channel_full" } else { k };
                        metrics::counter!("amoskys_component_discarded_events_total",
                            "component_id" => id.clone(), "component_type" => kind,
                            "reason" => reason, "intentional" => "false")
                        .absolute(v)
                    }
                    "poll_failures" | "connection_errors" | "bad_values" | "tls_failures" => {
                        metrics::counter!("amoskys_component_errors_total",
                            "component_id" => id.clone(), "component_type" => kind, "error_type" => k)
                        .absolute(v)
                    }
                    "connections_refused" => {
                        metrics::counter!("amoskys_connections_refused_total", &labels).absolute(v)
                    }
                    "agents_down" | "connected" => {
                        let name = if k == "connected" {
                            "amoskys_mqtt_connected"
                        } else {
                            "amoskys_snmp_agents_down"
                        };
                        metrics::gauge!(name, &labels).set(v as f64)
                    }
                    other => metrics::counter!(format!("amoskys_{kind}_{other}_total"), &labels)
                        .absolute(v),
                }
            }
            metrics::gauge!("amoskys_channel_depth_batches", "component_id" => id.clone())
                .set(depth.get() as f64);
        }
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metrics::counter!("amoskys_events_sent_total").absolute(g(&live.events));
        metrics::counter!("amoskys_packets_sent_total").absolute(g(&live.packets));
        metrics::counter!("amoskys_late_events_total").absolute(g(&live.late));
        metrics::counter!("amoskys_late_packets_total").absolute(g(&live.late_packets));
        metrics::counter!("amoskys_flows_evicted_total").absolute(g(&flows.evicted));
        metrics::counter!("amoskys_window_late_observations_total").absolute(g(&windows.late));
        metrics::counter!("amoskys_feature_rows_total").absolute(g(&windows.rows));
        metrics::counter!("amoskys_alerts_total").absolute(g(&alerts.alerts));
        if let Some(w) = &webhook {
            metrics::counter!("amoskys_webhook_spooled_total").absolute(g(&w.spooled));
            metrics::counter!("amoskys_webhook_delivered_total").absolute(g(&w.delivered));
            metrics::counter!("amoskys_webhook_requests_total").absolute(g(&w.requests));
            metrics::counter!("amoskys_webhook_retries_total").absolute(g(&w.retries));
            metrics::counter!("amoskys_webhook_rejected_total").absolute(g(&w.rejected));
        }
        if let Some(t) = &intel {
            metrics::gauge!("amoskys_threat_intel_indicators").set(g(&t.indicators) as f64);
            metrics::gauge!("amoskys_threat_intel_bad_lines").set(g(&t.bad_lines) as f64);
            metrics::counter!("amoskys_threat_intel_loads_total").absolute(g(&t.loads));
            metrics::counter!("amoskys_threat_intel_alerts_total").absolute(g(&t.alerts));
        }
        metrics::counter!("amoskys_history_evicted_total").absolute(g(&history.evicted));
        metrics::gauge!("amoskys_history_entities").set(g(&history.entities) as f64);
        let wm = live.watermark_pane.load(Ordering::Relaxed);
        if wm > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!("amoskys_watermark_lag_seconds")
                .set((now - (wm as f64) * 30.0).max(0.0));
        }
        if *done.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            r = done.changed() => if r.is_err() { return },
        }
    }
}

enum Rx {
    Records(mpsc::Receiver<Vec<Record>>),
    Packets(mpsc::Receiver<Vec<Packet>>),
}

struct Input {
    name: Arc<str>,
    rx: Rx,
    /// Records are timed by their reception (`time = "received"`).
    received_time: bool,
    max_ts: i64,
    last_seen: Instant,
    open: bool,
}

type RecordHandle = timely::dataflow::operators::core::unordered_input::UnorderedHandle<
    u64,
    CapacityContainerBuilder<Vec<EventRow>>,
>;
type PacketHandle = timely::dataflow::operators::core::unordered_input::UnorderedHandle<
    u64,
    CapacityContainerBuilder<Vec<Packet>>,
>;

/// Runs until `stop` turns true (the binary flips it on SIGINT/SIGTERM).
/// `on_ready` is called once every source is bound or open, with the addresses
/// (or interfaces, agents, brokers) each one serves.
pub fn run_job(
    cfg: Config,
    workers: usize,
    mut stop: watch::Receiver<bool>,
    on_ready: impl FnOnce(&[(String, String)]),
) -> Result<RunReport, PipelineError> {
    let s = &cfg.sources;
    cfg.check_job()
        .map_err(|e| PipelineError::Source(amoskys_sources::SourceError::Config(e)))?;
    let workers = workers.max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sources")
        .enable_all()
        .build()
        .map_err(|source| PipelineError::Io {
            context: "start the source runtime".into(),
            source,
        })?;

    // Bind, open and check every source before anything runs, so a taken port, a
    // missing interface or a bad agent address fails the start.
    let syslog = rt.block_on(async {
        let mut v = Vec::new();
        for c in &s.syslog {
            v.push(c.bind().await?);
        }
        Ok::<_, amoskys_sources::SourceError>(v)
    })?;
    let mqtt = s
        .mqtt
        .iter()
        .map(|c| c.start())
        .collect::<Result<Vec<_>, _>>()?;
    let snmp = rt.block_on(async {
        let mut v = Vec::new();
        for c in &s.snmp {
            v.push(c.start().await?);
        }
        Ok::<_, amoskys_sources::SourceError>(v)
    })?;
    let captures = s
        .pcap
        .iter()
        .map(|c| c.open())
        .collect::<Result<Vec<_>, _>>()?;

    let mut ready: Vec<(String, String)> = Vec::new();
    for src in &syslog {
        for a in src.local_addrs() {
            ready.push((src.name.clone(), a.to_string()));
        }
    }
    for c in &s.mqtt {
        ready.push((c.name.clone(), format!("{} {:?}", c.broker, c.topics)));
    }
    for c in &s.snmp {
        ready.push((c.name.clone(), format!("snmp {}", c.agents.join(", "))));
    }
    for c in &s.pcap {
        ready.push((c.name.clone(), c.describe()));
    }

    let (source_stop_tx, source_stop) = watch::channel(false);
    let capture_stop = Arc::new(AtomicBool::new(false));
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    let mut published: Vec<(String, Counters, Depth)> = Vec::new();
    let mut add_records = |name: &str, c: Counters, received_time: bool| {
        let (tx, rx) = mpsc::channel::<Vec<Record>>(SOURCE_CHANNEL_BATCHES);
        published.push((name.to_string(), c, Depth::Records(tx.downgrade())));
        inputs.push(Input {
            name: name.into(),
            rx: Rx::Records(rx),
            received_time,
            max_ts: i64::MIN,
            last_seen: Instant::now(),
            open: true,
        });
        tx
    };
    let mut record_sources = Vec::new();
    for (src, c) in syslog.into_iter().zip(&s.syslog) {
        let received = c.time == RecordTime::Received;
        let tx = add_records(&src.name, Counters::Syslog(src.counters()), received);
        let st = source_stop.clone();
        record_sources.push(rt.spawn(async move { src.run(tx, st).await }));
    }
    for src in mqtt {
        let tx = add_records(&src.name, Counters::Mqtt(src.counters()), false);
        let st = source_stop.clone();
        record_sources.push(rt.spawn(async move { src.run(tx, st).await }));
    }
    for src in snmp {
        let tx = add_records(&src.name, Counters::Snmp(src.counters()), false);
        let st = source_stop.clone();
        record_sources.push(rt.spawn(async move { src.run(tx, st).await }));
    }
    tasks.extend(record_sources);
    for cap in captures {
        let (tx, rx) = mpsc::channel::<Vec<Packet>>(SOURCE_CHANNEL_BATCHES);
        published.push((
            cap.name.clone(),
            Counters::Pcap(cap.counters()),
            Depth::Packets(tx.downgrade()),
        ));
        inputs.push(Input {
            name: cap.name.as_str().into(),
            rx: Rx::Packets(rx),
            received_time: false,
            max_ts: i64::MIN,
            last_seen: Instant::now(),
            open: true,
        });
        let st = capture_stop.clone();
        let name = cap.name.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("capture-{name}"))
                .spawn(move || cap.run(tx, st))
                .map_err(|source| PipelineError::Io {
                    context: "spawn capture thread".into(),
                    source,
                })?,
        );
    }
    let counters: Vec<(String, Counters)> = published
        .iter()
        .map(|(n, c, _)| (n.clone(), c.clone()))
        .collect();
    // Stop the sources when asked.
    let cs = capture_stop.clone();
    rt.spawn(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        cs.store(true, Ordering::Relaxed);
        let _ = source_stop_tx.send(true);
    });
    on_ready(&ready);

    let out = cfg.sinks.parquet.path.clone();
    let defs = features::defs();
    write_feature_metadata(&out, &defs, None)?;
    let mut settings = cfg.sinks.parquet.settings(out.clone())?;
    settings.roll_after = Some(cfg.sinks.parquet.roll_interval.0.0);
    // With a Flight endpoint, each table keeps the rows of its unfinished files
    // for it; the endpoint is bound now so a taken port fails the start.
    let flight = match &cfg.sinks.flight {
        Some(f) => {
            let s = f
                .settings(out.clone())
                .map_err(|e| PipelineError::Source(amoskys_sources::SourceError::Config(e)))?;
            let listener = rt
                .block_on(amoskys_query::flight::bind(s.listen))
                .map_err(|e| PipelineError::Dataflow(e.to_string()))?;
            Some((s, listener))
        }
        None => None,
    };
    let recent = |name: &'static str, schema| {
        flight
            .as_ref()
            .map(|_| Arc::new(amoskys_sinks::parquet::Recent::new(name, schema)))
    };
    let feature_table = FeatureTable::new(features::defs());
    let feature_stats = feature_table.stats();
    let recents = [
        recent(EventTable.name(), EventTable.schema()),
        recent(FlowTable.name(), FlowTable.schema()),
        recent(feature_table.name(), feature_table.schema()),
        recent(AlertTable.name(), AlertTable.schema()),
    ];
    let [r_events, r_flows, r_features, r_alerts] = recents.clone();
    let (event_tx, event_sink) = spawn_live_table_sink(EventTable, settings.clone(), r_events)?;
    let (flow_tx, flow_sink) = spawn_live_table_sink(FlowTable, settings.clone(), r_flows)?;
    let (feat_tx, feat_sink) = spawn_live_table_sink(feature_table, settings.clone(), r_features)?;
    let (alert_tx, alert_sink) = spawn_live_table_sink(AlertTable, settings, r_alerts)?;
    let webhook = crate::bridge::spawn_webhook(&cfg, &out)?;
    let webhook_tx = webhook.as_ref().map(|w| w.tx.clone());
    let detections = cfg.detections.0.clone();
    let user_rules: Vec<_> = cfg.rules.iter().map(|r| r.rule()).collect();
    Detector::new(&defs, &detections, &user_rules).map_err(PipelineError::Dataflow)?;
    let detect_counters = Arc::new(DetectCounters::default());
    let dc = detect_counters.clone();
    let intel_shared = cfg
        .threat_intel
        .as_ref()
        .map(|_| Arc::new(IntelShared::default()));
    let intel_every = cfg.threat_intel.as_ref().map(|t| t.reload.0.0);
    if let Some(t) = &cfg.threat_intel {
        std::fs::metadata(&t.file).map_err(|source| PipelineError::Io {
            context: format!("read the indicator file {}", t.file.display()),
            source,
        })?;
    }
    let count_specs: Vec<_> = cfg.count_rules.iter().map(|r| r.spec()).collect();
    let correlation = Arc::new(Correlation {
        settings: cfg.correlation.settings(),
        intel: cfg
            .threat_intel
            .as_ref()
            .zip(intel_shared.clone())
            .map(|(t, sh)| (t.settings(), sh)),
        counters: detect_counters.clone(),
    });

    let flow_cfg = FlowConfig {
        idle_ns: cfg.flows.idle_timeout.0.as_nanos_i64(),
        active_ns: cfg.flows.active_timeout.0.as_nanos_i64(),
        closed_ns: cfg.flows.closed_timeout.as_nanos_i64(),
        max_flows: (cfg.flows.max_flows.0 as usize).div_ceil(workers),
        community_id_seed: cfg.flows.community_id_seed.0 as u16,
    };
    let lateness = cfg.window.lateness.as_nanos_i64();
    let max_in_flight = cfg.runtime.max_in_flight.0;
    let idle = cfg.window.idle_timeout.0.0;
    let live = Arc::new(Live::default());
    let flow_counters = Arc::new(FlowCounters::default());
    let window_counters = Arc::new(WindowCounters::default());
    let event_window_counters = Arc::new(WindowCounters::default());
    let (done_tx, done) = watch::channel(false);
    // The Flight endpoint serves until the sinks have closed their files.
    let flight_task = match flight {
        Some((fs, listener)) => {
            let tables = amoskys_query::flight::Tables::live(
                out.clone(),
                recents.iter().flatten().cloned().collect(),
            )
            .map_err(|e| PipelineError::Dataflow(e.to_string()))?;
            let scheme = if fs.tls.is_some() { "grpc+tls" } else { "grpc" };
            eprintln!("flight: {scheme}://{}", fs.listen);
            let mut until = done.clone();
            Some(rt.spawn(amoskys_query::flight::serve_tables(
                fs,
                listener,
                Some(tables),
                async move {
                    while !*until.borrow() {
                        if until.changed().await.is_err() {
                            break;
                        }
                    }
                },
            )))
        }
        None => None,
    };
    let history_cfg = cfg.features.history(workers);
    let history_counters = Arc::new(HistoryCounters::default());
    let hc = history_counters.clone();
    let publisher = rt.spawn(publish_metrics(
        live.clone(),
        flow_counters.clone(),
        window_counters.clone(),
        history_counters.clone(),
        detect_counters.clone(),
        webhook.as_ref().map(|w| w.counters.clone()),
        intel_shared.clone(),
        published,
        done,
    ));
    let inputs = Arc::new(Mutex::new(Some(inputs)));
    let (lv, fc, wc, ewc) = (
        live.clone(),
        flow_counters.clone(),
        window_counters.clone(),
        event_window_counters.clone(),
    );
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (mut rec_in, rec_cap, mut pkt_in, pkt_cap, feed) =
            worker.dataflow::<u64, _, _>(|scope| {
                let ((rec_in, rec_cap), records) =
                    scope.new_unordered_input::<CapacityContainerBuilder<Vec<EventRow>>>();
                let ((pkt_in, pkt_cap), packets) =
                    scope.new_unordered_input::<CapacityContainerBuilder<Vec<Packet>>>();
                channel_sink(
                    records.clone(),
                    "EventsToParquet",
                    event_tx.clone(),
                    Some(lv.delivered.clone()),
                );
                let flows = packets.clone().assemble_flows(flow_cfg, fc.clone());
                channel_sink(flows, "FlowsToParquet", flow_tx.clone(), None);
                let rows = packets
                    .clone()
                    .featurize(wc.clone())
                    .concat(
                        records
                            .clone()
                            .observe_events()
                            .concat(packets.clone().dhcp_observations())
                            .event_windows(ewc.clone()),
                    )
                    .merge_rows()
                    .with_history(features::defs(), history_cfg, hc.clone());
                let detector = Detector::new(&features::defs(), &detections, &user_rules)
                    .expect("checked before the dataflow");
                let (rows, alerts) = rows.detect(detector, dc.clone());
                let (joined, feed) = correlation.build(
                    &features::defs(),
                    rows.clone(),
                    packets.clone(),
                    Some(records.clone()),
                );
                let mut alerts = alerts.concat(joined);
                let groups = GroupRules::new(&features::defs(), &user_rules)
                    .expect("checked before the dataflow");
                if !groups.is_empty() {
                    alerts = alerts.concat(detect_groups(rows.clone(), groups, dc.clone()));
                }
                let watch = DeviceWatch::new(&detections);
                if watch.is_enabled() {
                    alerts = alerts.concat(detect_events(
                        records.clone(),
                        "DeviceWatch",
                        watch,
                        dc.clone(),
                    ));
                }
                if !count_specs.is_empty() {
                    let rules = count_specs
                        .iter()
                        .map(|s| s.check())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("checked before the dataflow");
                    alerts = alerts.concat(detect_events(
                        records.clone(),
                        "CountRules",
                        Counter::new(rules),
                        dc.clone(),
                    ));
                }
                if let Some(tx) = &webhook_tx {
                    channel_sink(alerts.clone(), "AlertsToWebhook", tx.clone(), None);
                }
                channel_sink(alerts, "AlertsToParquet", alert_tx.clone(), None);
                channel_sink(rows, "FeaturesToParquet", feat_tx.clone(), None);
                (rec_in, rec_cap, pkt_in, pkt_cap, feed)
            });
        let mine = if worker.index() == 0 {
            inputs.lock().ok().and_then(|mut g| g.take())
        } else {
            None
        };
        match mine {
            Some(inputs) => {
                let mut d = Driver {
                    inputs,
                    rec_cap,
                    pkt_cap,
                    lateness,
                    idle,
                    max_in_flight,
                    live: &lv,
                    flows: &fc,
                    windows: &wc,
                    packets_sent: 0,
                    intel: feed.zip(intel_every),
                };
                d.drive(worker, &mut rec_in, &mut pkt_in);
            }
            None => {
                drop(rec_cap);
                drop(pkt_cap);
                drop(feed);
            }
        }
        while worker.step_or_park(Some(Duration::from_millis(5))) {}
    })
    .map_err(PipelineError::Dataflow)?;
    for r in guards.join() {
        r.map_err(|e| PipelineError::Dataflow(format!("worker failed: {e}")))?;
    }
    for t in tasks {
        match rt.block_on(t) {
            Ok(r) => r?,
            Err(e) => {
                return Err(PipelineError::Dataflow(format!(
                    "a source task failed: {e}"
                )));
            }
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| PipelineError::Dataflow("a capture thread panicked".into()))?;
    }
    let joined = |h: crate::bridge::SinkThread, what: &str| {
        h.join()
            .map_err(|_| PipelineError::Dataflow(format!("the {what} sink panicked")))?
            .map_err(PipelineError::from)
    };
    joined(event_sink, "events")?;
    let flow_sum = joined(flow_sink, "flows")?;
    let feat_sum = joined(feat_sink, "features")?;
    let alert_sum = joined(alert_sink, "alerts")?;
    let webhook = webhook.map(crate::bridge::Webhook::finish).transpose()?;
    if let Ok(st) = feature_stats.lock() {
        write_feature_metadata(&out, &defs, Some(&st))?;
    }
    let _ = done_tx.send(true);
    let _ = rt.block_on(publisher);
    if let Some(t) = flight_task {
        match rt.block_on(t) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the Flight endpoint failed"),
            Err(e) => tracing::error!(error = %e, "the Flight endpoint panicked"),
        }
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(RunReport {
        events: g(&live.events),
        packets: g(&live.packets),
        late: g(&live.late),
        late_packets: g(&live.late_packets),
        flows: flow_sum.rows,
        feature_rows: feat_sum.rows,
        alerts: alert_sum.rows,
        webhook,
        sources: counters
            .into_iter()
            .map(|(name, c)| SourceReport {
                name,
                kind: c.kind(),
                counters: c.snapshot(),
            })
            .collect(),
    })
}

/// Worker 0's loop: moves batches from the sources' channels into the dataflow,
/// keeps the watermark, and holds back while too much is unprocessed.
struct Driver<'a> {
    inputs: Vec<Input>,
    rec_cap: ActivateCapability<u64>,
    pkt_cap: ActivateCapability<u64>,
    lateness: i64,
    idle: Duration,
    max_in_flight: u64,
    live: &'a Live,
    flows: &'a FlowCounters,
    windows: &'a WindowCounters,
    packets_sent: u64,
    /// The indicator file's feed, and how often to look at the file.
    intel: Option<(IntelFeed, Duration)>,
}

impl Driver<'_> {
    /// Whether the dataflow holds more than `max_in_flight` records or packets.
    fn too_full(&self) -> bool {
        let l = self.live;
        let events = l
            .events
            .load(Ordering::Relaxed)
            .saturating_sub(l.delivered.load(Ordering::Relaxed));
        let f = self
            .packets_sent
            .saturating_sub(self.flows.packets_in.load(Ordering::Relaxed));
        let w = (2 * self.packets_sent).saturating_sub(self.windows.obs_in.load(Ordering::Relaxed));
        events > self.max_in_flight || f > self.max_in_flight || w > 2 * self.max_in_flight
    }

    fn drive(
        &mut self,
        worker: &mut timely::worker::Worker,
        rec_in: &mut RecordHandle,
        pkt_in: &mut PacketHandle,
    ) {
        while self.inputs.iter().any(|i| i.open) {
            // While the dataflow holds too much, leave the sources' channels full:
            // TCP readers, MQTT clients and pollers wait; UDP and captures count
            // what they drop.
            if self.too_full() {
                worker.step_or_park(Some(Duration::from_millis(1)));
                continue;
            }
            let mut got = false;
            for i in 0..self.inputs.len() {
                if !self.inputs[i].open {
                    continue;
                }
                let inp = &mut self.inputs[i];
                match &mut inp.rx {
                    Rx::Records(rx) => match rx.try_recv() {
                        Ok(batch) => {
                            got = true;
                            inp.last_seen = Instant::now();
                            let name = inp.name.clone();
                            let mut rows = Vec::with_capacity(batch.len());
                            let mut behind = 0;
                            for mut r in batch {
                                if inp.received_time {
                                    r.use_received_time();
                                }
                                let ts = r.ts_ns();
                                inp.max_ts = inp.max_ts.max(ts);
                                if pane_of(ts.max(0)) < *self.rec_cap.time() {
                                    behind += 1;
                                }
                                rows.push(EventRow {
                                    source: name.clone(),
                                    record: r,
                                });
                            }
                            self.live
                                .events
                                .fetch_add(rows.len() as u64, Ordering::Relaxed);
                            self.live.late.fetch_add(behind, Ordering::Relaxed);
                            // Events are written whatever their lateness; they go in
                            // at the current input time (the windows count the late).
                            rec_in
                                .activate()
                                .session(&self.rec_cap)
                                .give_container(&mut rows);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => inp.open = false,
                    },
                    Rx::Packets(rx) => match rx.try_recv() {
                        Ok(batch) => {
                            got = true;
                            inp.last_seen = Instant::now();
                            if let Some(m) = batch.iter().map(|p| p.ts_ns).max() {
                                inp.max_ts = inp.max_ts.max(m);
                            }
                            self.give_packets(pkt_in, batch);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => inp.open = false,
                    },
                }
            }
            self.advance_watermark();
            if let Some((feed, every)) = &mut self.intel {
                feed.poll(*every);
                feed.advance(*self.rec_cap.time());
            }
            if got {
                worker.step();
            } else {
                worker.step_or_park(Some(Duration::from_millis(10)));
            }
        }
        self.flows
            .final_pane
            .store(*self.pkt_cap.time(), Ordering::SeqCst);
    }

    /// Packets go in as runs of one pane, at that pane; those behind the
    /// watermark are late: counted, and left out.
    fn give_packets(&mut self, pkt_in: &mut PacketHandle, batch: Vec<Packet>) {
        let now = *self.pkt_cap.time();
        let mut run: Vec<Packet> = Vec::new();
        let mut run_pane = None;
        let mut late = 0u64;
        for p in batch {
            let pane = pane_of(p.ts_ns.max(0));
            if pane < now {
                late += 1;
                continue;
            }
            if run_pane != Some(pane) {
                if let Some(rp) = run_pane
                    && !run.is_empty()
                {
                    self.packets_sent += run.len() as u64;
                    pkt_in
                        .activate()
                        .session(&self.pkt_cap.delayed(&rp))
                        .give_container(&mut run);
                    run.clear();
                }
                run_pane = Some(pane);
            }
            run.push(p);
        }
        if let Some(rp) = run_pane
            && !run.is_empty()
        {
            self.packets_sent += run.len() as u64;
            pkt_in
                .activate()
                .session(&self.pkt_cap.delayed(&rp))
                .give_container(&mut run);
        }
        self.live
            .packets
            .store(self.packets_sent, Ordering::Relaxed);
        self.live.late_packets.fetch_add(late, Ordering::Relaxed);
    }

    /// The watermark: the slowest source that is not idle, less the lateness.
    /// Until every source has been heard from (or been idle for `idle`), none.
    /// When every source is idle, time goes on for them as on the wall clock
    /// since each was last heard from, so the last windows still close.
    fn advance_watermark(&mut self) {
        let idle = self.idle;
        // A source not heard from yet holds everything back until it is idle, as
        // if it might still send the oldest records.
        if self
            .inputs
            .iter()
            .any(|i| i.max_ts == i64::MIN && i.open && i.last_seen.elapsed() < idle)
        {
            return;
        }
        let seen = self.inputs.iter().filter(|i| i.max_ts > i64::MIN);
        let active = seen
            .clone()
            .filter(|i| i.last_seen.elapsed() < idle)
            .map(|i| i.max_ts)
            .min();
        let quiet = || {
            seen.clone()
                .map(|i| {
                    let gone = i64::try_from(i.last_seen.elapsed().as_nanos()).unwrap_or(i64::MAX);
                    i.max_ts.saturating_add(gone)
                })
                .min()
        };
        if let Some(min) = active.or_else(quiet) {
            let wm = pane_of(min.saturating_sub(self.lateness).max(0));
            if wm > *self.rec_cap.time() {
                self.rec_cap.downgrade(&wm);
                self.live.watermark_pane.store(wm, Ordering::Relaxed);
            }
            if wm > *self.pkt_cap.time() {
                self.pkt_cap.downgrade(&wm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_snmp_source_and_the_snmp_features_name_the_same_metrics() {
        let source: Vec<&str> = amoskys_sources::snmp::METRICS
            .iter()
            .map(|m| m.name)
            .collect();
        let features: Vec<&str> = amoskys_operators::features::SNMP_METRICS
            .iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(source, features);
        for (s, f) in amoskys_sources::snmp::METRICS
            .iter()
            .zip(amoskys_operators::features::SNMP_METRICS)
        {
            // Counting the instances that are up turns a status into a count.
            if f.combine != amoskys_operators::features::Combine::CountOnes {
                assert_eq!(s.unit, f.unit, "{}", s.name);
            }
        }
    }
}
