//! The long-running job: listeners on a tokio runtime, records through the
//! dataflow, Parquet out, until SIGINT or SIGTERM.
//!
//! Sources run as tokio tasks, each handing batches to its own bounded channel;
//! timely worker 0 drains them without blocking, keeps a watermark per source
//! (a source quiet for longer than `idle_timeout` stops holding it back), and
//! feeds the dataflow. On a signal the sources stop accepting input and return,
//! their channels close, the input is closed, and the dataflow and the sinks
//! drain: every record a source accepted is written, in files with footers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amoskys_schemas::{EventRow, SyslogRecord, pane_of};
use amoskys_sinks::parquet::EventTable;
use amoskys_sources::syslog::{SyslogCounters, SyslogSource};
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::UnorderedInput;
use tokio::sync::{mpsc, watch};

use crate::bridge::{channel_sink, spawn_table_sink};
use crate::config::Config;
use crate::error::PipelineError;

/// Batches a source may have waiting for the dataflow.
const SOURCE_CHANNEL_BATCHES: usize = 64;

/// What a run did.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub events: u64,
    /// Events older than the watermark when they arrived (still written to `events`).
    pub late: u64,
    pub sources: Vec<SourceReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: &'static str,
    pub messages: u64,
    pub oversized: u64,
    pub unparseable: u64,
    pub dropped: u64,
    pub connections_refused: u64,
}

/// Counters of the run, shared between worker 0 and the metrics publisher.
#[derive(Default)]
struct Live {
    events: AtomicU64,
    /// Events handed to the events sink's channel.
    delivered: Arc<AtomicU64>,
    late: AtomicU64,
    /// The input's watermark, as a pane.
    watermark_pane: AtomicU64,
}

/// Publishes the run's counters to the metrics facade (a Prometheus exporter when
/// one is installed): once a second, and a last time when `done` fires.
async fn publish_metrics(
    live: Arc<Live>,
    sources: Vec<(
        String,
        Arc<SyslogCounters>,
        mpsc::WeakSender<Vec<SyslogRecord>>,
    )>,
    mut done: watch::Receiver<bool>,
) {
    loop {
        for (name, c, tx) in &sources {
            let id = name.clone();
            let l = |m: &'static str| metrics::counter!(m, "component_kind" => "source", "component_type" => "syslog", "component_id" => id.clone());
            l("amoskys_component_received_events_total").absolute(c.get(&c.messages));
            l("amoskys_component_received_bytes_total").absolute(c.get(&c.bytes));
            l("amoskys_connections_refused_total").absolute(c.get(&c.connections_refused));
            for (reason, v) in [
                ("oversized", &c.oversized),
                ("unparseable", &c.unparseable),
                ("channel_full", &c.dropped),
            ] {
                metrics::counter!("amoskys_component_discarded_events_total", "component_id" => id.clone(), "reason" => reason, "intentional" => "false")
                    .absolute(c.get(v));
            }
            let depth = tx.upgrade().map_or(0, |t| t.max_capacity() - t.capacity());
            metrics::gauge!("amoskys_channel_depth_batches", "component_id" => id.clone())
                .set(depth as f64);
        }
        metrics::counter!("amoskys_events_sent_total")
            .absolute(live.events.load(Ordering::Relaxed));
        metrics::counter!("amoskys_late_events_total").absolute(live.late.load(Ordering::Relaxed));
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

struct Input {
    name: Arc<str>,
    rx: mpsc::Receiver<Vec<SyslogRecord>>,
    max_ts: i64,
    last_seen: Instant,
    open: bool,
}

/// Runs until `stop` turns true (the binary flips it on SIGINT/SIGTERM).
/// `on_ready` is called once every listener is bound, with their addresses.
pub fn run_job(
    cfg: Config,
    workers: usize,
    mut stop: watch::Receiver<bool>,
    on_ready: impl FnOnce(&[(String, String)]),
) -> Result<RunReport, PipelineError> {
    if cfg.sources.syslog.is_empty() {
        return Err(PipelineError::Source(amoskys_sources::SourceError::Config(
            "no sources configured: add a [[sources.syslog]] section (see examples/flows.toml), or use `replay` for captures".into(),
        )));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sources")
        .enable_all()
        .build()
        .map_err(|source| PipelineError::Io {
            context: "start the source runtime".into(),
            source,
        })?;

    // Bind every listener before anything runs, so a taken port fails the start.
    let bound: Vec<SyslogSource> = rt.block_on(async {
        let mut v = Vec::new();
        for s in &cfg.sources.syslog {
            v.push(s.bind().await?);
        }
        Ok::<_, amoskys_sources::SourceError>(v)
    })?;
    let ready: Vec<(String, String)> = bound
        .iter()
        .flat_map(|s| {
            s.local_addrs()
                .into_iter()
                .map(move |a| (s.name.clone(), a.to_string()))
        })
        .collect();
    let counters: Vec<(String, Arc<SyslogCounters>)> = bound
        .iter()
        .map(|s| (s.name.clone(), s.counters()))
        .collect();

    let (source_stop_tx, source_stop) = watch::channel(false);
    let mut inputs = Vec::new();
    let mut tasks = Vec::new();
    let mut published = Vec::new();
    for src in bound {
        let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_BATCHES);
        published.push((src.name.clone(), src.counters(), tx.downgrade()));
        inputs.push(Input {
            name: src.name.clone().into(),
            rx,
            max_ts: i64::MIN,
            last_seen: Instant::now(),
            open: true,
        });
        let s = source_stop.clone();
        tasks.push(rt.spawn(async move { src.run(tx, s).await }));
    }
    // Stop the sources when asked.
    rt.spawn(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        let _ = source_stop_tx.send(true);
    });
    on_ready(&ready);

    let settings = cfg.sinks.parquet.settings(cfg.sinks.parquet.path.clone())?;
    let (event_tx, event_sink) = spawn_table_sink(EventTable, settings)?;

    let lateness = cfg.window.lateness.as_nanos_i64();
    let max_in_flight = cfg.runtime.max_in_flight.0;
    let idle = cfg.window.idle_timeout.0.0;
    let live = Arc::new(Live::default());
    let (done_tx, done) = watch::channel(false);
    let publisher = rt.spawn(publish_metrics(live.clone(), published, done));
    let inputs = Arc::new(Mutex::new(Some(inputs)));
    let lv = live.clone();
    let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let (mut input, mut cap) = worker.dataflow::<u64, _, _>(|scope| {
            let ((input, cap), rows) =
                scope.new_unordered_input::<CapacityContainerBuilder<Vec<EventRow>>>();
            channel_sink(
                rows,
                "EventsToParquet",
                event_tx.clone(),
                Some(lv.delivered.clone()),
            );
            (input, cap)
        });
        let mine = if worker.index() == 0 {
            inputs.lock().ok().and_then(|mut g| g.take())
        } else {
            None
        };
        if let Some(mut inputs) = mine {
            let max_in_flight = max_in_flight;
            while inputs.iter().any(|i| i.open) {
                // While the dataflow holds more than `max_in_flight` events, leave
                // the sources' channels full: their TCP readers wait, and senders
                // are slowed instead of buffered.
                let held = lv
                    .events
                    .load(Ordering::Relaxed)
                    .saturating_sub(lv.delivered.load(Ordering::Relaxed));
                if held > max_in_flight {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    continue;
                }
                let mut got = false;
                for inp in inputs.iter_mut().filter(|i| i.open) {
                    match inp.rx.try_recv() {
                        Ok(batch) => {
                            got = true;
                            inp.last_seen = Instant::now();
                            let mut rows = Vec::with_capacity(batch.len());
                            let mut behind = 0;
                            for r in batch {
                                inp.max_ts = inp.max_ts.max(r.ts_ns);
                                if pane_of(r.ts_ns.max(0)) < *cap.time() {
                                    behind += 1;
                                }
                                rows.push(EventRow {
                                    source: inp.name.clone(),
                                    record: r,
                                });
                            }
                            lv.events.fetch_add(rows.len() as u64, Ordering::Relaxed);
                            lv.late.fetch_add(behind, Ordering::Relaxed);
                            // Events are written whatever their lateness; they go in
                            // at the current input time.
                            input.activate().session(&cap).give_container(&mut rows);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => inp.open = false,
                    }
                }
                // The watermark: the slowest source that is not idle.
                let active = inputs
                    .iter()
                    .filter(|i| i.max_ts > i64::MIN && i.last_seen.elapsed() < idle);
                if let Some(min) = active.map(|i| i.max_ts).min() {
                    let wm = pane_of(min.saturating_sub(lateness).max(0));
                    if wm > *cap.time() {
                        cap.downgrade(&wm);
                        lv.watermark_pane.store(wm, Ordering::Relaxed);
                    }
                }
                if got {
                    worker.step();
                } else {
                    worker.step_or_park(Some(Duration::from_millis(10)));
                }
            }
        }
        drop(cap);
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
    event_sink
        .join()
        .map_err(|_| PipelineError::Dataflow("the events sink panicked".into()))??;
    let _ = done_tx.send(true);
    let _ = rt.block_on(publisher);
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(RunReport {
        events: live.events.load(Ordering::Relaxed),
        late: live.late.load(Ordering::Relaxed),
        sources: counters
            .into_iter()
            .map(|(name, c)| SourceReport {
                name,
                kind: "syslog",
                messages: c.get(&c.messages),
                oversized: c.get(&c.oversized),
                unparseable: c.get(&c.unparseable),
                dropped: c.get(&c.dropped),
                connections_refused: c.get(&c.connections_refused),
            })
            .collect(),
    })
}
