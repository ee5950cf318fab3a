//! The contract every source keeps, and the list of source kinds.
//!
//! A source kind is a configuration section (`[[sources.KIND]]`, a serde struct
//! implementing [`SourceConfig`]) that checks itself and opens a [`Source`]: bound,
//! connected or opened, so a taken port or a missing interface fails the start.
//! The pipeline then gives the source a bounded channel of its batches and a
//! stop signal, and reads its [`Counters`] to publish them. Nothing outside this
//! crate names a source kind: [`SourcesConfig::sections`] is the registration.

use std::sync::Arc;

use amoskys_schemas::Packet;
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::SourceError;
use crate::wal::RecordTx;

/// What a source hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carries {
    /// Records: syslog messages, SNMP polls, MQTT messages.
    Records,
    /// Decoded packets.
    Packets,
}

/// Where a source sends its batches: a bounded channel of what it carries
/// (records through the source's write-ahead log, when it keeps one).
pub enum Output {
    Records(RecordTx),
    Packets(mpsc::Sender<Vec<Packet>>),
}

impl Output {
    pub(crate) fn into_records(self, name: &str) -> Result<RecordTx, SourceError> {
        match self {
            Output::Records(t) => Ok(t),
            Output::Packets(_) => Err(SourceError::Config(format!(
                "source {name:?}: carries records, was given a packet channel"
            ))),
        }
    }

    pub(crate) fn into_packets(self, name: &str) -> Result<mpsc::Sender<Vec<Packet>>, SourceError> {
        match self {
            Output::Packets(t) => Ok(t),
            Output::Records(_) => Err(SourceError::Config(format!(
                "source {name:?}: carries packets, was given a record channel"
            ))),
        }
    }
}

/// Which clock a source's data keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Live data, timed by the events' own timestamps. A source quiet for the
    /// window's `idle_timeout` stops holding the watermark back.
    Live,
    /// Live data, timed by when each record arrived (`time = "received"`).
    Received,
    /// Recorded data read as fast as the pipeline takes it: the watermark
    /// follows its timestamps only, never the wall clock, and it ends by itself.
    Recorded,
}

/// What a counter means, so that every source's counters are published the
/// same way whatever the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// Events received (`amoskys_component_received_events_total`).
    Received,
    /// Bytes received (`amoskys_component_received_bytes_total`).
    Bytes,
    /// Events thrown away, for this reason (`amoskys_component_discarded_events_total`).
    Discarded(&'static str),
    /// Failures of this kind (`amoskys_component_errors_total`).
    Error,
    /// A level rather than a count, published as a gauge of this name.
    Gauge(&'static str),
    /// A count under a metric of this name.
    Named(&'static str),
    /// A count of this source kind (`amoskys_KIND_NAME_total`).
    Count,
}

/// One counter of a source at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Counter {
    pub name: &'static str,
    pub value: u64,
    pub meaning: Meaning,
}

impl Counter {
    pub fn new(name: &'static str, value: u64, meaning: Meaning) -> Self {
        Counter {
            name,
            value,
            meaning,
        }
    }
}

/// A source's counters, read while it runs (metrics) and after (the report).
pub trait Counters: Send + Sync {
    /// Every counter; `received` first, then `bytes` where it applies.
    fn snapshot(&self) -> Vec<Counter>;
}

/// The signal to stop: turns true once.
pub type Stop = watch::Receiver<bool>;

/// A started source, to wait for.
pub enum Running {
    Task(tokio::task::JoinHandle<Result<(), SourceError>>),
    Thread(std::thread::JoinHandle<Result<(), SourceError>>),
}

impl Running {
    /// Waits until the source has returned (its channel is closed by then).
    pub fn join(self, rt: &Handle) -> Result<(), SourceError> {
        match self {
            Running::Task(t) => rt
                .block_on(t)
                .map_err(|e| SourceError::Failed(format!("a source task failed: {e}")))?,
            Running::Thread(t) => t
                .join()
                .map_err(|_| SourceError::Failed("a source thread panicked".into()))?,
        }
    }

    /// Runs `f` on a thread of its own (for sources that block, like libpcap).
    pub fn thread(
        name: String,
        f: impl FnOnce() -> Result<(), SourceError> + Send + 'static,
    ) -> Result<Running, SourceError> {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map(Running::Thread)
            .map_err(|e| SourceError::Failed(format!("cannot start a thread: {e}")))
    }
}

/// An opened source.
pub trait Source: Send {
    fn name(&self) -> &str;
    /// The section it came from (`syslog` for `[[sources.syslog]]`).
    fn kind(&self) -> &'static str;
    /// What it listens on, polls or reads, one line each (ports resolved).
    fn serves(&self) -> Vec<String>;
    fn carries(&self) -> Carries;
    fn clock(&self) -> Clock {
        Clock::Live
    }
    fn counters(&self) -> Arc<dyn Counters>;
    /// Starts handing batches to `out` until `stop` turns true or its input
    /// ends; every batch it accepted is handed over before it returns.
    fn start(self: Box<Self>, out: Output, stop: Stop, rt: &Handle)
    -> Result<Running, SourceError>;
}

/// A source's configuration section.
pub trait SourceConfig {
    fn name(&self) -> &str;
    /// The section's kind, as in `[[sources.KIND]]`.
    fn kind(&self) -> &'static str;
    /// Checks that need only this section, with the reason a user can act on.
    fn check(&self) -> Result<(), String>;
    /// Addresses it would bind, so that two sections cannot take the same one.
    fn binds(&self) -> Vec<String> {
        Vec::new()
    }
    /// Binds, resolves or opens everything the source needs.
    fn open(&self, rt: &Handle) -> Result<Box<dyn Source>, SourceError>;
}

/// The `[sources]` sections of a configuration: each kind is a list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Syslog listeners (UDP, TCP, TLS).
    pub syslog: Vec<crate::syslog::SyslogSourceConfig>,
    /// MQTT subscriptions.
    pub mqtt: Vec<crate::mqtt::MqttSourceConfig>,
    /// SNMP agents polled for the built-in health metrics.
    pub snmp: Vec<crate::snmp::SnmpSourceConfig>,
    /// Packet captures (an interface, or recorded files).
    pub pcap: Vec<crate::pcap::LiveCaptureConfig>,
}

impl SourcesConfig {
    /// Every section, in the order of the kinds above, each with its index
    /// among the sections of its kind. A new source kind is one field above and
    /// one line here.
    pub fn sections(&self) -> Vec<(usize, &dyn SourceConfig)> {
        fn each<T: SourceConfig>(v: &[T]) -> impl Iterator<Item = (usize, &dyn SourceConfig)> {
            v.iter()
                .enumerate()
                .map(|(k, s)| (k, s as &dyn SourceConfig))
        }
        each(&self.syslog)
            .chain(each(&self.mqtt))
            .chain(each(&self.snmp))
            .chain(each(&self.pcap))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sections().is_empty()
    }

    /// Opens every source; the first that cannot be opened fails them all.
    pub fn open(&self, rt: &Handle) -> Result<Vec<Box<dyn Source>>, SourceError> {
        self.sections().iter().map(|(_, s)| s.open(rt)).collect()
    }
}

/// Turns the stop signal into a flag, for sources that run on a thread.
pub(crate) fn stop_flag(mut stop: Stop, rt: &Handle) -> Arc<std::sync::atomic::AtomicBool> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(*stop.borrow()));
    let f = flag.clone();
    rt.spawn(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}
