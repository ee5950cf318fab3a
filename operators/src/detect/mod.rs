//! Detections over feature rows and events, and the alerts they raise.
//!
//! - builtin.rs: the built-in detections, read from operators/rules/builtin.toml
//!   and tuned in flows.toml (`[detections.<name>]`);
//! - expr.rs and rules.rs: the condition language and users' `[[rules]]`;
//! - kinds.rs: [`RuleSpec`], one rule of a rules file, of any kind —
//!   `condition` (over each entity's feature rows: this file's [`Detector`]),
//!   `count` (events counted over a timespan: crate::count_rules) or `learn`
//!   (each device's normal: crate::device_watch); what every kind shares (alert
//!   ids, counters, the event-detector operator) is crate::alerting;
//! - this file: [`Detector`], which runs both over each entity's rows, and the
//!   operators around it; groups.rs: rules over groups of entities;
//! - docs.rs: docs/DETECTIONS.md, from all of them.
//!
//! An occurrence that fires in consecutive windows (they overlap by 30 s, so
//! one burst is seen twice) is one alert, raised in its first window
//! (crate::occurrence); its id hashes the detection, the entity and that
//! window, so the same input always gives the same id.
//!
//! (Over 600 lines with its tests (two thirds of it), which exercise the
//! detector and the operators around it together.)

mod builtin;
mod docs;
mod expr;
mod groups;
mod kinds;
mod rules;

use std::sync::Arc;

use amoskys_schemas::{Alert, Entity, FeatureDef, FeatureRow};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

pub use crate::alerting::{DetectCounters, EventDetector, alert_id, detect_events};
pub use builtin::{
    BuiltinLearn, Cmp, Condition, DETECTIONS, DetectionDef, DetectionSettings, LEARNING, Tunings,
    check_name,
};
pub use docs::markdown;
pub use expr::{Expr, Op, parse_condition};
pub use groups::{GroupRules, detect_groups};
pub use kinds::{RuleKind, RuleSpec};
pub use rules::{Grouping, UserRule};

use crate::occurrence::Occurrences;
use rules::Rule;

/// The timely-free core: feature rows in, alerts out. Rows of one entity must
/// come in window order.
pub struct Detector {
    rules: Vec<Rule>,
    /// Per (rule, entity): the last window the rule fired in.
    firing: Occurrences<(usize, Entity)>,
}

impl Detector {
    /// `settings` by detection name (a detection not named keeps its defaults),
    /// and the rules written in flows.toml.
    pub fn new(
        defs: &[FeatureDef],
        settings: &[(String, DetectionSettings)],
        user_rules: &[UserRule],
    ) -> Result<Self, String> {
        let col = |n: &str| {
            defs.iter()
                .position(|d| d.name == n)
                .ok_or_else(|| format!("feature {n} is not in the catalogue"))
        };
        let evidence = |names: Vec<String>| -> Result<Vec<(usize, String)>, String> {
            let mut out: Vec<(usize, String)> = Vec::new();
            for n in names {
                if !out.iter().any(|(_, e)| *e == n) {
                    out.push((col(&n)?, n));
                }
            }
            Ok(out)
        };
        let mut rules = Vec::new();
        // A rule named like a built-in replaces it.
        let replaced = |name: &str| user_rules.iter().any(|r| r.name == name);
        for def in DETECTIONS.iter().filter(|d| !replaced(d.name)) {
            let s = settings
                .iter()
                .find(|(n, _)| n == def.name)
                .map_or_else(|| DetectionSettings::defaults(def), |(_, s)| s.clone());
            if !s.enabled {
                continue;
            }
            let mut expr: Option<Expr> = None;
            for (c, t) in def.conditions.iter().zip(&s.thresholds) {
                let op = match c.cmp {
                    Cmp::AtLeast => Op::Ge,
                    Cmp::AtMost => Op::Le,
                };
                let cmp = Expr::Cmp {
                    col: col(c.feature)?,
                    op,
                    value: *t,
                };
                expr = Some(match expr {
                    None => cmp,
                    Some(e) => Expr::And(Box::new(e), Box::new(cmp)),
                });
            }
            let names = def
                .conditions
                .iter()
                .map(|c| c.feature.to_string())
                .chain(placeholders(def.summary))
                .collect();
            rules.push(Rule {
                name: def.name.to_string(),
                severity: s.severity,
                sources: def.sources.iter().map(|s| s.to_string()).collect(),
                expr: expr.ok_or_else(|| format!("{} has no condition", def.name))?,
                evidence: evidence(names)?,
                summary: def.summary.to_string(),
            });
        }
        for r in user_rules {
            r.check(defs).map_err(|e| format!("rule {}: {e}", r.name))?;
            if Grouping::parse(r.group_by.as_deref())? == Grouping::Entity {
                rules.push(r.compile(defs)?);
            }
        }
        Ok(Detector {
            rules,
            firing: Occurrences::new(1),
        })
    }

    /// The alerts `row` raises.
    pub fn observe(&mut self, row: &FeatureRow, out: &mut Vec<Alert>) {
        for (k, rule) in self.rules.iter().enumerate() {
            if rule.expr.eval(&row.values) != Some(true) {
                continue;
            }
            if !self.firing.starts((k, row.entity.clone()), row.window) {
                continue;
            }
            let evidence: Vec<(String, f64)> = rule
                .evidence
                .iter()
                .filter_map(|(c, n)| row.get(*c).map(|v| (n.clone(), v)))
                .collect();
            out.push(Alert {
                id: alert_id(&rule.name, &row.entity, row.window),
                rule: rule.name.clone(),
                severity: rule.severity,
                entity: row.entity.clone(),
                window: row.window,
                sources: rule.sources.clone(),
                summary: summary(&rule.summary, &row.entity, &evidence),
                evidence,
            });
        }
    }
}

/// The `{name}` placeholders of a summary, `{entity}` excluded.
fn placeholders(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(n, _)| n))
        .filter(|n| *n != "entity")
        .map(str::to_string)
        .collect()
}

fn summary(template: &str, entity: &Entity, evidence: &[(String, f64)]) -> String {
    let mut s = template.replace("{entity}", &entity.to_string());
    for (n, v) in evidence {
        s = s.replace(&format!("{{{n}}}"), &crate::alerting::summary_number(*v));
    }
    s
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
                    counters.emit(&mut raised, |v| alerts_h.session(&cap).give_container(v));
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
    use amoskys_schemas::Severity;

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
        Detector::new(&defs, &[], &[]).expect("all features resolve");
    }

    #[test]
    fn an_occurrence_over_overlapping_windows_is_one_alert_with_a_stable_id() {
        let defs = crate::features::defs();
        let mut d = Detector::new(&defs, &[], &[]).expect("detector");
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
        // Pinned: receivers deduplicate on ids across upgrades (FNV-1a of
        // "vertical_scan\0" "10.0.0.1\0" "10", computed apart from this code).
        assert_eq!(a.id, "d994dc082c9a3360ed0133cf86ab15db");
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
        let mut fresh = Detector::new(&defs, &[], &[]).expect("detector");
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
        let mut d =
            Detector::new(&defs, &[("vertical_scan".into(), s.clone())], &[]).expect("detector");
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
        let mut d = Detector::new(&defs, &[("vertical_scan".into(), off)], &[]).expect("detector");
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

#[cfg(test)]
mod rule_tests {
    use super::*;
    use amoskys_schemas::Addr;
    use amoskys_schemas::Severity;

    fn row(defs: &[FeatureDef], set: &[(&str, f64)]) -> FeatureRow {
        let mut values = vec![f64::NAN; defs.len()].into_boxed_slice();
        for (n, v) in set {
            values[defs.iter().position(|d| d.name == *n).expect("feature")] = *v;
        }
        FeatureRow {
            entity: Entity::Ip(Addr::from(std::net::IpAddr::from([10, 0, 0, 2]))),
            window: 7,
            values,
        }
    }

    fn rule(condition: &str) -> UserRule {
        UserRule {
            name: "mine".into(),
            condition: condition.into(),
            severity: Severity::Medium,
            sources: vec![],
            summary: None,
            group_by: None,
            min_entities: 1,
        }
    }

    #[test]
    fn conditions_combine_with_and_or_not_and_treat_null_as_unknown() {
        let defs = crate::features::defs();
        let fires = |cond: &str, set: &[(&str, f64)]| {
            let mut d = Detector::new(
                &defs,
                &[(
                    "vertical_scan".into(),
                    DetectionSettings {
                        enabled: false,
                        severity: Severity::Low,
                        thresholds: vec![0.0, 0.0],
                    },
                )],
                &[rule(cond)],
            )
            .expect("detector");
            let mut out = Vec::new();
            d.observe(&row(&defs, set), &mut out);
            out.iter().any(|a| a.rule == "mine")
        };
        let c =
            "conn_failed_out >= 20 and (failed_conn_ratio_out >= 0.8 or distinct_peers_out > 10)";
        assert!(fires(
            c,
            &[("conn_failed_out", 25.0), ("failed_conn_ratio_out", 0.9)]
        ));
        assert!(fires(
            c,
            &[
                ("conn_failed_out", 25.0),
                ("failed_conn_ratio_out", 0.1),
                ("distinct_peers_out", 11.0)
            ]
        ));
        assert!(!fires(
            c,
            &[
                ("conn_failed_out", 25.0),
                ("failed_conn_ratio_out", 0.1),
                ("distinct_peers_out", 10.0)
            ]
        ));
        assert!(!fires(
            c,
            &[("conn_failed_out", 19.0), ("failed_conn_ratio_out", 0.9)]
        ));
        // Null is unknown: `not` of unknown does not fire, `or` with a true side does.
        assert!(!fires("not bytes_out > 5", &[]));
        assert!(fires("not bytes_out > 5", &[("bytes_out", 1.0)]));
        assert!(fires(
            "bytes_out > 5 or packets_out == 3",
            &[("packets_out", 3.0)]
        ));
        assert!(fires(
            "bytes_out != 1e3 and bytes_out < -1.5e-2",
            &[("bytes_out", -1.0)]
        ));
    }

    #[test]
    fn a_bad_rule_says_why() {
        let defs = crate::features::defs();
        for (cond, says) in [
            ("bytes_outt > 5", "not a feature"),
            ("bytes_out = 5", "unknown operator"),
            ("bytes_out >> 5", "not a number"),
            ("bytes_out > five", "not a number"),
            ("(bytes_out > 5", "without its )"),
            ("bytes_out > 5 packets_out < 2", "unexpected"),
            ("bytes_out >", "ends where a number"),
            ("bytes_out > 5 and", "ends where a feature"),
            ("bytes_out ~ 5", "unexpected character"),
        ] {
            let e = rule(cond).check(&defs).expect_err(cond);
            assert!(e.contains(says), "{cond}: {e}");
        }
        let mut r = rule("auth_failures >= 3");
        r.sources = vec!["pcap".into()];
        assert!(
            r.check(&defs)
                .expect_err("source")
                .contains("comes from syslog")
        );
    }

    #[test]
    fn a_rule_named_like_a_built_in_replaces_it() {
        let defs = crate::features::defs();
        let flood = [("tcp_syn_in", 5000.0), ("distinct_peers_in", 200.0)];
        let fired = |rules: &[UserRule]| {
            let mut d = Detector::new(&defs, &[], rules).expect("detector");
            let mut out = Vec::new();
            d.observe(&row(&defs, &flood), &mut out);
            out.into_iter()
                .filter(|a| a.rule == "syn_flood")
                .map(|a| (a.severity, a.summary))
                .collect::<Vec<_>>()
        };
        let built_in = fired(&[]);
        assert_eq!(built_in.len(), 1);
        assert_eq!(built_in[0].0, Severity::Critical);
        // The user's version: another threshold, severity and summary.
        let mut r = rule("tcp_syn_in >= 10000");
        r.name = "syn_flood".into();
        r.check(&defs).expect("a built-in's name may be taken");
        assert!(
            fired(&[r.clone()]).is_empty(),
            "the built-in no longer runs"
        );
        r.condition = "tcp_syn_in >= 1000".into();
        r.severity = Severity::Low;
        let mine = fired(&[r]);
        assert_eq!(mine.len(), 1);
        assert_eq!(
            mine[0],
            (Severity::Low, "10.0.0.2 matched tcp_syn_in >= 1000".into())
        );
    }

    #[test]
    fn the_built_in_rules_file_is_read_as_shipped_and_refuses_other_forms() {
        assert!(DETECTIONS.len() >= 20);
        let scan = DETECTIONS
            .iter()
            .find(|d| d.name == "vertical_scan")
            .expect("scan");
        assert_eq!(scan.severity, Severity::High);
        assert_eq!(
            scan.conditions
                .iter()
                .map(|c| (c.feature, c.cmp, c.default))
                .collect::<Vec<_>>(),
            [
                ("distinct_dst_ports_out", Cmp::AtLeast, 100.0),
                ("distinct_peers_out", Cmp::AtMost, 4.0)
            ]
        );
        let one = |cond: &str| {
            builtin::parse_builtin(&format!(
                "[[rules]]\nname = \"x\"\nseverity = \"low\"\nsources = [\"pcap\"]\n\
                 condition = \"{cond}\"\nsummary = \"s\"\ndescription = \"d\"\n"
            ))
        };
        assert!(one("tcp_syn_in >= 1 and bytes_out <= 2").is_ok());
        for (cond, says) in [
            ("tcp_syn_in > 1", ">= or <="),
            ("tcp_syn_in >= 1 or bytes_out <= 2", "conjunction"),
            ("tcp_syn_in >= 1 and tcp_syn_in <= 9", "twice"),
            ("no_such_feature >= 1", "no_such_feature"),
        ] {
            let e = one(cond).expect_err(cond);
            assert!(e.contains(says), "{cond}: {e}");
        }
    }

    #[test]
    fn a_grouped_rule_alerts_once_per_network_when_enough_hosts_match() {
        use timely::dataflow::operators::ToStream;
        use timely::dataflow::operators::capture::{Capture, Event};
        let defs = crate::features::defs();
        let mut r = rule("conn_failed_out >= 5");
        r.group_by = Some("network/24".into());
        r.min_entities = 3;
        r.check(&defs).expect("valid");
        let host = |ip: [u8; 4], window: u64, failed: f64| {
            let mut x = row(&defs, &[("conn_failed_out", failed)]);
            x.entity = Entity::Ip(Addr::from(std::net::IpAddr::from(ip)));
            x.window = window;
            x
        };
        let mut rows = Vec::new();
        // Window 10: three hosts of 10.0.0.0/24 match (one twice as strongly), one
        // of 10.0.1.0/24; window 11: the same three (the same occurrence); window
        // 12: only two; window 13: three again (a new occurrence).
        for w in [10, 11, 13] {
            rows.push(host([10, 0, 0, 1], w, 5.0));
            rows.push(host([10, 0, 0, 2], w, 9.0));
            rows.push(host([10, 0, 0, 3], w, 6.0));
        }
        rows.push(host([10, 0, 0, 1], 12, 5.0));
        rows.push(host([10, 0, 0, 2], 12, 5.0));
        rows.push(host([10, 0, 0, 4], 12, 1.0));
        rows.push(host([10, 0, 1, 1], 10, 50.0));
        let rules = GroupRules::new(&defs, &[r.clone()]).expect("rules");
        let rx = timely::example(move |scope| {
            detect_groups(rows.to_stream(scope), rules, Arc::default()).capture()
        });
        let alerts: Vec<Alert> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Messages(_, v) => Some(v),
                Event::Progress(_) => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            alerts
                .iter()
                .map(|a| (a.entity.to_string(), a.window))
                .collect::<Vec<_>>(),
            [
                ("10.0.0.0/24".to_string(), 10),
                ("10.0.0.0/24".to_string(), 13)
            ]
        );
        assert_eq!(
            alerts[0].evidence,
            [
                ("entities".to_string(), 3.0),
                ("conn_failed_out".to_string(), 9.0)
            ]
        );
        assert_eq!(
            alerts[0].summary,
            "10.0.0.0/24: 3 entities matched conn_failed_out >= 5"
        );
        // Per-entity detection leaves grouped rules alone.
        let d = Detector::new(&defs, &[], &[r]).expect("detector");
        assert!(d.rules.iter().all(|x| x.name != "mine"));
        for (g, says) in [
            (Some("network/33"), "network/"),
            (Some("subnet"), "network/"),
        ] {
            let mut bad = rule("bytes_out > 1");
            bad.group_by = g.map(str::to_string);
            assert!(bad.check(&defs).expect_err(says).contains(says));
        }
        let mut bad = rule("bytes_out > 1");
        bad.min_entities = 2;
        assert!(bad.check(&defs).expect_err("min").contains("group_by"));
    }

    #[test]
    fn a_user_rule_alerts_with_its_evidence_and_derived_sources() {
        let defs = crate::features::defs();
        let mut r = rule("auth_failures_per_conn_in >= 3");
        r.summary = Some("{entity} failed {auth_failures} logins".into());
        let mut d = Detector::new(&defs, &[], &[r]).expect("detector");
        let mut out = Vec::new();
        d.observe(
            &row(
                &defs,
                &[("auth_failures_per_conn_in", 4.0), ("auth_failures", 12.0)],
            ),
            &mut out,
        );
        let a = out.iter().find(|a| a.rule == "mine").expect("alert");
        assert_eq!(a.sources, ["syslog", "pcap"]);
        assert_eq!(a.summary, "10.0.0.2 failed 12 logins");
        assert_eq!(
            a.evidence,
            [
                ("auth_failures_per_conn_in".to_string(), 4.0),
                ("auth_failures".to_string(), 12.0)
            ]
        );
    }

    #[test]
    fn alert_ids_are_pinned_across_builds() {
        // Values computed apart from this code (FNV-1a, offsets 0xcbf29ce484222325
        // and 0x84222325cbf29ce4, over "rule\0entity\0window"); a change here
        // breaks receivers' deduplication of alerts across an upgrade.
        let v6 = Entity::Ip(amoskys_schemas::Addr::from(
            "2001:db8::7".parse::<std::net::IpAddr>().expect("address"),
        ));
        assert_eq!(
            alert_id("login_bruteforce_logs", &v6, 57_000_000),
            "f8a682b265ff1ef016e18f03439d0cb5"
        );
        assert_eq!(
            alert_id("incident", &Entity::Name("host.example".into()), 0),
            "8d0b71bf38984b1b9ccbcbf43c97e79c"
        );
    }
}
