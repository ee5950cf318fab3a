//! MQTT subscriptions: messages from a broker become device records.
//!
//! One client per `[[sources.mqtt]]` section, MQTT 3.1.1 or 5 (rumqttc), with a
//! persistent session by default: the broker queues QoS-1 messages while the
//! pipeline is stopped or disconnected and delivers them when it is back. Each
//! QoS-1 message is acknowledged only after its record is in the pipeline's
//! channel — through the source's write-ahead log, synced, when the job keeps
//! one — so a message is either in the pipeline (or its log) or still at the
//! broker. A message the broker sends again (DUP) that the log already holds
//! is acknowledged and not logged twice. While the channel is full the client
//! stops reading, and the broker holds the rest. Connection failures are
//! retried with exponential backoff.
//!
//! A topic pattern (`sensors/{device}/{metric}`) names the device a message is
//! about and its metric; a JSON object payload gives one sample per numeric field
//! (`{metric}.{field}`), a number one sample, anything else only its size.
//!
//! Its section is in config.rs, the payload reading in payload.rs, the MQTT
//! 3.1.1 and 5 clients (rumqttc has an API for each) in conn.rs; this file
//! holds the one driver over both that acknowledges after hand-over.

mod config;
mod conn;
mod payload;

use conn::{Connection, Incoming, v4, v5};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amoskys_schemas::{DeviceKind, DeviceRecord, Entity, Record};
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use tokio::sync::watch;

use crate::error::SourceError;
use crate::wal::{Handed, RecordTx};
use config::Tls;
pub use config::{BrokerUrl, MqttSourceConfig, MqttVersion};
pub use payload::{MAX_SAMPLES, Payload, TopicMatch, TopicPattern, parse_payload};
use std::collections::{HashMap, VecDeque};

/// What an MQTT source has done; read by metrics and tests.
#[derive(Debug, Default)]
pub struct MqttCounters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub samples: AtomicU64,
    /// Messages whose payload was neither a JSON object nor a number.
    pub opaque: AtomicU64,
    /// Messages with more numeric fields than one record keeps.
    pub truncated: AtomicU64,
    /// Redelivered QoS-1 messages (DUP set).
    pub redelivered: AtomicU64,
    /// Redelivered messages already in the write-ahead log (logged by a run
    /// that stopped before its acknowledgement reached the broker): acknowledged
    /// and not logged again.
    pub already_logged: AtomicU64,
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
}

impl MqttCounters {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// An MQTT source, ready to connect.
pub struct MqttSource {
    pub name: String,
    cfg: MqttSourceConfig,
    password: Option<String>,
    tls: Option<Tls>,
    counters: Arc<MqttCounters>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What tells one message from another whenever it was received: topic,
/// device, payload size and samples.
fn fingerprint(d: &DeviceRecord) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = amoskys_schemas::stable_hasher();
    d.topic.hash(&mut h);
    d.entity.hash(&mut h);
    d.payload_bytes.hash(&mut h);
    for s in &d.samples {
        s.metric.hash(&mut h);
        s.instance.hash(&mut h);
        s.value.map(f64::to_bits).hash(&mut h);
        s.raw.map(f64::to_bits).hash(&mut h);
    }
    h.finish()
}

/// Batches handed to the log at once, waiting for their sync.
const MAX_INFLIGHT: usize = 16;
/// Candidates for a message sent again, at most.
const MAX_CANDIDATES: usize = 4096;

/// A batch handed over: its PUBACKs to send, and its messages' fingerprints.
struct Sent<T> {
    tokens: Vec<T>,
    fingerprints: Vec<u64>,
}

/// Fingerprints of messages logged but maybe not acknowledged, oldest first,
/// at most [`MAX_CANDIDATES`] (the oldest go first).
#[derive(Default)]
struct Candidates {
    counts: HashMap<u64, u32>,
    order: VecDeque<u64>,
}

impl Candidates {
    fn add(&mut self, f: u64) {
        *self.counts.entry(f).or_default() += 1;
        self.order.push_back(f);
        while self.order.len() > MAX_CANDIDATES {
            if let Some(old) = self.order.pop_front() {
                self.forget(old);
            }
        }
    }

    fn forget(&mut self, f: u64) {
        if let Some(n) = self.counts.get_mut(&f) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&f);
            }
        }
    }

    /// Whether `f` is a candidate; it is one no more.
    fn take(&mut self, f: u64) -> bool {
        if !self.counts.contains_key(&f) {
            return false;
        }
        self.forget(f);
        if let Some(k) = self.order.iter().position(|o| *o == f) {
            self.order.remove(k);
        }
        true
    }
}

/// Waits for the oldest batch in flight (forever when there is none).
async fn oldest<T>(inflight: &mut VecDeque<(Handed, T)>) -> Result<(), crate::wal::Closed> {
    match inflight.front_mut() {
        Some((h, _)) => h.done().await,
        None => std::future::pending().await,
    }
}

impl MqttSource {
    pub fn counters(&self) -> Arc<MqttCounters> {
        self.counters.clone()
    }

    fn client_id(&self) -> String {
        self.cfg
            .client_id
            .clone()
            .unwrap_or_else(|| format!("amoskys-{}", self.name))
    }

    /// Subscribes and hands records to `tx` until `stop` turns true.
    pub async fn run(
        self,
        tx: impl Into<RecordTx>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let tx: RecordTx = tx.into();
        // Room for a batch of acknowledgements plus the subscription requests.
        let cap = self.cfg.batch_size * 2 + 16;
        match self.cfg.protocol {
            MqttVersion::V311 => {
                let c = v4::connect(&self, cap);
                self.drive(c, "mqtt3.1.1", tx, stop).await
            }
            MqttVersion::V5 => {
                let c = v5::connect(&self, cap);
                self.drive(c, "mqtt5", tx, stop).await
            }
        }
    }

    fn record(&self, protocol: &'static str, topic: String, payload: &[u8]) -> DeviceRecord {
        let c = &self.counters;
        let m = self
            .cfg
            .device_pattern
            .as_ref()
            .and_then(|p| p.matches(&topic));
        let (device, metric) = match &m {
            Some(m) => (
                m.device.unwrap_or(&topic).to_string(),
                m.metric.unwrap_or("").to_string(),
            ),
            None => (
                topic.clone(),
                topic.rsplit('/').next().unwrap_or("").to_string(),
            ),
        };
        let samples = match parse_payload(payload, &metric) {
            Payload::Object { samples, truncated } => {
                if truncated {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                }
                samples
            }
            Payload::Number(v) => vec![amoskys_schemas::Sample {
                metric: if metric.is_empty() {
                    "value".into()
                } else {
                    metric
                },
                instance: None,
                value: Some(v),
                raw: None,
                oid: None,
            }],
            Payload::Opaque => {
                c.opaque.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
        };
        c.samples.fetch_add(samples.len() as u64, Ordering::Relaxed);
        // Microseconds, as the events table keeps them: features computed from
        // these times then agree with what a reader of the table computes.
        let now = now_ns() / 1000 * 1000;
        DeviceRecord {
            ts_ns: now,
            received_ns: now,
            kind: DeviceKind::Mqtt,
            protocol,
            entity: Entity::Name(device.into()),
            topic: Some(topic),
            payload_bytes: Some(u32::try_from(payload.len()).unwrap_or(u32::MAX)),
            samples,
        }
    }

    async fn drive<C: Connection>(
        &self,
        mut conn: C,
        protocol: &'static str,
        tx: RecordTx,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let c = self.counters.clone();
        let mut batch: Vec<Record> = Vec::with_capacity(self.cfg.batch_size);
        let mut unacked: Vec<C::Token> = Vec::with_capacity(self.cfg.batch_size);
        // Batches handed over and not yet acknowledged, oldest first.
        let mut inflight: VecDeque<(Handed, Sent<C::Token>)> = VecDeque::new();
        let mut backoff = self.cfg.reconnect_min;
        let mut failing = false;
        // Messages logged that the broker may send again (DUP): those the
        // previous run logged after its last noted acknowledgement, and, after
        // a reconnection, those of this run not known to be acknowledged. One
        // that comes again is acknowledged and not logged twice.
        let mut logged = Candidates::default();
        for r in tx.take_logged_tail() {
            if let Record::Device(d) = r {
                logged.add(fingerprint(&d));
            }
        }
        // The fingerprints of the batches acknowledged last (their PUBACKs may
        // not have left when a connection drops).
        let mut just_acked: VecDeque<Vec<u64>> = VecDeque::new();
        let ack_all = |conn: &C, tokens: Vec<C::Token>| {
            for t in tokens {
                if let Err(e) = conn.ack(&t) {
                    tracing::debug!(source = %self.name, error = %e, "ack not sent");
                }
            }
        };
        loop {
            if *stop.borrow() {
                break;
            }
            // Acknowledge what has reached the pipeline.
            while let Some(done) = inflight.front_mut().and_then(|(h, _)| h.try_done()) {
                done.map_err(|_| SourceError::Closed)?;
                if let Some((h, sent)) = inflight.pop_front() {
                    ack_all(&conn, sent.tokens);
                    tx.acknowledged(&h);
                    just_acked.push_back(sent.fingerprints);
                    if just_acked.len() > 2 {
                        just_acked.pop_front();
                    }
                }
            }
            let ev = tokio::select! {
                ev = conn.next() => ev,
                r = oldest(&mut inflight) => {
                    r.map_err(|_| SourceError::Closed)?;
                    continue;
                }
                _ = stop.changed() => continue,
            };
            match ev {
                Ok(Incoming::Connected { session_present }) => {
                    c.connects.fetch_add(1, Ordering::Relaxed);
                    c.connected.store(1, Ordering::Relaxed);
                    backoff = self.cfg.reconnect_min;
                    if failing {
                        tracing::info!(source = %self.name, broker = %self.cfg.broker, "connected again");
                        failing = false;
                    }
                    // Subscribing again is harmless with a kept session, and
                    // needed when the broker forgot it.
                    tracing::debug!(source = %self.name, session_present, "connected");
                    if let Err(e) = conn.subscribe(&self.cfg.topics, self.cfg.qos) {
                        tracing::warn!(source = %self.name, error = %e, "subscribe failed");
                    }
                }
                Ok(Incoming::Message {
                    topic,
                    payload,
                    dup,
                    token,
                }) => {
                    c.messages.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    let rec = self.record(protocol, topic, &payload);
                    if dup {
                        c.redelivered.fetch_add(1, Ordering::Relaxed);
                        if logged.take(fingerprint(&rec)) {
                            c.already_logged.fetch_add(1, Ordering::Relaxed);
                            ack_all(&conn, vec![token]);
                            continue;
                        }
                    }
                    batch.push(Record::Device(rec));
                    unacked.push(token);
                }
                Ok(Incoming::Other) => {}
                Err(e) => {
                    c.connected.store(0, Ordering::Relaxed);
                    c.connection_errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(source = %self.name, broker = %self.cfg.broker, error = %e,
                            "MQTT connection failed; retrying with backoff");
                        failing = true;
                    }
                    // Messages read but not acknowledged: with a persistent
                    // QoS-1 session the broker sends them again, so they are
                    // dropped here rather than written twice; otherwise they
                    // are kept (they would be lost). Those handed over already
                    // (and those just acknowledged, whose acknowledgement may
                    // not have left) will be recognised when they come again.
                    unacked.clear();
                    for f in just_acked.drain(..).flatten() {
                        logged.add(f);
                    }
                    // Those handed over are candidates once they are in the
                    // log for good (a DUP that matches is acknowledged).
                    while let Some((mut h, sent)) = inflight.pop_front() {
                        tokio::select! {
                            r = h.done() => r.map_err(|_| SourceError::Closed)?,
                            _ = stop.changed() => break,
                        }
                        for f in sent.fingerprints {
                            logged.add(f);
                        }
                    }
                    if self.cfg.qos == 1 && !self.cfg.clean_session {
                        batch.clear();
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.reconnect_max);
                }
            }
            // Hand over what was read once nothing more is waiting, or the batch is full.
            if !batch.is_empty() && (batch.len() >= self.cfg.batch_size || !conn.buffered()) {
                // At most MAX_INFLIGHT batches wait for their sync.
                while inflight.len() >= MAX_INFLIGHT {
                    tokio::select! {
                        r = oldest(&mut inflight) => r.map_err(|_| SourceError::Closed)?,
                        _ = stop.changed() => break,
                    }
                    if let Some((h, sent)) = inflight.pop_front() {
                        ack_all(&conn, sent.tokens);
                        tx.acknowledged(&h);
                    }
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(self.cfg.batch_size));
                let fingerprints = full
                    .iter()
                    .filter_map(|r| match r {
                        Record::Device(d) => Some(fingerprint(d)),
                        Record::Syslog(_) => None,
                    })
                    .collect();
                tokio::select! {
                    r = tx.hand(full) => match r {
                        Ok(h) => inflight.push_back((h, Sent {
                            tokens: std::mem::take(&mut unacked),
                            fingerprints,
                        })),
                        Err(_) => return Err(SourceError::Closed),
                    },
                    _ = stop.changed() => {
                        // Stopping while the pipeline is full: the unacknowledged
                        // messages stay at the broker and come again next start.
                        unacked.clear();
                        break;
                    }
                }
            }
        }
        if !batch.is_empty() {
            // Stop asked with a batch read but not sent: the pipeline still takes
            // it, then the acknowledgements go out before disconnecting.
            if let Ok(h) = tx.hand(std::mem::take(&mut batch)).await {
                inflight.push_back((
                    h,
                    Sent {
                        tokens: std::mem::take(&mut unacked),
                        fingerprints: Vec::new(),
                    },
                ));
            }
        }
        while let Some((mut h, sent)) = inflight.pop_front() {
            if h.done().await.is_ok() {
                ack_all(&conn, sent.tokens);
                tx.acknowledged(&h);
            }
        }
        conn.disconnect();
        // Let the event loop send the acknowledgements and the DISCONNECT.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while conn.next().await.is_ok() {}
        })
        .await;
        c.connected.store(0, Ordering::Relaxed);
        Ok(())
    }
}

impl crate::Counters for MqttCounters {
    fn snapshot(&self) -> Vec<crate::Counter> {
        use crate::{Counter, Meaning::*};
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Counter::new("received", g(&self.messages), Received),
            Counter::new("bytes", g(&self.bytes), Bytes),
            Counter::new("samples", g(&self.samples), Count),
            Counter::new("opaque", g(&self.opaque), Count),
            Counter::new("truncated", g(&self.truncated), Discarded("truncated")),
            Counter::new("redelivered", g(&self.redelivered), Count),
            Counter::new("already_logged", g(&self.already_logged), Count),
            Counter::new("connects", g(&self.connects), Count),
            Counter::new("connection_errors", g(&self.connection_errors), Error),
            Counter::new(
                "connected",
                g(&self.connected),
                Gauge("amoskys_mqtt_connected"),
            ),
        ]
    }
}

impl crate::Source for MqttSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn serves(&self) -> Vec<String> {
        vec![format!("{} {:?}", self.cfg.broker, self.cfg.topics)]
    }

    fn carries(&self) -> crate::Carries {
        crate::Carries::Records
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b: BrokerUrl = "mqtt://127.0.0.1:1883".parse().expect("url");
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "127.0.0.1", 1883));
        let b: BrokerUrl = "mqtts://broker.example".parse().expect("url");
        assert_eq!((b.tls, b.port), (true, 8883));
        let b: BrokerUrl = "mqtt://[::1]:1884".parse().expect("url");
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        assert!("http://x".parse::<BrokerUrl>().is_err());
        assert!("mqtt://x:99999".parse::<BrokerUrl>().is_err());
        assert!("127.0.0.1:1883".parse::<BrokerUrl>().is_err());
    }

    #[test]
    fn config_as_written_and_checked() {
        #[derive(Deserialize)]
        struct W {
            mqtt: Vec<MqttSourceConfig>,
        }
        let w: W = toml::from_str(
            r#"
            [[mqtt]]
            name = "iot"
            broker = "mqtt://127.0.0.1:1883"
            topics = ["sensors/#"]
            device_pattern = "sensors/{device}/{metric}"
            qos = 1
            "#,
        )
        .expect("parse");
        let c = &w.mqtt[0];
        c.check().expect("valid");
        assert_eq!(c.protocol, MqttVersion::V311);
        assert!(!c.clean_session);
        let mut bad = c.clone();
        bad.qos = 2;
        assert!(bad.check().is_err());
        let mut bad = c.clone();
        bad.topics = vec!["a/#/b".into()];
        assert!(bad.check().is_err());
        let mut bad = c.clone();
        bad.password = Some("x".into());
        assert!(bad.check().is_err());
    }
}
