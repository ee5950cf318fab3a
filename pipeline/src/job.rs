//! One run, whatever its sources: start them, build the dataflow on every
//! worker, feed it from worker 0, and wait until everything is written. The
//! long-running job (run.rs) and the batch replay (replay.rs) differ only in
//! the sources and outputs they hand over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amoskys_sources::wal::{RecordTx, WithLog};
use amoskys_sources::{Carries, Clock, Output, Source};
use tokio::sync::{mpsc, watch};

use crate::durable::Logs;
use crate::error::PipelineError;
use crate::graph::{GraphCounters, GraphSpec};
use crate::ingest::{Driver, Ingested, Input, Rx};
use crate::metrics::{Depth, Published, SourceMetrics};
use crate::outputs::{Outputs, Senders, Written};

/// Batches a source may have waiting for the dataflow.
const SOURCE_CHANNEL_BATCHES: usize = 64;

/// How the run is driven.
pub struct Settings {
    pub workers: usize,
    pub lateness_ns: i64,
    pub idle: Duration,
    pub max_in_flight: u64,
    pub intel_every: Duration,
}

/// What a run did.
pub struct Outcome {
    pub written: Written,
    pub ingested: Arc<Ingested>,
    pub graph: GraphCounters,
    /// Each source's name, kind and final counters.
    pub sources: Vec<(String, &'static str, Vec<amoskys_sources::Counter>)>,
}

/// Runs `sources` through the dataflow of `spec` into `outputs` until every
/// source has returned: recorded ones at their end, live ones when `stop`
/// turns true.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    rt: &tokio::runtime::Runtime,
    sources: Vec<Box<dyn Source>>,
    stop: watch::Receiver<bool>,
    spec: GraphSpec,
    settings: Settings,
    (outputs, senders): (Outputs, Senders),
    intel: Option<Arc<amoskys_operators::correlate::IntelShared>>,
    graph: GraphCounters,
    logs: Option<&Logs>,
) -> Result<Outcome, PipelineError> {
    let workers = settings.workers.max(1);
    let mut inputs = Vec::new();
    let mut published = Vec::new();
    let mut running = Vec::new();
    let mut log_dirs = std::collections::HashMap::new();
    for src in sources {
        let (name, kind, clock, mut counters) = (
            src.name().to_string(),
            src.kind(),
            src.clock(),
            src.counters(),
        );
        let (out, rx, depth) = match src.carries() {
            Carries::Records => {
                let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_BATCHES);
                let depth = Depth::Records(tx.downgrade());
                let tx = match logs {
                    Some(l) if clock != Clock::Recorded => {
                        let dir = l.source_dir(&name);
                        if let Some(other) = log_dirs.insert(dir.clone(), name.clone()) {
                            return Err(PipelineError::Source(
                                amoskys_sources::SourceError::Config(format!(
                                    "sources {other:?} and {name:?} would share the write-ahead log {}: rename one",
                                    dir.display()
                                )),
                            ));
                        }
                        let opened = amoskys_sources::wal::open_after(
                            rt.handle(),
                            dir,
                            &l.cfg,
                            l.start_after(&name),
                            l.events.get(&name).copied(),
                            tx,
                        )?;
                        if opened.found.to_replay > 0 {
                            eprintln!(
                                "{name}: {} record(s) of the write-ahead log not in committed output: read again",
                                opened.found.to_replay
                            );
                        }
                        rt.spawn(opened.committer);
                        if let Ok(mut r) = l.release.lock() {
                            r.insert(name.clone(), opened.release);
                        }
                        l.state
                            .register(&name, l.start_after(&name).map_or(0, |s| s + 1));
                        counters = Arc::new(WithLog {
                            source: counters,
                            log: opened.counters,
                        });
                        opened.tx
                    }
                    _ => RecordTx::from(tx),
                };
                (Output::Records(tx), Rx::Records(rx), depth)
            }
            Carries::Packets => {
                let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_BATCHES);
                let depth = Depth::Packets(tx.downgrade());
                (Output::Packets(tx), Rx::Packets(rx), depth)
            }
        };
        inputs.push(Input::new(&name, rx, clock));
        running.push(src.start(out, stop.clone(), rt.handle())?);
        published.push(SourceMetrics {
            name,
            kind,
            counters,
            depth,
        });
    }
    let ingested = Arc::new(Ingested::default());
    let report: Vec<_> = published
        .iter()
        .map(|s| (s.name.clone(), s.kind, s.counters.clone()))
        .collect();
    let (done_tx, done) = watch::channel(false);
    let publisher = rt.spawn(
        Published {
            sources: published,
            ingested: ingested.clone(),
            graph: graph.clone(),
            webhook: outputs.webhook.as_ref().map(|w| w.counters.clone()),
            intel,
        }
        .run(done),
    );

    let durable = logs.map(|l| l.state.clone());
    let inputs = Arc::new(Mutex::new(Some(inputs)));
    let (ing, gc) = (ingested.clone(), graph.clone());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let io = crate::graph::build(worker, &spec, &gc, &senders);
        let mine = if worker.index() == 0 {
            inputs.lock().ok().and_then(|mut g| g.take())
        } else {
            None
        };
        match mine {
            Some(inputs) => Driver {
                inputs,
                lateness_ns: settings.lateness_ns,
                idle: settings.idle,
                max_in_flight: settings.max_in_flight,
                ingested: &ing,
                delivered: &senders.events_delivered,
                flows: &gc.flows,
                windows: &gc.windows,
                intel_every: settings.intel_every,
                packets_sent: 0,
                durable: durable.clone(),
            }
            .drive(worker, io),
            None => drop(io),
        }
        while worker.step_or_park(Some(Duration::from_millis(5))) {}
    })
    .map_err(PipelineError::Dataflow)?;
    for r in guards.join() {
        r.map_err(|e| PipelineError::Dataflow(format!("worker failed: {e}")))?;
    }
    for r in running {
        r.join(rt.handle())?;
    }
    let written = outputs.finish()?;
    let _ = done_tx.send(true);
    let _ = rt.block_on(publisher);
    Ok(Outcome {
        written,
        ingested,
        graph,
        sources: report
            .into_iter()
            .map(|(n, k, c)| (n, k, c.snapshot()))
            .collect(),
    })
}
