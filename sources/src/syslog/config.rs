//! One `[[sources.syslog]]` section: where to listen, the limits, the time
//! records are windowed by and the TLS files, checked; listener.rs binds it.

use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::error::SourceError;

/// Where a listener listens: `udp://ADDR:PORT`, `tcp://ADDR:PORT`, or
/// `tls://ADDR:PORT` (TCP with TLS, RFC 5425; needs `tls_cert` and `tls_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    Tls(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("{s:?}: write udp://ADDR:PORT, tcp://ADDR:PORT or tls://ADDR:PORT")
        })?;
        let addr: SocketAddr = rest.parse().map_err(|e| format!("{s:?}: {e}"))?;
        match scheme {
            "udp" => Ok(ListenAddr::Udp(addr)),
            "tcp" => Ok(ListenAddr::Tcp(addr)),
            "tls" => Ok(ListenAddr::Tls(addr)),
            other => Err(format!("{s:?}: unknown scheme {other:?} (udp, tcp or tls)")),
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Udp(a) => write!(f, "udp://{a}"),
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddr::Tls(a) => write!(f, "tls://{a}"),
        }
    }
}

fn listen_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ListenAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let v = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if v.is_empty() {
        return Err(serde::de::Error::custom(
            "listen needs at least one address",
        ));
    }
    v.iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn default_max_message_bytes() -> usize {
    64 * 1024
}
fn default_max_connections() -> usize {
    256
}
fn default_batch() -> usize {
    256
}

/// Which time a source's records are windowed by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordTime {
    /// The time the message itself carries (the time of reception when it has
    /// none): right for live senders, whose clocks agree with this host's.
    #[default]
    Event,
    /// The time the message arrived: for senders that forward old logs (a day's
    /// file sent at once, a relay catching up), whose own times would fall
    /// behind the watermark and be left out of every window.
    Received,
}

/// One `[[sources.syslog]]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSourceConfig {
    /// Names the source in metrics and in the records it produces.
    pub name: String,
    /// One address or a list: `"udp://127.0.0.1:5514"`, `"tcp://0.0.0.0:6514"`.
    #[serde(deserialize_with = "listen_list")]
    pub listen: Vec<ListenAddr>,
    /// Longest message accepted, in bytes; longer ones are counted and skipped.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// TCP connections served at once per listener; more are closed and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Records per batch handed to the pipeline.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// `"event"` (the message's own time, the default) or `"received"` (the time
    /// it arrived): which time windows, features and alerts use. The `events`
    /// table keeps both (`ts`, `received_ts`) either way.
    #[serde(default)]
    pub time: RecordTime,
    /// Kernel receive buffer of the UDP sockets, in bytes (the system default
    /// unless set). A larger one rides out longer bursts.
    #[serde(default)]
    pub udp_receive_buffer: Option<usize>,
    /// PEM certificate chain and private key of `tls://` listeners.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA certificates: when set, `tls://` clients must present a
    /// certificate signed by one of them (mutual TLS).
    #[serde(default)]
    pub tls_client_ca: Option<std::path::PathBuf>,
}

impl crate::SourceConfig for SyslogSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn check(&self) -> Result<(), String> {
        if self.max_message_bytes < 480 || self.max_connections == 0 || self.batch_size == 0 {
            return Err(format!(
                "[[sources.syslog]] {}: max_message_bytes must be at least 480 (RFC 3164), max_connections and batch_size at least 1",
                self.name
            ));
        }
        Ok(())
    }

    fn binds(&self) -> Vec<String> {
        self.listen.iter().map(|l| l.to_string()).collect()
    }

    fn open(&self, rt: &tokio::runtime::Handle) -> Result<Box<dyn crate::Source>, SourceError> {
        Ok(Box::new(rt.block_on(self.bind())?))
    }
}
