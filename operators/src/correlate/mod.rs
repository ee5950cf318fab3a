//! Evidence joined across sources and entities, with differential dataflow.
//!
//! Two things are kept as differential collections, keyed so that a join finds
//! what belongs together:
//!
//! - **Incidents.** Per entity and window, evidence from the syslog features
//!   (failed logins as the remote address) is joined with evidence from the
//!   packet features (connections to login services) on `(entity, window)`; the
//!   hosts the entity opened login connections to in that window are joined on
//!   `(target, window)` with SNMP evidence about them (processor load). One
//!   incident per entity names every piece; evidence of the same entity within
//!   `gap_panes` of the last is the same incident.
//! - **Threat intelligence.** Indicators (IP addresses, networks, domains) are a
//!   collection fed from a file that is re-read when it changes: an added line is
//!   an insertion, a removed one a retraction, so matches start and stop without a
//!   restart. Each window's contacts (peers in packets, names asked in DNS
//!   queries, remote addresses in logs) are joined with it on the indicator key.
//!
//! Every input update is retracted a few panes after it is made (a contact one
//! pane after), so the joins' state holds only the recent windows; only
//! insertions raise alerts. An indicator added or removed while the job runs
//! takes effect from the next 30 s pane of event time.
//!
//! This file holds what both share: the settings, the evidence collections,
//! the retraction of old updates, the contacts read from packets and the
//! operator that turns join outputs into alerts. incidents.rs and intel.rs hold
//! the rest of each.

use crate::features::LOGIN_PORTS;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{
    Addr, Alert, Entity, EventRow, FeatureDef, FeatureRow, Packet, Record, Severity, TcpFlags,
    pane_of,
};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::input::InputSession;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::{Capability, Operator};

use crate::detect::{DetectCounters, alert_id};
use crate::occurrence::Occurrences;
use crate::{Map, Set};

mod incidents;
mod intel;

use incidents::{Piece, incidents};
pub use intel::{Indicator, IndicatorKey, IntelFeed, IntelSettings, IntelShared, parse_indicators};
use intel::{Via, app_contacts, event_contacts, intel_alerts};

/// Panes an input update stays in the joins before it is retracted: rows of a
/// window come at most a pane after the packets of its last pane.
const HOLD_PANES: u64 = 4;

/// What flows.toml sets of the cross-source incident (`[correlation]`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationSettings {
    pub enabled: bool,
    pub severity: Severity,
    /// Failed logins logged for the remote address in a window (syslog).
    pub login_failures: f64,
    /// Connections to login services from it in the same window (packets).
    pub login_connections: f64,
    /// Processor load (%) of a host it connected to, from SNMP: extra evidence.
    pub target_cpu: f64,
    /// Evidence no more than this many panes after the last is the same
    /// incident: `incident_gap`, a duration of at least one pane.
    #[serde(rename = "incident_gap", deserialize_with = "panes")]
    pub gap_panes: u64,
}

/// A duration of at least one pane, in panes.
fn panes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let gap = amoskys_schemas::values::duration(d)?;
    let hop = amoskys_schemas::HOP_SECONDS as u64;
    if gap.as_secs() < hop {
        return Err(serde::de::Error::custom(format!(
            "incident_gap must be at least {hop}s (one pane)"
        )));
    }
    Ok(gap.as_secs() / hop)
}

impl CorrelationSettings {
    /// The thresholds must be numbers above 0: a clear reason when one is not.
    pub fn check(&self) -> Result<(), String> {
        for (k, v) in [
            ("login_failures", self.login_failures),
            ("login_connections", self.login_connections),
            ("target_cpu", self.target_cpu),
        ] {
            if !v.is_finite() || v < 1e-9 {
                return Err(format!("{k} = {v}: must be a number above 0"));
            }
        }
        Ok(())
    }
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            enabled: true,
            severity: Severity::Critical,
            login_failures: 3.0,
            login_connections: 3.0,
            target_cpu: 80.0,
            // 4 hours: an address that comes back within hours is the same campaign.
            gap_panes: 480,
        }
    }
}

/// The Markdown of docs/DETECTIONS.md about the joins.
pub fn markdown() -> String {
    let d = CorrelationSettings::default();
    format!(
        "## `{INCIDENT}` (cross-source)\n\n\
         Severity **{sev}**; sources: syslog, pcap (and snmp when it has something to say).\n\n\
         Evidence about one address from different sources, joined on the address and the \
         window with differential dataflow: failed logins logged by the hosts it tried \
         (`auth_failures_as_remote` from syslog) and connections from it to login services \
         (FTP, SSH, Telnet, RDP: `auth_conn_attempts_out` from packets), in the same window. \
         The hosts it opened those connections to are joined, in turn, with their own SNMP \
         features: a target whose processor load (`snmp_hr_processor_load_mean`) is high in \
         that window is named as further evidence, and `snmp` joins the alert's sources. \
         Evidence of the same address within `incident_gap` of the last is the same \
         incident: one alert, raised in its first window, naming every piece (the evidence \
         keys `snmp_hr_processor_load_mean@<target>` carry the targets). The single-source \
         detections (`login_bruteforce_logs`, `login_bruteforce_network`) still fire on \
         their own.\n\n\
         | key | meaning | default |\n|---|---|---|\n\
         | `enabled` | run it | {en} |\n\
         | `severity` | of the incident | {sev} |\n\
         | `login_failures` | failed logins logged for the address in the window, at least | {lf} |\n\
         | `login_connections` | login connections from it in the window, at least | {lc} |\n\
         | `target_cpu` | processor load (%) of a target named as evidence, at least | {tc} |\n\
         | `incident_gap` | evidence within this long of the last is the same incident | {gap} h |\n\n\
         ```toml\n[correlation]\nlogin_failures = 5\nincident_gap = \"1h\"\n```\n\n\
         ## `{INTEL}` (threat intelligence)\n\n\
         Severity **high** by default; sources: pcap and syslog.\n\n\
         Indicators from a file, one per line: an IP address (`198.51.100.7`), a network \
         (`198.51.100.0/24`, `2001:db8::/32`), a domain (`evil.example`), or a fingerprint: \
         `ja3:` and a JA3, `ja3s:` and a JA3S, `ja4:` and a JA4, `ua:` and a user agent \
         (compared whole, case-insensitively); a bare 32-digit MD5 matches a JA3 or a JA3S, \
         a bare JA4 a JA4. `#` starts a comment. They are held as a differential-dataflow collection; the file is checked \
         every `reload` and, when it changed, re-read: lines added are inserted and lines \
         removed retracted, so matches start and stop without a restart, from the next 30 s \
         pane of event time. A line that is none of these is skipped and counted \
         (`amoskys_threat_intel_bad_lines`; `validate` refuses the file). Matched: the \
         peers of every packet (the alert names the host that talked to the indicator), \
         the names asked in DNS queries, TLS server names (SNI) and HTTP `Host` headers \
         (a domain matches itself and its subdomains, for indicators of up to three \
         labels; longer ones match exactly), the JA3, JA4 and user agent of the TLS \
         and HTTP clients and the JA3S of the servers (docs/APPLICATION.md; the alert \
         names the host that opened the connection), and the remote addresses of \
         authentication log lines (the alert names the host that logged them). Matches of one host and one indicator in consecutive panes are one alert, \
         whose window is the pane of the first match, with the packets, queries or lines \
         as evidence.\n\n\
         ```toml\n[threat_intel]\nfile = \"/etc/amoskys/indicators.txt\"\n\
         severity = \"high\"   # default\nreload = \"1s\"       # how often the file is checked\n```\n",
        sev = d.severity,
        en = d.enabled,
        lf = d.login_failures,
        lc = d.login_connections,
        tc = d.target_cpu,
        gap = d.gap_panes / 120,
    )
}

/// The incident's name in the `alerts` table.
pub const INCIDENT: &str = "bruteforce_incident";
/// The threat-intelligence detection's name.
pub const INTEL: &str = "threat_intel_match";

/// Who was in contact with a possible indicator, in which pane, and how.
type ContactOf = (Entity, u64, Via);
/// `(indicator key, contact)`, with the number of packets, queries or lines as
/// the difference.
type Contact = (IndicatorKey, ContactOf);
/// `((source, window), target)` of a connection to a login service.
type LoginContact = ((Entity, u64), Entity);
/// `(kind, (entity, window), value bits)`: one threshold a feature row passed.
type EvidenceOf = (u8, (Entity, u64), u64);
/// Per entity and window: the attacker's evidence, and the busy hosts it reached.
type IncidentWindow = (Option<(f64, f64)>, Vec<(Entity, f64)>);
/// A stream of data with counts, at capability times.
type Counted<'s, D> = Stream<'s, u64, Vec<(D, isize)>>;
/// Updates waiting for their time to complete, with a capability for it.
type Pending<D> = BTreeMap<u64, (Capability<u64>, Vec<(D, isize)>)>;

/// Retracts every update `panes` later.
fn transient<'s, D>(c: VecCollection<'s, u64, D>, panes: u64) -> VecCollection<'s, u64, D>
where
    D: differential_dataflow::Data,
{
    c.clone().concat(c.negate().delay(move |t| t + panes))
}

/// A stream of `(data, count)` at capability times into a collection.
fn counted<'s, D>(s: Stream<'s, u64, Vec<(D, isize)>>) -> VecCollection<'s, u64, D>
where
    D: Clone + 'static,
{
    s.unary::<CapacityContainerBuilder<Vec<(D, u64, isize)>>, _, _, _>(
        Pipeline,
        "AtTime",
        |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(&t) = cap.least() else { return };
                    let mut v: Vec<(D, u64, isize)> =
                        data.drain(..).map(|(d, n)| (d, t, n)).collect();
                    output.session(&cap).give_container(&mut v);
                });
            }
        },
    )
    .as_collection()
}

/// Per input batch: the login connections (SYN to a login port) as
/// `((source, window), target)`, and, when `intel` is given, every address pair
/// and DNS query as contacts to look up.
fn packet_contacts<'s>(
    packets: Stream<'s, u64, Vec<Packet>>,
    intel: Option<Arc<IntelShared>>,
) -> (Counted<'s, LoginContact>, Counted<'s, Contact>) {
    use timely::dataflow::operators::generic::OutputBuilder;
    use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
    let mut builder = OperatorBuilder::new("Contacts".to_owned(), packets.scope());
    let mut input = builder.new_input(packets, Pipeline);
    let (logins_out, logins) = builder.new_output();
    let (intel_out, contacts) = builder.new_output();
    let mut logins_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(logins_out);
    let mut intel_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(intel_out);
    builder.build(move |_| {
        let mut keys = Vec::new();
        move |_frontiers| {
            let mut logins_h = logins_out.activate();
            let mut intel_h = intel_out.activate();
            input.for_each(|cap, data| {
                let mut pairs: Map<(Addr, Addr, u64), isize> = Map::default();
                let mut names: Map<(Addr, u64, u64), isize> = Map::default();
                let mut login: Set<(Addr, Addr, u64)> = Set::default();
                for p in data.iter() {
                    let pane = pane_of(p.ts_ns);
                    if LOGIN_PORTS.contains(&p.dport)
                        && p.has_flag(TcpFlags::SYN)
                        && !p.has_flag(TcpFlags::ACK)
                    {
                        login.insert((p.src, p.dst, pane));
                    }
                    if intel.is_some() {
                        *pairs.entry((p.src, p.dst, pane)).or_default() += 1;
                        *pairs.entry((p.dst, p.src, pane)).or_default() += 1;
                        if p.dns.kind == amoskys_schemas::DnsInfo::QUERY {
                            for k in p.dns.domain_keys.iter().filter(|k| **k != 0) {
                                *names.entry((p.src, *k, pane)).or_default() += 1;
                            }
                        }
                    }
                }
                let mut out: Vec<(LoginContact, isize)> = Vec::new();
                for (src, dst, pane) in login {
                    for w in [pane.saturating_sub(1), pane] {
                        out.push((((Entity::Ip(src), w), Entity::Ip(dst)), 1));
                    }
                }
                if !out.is_empty() {
                    logins_h.session(&cap).give_container(&mut out);
                }
                if let Some(sh) = &intel {
                    let mut v: Vec<(Contact, isize)> = Vec::new();
                    for ((x, peer, pane), n) in pairs {
                        keys.clear();
                        sh.keys_of(peer, &mut keys);
                        for k in &keys {
                            v.push(((*k, (Entity::Ip(x), pane, Via::Packets(peer))), n));
                        }
                    }
                    for ((x, k, pane), n) in names {
                        v.push((
                            (IndicatorKey::Domain(k), (Entity::Ip(x), pane, Via::Dns)),
                            n,
                        ));
                    }
                    if !v.is_empty() {
                        intel_h.session(&cap).give_container(&mut v);
                    }
                }
            });
        }
    });
    (logins, contacts)
}

/// The alerts of the cross-source incidents and of indicator matches.
pub struct Correlation {
    pub settings: CorrelationSettings,
    pub intel: Option<(IntelSettings, Arc<IntelShared>)>,
    pub counters: Arc<crate::detect::DetectCounters>,
}

impl Correlation {
    /// Builds the joins over feature rows, packets and (if any) events. Returns
    /// the alerts, and on every worker an indicator feed that worker 0 keeps
    /// feeding and the others drop.
    pub fn build<'s>(
        &self,
        defs: &[FeatureDef],
        rows: Stream<'s, u64, Vec<FeatureRow>>,
        packets: Stream<'s, u64, Vec<Packet>>,
        events: Option<Stream<'s, u64, Vec<EventRow>>>,
        app: Stream<'s, u64, Vec<crate::features::EventObs>>,
    ) -> (Stream<'s, u64, Vec<Alert>>, Option<IntelFeed>) {
        let col = |n: &str| defs.iter().position(|d| d.name == n);
        let (fail_c, conn_c, cpu_c) = (
            col("auth_failures_as_remote"),
            col("auth_conn_attempts_out"),
            col("snmp_hr_processor_load_mean"),
        );
        let s = self.settings.clone();
        let (logins, contacts) = packet_contacts(packets, self.intel.as_ref().map(|i| i.1.clone()));
        let scope = rows.scope();
        let mut alerts: Vec<Stream<'s, u64, Vec<Alert>>> = Vec::new();
        if s.enabled
            && let (Some(fc), Some(cc), Some(uc)) = (fail_c, conn_c, cpu_c)
        {
            let evidence = rows
                .clone()
                .unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
                    Pipeline,
                    "Evidence",
                    move |_cap, _info| {
                        move |input, output| {
                            input.for_each(|cap, data| {
                                let mut v: Vec<(EvidenceOf, isize)> = Vec::new();
                                for r in data.iter() {
                                    let key = (r.entity.clone(), r.window);
                                    for (i, c, min) in [
                                        (0u8, fc, s.login_failures),
                                        (1, cc, s.login_connections),
                                        (2, uc, s.target_cpu),
                                    ] {
                                        if let Some(x) = r.get(c).filter(|x| *x >= min) {
                                            v.push(((i, key.clone(), x.to_bits()), 1));
                                        }
                                    }
                                }
                                if !v.is_empty() {
                                    output.session(&cap).give_container(&mut v);
                                }
                            });
                        }
                    },
                );
            let evidence = transient(counted(evidence), HOLD_PANES);
            let of = |i: u8| {
                evidence
                    .clone()
                    .filter(move |(k, _, _)| *k == i)
                    .map(|(_, key, v)| (key, v))
            };
            let (failed, conns, cpu) = (of(0), of(1), of(2));
            let attacker = failed.join(conns);
            let logins = transient(counted(logins), HOLD_PANES);
            let targets = attacker
                .clone()
                .map(|(k, _)| (k, ()))
                .join(logins)
                .map(|((x, w), ((), t))| ((t, w), x))
                .join(cpu)
                .map(|((t, w), (x, load))| (x, (w, Piece::Target(t, load))));
            let pieces = attacker
                .map(|((x, w), (f, c))| (x, (w, Piece::Attacker(f, c))))
                .concat(targets);
            alerts.push(incidents(
                pieces,
                self.settings.clone(),
                self.counters.clone(),
            ));
        }
        let mut feed = None;
        if let Some((is, shared)) = &self.intel {
            let mut session = InputSession::<u64, Indicator, isize>::new();
            let indicators = session.to_collection(scope);
            let mut all = counted(contacts);
            if let Some(ev) = events {
                all = all.concat(counted(event_contacts(ev, shared.clone())));
            }
            all = all.concat(counted(app_contacts(app)));
            // A contact lives one pane: it meets the indicators of its own time only.
            let matched = transient(all, 1).join(indicators);
            alerts.push(intel_alerts(
                matched,
                is.severity,
                shared.clone(),
                self.counters.clone(),
            ));
            feed = Some(IntelFeed {
                path: is.file.clone(),
                session,
                current: Vec::new(),
                stamp: None,
                loaded: false,
                shared: shared.clone(),
                last_check: std::time::Instant::now() - std::time::Duration::from_secs(3600),
            });
        }
        let mut it = alerts.into_iter();
        let out = match it.next() {
            Some(first) => {
                use timely::dataflow::operators::Concat;
                it.fold(first, |a, b| a.concat(b))
            }
            None => {
                use timely::dataflow::operators::generic::operator::empty;
                empty(scope)
            }
        };
        (out, feed)
    }
}

/// Releases, per complete time, the net insertions of `coll`'s updates, on the
/// worker `route` picks.
fn on_complete<'s, D, F, L>(
    coll: VecCollection<'s, u64, D>,
    name: &str,
    route: F,
    counters: Arc<DetectCounters>,
    mut logic: L,
) -> Stream<'s, u64, Vec<Alert>>
where
    D: differential_dataflow::ExchangeData,
    F: Fn(&D) -> u64 + 'static,
    L: FnMut(Vec<(D, isize)>, &mut Vec<Alert>) + 'static,
{
    let pact = Exchange::new(move |u: &(D, u64, isize)| route(&u.0));
    coll.inner
        .unary_frontier::<CapacityContainerBuilder<Vec<Alert>>, _, _, _>(
            pact,
            name,
            move |_cap, _info| {
                let mut pending: Pending<D> = BTreeMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each(|cap, data| {
                        for (d, t, r) in data.drain(..) {
                            pending
                                .entry(t)
                                .or_insert_with(|| (cap.delayed(&t, port), Vec::new()))
                                .1
                                .push((d, r));
                        }
                    });
                    while let Some(e) = pending.first_entry() {
                        if frontier.less_equal(e.key()) {
                            break;
                        }
                        let (_, (cap, mut upds)) = e.remove_entry();
                        consolidate(&mut upds);
                        upds.retain(|(_, r)| *r > 0);
                        let mut out = Vec::new();
                        logic(upds, &mut out);
                        counters.emit(&mut out, |v| output.session(&cap).give_container(v));
                    }
                }
            },
        )
}

#[cfg(test)]
mod tests;
