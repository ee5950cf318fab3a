//! MQTT: messages per second from a real mosquitto broker to records on the
//! pipeline's channel, against a bare rumqttc subscriber draining the same backlog
//! in the same run.
//!
//!     cargo bench -p amoskys-benches --bench mqtt
//!
//! Each round queues MESSAGES QoS-1 messages at the broker for a persistent
//! session while its subscriber is away, then times how fast the subscriber takes
//! the backlog: the broker, the loopback and the client library are common to both,
//! so the ratio is what topic mapping, payload parsing and acknowledging after
//! hand-over cost.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amoskys_benches::{Hand, median, record_channel};
use amoskys_sources::mqtt::MqttSourceConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const MESSAGES: usize = 50_000;

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker() -> Broker {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        ),
    )
    .expect("write config");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mosquitto ({e}): run scripts/setup.sh --test"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        child,
        port,
        _dir: dir,
    }
}

/// Connects with `id`'s persistent session, subscribes, and leaves, so that the
/// broker queues what is published next.
async fn make_session(port: u16, id: &str) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    let (c, mut ev) = AsyncClient::new(o, 16);
    c.subscribe("bench/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev.poll().await {
            break;
        }
    }
    c.disconnect().await.ok();
    while ev.poll().await.is_ok() {}
}

async fn publish_backlog(port: u16) {
    let mut o = MqttOptions::new("bench-publisher", "127.0.0.1", port);
    o.set_inflight(1000);
    let (c, mut ev) = AsyncClient::new(o, 1024);
    let client = c.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let payload = format!("{{\"t\": {}.5, \"h\": {}}}", i % 40, i % 100);
            c.publish(
                format!("bench/dev{}/env", i % 100),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .expect("publish");
        }
    });
    let mut acked = 0;
    while acked < MESSAGES {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    publisher.await.ok();
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
}

/// A bare subscriber: count the messages of the backlog, acknowledging each.
async fn bare(port: u16, id: &str) -> f64 {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false).set_inflight(100);
    let t = Instant::now();
    let (c, mut ev) = AsyncClient::new(o, 1024);
    let mut got = 0;
    while got < MESSAGES {
        if let Ok(Event::Incoming(Packet::Publish(_))) = ev.poll().await {
            got += 1;
        }
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    c.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ev.poll().await.is_ok() {}
    })
    .await;
    rate
}

/// The MQTT source: topic pattern, JSON payload to samples, records on a bounded
/// channel, acknowledgements after hand-over.
async fn source(port: u16, id: &str, hand: Hand) -> f64 {
    let cfg: MqttSourceConfig = toml::from_str(&format!(
        "name = \"bench\"\nbroker = \"mqtt://127.0.0.1:{port}\"\ntopics = [\"bench/#\"]\n\
         device_pattern = \"bench/{{device}}/{{metric}}\"\nclient_id = \"{id}\"\n"
    ))
    .expect("config");
    let src = cfg.start().expect("start");
    let (tx, mut rx, _log) = record_channel(hand);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let run = tokio::spawn(src.run(tx, stopped));
    let mut got = 0;
    while got < MESSAGES {
        match rx.recv().await {
            Some(b) => got += b.records.len(),
            None => break,
        }
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    stop.send(true).ok();
    while rx.recv().await.is_some() {}
    run.await.ok();
    rate
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("AMOSKYS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let b = broker();
    // Who takes each backlog: a bare subscriber, or the source handing over
    // as each `Hand` says; each has a session of its own.
    let takers: Vec<(String, Option<Hand>)> = std::iter::once(("bench-bare".to_string(), None))
        .chain(
            Hand::ALL
                .iter()
                .enumerate()
                .map(|(k, h)| (format!("bench-source-{k}"), Some(*h))),
        )
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); takers.len()];
    let mut publish = Vec::new();
    rt.block_on(async {
        for (id, _) in &takers {
            make_session(b.port, id).await;
        }
        for round in 0..rounds {
            for k in 0..takers.len() {
                // Each round starts with another taker.
                let k = (k + round) % takers.len();
                let t = Instant::now();
                publish_backlog(b.port).await;
                publish.push(MESSAGES as f64 / t.elapsed().as_secs_f64());
                // Each backlog is queued for every session: taken by one, the
                // others' drained after it.
                let (id, hand) = &takers[k];
                let r = match hand {
                    None => bare(b.port, id).await,
                    Some(h) => source(b.port, id, *h).await,
                };
                rates[k].push(r);
                for (other, _) in takers.iter().filter(|(o, _)| o != id) {
                    bare(b.port, other).await;
                }
            }
        }
    });
    let rates: Vec<f64> = rates.into_iter().map(median).collect();
    let q = median(publish);
    println!(
        "{MESSAGES} QoS-1 JSON messages queued at mosquitto per round; median of {rounds} interleaved rounds"
    );
    println!("publishing the backlog (QoS 1)                             {q:>10.0} messages/s");
    println!(
        "bare rumqttc subscriber                                    {:>10.0} messages/s   100.0 %",
        rates[0]
    );
    for ((_, hand), r) in takers.iter().zip(&rates).skip(1) {
        println!(
            "MQTT source (map, parse, hand over), {:<28} {r:>10.0} messages/s   {:>5.1} %",
            hand.map_or("", Hand::label),
            100.0 * r / rates[0]
        );
    }
    println!(
        "with the default log against without: {:.1} %",
        100.0 * rates[3] / rates[1]
    );
}
