//! The event windows' observations and accumulator, shared by the families of
//! the log and device sources: syslog (syslog.rs), authentication (auth.rs),
//! SNMP (snmp.rs), MQTT (mqtt.rs), and, read from packets, DHCP (dhcp.rs) and
//! the application layer of flows (app.rs).
//!
//! Records become [`EventObs`] observations keyed by the entity they are evidence
//! for: a syslog message counts for the host that sent it, and an authentication
//! message also for the remote address it names (as `*_as_remote`); an SNMP poll
//! for its agent; an MQTT message for its device. Each family keeps its own
//! accumulator inside [`EventAcc`], and is null for an entity its source did not
//! see in the window.

use amoskys_schemas::{Addr, DeviceKind, Entity, EventRow, FeatureDef, Record};
use serde::{Deserialize, Serialize};

use super::app::{APP_FEATURES, AppAcc, AppObs};
use super::auth::{AUTH_FEATURES, AuthAcc, AuthObs, auth_code, fail_slot};
use super::dhcp::{DHCP_FEATURES, DhcpAcc};
use super::family::FamilyFeature;
use super::mqtt::{MQTT_FEATURES, MqttAcc};
use super::snmp::{self, POLL_FEATURES, RATIO_FEATURES, SNMP_FEATURES, SnmpAcc};
use super::syslog::{SYSLOG_FEATURES, SyslogAcc, facility_group, template_hash};

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
    /// One side of a flow the entity (an address) opened, read at the
    /// application layer.
    App(AppObs),
}

/// One observation for the event windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventObs {
    pub entity: Entity,
    pub ts_ns: i64,
    pub what: EventWhat,
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

pub(super) fn hash_str(s: &str) -> u64 {
    // Fixed keys: the same user or topic hashes alike on every worker.
    amoskys_schemas::stable_hash(s)
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
                    DeviceKind::Snmp => EventWhat::SnmpPoll {
                        values: snmp::poll(d),
                        agent: hash_str(&row.source),
                    },
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

/// Everything the log and device sources said about one entity in one pane, or
/// (merged) one window: one accumulator per family.
#[derive(Clone, Debug, Default)]
pub struct EventAcc {
    pub syslog: SyslogAcc,
    pub auth: AuthAcc,
    pub snmp: SnmpAcc,
    pub mqtt: MqttAcc,
    pub dhcp: DhcpAcc,
    pub app: AppAcc,
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
                self.syslog.observe(*severity, *facility, *app, *template);
                self.auth.seen = true;
                if let Some(a) = auth {
                    self.auth.observe(a);
                }
            }
            EventWhat::AuthAsRemote { auth, reporter } => {
                self.syslog.seen = true;
                self.auth.seen = true;
                self.auth.observe_as_remote(auth, *reporter);
            }
            EventWhat::SnmpPoll { values, agent } => self.snmp.observe(values, *agent),
            EventWhat::Dhcp { msg_type, src } => self.dhcp.observe(*msg_type, *src),
            EventWhat::Mqtt {
                bytes,
                topic,
                values,
            } => self.mqtt.observe(o.ts_ns, *bytes, *topic, values),
            EventWhat::App(a) => self.app.observe(a),
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &EventAcc) {
        self.syslog.append(&l.syslog);
        self.auth.append(&l.auth);
        self.snmp.append(&l.snmp);
        self.mqtt.append(&l.mqtt);
        self.dhcp.append(&l.dhcp);
        self.app.append(&l.app);
    }
}

/// The event families' features, in column order, each computed from its
/// family's accumulator; `f` gets each definition and, given `acc`, its value.
fn visit(acc: Option<&EventAcc>, f: &mut dyn FnMut(&'static FeatureDef, Option<f64>)) {
    fn each<A>(
        features: &'static [FamilyFeature<A>],
        acc: Option<&A>,
        f: &mut dyn FnMut(&'static FeatureDef, Option<f64>),
    ) {
        for x in features {
            f(&x.def, acc.and_then(|a| (x.compute)(a)));
        }
    }
    each(SYSLOG_FEATURES, acc.map(|a| &a.syslog), f);
    each(AUTH_FEATURES, acc.map(|a| &a.auth), f);
    each(POLL_FEATURES, acc.map(|a| &a.snmp), f);
    each(SNMP_FEATURES, acc.map(|a| &a.snmp), f);
    each(RATIO_FEATURES, acc.map(|a| &a.snmp), f);
    each(MQTT_FEATURES, acc.map(|a| &a.mqtt), f);
    each(DHCP_FEATURES, acc.map(|a| &a.dhcp), f);
    each(APP_FEATURES, acc.map(|a| &a.app), f);
}

/// The event families' feature definitions, in column order.
pub fn event_catalogue() -> &'static [FeatureDef] {
    static DEFS: std::sync::LazyLock<Vec<FeatureDef>> = std::sync::LazyLock::new(|| {
        let mut out = Vec::new();
        visit(None, &mut |d, _| out.push(*d));
        out
    });
    &DEFS
}

/// Appends the event families' features of `acc`, in column order (null as NaN).
pub fn event_values(acc: &EventAcc, out: &mut Vec<f64>) {
    visit(Some(acc), &mut |_, v| {
        out.push(v.filter(|v| v.is_finite()).unwrap_or(f64::NAN))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::snmp_metric_index;

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
        let i = event_catalogue().iter().position(|d| d.name == name)?;
        let mut v = Vec::new();
        event_values(acc, &mut v);
        Some(v[i]).filter(|x| !x.is_nan())
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
