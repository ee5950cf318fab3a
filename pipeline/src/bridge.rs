//! Where the dataflow hands rows to sink threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use amoskys_sinks::SinkError;
use amoskys_sinks::parquet::{ParquetSettings, SinkSummary, TableRows, run_table_live};

use crate::error::PipelineError;

/// Batches of rows a table's channel holds between the dataflow and its sink thread.
const SINK_CHANNEL_BATCHES: usize = 64;

/// The running sink thread of a table; joining it gives what it wrote.
pub type SinkThread = JoinHandle<Result<SinkSummary, SinkError>>;
/// Where the dataflow sends a table's rows.
pub type RowSender<T> = SyncSender<Vec<<T as TableRows>::Row>>;

/// A table's sink: a thread writing Parquet from a bounded channel of row
/// batches, keeping the rows of unfinished files in `recent` when given.
pub fn spawn_live_table_sink<T: TableRows>(
    table: T,
    settings: ParquetSettings,
    recent: Option<Arc<amoskys_sinks::parquet::Recent>>,
) -> Result<(RowSender<T>, SinkThread), PipelineError> {
    let (tx, rx) = sync_channel::<Vec<T::Row>>(SINK_CHANNEL_BATCHES);
    let handle = std::thread::Builder::new()
        .name(format!("sink-{}", table.name()))
        .spawn(move || run_table_live(table, settings, rx, recent))
        .map_err(|source| PipelineError::Io {
            context: "spawn sink thread".into(),
            source,
        })?;
    Ok((tx, handle))
}

/// How far each worker's rows of one stream have all reached their channel:
/// the stream's frontier at each worker, once every row before it was sent.
#[derive(Debug)]
pub struct Progress(Vec<AtomicU64>);

impl Progress {
    pub fn new(workers: usize) -> Self {
        Progress((0..workers.max(1)).map(|_| AtomicU64::new(0)).collect())
    }

    fn set(&self, worker: usize, t: u64) {
        if let Some(a) = self.0.get(worker) {
            a.fetch_max(t, Ordering::Release);
        }
    }

    /// Every row at a time before this is in the channel.
    pub fn frontier(&self) -> u64 {
        self.0
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// Sends each batch of `stream` into a bounded channel. A full channel never blocks
/// the worker: the batch waits here, the operator stops reading its input and asks
/// to be scheduled again shortly, which holds the frontier back upstream. While
/// batches wait, the operator holds a capability, so the dataflow cannot count as
/// finished (and be torn down) with rows still undelivered.
///
/// `delivered`, when given, counts the rows handed to the channel: a driver that
/// compares it with what it put in knows how much the dataflow holds.
/// `progress`, when given, is told this worker's input frontier each time
/// every row before it is in the channel.
pub fn channel_sink<R: 'static>(
    stream: Stream<'_, u64, Vec<R>>,
    name: &str,
    tx: SyncSender<Vec<R>>,
    delivered: Option<Arc<AtomicU64>>,
    progress: Option<Arc<Progress>>,
) {
    let scope = stream.scope();
    let worker = scope.index();
    stream.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        name,
        move |cap, info| {
            drop(cap);
            let activator = scope.activator_for(info.address);
            let mut pending: VecDeque<Vec<R>> = VecDeque::new();
            let mut held: Option<Capability<u64>> = None;
            let mut tx = Some(tx);
            move |(input, frontier), output| {
                let Some(sender) = tx.as_ref() else {
                    input.for_each(|_, _| {});
                    return;
                };
                let count = |n: usize| {
                    if let Some(d) = delivered.as_ref() {
                        d.fetch_add(n as u64, Ordering::Relaxed);
                    }
                };
                // Oldest first; stop at the first batch the channel cannot take.
                while let Some(b) = pending.pop_front() {
                    let n = b.len();
                    match sender.try_send(b) {
                        Ok(()) => count(n),
                        Err(TrySendError::Full(b)) => {
                            pending.push_front(b);
                            break;
                        }
                        // The sink thread is gone (it failed and reported why).
                        Err(TrySendError::Disconnected(_)) => pending.clear(),
                    }
                }
                if pending.is_empty() {
                    let out_idx = output.output_index();
                    input.for_each(|cap, data| {
                        let batch = std::mem::take(data);
                        if batch.is_empty() {
                            return;
                        }
                        if !pending.is_empty() {
                            pending.push_back(batch);
                            return;
                        }
                        let n = batch.len();
                        match sender.try_send(batch) {
                            Ok(()) => count(n),
                            Err(TrySendError::Full(b)) => {
                                pending.push_back(b);
                                if held.is_none() {
                                    held = cap.retain_least(out_idx);
                                }
                            }
                            Err(TrySendError::Disconnected(_)) => {}
                        }
                    });
                }
                if pending.is_empty() {
                    held = None;
                    if let Some(p) = &progress {
                        p.set(
                            worker,
                            frontier.frontier().first().copied().unwrap_or(u64::MAX),
                        );
                    }
                    if frontier.frontier().is_empty() {
                        tx = None;
                    }
                } else {
                    activator.activate_after(Duration::from_millis(1));
                }
            }
        },
    );
}

/// The running webhook thread, its channel and its counters.
pub struct Webhook {
    pub tx: SyncSender<Vec<amoskys_schemas::Alert>>,
    pub thread: JoinHandle<Result<(), SinkError>>,
    pub counters: Arc<amoskys_sinks::webhook::WebhookCounters>,
}

/// Starts the alert webhook of `cfg`, if it has one, spooling under `root` by
/// default; a bad key or certificate file is a configuration error, reported
/// before anything runs.
pub fn spawn_webhook(
    cfg: &crate::config::Config,
    root: &std::path::Path,
    committed_cut: Option<u64>,
    progress: Option<amoskys_sinks::webhook::SpoolProgress>,
) -> Result<Option<Webhook>, PipelineError> {
    let Some(w) = &cfg.sinks.webhook else {
        return Ok(None);
    };
    let mut settings = w
        .settings(root)
        .map_err(|reason| PipelineError::Sink(SinkError::Webhook(reason)))?;
    settings.committed_cut = committed_cut;
    settings.progress = progress;
    let (tx, rx) = sync_channel(SINK_CHANNEL_BATCHES);
    let counters = Arc::new(amoskys_sinks::webhook::WebhookCounters::default());
    let c = counters.clone();
    let thread = std::thread::Builder::new()
        .name("sink-webhook".into())
        .spawn(move || amoskys_sinks::webhook::run_webhook(settings, rx, c))
        .map_err(|source| PipelineError::Io {
            context: "spawn webhook thread".into(),
            source,
        })?;
    Ok(Some(Webhook {
        tx,
        thread,
        counters,
    }))
}

/// What the webhook did, for a run's report.
#[derive(Debug, Default, serde::Serialize)]
pub struct WebhookReport {
    pub spooled: u64,
    pub delivered: u64,
    pub requests: u64,
    pub retries: u64,
    pub rejected: u64,
    /// Alerts raised again with an id already spooled (not sent twice).
    pub repeated: u64,
}

impl Webhook {
    /// Closes this handle's sender and waits for the webhook to deliver what it
    /// can (within its drain time); the dataflow's senders must be gone already.
    pub fn finish(self) -> Result<WebhookReport, PipelineError> {
        let Webhook {
            tx,
            thread,
            counters,
        } = self;
        drop(tx);
        thread
            .join()
            .map_err(|_| PipelineError::Dataflow("the webhook sink panicked".into()))??;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(WebhookReport {
            spooled: g(&counters.spooled),
            delivered: g(&counters.delivered),
            requests: g(&counters.requests),
            retries: g(&counters.retries),
            rejected: g(&counters.rejected),
            repeated: g(&counters.repeated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::ToStream;

    /// A sink thread slower than the dataflow: the channel holds one batch, so
    /// the operator must keep the rest, hold the dataflow open, and deliver
    /// every row in order without blocking the worker.
    #[test]
    fn a_full_channel_holds_rows_back_and_loses_none() {
        let (tx, rx) = sync_channel::<Vec<u64>>(1);
        let delivered = Arc::new(AtomicU64::new(0));
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(batch) = rx.recv() {
                std::thread::sleep(Duration::from_millis(2));
                got.extend(batch);
            }
            got
        });
        let d = delivered.clone();
        timely::example(move |scope| {
            channel_sink((0..10_000u64).to_stream(scope), "Test", tx, Some(d), None);
        });
        let got = reader.join().expect("reader");
        assert_eq!(got, (0..10_000).collect::<Vec<_>>());
        assert_eq!(delivered.load(Ordering::Relaxed), 10_000);
    }

    /// A sink thread that is gone (it failed, and said why) does not hang the
    /// dataflow.
    #[test]
    fn a_closed_channel_does_not_hold_the_dataflow() {
        let (tx, rx) = sync_channel::<Vec<u64>>(1);
        drop(rx);
        timely::example(move |scope| {
            channel_sink((0..1_000u64).to_stream(scope), "Test", tx, None, None);
        });
    }
}
