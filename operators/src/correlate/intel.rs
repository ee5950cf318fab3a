//! Threat intelligence: indicators read from a file and re-read when it
//! changes, the contacts of logs with them, and the alerts of their matches.

use super::*;

/// What an indicator matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IndicatorKey {
    Ip(Addr),
    /// A network: its address with the host bits cleared, and the prefix length
    /// in the 128-bit form (an IPv4 /24 is 120).
    Net(Addr, u8),
    /// [`amoskys_schemas::domain_key`] of a domain name.
    Domain(u64),
    /// [`crate::features::fingerprint_key`] of a JA3, JA3S, JA4 or user agent.
    Print(u64),
}

/// One line of an indicator file, parsed: the key and the line's text.
pub type Indicator = (IndicatorKey, String);

/// Parses an indicator file: one IP address, network (CIDR), domain name or
/// fingerprint per line (`ja3:`, `ja3s:`, `ja4:` and `ua:` before a JA3, JA3S,
/// JA4 or user agent; a bare 32-digit MD5 is a JA3 or JA3S, a bare JA4 a JA4);
/// `#` starts a comment. Returns the indicators and, for each line that is
/// none of these, its number and why.
pub fn parse_indicators(text: &str) -> (Vec<Indicator>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        match parse_indicator(t) {
            Ok(k) => out.push((k, t.to_ascii_lowercase())),
            Err(e) => bad.push((n + 1, e)),
        }
    }
    out.sort();
    out.dedup();
    (out, bad)
}

/// Whether `t` has the form of a JA4: `t13d1516h2_8daaf6152771_b186095e22b6`.
fn is_ja4(t: &str) -> bool {
    let parts: Vec<&str> = t.split('_').collect();
    let hex = |p: &str| p.len() == 12 && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 3
        && parts[0].len() == 10
        && parts[0].is_ascii()
        && matches!(parts[0].as_bytes()[0], b't' | b'q' | b'd')
        && hex(parts[1])
        && hex(parts[2])
}

fn parse_indicator(t: &str) -> Result<IndicatorKey, String> {
    use crate::features::fingerprint_key;
    let md5 = |v: &str| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some((kind, v)) = t.split_once(':')
        && matches!(
            kind.to_ascii_lowercase().as_str(),
            "ja3" | "ja3s" | "ja4" | "ua"
        )
    {
        let kind = kind.to_ascii_lowercase();
        let v = v.trim();
        let ok = match kind.as_str() {
            "ja3" | "ja3s" => md5(v),
            "ja4" => is_ja4(&v.to_ascii_lowercase()),
            _ => !v.is_empty(),
        };
        if !ok {
            return Err(format!("{v:?} is not a {}", kind.to_ascii_uppercase()));
        }
        return Ok(IndicatorKey::Print(fingerprint_key(&kind, v)));
    }
    if md5(t) {
        return Ok(IndicatorKey::Print(fingerprint_key("md5", t)));
    }
    if is_ja4(&t.to_ascii_lowercase()) {
        return Ok(IndicatorKey::Print(fingerprint_key("ja4", t)));
    }
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Ok(IndicatorKey::Ip(Addr::from(ip)));
    }
    if let Some((a, l)) = t.split_once('/') {
        let ip: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("prefix length {l:?} is not 0..={max}"))?;
        let len = if ip.is_ipv4() { len + 96 } else { len };
        return Ok(if len == 128 {
            IndicatorKey::Ip(Addr::from(ip))
        } else {
            IndicatorKey::Net(Addr::from(ip).masked(len), len)
        });
    }
    let name = t.strip_suffix('.').unwrap_or(t);
    let ok = name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // A top-level domain is never all digits: that is a mistyped address.
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(format!(
            "{t:?} is not an IP address, a network (a.b.c.d/len), a domain name or a \
             fingerprint (ja3:, ja3s:, ja4:, ua:)"
        ));
    }
    Ok(IndicatorKey::Domain(amoskys_schemas::domain_key(
        name.as_bytes(),
    )))
}

/// The prefix lengths the loaded networks use, so that an address is looked up
/// only under those. Shared by the file loader and the dataflow.
#[derive(Debug, Default)]
pub struct IntelShared {
    lengths: [AtomicU64; 3],
    /// Indicators loaded now.
    pub indicators: AtomicU64,
    /// Times the file was (re)loaded.
    pub loads: AtomicU64,
    /// Lines that were not indicators, in the last load.
    pub bad_lines: AtomicU64,
    /// Alerts raised by indicator matches.
    pub alerts: AtomicU64,
}

impl IntelShared {
    pub(super) fn set_lengths(&self, ind: &[Indicator]) {
        let mut bits = [0u64; 3];
        for (k, _) in ind {
            if let IndicatorKey::Net(_, l) = k {
                bits[usize::from(*l / 64)] |= 1 << (l % 64);
            }
        }
        for (a, b) in self.lengths.iter().zip(bits) {
            a.fetch_or(b, Ordering::Relaxed);
        }
    }

    pub(super) fn keys_of(&self, a: Addr, out: &mut Vec<IndicatorKey>) {
        out.push(IndicatorKey::Ip(a));
        for (i, w) in self.lengths.iter().enumerate() {
            let mut bits = w.load(Ordering::Relaxed);
            while bits != 0 {
                let l = (i * 64) as u8 + bits.trailing_zeros() as u8;
                bits &= bits - 1;
                out.push(IndicatorKey::Net(a.masked(l), l));
            }
        }
    }
}

/// Keeps the indicator collection equal to the file's lines: worker 0 calls
/// [`IntelFeed::poll`] as it goes, and [`IntelFeed::advance`] with the time.
pub struct IntelFeed {
    pub(super) path: std::path::PathBuf,
    pub(super) session: InputSession<u64, Indicator, isize>,
    pub(super) current: Vec<Indicator>,
    pub(super) stamp: Option<(std::time::SystemTime, u64)>,
    /// Whether the first load is done: it applies at once, later ones from the
    /// next pane.
    pub(super) loaded: bool,
    pub(super) shared: Arc<IntelShared>,
    pub(super) last_check: std::time::Instant,
}

impl IntelFeed {
    /// Reads the file when it changed (by modification time and size, checked at
    /// most every `every`) and applies the difference. A file that cannot be read
    /// keeps the indicators loaded before, with a warning.
    pub fn poll(&mut self, every: std::time::Duration) {
        if self.last_check.elapsed() < every {
            return;
        }
        self.last_check = std::time::Instant::now();
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_none() || stamp == self.stamp {
            if stamp.is_none() && self.stamp.is_some() {
                tracing::warn!(path = %self.path.display(), "indicator file is gone; keeping the indicators loaded");
                self.stamp = None;
            }
            return;
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the indicator file; keeping the indicators loaded");
                return;
            }
        };
        self.stamp = stamp;
        let (new, bad) = parse_indicators(&text);
        for (line, why) in bad.iter().take(5) {
            tracing::warn!(path = %self.path.display(), line, "{why}");
        }
        self.shared.set_lengths(&new);
        // A change made while the job runs applies from the next pane: contacts
        // already in at this time are not matched against it (nor stop matching).
        if self.loaded {
            let next = *self.session.time() + 1;
            self.session.advance_to(next);
        }
        self.loaded = true;
        let old: std::collections::BTreeSet<&Indicator> = self.current.iter().collect();
        let now: std::collections::BTreeSet<&Indicator> = new.iter().collect();
        for i in old.difference(&now) {
            self.session.remove((*i).clone());
        }
        for i in now.difference(&old) {
            self.session.insert((*i).clone());
        }
        self.session.flush();
        let sh = &self.shared;
        sh.indicators.store(new.len() as u64, Ordering::Relaxed);
        sh.bad_lines.store(bad.len() as u64, Ordering::Relaxed);
        sh.loads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(path = %self.path.display(), indicators = new.len(), bad_lines = bad.len(), "indicators loaded");
        self.current = new;
    }

    /// Moves the collection's time on to `time` (the input's).
    pub fn advance(&mut self, time: u64) {
        if time > *self.session.time() {
            self.session.advance_to(time);
            self.session.flush();
        }
    }
}

/// `[threat_intel]`: indicators matched against what the sources see.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelSettings {
    /// One IP address, network (CIDR) or domain per line; `#` comments. Re-read
    /// when it changes.
    pub file: std::path::PathBuf,
    #[serde(default = "high")]
    pub severity: Severity,
    /// How often the file is checked for changes.
    #[serde(default = "one_second")]
    pub reload: amoskys_schemas::values::PositiveSecs,
}

fn high() -> Severity {
    Severity::High
}

fn one_second() -> amoskys_schemas::values::PositiveSecs {
    use amoskys_schemas::values::{PositiveSecs, Secs};
    PositiveSecs(Secs::from_secs(1))
}

/// Where a contact with an indicator was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum Via {
    /// Packets exchanged with the address.
    Packets(Addr),
    /// DNS queries for a name under the domain.
    Dns,
    /// Log lines naming the address (the remote of an authentication message).
    Logs(Addr),
    /// TLS or HTTP sessions carrying the name or fingerprint, with this peer.
    App,
}

/// Server names, HTTP hosts and fingerprints in what the host's flows said
/// at the application layer, as contacts of the host that opened them.
pub(super) fn app_contacts<'s>(
    app: Stream<'s, u64, Vec<crate::features::EventObs>>,
) -> Stream<'s, u64, Vec<(Contact, isize)>> {
    use crate::features::EventWhat;
    app.unary::<CapacityContainerBuilder<Vec<(Contact, isize)>>, _, _, _>(
        Pipeline,
        "AppContacts",
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut v = Vec::new();
                    for e in data.iter() {
                        let EventWhat::App(o) = &e.what else { continue };
                        let pane = pane_of(e.ts_ns.max(0));
                        let keys = o.domains.iter().map(|k| IndicatorKey::Domain(*k));
                        let keys = keys.chain(o.prints.iter().map(|k| IndicatorKey::Print(*k)));
                        for k in keys {
                            v.push(((k, (e.entity.clone(), pane, Via::App)), 1));
                        }
                    }
                    if !v.is_empty() {
                        output.session(&cap).give_container(&mut v);
                    }
                });
            }
        },
    )
}

/// Remote addresses named in authentication log lines, as contacts of the host
/// that logged them.
pub(super) fn event_contacts<'s>(
    events: Stream<'s, u64, Vec<EventRow>>,
    intel: Arc<IntelShared>,
) -> Stream<'s, u64, Vec<(Contact, isize)>> {
    events.unary::<CapacityContainerBuilder<Vec<(Contact, isize)>>, _, _, _>(
        Pipeline,
        "LogContacts",
        move |_cap, _info| {
            let mut keys = Vec::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut v = Vec::new();
                    for e in data.iter() {
                        let Record::Syslog(r) = &e.record else {
                            continue;
                        };
                        let (Some(auth), Some(x)) = (&r.auth, e.entity()) else {
                            continue;
                        };
                        let Some(remote) = auth.remote else { continue };
                        let remote = Addr::from(remote);
                        keys.clear();
                        intel.keys_of(remote, &mut keys);
                        let pane = pane_of(r.ts_ns.max(0));
                        for k in &keys {
                            v.push(((*k, (x.clone(), pane, Via::Logs(remote))), 1));
                        }
                    }
                    if !v.is_empty() {
                        output.session(&cap).give_container(&mut v);
                    }
                });
            }
        },
    )
}

pub(super) fn intel_alerts<'s>(
    matched: VecCollection<'s, u64, (IndicatorKey, (ContactOf, String))>,
    severity: Severity,
    shared: Arc<IntelShared>,
    counters: Arc<DetectCounters>,
) -> Stream<'s, u64, Vec<Alert>> {
    // Per (entity, indicator): its open occurrence.
    let mut last: Occurrences<(Entity, String)> = Occurrences::new(1);
    let keyed = matched.map(|(_, ((x, pane, via), text))| (x, pane, text, via));
    on_complete(
        keyed,
        "IndicatorMatches",
        |(x, ..)| x.route_hash(),
        counters,
        move |mut upds, out| {
            upds.sort();
            // Per entity, pane and indicator: how it was seen, and how often.
            let mut by: BTreeMap<(Entity, u64, String), Vec<(Via, isize)>> = BTreeMap::new();
            for ((x, pane, text, via), n) in upds {
                by.entry((x, pane, text)).or_default().push((via, n));
            }
            for ((x, pane, text), seen) in by {
                if !last.starts((x.clone(), text.clone()), pane) {
                    continue;
                }
                let (mut packets, mut queries, mut lines, mut sessions) =
                    (0isize, 0isize, 0isize, 0isize);
                let mut peers: Vec<Addr> = Vec::new();
                for (via, n) in &seen {
                    match via {
                        Via::Packets(a) => {
                            packets += n;
                            peers.push(*a);
                        }
                        Via::Dns => queries += n,
                        Via::Logs(a) => {
                            lines += n;
                            peers.push(*a);
                        }
                        Via::App => sessions += n,
                    }
                }
                peers.sort();
                peers.dedup();
                let mut parts = Vec::new();
                let mut evidence = Vec::new();
                let mut sources = Vec::new();
                let peers_text = peers
                    .iter()
                    .map(Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                if packets > 0 {
                    parts.push(format!("exchanged {packets} packets with {peers_text}"));
                    evidence.push(("packets".to_string(), packets as f64));
                    sources.push("pcap".to_string());
                }
                if queries > 0 {
                    parts.push(format!(
                        "asked {queries} DNS quer{} for names under it",
                        if queries == 1 { "y" } else { "ies" }
                    ));
                    evidence.push(("dns_queries".to_string(), queries as f64));
                    if !sources.iter().any(|s| s == "pcap") {
                        sources.push("pcap".to_string());
                    }
                }
                if sessions > 0 {
                    parts.push(format!(
                        "named it or showed its fingerprint in {sessions} TLS, HTTP or SSH exchange{}",
                        if sessions == 1 { "" } else { "s" }
                    ));
                    evidence.push(("app_sessions".to_string(), sessions as f64));
                    if !sources.iter().any(|s| s == "pcap") {
                        sources.push("pcap".to_string());
                    }
                }
                if lines > 0 {
                    parts.push(format!(
                        "logged {lines} authentication message{} from {peers_text}",
                        if lines == 1 { "" } else { "s" }
                    ));
                    evidence.push(("log_lines".to_string(), lines as f64));
                    sources.push("syslog".to_string());
                }
                shared.alerts.fetch_add(1, Ordering::Relaxed);
                // The window that starts at the pane of the match.
                out.push(Alert {
                    id: alert_id(&format!("{INTEL}\u{0}{text}"), &x, pane),
                    rule: INTEL.into(),
                    severity,
                    summary: format!("{x} {} (indicator {text})", parts.join("; ")),
                    entity: x,
                    window: pane,
                    sources,
                    evidence,
                });
            }
        },
    )
}
