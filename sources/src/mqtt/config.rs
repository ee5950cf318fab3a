//! One `[[sources.mqtt]]` section: the broker, the subscriptions and the
//! session, checked, and opened into an [`MqttSource`] (files read, nothing
//! connected yet).

use super::*;

/// The CA certificate and the client's certificate and key, PEM.
pub(super) type Tls = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

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
        deserialize_with = "amoskys_schemas::values::duration"
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
        deserialize_with = "amoskys_schemas::values::duration"
    )]
    pub keep_alive: Duration,
    /// First wait before reconnecting; doubles on each failure up to `reconnect_max`.
    #[serde(
        default = "default_backoff_min",
        deserialize_with = "amoskys_schemas::values::duration"
    )]
    pub reconnect_min: Duration,
    #[serde(
        default = "default_backoff_max",
        deserialize_with = "amoskys_schemas::values::duration"
    )]
    pub reconnect_max: Duration,
    /// Larger messages are refused by the client (counted as errors).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Records per batch handed to the pipeline.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
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
            crate::install_crypto_provider();
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
