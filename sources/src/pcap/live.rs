//! Capture sources of the long-running job: a network interface through libpcap,
//! or recorded capture files.
//!
//! libpcap's reads block, so a capture runs on its own thread, with a short read
//! timeout to notice a stop. A live capture cannot be slowed down: a batch that
//! finds the pipeline's channel full is dropped and counted, beside the kernel's
//! own drop counters (`pcap_stats`), which are read once a second. Recorded files
//! can wait: their reader waits for room in the channel and loses nothing, and the
//! source ends (its channel closes) after the last file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amoskys_schemas::Packet;
use pcap::{Active, Capture, Precision};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::decode::{DecodeStats, PayloadArena, Skip};
use super::file::{CaptureFile, FileReader, expand_inputs, to_packet};
use crate::error::SourceError;

fn default_snaplen() -> i32 {
    262_144
}
fn default_true() -> bool {
    true
}
fn default_buffer() -> i32 {
    16 * 1024 * 1024
}
fn default_batch() -> usize {
    1024
}

/// One `[[sources.pcap]]` section: a live capture (`interface`) or recorded
/// files (`file`), one of the two.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveCaptureConfig {
    /// Names the source in metrics.
    pub name: String,
    /// Interface to capture on (`lo`, `eth0`, ...; `any` for all on Linux).
    #[serde(default)]
    pub interface: Option<String>,
    /// Recorded captures to read instead: a file, a directory or a glob, read in
    /// the order of their first packets, at full speed, with their own timestamps.
    #[serde(default)]
    pub file: Option<String>,
    /// BPF filter, as tcpdump takes it (`"tcp or udp"`); none captures everything.
    #[serde(default)]
    pub filter: Option<String>,
    /// Bytes kept of each packet; headers need about 128.
    #[serde(default = "default_snaplen")]
    pub snaplen: i32,
    /// Capture packets not addressed to this host too.
    #[serde(default = "default_true")]
    pub promiscuous: bool,
    /// Kernel ring buffer size in bytes.
    #[serde(default = "default_buffer")]
    pub buffer_bytes: i32,
    /// Packets per batch handed to the pipeline.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Payload bytes kept per packet for application metadata (0: none). Not a
    /// key of the section: the pipeline sets it from `[flows]
    /// application_bytes`, which bounds what the flows read of each direction.
    #[serde(skip, default = "default_keep_payload")]
    pub keep_payload: usize,
}

fn default_keep_payload() -> usize {
    crate::pcap::DEFAULT_APPLICATION_BYTES
}

/// What a live capture has done; read by metrics and tests.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub ip_packets: AtomicU64,
    /// Packets that did not decode to IP (ARP, other link types, damage).
    pub not_ip: AtomicU64,
    /// Packets whose timestamp is out of range (before 1970, or past 2262).
    pub bad_timestamp: AtomicU64,
    /// Packets dropped because the pipeline's channel was full.
    pub dropped: AtomicU64,
    /// libpcap: packets the kernel dropped for lack of buffer space.
    pub kernel_dropped: AtomicU64,
    /// libpcap: packets the interface or driver dropped.
    pub if_dropped: AtomicU64,
    /// Recorded files that could not be opened or broke off before their end.
    pub file_errors: AtomicU64,
}

impl CaptureCounters {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// An open capture source.
pub struct LiveCapture {
    pub name: String,
    input: Input,
    batch: usize,
    keep_payload: usize,
    counters: Arc<CaptureCounters>,
}

enum Input {
    Interface(Capture<Active>),
    Files(Vec<CaptureFile>),
}

impl LiveCaptureConfig {
    /// Opens the interface and sets the filter; fails with the reason libpcap gives
    /// (no such device, no permission, a filter that does not compile).
    pub fn open(&self) -> Result<LiveCapture, SourceError> {
        if self.batch_size == 0 {
            return Err(SourceError::Config(format!(
                "pcap source {:?}: batch_size must be at least 1",
                self.name
            )));
        }
        let input = match (&self.interface, &self.file) {
            (Some(i), None) => Input::Interface(self.open_interface(i)?),
            (None, Some(f)) => {
                if self.filter.is_some() {
                    return Err(SourceError::Config(format!(
                        "pcap source {:?}: filter applies to interfaces, not to files",
                        self.name
                    )));
                }
                Input::Files(expand_inputs(std::slice::from_ref(f)).map_err(|e| {
                    SourceError::Config(format!("pcap source {:?}: {e}", self.name))
                })?)
            }
            _ => {
                return Err(SourceError::Config(format!(
                    "pcap source {:?}: give either interface (live capture) or file (recorded captures)",
                    self.name
                )));
            }
        };
        Ok(LiveCapture {
            name: self.name.clone(),
            input,
            batch: self.batch_size,
            keep_payload: self.keep_payload,
            counters: Arc::new(CaptureCounters::default()),
        })
    }

    /// What `ready` lines and errors call this source.
    pub fn describe(&self) -> String {
        match (&self.interface, &self.file) {
            (Some(i), _) => format!("pcap {i}"),
            (None, Some(f)) => format!("pcap file {f}"),
            (None, None) => "pcap".into(),
        }
    }

    fn open_interface(&self, interface: &str) -> Result<Capture<Active>, SourceError> {
        let err = |what: &str, e: pcap::Error| {
            SourceError::Config(format!(
                "pcap source {:?}: {what} {:?}: {e}{}",
                self.name,
                interface,
                if matches!(e, pcap::Error::PcapError(ref m) if m.contains("ermission")) {
                    " (capturing needs root or CAP_NET_RAW)"
                } else {
                    ""
                }
            ))
        };
        if self.snaplen < 64 || self.buffer_bytes < 65_536 {
            return Err(SourceError::Config(format!(
                "pcap source {:?}: snaplen must be at least 64, buffer_bytes at least 65536",
                self.name
            )));
        }
        let cap = Capture::from_device(interface)
            .map_err(|e| err("no interface", e))?
            .snaplen(self.snaplen)
            .promisc(self.promiscuous)
            .buffer_size(self.buffer_bytes)
            .timeout(100)
            .immediate_mode(true)
            .precision(Precision::Nano);
        // Non-blocking, waited on with poll(2) below: a blocking read on Linux may
        // keep waiting past its timeout when no packet comes, and a stop would
        // go unnoticed.
        let mut cap = cap
            .open()
            .map_err(|e| err("cannot capture on", e))?
            .setnonblock()
            .map_err(|e| err("cannot set non-blocking mode on", e))?;
        if let Some(f) = &self.filter {
            cap.filter(f, true).map_err(|e| {
                SourceError::Config(format!(
                    "pcap source {:?}: filter {f:?} does not compile: {e}",
                    self.name
                ))
            })?;
        }
        Ok(cap)
    }
}

/// Waits until the capture has packets to read, or `ms` milliseconds.
fn wait_readable(cap: &Capture<Active>, ms: i32) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: cap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    #[allow(unsafe_code)]
    unsafe {
        libc::poll(&mut fd, 1, ms);
    }
}

impl LiveCapture {
    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }

    /// Captures until `stop` is set, handing batches to `tx` (never waiting on it
    /// for an interface; waiting for room for files, which end by themselves).
    /// Blocking: run it on its own thread.
    pub fn run(self, tx: mpsc::Sender<Vec<Packet>>, stop: Arc<AtomicBool>) {
        let LiveCapture {
            name,
            input,
            batch,
            keep_payload,
            counters,
        } = self;
        match input {
            Input::Interface(cap) => {
                capture(&name, cap, batch, keep_payload, &counters, &tx, &stop)
            }
            Input::Files(files) => {
                read_files(&name, files, batch, keep_payload, &counters, &tx, &stop)
            }
        }
    }
}

/// Reads recorded files into `tx`, waiting for room; stops early on `stop`.
fn read_files(
    name: &str,
    files: Vec<CaptureFile>,
    batch: usize,
    keep_payload: usize,
    c: &CaptureCounters,
    tx: &mpsc::Sender<Vec<Packet>>,
    stop: &AtomicBool,
) {
    let reader = FileReader::new(files, batch, keep_payload);
    let progress = reader.progress();
    let mut stopped = false;
    let result = reader.run(|b| {
        c.packets
            .store(progress.packets.load(Ordering::Relaxed), Ordering::Relaxed);
        c.ip_packets.fetch_add(b.len() as u64, Ordering::Relaxed);
        c.bytes.fetch_add(
            b.iter().map(|p| u64::from(p.ip_len)).sum(),
            Ordering::Relaxed,
        );
        if stop.load(Ordering::Relaxed) || tx.blocking_send(b).is_err() {
            stopped = true;
            return Err(SourceError::Config("stopped".into()));
        }
        Ok(())
    });
    match result {
        Ok(sum) => {
            c.packets.store(sum.stats.packets, Ordering::Relaxed);
            c.bytes.store(sum.stats.bytes, Ordering::Relaxed);
            let bad_ts = sum.stats.skipped(Skip::BadTimestamp);
            c.bad_timestamp.store(bad_ts, Ordering::Relaxed);
            c.not_ip.store(
                sum.stats
                    .packets
                    .saturating_sub(sum.stats.ip_packets + bad_ts),
                Ordering::Relaxed,
            );
            for (path, why) in &sum.file_errors {
                c.file_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %name, path = %path.display(), "{why}");
            }
            tracing::info!(source = %name, packets = sum.stats.packets, files = sum.files_read, "capture files read");
        }
        Err(e) if !stopped => {
            tracing::error!(source = %name, error = %e, "reading capture files failed")
        }
        Err(_) => {}
    }
}

/// Captures from an interface until `stop` is set.
fn capture(
    name: &str,
    mut cap: Capture<Active>,
    batch_size: usize,
    keep_payload: usize,
    c: &CaptureCounters,
    tx: &mpsc::Sender<Vec<Packet>>,
    stop: &AtomicBool,
) {
    {
        let lt = cap.get_datalink().0;
        let mut stats = DecodeStats::default();
        let mut batch: Vec<Packet> = Vec::with_capacity(batch_size);
        let mut payloads = PayloadArena::new(keep_payload);
        let mut seq = 0u64;
        let mut last_flush = Instant::now();
        let mut last_stats = Instant::now();
        let flush_every = Duration::from_millis(200);
        let send = |batch: &mut Vec<Packet>, payloads: &mut PayloadArena, cap: usize| {
            if batch.is_empty() {
                return true;
            }
            payloads.finish(batch);
            let n = batch.len() as u64;
            match tx.try_send(std::mem::replace(batch, Vec::with_capacity(cap))) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.dropped.fetch_add(n, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        };
        while !stop.load(Ordering::Relaxed) {
            match cap.next_packet() {
                Ok(pkt) => {
                    let wire = pkt.header.len;
                    c.packets.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(u64::from(wire), Ordering::Relaxed);
                    match to_packet(lt, pkt.header, pkt.data, seq, &mut stats) {
                        Ok((p, payload)) => {
                            seq += 1;
                            c.ip_packets.fetch_add(1, Ordering::Relaxed);
                            payloads.note(batch.len(), payload);
                            batch.push(p);
                        }
                        Err(Skip::BadTimestamp) => {
                            c.bad_timestamp.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            c.not_ip.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(pcap::Error::TimeoutExpired) => wait_readable(&cap, 100),
                Err(e) => {
                    tracing::error!(source = %name, error = %e, "capture stopped");
                    break;
                }
            }
            if (batch.len() >= batch_size || last_flush.elapsed() >= flush_every)
                && !batch.is_empty()
            {
                if !send(&mut batch, &mut payloads, batch_size) {
                    return;
                }
                last_flush = Instant::now();
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                read_stats(&mut cap, c);
                last_stats = Instant::now();
            }
        }
        send(&mut batch, &mut payloads, batch_size);
        read_stats(&mut cap, c);
    }
}

fn read_stats(cap: &mut Capture<Active>, c: &CaptureCounters) {
    {
        if let Ok(s) = cap.stats() {
            c.kernel_dropped
                .store(u64::from(s.dropped), Ordering::Relaxed);
            c.if_dropped
                .store(u64::from(s.if_dropped), Ordering::Relaxed);
        }
    }
}

impl crate::Counters for CaptureCounters {
    fn snapshot(&self) -> Vec<crate::Counter> {
        use crate::{Counter, Meaning::*};
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Counter::new("received", g(&self.packets), Received),
            Counter::new("bytes", g(&self.bytes), Bytes),
            Counter::new("ip_packets", g(&self.ip_packets), Count),
            Counter::new("not_ip", g(&self.not_ip), Count),
            Counter::new(
                "bad_timestamp",
                g(&self.bad_timestamp),
                Discarded("bad_timestamp"),
            ),
            Counter::new("dropped", g(&self.dropped), Discarded("channel_full")),
            Counter::new(
                "kernel_dropped",
                g(&self.kernel_dropped),
                Discarded("kernel_dropped"),
            ),
            Counter::new("if_dropped", g(&self.if_dropped), Discarded("if_dropped")),
        ]
    }
}

impl crate::SourceConfig for LiveCaptureConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pcap"
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        match (&self.interface, &self.file) {
            (Some(i), None) if !i.trim().is_empty() => {}
            (None, Some(f)) if !f.trim().is_empty() && self.filter.is_none() => {}
            (None, Some(_)) if self.filter.is_some() => {
                return Err(format!(
                    "[[sources.pcap]] {name}: filter applies to an interface, not to files"
                ));
            }
            _ => {
                return Err(format!(
                    "[[sources.pcap]] {name}: give either interface (a live capture) or file (recorded captures: a file, a directory or a glob)"
                ));
            }
        }
        if self.batch_size == 0 {
            return Err(format!(
                "[[sources.pcap]] {name}: batch_size must be at least 1"
            ));
        }
        Ok(())
    }

    fn open(&self, _: &tokio::runtime::Handle) -> Result<Box<dyn crate::Source>, SourceError> {
        let serves = self.describe();
        Ok(Box::new(OpenCapture {
            capture: self.open()?,
            serves,
        }))
    }
}

/// A capture with what it captures from, as a [`crate::Source`].
struct OpenCapture {
    capture: LiveCapture,
    serves: String,
}

impl crate::Source for OpenCapture {
    fn name(&self) -> &str {
        &self.capture.name
    }

    fn kind(&self) -> &'static str {
        "pcap"
    }

    fn serves(&self) -> Vec<String> {
        vec![self.serves.clone()]
    }

    fn carries(&self) -> crate::Carries {
        crate::Carries::Packets
    }

    fn counters(&self) -> Arc<dyn crate::Counters> {
        self.capture.counters.clone()
    }

    fn start(
        self: Box<Self>,
        out: crate::Output,
        stop: crate::Stop,
        rt: &tokio::runtime::Handle,
    ) -> Result<crate::Running, SourceError> {
        let capture = self.capture;
        let tx = out.into_packets(&capture.name)?;
        let flag = crate::source::stop_flag(stop, rt);
        crate::Running::thread(format!("capture-{}", capture.name), move || {
            capture.run(tx, flag);
            Ok(())
        })
    }
}
