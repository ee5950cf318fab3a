//! Feature families of the log and device sources: syslog, SNMP, MQTT.
//!
//! Records become [`EventObs`] observations keyed by the entity they are evidence
//! for: a syslog message counts for the host that sent it, and an authentication
//! message also for the remote address it names (as `*_as_remote`); an SNMP poll
//! for its agent; an MQTT message for its device. A family is null for an entity
//! its source did not see in the window.

use amoskys_schemas::{
    Addr, DeviceKind, Entity, EventRow, FeatureDef, FeatureDtype, Record, WINDOW_SECONDS,
};
use serde::{Deserialize, Serialize};

use crate::{Map, Moments, Set};

use super::auth::{AUTH_FEATURES, AUTH_KINDS, AuthObs, FAIL_SLOTS, auth_code, fail_slot};
use super::entropy_bits;

const W: f64 = WINDOW_SECONDS as f64;

/// How the instances of a per-row SNMP metric (interfaces, cores, disks) combine
/// into one value per poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Sum,
    Mean,
    /// How many instances read 1 (ifOperStatus up).
    CountOnes,
}

/// One SNMP health metric: its name in `events.metric`, unit, meaning, and how its
/// instances combine.
#[derive(Clone, Copy, Debug)]
pub struct SnmpMetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub combine: Combine,
}

macro_rules! snmp_metrics {
    ($( ($name:literal, $unit:literal, $combine:ident, $desc:literal) ),* $(,)?) => {
        /// The SNMP health metrics, in feature order.
        pub const SNMP_METRICS: &[SnmpMetricDef] = &[
            $( SnmpMetricDef { name: $name, unit: $unit, description: $desc, combine: Combine::$combine } ),*
        ];
        const SNMP_FEATURES: &[EventFeature] = &snmp_metrics!(@specs 0usize; []; $( ($name, $unit, $desc) )*);
    };
    (@specs $i:expr; [$($done:expr),*]; ($name:literal, $unit:literal, $desc:literal) $($rest:tt)*) => {
        snmp_metrics!(@specs $i + 1; [$($done,)*
            dspec(concat!("snmp_", $name, "_mean"), "snmp", $unit, FeatureDtype::Float,
                concat!("Mean over the window's polls of: ", $desc), SNMP_NULL, snmp_mean::<{ $i }>),
            dspec(concat!("snmp_", $name, "_max"), "snmp", $unit, FeatureDtype::Float,
                concat!("Largest value in the window's polls of: ", $desc), SNMP_NULL, snmp_max::<{ $i }>)
        ]; $($rest)*)
    };
    (@specs $i:expr; [$($done:expr),*];) => { [$($done),*] };
}

const SNMP_NULL: Option<&str> =
    Some("the agent was not polled in the window, or does not have the metric");

snmp_metrics![
    (
        "sys_uptime",
        "s",
        Mean,
        "sysUpTime, seconds since the agent started."
    ),
    (
        "hr_processor_load",
        "percent",
        Mean,
        "hrProcessorLoad, averaged over cores."
    ),
    (
        "hr_memory_size",
        "bytes",
        Sum,
        "hrMemorySize, physical memory."
    ),
    ("hr_storage_ram_used", "bytes", Sum, "hrStorageUsed of RAM."),
    ("hr_storage_ram_size", "bytes", Sum, "hrStorageSize of RAM."),
    (
        "hr_storage_swap_used",
        "bytes",
        Sum,
        "hrStorageUsed of virtual memory (swap)."
    ),
    (
        "hr_storage_swap_size",
        "bytes",
        Sum,
        "hrStorageSize of virtual memory (swap)."
    ),
    (
        "hr_storage_disk_used",
        "bytes",
        Sum,
        "hrStorageUsed of fixed disks, summed."
    ),
    (
        "hr_storage_disk_size",
        "bytes",
        Sum,
        "hrStorageSize of fixed disks, summed."
    ),
    (
        "disk_io_reads",
        "reads/s",
        Sum,
        "UCD diskIOReads rate, summed over devices."
    ),
    (
        "disk_io_writes",
        "writes/s",
        Sum,
        "UCD diskIOWrites rate, summed over devices."
    ),
    (
        "disk_io_read_bytes",
        "bytes/s",
        Sum,
        "UCD diskIONRead rate, summed over devices."
    ),
    (
        "disk_io_written_bytes",
        "bytes/s",
        Sum,
        "UCD diskIONWritten rate, summed over devices."
    ),
    (
        "if_in_octets",
        "bytes/s",
        Sum,
        "IF-MIB in octets rate (ifHCInOctets when present), summed over interfaces."
    ),
    (
        "if_out_octets",
        "bytes/s",
        Sum,
        "IF-MIB out octets rate (ifHCOutOctets when present), summed over interfaces."
    ),
    (
        "if_in_ucast_pkts",
        "packets/s",
        Sum,
        "IF-MIB inbound unicast packets rate, summed over interfaces."
    ),
    (
        "if_out_ucast_pkts",
        "packets/s",
        Sum,
        "IF-MIB outbound unicast packets rate, summed over interfaces."
    ),
    (
        "if_in_errors",
        "packets/s",
        Sum,
        "ifInErrors rate, summed over interfaces."
    ),
    (
        "if_out_errors",
        "packets/s",
        Sum,
        "ifOutErrors rate, summed over interfaces."
    ),
    (
        "if_in_discards",
        "packets/s",
        Sum,
        "ifInDiscards rate, summed over interfaces."
    ),
    (
        "if_out_discards",
        "packets/s",
        Sum,
        "ifOutDiscards rate, summed over interfaces."
    ),
    (
        "if_oper_status",
        "interfaces",
        CountOnes,
        "Interfaces whose ifOperStatus is up(1)."
    ),
    (
        "la_load_1",
        "load",
        Mean,
        "UCD laLoad, 1-minute load average."
    ),
    (
        "la_load_5",
        "load",
        Mean,
        "UCD laLoad, 5-minute load average."
    ),
    (
        "la_load_15",
        "load",
        Mean,
        "UCD laLoad, 15-minute load average."
    ),
    ("mem_total_real", "bytes", Sum, "UCD memTotalReal."),
    ("mem_avail_real", "bytes", Sum, "UCD memAvailReal."),
    ("mem_cached", "bytes", Sum, "UCD memCached."),
    ("mem_buffer", "bytes", Sum, "UCD memBuffer."),
    ("ss_cpu_user", "percent", Mean, "UCD ssCpu user time share."),
    (
        "ss_cpu_system",
        "percent",
        Mean,
        "UCD ssCpu system time share."
    ),
    ("ss_cpu_idle", "percent", Mean, "UCD ssCpu idle time share."),
];

/// Index of an SNMP metric by name.
pub fn snmp_metric_index(name: &str) -> Option<usize> {
    SNMP_METRICS.iter().position(|m| m.name == name)
}

/// What one record says about one entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventWhat {
    /// A syslog message the entity sent; severity 0–7, 8 when unknown.
    Syslog {
        severity: u8,
        /// Facility group: 0 auth/authpriv, 1 kern, 2 daemon, 3 local0–7, 4 other
        /// or none.
        facility: u8,
        /// Hash of the app name (0 without one).
        app: u64,
        /// Hash of the message's template (see [`template_hash`]).
        template: u64,
        auth: Option<AuthObs>,
    },
    /// An authentication message naming the entity as the remote side.
    AuthAsRemote {
        auth: AuthObs,
        reporter: Option<Addr>,
    },
    /// One poll of the entity (an SNMP agent): per metric, its instances combined.
    SnmpPoll {
        values: Vec<(u8, f64)>,
        /// The configured agent (hash of its source section): two agents on
        /// one address (other communities, contexts or SNMP versions, so other
        /// sections) are one entity but two series of polls.
        agent: u64,
    },
    /// One MQTT message about the entity (a device).
    Mqtt {
        bytes: u32,
        topic: u64,
        values: Vec<f64>,
    },
    /// One DHCP message about the entity (a client's hardware address), seen in
    /// packets: its type, and the IP address it came from.
    Dhcp { msg_type: u8, src: Addr },
}

impl EventObs {
    /// The DHCP observation of a packet, if it carries a DHCP message: about the
    /// client's hardware address, whoever sent it.
    pub fn of_dhcp(p: &amoskys_schemas::Packet) -> Option<EventObs> {
        (p.dhcp.msg_type != 0).then(|| EventObs {
            entity: Entity::Name(p.dhcp.client().into()),
            ts_ns: p.ts_ns,
            what: EventWhat::Dhcp {
                msg_type: p.dhcp.msg_type,
                src: p.src,
            },
        })
    }
}

/// One observation for the event windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventObs {
    pub entity: Entity,
    pub ts_ns: i64,
    pub what: EventWhat,
}

/// The template of a syslog message, hashed: its app name and its words, each
/// word (split at whitespace) that contains a digit replaced by a placeholder. So
/// `Failed password for root from 10.0.0.1 port 4242 ssh2` and the same line with
/// another address and port share a template, while another user name does not.
pub fn template_hash(app: Option<&str>, message: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = ahash::RandomState::with_seeds(13, 14, 15, 16).build_hasher();
    h.write(app.unwrap_or("").as_bytes());
    h.write_u8(0);
    for w in message.split_whitespace() {
        if w.bytes().any(|b| b.is_ascii_digit()) {
            h.write(b"<*>");
        } else {
            h.write(w.as_bytes());
        }
        h.write_u8(b' ');
    }
    h.finish()
}

pub(super) fn hash_str(s: &str) -> u64 {
    // Fixed keys: the same user or topic hashes alike on every worker.
    ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(s)
}

/// The facility groups counted apart.
fn facility_group(f: Option<&str>) -> u8 {
    match f {
        Some("auth" | "authpriv") => 0,
        Some("kern") => 1,
        Some("daemon") => 2,
        Some(l) if l.starts_with("local") => 3,
        _ => 4,
    }
}

impl EventObs {
    /// The observations a record gives (none for a record with no entity).
    pub fn of(row: &EventRow, out: &mut Vec<EventObs>) {
        match &row.record {
            Record::Syslog(r) => {
                let auth = r.auth.as_ref().map(|a| AuthObs {
                    kind: auth_code(a.kind),
                    fail: fail_slot(a),
                    user: a.user.as_deref().map(hash_str),
                    remote: a.remote.map(Addr::from),
                    count: a.count.max(1),
                    injection: a.injection,
                });
                let sender = r.sender.map(Addr::from);
                // The remote side: its address, or the name it was logged by.
                let remote = r
                    .auth
                    .as_ref()
                    .and_then(|a| match (a.remote, &a.remote_host) {
                        (Some(ip), _) => Some(Entity::Ip(Addr::from(ip))),
                        (None, Some(h)) => Some(Entity::Name(h.to_ascii_lowercase().into())),
                        _ => None,
                    });
                if let (Some(a), Some(remote)) = (&auth, remote) {
                    out.push(EventObs {
                        entity: remote,
                        ts_ns: r.ts_ns,
                        what: EventWhat::AuthAsRemote {
                            auth: a.clone(),
                            reporter: sender,
                        },
                    });
                }
                if let Some(s) = sender {
                    out.push(EventObs {
                        entity: Entity::Ip(s),
                        ts_ns: r.ts_ns,
                        what: EventWhat::Syslog {
                            severity: r.severity.unwrap_or(8).min(8),
                            facility: facility_group(r.facility),
                            app: r.appname.as_deref().map_or(0, hash_str),
                            template: template_hash(r.appname.as_deref(), &r.message),
                            auth,
                        },
                    });
                }
            }
            Record::Device(d) => {
                let what = match d.kind {
                    DeviceKind::Snmp => {
                        let mut acc: Vec<(u8, f64, u32)> = Vec::new();
                        for s in &d.samples {
                            let (Some(i), Some(v)) = (snmp_metric_index(&s.metric), s.value) else {
                                continue;
                            };
                            if !v.is_finite() {
                                continue;
                            }
                            let c = SNMP_METRICS[i].combine;
                            let v = if c == Combine::CountOnes {
                                f64::from(u8::from(v == 1.0))
                            } else {
                                v
                            };
                            match acc.iter_mut().find(|e| usize::from(e.0) == i) {
                                Some(e) => {
                                    e.1 += v;
                                    e.2 += 1;
                                }
                                None => acc.push((i as u8, v, 1)),
                            }
                        }
                        let values = acc
                            .into_iter()
                            .map(|(i, sum, n)| match SNMP_METRICS[usize::from(i)].combine {
                                Combine::Mean => (i, sum / f64::from(n)),
                                _ => (i, sum),
                            })
                            .collect();
                        EventWhat::SnmpPoll {
                            values,
                            agent: hash_str(&row.source),
                        }
                    }
                    DeviceKind::Mqtt => EventWhat::Mqtt {
                        bytes: d.payload_bytes.unwrap_or(0),
                        topic: d.topic.as_deref().map_or(0, hash_str),
                        values: d
                            .samples
                            .iter()
                            .filter_map(|s| s.value)
                            .filter(|v| v.is_finite())
                            .collect(),
                    },
                };
                out.push(EventObs {
                    entity: d.entity.clone(),
                    ts_ns: d.ts_ns,
                    what,
                });
            }
        }
    }
}

/// Min/mean/max of one SNMP metric over polls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Series {
    pub n: u32,
    pub sum: f64,
    pub max: f64,
}

/// What a poll said of sysUpTime and of the interfaces up (NaN when it did not).
pub type Poll = (f64, f64);

/// Everything the log and device sources said about one entity in one pane, or
/// (merged) one window.
#[derive(Clone, Debug, Default)]
pub struct EventAcc {
    /// DHCP messages about the hardware address: from the client, by type
    /// (index = option 53 value), and the client's source addresses.
    pub dhcp: [u64; 9],
    pub dhcp_ips: Set<Addr>,
    pub syslog_seen: bool,
    pub messages: u64,
    pub by_severity: [u64; 9],
    /// Authentication facts logged by this host, by kind.
    pub auth: [u64; AUTH_KINDS],
    /// Failed logins logged by this host, by service and writer.
    pub fails: [u64; FAIL_SLOTS],
    /// Lines this host logged whose client-chosen text embeds an address.
    pub injections: u64,
    pub users: Set<u64>,
    pub remotes: Set<Addr>,
    /// Authentication facts naming this entity as the remote side, by kind.
    pub auth_as_remote: [u64; AUTH_KINDS],
    pub fails_as_remote: [u64; FAIL_SLOTS],
    pub users_as_remote: Set<u64>,
    pub reporters_as_remote: Set<Addr>,
    pub polls: u64,
    pub snmp: Vec<Series>,
    /// Per poll with both: processor load (mean over cores) and interface octets
    /// per second (in + out, all interfaces).
    pub cpu_net: Vec<(f64, f64)>,
    /// The same with the 1-minute load average (UCD laLoad) for processor load.
    pub load_net: Vec<(f64, f64)>,
    /// Per poll, in order: sysUpTime and interfaces up, at the first and last
    /// poll, and how often consecutive polls saw uptime go back (a restart) and
    /// interfaces go down (the sum of decreases).
    /// Per configured agent: its key, first and last poll.
    pub agents: Vec<(u64, Poll, Poll)>,
    pub restarts: u64,
    pub links_down: f64,
    pub mqtt_messages: u64,
    pub mqtt_bytes: u64,
    pub mqtt_opaque: u64,
    pub topics: Set<u64>,
    pub values: Moments,
    /// Syslog messages by facility group (see [`EventWhat::Syslog`]).
    pub by_facility: [u64; 5],
    /// Distinct app names in the entity's syslog messages.
    pub apps: Set<u64>,
    /// Templates of the entity's syslog messages, with message counts.
    pub templates: Map<u64, u64>,
    /// Times of the first and last MQTT message, and the gaps between messages.
    pub mqtt_first_ns: Option<i64>,
    pub mqtt_last_ns: Option<i64>,
    pub intervals: Moments,
}

impl EventAcc {
    pub fn observe(&mut self, o: &EventObs) {
        match &o.what {
            EventWhat::Syslog {
                severity,
                facility,
                app,
                template,
                auth,
            } => {
                self.syslog_seen = true;
                self.messages += 1;
                *self.templates.entry(*template).or_insert(0) += 1;
                self.by_severity[usize::from((*severity).min(8))] += 1;
                self.by_facility[usize::from((*facility).min(4))] += 1;
                if *app != 0 {
                    self.apps.insert(*app);
                }
                if let Some(a) = auth {
                    let n = u64::from(a.count);
                    self.auth[usize::from(a.kind).min(AUTH_KINDS - 1)] += n;
                    if let Some(f) = a.fail {
                        self.fails[usize::from(f).min(FAIL_SLOTS - 1)] += n;
                    }
                    self.injections += u64::from(a.injection);
                    self.users.extend(a.user);
                    self.remotes.extend(a.remote);
                }
            }
            EventWhat::AuthAsRemote { auth, reporter } => {
                self.syslog_seen = true;
                let n = u64::from(auth.count);
                self.auth_as_remote[usize::from(auth.kind).min(AUTH_KINDS - 1)] += n;
                if let Some(f) = auth.fail {
                    self.fails_as_remote[usize::from(f).min(FAIL_SLOTS - 1)] += n;
                }
                self.users_as_remote.extend(auth.user);
                self.reporters_as_remote.extend(*reporter);
            }
            EventWhat::SnmpPoll { values, agent } => {
                self.polls += 1;
                let get = |name| {
                    let i = snmp_metric_index(name)?;
                    values.iter().find(|v| usize::from(v.0) == i).map(|v| v.1)
                };
                let now = (
                    get("sys_uptime").unwrap_or(f64::NAN),
                    get("if_oper_status").unwrap_or(f64::NAN),
                );
                match self.agents.iter().position(|a| a.0 == *agent) {
                    Some(k) => {
                        let prev = self.agents[k].2;
                        self.step(prev, now);
                        self.agents[k].2 = now;
                    }
                    None => self.agents.push((*agent, now, now)),
                }
                if let (Some(i), Some(o)) = (get("if_in_octets"), get("if_out_octets")) {
                    if let Some(c) = get("hr_processor_load") {
                        self.cpu_net.push((c, i + o));
                    }
                    if let Some(l) = get("la_load_1") {
                        self.load_net.push((l, i + o));
                    }
                }
                if self.snmp.is_empty() {
                    self.snmp = vec![Series::default(); SNMP_METRICS.len()];
                }
                for &(i, v) in values {
                    if let Some(s) = self.snmp.get_mut(usize::from(i)) {
                        s.max = if s.n == 0 { v } else { s.max.max(v) };
                        s.n += 1;
                        s.sum += v;
                    }
                }
            }
            EventWhat::Dhcp { msg_type, src } => {
                self.dhcp[usize::from((*msg_type).min(8))] += 1;
                if matches!(msg_type, 1 | 3 | 4 | 7 | 8) && *src != Addr::v4([0, 0, 0, 0]) {
                    self.dhcp_ips.insert(*src);
                }
            }
            EventWhat::Mqtt {
                bytes,
                topic,
                values,
            } => {
                self.mqtt_messages += 1;
                self.mqtt_bytes += u64::from(*bytes);
                if let Some(l) = self.mqtt_last_ns {
                    self.intervals.push((o.ts_ns - l).max(0) as f64 / 1e9);
                }
                self.mqtt_first_ns.get_or_insert(o.ts_ns);
                self.mqtt_last_ns = Some(o.ts_ns);
                self.topics.insert(*topic);
                if values.is_empty() {
                    self.mqtt_opaque += 1;
                }
                for v in values {
                    self.values.push(*v);
                }
            }
        }
    }

    /// Counts what changed between two consecutive polls: uptime going back is a
    /// restart; fewer interfaces up is links going down. A missing value (NaN)
    /// compares false and counts nothing.
    fn step(&mut self, prev: (f64, f64), now: (f64, f64)) {
        self.restarts += u64::from(now.0 < prev.0);
        if now.1 < prev.1 {
            self.links_down += prev.1 - now.1;
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &EventAcc) {
        for (a, b) in self.dhcp.iter_mut().zip(l.dhcp) {
            *a += b;
        }
        self.dhcp_ips.extend(l.dhcp_ips.iter().copied());
        self.syslog_seen |= l.syslog_seen;
        for (a, b) in self.by_facility.iter_mut().zip(l.by_facility) {
            *a += b;
        }
        self.apps.extend(l.apps.iter().copied());
        for (t, n) in &l.templates {
            *self.templates.entry(*t).or_insert(0) += n;
        }
        if let (Some(last), Some(first)) = (self.mqtt_last_ns, l.mqtt_first_ns) {
            self.intervals.push((first - last).max(0) as f64 / 1e9);
        }
        self.intervals.merge(&l.intervals);
        self.mqtt_first_ns = self.mqtt_first_ns.or(l.mqtt_first_ns);
        self.mqtt_last_ns = l.mqtt_last_ns.or(self.mqtt_last_ns);
        self.messages += l.messages;
        for (a, b) in self.by_severity.iter_mut().zip(l.by_severity) {
            *a += b;
        }
        for (a, b) in self.auth.iter_mut().zip(l.auth) {
            *a += b;
        }
        for (a, b) in self.auth_as_remote.iter_mut().zip(l.auth_as_remote) {
            *a += b;
        }
        for (a, b) in self.fails.iter_mut().zip(l.fails) {
            *a += b;
        }
        for (a, b) in self.fails_as_remote.iter_mut().zip(l.fails_as_remote) {
            *a += b;
        }
        self.injections += l.injections;
        self.users.extend(l.users.iter().copied());
        self.remotes.extend(l.remotes.iter().copied());
        self.users_as_remote
            .extend(l.users_as_remote.iter().copied());
        self.reporters_as_remote
            .extend(l.reporters_as_remote.iter().copied());
        self.polls += l.polls;
        self.cpu_net.extend_from_slice(&l.cpu_net);
        for &(key, first, last) in &l.agents {
            match self.agents.iter().position(|a| a.0 == key) {
                Some(k) => {
                    let prev = self.agents[k].2;
                    self.step(prev, first);
                    self.agents[k].2 = last;
                }
                None => self.agents.push((key, first, last)),
            }
        }
        self.restarts += l.restarts;
        self.links_down += l.links_down;
        self.load_net.extend_from_slice(&l.load_net);
        if !l.snmp.is_empty() {
            if self.snmp.is_empty() {
                self.snmp = l.snmp.clone();
            } else {
                for (a, b) in self.snmp.iter_mut().zip(&l.snmp) {
                    if b.n > 0 {
                        a.max = if a.n == 0 { b.max } else { a.max.max(b.max) };
                        a.n += b.n;
                        a.sum += b.sum;
                    }
                }
            }
        }
        self.mqtt_messages += l.mqtt_messages;
        self.mqtt_bytes += l.mqtt_bytes;
        self.mqtt_opaque += l.mqtt_opaque;
        self.topics.extend(l.topics.iter().copied());
        self.values.merge(&l.values);
    }
}

pub(super) const fn dspec(
    name: &'static str,
    family: &'static str,
    unit: &'static str,
    dtype: FeatureDtype,
    description: &'static str,
    null_when: Option<&'static str>,
    compute: fn(&EventAcc) -> Option<f64>,
) -> EventFeature {
    EventFeature {
        def: FeatureDef {
            name,
            family,
            source: family,
            unit,
            dtype,
            description,
            null_when,
        },
        compute,
    }
}

/// A feature of the event families.
pub struct EventFeature {
    pub def: FeatureDef,
    pub compute: fn(&EventAcc) -> Option<f64>,
}

fn snmp_mean<const I: usize>(a: &EventAcc) -> Option<f64> {
    let s = a.snmp.get(I)?;
    (s.n > 0).then(|| s.sum / f64::from(s.n))
}
fn snmp_max<const I: usize>(a: &EventAcc) -> Option<f64> {
    let s = a.snmp.get(I)?;
    (s.n > 0).then_some(s.max)
}

pub(super) const SYSLOG_NULL: Option<&str> =
    Some("no syslog message from or about the entity in the window");
const MQTT_NULL: Option<&str> = Some("no MQTT message about the entity in the window");
use FeatureDtype::{Count as C, Float as F};

/// The feature the window operator fills from the entity's recent templates.
pub const SYSLOG_NEW_TEMPLATES: &str = "syslog_new_templates";
const LOGGED_NULL: Option<&str> = Some("the entity logged no syslog message in the window");

fn logged(a: &EventAcc, v: f64) -> Option<f64> {
    (a.messages > 0).then_some(v)
}

pub(super) fn sys(a: &EventAcc, v: u64) -> Option<f64> {
    a.syslog_seen.then_some(v as f64)
}
fn mq(a: &EventAcc, v: f64) -> Option<f64> {
    (a.mqtt_messages > 0).then_some(v)
}

static SYSLOG_FEATURES: &[EventFeature] = &[
    dspec(
        "syslog_messages",
        "syslog",
        "messages",
        C,
        "Syslog messages the entity sent.",
        SYSLOG_NULL,
        |a| sys(a, a.messages),
    ),
    dspec(
        "syslog_critical",
        "syslog",
        "messages",
        C,
        "Messages of severity emergency, alert or critical (0-2).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[..3].iter().sum()),
    ),
    dspec(
        "syslog_errors",
        "syslog",
        "messages",
        C,
        "Messages of severity error (3).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[3]),
    ),
    dspec(
        "syslog_warnings",
        "syslog",
        "messages",
        C,
        "Messages of severity warning (4).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[4]),
    ),
    dspec(
        "syslog_notices",
        "syslog",
        "messages",
        C,
        "Messages of severity notice (5).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[5]),
    ),
    dspec(
        "syslog_info",
        "syslog",
        "messages",
        C,
        "Messages of severity informational (6).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[6]),
    ),
    dspec(
        "syslog_debug",
        "syslog",
        "messages",
        C,
        "Messages of severity debug (7).",
        SYSLOG_NULL,
        |a| sys(a, a.by_severity[7]),
    ),
    dspec(
        "syslog_messages_per_s",
        "syslog",
        "messages/s",
        F,
        "Syslog messages the entity sent per second of the window.",
        SYSLOG_NULL,
        |a| sys(a, a.messages).map(|v| v / W),
    ),
    dspec(
        "syslog_facility_auth",
        "syslog",
        "messages",
        C,
        "Messages of facility auth or authpriv.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[0]),
    ),
    dspec(
        "syslog_facility_kern",
        "syslog",
        "messages",
        C,
        "Messages of facility kern.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[1]),
    ),
    dspec(
        "syslog_facility_daemon",
        "syslog",
        "messages",
        C,
        "Messages of facility daemon.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[2]),
    ),
    dspec(
        "syslog_facility_local",
        "syslog",
        "messages",
        C,
        "Messages of facilities local0 to local7.",
        SYSLOG_NULL,
        |a| sys(a, a.by_facility[3]),
    ),
    dspec(
        "syslog_distinct_apps",
        "syslog",
        "apps",
        C,
        "Distinct app names (tags) in the entity's messages.",
        SYSLOG_NULL,
        |a| sys(a, a.apps.len() as u64),
    ),
    dspec(
        "syslog_templates",
        "syslog",
        "templates",
        C,
        "Distinct message templates the entity logged: app name plus the message with \
         every word containing a digit replaced by a placeholder.",
        LOGGED_NULL,
        |a| logged(a, a.templates.len() as f64),
    ),
    dspec(
        "syslog_template_entropy",
        "syslog",
        "bits",
        F,
        "Shannon entropy of the entity's messages over their templates: 0 when one \
         kind of line repeats, high when many kinds are mixed.",
        LOGGED_NULL,
        |a| entropy_bits(a.templates.values().copied()),
    ),
    dspec(
        SYSLOG_NEW_TEMPLATES,
        "syslog",
        "templates",
        C,
        "Templates the entity logged in the window and in none of the 2 minutes \
         before it: a host printing kinds of lines it has not printed lately.",
        LOGGED_NULL,
        // Filled by the window operator, which remembers the entity's recent templates.
        |_| None,
    ),
];

static POLL_FEATURES: &[EventFeature] = &[dspec(
    "snmp_polls",
    "snmp",
    "polls",
    C,
    "Successful SNMP polls of the agent in the window.",
    Some("the agent was not polled successfully in the window"),
    |a| (a.polls > 0).then_some(a.polls as f64),
)];

/// A DHCP feature: family `dhcp`, read from packets.
const fn dhcp_spec(
    name: &'static str,
    unit: &'static str,
    dtype: FeatureDtype,
    description: &'static str,
    compute: fn(&EventAcc) -> Option<f64>,
) -> EventFeature {
    EventFeature {
        def: FeatureDef {
            name,
            family: "dhcp",
            source: "pcap",
            unit,
            dtype,
            description,
            null_when: Some("no DHCP message about the hardware address in the window"),
        },
        compute,
    }
}

fn dhcp_client(a: &EventAcc) -> u64 {
    [1, 3, 4, 7, 8].iter().map(|&t| a.dhcp[t]).sum()
}

fn dh(a: &EventAcc, v: f64) -> Option<f64> {
    (a.dhcp.iter().sum::<u64>() > 0).then_some(v)
}

/// Per client hardware address (`chaddr`): the entity is the address as text.
static DHCP_FEATURES: &[EventFeature] = &[
    dhcp_spec(
        "dhcp_client_messages",
        "messages",
        C,
        "DHCP messages the client sent (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM) with this hardware address.",
        |a| dh(a, dhcp_client(a) as f64),
    ),
    dhcp_spec(
        "dhcp_client_messages_per_s",
        "messages/s",
        F,
        "`dhcp_client_messages` per second of the window.",
        |a| dh(a, dhcp_client(a) as f64 / W),
    ),
    dhcp_spec(
        "dhcp_discovers",
        "messages",
        C,
        "DHCPDISCOVER messages from the hardware address.",
        |a| dh(a, a.dhcp[1] as f64),
    ),
    dhcp_spec(
        "dhcp_informs",
        "messages",
        C,
        "DHCPINFORM messages from the hardware address.",
        |a| dh(a, a.dhcp[8] as f64),
    ),
    dhcp_spec(
        "dhcp_server_replies",
        "messages",
        C,
        "DHCP replies (OFFER, ACK, NAK) to the hardware address.",
        |a| dh(a, (a.dhcp[2] + a.dhcp[5] + a.dhcp[6]) as f64),
    ),
    dhcp_spec(
        "dhcp_client_ips",
        "addresses",
        C,
        "Distinct IP source addresses (0.0.0.0 aside) of the client's messages: one host keeps one.",
        |a| dh(a, a.dhcp_ips.len() as f64),
    ),
];

static MQTT_FEATURES: &[EventFeature] = &[
    dspec(
        "mqtt_messages",
        "mqtt",
        "messages",
        C,
        "MQTT messages about the device.",
        MQTT_NULL,
        |a| mq(a, a.mqtt_messages as f64),
    ),
    dspec(
        "mqtt_messages_per_s",
        "mqtt",
        "messages/s",
        F,
        "MQTT messages about the device per second of the window.",
        MQTT_NULL,
        |a| mq(a, a.mqtt_messages as f64 / W),
    ),
    dspec(
        "mqtt_bytes",
        "mqtt",
        "bytes",
        C,
        "Payload bytes of the device's messages.",
        MQTT_NULL,
        |a| mq(a, a.mqtt_bytes as f64),
    ),
    dspec(
        "mqtt_bytes_per_s",
        "mqtt",
        "bytes/s",
        F,
        "Payload bytes of the device's messages per second of the window.",
        MQTT_NULL,
        |a| mq(a, a.mqtt_bytes as f64 / W),
    ),
    dspec(
        "mqtt_distinct_topics",
        "mqtt",
        "topics",
        C,
        "Distinct topics the device's messages came on.",
        MQTT_NULL,
        |a| mq(a, a.topics.len() as f64),
    ),
    dspec(
        "mqtt_opaque_messages",
        "mqtt",
        "messages",
        C,
        "Messages whose payload was neither a number nor a JSON object.",
        MQTT_NULL,
        |a| mq(a, a.mqtt_opaque as f64),
    ),
    dspec(
        "mqtt_values",
        "mqtt",
        "values",
        C,
        "Numeric values the device's messages carried.",
        MQTT_NULL,
        |a| mq(a, a.values.n as f64),
    ),
    dspec(
        "mqtt_value_mean",
        "mqtt",
        "value",
        F,
        "Mean of the numeric values (all metrics together).",
        Some("no numeric value about the device in the window"),
        |a| (a.values.n > 0).then_some(a.values.mean),
    ),
    dspec(
        "mqtt_value_std",
        "mqtt",
        "value",
        F,
        "Population standard deviation of the numeric values.",
        Some("no numeric value about the device in the window"),
        |a| (a.values.n > 0).then(|| a.values.std()),
    ),
    dspec(
        "mqtt_value_min",
        "mqtt",
        "value",
        F,
        "Smallest numeric value.",
        Some("no numeric value about the device in the window"),
        |a| a.values.get_min(),
    ),
    dspec(
        "mqtt_value_max",
        "mqtt",
        "value",
        F,
        "Largest numeric value.",
        Some("no numeric value about the device in the window"),
        |a| a.values.get_max(),
    ),
    dspec(
        "mqtt_interval_mean",
        "mqtt",
        "s",
        F,
        "Mean gap between consecutive messages about the device.",
        Some("fewer than 2 messages about the device in the window"),
        |a| (a.intervals.n > 0).then_some(a.intervals.mean),
    ),
    dspec(
        "mqtt_interval_cv",
        "mqtt",
        "ratio",
        F,
        "Coefficient of variation (std / mean) of the gaps between messages: near 0 for a \
         device publishing on a clock, large for bursts.",
        Some("fewer than 2 messages about the device, or all at the same instant"),
        |a| {
            (a.intervals.n > 0 && a.intervals.mean > 0.0)
                .then(|| a.intervals.std() / a.intervals.mean)
        },
    ),
];

fn snmp_ratio(a: &EventAcc, num: &str, den: &str, subtract: bool) -> Option<f64> {
    let mean = |name: &str| {
        let s = a.snmp.get(snmp_metric_index(name)?)?;
        (s.n > 0).then(|| s.sum / f64::from(s.n))
    };
    let (n, d) = (mean(num)?, mean(den)?);
    let n = if subtract { d - n } else { n };
    (d > 0.0).then(|| n / d)
}

const RATIO_NULL: Option<&str> =
    Some("the agent did not report both metrics in the window, or the total is 0");

static RATIO_FEATURES: &[EventFeature] = &[
    dspec(
        "snmp_mem_used_ratio",
        "snmp",
        "ratio",
        F,
        "Memory in use: (window mean of memTotalReal - window mean of memAvailReal) / window mean of memTotalReal.",
        RATIO_NULL,
        |a| snmp_ratio(a, "mem_avail_real", "mem_total_real", true),
    ),
    dspec(
        "snmp_ram_used_ratio",
        "snmp",
        "ratio",
        F,
        "hrStorage RAM used / size, of the window means.",
        RATIO_NULL,
        |a| snmp_ratio(a, "hr_storage_ram_used", "hr_storage_ram_size", false),
    ),
    dspec(
        "snmp_swap_used_ratio",
        "snmp",
        "ratio",
        F,
        "hrStorage virtual memory (swap) used / size, of the window means.",
        RATIO_NULL,
        |a| snmp_ratio(a, "hr_storage_swap_used", "hr_storage_swap_size", false),
    ),
    dspec(
        "snmp_disk_used_ratio",
        "snmp",
        "ratio",
        F,
        "hrStorage fixed disks used / size (all disks together), of the window means.",
        RATIO_NULL,
        |a| snmp_ratio(a, "hr_storage_disk_used", "hr_storage_disk_size", false),
    ),
    dspec(
        "snmp_cpu_net_corr",
        "snmp",
        "r",
        F,
        "Pearson correlation, over the window's polls, of processor load (mean over \
         cores) with interface traffic (in + out octets per second, all interfaces): \
         near 1 when the device works for its traffic, near 0 when its load has \
         another cause.",
        Some(
            "fewer than 2 polls in the window had both values, or either was the same \
              in all of them",
        ),
        |a| super::pearson(a.cpu_net.iter().copied()),
    ),
    dspec(
        "snmp_agent_restarts",
        "snmp",
        "restarts",
        C,
        "Times sysUpTime went back between consecutive polls of one configured agent in \
         the window: the agent (or its device) restarted. Agents of several sections on \
         one address are compared each with its own polls.",
        Some("the agent was not polled in the window"),
        |a| (a.polls > 0).then_some(a.restarts as f64),
    ),
    dspec(
        "snmp_links_down",
        "snmp",
        "interfaces",
        C,
        "Interfaces that went from up to not up between consecutive polls of one \
         configured agent in the window (sum of the decreases in the number of interfaces \
         whose ifOperStatus is up).",
        Some("the agent was not polled in the window"),
        |a| (a.polls > 0).then_some(a.links_down),
    ),
    dspec(
        "snmp_load_net_corr",
        "snmp",
        "r",
        F,
        "Pearson correlation, over the window's polls, of the 1-minute load average \
         (UCD laLoad) with interface traffic (in + out octets per second, all \
         interfaces): for agents that report load but not hrProcessorLoad.",
        Some(
            "fewer than 2 polls in the window had both values, or either was the same \
              in all of them",
        ),
        |a| super::pearson(a.load_net.iter().copied()),
    ),
];

/// The event families' features, in column order.
pub fn event_catalogue() -> impl Iterator<Item = &'static EventFeature> {
    SYSLOG_FEATURES
        .iter()
        .chain(AUTH_FEATURES)
        .chain(POLL_FEATURES)
        .chain(SNMP_FEATURES)
        .chain(RATIO_FEATURES)
        .chain(MQTT_FEATURES)
        .chain(DHCP_FEATURES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(cpu: f64, load: f64, if_in: f64, if_out: f64) -> EventObs {
        let i = |n| snmp_metric_index(n).expect("metric") as u8;
        EventObs {
            entity: Entity::Name("agent".into()),
            ts_ns: 0,
            what: EventWhat::SnmpPoll {
                values: vec![
                    (i("hr_processor_load"), cpu),
                    (i("la_load_1"), load),
                    (i("if_in_octets"), if_in),
                    (i("if_out_octets"), if_out),
                ],
                agent: 0,
            },
        }
    }

    fn feature(acc: &EventAcc, name: &str) -> Option<f64> {
        event_catalogue()
            .find(|f| f.def.name == name)
            .and_then(|f| (f.compute)(acc))
    }

    #[test]
    fn load_and_traffic_correlate_over_a_windows_polls() {
        // Processor load rises with traffic (in + out): r = 1; the load average
        // falls as traffic rises: r = -1. Two panes, appended as a window.
        let mut a = EventAcc::default();
        a.observe(&poll(10.0, 3.0, 100.0, 0.0));
        a.observe(&poll(20.0, 2.0, 150.0, 50.0));
        let mut b = EventAcc::default();
        b.observe(&poll(30.0, 1.0, 200.0, 100.0));
        a.append(&b);
        let cpu = feature(&a, "snmp_cpu_net_corr").expect("three polls with both");
        let load = feature(&a, "snmp_load_net_corr").expect("three polls with both");
        assert!((cpu - 1.0).abs() < 1e-12, "{cpu}");
        assert!((load + 1.0).abs() < 1e-12, "{load}");
        // One poll, or a load that never changes: no correlation.
        let mut one = EventAcc::default();
        one.observe(&poll(10.0, 1.0, 1.0, 1.0));
        assert_eq!(feature(&one, "snmp_cpu_net_corr"), None);
        let mut flat = EventAcc::default();
        flat.observe(&poll(10.0, 1.0, 1.0, 1.0));
        flat.observe(&poll(10.0, 1.0, 5.0, 1.0));
        assert_eq!(feature(&flat, "snmp_cpu_net_corr"), None);
    }

    fn poll_of(uptime: f64, up: f64) -> EventObs {
        poll_by(0, uptime, up)
    }

    fn poll_by(agent: u64, uptime: f64, up: f64) -> EventObs {
        let i = |n| snmp_metric_index(n).expect("metric") as u8;
        EventObs {
            entity: Entity::Name("agent".into()),
            ts_ns: 0,
            what: EventWhat::SnmpPoll {
                values: vec![(i("sys_uptime"), uptime), (i("if_oper_status"), up)],
                agent,
            },
        }
    }

    /// Two agents on one address (two sections: other communities or ports)
    /// interleave their polls; each is compared with its own previous poll.
    #[test]
    fn agents_sharing_an_address_keep_their_own_series() {
        let mut a = EventAcc::default();
        a.observe(&poll_by(1, 5000.0, 4.0));
        a.observe(&poll_by(2, 90.0, 1.0));
        a.observe(&poll_by(1, 5030.0, 4.0));
        let mut b = EventAcc::default();
        b.observe(&poll_by(2, 120.0, 1.0));
        b.observe(&poll_by(1, 5060.0, 4.0));
        b.observe(&poll_by(2, 150.0, 1.0));
        a.append(&b);
        assert_eq!(feature(&a, "snmp_agent_restarts"), Some(0.0));
        assert_eq!(feature(&a, "snmp_links_down"), Some(0.0));
        // A real restart of one of them still counts once.
        let mut c = EventAcc::default();
        c.observe(&poll_by(3, 10.0, 1.0));
        a.append(&c);
        b.observe(&poll_by(2, 7.0, 1.0));
        let mut d = EventAcc::default();
        d.observe(&poll_by(1, 6000.0, 4.0));
        d.observe(&poll_by(2, 10.0, 1.0));
        d.observe(&poll_by(2, 3.0, 0.0));
        assert_eq!(feature(&d, "snmp_agent_restarts"), Some(1.0));
        assert_eq!(feature(&d, "snmp_links_down"), Some(1.0));
    }

    #[test]
    fn restarts_and_links_down_count_changes_between_consecutive_polls() {
        // Pane 1: uptime 100, 110 with 3 then 2 interfaces up; pane 2: uptime back
        // to 5 (a restart, across the panes), 1 interface up, then 3 again.
        let mut a = EventAcc::default();
        a.observe(&poll_of(100.0, 3.0));
        a.observe(&poll_of(110.0, 2.0));
        let mut b = EventAcc::default();
        b.observe(&poll_of(5.0, 1.0));
        b.observe(&poll_of(15.0, 3.0));
        a.append(&b);
        assert_eq!(feature(&a, "snmp_agent_restarts"), Some(1.0));
        assert_eq!(feature(&a, "snmp_links_down"), Some(2.0));
        assert_eq!(feature(&EventAcc::default(), "snmp_agent_restarts"), None);
        let mut steady = EventAcc::default();
        steady.observe(&poll_of(1.0, 2.0));
        steady.observe(&poll_of(2.0, 2.0));
        assert_eq!(feature(&steady, "snmp_agent_restarts"), Some(0.0));
        assert_eq!(feature(&steady, "snmp_links_down"), Some(0.0));
    }

    #[test]
    fn templates_mask_words_with_digits() {
        let t = |app, m| template_hash(app, m);
        assert_eq!(
            t(
                Some("sshd"),
                "Failed password for root from 10.0.0.1 port 4242 ssh2"
            ),
            t(
                Some("sshd"),
                "Failed password for root from 192.0.2.7 port 22 ssh2"
            )
        );
        assert_ne!(
            t(
                Some("sshd"),
                "Failed password for root from 10.0.0.1 port 4242 ssh2"
            ),
            t(
                Some("sshd"),
                "Failed password for admin from 10.0.0.1 port 4242 ssh2"
            )
        );
        assert_ne!(t(Some("a"), "x"), t(Some("b"), "x"));
        assert_eq!(t(None, "a  b"), t(Some(""), "a b"));
    }
}
