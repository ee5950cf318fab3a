//! Application metadata of a flow, from the first bytes of each direction of a
//! TCP connection: the protocol, recognised by content (HTTP on port 7080 is
//! HTTP), and the fields of its first exchange (docs/APPLICATION.md).
//!
//! Each direction's bytes are put in order ([`reasm::Prefix`]) up to the
//! flow table's `application_bytes`, and read as they arrive; once a side is
//! read, or its protocol is not one known here, its bytes are let go. State is
//! per flow, boxed, and only for flows that carry payload.

mod http;
mod login;
mod mqtt;
mod reasm;
mod ssh;
mod tls;

use amoskys_schemas::app::AppInfo;

use crate::features::{AppObs, fingerprint_key, has_exploit_marker};
use reasm::Prefix;

/// Bytes each side may send before the protocol must be known.
const RECOGNISE_WITHIN: usize = 512;

/// Protocols recognised by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Tls,
    Ssh,
    Smtp,
    Ftp,
    Pop3,
    Imap,
    Mqtt,
    Telnet,
}

impl Protocol {
    /// The text protocols whose logins [`login`] reads.
    fn text(self) -> Option<login::Text> {
        Some(match self {
            Protocol::Ftp => login::Text::Ftp,
            Protocol::Smtp => login::Text::Smtp,
            Protocol::Pop3 => login::Text::Pop3,
            Protocol::Imap => login::Text::Imap,
            Protocol::Telnet => login::Text::Telnet,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Ssh => "ssh",
            Protocol::Smtp => "smtp",
            Protocol::Ftp => "ftp",
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
            Protocol::Mqtt => "mqtt",
            Protocol::Telnet => "telnet",
        }
    }
}

/// An MQTT CONNECT: packet type 1, a remaining length, then the protocol name
/// `MQTT` (3.1.1, 5) or `MQIsdp` (3.1).
fn looks_like_mqtt(d: &[u8]) -> bool {
    if d.first() != Some(&0x10) {
        return false;
    }
    // The remaining length takes 1 to 4 bytes, 7 bits each.
    let Some(n) = d[1..].iter().take(4).position(|b| b & 0x80 == 0) else {
        return false;
    };
    let name = &d[2 + n..];
    name.starts_with(b"\x00\x04MQTT") || name.starts_with(b"\x00\x06MQIsdp")
}

/// Telnet option negotiation (RFC 854, 855), which both sides start with:
/// IAC (255) then WILL, WONT, DO, DONT (251 to 254) or SB (250), then an option
/// code. Options are numbered well below 255.
fn looks_like_telnet(d: &[u8]) -> bool {
    matches!(d, [255, 250..=254, opt, ..] if *opt < 255)
}

fn starts_with_word(d: &[u8], words: &[&[u8]]) -> bool {
    words.iter().any(|w| {
        d.len() > w.len()
            && d[..w.len()].eq_ignore_ascii_case(w)
            && matches!(d[w.len()], b' ' | b'\r' | b'\n')
    })
}

/// The protocol the first bytes of each side say, when they say one.
fn recognise(client: &[u8], server: &[u8]) -> Option<Protocol> {
    if tls::looks_like_tls(client) {
        return Some(Protocol::Tls);
    }
    if http::looks_like_request(client) || http::looks_like_response(server) {
        return Some(Protocol::Http);
    }
    if ssh::looks_like_ssh(client) || ssh::banner(server).is_some() {
        return Some(Protocol::Ssh);
    }
    if looks_like_mqtt(client) {
        return Some(Protocol::Mqtt);
    }
    if looks_like_telnet(client) || looks_like_telnet(server) {
        return Some(Protocol::Telnet);
    }
    if server.starts_with(b"+OK") {
        return Some(Protocol::Pop3);
    }
    if server.starts_with(b"* OK") || server.starts_with(b"* PREAUTH") {
        return Some(Protocol::Imap);
    }
    // 220 opens both SMTP and FTP: the banner or the client's first command tells.
    if server.starts_with(b"220") || !client.is_empty() {
        let first_line = server.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let upper = first_line.to_ascii_uppercase();
        let has = |w: &[u8]| upper.windows(w.len()).any(|x| x == w);
        if starts_with_word(client, &[b"EHLO", b"HELO", b"MAIL"])
            || server.starts_with(b"220") && has(b"SMTP")
        {
            return Some(Protocol::Smtp);
        }
        if starts_with_word(client, &[b"USER", b"FEAT", b"SYST", b"AUTH"])
            && server.starts_with(b"220")
            || server.starts_with(b"220") && has(b"FTP")
        {
            return Some(Protocol::Ftp);
        }
    }
    None
}

/// What one flow's payload has said so far.
#[derive(Debug, Default)]
pub struct AppState {
    /// The originator's bytes, then the responder's.
    sides: [Prefix; 2],
    /// Whether a side has been read (or given up on): its bytes are let go.
    done: [bool; 2],
    protocol: Option<Protocol>,
    /// SSH: where the binary packets start after each side's banner.
    ssh_rest: [Option<usize>; 2],
    /// MQTT: protocol violations each side's bytes hold.
    mqtt_violations: [u32; 2],
    /// Sides read since [`AppState::take_read`] last looked (bit 0: the
    /// opener's), and the anomalies already reported with them.
    newly_read: u8,
    reported_anomalies: u32,
    /// Login outcomes of a text protocol so far, and those already reported.
    logins: login::Logins,
    reported_logins: (u32, u32),
    /// How much of each side the logins were last read from.
    logins_read: [usize; 2],
    info: AppInfo,
}

impl AppState {
    /// Notes a SYN's sequence number for the side that sent it.
    pub fn syn(&mut self, from_client: bool, seq: u32) {
        self.sides[usize::from(!from_client)].syn(seq);
    }

    /// Whether both sides have been read: later payload is not looked at.
    pub fn finished(&self) -> bool {
        self.done[0] && self.done[1]
    }

    /// Whether it holds payload bytes.
    #[cfg(test)]
    pub fn holds_bytes(&self) -> bool {
        self.sides.iter().any(|s| s.data.capacity() > 0)
    }

    /// Adds a TCP segment's payload from one side, read up to `limit` bytes.
    pub fn segment(&mut self, from_client: bool, seq: u32, payload: &[u8], limit: usize) {
        let i = usize::from(!from_client);
        if self.done[i] || !self.sides[i].add(seq, payload, limit) {
            return;
        }
        if self.protocol.is_none() {
            self.protocol = recognise(&self.sides[0].data, &self.sides[1].data);
            match self.protocol {
                Some(p) => self.info.protocol = Some(p.name()),
                None => {
                    // Nothing known within the first bytes of a side: give up on it.
                    for k in 0..2 {
                        if self.sides[k].data.len() >= RECOGNISE_WITHIN {
                            self.give_up(k);
                        }
                    }
                    return;
                }
            }
            // The other side may have been waiting for the protocol to be known.
            self.read(1 - i, limit);
        }
        self.read(i, limit);
        // Logins are read while both sides' bytes are held, again whenever
        // the server said more or the client ended a line: the client's
        // unfinished lines count for nothing (keystrokes of a Telnet session
        // each come alone).
        if let Some(t) = self.protocol.and_then(Protocol::text)
            && !self.done[0]
            && !self.done[1]
        {
            let [client, server] = [&self.sides[0].data, &self.sides[1].data];
            let typed = client.get(self.logins_read[0]..).unwrap_or(&[]);
            if server.len() != self.logins_read[1]
                || typed.iter().any(|&b| b == b'\n' || b == b'\r')
            {
                self.logins = login::read(t, client, server);
                self.logins_read = [client.len(), server.len()];
            }
        }
        if self.protocol == Some(Protocol::Mqtt) {
            // The opener's side is read once the broker has answered.
            self.read(1 - i, limit);
        }
    }

    /// Reads side `i` for the protocol known; lets its bytes go once read.
    fn read(&mut self, i: usize, limit: usize) {
        if self.done[i] || self.sides[i].data.is_empty() {
            return;
        }
        let data = &self.sides[i].data;
        let full = self.sides[i].full(limit);
        let info = &mut self.info;
        let read = match self.protocol {
            Some(Protocol::Http) => {
                let r = if i == 0 {
                    http::request(data, info)
                } else {
                    http::response(data, info)
                };
                match r {
                    http::Read::Done => true,
                    http::Read::Bad => {
                        info.anomalies += 1;
                        true
                    }
                    http::Read::Partial => full,
                }
            }
            Some(Protocol::Tls) => {
                (if i == 0 {
                    tls::client(data, info)
                } else {
                    tls::server(data, info)
                }) || full
            }
            Some(Protocol::Ssh) => {
                if self.ssh_rest[i].is_none()
                    && let Some((b, at)) = ssh::banner(data)
                {
                    if i == 0 {
                        info.ssh_client = Some(b);
                    } else {
                        info.ssh_server = Some(b);
                    }
                    self.ssh_rest[i] = Some(at);
                }
                match self.ssh_rest[i] {
                    Some(at) => match ssh::hassh(&data[at..], i == 0) {
                        Some(h) => {
                            if i == 0 {
                                info.hassh = Some(h);
                            } else {
                                info.hassh_server = Some(h);
                            }
                            true
                        }
                        None => full,
                    },
                    // A server may send lines before its banner (RFC 4253).
                    None => full,
                }
            }
            // Text protocols that may turn to TLS (STARTTLS, STLS, AUTH TLS):
            // the handshake starts on a line of its own after the command.
            // Telnet is read for its login, while both sides are held.
            Some(Protocol::Telnet) => full,
            Some(Protocol::Smtp | Protocol::Ftp | Protocol::Pop3 | Protocol::Imap) => {
                let start = data
                    .windows(4)
                    .position(|w| w[0] == b'\n' && tls::looks_like_tls(&w[1..]))
                    .map(|at| at + 1);
                match start {
                    Some(at) if i == 0 => tls::client(&data[at..], info) || full,
                    Some(at) => tls::server(&data[at..], info) || full,
                    None => full,
                }
            }
            Some(Protocol::Mqtt) => {
                // Read again as more comes; the counts are of the latest reading.
                let side = mqtt::read(data, i == 0, info);
                self.mqtt_violations[i] = side.violations;
                // The responder is read once its CONNACK is in; the opener once
                // its CONNECT is, and a PUBLISH was seen, eight packets went by
                // or the broker refused it.
                if i == 0 {
                    let refused = info.mqtt_connack.is_some_and(|c| c != 0);
                    full || info.mqtt_version.is_some()
                        && (info.mqtt_topic.is_some() || side.packets >= 8 || refused)
                } else {
                    full || info.mqtt_connack.is_some()
                }
            }
            None => false,
        };
        if read {
            self.give_up(i);
            self.newly_read |= 1 << i;
        }
    }

    /// What reading each side read since the last call said, for the host that
    /// opened the flow (to port `port`).
    pub fn take_read(&mut self, port: u16, out: &mut impl FnMut(AppObs)) {
        for i in 0..2 {
            if self.newly_read & (1 << i) == 0 {
                continue;
            }
            let info = self.info().unwrap_or_default();
            let anomalies = info.anomalies.saturating_sub(self.reported_anomalies);
            self.reported_anomalies = info.anomalies;
            out(observation(&info, i == 0, port, anomalies));
        }
        self.newly_read = 0;
        // Anomalies met while no side completed (a side that never will, such
        // as a client that breaks the protocol and is cut off) and login
        // outcomes: counted as they come, in one observation.
        let anomalies = self.anomaly_count();
        let logins = (self.logins.failures, self.logins.successes);
        if anomalies > self.reported_anomalies || logins != self.reported_logins {
            let (f0, s0) = self.reported_logins;
            out(AppObs {
                client_side: false,
                protocol: self.info.protocol.unwrap_or("").to_string(),
                anomalies: anomalies.saturating_sub(self.reported_anomalies),
                login_failures: logins.0.saturating_sub(f0),
                login_successes: logins.1.saturating_sub(s0),
                ..AppObs::default()
            });
            self.reported_anomalies = anomalies;
            self.reported_logins = logins;
        }
    }

    /// Anomalies so far, as [`AppState::info`] counts them.
    fn anomaly_count(&self) -> u32 {
        self.info.anomalies
            + self.sides.iter().map(Prefix::anomalies).sum::<u32>()
            + self.mqtt_violations.iter().sum::<u32>()
    }

    fn give_up(&mut self, i: usize) {
        self.done[i] = true;
        self.sides[i].data = Vec::new();
    }

    /// The flow's application metadata, when anything was recognised or went
    /// wrong.
    pub fn info(&self) -> Option<AppInfo> {
        let mut info = self.info.clone();
        // A side whose message never completed: what there is of it.
        if self.protocol == Some(Protocol::Http) {
            for (i, side) in self.sides.iter().enumerate() {
                if !self.done[i] && !side.data.is_empty() {
                    let _ = if i == 0 {
                        http::lenient_request(&side.data, &mut info)
                    } else {
                        http::lenient_response(&side.data, &mut info)
                    };
                }
            }
        }
        info.anomalies = self.anomaly_count();
        if self.logins.attempts > 0 || self.logins.user.is_some() {
            info.login_user = self.logins.user.clone();
            info.login_attempts = Some(self.logins.attempts);
            info.login_failures = Some(self.logins.failures);
        }
        (info.protocol.is_some() || info.anomalies > 0).then_some(info)
    }
}

/// The ports a protocol is usually served on.
fn usual_port(protocol: &str, port: u16) -> bool {
    match protocol {
        "http" => matches!(port, 80 | 8080 | 8000 | 8008 | 8888 | 3128),
        "tls" => matches!(
            port,
            443 | 8443 | 465 | 563 | 636 | 853 | 993 | 995 | 5061 | 8883
        ),
        "ssh" => port == 22,
        "smtp" => matches!(port, 25 | 465 | 587),
        "ftp" => port == 21,
        "pop3" => port == 110,
        "imap" => port == 143,
        "mqtt" => port == 1883,
        "telnet" => port == 23,
        _ => true,
    }
}

/// Whether an HTTP Host header names an IP address (with or without a port).
fn numeric_host(host: &str) -> bool {
    let h = host.trim();
    if let Some(inner) = h.strip_prefix('[') {
        return inner
            .split(']')
            .next()
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = h.rsplit_once(':').map_or(h, |(n, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            n
        } else {
            h
        }
    });
    name.parse::<std::net::IpAddr>().is_ok()
}

/// Content types and URI endings of executables.
fn executable(info: &AppInfo) -> bool {
    const TYPES: &[&str] = &[
        "application/x-dosexec",
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-executable",
        "application/x-elf",
        "application/vnd.microsoft.portable-executable",
        "application/x-sharedlib",
    ];
    const ENDINGS: &[&str] = &[".exe", ".dll", ".scr", ".msi", ".ps1", ".hta", ".vbs"];
    let ct = info
        .http_content_type
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let path = info
        .http_uri
        .as_deref()
        .unwrap_or("")
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    TYPES.iter().any(|t| ct.starts_with(t)) || ENDINGS.iter().any(|e| path.ends_with(e))
}

/// MD5 of `text` as 32 lowercase hex digits: how JA3, JA3S and HASSH are
/// written.
fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    format!("{:x}", Md5::digest(text.as_bytes()))
}

fn hash(s: Option<&str>) -> u64 {
    s.map_or(0, |s| amoskys_schemas::stable_hash(s).max(1))
}

/// The domain keys of the TLS server name and of the HTTP host (without its
/// port), where they are names.
fn indicator_domains(info: &AppInfo) -> Vec<u64> {
    let host = info
        .http_host
        .as_deref()
        .filter(|h| !numeric_host(h))
        .map(|h| {
            // A name with a port: the name.
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(n, _)| n)
        });
    [info.tls_sni.as_deref(), host]
        .into_iter()
        .flatten()
        .flat_map(|n| amoskys_schemas::domain_keys(n.as_bytes()))
        .filter(|k| *k != 0)
        .collect()
}

/// The fingerprint keys of one side: JA3, JA4 and user agent from the
/// opener's, JA3S from the responder's (a JA3 or JA3S also as a bare MD5).
fn indicator_prints(info: &AppInfo, client_side: bool) -> Vec<u64> {
    let mut out = Vec::new();
    if client_side {
        if let Some(v) = &info.ja3 {
            out.extend([fingerprint_key("ja3", v), fingerprint_key("md5", v)]);
        }
        if let Some(v) = &info.ja4 {
            out.push(fingerprint_key("ja4", v));
        }
        if let Some(v) = &info.http_user_agent {
            out.push(fingerprint_key("ua", v));
        }
    } else if let Some(v) = &info.ja3s {
        out.extend([fingerprint_key("ja3s", v), fingerprint_key("md5", v)]);
    }
    out
}

/// What reading one side said, for the features of the host that opened the
/// flow.
fn observation(info: &AppInfo, client_side: bool, port: u16, anomalies: u32) -> AppObs {
    let protocol = info.protocol.unwrap_or("");
    let http = protocol == "http";
    let numeric = http && info.http_host.as_deref().is_some_and(numeric_host);
    let self_signed = !client_side && info.tls_self_signed == Some(true);
    let ja4 = if client_side {
        hash(info.ja4.as_deref())
    } else {
        0
    };
    AppObs {
        client_side,
        protocol: protocol.to_string(),
        nonstandard_port: !protocol.is_empty() && !usual_port(protocol, port),
        sni: if client_side {
            hash(info.tls_sni.as_deref())
        } else {
            0
        },
        ja4,
        user_agent: if client_side && http {
            hash(info.http_user_agent.as_deref())
        } else {
            0
        },
        no_sni: client_side && ja4 != 0 && info.tls_sni.is_none(),
        http_request: client_side && http && info.http_method.is_some(),
        numeric_host: client_side && numeric,
        exploit: client_side
            && http
            && [&info.http_uri, &info.http_host, &info.http_user_agent]
                .iter()
                .any(|v| v.as_deref().is_some_and(has_exploit_marker)),
        executable_from_numeric_host: !client_side && numeric && executable(info),
        mqtt_auth_failed: !client_side
            && protocol == "mqtt"
            && matches!(info.mqtt_connack, Some(4 | 5 | 134 | 135)),
        self_signed,
        // Direct TLS only: mail servers meet self-signed certificates without
        // a server name all the time after STARTTLS.
        c2_traits: self_signed
            && protocol == "tls"
            && (info.tls_sni.is_none() || !usual_port(protocol, port)),
        domains: if client_side {
            indicator_domains(info)
        } else {
            Vec::new()
        },
        prints: indicator_prints(info, client_side),
        login_failures: 0,
        login_successes: 0,
        anomalies,
        rare_ja4: false,
        rare_ja4_traits: false,
    }
}

#[cfg(test)]
mod tests;
