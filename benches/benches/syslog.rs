//! Syslog over TCP: messages per second from the socket to parsed records on the
//! pipeline's channel, against a plain TCP read of the same bytes in the same run.
//!
//!     cargo bench -p amoskys-benches --bench syslog

use std::time::Instant;

use amoskys_benches::{Hand, median, record_channel};

use amoskys_sources::syslog::{ListenAddr, SyslogSourceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESSAGES: usize = 300_000;

fn payload() -> Vec<u8> {
    let mut v = Vec::with_capacity(MESSAGES * 110);
    for i in 0..MESSAGES {
        v.extend_from_slice(
            format!(
                "<38>Jan 15 09:00:00 gw sshd[{}]: Failed password for invalid user u{} from 198.51.100.{} port {} ssh2\n",
                1000 + i % 5000,
                i % 977,
                i % 250,
                1024 + i % 60000
            )
            .as_bytes(),
        );
    }
    v
}

/// Bytes read and discarded by a bare TCP listener: the floor of any TCP receiver.
async fn plain_read(data: &[u8]) -> f64 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let t = Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(data).await.expect("write");
    c.shutdown().await.ok();
    drop(c);
    reader.await.expect("reader");
    MESSAGES as f64 / t.elapsed().as_secs_f64()
}

/// The syslog source: framing, parsing and authentication facts, batches on a
/// bounded channel that a consumer drains.
async fn syslog_source(data: &'static [u8], hand: Hand) -> f64 {
    let cfg: SyslogSourceConfig =
        toml::from_str("name = \"bench\"\nlisten = \"tcp://127.0.0.1:0\"\n").expect("config");
    let src = cfg.bind().await.expect("bind");
    let ListenAddr::Tcp(addr) = src.local_addrs()[0] else {
        panic!("tcp listener")
    };
    let (tx, mut rx, _log) = record_channel(hand);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(src.run(tx, shutdown));
    let t = Instant::now();
    // The sender runs on its own: the source reads only as fast as the channel is
    // drained below, so writing everything first would never finish.
    let sender = tokio::spawn(async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(data).await.expect("write");
        c.shutdown().await.ok();
    });
    let mut got = 0;
    while got < MESSAGES {
        match rx.recv().await {
            Some(b) => got += b.records.len(),
            None => break,
        }
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    sender.await.ok();
    stop.send(true).ok();
    drop(rx);
    run.await.ok();
    rate
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data: &'static [u8] = Box::leak(payload().into_boxed_slice());
    let mut plain = Vec::new();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); Hand::ALL.len()];
    for round in 0..5 {
        plain.push(rt.block_on(plain_read(data)));
        // Each round starts with another configuration.
        for k in 0..Hand::ALL.len() {
            let k = (k + round) % Hand::ALL.len();
            ours[k].push(rt.block_on(syslog_source(data, Hand::ALL[k])));
        }
    }
    let p = median(plain);
    println!(
        "{MESSAGES} messages ({} MB) over one TCP connection; median of 5 interleaved rounds",
        data.len() / 1_000_000
    );
    println!(
        "plain TCP read                                          {p:>12.0} messages/s   100.0 %"
    );
    let rates: Vec<f64> = ours.into_iter().map(median).collect();
    for (hand, o) in Hand::ALL.iter().zip(&rates) {
        println!(
            "syslog source (frame, parse, auth), {:<28} {o:>10.0} messages/s   {:>5.1} %",
            hand.label(),
            100.0 * o / p
        );
    }
    println!(
        "with the default log against without: {:.1} %",
        100.0 * rates[2] / rates[0]
    );
}
