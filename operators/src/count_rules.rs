//! Counting rules over events, in the manner of Sigma's aggregations: the events
//! that match a filter, grouped by some of their fields, counted (every event, or
//! the distinct values of a field) over a sliding timespan of event time; a group
//! whose count reaches the threshold raises an alert, at most one per timespan.
//!
//! Fields are the `events` table's columns. An MQTT or SNMP record is one event
//! per sample, as it is one row per sample there.

use std::collections::VecDeque;

use serde::Deserialize;
use std::sync::Arc;

use amoskys_schemas::{Addr, Alert, Entity, EventField, EventRow, Record, Severity, pane_of};

use crate::Map;
use crate::alerting::{EventDetector, alert_id};

/// The fields a counting rule may filter, group and count on: the `events`
/// table's, by index in [`EventField::ALL`].
fn field_name(i: usize) -> &'static str {
    EventField::ALL[i].name()
}

/// Groups kept per rule at most; past it the group seen longest ago goes.
const MAX_GROUPS: usize = 100_000;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Every matching event.
    Events,
    /// Distinct values of a field among the matching events.
    Values(usize),
}

/// A counting rule as flows.toml writes it (`[[rules]]` with `kind = "count"`,
/// or the older `[[count_rules]]`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRuleSpec {
    pub name: String,
    /// `field = pattern` pairs, all of which must match; a pattern matches the
    /// whole value, case-insensitively, with `*` for any run of characters; a
    /// list of patterns matches when one does.
    #[serde(default, deserialize_with = "patterns")]
    pub filter: Vec<(String, Vec<String>)>,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// `event_count` or `value_count`.
    #[serde(default = "event_count")]
    pub count: String,
    /// The field whose distinct values `value_count` counts.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(rename = "timespan", deserialize_with = "nanos")]
    pub timespan_ns: i64,
    /// The count that fires it.
    pub threshold: u64,
    #[serde(default = "medium")]
    pub severity: Severity,
    /// One line, with `{group}`, `{count}` and `{timespan}` placeholders.
    #[serde(default)]
    pub summary: Option<String>,
}

fn event_count() -> String {
    "event_count".into()
}

fn medium() -> Severity {
    Severity::Medium
}

/// A duration as nanoseconds, greater than zero.
fn nanos<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = amoskys_schemas::values::PositiveSecs::deserialize(d)?;
    Ok(s.0.as_nanos_i64())
}

/// `field = "pattern"` or `field = ["pattern", ...]`, by field.
fn patterns<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Vec<String>)>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let m = std::collections::BTreeMap::<String, OneOrMany>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            let pats = match v {
                OneOrMany::One(p) => vec![p],
                OneOrMany::Many(ps) => ps,
            };
            (k, pats)
        })
        .collect())
}

fn field_index(name: &str) -> Result<usize, String> {
    EventField::ALL
        .iter()
        .position(|f| f.name() == name)
        .ok_or_else(|| {
            let all: Vec<&str> = EventField::ALL.iter().map(|f| f.name()).collect();
            format!(
                "{name:?} is not an event field (one of: {})",
                all.join(", ")
            )
        })
}

/// A checked rule, ready to run.
#[derive(Clone, Debug)]
pub struct CountRule {
    name: String,
    filter: Vec<(usize, Vec<Vec<String>>)>,
    group_by: Vec<usize>,
    count: Count,
    timespan_ns: i64,
    threshold: u64,
    severity: Severity,
    summary: Option<String>,
}

impl CountRuleSpec {
    /// Checks the rule: a clear reason when it is wrong.
    pub fn check(&self) -> Result<CountRule, String> {
        if self.name.trim().is_empty() {
            return Err("the name is empty".into());
        }
        let mut filter = Vec::new();
        for (f, pats) in &self.filter {
            let i = field_index(f)?;
            if pats.is_empty() || pats.iter().any(|p| p.is_empty()) {
                return Err(format!("filter {f}: an empty pattern matches nothing"));
            }
            filter.push((
                i,
                pats.iter()
                    .map(|p| p.to_lowercase().split('*').map(str::to_string).collect())
                    .collect(),
            ));
        }
        let group_by = self
            .group_by
            .iter()
            .map(|g| field_index(g))
            .collect::<Result<Vec<_>, _>>()?;
        let count = match (self.count.as_str(), &self.value) {
            ("event_count", None) => Count::Events,
            ("event_count", Some(_)) => {
                return Err("value applies to count = \"value_count\" only".into());
            }
            ("value_count", Some(v)) => Count::Values(field_index(v)?),
            ("value_count", None) => {
                return Err("count = \"value_count\" needs value = \"<field>\"".into());
            }
            (other, _) => {
                return Err(format!(
                    "count = {other:?}: use \"event_count\" or \"value_count\""
                ));
            }
        };
        if self.timespan_ns <= 0 {
            return Err("timespan must be greater than zero".into());
        }
        if self.threshold == 0 {
            return Err("threshold must be at least 1".into());
        }
        if let Some(s) = &self.summary {
            for p in s.split('{').skip(1).filter_map(|s| s.split_once('}')) {
                if !matches!(p.0, "group" | "count" | "timespan") {
                    return Err(format!(
                        "summary placeholder {{{}}} is not one of {{group}}, {{count}}, {{timespan}}",
                        p.0
                    ));
                }
            }
        }
        Ok(CountRule {
            name: self.name.clone(),
            filter,
            group_by,
            count,
            timespan_ns: self.timespan_ns,
            threshold: self.threshold,
            severity: self.severity,
            summary: self.summary.clone(),
        })
    }
}

/// Whether `value` (lowercased) matches a pattern split at its `*`s.
fn glob(parts: &[String], value: &str) -> bool {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return value.is_empty(),
    };
    let Some(mut v) = value.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return v.is_empty();
    };
    for m in middle {
        match v.find(m.as_str()) {
            Some(i) => v = &v[i + m.len()..],
            None => return false,
        }
    }
    v.len() >= last.len() && v.ends_with(last.as_str())
}

/// One event's fields, as the `events` table writes them.
struct Fields<'a> {
    row: &'a EventRow,
    sample: Option<&'a amoskys_schemas::Sample>,
    entity: Option<&'a str>,
}

impl Fields<'_> {
    fn get(&self, i: usize) -> Option<String> {
        EventField::ALL[i]
            .text(self.row, self.sample, self.entity)
            .map(|v| v.into_owned())
    }
}

#[derive(Default)]
struct Group {
    /// Event count: the times of the newest `threshold` events.
    times: VecDeque<i64>,
    /// Value count: the newest time of each value, at most `threshold` values.
    values: Map<String, i64>,
    last_seen: i64,
    last_fired: Option<i64>,
}

/// The timely-free core: events in, alerts out.
pub struct CountRules {
    rules: Vec<CountRule>,
    groups: Vec<Map<Vec<Option<String>>, Group>>,
    /// Groups forgotten because a rule held `MAX_GROUPS` of them.
    pub evicted: u64,
}

impl CountRules {
    pub fn new(rules: Vec<CountRule>) -> Self {
        let groups = rules.iter().map(|_| Map::default()).collect();
        CountRules {
            rules,
            groups,
            evicted: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl EventDetector for CountRules {
    fn observe(&mut self, row: &EventRow, out: &mut Vec<Alert>) {
        let (ts, samples): (i64, Vec<Option<&amoskys_schemas::Sample>>) = match &row.record {
            Record::Syslog(r) => (r.ts_ns, vec![None]),
            Record::Device(d) if d.samples.is_empty() => (d.ts_ns, vec![None]),
            Record::Device(d) => (d.ts_ns, d.samples.iter().map(Some).collect()),
        };
        let entity = row.entity().map(|e| e.to_string());
        for sample in samples {
            let f = Fields {
                row,
                sample,
                entity: entity.as_deref(),
            };
            for (k, rule) in self.rules.iter().enumerate() {
                let matches = rule.filter.iter().all(|(i, pats)| {
                    f.get(*i)
                        .is_some_and(|v| pats.iter().any(|p| glob(p, &v.to_lowercase())))
                });
                if !matches {
                    continue;
                }
                let key: Vec<Option<String>> = rule.group_by.iter().map(|i| f.get(*i)).collect();
                let value = match rule.count {
                    Count::Values(i) => match f.get(i) {
                        Some(v) => Some(v),
                        None => continue,
                    },
                    Count::Events => None,
                };
                let groups = &mut self.groups[k];
                if groups.len() >= MAX_GROUPS && !groups.contains_key(&key) {
                    let horizon = ts - rule.timespan_ns;
                    groups.retain(|_, g| g.last_seen >= horizon);
                    if groups.len() >= MAX_GROUPS
                        && let Some(oldest) = groups
                            .iter()
                            .min_by_key(|(_, g)| g.last_seen)
                            .map(|(k, _)| k.clone())
                    {
                        groups.remove(&oldest);
                        self.evicted += 1;
                    }
                }
                let g = groups.entry(key.clone()).or_default();
                g.last_seen = g.last_seen.max(ts);
                let since = ts - rule.timespan_ns;
                let n = match value {
                    None => {
                        g.times.push_back(ts);
                        while g.times.len() as u64 > rule.threshold {
                            g.times.pop_front();
                        }
                        g.times.iter().filter(|t| **t > since).count() as u64
                    }
                    Some(v) => {
                        let t = g.values.entry(v).or_insert(ts);
                        *t = (*t).max(ts);
                        g.values.retain(|_, t| *t > since);
                        while g.values.len() as u64 > rule.threshold {
                            if let Some(old) = g
                                .values
                                .iter()
                                .min_by_key(|(_, t)| **t)
                                .map(|(v, _)| v.clone())
                            {
                                g.values.remove(&old);
                            }
                        }
                        g.values.len() as u64
                    }
                };
                if n < rule.threshold || g.last_fired.is_some_and(|f| f > since) {
                    continue;
                }
                g.last_fired = Some(ts);
                out.push(alert(rule, &key, n, ts));
            }
        }
    }
}

fn alert(rule: &CountRule, key: &[Option<String>], n: u64, ts: i64) -> Alert {
    let group: Vec<String> = rule
        .group_by
        .iter()
        .zip(key)
        .map(|(i, v)| format!("{}={}", field_name(*i), v.as_deref().unwrap_or("")))
        .collect();
    let group = if group.is_empty() {
        "all events".to_string()
    } else {
        group.join(",")
    };
    // A group of one address is that host; any other group is named by its values.
    let entity = match key {
        [Some(v)] => match v.parse::<std::net::IpAddr>() {
            Ok(ip) => Entity::Ip(Addr::from(ip)),
            Err(_) => Entity::Name(Arc::from(v.as_str())),
        },
        _ => Entity::Name(Arc::from(group.as_str())),
    };
    let span = humantime_secs(rule.timespan_ns);
    let what = match rule.count {
        Count::Events => format!("{n} events"),
        Count::Values(i) => format!("{n} distinct {}", field_name(i)),
    };
    let summary = match &rule.summary {
        Some(s) => s
            .replace("{group}", &group)
            .replace("{count}", &n.to_string())
            .replace("{timespan}", &span),
        None => format!("{group}: {what} within {span}"),
    };
    let pane = pane_of(ts.max(0));
    let sources = vec!["events".to_string()];
    Alert {
        id: alert_id(&rule.name, &entity, pane),
        rule: rule.name.clone(),
        severity: rule.severity,
        window: pane,
        sources,
        evidence: vec![
            ("count".to_string(), n as f64),
            ("timespan_s".to_string(), rule.timespan_ns as f64 / 1e9),
        ],
        summary,
        entity,
    }
}

fn humantime_secs(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::{AuthEvent, AuthKind, SyslogRecord};

    fn sshd(ts_s: i64, remote: &str, user: &str, kind: AuthKind) -> EventRow {
        EventRow {
            source: Arc::from("auth"),
            log_offset: None,
            record: Record::Syslog(SyslogRecord {
                ts_ns: ts_s * 1_000_000_000,
                received_ns: ts_s * 1_000_000_000,
                sender: Some("10.0.0.5".parse().expect("ip")),
                protocol: "rfc3164",
                facility: Some("auth"),
                severity: Some(6),
                hostname: Some("web1".into()),
                appname: Some("sshd".into()),
                procid: None,
                msgid: None,
                structured_data: None,
                message: format!("Failed password for {user} from {remote} port 4000 ssh2"),
                parse_error: None,
                auth: Some(Box::new(AuthEvent {
                    method: Some("password".into()),
                    user: Some(user.into()),
                    remote: remote.parse().ok(),
                    port: Some(4000),
                    ..AuthEvent::new(kind, "sshd_failed")
                })),
            }),
        }
    }

    fn spec(count: &str, value: Option<&str>, threshold: u64) -> CountRuleSpec {
        CountRuleSpec {
            name: "spray".into(),
            filter: vec![
                ("appname".into(), vec!["SSHD".into()]),
                ("message".into(), vec!["failed *password* for *".into()]),
            ],
            group_by: vec!["auth_remote".into()],
            count: count.into(),
            value: value.map(str::to_string),
            timespan_ns: 300 * 1_000_000_000,
            threshold,
            severity: Severity::High,
            summary: None,
        }
    }

    #[test]
    fn value_count_fires_once_per_timespan_for_a_group_reaching_the_threshold() {
        let mut c = CountRules::new(vec![
            spec("value_count", Some("auth_user"), 3)
                .check()
                .expect("ok"),
        ]);
        let mut out = Vec::new();
        // The same user again and again: one value.
        for t in 0..10 {
            c.observe(&sshd(t, "203.0.113.9", "root", AuthKind::Failure), &mut out);
        }
        assert!(out.is_empty());
        for (t, u) in [(20, "admin"), (21, "oracle"), (22, "test"), (23, "guest")] {
            c.observe(&sshd(t, "203.0.113.9", u, AuthKind::Failure), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!(a.entity.to_string(), "203.0.113.9");
        assert_eq!(
            a.summary,
            "auth_remote=203.0.113.9: 3 distinct auth_user within 5m"
        );
        assert_eq!(a.window, 0);
        // Another group is counted apart; the same group fires again only once the
        // timespan has passed since it fired.
        for (t, u) in [(30, "a"), (31, "b")] {
            c.observe(&sshd(t, "198.51.100.1", u, AuthKind::Failure), &mut out);
        }
        assert_eq!(out.len(), 1);
        for (t, u) in [(400, "x"), (401, "y"), (402, "z")] {
            c.observe(&sshd(t, "203.0.113.9", u, AuthKind::Failure), &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].id, out[1].id);
    }

    #[test]
    fn event_count_slides_with_event_time() {
        let mut c = CountRules::new(vec![spec("event_count", None, 4).check().expect("ok")]);
        let mut out = Vec::new();
        // Four failures, but never four within 5 minutes.
        for t in [0, 200, 400, 600, 800] {
            c.observe(&sshd(t, "203.0.113.9", "root", AuthKind::Failure), &mut out);
        }
        assert!(out.is_empty());
        for t in [801, 802] {
            c.observe(&sshd(t, "203.0.113.9", "root", AuthKind::Failure), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence[0], ("count".to_string(), 4.0));
    }

    #[test]
    fn patterns_match_whole_values_with_wildcards() {
        let p = |s: &str| -> Vec<String> { s.split('*').map(str::to_string).collect() };
        assert!(glob(&p("failed *"), "failed password"));
        assert!(!glob(&p("failed"), "failed password"));
        assert!(glob(&p("*pass*"), "failed password for"));
        assert!(glob(&p("a*b*c"), "axxbyyc"));
        assert!(!glob(&p("a*b*c"), "axxbyy"));
        assert!(glob(&p("*"), ""));
        assert!(!glob(&p("ab*ba"), "aba"));
    }

    #[test]
    fn a_bad_rule_says_why() {
        for (s, says) in [
            (spec("value_count", None, 3), "needs value"),
            (
                spec("event_count", Some("auth_user"), 3),
                "\"value_count\" only",
            ),
            (spec("sum", None, 3), "event_count"),
            (spec("event_count", None, 0), "at least 1"),
        ] {
            let e = s.check().expect_err(says);
            assert!(e.contains(says), "{e}");
        }
        let mut s = spec("event_count", None, 3);
        s.group_by = vec!["remote".into()];
        assert!(s.check().expect_err("field").contains("not an event field"));
        let mut s = spec("event_count", None, 3);
        s.summary = Some("{entity} did it".into());
        assert!(s.check().expect_err("summary").contains("placeholder"));
    }
}
