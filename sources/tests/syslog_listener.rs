//! The syslog listeners over real sockets on loopback: util-linux `logger` as the
//! sender, and the loghub OpenSSH log replayed over TCP in both framings.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use amoskys_schemas::Record;
use amoskys_sources::syslog::{
    AuthKind, ListenAddr, SyslogRecord, SyslogSource, SyslogSourceConfig,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

fn config(listen: &[&str], batch_size: usize) -> SyslogSourceConfig {
    let list = listen
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    toml::from_str(&format!(
        "name = \"test\"\nlisten = [{list}]\nmax_message_bytes = 2048\nmax_connections = 4\nbatch_size = {batch_size}\n"
    ))
    .expect("config")
}

struct Running {
    addrs: Vec<ListenAddr>,
    rx: mpsc::Receiver<Vec<Record>>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    counters: std::sync::Arc<amoskys_sources::syslog::SyslogCounters>,
}

async fn start(listen: &[&str], capacity: usize) -> Running {
    start_batched(listen, capacity, 256).await
}

async fn start_batched(listen: &[&str], capacity: usize, batch_size: usize) -> Running {
    let src: SyslogSource = config(listen, batch_size).bind().await.expect("bind");
    let addrs = src.local_addrs();
    let counters = src.counters();
    let (tx, rx) = mpsc::channel(capacity);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move {
        src.run(tx, shutdown).await.expect("run");
    });
    Running {
        addrs,
        rx,
        stop,
        task: Some(task),
        counters,
    }
}

impl Running {
    /// Signals shutdown and waits (at most 5 s) for the source to return.
    async fn shut_down(&mut self) {
        self.stop.send(true).ok();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("stops")
                .expect("joins");
        }
    }
}

fn port(addrs: &[ListenAddr], tcp: bool) -> u16 {
    addrs
        .iter()
        .find_map(|a| match (a, tcp) {
            (ListenAddr::Tcp(s), true) | (ListenAddr::Udp(s), false) => Some(s.port()),
            _ => None,
        })
        .expect("listener")
}

/// Receives until `n` records arrived or 10 s passed.
async fn collect(rx: &mut mpsc::Receiver<Vec<Record>>, n: usize) -> Vec<SyslogRecord> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(b)) => got.extend(b.into_iter().filter_map(|r| match r {
                Record::Syslog(s) => Some(s),
                Record::Device(_) => None,
            })),
            _ => break,
        }
    }
    got
}

fn logger(args: &[&str]) {
    let st = Command::new("logger")
        .args(args)
        .status()
        .expect("logger (util-linux) is installed");
    assert!(st.success(), "logger {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_over_udp_and_tcp_in_both_formats_and_framings() {
    let mut r = start(&["udp://127.0.0.1:0", "tcp://127.0.0.1:0"], 64).await;
    let (udp, tcp) = (
        port(&r.addrs, false).to_string(),
        port(&r.addrs, true).to_string(),
    );
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &udp,
        "-d",
        "--rfc3164",
        "-t",
        "app3164",
        "-p",
        "auth.warning",
        "udp three one six four",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &udp,
        "-d",
        "--rfc5424",
        "-t",
        "app5424",
        "-p",
        "local3.err",
        "--msgid",
        "M1",
        "udp five four two four",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "-T",
        "--rfc5424",
        "-t",
        "tcpnl",
        "-p",
        "user.notice",
        "tcp newline",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "-T",
        "--octet-count",
        "--rfc5424",
        "-t",
        "tcpoc",
        "-p",
        "daemon.info",
        "tcp octets",
    ]);
    let got = collect(&mut r.rx, 4).await;
    let by_app: BTreeMap<String, &SyslogRecord> = got
        .iter()
        .map(|g| (g.appname.clone().unwrap_or_default(), g))
        .collect();
    let a = by_app.get("app3164").expect("rfc3164 over udp");
    assert_eq!(
        (a.protocol, a.facility, a.severity, a.message.as_str()),
        ("rfc3164", Some("auth"), Some(4), "udp three one six four")
    );
    let b = by_app.get("app5424").expect("rfc5424 over udp");
    assert_eq!(
        (b.protocol, b.facility, b.severity, b.msgid.as_deref()),
        ("rfc5424", Some("local3"), Some(3), Some("M1"))
    );
    assert_eq!(b.message, "udp five four two four");
    assert_eq!(
        by_app.get("tcpnl").map(|r| r.message.as_str()),
        Some("tcp newline")
    );
    assert_eq!(
        by_app
            .get("tcpoc")
            .map(|r| (r.message.as_str(), r.severity)),
        Some(("tcp octets", Some(6)))
    );
    assert!(
        got.iter()
            .all(|g| g.sender == Some("127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))))
    );
    r.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_log_over_tcp_in_both_framings_gives_loghubs_failed_passwords() {
    let log = std::fs::read_to_string(common::data("syslog/loghub/OpenSSH_2k.log")).expect("log");
    let want = common::loghub_failed_passwords();
    for octets in [false, true] {
        let mut r = start(&["tcp://127.0.0.1:0"], 8).await;
        let addr = match r.addrs[0] {
            ListenAddr::Tcp(a) | ListenAddr::Udp(a) | ListenAddr::Tls(a) => a,
        };
        let mut payload = Vec::new();
        for line in log.lines() {
            if octets {
                payload.extend_from_slice(format!("{} {line}", line.len()).as_bytes());
            } else {
                payload.extend_from_slice(line.as_bytes());
                payload.push(b'\n');
            }
        }
        let sender = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // Odd-sized writes split frames anywhere.
            for chunk in payload.chunks(1013) {
                s.write_all(chunk).await.expect("write");
            }
            s.shutdown().await.ok();
        });
        let got = collect(&mut r.rx, 2000).await;
        sender.await.expect("sender");
        assert_eq!(got.len(), 2000, "octets={octets}");
        let mut ours: BTreeMap<IpAddr, u64> = BTreeMap::new();
        for a in got.iter().filter_map(|g| g.auth.as_ref()) {
            if a.kind == AuthKind::Failure && a.method.as_deref() == Some("password") {
                *ours.entry(a.remote.expect("address")).or_default() += u64::from(a.count);
            }
        }
        assert_eq!(ours, want, "octets={octets}");
        r.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_are_counted_and_the_listener_keeps_serving() {
    let mut r = start(&["udp://127.0.0.1:0", "tcp://127.0.0.1:0"], 64).await;
    let (udp, tcp) = (port(&r.addrs, false), port(&r.addrs, true));
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    s.send_to(&vec![b'x'; 5000], ("127.0.0.1", udp))
        .await
        .expect("send");
    s.send_to(b"\x00\x01 binary junk", ("127.0.0.1", udp))
        .await
        .expect("send");
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", tcp))
        .await
        .expect("connect");
    c.write_all(format!("<13>{}\n", "y".repeat(5000)).as_bytes())
        .await
        .expect("write");
    // An octet-counted frame over the limit, delivered whole (skipped), then a
    // line that is not syslog (kept, with its parse error): the stream stays in
    // step.
    c.write_all(format!("3000 <13>{}", "z".repeat(2996)).as_bytes())
        .await
        .expect("write");
    c.write_all(b"junk line without a priority\n")
        .await
        .expect("write");
    c.write_all(b"<13>Jan 15 09:00:00 host app: still here\n")
        .await
        .expect("write");
    c.shutdown().await.ok();
    s.send_to(
        b"<14>Jan 15 09:00:01 host app: udp still here",
        ("127.0.0.1", udp),
    )
    .await
    .expect("send");
    let got = collect(&mut r.rx, 4).await;
    let msgs: Vec<&str> = got.iter().map(|g| g.message.as_str()).collect();
    assert!(
        msgs.contains(&"still here") && msgs.contains(&"udp still here"),
        "{msgs:?}"
    );
    // What is no syslog is kept whole, saying so.
    let kept: Vec<(&str, Option<&str>)> = got
        .iter()
        .filter(|g| g.parse_error.is_some())
        .map(|g| (g.message.as_str(), g.parse_error))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.contains(&("junk line without a priority", Some("not_syslog"))),
        "{kept:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = &r.counters;
    assert_eq!(
        c.oversized.load(Ordering::Relaxed),
        3,
        "5000-byte datagram, line and counted frame"
    );
    assert_eq!(c.empty.load(Ordering::Relaxed), 0);
    r.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_into_a_full_pipeline_counts_its_drops_and_connections_are_limited() {
    // Batches of 8 into a channel of one batch: whatever the kernel keeps of
    // the burst and however the listener's reads fall, more than two batches
    // reach a channel nobody reads.
    let mut r = start_batched(&["udp://127.0.0.1:0", "tcp://127.0.0.1:0"], 1, 8).await;
    let (udp, tcp) = (port(&r.addrs, false), port(&r.addrs, true));
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let sent = 3000u64;
    for i in 0..sent {
        s.send_to(
            format!("<13>Jan 15 09:00:00 host flood: {i}").as_bytes(),
            ("127.0.0.1", udp),
        )
        .await
        .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Connection limit: 4 held open, the fifth refused.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", tcp))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _fifth = tokio::net::TcpStream::connect(("127.0.0.1", tcp))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = r.counters.clone();
    assert_eq!(c.connections_refused.load(Ordering::Relaxed), 1);
    drop(held);
    // Stop the source, then count what reached the pipeline.
    r.shut_down().await;
    let mut received = 0u64;
    while let Ok(b) = r.rx.try_recv() {
        received += b.len() as u64;
    }
    let (seen, dropped) = (
        c.messages.load(Ordering::Relaxed),
        c.dropped.load(Ordering::Relaxed),
    );
    assert!(
        seen > 16,
        "the listener saw only {seen} of {sent} datagrams"
    );
    assert!(
        dropped > 0,
        "the pipeline never read, so batches must have been dropped"
    );
    // What the listener saw is what it handed over plus what it dropped (the
    // kernel may have lost some datagrams before the listener saw them).
    assert_eq!(seen, received + dropped);
    assert!(seen <= sent && received > 0);
}
