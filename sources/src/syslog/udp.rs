//! The UDP side of a syslog listener: one datagram a message, batches handed
//! over without waiting (UDP cannot slow its senders: a batch that finds no
//! room is dropped and counted), the kernel's own drops read from
//! /proc/net/udp, and what the socket holds at shutdown drained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use super::listener::{DRAIN_LIMIT, SyslogCounters, accept_record};
use crate::wal::{RecordTx, TrySend};
use amoskys_schemas::Record;

/// On shutdown, a UDP socket that has had nothing for this long is empty.
const UDP_DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(20);

/// The kernel's drop counters of the UDP sockets bound to `addrs`.
pub(super) fn kernel_drops(addrs: &[SocketAddr]) -> u64 {
    let mut total = 0;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        total += text
            .lines()
            .skip(1)
            .filter_map(|l| proc_udp_drops(l, addrs))
            .sum::<u64>();
    }
    total
}

/// The drops column of one /proc/net/udp line, if its local port is one of `addrs`'.
fn proc_udp_drops(line: &str, addrs: &[SocketAddr]) -> Option<u64> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (_, port) = f.get(1)?.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !addrs.iter().any(|a| a.port() == port) {
        return None;
    }
    f.last()?.parse().ok()
}

/// Binds a UDP socket, with a kernel receive buffer of `buffer` bytes if given
/// (the kernel may round it, and caps it at net.core.rmem_max).
pub(super) fn bind_udp(addr: SocketAddr, buffer: Option<usize>) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Some(b) = buffer {
        s.set_recv_buffer_size(b)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

pub(super) async fn serve_udp(
    sock: UdpSocket,
    max_len: usize,
    batch_size: usize,
    counters: Arc<SyslogCounters>,
    out: RecordTx,
    mut shutdown: watch::Receiver<bool>,
) {
    // One byte more than the limit tells an oversized datagram from a full one.
    let mut buf = vec![0u8; max_len + 1];
    let local: Vec<SocketAddr> = sock.local_addr().into_iter().collect();
    counters.udp_open.fetch_add(1, Ordering::Relaxed);
    // What the kernel dropped is read just before the socket closes, since its
    // counter goes with it.
    let closing = |c: &SyslogCounters| {
        c.kernel_dropped_closed
            .fetch_add(kernel_drops(&local), Ordering::Relaxed);
        c.udp_open.fetch_sub(1, Ordering::Relaxed);
    };
    loop {
        let first = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = shutdown.changed() => {
                drain_udp(&sock, &mut buf, max_len, batch_size, &counters, &out).await;
                closing(&counters);
                return;
            }
        };
        let mut batch = Vec::with_capacity(batch_size);
        let mut next = first;
        loop {
            match next {
                Ok((n, _)) if n > max_len => {
                    counters.messages.fetch_add(1, Ordering::Relaxed);
                    counters.oversized.fetch_add(1, Ordering::Relaxed);
                }
                Ok((n, from)) => accept_record(&buf[..n], from, &counters, &mut batch),
                Err(e) => tracing::warn!(error = %e, "syslog UDP receive failed"),
            }
            if batch.len() >= batch_size {
                break;
            }
            // Take what is already waiting without blocking, to fill the batch.
            next = match sock.try_recv_from(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                r => r,
            };
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        match out.offer(batch).await {
            Ok(()) => {}
            Err(TrySend::Full(_)) => {
                counters.dropped.fetch_add(n, Ordering::Relaxed);
            }
            Err(TrySend::Closed) => {
                closing(&counters);
                return;
            }
        }
    }
}

/// Shutting down: hands over the datagrams already waiting in the socket's
/// receive buffer, waiting for room in the channel (nothing new can arrive faster
/// than the deadline allows).
async fn drain_udp(
    sock: &UdpSocket,
    buf: &mut [u8],
    max_len: usize,
    batch_size: usize,
    counters: &SyslogCounters,
    out: &RecordTx,
) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut batch = Vec::with_capacity(batch_size);
    while Instant::now() < deadline {
        // Awaited, not `try_recv_from`: that trusts tokio's cached readiness and
        // can miss datagrams whose wake-up the I/O driver has not processed yet.
        let quiet = deadline.min(Instant::now() + UDP_DRAIN_QUIET);
        match tokio::time::timeout_at(quiet, sock.recv_from(buf)).await {
            Ok(Ok((n, _))) if n > max_len => {
                counters.messages.fetch_add(1, Ordering::Relaxed);
                counters.oversized.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok((n, from))) => accept_record(&buf[..n], from, counters, &mut batch),
            Ok(Err(_)) | Err(_) => break,
        }
        if batch.len() >= batch_size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            if send_before(out, full, deadline, counters).await.is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = send_before(out, batch, deadline, counters).await;
    }
}

/// Sends a batch, waiting for room until `deadline`; past it the batch is
/// counted as dropped.
async fn send_before(
    out: &RecordTx,
    batch: Vec<Record>,
    deadline: Instant,
    counters: &SyslogCounters,
) -> Result<(), ()> {
    let n = batch.len() as u64;
    match tokio::time::timeout_at(deadline, out.send(batch)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            counters.dropped.fetch_add(n, Ordering::Relaxed);
            Err(())
        }
    }
}
