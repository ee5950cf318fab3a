//! Syslog listeners: UDP and TCP sockets that turn what they receive into
//! batches of [`SyslogRecord`]s (or anything made from one) on a bounded channel.
//!
//! TCP connections are read only as fast as the channel takes their batches, so a
//! fast sender is slowed, never buffered without bound. UDP cannot be slowed: a
//! batch that finds the channel full is dropped and counted. Messages longer than
//! `max_message_bytes` and empty ones are counted and skipped (a line that is not
//! syslog is kept, with its parse error);
//! the listener keeps serving. Connections past `max_connections` are closed at
//! once and counted.
//!
//! On shutdown a listener accepts no new connections but reads what its open
//! connections and sockets have already received: each connection until it has
//! been quiet for [`DRAIN_IDLE`], all of them for at most [`DRAIN_LIMIT`], so
//! messages the kernel has acknowledged to their senders are not thrown away and a
//! sender that never pauses cannot hold the shutdown.
//!
//! The section is in config.rs. This file holds the UDP, TCP and TLS listeners
//! together: they share the counters, the batching and the shutdown drain that
//! makes every accepted message reach the pipeline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::TlsAcceptor;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// How long a TLS client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, a connection that has sent nothing for this long is closed.
pub const DRAIN_IDLE: Duration = Duration::from_millis(200);
/// On shutdown, connections and sockets are read for at most this long.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// On shutdown, the listen backlog is empty once no connection came this long.
const BACKLOG_QUIET: Duration = Duration::from_millis(20);

use super::config::{ListenAddr, RecordTime, SyslogSourceConfig};
use super::framing::{Frame, FrameDecoder};
use super::parse::parse_message;
use super::udp::{bind_udp, kernel_drops, serve_udp};
use crate::error::SourceError;
use crate::wal::RecordTx;
use amoskys_schemas::Record;

/// What a syslog source has done; read by metrics and tests.
#[derive(Debug, Default)]
pub struct SyslogCounters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub oversized: AtomicU64,
    /// Messages with nothing in them (only NULs and white space): nothing to keep.
    pub empty: AtomicU64,
    /// UDP messages dropped because the pipeline's channel was full.
    pub dropped: AtomicU64,
    pub connections: AtomicU64,
    pub connections_refused: AtomicU64,
    /// The local addresses of the UDP sockets, for their kernel drop counters.
    pub udp_local: std::sync::OnceLock<Vec<SocketAddr>>,
    /// UDP sockets still open.
    pub udp_open: AtomicU64,
    /// TLS connections that failed or timed out in the handshake.
    pub tls_failures: AtomicU64,
    /// Kernel drops of the UDP sockets already closed, read as they closed.
    pub kernel_dropped_closed: AtomicU64,
    /// At shutdown: unfinished messages left when a connection's drain ended, and
    /// connections (and TLS handshakes) still going when the drain time ran out.
    pub cut_at_stop: AtomicU64,
}

impl SyslogCounters {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Datagrams the kernel dropped on this source's UDP sockets because their
    /// receive buffers were full (Linux, from /proc/net/udp and udp6); 0 elsewhere.
    pub fn udp_kernel_drops(&self) -> u64 {
        let closed = self.kernel_dropped_closed.load(Ordering::Relaxed);
        let Some(addrs) = self.udp_local.get() else {
            return closed;
        };
        if self.udp_open.load(Ordering::Relaxed) == 0 {
            return closed;
        }
        kernel_drops(addrs) + closed
    }
}

/// A syslog source whose sockets are bound (so their ports are known).
pub struct SyslogSource {
    pub name: String,
    udp: Vec<UdpSocket>,
    /// TCP listeners, with the TLS acceptor of the `tls://` ones.
    tcp: Vec<(TcpListener, Option<TlsAcceptor>)>,
    max_len: usize,
    max_connections: usize,
    batch: usize,
    received_time: bool,
    counters: Arc<SyslogCounters>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl SyslogSourceConfig {
    /// The TLS server configuration of the `tls://` listeners.
    fn tls_acceptor(&self) -> Result<TlsAcceptor, SourceError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad =
            |what: String| SourceError::Config(format!("syslog source {}: {what}", self.name));
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Err(bad("a tls:// listener needs tls_cert and tls_key".into()));
        };
        crate::install_crypto_provider();
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(format!("tls_cert {}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("tls_cert {}: no certificate", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| bad(format!("tls_key {}: {e}", key.display())))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let cas = CertificateDer::pem_file_iter(ca)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| bad(format!("tls_client_ca {}: {e}", ca.display())))?;
                for c in cas {
                    roots
                        .add(c)
                        .map_err(|e| bad(format!("tls_client_ca {}: {e}", ca.display())))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| bad(format!("tls_client_ca {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad(format!("tls_cert/tls_key: {e}")))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Checks the settings and binds every listener.
    pub async fn bind(&self) -> Result<SyslogSource, SourceError> {
        crate::SourceConfig::check(self).map_err(SourceError::Config)?;
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let acceptor = if self.listen.iter().any(|l| matches!(l, ListenAddr::Tls(_))) {
            Some(self.tls_acceptor()?)
        } else {
            if self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_client_ca.is_some() {
                return Err(SourceError::Config(format!(
                    "syslog source {}: tls_cert, tls_key and tls_client_ca need a tls:// listener",
                    self.name
                )));
            }
            None
        };
        for l in &self.listen {
            let bind_err = |e: std::io::Error| SourceError::Bind {
                addr: l.to_string(),
                reason: e.to_string(),
            };
            match l {
                ListenAddr::Udp(a) => {
                    udp.push(bind_udp(*a, self.udp_receive_buffer).map_err(bind_err)?)
                }
                ListenAddr::Tcp(a) => {
                    tcp.push((TcpListener::bind(a).await.map_err(bind_err)?, None))
                }
                ListenAddr::Tls(a) => tcp.push((
                    TcpListener::bind(a).await.map_err(bind_err)?,
                    acceptor.clone(),
                )),
            }
        }
        let counters = SyslogCounters::default();
        let _ = counters
            .udp_local
            .set(udp.iter().filter_map(|s| s.local_addr().ok()).collect());
        Ok(SyslogSource {
            name: self.name.clone(),
            udp,
            tcp,
            max_len: self.max_message_bytes,
            max_connections: self.max_connections,
            batch: self.batch_size,
            received_time: self.time == RecordTime::Received,
            counters: Arc::new(counters),
        })
    }
}

impl SyslogSource {
    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        let u = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(ListenAddr::Udp);
        let t = self.tcp.iter().filter_map(|(s, tls)| {
            let a = s.local_addr().ok()?;
            Some(if tls.is_some() {
                ListenAddr::Tls(a)
            } else {
                ListenAddr::Tcp(a)
            })
        });
        u.chain(t).collect()
    }

    pub fn counters(&self) -> Arc<SyslogCounters> {
        self.counters.clone()
    }

    /// Serves every listener until `shutdown` turns true; then returns, having
    /// handed over every message it accepted.
    pub async fn run(
        self,
        out: impl Into<RecordTx>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let out: RecordTx = out.into();
        let mut tasks = tokio::task::JoinSet::new();
        for sock in self.udp {
            tasks.spawn(serve_udp(
                sock,
                self.max_len,
                self.batch,
                self.counters.clone(),
                out.clone(),
                shutdown.clone(),
            ));
        }
        for (l, tls) in self.tcp {
            let limit = Arc::new(Semaphore::new(self.max_connections));
            tasks.spawn(serve_tcp(
                l,
                tls,
                limit,
                self.max_len,
                self.batch,
                self.counters.clone(),
                out.clone(),
                shutdown.clone(),
            ));
        }
        drop(out);
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(source = %self.name, error = %e, "syslog listener task failed");
            }
        }
        Ok(())
    }
}

pub(super) fn accept_record(
    bytes: &[u8],
    sender: SocketAddr,
    counters: &SyslogCounters,
    batch: &mut Vec<Record>,
) {
    counters.messages.fetch_add(1, Ordering::Relaxed);
    counters
        .bytes
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    match parse_message(bytes, now_ns(), Some(sender.ip().to_canonical())) {
        Ok(r) => batch.push(Record::Syslog(r)),
        Err(_) => {
            counters.empty.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    max_len: usize,
    batch_size: usize,
    counters: Arc<SyslogCounters>,
    out: RecordTx,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "syslog TCP accept failed");
                continue;
            }
        };
        spawn_connection(
            &mut conns, stream, peer, None, &tls, &limit, max_len, batch_size, &counters, &out,
            &shutdown,
        );
        while conns.try_join_next().is_some() {}
    }
    // Shutting down: connections the kernel completed before the stop may have
    // data it acknowledged; take them from the backlog and read them like the
    // open ones, then close the listener so later ones are refused.
    let deadline = Instant::now() + DRAIN_LIMIT;
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(BACKLOG_QUIET, listener.accept()).await
    {
        spawn_connection(
            &mut conns,
            stream,
            peer,
            Some(deadline),
            &tls,
            &limit,
            max_len,
            batch_size,
            &counters,
            &out,
            &shutdown,
        );
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Serves one accepted connection on its own task; `drain` is the deadline when
/// it was accepted after shutdown began.
#[allow(clippy::too_many_arguments)]
fn spawn_connection(
    conns: &mut tokio::task::JoinSet<()>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    drain: Option<Instant>,
    tls: &Option<TlsAcceptor>,
    limit: &Arc<Semaphore>,
    max_len: usize,
    batch_size: usize,
    counters: &Arc<SyslogCounters>,
    out: &RecordTx,
    shutdown: &watch::Receiver<bool>,
) {
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        counters.connections_refused.fetch_add(1, Ordering::Relaxed);
        drop(stream);
        return;
    };
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let (c, o, mut s) = (counters.clone(), out.clone(), shutdown.clone());
    let tls = tls.clone();
    conns.spawn(async move {
        match tls {
            None => serve_connection(stream, peer, drain, max_len, batch_size, c, o, s).await,
            Some(acceptor) => {
                let limit = Instant::now() + TLS_HANDSHAKE_TIMEOUT;
                let hs = tokio::time::timeout_at(
                    drain.map_or(limit, |d| d.min(limit)),
                    acceptor.accept(stream),
                );
                let done = tokio::select! {
                    r = hs => Some(r),
                    // A handshake still going when shutdown begins is abandoned.
                    _ = s.changed(), if drain.is_none() => None,
                };
                match done {
                    Some(Ok(Ok(tls_stream))) => {
                        serve_connection(tls_stream, peer, drain, max_len, batch_size, c, o, s)
                            .await
                    }
                    Some(Ok(Err(e))) => {
                        c.tls_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, error = %e, "syslog TLS handshake failed");
                    }
                    Some(Err(_)) if drain.is_some() => {
                        c.cut_at_stop.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(_)) => {
                        c.tls_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "syslog TLS handshake timed out");
                    }
                    None => {
                        c.cut_at_stop.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        drop(permit);
    });
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    mut stream: S,
    peer: SocketAddr,
    drain: Option<Instant>,
    max_len: usize,
    batch_size: usize,
    counters: Arc<SyslogCounters>,
    out: RecordTx,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut decoder = FrameDecoder::new(max_len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = Vec::new();
    let mut eof = false;
    // Set once shutdown begins: the time by which this connection closes.
    let mut draining = drain;
    while !eof {
        // A read error ends the connection like a close does. `cut`: the drain
        // ended it, so a message it was in the middle of is incomplete.
        let (n, cut) = match draining {
            None => tokio::select! {
                r = stream.read(&mut buf) => (r.unwrap_or(0), false),
                _ = shutdown.changed() => {
                    draining = Some(Instant::now() + DRAIN_LIMIT);
                    continue;
                }
            },
            // Checked before reading: a sender that never pauses keeps every read
            // ready, and a timeout only fires on a read that waits.
            Some(deadline) if Instant::now() >= deadline => {
                counters.cut_at_stop.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "syslog connection still sending when shutdown's drain time ran out; closed");
                (0, true)
            }
            Some(deadline) => {
                let until = deadline.min(Instant::now() + DRAIN_IDLE);
                match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                    Ok(r) => (r.unwrap_or(0), false),
                    Err(_) => (0, true),
                }
            }
        };
        if n == 0 {
            if !cut {
                decoder.finish(&mut frames);
            } else if decoder.has_partial() {
                counters.cut_at_stop.fetch_add(1, Ordering::Relaxed);
            }
            eof = true;
        } else {
            decoder.push(&buf[..n], &mut frames);
        }
        let mut batch = Vec::with_capacity(frames.len().min(batch_size));
        for f in frames.drain(..) {
            match f {
                Frame::Message(m, _) => accept_record(&m, peer, &counters, &mut batch),
                Frame::Oversized(_) => {
                    counters.messages.fetch_add(1, Ordering::Relaxed);
                    counters.oversized.fetch_add(1, Ordering::Relaxed);
                }
            }
            if batch.len() >= batch_size {
                // Waiting here is the backpressure: nothing more is read meanwhile.
                if out.send(std::mem::take(&mut batch)).await.is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return;
        }
    }
}

impl crate::Counters for SyslogCounters {
    fn snapshot(&self) -> Vec<crate::Counter> {
        use crate::{Counter, Meaning::*};
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Counter::new("received", g(&self.messages), Received),
            Counter::new("bytes", g(&self.bytes), Bytes),
            Counter::new("oversized", g(&self.oversized), Discarded("oversized")),
            Counter::new("empty", g(&self.empty), Discarded("empty")),
            Counter::new("dropped", g(&self.dropped), Discarded("channel_full")),
            Counter::new(
                "kernel_dropped",
                self.udp_kernel_drops(),
                Discarded("kernel_dropped"),
            ),
            Counter::new("connections", g(&self.connections), Count),
            Counter::new(
                "connections_refused",
                g(&self.connections_refused),
                Named("amoskys_connections_refused_total"),
            ),
            Counter::new("tls_failures", g(&self.tls_failures), Error),
            Counter::new(
                "cut_at_stop",
                g(&self.cut_at_stop),
                Discarded("cut_at_stop"),
            ),
        ]
    }
}

impl crate::Source for SyslogSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn serves(&self) -> Vec<String> {
        self.local_addrs().iter().map(|a| a.to_string()).collect()
    }

    fn carries(&self) -> crate::Carries {
        crate::Carries::Records
    }

    fn clock(&self) -> crate::Clock {
        if self.received_time {
            crate::Clock::Received
        } else {
            crate::Clock::Live
        }
    }

    fn counters(&self) -> Arc<dyn crate::Counters> {
        self.counters.clone()
    }

    fn start(
        self: Box<Self>,
        out: crate::Output,
        stop: crate::Stop,
        rt: &tokio::runtime::Handle,
    ) -> Result<crate::Running, SourceError> {
        let tx = out.into_records(&self.name)?;
        Ok(crate::Running::Task(rt.spawn(self.run(tx, stop))))
    }
}
