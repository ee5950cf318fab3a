//! The long-running job: the configured sources, through the dataflow, into
//! Parquet (and a Flight endpoint, and the webhook), until SIGINT or SIGTERM.
//!
//! On a signal the sources stop accepting input and return, their channels
//! close, the inputs are closed, and the dataflow and the sinks drain: every
//! record a source accepted is written, in files with footers.

use std::time::Duration;

use amoskys_operators::features;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::durable::Logs;
use crate::error::PipelineError;
use crate::graph::{FeatureSet, GraphSpec};
use crate::job::{Settings, execute};
use crate::outputs::{JobLock, OutputPlan, Outputs};

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

/// Runs until `stop` turns true (the binary flips it on SIGINT/SIGTERM).
/// `on_ready` is called once every source is bound or open, with the addresses
/// (or interfaces, agents, brokers) each one serves.
pub fn run_job(
    cfg: Config,
    workers: usize,
    stop: watch::Receiver<bool>,
    on_ready: impl FnOnce(&[(String, String)]),
) -> Result<RunReport, PipelineError> {
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
    let sources = cfg.sources.open(rt.handle())?;
    let ready: Vec<(String, String)> = sources
        .iter()
        .flat_map(|s| s.serves().into_iter().map(|a| (s.name().to_string(), a)))
        .collect();
    let records = sources
        .iter()
        .any(|s| s.carries() == amoskys_sources::Carries::Records);

    let out = cfg.sinks.parquet.path.clone();
    // One job per output directory: what stopped runs left unfinished is
    // removed, after the `events` table's interrupted commit (if any) is
    // completed; the sources' logs are read from where its commits end.
    let lock = JobLock::take(&out)?;
    crate::durable::complete_commits(&out)?;
    let logs = match cfg.wal.enabled && records {
        true => Some(Logs::recover(
            &out,
            cfg.wal.dir.clone().unwrap_or_else(|| out.join("_wal")),
            cfg.wal.clone(),
            !cfg.models.is_empty(),
        )?),
        false => None,
    };
    let stale = lock.clean(&out)?;
    if stale > 0 {
        tracing::info!(files = stale, "removed unfinished files of stopped runs");
    }
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
    let (spec, graph, intel) = GraphSpec::from_config(&cfg, workers, FeatureSet::All, records)?;
    let outputs = Outputs::start(OutputPlan {
        cfg: &cfg,
        dir: out.clone(),
        defs: features::defs(),
        events: true,
        roll: true,
        recent: flight.is_some(),
        replay_id: None,
        logs: logs.as_ref(),
        workers,
    })?;
    on_ready(&ready);

    // The Flight endpoint serves until the sinks have closed their files.
    let (flight_done_tx, flight_done) = watch::channel(false);
    let flight_task = match flight {
        Some((fs, listener)) => {
            let tables = amoskys_query::flight::Tables::live(out.clone(), outputs.0.recent.clone())
                .map_err(|e| PipelineError::Dataflow(e.to_string()))?;
            let scheme = if fs.tls.is_some() { "grpc+tls" } else { "grpc" };
            eprintln!("flight: {scheme}://{}", fs.listen);
            let mut until = flight_done;
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
    let settings = Settings {
        workers,
        lateness_ns: cfg.window.lateness.as_nanos_i64(),
        idle: cfg.window.idle_timeout.0.0,
        max_in_flight: cfg.runtime.max_in_flight.0,
        intel_every: cfg
            .threat_intel
            .as_ref()
            .map_or(Duration::MAX, |t| t.reload.0.0),
    };
    let outcome = execute(
        &rt,
        sources,
        stop,
        spec,
        settings,
        outputs,
        intel,
        graph,
        logs.as_ref(),
    )?;
    drop(lock);
    let _ = flight_done_tx.send(true);
    if let Some(t) = flight_task {
        match rt.block_on(t) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the Flight endpoint failed"),
            Err(e) => tracing::error!(error = %e, "the Flight endpoint panicked"),
        }
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    let g = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let mut outcome = outcome;
    let webhook = outcome.written.webhook.take();
    let (i, w) = (&outcome.ingested, &outcome.written);
    Ok(RunReport {
        events: g(&i.events),
        packets: g(&i.packets),
        late: g(&i.late),
        late_packets: g(&i.late_packets),
        flows: w.flows.rows,
        feature_rows: w.features.rows,
        alerts: w.alerts.rows,
        webhook,
        sources: outcome
            .sources
            .into_iter()
            .map(|(name, kind, counters)| SourceReport {
                name,
                kind,
                counters: counters.iter().map(|c| (c.name, c.value)).collect(),
            })
            .collect(),
    })
}
