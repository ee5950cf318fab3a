//! `[[sources.snmp]]`: which agents to poll, how often, and with which
//! credentials.
//!
//! (Over 600 lines with its tests; the configuration itself is about 450.)

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use amoskys_schemas::{Addr, Entity};
use serde::Deserialize;

use super::source::{Agent, Settings, SnmpCounters, SnmpSource};
use crate::error::SourceError;

/// The port SNMP agents listen on.
pub const SNMP_PORT: u16 = 161;

/// SNMP version spoken to every agent of a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SnmpVersion {
    /// SNMPv2c: community string, GETBULK.
    #[default]
    #[serde(rename = "2c")]
    V2c,
    /// SNMPv3 with the user-based security model (USM).
    #[serde(rename = "3")]
    V3,
}

/// SNMPv3 security level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SecurityLevel {
    /// Authenticated and encrypted (the default).
    #[default]
    #[serde(rename = "authPriv")]
    AuthPriv,
    /// Authenticated, in clear.
    #[serde(rename = "authNoPriv")]
    AuthNoPriv,
    /// Neither: the user name alone.
    #[serde(rename = "noAuthNoPriv")]
    NoAuthNoPriv,
}

impl SecurityLevel {
    fn as_str(self) -> &'static str {
        match self {
            SecurityLevel::AuthPriv => "authPriv",
            SecurityLevel::AuthNoPriv => "authNoPriv",
            SecurityLevel::NoAuthNoPriv => "noAuthNoPriv",
        }
    }
}

/// SNMPv3 authentication protocol (HMAC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum AuthProtocol {
    /// HMAC-SHA-96 (RFC 3414), the default.
    #[default]
    #[serde(rename = "SHA")]
    Sha,
    /// HMAC-SHA-256-192 (RFC 7860).
    #[serde(rename = "SHA-256")]
    Sha256,
    /// HMAC-MD5-96 (RFC 3414).
    #[serde(rename = "MD5")]
    Md5,
}

/// SNMPv3 privacy protocol (encryption).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum PrivProtocol {
    /// AES-128 in CFB mode (RFC 3826), the default.
    #[default]
    #[serde(rename = "AES")]
    Aes,
    /// DES-CBC (RFC 3414); weak, for old agents only.
    #[serde(rename = "DES")]
    Des,
}

fn default_community() -> String {
    "public".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_retries() -> u32 {
    1
}
fn default_max_repetitions() -> u32 {
    25
}

/// One `[[sources.snmp]]` section: a set of agents polled for the built-in
/// metric set ([`super::METRICS`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpSourceConfig {
    /// Names the source in metrics and in the records it produces.
    pub name: String,
    /// Agents to poll: `"host:port"`, `"host"` (port 161), IPv4 or IPv6 literals
    /// (`"[2001:db8::1]:1161"`, `"2001:db8::1"`). Host names are resolved once,
    /// when the source starts.
    pub agents: Vec<String>,
    /// `"2c"` (the default) or `"3"`.
    #[serde(default)]
    pub version: SnmpVersion,
    /// SNMPv2c community string; `"public"` unless set. Not used by version 3.
    #[serde(default = "default_community")]
    pub community: String,
    /// Time between two polls of one agent, e.g. `"10s"`; 30 s unless set.
    #[serde(
        default = "default_interval",
        deserialize_with = "amoskys_schemas::values::duration"
    )]
    pub interval: Duration,
    /// How long one request waits for its response; 2 s unless set.
    #[serde(
        default = "default_timeout",
        deserialize_with = "amoskys_schemas::values::duration"
    )]
    pub timeout: Duration,
    /// Requests re-sent after a timeout before the poll counts as failed; 1
    /// unless set (at most 10). A dead agent's poll so fails after
    /// `timeout × (retries + 1)`.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// GETBULK max-repetitions: table rows asked for per column and request;
    /// 25 unless set (1 to 1000).
    #[serde(default = "default_max_repetitions")]
    pub max_repetitions: u32,
    /// SNMPv3 user name (required for version 3).
    #[serde(default)]
    pub username: Option<String>,
    /// SNMPv3 security level: `"authPriv"` (the default), `"authNoPriv"` or
    /// `"noAuthNoPriv"`.
    #[serde(default)]
    pub security_level: Option<SecurityLevel>,
    /// SNMPv3 authentication protocol: `"SHA"` (the default), `"SHA-256"` or
    /// `"MD5"`.
    #[serde(default)]
    pub auth_protocol: Option<AuthProtocol>,
    /// SNMPv3 authentication pass phrase (at least 8 characters), for
    /// `authNoPriv` and `authPriv`.
    #[serde(default)]
    pub auth_password: Option<String>,
    /// SNMPv3 privacy protocol: `"AES"` (AES-128, the default) or `"DES"`.
    #[serde(default)]
    pub priv_protocol: Option<PrivProtocol>,
    /// SNMPv3 privacy pass phrase (at least 8 characters), for `authPriv`.
    #[serde(default)]
    pub priv_password: Option<String>,
}

/// Secrets never reach logs through `{:?}`.
impl fmt::Debug for SnmpSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("SnmpSourceConfig")
            .field("name", &self.name)
            .field("agents", &self.agents)
            .field("version", &self.version)
            .field("community", &"<hidden>")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_repetitions", &self.max_repetitions)
            .field("username", &self.username)
            .field("security_level", &self.security_level)
            .field("auth_protocol", &self.auth_protocol)
            .field("auth_password", &hide(&self.auth_password))
            .field("priv_protocol", &self.priv_protocol)
            .field("priv_password", &hide(&self.priv_password))
            .finish()
    }
}

/// Splits an agent address into host and port (161 when none is given).
pub(crate) fn split_agent(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip().to_string(), a.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), SNMP_PORT));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| (ip.to_string(), SNMP_PORT))
            .map_err(|_| format!("{s:?} is not an IPv6 address"));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{s:?}: port must be 1 to 65535"))?;
            (h, port)
        }
        None => (s, SNMP_PORT),
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "{s:?} is not \"host:port\", \"host\", an IPv4 address or an IPv6 address (\"[addr]:port\")"
        ));
    }
    Ok((host.to_string(), port))
}

impl SnmpSourceConfig {
    /// Checks the settings without touching the network.
    pub fn check(&self) -> Result<(), SourceError> {
        if self.name.trim().is_empty() {
            return Err(SourceError::Config("snmp source: name is empty".into()));
        }
        let err = |m: String| {
            Err(SourceError::Config(format!(
                "snmp source {}: {m}",
                self.name
            )))
        };
        if self.agents.is_empty() {
            return err("agents is empty: list at least one \"host:port\"".into());
        }
        for a in &self.agents {
            if let Err(e) = split_agent(a) {
                return err(format!("agent {e}"));
            }
        }
        if self.interval.is_zero() {
            return err("interval must be more than 0".into());
        }
        if self.timeout.is_zero() {
            return err("timeout must be more than 0".into());
        }
        if self.retries > 10 {
            return err(format!("retries is {}; at most 10", self.retries));
        }
        if !(1..=1000).contains(&self.max_repetitions) {
            return err(format!(
                "max_repetitions is {}; 1 to 1000",
                self.max_repetitions
            ));
        }
        match self.version {
            SnmpVersion::V2c => {
                if self.community.is_empty() {
                    return err("community is empty".into());
                }
                let v3_only = [
                    ("username", self.username.is_some()),
                    ("security_level", self.security_level.is_some()),
                    ("auth_protocol", self.auth_protocol.is_some()),
                    ("auth_password", self.auth_password.is_some()),
                    ("priv_protocol", self.priv_protocol.is_some()),
                    ("priv_password", self.priv_password.is_some()),
                ];
                if let Some((k, _)) = v3_only.iter().find(|(_, set)| *set) {
                    return err(format!(
                        "{k} is for SNMPv3: set version = \"3\", or remove it"
                    ));
                }
            }
            SnmpVersion::V3 => self
                .check_v3()
                .map_err(|m| SourceError::Config(format!("snmp source {}: {m}", self.name)))?,
        }
        Ok(())
    }

    fn check_v3(&self) -> Result<(), String> {
        let user = self.username.as_deref().unwrap_or("");
        if user.is_empty() {
            return Err("version 3 needs a username".into());
        }
        if user.len() > 32 {
            return Err("username is longer than 32 bytes".into());
        }
        let level = self.security_level.unwrap_or_default();
        let pass = |key: &str, v: &Option<String>, needed: bool| -> Result<(), String> {
            match (v, needed) {
                (None, true) => Err(format!(
                    "security_level {} needs {key} (at least 8 characters)",
                    level.as_str()
                )),
                (Some(p), true) if p.chars().count() < 8 => {
                    Err(format!("{key} is shorter than 8 characters (RFC 3414)"))
                }
                (Some(_), false) => Err(format!(
                    "{key} is set but security_level {} does not use it",
                    level.as_str()
                )),
                _ => Ok(()),
            }
        };
        let auth = level != SecurityLevel::NoAuthNoPriv;
        let privacy = level == SecurityLevel::AuthPriv;
        pass("auth_password", &self.auth_password, auth)?;
        pass("priv_password", &self.priv_password, privacy)?;
        if !auth && self.auth_protocol.is_some() {
            return Err(
                "auth_protocol is set but security_level noAuthNoPriv does not use it".into(),
            );
        }
        if !privacy && self.priv_protocol.is_some() {
            return Err(format!(
                "priv_protocol is set but security_level {} does not use it",
                level.as_str()
            ));
        }
        Ok(())
    }

    /// The snmp2 security parameters for version 3 (`None` for v2c).
    fn v3_security(&self) -> Option<snmp2::v3::Security> {
        use snmp2::v3;
        if self.version != SnmpVersion::V3 {
            return None;
        }
        let user = self.username.as_deref().unwrap_or("");
        let auth_pass = self.auth_password.as_deref().unwrap_or("");
        let auth = match self.security_level.unwrap_or_default() {
            SecurityLevel::NoAuthNoPriv => v3::Auth::NoAuthNoPriv,
            SecurityLevel::AuthNoPriv => v3::Auth::AuthNoPriv,
            SecurityLevel::AuthPriv => v3::Auth::AuthPriv {
                cipher: match self.priv_protocol.unwrap_or_default() {
                    PrivProtocol::Aes => v3::Cipher::Aes128,
                    PrivProtocol::Des => v3::Cipher::Des,
                },
                privacy_password: self
                    .priv_password
                    .as_deref()
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec(),
            },
        };
        let protocol = match self.auth_protocol.unwrap_or_default() {
            AuthProtocol::Sha => v3::AuthProtocol::Sha1,
            AuthProtocol::Sha256 => v3::AuthProtocol::Sha256,
            AuthProtocol::Md5 => v3::AuthProtocol::Md5,
        };
        Some(
            v3::Security::new(user.as_bytes(), auth_pass.as_bytes())
                .with_auth_protocol(protocol)
                .with_auth(auth),
        )
    }

    /// Checks the settings and resolves every agent's address; polling starts
    /// with [`SnmpSource::run`].
    pub async fn start(&self) -> Result<SnmpSource, SourceError> {
        self.check()?;
        let mut agents: Vec<Agent> = Vec::with_capacity(self.agents.len());
        for a in &self.agents {
            let (host, port) = split_agent(a).map_err(SourceError::Config)?;
            let ip = match host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|mut it| {
                        it.next()
                            .map(|s| s.ip())
                            .ok_or_else(|| "no address".to_string())
                    })
                    .map_err(|e| {
                        SourceError::Config(format!(
                            "snmp source {}: cannot resolve agent {a:?}: {e}",
                            self.name
                        ))
                    })?,
            };
            let addr = SocketAddr::new(ip.to_canonical(), port);
            if agents.iter().any(|x| x.addr == addr) {
                return Err(SourceError::Config(format!(
                    "snmp source {}: agent {addr} is listed twice",
                    self.name
                )));
            }
            agents.push(Agent {
                addr,
                entity: agent_entity(addr),
            });
        }
        let (protocol, security) = match self.version {
            SnmpVersion::V2c => ("snmpv2c", None),
            SnmpVersion::V3 => ("snmpv3", self.v3_security()),
        };
        Ok(SnmpSource {
            name: self.name.clone(),
            agents,
            settings: Arc::new(Settings {
                source: self.name.clone(),
                protocol,
                community: self.community.as_bytes().to_vec(),
                security,
                interval: self.interval,
                timeout: self.timeout,
                retries: self.retries,
                max_repetitions: self.max_repetitions,
            }),
            counters: Arc::new(SnmpCounters::default()),
        })
    }
}

/// The entity a poll describes: the agent's address, with its port when it is
/// not 161.
pub(crate) fn agent_entity(addr: SocketAddr) -> Entity {
    if addr.port() == SNMP_PORT {
        Entity::Ip(Addr::from(addr.ip()))
    } else {
        Entity::Name(Arc::from(addr.to_string()))
    }
}

impl crate::SourceConfig for SnmpSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "snmp"
    }

    fn check(&self) -> Result<(), String> {
        SnmpSourceConfig::check(self).map_err(|e| e.to_string())
    }

    fn open(&self, rt: &tokio::runtime::Handle) -> Result<Box<dyn crate::Source>, SourceError> {
        Ok(Box::new(rt.block_on(self.start())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SnmpSourceConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    const V3: &str = r#"
        name = "secure"
        agents = ["10.0.0.1"]
        version = "3"
        username = "amoskys"
        auth_password = "authpass123"
        priv_password = "privpass123"
    "#;

    #[test]
    fn the_documented_section_parses_with_its_defaults() {
        let c = parse(
            r#"
            name = "core"
            agents = ["127.0.0.1:1161"]
            version = "2c"
            community = "public"
            interval = "10s"
            "#,
        )
        .expect("parses");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.retries, 1);
        assert_eq!(c.max_repetitions, 25);
        assert_eq!(c.version, SnmpVersion::V2c);
        c.check().expect("valid");

        let d = parse("name = \"x\"\nagents = [\"h\"]").expect("parses");
        assert_eq!(d.interval, Duration::from_secs(30));
        assert_eq!(d.community, "public");
        assert_eq!(d.version, SnmpVersion::V2c);
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        assert!(parse("name = \"x\"\nagents = [\"h\"]\nbatch = 3").is_err());
        assert!(parse("name = \"x\"\nagents = [\"h\"]\nversion = \"1\"").is_err());
        assert!(parse("name = \"x\"\nagents = [\"h\"]\ninterval = \"soon\"").is_err());
        assert!(parse(&format!("{V3}\nauth_protocol = \"SHA-1\"")).is_err());
    }

    #[test]
    fn v3_settings_are_checked() {
        let ok = parse(V3).expect("parses");
        ok.check().expect("valid");
        assert!(ok.v3_security().is_some());

        let no_user = V3.replace("username = \"amoskys\"", "");
        let e = parse(&no_user)
            .expect("parses")
            .check()
            .expect_err("no user");
        assert!(
            e.to_string().contains("secure") && e.to_string().contains("username"),
            "{e}"
        );

        let short = V3.replace("privpass123", "short");
        let e = parse(&short).expect("parses").check().expect_err("short");
        assert!(e.to_string().contains("priv_password"), "{e}");

        let no_priv = V3.replace("priv_password = \"privpass123\"", "");
        let e = parse(&no_priv)
            .expect("parses")
            .check()
            .expect_err("authPriv needs it");
        assert!(e.to_string().contains("authPriv"), "{e}");

        let auth_only = format!("{no_priv}\nsecurity_level = \"authNoPriv\"");
        parse(&auth_only)
            .expect("parses")
            .check()
            .expect("authNoPriv needs no priv_password");

        let stray = format!("{V3}\nsecurity_level = \"noAuthNoPriv\"");
        assert!(parse(&stray).expect("parses").check().is_err());
    }

    #[test]
    fn v2c_sections_refuse_v3_keys_and_bad_values() {
        let base = "name = \"x\"\nagents = [\"h\"]\n";
        for extra in [
            "username = \"u\"",
            "interval = \"0s\"",
            "community = \"\"",
            "max_repetitions = 0",
            "retries = 11",
        ] {
            let c = parse(&format!("{base}{extra}")).expect("parses");
            let e = c.check().expect_err(extra);
            assert!(e.to_string().starts_with("snmp source x:"), "{e}");
        }
        let c = parse("name = \"x\"\nagents = []").expect("parses");
        assert!(c.check().expect_err("empty").to_string().contains("agents"));
    }

    #[test]
    fn agent_addresses() {
        assert_eq!(
            split_agent("127.0.0.1:1161"),
            Ok(("127.0.0.1".into(), 1161))
        );
        assert_eq!(split_agent("10.1.2.3"), Ok(("10.1.2.3".into(), 161)));
        assert_eq!(split_agent("[::1]:1161"), Ok(("::1".into(), 1161)));
        assert_eq!(
            split_agent("[2001:db8::1]"),
            Ok(("2001:db8::1".into(), 161))
        );
        assert_eq!(split_agent("2001:db8::1"), Ok(("2001:db8::1".into(), 161)));
        assert_eq!(
            split_agent("router-1.example"),
            Ok(("router-1.example".into(), 161))
        );
        assert_eq!(split_agent("router:16100"), Ok(("router".into(), 16100)));
        assert!(split_agent("router:0").is_err());
        assert!(split_agent("router:99999").is_err());
        assert!(split_agent("").is_err());
        assert!(split_agent("a b").is_err());
    }

    #[test]
    fn entities_name_the_port_only_off_161() {
        let a: SocketAddr = "10.0.0.1:161".parse().expect("addr");
        assert_eq!(agent_entity(a).to_string(), "10.0.0.1");
        let b: SocketAddr = "10.0.0.1:1161".parse().expect("addr");
        assert_eq!(agent_entity(b).to_string(), "10.0.0.1:1161");
        let c: SocketAddr = "[::1]:1161".parse().expect("addr");
        assert_eq!(agent_entity(c).to_string(), "[::1]:1161");
    }

    #[tokio::test]
    async fn start_resolves_and_refuses_duplicates() {
        let c =
            parse("name = \"x\"\nagents = [\"localhost:1161\", \"127.0.0.2\"]").expect("parses");
        let s = c.start().await.expect("starts");
        assert_eq!(s.agents.len(), 2);
        let d = parse("name = \"x\"\nagents = [\"127.0.0.1:1161\", \"127.0.0.1:1161\"]")
            .expect("parses");
        assert!(d.start().await.is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = parse(V3).expect("parses");
        let s = format!("{c:?}");
        assert!(
            !s.contains("authpass123") && !s.contains("privpass123"),
            "{s}"
        );
    }
}
