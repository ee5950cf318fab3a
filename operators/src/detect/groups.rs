//! Grouped rules (`group_by = "network/<len>"` or `"all"`): matches of several
//! entities in one window make one alert for their group.

use std::collections::BTreeMap;
use std::sync::Arc;

use amoskys_schemas::{Alert, Entity, FeatureDef, FeatureRow};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use super::rules::{Grouping, Rule, UserRule};
use super::{DetectCounters, alert_id, summary};
use crate::occurrence::Occurrences;

/// One entity's row matching a grouped rule, on its way to the group's worker.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct GroupMatch {
    rule: usize,
    group: String,
    window: u64,
    entity: String,
    /// The rule's evidence features, in its order (NaN for null).
    values: Vec<f64>,
}

/// Rules whose `group_by` is a network or `all`: matches of several entities in
/// one window make one alert for the group, once `min_entities` of them match.
pub struct GroupRules {
    rules: Vec<(Rule, Grouping, u64)>,
}

impl GroupRules {
    pub fn new(defs: &[FeatureDef], user_rules: &[UserRule]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for r in user_rules {
            r.check(defs).map_err(|e| format!("rule {}: {e}", r.name))?;
            let g = Grouping::parse(r.group_by.as_deref())?;
            if g != Grouping::Entity {
                rules.push((r.compile(defs)?, g, r.min_entities));
            }
        }
        Ok(GroupRules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The group an entity falls in; a named device is in no network.
    fn group_of(g: Grouping, e: &Entity) -> Option<String> {
        match (g, e) {
            (Grouping::All, _) => Some("all".into()),
            (Grouping::Network(len), Entity::Ip(a)) => {
                let v4 = a.is_v4();
                let shown = if v4 { len } else { 64 };
                let net = a.masked(if v4 { 96 + len } else { 64 });
                Some(format!("{net}/{shown}"))
            }
            _ => None,
        }
    }
}

impl GroupRules {
    /// The matches `row` gives, one per grouped rule it satisfies.
    fn matches(&self, row: &FeatureRow, out: &mut Vec<GroupMatch>) {
        for (k, (rule, g, _)) in self.rules.iter().enumerate() {
            if rule.expr.eval(&row.values) != Some(true) {
                continue;
            }
            let Some(group) = GroupRules::group_of(*g, &row.entity) else {
                continue;
            };
            out.push(GroupMatch {
                rule: k,
                group,
                window: row.window,
                entity: row.entity.to_string(),
                values: rule
                    .evidence
                    .iter()
                    .map(|(c, _)| row.get(*c).unwrap_or(f64::NAN))
                    .collect(),
            });
        }
    }
}

/// The timely-free core of grouped detection: the matches of one complete
/// window in, the alerts of the groups with enough entities out.
pub struct GroupDetector {
    rules: Arc<GroupRules>,
    firing: Occurrences<(usize, String)>,
}

impl GroupDetector {
    pub fn new(rules: Arc<GroupRules>) -> Self {
        GroupDetector {
            rules,
            firing: Occurrences::new(1),
        }
    }

    /// Alerts for window `w`, given every match of that window (on this
    /// worker: matches are routed by rule and group, so a group's are together).
    fn window(&mut self, w: u64, matches: Vec<GroupMatch>) -> Vec<Alert> {
        let mut by: BTreeMap<(usize, String), Vec<GroupMatch>> = BTreeMap::new();
        for m in matches {
            by.entry((m.rule, m.group.clone())).or_default().push(m);
        }
        let mut out = Vec::new();
        for ((k, group), mut ms) in by {
            let (rule, _, min) = &self.rules.rules[k];
            ms.sort_by(|a, b| a.entity.cmp(&b.entity));
            ms.dedup_by(|a, b| a.entity == b.entity);
            if (ms.len() as u64) < *min {
                continue;
            }
            if !self.firing.starts((k, group.clone()), w) {
                continue;
            }
            let entity = Entity::Name(Arc::from(group.as_str()));
            let mut evidence = vec![("entities".to_string(), ms.len() as f64)];
            for (j, (_, n)) in rule.evidence.iter().enumerate() {
                let max = ms
                    .iter()
                    .map(|m| m.values[j])
                    .filter(|v| !v.is_nan())
                    .fold(f64::NAN, f64::max);
                if !max.is_nan() {
                    evidence.push((n.clone(), max));
                }
            }
            let text = rule.summary.replace("{entities}", &ms.len().to_string());
            out.push(Alert {
                id: alert_id(&rule.name, &entity, w),
                rule: rule.name.clone(),
                severity: rule.severity,
                summary: summary(&text, &entity, &evidence),
                entity,
                window: w,
                sources: rule.sources.clone(),
                evidence,
            });
        }
        out
    }
}

/// Evaluates grouped rules over feature rows: the matches are sent to one
/// worker per group, held until their window is complete, and counted.
pub fn detect_groups<'s>(
    rows: Stream<'s, u64, Vec<FeatureRow>>,
    rules: GroupRules,
    counters: Arc<DetectCounters>,
) -> Stream<'s, u64, Vec<Alert>> {
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::{Capability, Operator};
    let rules = Arc::new(rules);
    let r1 = rules.clone();
    let matches = rows.unary::<CapacityContainerBuilder<Vec<GroupMatch>>, _, _, _>(
        Pipeline,
        "GroupMatches",
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut v = Vec::new();
                    for row in data.iter() {
                        r1.matches(row, &mut v);
                    }
                    if !v.is_empty() {
                        output.session(&cap).give_container(&mut v);
                    }
                });
            }
        },
    );
    let route = |m: &GroupMatch| amoskys_schemas::stable_hash(&(m.rule, &m.group));
    matches.unary_frontier::<CapacityContainerBuilder<Vec<Alert>>, _, _, _>(
        Exchange::new(route),
        "GroupRules",
        move |_cap, _info| {
            // Rows of window w come at time w or w + 1: a window is complete
            // once the frontier has passed w + 1.
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<GroupMatch>)> = BTreeMap::new();
            let mut detector = GroupDetector::new(rules);
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each(|cap, data| {
                    for m in data.drain(..) {
                        let at = (m.window + 1).max(*cap.least().unwrap_or(&0));
                        pending
                            .entry(m.window)
                            .or_insert_with(|| (cap.delayed(&at, port), Vec::new()))
                            .1
                            .push(m);
                    }
                });
                while let Some(e) = pending.first_entry() {
                    if frontier.less_equal(&(e.key() + 1)) {
                        break;
                    }
                    let (w, (cap, ms)) = e.remove_entry();
                    let mut out = detector.window(w, ms);
                    counters.emit(&mut out, |v| output.session(&cap).give_container(v));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::{Addr, Severity};

    fn rule(condition: &str, group_by: &str, min_entities: u64) -> UserRule {
        UserRule {
            name: "grouped".into(),
            condition: condition.into(),
            severity: Severity::Medium,
            sources: Vec::new(),
            summary: None,
            group_by: Some(group_by.into()),
            min_entities,
        }
    }

    fn row(defs: &[FeatureDef], ip: [u8; 4], window: u64, failed: f64) -> FeatureRow {
        let mut values = vec![f64::NAN; defs.len()].into_boxed_slice();
        values[defs
            .iter()
            .position(|d| d.name == "conn_failed_out")
            .expect("feature")] = failed;
        FeatureRow {
            entity: Entity::Ip(Addr::from(std::net::IpAddr::from(ip))),
            window,
            values,
        }
    }

    /// Runs the core as the operator does: every window's matches, in order.
    fn run(rules: GroupRules, rows: &[FeatureRow]) -> Vec<Alert> {
        let rules = Arc::new(rules);
        let mut by: BTreeMap<u64, Vec<GroupMatch>> = BTreeMap::new();
        for r in rows {
            let mut v = Vec::new();
            rules.matches(r, &mut v);
            by.entry(r.window).or_default().extend(v);
        }
        let mut d = GroupDetector::new(rules);
        by.into_iter().flat_map(|(w, ms)| d.window(w, ms)).collect()
    }

    #[test]
    fn a_group_alerts_once_enough_distinct_entities_match_and_once_per_occurrence() {
        let defs = crate::features::defs();
        let rules = GroupRules::new(&defs, &[rule("conn_failed_out >= 5", "network/24", 2)])
            .expect("rules");
        let rows = [
            // Window 4: one host, twice (a duplicate row is one entity): too few.
            row(&defs, [10, 0, 0, 1], 4, 7.0),
            row(&defs, [10, 0, 0, 1], 4, 8.0),
            // Window 5: two hosts of 10.0.0.0/24 and a non-matching third.
            row(&defs, [10, 0, 0, 1], 5, 7.0),
            row(&defs, [10, 0, 0, 9], 5, 5.0),
            row(&defs, [10, 0, 0, 7], 5, 1.0),
            // Window 6: the same occurrence goes on.
            row(&defs, [10, 0, 0, 1], 6, 7.0),
            row(&defs, [10, 0, 0, 2], 6, 6.0),
            // Windows 7-8 quiet; window 9: a new occurrence.
            row(&defs, [10, 0, 0, 3], 9, 5.0),
            row(&defs, [10, 0, 0, 4], 9, 5.0),
        ];
        let alerts = run(rules, &rows);
        let got: Vec<(String, u64, f64)> = alerts
            .iter()
            .map(|a| (a.entity.to_string(), a.window, a.evidence[0].1))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.0/24".into(), 5, 2.0),
                ("10.0.0.0/24".into(), 9, 2.0)
            ]
        );
        assert_eq!(alerts[0].evidence[1], ("conn_failed_out".into(), 7.0));
    }

    #[test]
    fn all_groups_every_entity_and_named_devices_are_in_no_network() {
        let defs = crate::features::defs();
        let mut named = row(&defs, [0, 0, 0, 0], 3, 9.0);
        named.entity = Entity::Name("sensor-1".into());
        let rows = [row(&defs, [10, 0, 0, 1], 3, 9.0), named.clone()];
        let all = GroupRules::new(&defs, &[rule("conn_failed_out >= 5", "all", 2)]).expect("all");
        let got = run(all, &rows);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entity.to_string(), "all");
        let net =
            GroupRules::new(&defs, &[rule("conn_failed_out >= 5", "network/8", 1)]).expect("net");
        let got = run(net, &rows);
        assert_eq!(
            got.iter().map(|a| a.entity.to_string()).collect::<Vec<_>>(),
            ["10.0.0.0/8"],
            "the named device falls in no network"
        );
    }
}
