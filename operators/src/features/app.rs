//! The application family, read from packets: what a host did at the
//! application layer in the flows it opened (docs/APPLICATION.md) — HTTP
//! requests and their traits, TLS handshakes, SSH and MQTT sessions — counted
//! when each side of a flow has been read, for the host that opened it.

use amoskys_schemas::{FeatureDef, FeatureDtype};
use serde::{Deserialize, Serialize};

use super::family::FamilyFeature;
use crate::Set;

use FeatureDtype::Count as C;

/// What reading one side of one flow said, for the host that opened it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppObs {
    /// The side read: the opener's (request, ClientHello, CONNECT) or the
    /// responder's (response, ServerHello, CONNACK).
    pub client_side: bool,
    /// `app_protocol`'s name, as in the flows table.
    pub protocol: String,
    /// The protocol on a port that is not one of its usual ones.
    pub nonstandard_port: bool,
    /// Hashes (0: none) of the TLS server name, the JA4 and the HTTP user agent.
    pub sni: u64,
    pub ja4: u64,
    pub user_agent: u64,
    /// A TLS ClientHello without a server name.
    pub no_sni: bool,
    /// An HTTP request that was read (its method known).
    pub http_request: bool,
    /// An HTTP request to a host given as an IP address.
    pub numeric_host: bool,
    /// An HTTP request carrying an exploit string ([`EXPLOIT_MARKERS`]).
    pub exploit: bool,
    /// An HTTP response carrying an executable, from a host given as an IP
    /// address.
    pub executable_from_numeric_host: bool,
    /// An MQTT CONNACK refusing the credentials.
    pub mqtt_auth_failed: bool,
    /// A TLS server certificate whose issuer is its own subject.
    pub self_signed: bool,
    /// Such a certificate in a session that named no server (no SNI) or ran
    /// on a port not usual for TLS.
    pub c2_traits: bool,
    /// What threat-intelligence indicators may match in what this side said:
    /// [`amoskys_schemas::domain_keys`] of the TLS server name and the HTTP
    /// host, and [`fingerprint_key`]s of the JA3, JA3S, JA4 and user agent.
    pub domains: Vec<u64>,
    pub prints: Vec<u64>,
    /// Login attempts (FTP, SMTP AUTH, POP3, IMAP) the server refused and
    /// accepted since the flow's last observation.
    pub login_failures: u32,
    pub login_successes: u32,
    /// Payload anomalies and protocol violations met in the flow so far.
    pub anomalies: u32,
    /// A ClientHello whose JA4 no other host of the network used (the
    /// observation of `fingerprints`, not of a flow), and whether it also named
    /// no server or went to a port not usual for TLS.
    pub rare_ja4: bool,
    pub rare_ja4_traits: bool,
}

/// The key a fingerprint or user-agent indicator is matched by: `kind` is
/// `ja3`, `ja3s`, `ja4`, `md5` (a bare JA3 or JA3S) or `ua`; the value is
/// compared case-insensitively.
pub fn fingerprint_key(kind: &str, value: &str) -> u64 {
    let text = format!("{kind}:{}", value.trim().to_ascii_lowercase());
    amoskys_schemas::stable_hash(text.as_bytes()).max(1)
}

/// Strings that mark an exploit attempt in an HTTP request line or header
/// (matched case-insensitively in the decoded URI, the host and the user
/// agent): Log4Shell lookups, Shellshock function definitions, path traversal
/// to system files, script and SQL injection, shell and command-interpreter
/// invocations, PHP code. Each is a marker no ordinary client sends.
pub const EXPLOIT_MARKERS: &[&str] = &[
    "${jndi:",
    "${${",
    "() {",
    "/etc/passwd",
    "/etc/shadow",
    "../../..",
    "<script",
    "union select",
    "union all select",
    "xp_cmdshell",
    "cmd.exe",
    "/bin/sh",
    "/bin/bash",
    "<?php",
    "base64_decode(",
    "eval-stdin.php",
    ";wget ",
    "|wget ",
    ";curl ",
    "|curl ",
];

/// Whether `text` carries an exploit marker.
pub fn has_exploit_marker(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    EXPLOIT_MARKERS.iter().any(|m| lower.contains(m))
}

/// What a host's flows said at the application layer in a pane, or (merged)
/// a window.
#[derive(Clone, Debug, Default)]
pub struct AppAcc {
    pub sides: u64,
    pub flows_out: u64,
    pub nonstandard_port: u64,
    pub http_requests: u64,
    pub numeric_host: u64,
    pub exploit: u64,
    pub executable: u64,
    pub user_agents: Set<u64>,
    pub tls_hellos: u64,
    pub no_sni: u64,
    pub self_signed: u64,
    pub c2_traits: u64,
    pub snis: Set<u64>,
    pub ja4s: Set<u64>,
    pub ssh: u64,
    pub mqtt_connects: u64,
    pub mqtt_auth_failures: u64,
    /// Refused logins by protocol (FTP, SMTP, POP3, IMAP, Telnet), accepted ones.
    pub login_failures: [u64; 5],
    pub login_successes: u64,
    pub anomalies: u64,
    pub rare_ja4: u64,
    pub rare_ja4_traits: u64,
}

/// The protocols whose logins are counted, in [`AppAcc::login_failures`] order.
const LOGIN_PROTOCOLS: [&str; 5] = ["ftp", "smtp", "pop3", "imap", "telnet"];

impl AppAcc {
    pub fn observe(&mut self, o: &AppObs) {
        if o.rare_ja4 {
            // Said of a ClientHello whose side is observed on its own.
            self.rare_ja4 += 1;
            self.rare_ja4_traits += u64::from(o.rare_ja4_traits);
            return;
        }
        self.sides += 1;
        self.anomalies += u64::from(o.anomalies);
        if !o.client_side {
            self.executable += u64::from(o.executable_from_numeric_host);
            self.mqtt_auth_failures += u64::from(o.mqtt_auth_failed);
            self.self_signed += u64::from(o.self_signed);
            self.c2_traits += u64::from(o.c2_traits);
            if let Some(i) = LOGIN_PROTOCOLS.iter().position(|p| *p == o.protocol) {
                self.login_failures[i] += u64::from(o.login_failures);
            }
            self.login_successes += u64::from(o.login_successes);
            return;
        }
        self.flows_out += 1;
        self.nonstandard_port += u64::from(o.nonstandard_port);
        match o.protocol.as_str() {
            "http" if o.http_request => {
                self.http_requests += 1;
                self.numeric_host += u64::from(o.numeric_host);
                self.exploit += u64::from(o.exploit);
                if o.user_agent != 0 {
                    self.user_agents.insert(o.user_agent);
                }
            }
            "ssh" => self.ssh += 1,
            "mqtt" => self.mqtt_connects += 1,
            _ => {}
        }
        if o.ja4 != 0 {
            self.tls_hellos += 1;
            self.no_sni += u64::from(o.no_sni);
            self.ja4s.insert(o.ja4);
            if o.sni != 0 {
                self.snis.insert(o.sni);
            }
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &AppAcc) {
        self.sides += l.sides;
        self.flows_out += l.flows_out;
        self.nonstandard_port += l.nonstandard_port;
        self.http_requests += l.http_requests;
        self.numeric_host += l.numeric_host;
        self.exploit += l.exploit;
        self.executable += l.executable;
        self.user_agents.extend(l.user_agents.iter().copied());
        self.tls_hellos += l.tls_hellos;
        self.no_sni += l.no_sni;
        self.self_signed += l.self_signed;
        self.c2_traits += l.c2_traits;
        self.snis.extend(l.snis.iter().copied());
        self.ja4s.extend(l.ja4s.iter().copied());
        self.ssh += l.ssh;
        self.mqtt_connects += l.mqtt_connects;
        self.mqtt_auth_failures += l.mqtt_auth_failures;
        for (a, b) in self.login_failures.iter_mut().zip(l.login_failures) {
            *a += b;
        }
        self.login_successes += l.login_successes;
        self.anomalies += l.anomalies;
        self.rare_ja4 += l.rare_ja4;
        self.rare_ja4_traits += l.rare_ja4_traits;
    }
}

/// An application feature: family `app`, read from packets, a count of
/// [`AppAcc`], null for a host none of whose flows was read.
macro_rules! feature {
    ($name:expr, $unit:expr, $description:expr, $count:expr) => {
        FamilyFeature {
            def: FeatureDef {
                name: $name,
                family: "app",
                source: "pcap",
                unit: $unit,
                dtype: C,
                description: $description,
                null_when: Some(
                    "no flow the host opened or answered was read at the application layer in the window",
                ),
            },
            compute: |a: &AppAcc| {
                let count: fn(&AppAcc) -> u64 = $count;
                (a.sides > 0).then(|| count(a) as f64)
            },
        }
    };
}

/// The features, each a counter of [`AppAcc`], null when no side was read.
pub(super) static APP_FEATURES: &[FamilyFeature<AppAcc>] = &[
    feature!(
        "app_flows_out",
        "flows",
        "Flows the host opened whose application protocol was recognised by content (docs/APPLICATION.md).",
        |a| a.flows_out
    ),
    feature!(
        "app_nonstandard_port_out",
        "flows",
        "Of them, flows on a port that is not one of the protocol's usual ones (HTTP on 7080, TLS on 3001).",
        |a| a.nonstandard_port
    ),
    feature!(
        "app_anomalies_out",
        "anomalies",
        "Payload anomalies in flows the host opened or answered: segments out of order or past the part read, retransmissions that differ, messages that do not parse, MQTT protocol violations.",
        |a| a.anomalies
    ),
    feature!(
        "http_requests_out",
        "requests",
        "HTTP requests the host sent (the first of each connection).",
        |a| a.http_requests
    ),
    feature!(
        "http_numeric_host_out",
        "requests",
        "HTTP requests to a host named by an IP address rather than a name.",
        |a| a.numeric_host
    ),
    feature!(
        "http_exploit_requests_out",
        "requests",
        "HTTP requests carrying an exploit marker in the URI, Host or User-Agent (Log4Shell, Shellshock, traversal to system files, script or SQL injection, shell invocations; the list is EXPLOIT_MARKERS in operators/src/features/app.rs).",
        |a| a.exploit
    ),
    feature!(
        "http_numeric_host_executables_in",
        "downloads",
        "Executables (by content type, or a URI ending in .exe, .dll, .scr, .msi, .ps1, .hta or .vbs) the host downloaded over HTTP from a host named by an IP address.",
        |a| a.executable
    ),
    feature!(
        "http_distinct_user_agents_out",
        "values",
        "Distinct User-Agent headers in the host's HTTP requests.",
        |a| a.user_agents.len() as u64
    ),
    feature!(
        "tls_client_hellos_out",
        "handshakes",
        "TLS ClientHellos the host sent (also after STARTTLS).",
        |a| a.tls_hellos
    ),
    feature!(
        "tls_no_sni_out",
        "handshakes",
        "Of them, ClientHellos without a server name.",
        |a| a.no_sni
    ),
    feature!(
        "tls_self_signed_in",
        "certificates",
        "Self-signed certificates (issuer equal to subject) that TLS servers presented to the host, where the handshake is in clear (before TLS 1.3).",
        |a| a.self_signed
    ),
    feature!(
        "tls_c2_traits_in",
        "sessions",
        "TLS sessions (direct, not after STARTTLS) the host opened whose server presented a self-signed certificate and that either named no server (no SNI) or ran on a port not usual for TLS: traits of servers set up by hand, as command-and-control servers are.",
        |a| a.c2_traits
    ),
    feature!(
        "tls_distinct_sni_out",
        "values",
        "Distinct server names in the host's ClientHellos.",
        |a| a.snis.len() as u64
    ),
    feature!(
        "tls_distinct_ja4_out",
        "values",
        "Distinct JA4 fingerprints of the host's ClientHellos: several TLS clients on one host.",
        |a| a.ja4s.len() as u64
    ),
    feature!(
        "tls_rare_ja4_out",
        "connections",
        "ClientHellos of the host whose JA4 no other host of the network had used, once the population is learned (10 minutes of event time after the first ClientHello seen, and at least 3 hosts sending ClientHellos): a TLS client of its own on one host (malware, an implant, a tool) among the browsers and libraries every host shares.",
        |a| a.rare_ja4
    ),
    feature!(
        "tls_rare_ja4_traits_out",
        "connections",
        "Of them, ClientHellos that named no server (no SNI) or went to a port not usual for TLS.",
        |a| a.rare_ja4_traits
    ),
    feature!(
        "ssh_sessions_out",
        "connections",
        "SSH connections the host opened (its identification string seen).",
        |a| a.ssh
    ),
    feature!(
        "mqtt_connects_out",
        "packets",
        "MQTT CONNECTs the host sent.",
        |a| a.mqtt_connects
    ),
    feature!(
        "mqtt_auth_failures_out",
        "packets",
        "MQTT CONNACKs refusing the host's credentials (3.1.1 codes 4 and 5; MQTT 5 reason codes 134 and 135).",
        |a| a.mqtt_auth_failures
    ),
    feature!(
        "app_login_failures_out",
        "logins",
        "Logins of the host refused by FTP, SMTP (AUTH), POP3, IMAP, Telnet and MQTT servers, read from both sides of clear-text connections (FTP 530, SMTP 535, POP3 -ERR, IMAP NO in answer to a login; a Telnet refusal message or new prompt after a password; MQTT CONNACK 4, 5, 134 or 135).",
        |a| a.login_failures.iter().sum::<u64>() + a.mqtt_auth_failures
    ),
    feature!(
        "ftp_login_failures_out",
        "logins",
        "Of them, FTP logins refused (530 or 430 in answer to USER or PASS).",
        |a| a.login_failures[0]
    ),
    feature!(
        "smtp_auth_failures_out",
        "logins",
        "Of them, SMTP AUTH exchanges refused (535).",
        |a| a.login_failures[1]
    ),
    feature!(
        "pop3_login_failures_out",
        "logins",
        "Of them, POP3 logins refused (-ERR in answer to PASS, APOP or AUTH).",
        |a| a.login_failures[2]
    ),
    feature!(
        "imap_login_failures_out",
        "logins",
        "Of them, IMAP logins refused (NO in answer to LOGIN or AUTHENTICATE).",
        |a| a.login_failures[3]
    ),
    feature!(
        "telnet_login_failures_out",
        "logins",
        "Of them, Telnet logins refused: after the password, a refusal (\"Login incorrect\", \"% Login invalid\", \"Authentication failed\", \"Access denied\" …) or a new prompt.",
        |a| a.login_failures[4]
    ),
    feature!(
        "app_login_successes_out",
        "logins",
        "Logins of the host accepted by FTP, SMTP, POP3, IMAP and Telnet servers (Telnet: other text than a refusal or a prompt after the password).",
        |a| a.login_successes
    ),
];
