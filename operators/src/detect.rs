//! Built-in detections: conditions over an entity's feature row in one window.
//!
//! Each detection is a conjunction of thresholds on catalogue features
//! (`feature >= value` or `feature <= value`; a null feature never satisfies
//! one). Thresholds, severity and whether a detection runs come from flows.toml
//! (`[detections.<name>]`). An occurrence that fires in consecutive windows (they
//! overlap by 30 s, so one burst is seen twice) is one alert, raised in its first
//! window; its id hashes the detection, the entity and that window, so the same
//! input always gives the same id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{Alert, Entity, FeatureDef, FeatureRow, Severity};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::Map;

/// How a feature is compared with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    AtLeast,
    AtMost,
}

/// One threshold of a detection.
#[derive(Clone, Copy, Debug)]
pub struct Condition {
    pub feature: &'static str,
    pub cmp: Cmp,
    pub default: f64,
}

/// A built-in detection.
#[derive(Debug)]
pub struct DetectionDef {
    pub name: &'static str,
    pub severity: Severity,
    /// The sources whose features it reads.
    pub sources: &'static [&'static str],
    /// What it means, and how to tune it.
    pub description: &'static str,
    pub conditions: &'static [Condition],
    /// One line; `{entity}` and `{feature_name}` are replaced by their values.
    pub summary: &'static str,
}

const fn at_least(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtLeast,
        default,
    }
}

const fn at_most(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtMost,
        default,
    }
}

/// The built-in detections.
pub static DETECTIONS: &[DetectionDef] = &[
    DetectionDef {
        name: "vertical_scan",
        severity: Severity::High,
        sources: &["pcap"],
        description: "One source probing many ports of a few hosts (TCP or UDP), as nmap does. \
            Raise `distinct_dst_ports_out` for hosts that legitimately reach many services of \
            one server (e.g. passive FTP, RPC).",
        conditions: &[
            at_least("distinct_dst_ports_out", 100.0),
            at_most("distinct_peers_out", 4.0),
        ],
        summary: "{entity} sent to {distinct_dst_ports_out} ports on {distinct_peers_out} host(s)",
    },
    DetectionDef {
        name: "horizontal_scan",
        severity: Severity::High,
        sources: &["pcap"],
        description: "One source probing the same few ports on many hosts (TCP or UDP), as a \
            worm or a sweep does. Raise `distinct_peers_out` for resolvers, proxies and NAT \
            gateways.",
        conditions: &[
            at_least("distinct_peers_out", 100.0),
            at_most("distinct_dst_ports_out", 4.0),
        ],
        summary: "{entity} sent to {distinct_peers_out} hosts on {distinct_dst_ports_out} port(s)",
    },
    DetectionDef {
        name: "syn_flood",
        severity: Severity::Critical,
        sources: &["pcap"],
        description: "Many TCP SYNs received from many sources (spoofed or distributed) in one \
            window. Tune `tcp_syn_in` to a few times the busiest legitimate minute of the \
            target.",
        conditions: &[
            at_least("tcp_syn_in", 1000.0),
            at_least("distinct_peers_in", 50.0),
        ],
        summary: "{entity} received {tcp_syn_in} SYNs from {distinct_peers_in} sources",
    },
    DetectionDef {
        name: "synack_reflection",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many SYN-ACKs received while sending no SYN: the entity's address was \
            spoofed in SYNs to reflectors, which answer it.",
        conditions: &[
            at_least("tcp_synack_in", 500.0),
            at_most("tcp_syn_out", 0.0),
        ],
        summary: "{entity} received {tcp_synack_in} SYN-ACKs from {distinct_peers_in} sources without sending a SYN",
    },
    DetectionDef {
        name: "dns_reflection",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DNS responses received while sending no query: reflection or \
            amplification aimed at the entity.",
        conditions: &[
            at_least("dns_responses_in", 200.0),
            at_most("dns_queries_out", 0.0),
        ],
        summary: "{entity} received {dns_responses_in} DNS responses without asking",
    },
    DetectionDef {
        name: "login_bruteforce_network",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many TCP connections to login services (FTP, SSH, Telnet, RDP) from one \
            source in one window. Raise `auth_conn_attempts_out` for jump hosts and \
            monitoring that log in often.",
        conditions: &[at_least("auth_conn_attempts_out", 20.0)],
        summary: "{entity} opened {auth_conn_attempts_out} connections to login services",
    },
    DetectionDef {
        name: "login_bruteforce_logs",
        severity: Severity::High,
        sources: &["syslog"],
        description: "Failed logins from one remote address, as logged by the hosts it tried \
            (sshd). Lower `auth_failures_as_remote` to catch slow guessing.",
        conditions: &[at_least("auth_failures_as_remote", 10.0)],
        summary: "{entity} failed {auth_failures_as_remote} logins on {auth_distinct_targets_as_remote} host(s) as {auth_distinct_users_as_remote} user(s)",
    },
    DetectionDef {
        name: "dns_tunnel",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DNS queries with long names: data carried in query names. Lower \
            `dns_qname_len_mean_out` cautiously: CDNs use long names too.",
        conditions: &[
            at_least("dns_queries_out", 50.0),
            at_least("dns_qname_len_mean_out", 50.0),
        ],
        summary: "{entity} sent {dns_queries_out} DNS queries, names {dns_qname_len_mean_out} characters on average",
    },
    DetectionDef {
        name: "dga",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Many distinct names asked and most answered NXDOMAIN: malware trying \
            generated domains to find its controller.",
        conditions: &[
            at_least("dns_distinct_qnames_out", 20.0),
            at_least("dns_nxdomain_ratio_in", 0.5),
        ],
        summary: "{entity} asked {dns_distinct_qnames_out} names, {dns_nxdomain_ratio_in} of answers NXDOMAIN",
    },
    DetectionDef {
        name: "beaconing",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Connection attempts at near-constant intervals: a bot checking in. \
            Raise `syn_interval_cv_out` to catch jittered beacons, at the cost of \
            scheduled jobs.",
        conditions: &[
            at_least("conn_attempts_out", 6.0),
            at_most("syn_interval_cv_out", 0.1),
        ],
        summary: "{entity} made {conn_attempts_out} connection attempts every {syn_interval_mean_out} s (CV {syn_interval_cv_out})",
    },
    DetectionDef {
        name: "exfiltration",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Bytes sent far above the entity's own running baseline (z-score), and \
            many of them.",
        conditions: &[
            at_least("bytes_out_zscore", 6.0),
            at_least("bytes_out", 50e6),
        ],
        summary: "{entity} sent {bytes_out} bytes, {bytes_out_zscore} standard deviations above its baseline",
    },
    DetectionDef {
        name: "device_cpu_saturation",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's processor load (hrProcessorLoad, mean over cores and \
            polls) near its limit for a window.",
        conditions: &[at_least("snmp_hr_processor_load_mean", 90.0)],
        summary: "{entity} processor load {snmp_hr_processor_load_mean} %",
    },
    DetectionDef {
        name: "device_memory_saturation",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's memory (UCD total minus available, over total) nearly \
            all used.",
        conditions: &[at_least("snmp_mem_used_ratio", 0.95)],
        summary: "{entity} memory {snmp_mem_used_ratio} used",
    },
    DetectionDef {
        name: "device_interface_errors",
        severity: Severity::Low,
        sources: &["snmp"],
        description: "Interface input errors on an SNMP agent (per second, summed over \
            interfaces).",
        conditions: &[at_least("snmp_if_in_errors_max", 1.0)],
        summary: "{entity} interface input errors up to {snmp_if_in_errors_max}/s",
    },
    DetectionDef {
        name: "mqtt_flood",
        severity: Severity::Medium,
        sources: &["mqtt"],
        description: "A device publishing far more MQTT messages than sensors do.",
        conditions: &[at_least("mqtt_messages_per_s", 100.0)],
        summary: "{entity} published {mqtt_messages_per_s} MQTT messages/s",
    },
];

/// The detections as Markdown: the body of docs/DETECTIONS.md.
pub fn markdown() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# Detections\n");
    let _ = writeln!(
        s,
        "Generated from the detection catalogue (`operators/src/detect.rs`); a test fails when \
         this file is stale (`UPDATE_DOCS=1 cargo test -p amoskys-operators detections_md` \
         rewrites it).\n"
    );
    let _ = writeln!(
        s,
        "Each detection is a set of thresholds on one entity's features in one window \
         (docs/FEATURES.md), all of which must hold; a null feature holds none. An occurrence \
         that fires in consecutive windows is one alert, raised in its first window, with an id \
         that hashes the detection, the entity and that window. Alerts go to the `alerts` table \
         with the feature values that fired them as evidence. Every key can be set in \
         flows.toml:\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[detections.vertical_scan]\nenabled = true          # false turns it off\n\
         severity = \"high\"       # low, medium, high or critical\n\
         distinct_dst_ports_out = 100   # a threshold, by feature name\n```\n"
    );
    for d in DETECTIONS {
        let _ = writeln!(s, "## `{}`\n", d.name);
        let _ = writeln!(
            s,
            "Severity **{}**; sources: {}.\n\n{}\n",
            d.severity,
            d.sources.join(", "),
            d.description
        );
        let _ = writeln!(s, "| key | fires when | default |\n|---|---|---|");
        for c in d.conditions {
            let op = match c.cmp {
                Cmp::AtLeast => "≥",
                Cmp::AtMost => "≤",
            };
            let _ = writeln!(s, "| `{}` | {op} threshold | {} |", c.feature, c.default);
        }
        let _ = writeln!(s, "\nSummary: `{}`\n", d.summary);
    }
    s
}

/// What flows.toml may change of one detection.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionSettings {
    pub enabled: bool,
    pub severity: Severity,
    /// One per condition, in the definition's order.
    pub thresholds: Vec<f64>,
}

impl DetectionSettings {
    pub fn defaults(def: &DetectionDef) -> Self {
        DetectionSettings {
            enabled: true,
            severity: def.severity,
            thresholds: def.conditions.iter().map(|c| c.default).collect(),
        }
    }
}

/// Counters of the detection operator.
#[derive(Debug, Default)]
pub struct DetectCounters {
    pub alerts: AtomicU64,
}

struct Rule {
    def: &'static DetectionDef,
    severity: Severity,
    /// (column, comparison, threshold) per condition.
    checks: Vec<(usize, Cmp, f64)>,
    /// Columns of the features named in the summary, for the evidence.
    evidence: Vec<(usize, &'static str)>,
}

/// The timely-free core: feature rows in, alerts out. Rows of one entity must
/// come in window order.
pub struct Detector {
    rules: Vec<Rule>,
    /// Per (rule, entity): the last window the rule fired in.
    firing: Map<(usize, Entity), u64>,
    /// The newest window seen, and the last one `firing` was swept at.
    newest: u64,
    swept: u64,
}

impl Detector {
    /// `settings` by detection name; a detection not named keeps its defaults.
    pub fn new(
        defs: &[FeatureDef],
        settings: &[(String, DetectionSettings)],
    ) -> Result<Self, String> {
        let col = |n: &str| {
            defs.iter()
                .position(|d| d.name == n)
                .ok_or_else(|| format!("feature {n} is not in the catalogue"))
        };
        let mut rules = Vec::new();
        for def in DETECTIONS {
            let s = settings
                .iter()
                .find(|(n, _)| n == def.name)
                .map_or_else(|| DetectionSettings::defaults(def), |(_, s)| s.clone());
            if !s.enabled {
                continue;
            }
            let checks = def
                .conditions
                .iter()
                .zip(&s.thresholds)
                .map(|(c, t)| Ok((col(c.feature)?, c.cmp, *t)))
                .collect::<Result<Vec<_>, String>>()?;
            let mut evidence = Vec::new();
            let names = def
                .conditions
                .iter()
                .map(|c| c.feature)
                .chain(placeholders(def.summary));
            for n in names {
                if !evidence.iter().any(|(_, e)| *e == n) {
                    evidence.push((col(n)?, n));
                }
            }
            rules.push(Rule {
                def,
                severity: s.severity,
                checks,
                evidence,
            });
        }
        Ok(Detector {
            rules,
            firing: Map::default(),
            newest: 0,
            swept: 0,
        })
    }

    /// The alerts `row` raises.
    pub fn observe(&mut self, row: &FeatureRow, out: &mut Vec<Alert>) {
        if row.window > self.newest {
            self.newest = row.window;
        }
        // An occurrence is over once a window passed without it: forget it.
        if self.newest > self.swept + 1 {
            let newest = self.newest;
            self.firing.retain(|_, w| *w + 1 >= newest);
            self.swept = newest;
        }
        for (k, rule) in self.rules.iter().enumerate() {
            // NaN (null) fails both comparisons, as it should.
            let fires = rule.checks.iter().all(|&(c, cmp, t)| {
                let v = row.values.get(c).copied().unwrap_or(f64::NAN);
                match cmp {
                    Cmp::AtLeast => v >= t,
                    Cmp::AtMost => v <= t,
                }
            });
            if !fires {
                continue;
            }
            let key = (k, row.entity.clone());
            let continues = self
                .firing
                .get(&key)
                .is_some_and(|&w| w + 1 == row.window || w == row.window);
            self.firing.insert(key, row.window);
            if continues {
                continue;
            }
            let evidence: Vec<(String, f64)> = rule
                .evidence
                .iter()
                .filter_map(|&(c, n)| row.get(c).map(|v| (n.to_string(), v)))
                .collect();
            out.push(Alert {
                id: alert_id(rule.def.name, &row.entity, row.window),
                rule: rule.def.name.to_string(),
                severity: rule.severity,
                entity: row.entity.clone(),
                window: row.window,
                sources: rule.def.sources.iter().map(|s| s.to_string()).collect(),
                summary: summary(rule.def.summary, &row.entity, &evidence),
                evidence,
            });
        }
    }
}

/// The `{name}` placeholders of a summary, `{entity}` excluded.
fn placeholders(template: &'static str) -> impl Iterator<Item = &'static str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(n, _)| n))
        .filter(|n| *n != "entity")
}

fn summary(template: &str, entity: &Entity, evidence: &[(String, f64)]) -> String {
    let mut s = template.replace("{entity}", &entity.to_string());
    for (n, v) in evidence {
        let text = if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        };
        s = s.replace(&format!("{{{n}}}"), &text);
    }
    s
}

/// 128 bits of FNV-1a (two 64-bit passes with different offsets) over the
/// detection, the entity and the window: stable across runs, workers and builds.
pub fn alert_id(rule: &str, entity: &Entity, window: u64) -> String {
    let text = format!("{rule}\u{0}{entity}\u{0}{window}");
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// Runs the detections over feature rows: the rows pass on unchanged, and the
/// alerts they raise come out as a second stream.
pub trait Detect<'scope> {
    fn detect(
        self,
        detector: Detector,
        counters: Arc<DetectCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FeatureRow>>,
        Stream<'scope, u64, Vec<Alert>>,
    );
}

impl<'scope> Detect<'scope> for Stream<'scope, u64, Vec<FeatureRow>> {
    fn detect(
        self,
        mut detector: Detector,
        counters: Arc<DetectCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FeatureRow>>,
        Stream<'scope, u64, Vec<Alert>>,
    ) {
        let mut builder = OperatorBuilder::new("Detect".to_owned(), self.scope());
        // Rows of an entity are already on one worker, in window order.
        let mut input = builder.new_input(self, Pipeline);
        let (rows_out, rows) = builder.new_output();
        let (alerts_out, alerts) = builder.new_output();
        let mut rows_out = OutputBuilder::from(rows_out);
        let mut alerts_out = OutputBuilder::from(alerts_out);
        builder.build(move |_| {
            move |_frontiers| {
                let mut rows_h = rows_out.activate();
                let mut alerts_h = alerts_out.activate();
                input.for_each(|cap, data| {
                    let mut raised = Vec::new();
                    for r in data.iter() {
                        detector.observe(r, &mut raised);
                    }
                    if !raised.is_empty() {
                        counters
                            .alerts
                            .fetch_add(raised.len() as u64, Ordering::Relaxed);
                        alerts_h.session(&cap).give_container(&mut raised);
                    }
                    rows_h.session(&cap).give_container(data);
                });
            }
        });
        (rows, alerts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::Addr;

    fn row(defs: &[FeatureDef], window: u64, set: &[(&str, f64)]) -> FeatureRow {
        let mut values = vec![f64::NAN; defs.len()].into_boxed_slice();
        for (n, v) in set {
            let i = defs.iter().position(|d| d.name == *n).expect("feature");
            values[i] = *v;
        }
        FeatureRow {
            entity: Entity::Ip(Addr::from(std::net::IpAddr::from([10, 0, 0, 1]))),
            window,
            values,
        }
    }

    #[test]
    fn detections_md_matches_the_catalogue() {
        crate::assert_doc_fresh("docs/DETECTIONS.md", &markdown(), "detections_md");
    }

    #[test]
    fn every_detection_names_catalogue_features() {
        let defs = crate::features::defs();
        Detector::new(&defs, &[]).expect("all features resolve");
    }

    #[test]
    fn an_occurrence_over_overlapping_windows_is_one_alert_with_a_stable_id() {
        let defs = crate::features::defs();
        let mut d = Detector::new(&defs, &[]).expect("detector");
        let scan = [
            ("distinct_dst_ports_out", 500.0),
            ("distinct_peers_out", 1.0),
        ];
        let mut out = Vec::new();
        for w in [10, 11, 12] {
            d.observe(&row(&defs, w, &scan), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!(
            (a.rule.as_str(), a.window, a.severity),
            ("vertical_scan", 10, Severity::High)
        );
        assert_eq!(a.summary, "10.0.0.1 sent to 500 ports on 1 host(s)");
        assert_eq!(a.id, alert_id("vertical_scan", &a.entity, 10));
        assert_eq!(a.id.len(), 32);
        // A quiet window ends the occurrence; the next one is a new alert.
        d.observe(
            &row(&defs, 13, &[("distinct_dst_ports_out", 3.0)]),
            &mut out,
        );
        d.observe(&row(&defs, 14, &scan), &mut out);
        assert_eq!(out.len(), 2);
        assert_ne!(out[1].id, out[0].id);
        // Below a threshold, or null, nothing fires.
        let mut none = Vec::new();
        let mut fresh = Detector::new(&defs, &[]).expect("detector");
        fresh.observe(
            &row(
                &defs,
                1,
                &[
                    ("distinct_dst_ports_out", 99.0),
                    ("distinct_peers_out", 1.0),
                ],
            ),
            &mut none,
        );
        fresh.observe(
            &row(&defs, 3, &[("distinct_dst_ports_out", 500.0)]),
            &mut none,
        );
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn settings_change_thresholds_severity_and_enablement() {
        let defs = crate::features::defs();
        let s = DetectionSettings {
            enabled: true,
            severity: Severity::Low,
            thresholds: vec![50.0, 4.0],
        };
        let mut d = Detector::new(&defs, &[("vertical_scan".into(), s.clone())]).expect("detector");
        let mut out = Vec::new();
        d.observe(
            &row(
                &defs,
                1,
                &[
                    ("distinct_dst_ports_out", 60.0),
                    ("distinct_peers_out", 1.0),
                ],
            ),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].severity, Severity::Low);
        let off = DetectionSettings {
            enabled: false,
            ..s
        };
        let mut d = Detector::new(&defs, &[("vertical_scan".into(), off)]).expect("detector");
        let mut out = Vec::new();
        d.observe(
            &row(
                &defs,
                1,
                &[
                    ("distinct_dst_ports_out", 600.0),
                    ("distinct_peers_out", 1.0),
                ],
            ),
            &mut out,
        );
        assert!(out.is_empty());
    }
}
