//! The MQTT source with a write-ahead log, against a real mosquitto broker: a
//! message that is in the log but whose acknowledgement never reached the
//! broker (the job was killed between the two) is not logged a second time
//! when the broker sends it again.
//!
//! The moment between the log's sync and the PUBACK cannot be hit on purpose
//! by killing a process, so the test holds the source there: the pipeline's
//! channel has room for one batch and is not drained, the source logs the
//! next batches and waits to hand them over, unacknowledged — then it is
//! dropped, as a killed process would be, and a second source opens the same
//! log.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amoskys_schemas::Record;
use amoskys_sources::mqtt::MqttSourceConfig;
use amoskys_sources::wal::{self, Batch, WalConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

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
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
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

/// Connects with `id`'s persistent session, subscribes, and leaves, so that
/// the broker queues what is published next.
async fn make_session(port: u16, id: &str) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    let (c, mut ev) = AsyncClient::new(o, 16);
    c.subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    while !matches!(ev.poll().await, Ok(Event::Incoming(Packet::SubAck(_)))) {}
    c.disconnect().await.ok();
    while ev.poll().await.is_ok() {}
}

async fn publish(port: u16, values: std::ops::RangeInclusive<u32>) {
    let n = values.clone().count();
    let (c, mut ev) = AsyncClient::new(MqttOptions::new("publisher", "127.0.0.1", port), 64);
    for v in values {
        c.publish(
            "sensors/counter/seq",
            QoS::AtLeastOnce,
            false,
            v.to_string(),
        )
        .await
        .expect("publish");
    }
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await.expect("publisher") {
            acked += 1;
        }
    }
    c.disconnect().await.ok();
}

fn values(records: &[Record]) -> Vec<u32> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Device(d) => d.samples.first().and_then(|s| s.value).map(|v| v as u32),
            Record::Syslog(_) => None,
        })
        .collect()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_already_in_the_log_is_not_logged_again() {
    let b = broker();
    let log_dir = tempfile::tempdir().expect("tempdir");
    let cfg: MqttSourceConfig = toml::from_str(&format!(
        "name = \"iot\"\nbroker = \"mqtt://127.0.0.1:{}\"\ntopics = [\"sensors/#\"]\n\
         device_pattern = \"sensors/{{device}}/{{metric}}\"\nclient_id = \"logged\"\n\
         batch_size = 1\nreconnect_min = \"100ms\"\n",
        b.port
    ))
    .expect("config");
    let rt = tokio::runtime::Handle::current();
    let wal_cfg = WalConfig::default();
    // The ten messages wait at the broker for the source's session.
    make_session(b.port, "logged").await;
    publish(b.port, 1..=10).await;

    // First run: the pipeline takes one batch and then nothing.
    let (out, held) = mpsc::channel::<Batch>(1);
    let log = wal::open(&rt, log_dir.path().to_path_buf(), &wal_cfg, None, out).expect("open log");
    let counters = log.counters.clone();
    let committer = tokio::spawn(log.committer);
    let (_stop, stopped) = watch::channel(false);
    let src = cfg.start().expect("start");
    let source = tokio::spawn(src.run(log.tx, stopped));
    wait_for("ten records logged", || {
        counters.appended.load(std::sync::atomic::Ordering::Relaxed) >= 10
    })
    .await;
    // Stopped dead: the source, its log's hand-over and the pipeline's channel.
    source.abort();
    committer.abort();
    let _ = source.await;
    let _ = committer.await;
    drop(held);

    // Second run on the same log: the records logged are read again, and the
    // broker sends again whatever was not acknowledged.
    let (out, mut rx) = mpsc::channel::<Batch>(64);
    let log = wal::open(&rt, log_dir.path().to_path_buf(), &wal_cfg, None, out).expect("reopen");
    assert_eq!(
        log.found.to_replay, 10,
        "ten records were logged before the stop"
    );
    tokio::spawn(log.committer);
    let src = cfg.start().expect("start");
    let mqtt = src.counters();
    let (stop, stopped) = watch::channel(false);
    let source = tokio::spawn(src.run(log.tx, stopped));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 10 && Instant::now() < deadline {
        if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            got.extend(values(&b.records));
        }
    }
    // A little longer, for a second copy to show if there were one.
    while let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        got.extend(values(&b.records));
    }
    stop.send(true).ok();
    let _ = tokio::time::timeout(Duration::from_secs(5), source).await;
    let redelivered = mqtt.redelivered.load(std::sync::atomic::Ordering::Relaxed);
    let skipped = mqtt
        .already_logged
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=10).collect::<Vec<u32>>(),
        "each message once: {got:?}"
    );
    assert!(
        skipped >= 1,
        "the logged, unacknowledged message came again ({redelivered} redelivered)"
    );
}
