//! What a source hands its batches to: [`RecordTx`], straight into the
//! pipeline's channel or through the source's log (append under the log's
//! lock, queue for the sync and the hand-over, in log order).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use amoskys_schemas::Record;
use tokio::sync::{mpsc, oneshot};

use super::{Batch, WalCounters, log};
/// A batch appended and waiting to be synced and handed over.
pub(super) struct Pending {
    pub(super) first: u64,
    pub(super) records: Vec<Record>,
    pub(super) file: Arc<std::fs::File>,
    pub(super) done: Option<oneshot::Sender<()>>,
}

pub(super) struct Logged {
    pub(super) rt: tokio::runtime::Handle,
    pub(super) writer: tokio::sync::Mutex<log::Writer>,
    /// The log's newest records when it was opened, for [`RecordTx::take_logged_tail`].
    pub(super) tail: std::sync::Mutex<Vec<Record>>,
    pub(super) pending: mpsc::Sender<Pending>,
    pub(super) counters: Arc<WalCounters>,
    /// One past the newest offset acknowledged to the source's peer.
    pub(super) acked: Arc<std::sync::atomic::AtomicU64>,
}

impl Logged {
    /// Counts a batch just appended at `first` and queues it for the sync and
    /// the hand-over (under the log's lock `w`, with its reserved room).
    fn queued(
        &self,
        w: &log::Writer,
        permit: mpsc::Permit<'_, Pending>,
        first: u64,
        file: Arc<std::fs::File>,
        records: Vec<Record>,
        done: Option<oneshot::Sender<()>>,
    ) {
        self.counters
            .appended
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.counters.bytes.store(w.bytes(), Ordering::Relaxed);
        permit.send(Pending {
            first,
            records,
            file,
            done,
        });
    }
}

/// Where a source hands its batches: the pipeline's channel, through the
/// source's log when it has one.
#[derive(Clone)]
pub struct RecordTx(pub(super) Inner);

#[derive(Clone)]
pub(super) enum Inner {
    Plain(mpsc::Sender<Batch>),
    /// A channel of bare record batches, for tools and tests that need no
    /// offsets.
    Bare(mpsc::Sender<Vec<Record>>),
    Logged(Arc<Logged>),
}

impl From<mpsc::Sender<Batch>> for RecordTx {
    fn from(tx: mpsc::Sender<Batch>) -> Self {
        RecordTx(Inner::Plain(tx))
    }
}

impl From<mpsc::Sender<Vec<Record>>> for RecordTx {
    fn from(tx: mpsc::Sender<Vec<Record>>) -> Self {
        RecordTx(Inner::Bare(tx))
    }
}

/// A batch appended to a log, on its way to the pipeline.
#[derive(Debug)]
pub struct Handed(Option<oneshot::Receiver<()>>, Option<u64>);

impl Handed {
    /// Resolves once the batch is synced and in the pipeline's channel. May be
    /// dropped half-way and called again.
    pub async fn done(&mut self) -> Result<(), Closed> {
        match &mut self.0 {
            None => Ok(()),
            Some(rx) => {
                let r = rx.await.map_err(|_| Closed);
                self.0 = None;
                r
            }
        }
    }

    /// Whether it has resolved, without waiting.
    pub fn try_done(&mut self) -> Option<Result<(), Closed>> {
        match &mut self.0 {
            None => Some(Ok(())),
            Some(rx) => match rx.try_recv() {
                Ok(()) => {
                    self.0 = None;
                    Some(Ok(()))
                }
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(Closed)),
            },
        }
    }
}

/// The pipeline no longer takes batches.
#[derive(Debug)]
pub struct Closed;

/// Why [`RecordTx::offer`] did not take a batch.
#[derive(Debug)]
pub enum TrySend {
    /// No room now (or the log refused it): the batch is handed back.
    Full(Vec<Record>),
    Closed,
}

/// How long a refused append waits before it is tried again.
const REFUSED_RETRY: Duration = Duration::from_millis(250);

fn encode(records: &[Record]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| bincode::serialize(r).unwrap_or_default())
        .collect()
}

impl RecordTx {
    /// Hands `records` over; with a log, returns once they are in it (synced
    /// as the log's `fsync` says) and in the pipeline's channel. Waits while
    /// the channel is full or the log refuses appends.
    pub async fn send(&self, records: Vec<Record>) -> Result<(), Closed> {
        self.hand(records).await?.done().await
    }

    /// Appends `records` to the log and queues them for the sync and the
    /// hand-over, returning as soon as they are appended: the [`Handed`]
    /// resolves once they are synced and in the pipeline's channel. A source
    /// that acknowledges (MQTT) reads on meanwhile and acknowledges each batch
    /// when its `Handed` resolves, so one sync covers many of its batches.
    /// Without a log, returns once the batch is in the channel.
    pub async fn hand(&self, records: Vec<Record>) -> Result<Handed, Closed> {
        let l = match &self.0 {
            Inner::Plain(tx) => {
                tx.send(records.into()).await.map_err(|_| Closed)?;
                return Ok(Handed(None, None));
            }
            Inner::Bare(tx) => {
                tx.send(records).await.map_err(|_| Closed)?;
                return Ok(Handed(None, None));
            }
            Inner::Logged(l) => l,
        };
        if records.is_empty() {
            return Ok(Handed(None, None));
        }
        let payloads = encode(&records);
        let (done_tx, done_rx) = oneshot::channel();
        let mut warned = false;
        let last;
        loop {
            // Room in the hand-over queue first, then the log's lock: once the
            // batch is appended it is queued with no await in between, so a
            // caller cancelled while waiting has appended nothing.
            let permit = l.pending.reserve().await.map_err(|_| Closed)?;
            let mut w = l.writer.lock().await;
            match w.append(&payloads) {
                Ok((first, file)) => {
                    last = first + records.len() as u64 - 1;
                    l.queued(&w, permit, first, file, records, Some(done_tx));
                    break;
                }
                Err(log::Refused::TooLarge { bytes, max }) => {
                    // No room will ever be made for it: counted and dropped.
                    l.counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        bytes,
                        max,
                        records = records.len(),
                        "a batch larger than the write-ahead log may hold (wal.max_bytes) was dropped"
                    );
                    return Ok(Handed(None, None));
                }
                Err(e) => {
                    drop((w, permit));
                    l.counters.refused.fetch_add(1, Ordering::Relaxed);
                    if !warned {
                        tracing::error!(error = %e, "records not accepted until the log has room");
                        warned = true;
                    }
                    if l.pending.is_closed() {
                        return Err(Closed);
                    }
                    tokio::time::sleep(REFUSED_RETRY).await;
                }
            }
        }
        Ok(Handed(Some(done_rx), Some(last)))
    }

    /// Hands `records` over if there is room now (UDP, which cannot slow its
    /// senders): waits at most for the log's lock (another task's append),
    /// never for the pipeline or the sync; with no room the batch is handed
    /// back.
    pub async fn offer(&self, records: Vec<Record>) -> Result<(), TrySend> {
        let l = match &self.0 {
            Inner::Plain(tx) => {
                return tx.try_send(records.into()).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(b) => TrySend::Full(b.records),
                    mpsc::error::TrySendError::Closed(_) => TrySend::Closed,
                });
            }
            Inner::Bare(tx) => {
                return tx.try_send(records).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(b) => TrySend::Full(b),
                    mpsc::error::TrySendError::Closed(_) => TrySend::Closed,
                });
            }
            Inner::Logged(l) => l,
        };
        let permit = match l.pending.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(_)) => return Err(TrySend::Full(records)),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(TrySend::Closed),
        };
        let mut w = l.writer.lock().await;
        match w.append(&encode(&records)) {
            Ok((first, file)) => {
                l.queued(&w, permit, first, file, records, None);
                Ok(())
            }
            Err(_) => {
                l.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(TrySend::Full(records))
            }
        }
    }

    /// [`RecordTx::send`] from a thread outside the runtime (sources that
    /// block, like a file reader).
    pub fn blocking_send(&self, records: Vec<Record>) -> Result<(), Closed> {
        match &self.0 {
            Inner::Plain(tx) => tx.blocking_send(records.into()).map_err(|_| Closed),
            Inner::Bare(tx) => tx.blocking_send(records).map_err(|_| Closed),
            Inner::Logged(l) => l.rt.clone().block_on(self.send(records)),
        }
    }

    /// The newest records of the log as it was found at start-up (once): a
    /// source whose peer redelivers what it did not see acknowledged (MQTT)
    /// recognises what it logged already.
    pub fn take_logged_tail(&self) -> Vec<Record> {
        match &self.0 {
            Inner::Logged(l) => l
                .tail
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The source's peer has been told that every record up to the batch of
    /// `h` is taken (MQTT PUBACKs sent): the log remembers it, so that only
    /// records after it are candidates when the peer sends something again.
    pub fn acknowledged(&self, h: &Handed) {
        if let (Inner::Logged(l), Some(last)) = (&self.0, h.1) {
            l.acked.fetch_max(last + 1, Ordering::Relaxed);
        }
    }

    pub fn is_closed(&self) -> bool {
        match &self.0 {
            Inner::Plain(tx) => tx.is_closed(),
            Inner::Bare(tx) => tx.is_closed(),
            Inner::Logged(l) => l.pending.is_closed(),
        }
    }
}
