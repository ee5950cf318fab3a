//! MQTT subscriptions: messages from a broker become device records.
//!
//! One client per `[[sources.mqtt]]` section, MQTT 3.1.1 or 5 (rumqttc), with a
//! persistent session by default: the broker queues QoS-1 messages while the
//! pipeline is stopped or disconnected and delivers them when it is back. Each
//! QoS-1 message is acknowledged only after its record is in the pipeline's
//! channel, so a message is either in the pipeline or still at the broker. While
//! the channel is full the client stops reading, and the broker holds the rest.
//! Connection failures are retried with exponential backoff.
//!
//! A topic pattern (`sensors/{device}/{metric}`) names the device a message is
//! about and its metric; a JSON object payload gives one sample per numeric field
//! (`{metric}.{field}`), a number one sample, anything else only its size.
//!
//! Why one file of this size: one source: its section, the MQTT 3.1.1 and 5 clients
//! (rumqttc has an API for each) behind one driver that acknowledges after hand-
//! over, and the payload reading; the tests take the rest.

mod payload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amoskys_schemas::{DeviceKind, DeviceRecord, Entity, Record};
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use tokio::sync::{mpsc, watch};

use crate::error::SourceError;
pub use payload::{MAX_SAMPLES, Payload, TopicMatch, TopicPattern, parse_payload};

/// `mqtt://HOST:PORT` (default port 1883) or `mqtts://HOST:PORT` (8883).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?}: write mqtt://HOST:PORT or mqtts://HOST:PORT"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(format!("{s:?}: unknown scheme {other:?} (mqtt or mqtts)")),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("{s:?}: bad port {p:?}"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The protocol version spoken to the broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum MqttVersion {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

fn default_qos() -> u8 {
    1
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_backoff_min() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_payload() -> usize {
    256 * 1024
}
fn default_batch() -> usize {
    256
}
fn default_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// One `[[sources.mqtt]]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Names the source in metrics and in the records it produces.
    pub name: String,
    /// `mqtt://HOST:PORT` or, for TLS, `mqtts://HOST:PORT`.
    pub broker: BrokerUrl,
    /// Topic filters to subscribe to (`+` and `#` wildcards allowed).
    pub topics: Vec<String>,
    /// Maps topics to devices and metrics, e.g. `sensors/{device}/{metric}`.
    /// Without it (or when a topic does not fit) the topic is the device and its
    /// last level the metric.
    #[serde(default)]
    pub device_pattern: Option<TopicPattern>,
    /// Subscription QoS: 0 (at most once) or 1 (at least once, nothing lost).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttVersion,
    /// Client identifier; the broker keeps the persistent session under it.
    /// Default `amoskys-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Start a fresh session each time: messages sent while the pipeline was
    /// away are lost. Off by default.
    #[serde(default)]
    pub clean_session: bool,
    /// How long the broker keeps the session while disconnected (MQTT 5).
    #[serde(
        default = "default_session_expiry",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub session_expiry: Duration,
    #[serde(default)]
    pub username: Option<String>,
    /// The password; or name an environment variable with `password_env`.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts://).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key presented to the broker (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub keep_alive: Duration,
    /// First wait before reconnecting; doubles on each failure up to `reconnect_max`.
    #[serde(
        default = "default_backoff_min",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub reconnect_min: Duration,
    #[serde(
        default = "default_backoff_max",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub reconnect_max: Duration,
    /// Larger messages are refused by the client (counted as errors).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Records per batch handed to the pipeline.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

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

impl MqttSourceConfig {
    /// Checks the section; errors name the source and the key.
    pub fn check(&self) -> Result<(), SourceError> {
        let bad = |m: String| {
            Err(SourceError::Config(format!(
                "mqtt source {:?}: {m}",
                self.name
            )))
        };
        if self.name.trim().is_empty() {
            return Err(SourceError::Config("mqtt source: name is empty".into()));
        }
        if self.topics.is_empty() {
            return bad("topics needs at least one topic filter".into());
        }
        for t in &self.topics {
            let levels: Vec<&str> = t.split('/').collect();
            let ok = !t.is_empty()
                && levels.iter().enumerate().all(|(i, l)| {
                    (*l == "#" && i + 1 == levels.len()) || *l == "+" || !l.contains(['+', '#'])
                });
            if !ok {
                return bad(format!(
                    "topic filter {t:?} is not valid ('+' is a whole level, '#' only the last)"
                ));
            }
        }
        if self.qos > 1 {
            return bad(format!("qos = {}: use 0 or 1", self.qos));
        }
        if self.batch_size == 0 || self.max_payload_bytes == 0 {
            return bad("batch_size and max_payload_bytes must be at least 1".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return bad("reconnect_min must be > 0 and not above reconnect_max".into());
        }
        if self.keep_alive < Duration::from_secs(1) {
            return bad("keep_alive must be at least 1s".into());
        }
        if self.password.is_some() && self.password_env.is_some() {
            return bad("give password or password_env, not both".into());
        }
        if (self.password.is_some() || self.password_env.is_some()) && self.username.is_none() {
            return bad("a password needs a username".into());
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return bad("client_cert and client_key go together".into());
        }
        if !self.broker.tls && (self.ca_file.is_some() || self.client_cert.is_some()) {
            return bad("ca_file/client_cert need an mqtts:// broker".into());
        }
        Ok(())
    }

    fn read_pem(&self, p: &PathBuf, what: &str) -> Result<Vec<u8>, SourceError> {
        std::fs::read(p).map_err(|e| {
            SourceError::Config(format!(
                "mqtt source {:?}: cannot read {what} {}: {e}",
                self.name,
                p.display()
            ))
        })
    }

    /// Checks the section and reads its files; connecting happens in `run`.
    pub fn start(&self) -> Result<MqttSource, SourceError> {
        self.check()?;
        let password = match (&self.password, &self.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                SourceError::Config(format!(
                    "mqtt source {:?}: environment variable {var} (password_env) is not set",
                    self.name
                ))
            })?),
            _ => None,
        };
        let tls = if self.broker.tls {
            install_crypto_provider();
            let ca = match &self.ca_file {
                Some(p) => self.read_pem(p, "ca_file")?,
                None => {
                    return Err(SourceError::Config(format!(
                        "mqtt source {:?}: an mqtts:// broker needs ca_file",
                        self.name
                    )));
                }
            };
            let client = match (&self.client_cert, &self.client_key) {
                (Some(c), Some(k)) => Some((
                    self.read_pem(c, "client_cert")?,
                    self.read_pem(k, "client_key")?,
                )),
                _ => None,
            };
            Some((ca, client))
        } else {
            None
        };
        Ok(MqttSource {
            name: self.name.clone(),
            cfg: self.clone(),
            password,
            tls,
            counters: Arc::new(MqttCounters::default()),
        })
    }
}

/// Installs rustls' ring provider for the process, once (TLS clients and servers).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

type Tls = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

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

/// What the connection produced, whichever protocol version.
enum Incoming<P> {
    Connected {
        session_present: bool,
    },
    Message {
        topic: String,
        payload: Bytes,
        dup: bool,
        token: P,
    },
    Other,
}

/// The part of a rumqttc client and event loop this source uses, for 3.1.1 and 5.
trait Connection {
    type Token;
    async fn next(&mut self) -> Result<Incoming<Self::Token>, String>;
    /// Whether events already read from the network are waiting.
    fn buffered(&self) -> bool;
    fn ack(&self, t: &Self::Token) -> Result<(), String>;
    fn subscribe(&self, topics: &[String], qos: u8) -> Result<(), String>;
    fn disconnect(&self);
}

mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};

    pub struct Conn(pub AsyncClient, pub EventLoop);

    pub fn connect(s: &MqttSource, cap: usize) -> Conn {
        let c = &s.cfg;
        let mut o = MqttOptions::new(s.client_id(), c.broker.host.clone(), c.broker.port);
        o.set_keep_alive(c.keep_alive)
            .set_clean_session(c.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(c.max_payload_bytes + 64 * 1024, 64 * 1024)
            .set_inflight(u16::try_from(c.batch_size.clamp(10, 1000)).unwrap_or(100));
        if let Some(u) = &c.username {
            o.set_credentials(u.clone(), s.password.clone().unwrap_or_default());
        }
        if let Some((ca, client)) = &s.tls {
            o.set_transport(Transport::tls(ca.clone(), client.clone(), None));
        }
        let (client, ev) = AsyncClient::new(o, cap);
        Conn(client, ev)
    }

    fn qos(q: u8) -> QoS {
        if q == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    impl Connection for Conn {
        type Token = Publish;
        async fn next(&mut self) -> Result<Incoming<Publish>, String> {
            match self.1.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Incoming::Connected {
                    session_present: a.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    dup: p.dup,
                    token: p,
                }),
                Ok(_) => Ok(Incoming::Other),
                Err(e) => Err(e.to_string()),
            }
        }
        fn buffered(&self) -> bool {
            !self.1.state.events.is_empty()
        }
        fn ack(&self, t: &Publish) -> Result<(), String> {
            self.0.try_ack(t).map_err(|e| e.to_string())
        }
        fn subscribe(&self, topics: &[String], q: u8) -> Result<(), String> {
            let f = topics
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos(q)));
            self.0.try_subscribe_many(f).map_err(|e| e.to_string())
        }
        fn disconnect(&self) {
            let _ = self.0.try_disconnect();
        }
    }
}

mod v5 {
    use super::*;
    use rumqttc::Transport;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    pub struct Conn(pub AsyncClient, pub EventLoop);

    pub fn connect(s: &MqttSource, cap: usize) -> Conn {
        let c = &s.cfg;
        let mut o = MqttOptions::new(s.client_id(), c.broker.host.clone(), c.broker.port);
        o.set_keep_alive(c.keep_alive)
            .set_clean_start(c.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(u32::try_from(c.max_payload_bytes + 64 * 1024).ok());
        if !c.clean_session {
            o.set_session_expiry_interval(Some(
                u32::try_from(c.session_expiry.as_secs()).unwrap_or(u32::MAX),
            ));
        }
        if let Some(u) = &c.username {
            o.set_credentials(u.clone(), s.password.clone().unwrap_or_default());
        }
        if let Some((ca, client)) = &s.tls {
            o.set_transport(Transport::tls(ca.clone(), client.clone(), None));
        }
        let (client, ev) = AsyncClient::new(o, cap);
        Conn(client, ev)
    }

    impl Connection for Conn {
        type Token = Publish;
        async fn next(&mut self) -> Result<Incoming<Publish>, String> {
            match self.1.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Incoming::Connected {
                    session_present: a.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Incoming::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.clone(),
                    dup: p.dup,
                    token: p,
                }),
                Ok(_) => Ok(Incoming::Other),
                Err(e) => Err(e.to_string()),
            }
        }
        fn buffered(&self) -> bool {
            !self.1.state.events.is_empty()
        }
        fn ack(&self, t: &Publish) -> Result<(), String> {
            self.0.try_ack(t).map_err(|e| e.to_string())
        }
        fn subscribe(&self, topics: &[String], q: u8) -> Result<(), String> {
            let qos = if q == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let f = topics.iter().map(|t| Filter::new(t.clone(), qos));
            self.0.try_subscribe_many(f).map_err(|e| e.to_string())
        }
        fn disconnect(&self) {
            let _ = self.0.try_disconnect();
        }
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
        tx: mpsc::Sender<Vec<Record>>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
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
        tx: mpsc::Sender<Vec<Record>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let c = self.counters.clone();
        let mut batch: Vec<Record> = Vec::with_capacity(self.cfg.batch_size);
        let mut unacked: Vec<C::Token> = Vec::with_capacity(self.cfg.batch_size);
        let mut backoff = self.cfg.reconnect_min;
        let mut failing = false;
        loop {
            if *stop.borrow() {
                break;
            }
            let ev = tokio::select! {
                ev = conn.next() => ev,
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
                    if dup {
                        c.redelivered.fetch_add(1, Ordering::Relaxed);
                    }
                    batch.push(Record::Device(self.record(protocol, topic, &payload)));
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
                    // are kept (they would be lost).
                    unacked.clear();
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
                let full = std::mem::replace(&mut batch, Vec::with_capacity(self.cfg.batch_size));
                tokio::select! {
                    r = tx.send(full) => if r.is_err() { return Err(SourceError::Closed) },
                    _ = stop.changed() => {
                        // Stopping while the pipeline is full: the unacknowledged
                        // messages stay at the broker and come again next start.
                        unacked.clear();
                        break;
                    }
                }
                for t in unacked.drain(..) {
                    if let Err(e) = conn.ack(&t) {
                        tracing::debug!(source = %self.name, error = %e, "ack not sent");
                    }
                }
            }
        }
        if !batch.is_empty() {
            // Stop asked with a batch read but not sent: the pipeline still takes
            // it, then the acknowledgements go out before disconnecting.
            if tx.send(std::mem::take(&mut batch)).await.is_ok() {
                for t in unacked.drain(..) {
                    let _ = conn.ack(&t);
                }
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

impl crate::SourceConfig for MqttSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn check(&self) -> Result<(), String> {
        MqttSourceConfig::check(self).map_err(|e| e.to_string())
    }

    fn open(&self, _: &tokio::runtime::Handle) -> Result<Box<dyn crate::Source>, SourceError> {
        Ok(Box::new(self.start()?))
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
