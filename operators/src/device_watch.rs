//! Detections that learn each MQTT device's normal: the topics it publishes on
//! and the range of each numeric value it reports. A device's first `learning`
//! span of event time (and, per value, at least `min_samples` samples) is
//! learned, not judged; after it, a topic the device never used, or a value
//! outside its learned range widened by `margin`, raises an alert.
//!
//! State is per device and bounded: at most `MAX_TOPICS` topics and
//! `MAX_METRICS` values per device, `MAX_DEVICES` devices (the one heard from
//! longest ago is forgotten first, counted).

use amoskys_schemas::{Alert, DeviceKind, Entity, EventRow, Record, Severity, pane_of};
use serde::Deserialize;

use crate::Map;
use crate::alerting::{EventDetector, alert_id};

const MAX_DEVICES: usize = 100_000;
const MAX_TOPICS: usize = 1_000;
const MAX_METRICS: usize = 1_000;

/// What a learning rule learns of each device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learn {
    /// The topics it publishes on: a new one alerts.
    Topics,
    /// The range of each numeric value it reports: a value outside it alerts.
    Values,
}

/// A learning rule (`kind = "learn"` in a rules file): each MQTT device's
/// normal, learned over its first `learning` of event time, then judged.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnRule {
    pub name: String,
    pub learn: Learn,
    #[serde(default = "medium")]
    pub severity: Severity,
    /// The span of each device's first events that is learned, not judged.
    #[serde(
        default = "ten_minutes",
        deserialize_with = "amoskys_schemas::values::duration"
    )]
    pub learning: std::time::Duration,
    /// `values`: samples of a value learned before it is judged, at least.
    #[serde(default = "twenty")]
    pub min_samples: u64,
    /// `values`: the learned range widened on each side by this many times its width.
    #[serde(default = "half")]
    pub margin: f64,
    /// Listed for documentation; a learning rule reads MQTT.
    #[serde(default = "mqtt")]
    pub sources: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn medium() -> Severity {
    Severity::Medium
}
fn ten_minutes() -> std::time::Duration {
    std::time::Duration::from_secs(600)
}
fn twenty() -> u64 {
    20
}
fn half() -> f64 {
    0.5
}
fn mqtt() -> Vec<String> {
    vec!["mqtt".into()]
}
fn yes() -> bool {
    true
}

impl LearnRule {
    /// The keys `[detections.<name>]` may set besides `enabled` and `severity`,
    /// with their current values.
    pub fn keys(&self) -> Vec<(&'static str, f64)> {
        let mut k = vec![("learning_minutes", self.learning.as_secs_f64() / 60.0)];
        if self.learn == Learn::Values {
            k.push(("min_samples", self.min_samples as f64));
            k.push(("margin", self.margin));
        }
        k
    }

    /// Sets one of [`LearnRule::keys`].
    pub fn tune(&mut self, key: &str, v: f64) -> Result<(), String> {
        if !self.keys().iter().any(|(k, _)| *k == key) || !v.is_finite() || v < 0.0 {
            let keys: Vec<&str> = self.keys().iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "{key}: not a key of this detection, or not a number at least 0 (enabled, severity, {})",
                keys.join(", ")
            ));
        }
        match key {
            "learning_minutes" => self.learning = std::time::Duration::from_secs_f64(v * 60.0),
            "min_samples" => self.min_samples = v as u64,
            _ => self.margin = v,
        }
        Ok(())
    }

    /// The summary its alerts carry, with placeholders named.
    pub fn summary(&self) -> &'static str {
        match self.learn {
            Learn::Topics => {
                "{entity} published on a new topic {topic} (it had used {topics_known})"
            }
            Learn::Values => {
                "{entity} {metric} = {value}, outside its learned range [{learned_min}, {learned_max}]"
            }
        }
    }

    /// Checks a rule of flows.toml: a clear reason when it is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("the name is empty".into());
        }
        if !self.margin.is_finite() || self.margin < 0.0 {
            return Err(format!(
                "margin = {}: must be a number at least 0",
                self.margin
            ));
        }
        if self.sources.iter().any(|s| s != "mqtt") {
            return Err(format!(
                "sources = {:?}: a learning rule learns MQTT devices (sources = [\"mqtt\"])",
                self.sources
            ));
        }
        Ok(())
    }

    fn learning_ns(&self) -> i64 {
        i64::try_from(self.learning.as_nanos()).unwrap_or(i64::MAX)
    }
}

#[derive(Default)]
struct Range {
    n: u64,
    min: f64,
    max: f64,
    /// The last pane it was out of range in.
    out_pane: Option<u64>,
}

#[derive(Default)]
struct Device {
    first_ns: i64,
    last_ns: i64,
    topics: crate::Set<String>,
    /// Per `values` rule, in the watch's order: each learns with its own span.
    values: Vec<Map<String, Range>>,
}

/// The timely-free core: MQTT events in, alerts out, for every enabled
/// learning rule.
pub struct DeviceWatch {
    topics: Vec<LearnRule>,
    values: Vec<LearnRule>,
    devices: Map<Entity, Device>,
    /// Devices forgotten to stay within `MAX_DEVICES`.
    pub evicted: u64,
}

impl DeviceWatch {
    pub fn new(rules: &[LearnRule]) -> Self {
        let of = |l: Learn| {
            rules
                .iter()
                .filter(|r| r.enabled && r.learn == l)
                .cloned()
                .collect()
        };
        DeviceWatch {
            topics: of(Learn::Topics),
            values: of(Learn::Values),
            devices: Map::default(),
            evicted: 0,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.topics.is_empty() || !self.values.is_empty()
    }
}

impl EventDetector for DeviceWatch {
    fn observe(&mut self, row: &EventRow, out: &mut Vec<Alert>) {
        let Record::Device(d) = &row.record else {
            return;
        };
        if d.kind != DeviceKind::Mqtt {
            return;
        }
        if self.devices.len() >= MAX_DEVICES
            && !self.devices.contains_key(&d.entity)
            && let Some(old) = self
                .devices
                .iter()
                .min_by_key(|(_, s)| s.last_ns)
                .map(|(e, _)| e.clone())
        {
            self.devices.remove(&old);
            self.evicted += 1;
        }
        let ts = d.ts_ns;
        let pane = pane_of(ts.max(0));
        let dev = self
            .devices
            .entry(d.entity.clone())
            .or_insert_with(|| Device {
                first_ns: ts,
                ..Device::default()
            });
        dev.last_ns = dev.last_ns.max(ts);
        let age = ts - dev.first_ns;
        let entity = &d.entity;
        if let Some(topic) = &d.topic
            && !dev.topics.contains(topic)
        {
            let known = dev.topics.len();
            for r in self.topics.iter().filter(|r| age >= r.learning_ns()) {
                out.push(Alert {
                    id: alert_id(&format!("{}\u{0}{topic}", r.name), entity, pane),
                    rule: r.name.clone(),
                    severity: r.severity,
                    entity: entity.clone(),
                    window: pane,
                    sources: vec!["mqtt".into()],
                    evidence: vec![("topics_known".into(), known as f64)],
                    summary: format!(
                        "{entity} published on a new topic {topic} (it had used {known})"
                    ),
                });
            }
            if dev.topics.len() < MAX_TOPICS {
                dev.topics.insert(topic.clone());
            }
        }
        dev.values.resize_with(self.values.len(), Map::default);
        for (rule, values) in self.values.iter().zip(dev.values.iter_mut()) {
            let (learning, min_samples, margin) =
                (rule.learning_ns(), rule.min_samples.max(1), rule.margin);
            for s in &d.samples {
                let Some(x) = s.value.filter(|x| x.is_finite()) else {
                    continue;
                };
                let known = values.len();
                let r = match values.get_mut(&s.metric) {
                    Some(r) => r,
                    None if known < MAX_METRICS => {
                        values.entry(s.metric.clone()).or_insert(Range {
                            n: 0,
                            min: x,
                            max: x,
                            out_pane: None,
                        })
                    }
                    None => continue,
                };
                if age < learning || r.n < min_samples {
                    r.n += 1;
                    r.min = r.min.min(x);
                    r.max = r.max.max(x);
                    continue;
                }
                let pad = margin * (r.max - r.min);
                if x >= r.min - pad && x <= r.max + pad {
                    continue;
                }
                if crate::occurrence::continues(&mut r.out_pane, pane, 1) {
                    continue;
                }
                let fmt = crate::alerting::summary_number;
                out.push(Alert {
                    id: alert_id(&format!("{}\u{0}{}", rule.name, s.metric), entity, pane),
                    rule: rule.name.clone(),
                    severity: rule.severity,
                    entity: entity.clone(),
                    window: pane,
                    sources: vec!["mqtt".into()],
                    evidence: vec![
                        ("value".into(), x),
                        ("learned_min".into(), r.min),
                        ("learned_max".into(), r.max),
                        ("learned_samples".into(), r.n as f64),
                    ],
                    summary: format!(
                        "{entity} {} = {}, outside its learned range [{}, {}]",
                        s.metric,
                        fmt(x),
                        fmt(r.min),
                        fmt(r.max)
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::{DeviceRecord, Sample};
    use std::sync::Arc;

    fn msg(ts_s: i64, device: &str, topic: &str, metric: &str, value: f64) -> EventRow {
        EventRow {
            source: Arc::from("iot"),
            log_offset: None,
            record: Record::Device(DeviceRecord {
                ts_ns: ts_s * 1_000_000_000,
                received_ns: ts_s * 1_000_000_000,
                kind: DeviceKind::Mqtt,
                protocol: "mqtt3.1.1",
                entity: Entity::Name(Arc::from(device)),
                topic: Some(topic.into()),
                payload_bytes: Some(4),
                samples: vec![Sample {
                    metric: metric.into(),
                    instance: None,
                    value: Some(value),
                    raw: None,
                    oid: None,
                }],
            }),
        }
    }

    #[test]
    fn new_topics_and_values_out_of_the_learned_range_alert_after_learning() {
        let builtin: Vec<LearnRule> = crate::detect::LEARNING
            .iter()
            .map(|l| l.rule.clone())
            .collect();
        let mut w = DeviceWatch::new(&builtin);
        let mut out = Vec::new();
        // Ten minutes of learning: temperatures 20-25 on one topic, then a second
        // topic still inside the learning span.
        for i in 0..60 {
            w.observe(
                &msg(i * 10, "d1", "s/d1/temp", "temp", 20.0 + (i % 6) as f64),
                &mut out,
            );
        }
        w.observe(&msg(590, "d1", "s/d1/hum", "hum", 40.0), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // After it: in range (with the margin: 17.5 to 27.5) nothing; out of range
        // one alert for consecutive panes; a new topic one alert, once.
        for (t, v) in [
            (700, 27.0),
            (710, 17.6),
            (720, 40.0),
            (730, 41.0),
            (760, 42.0),
        ] {
            w.observe(&msg(t, "d1", "s/d1/temp", "temp", v), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].rule, "mqtt_value_out_of_range");
        assert_eq!(
            out[0].summary,
            "d1 temp = 40, outside its learned range [20, 25]"
        );
        w.observe(&msg(800, "d1", "s/d1/cmd", "cmd", 1.0), &mut out);
        w.observe(&msg(810, "d1", "s/d1/cmd", "cmd", 1.0), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].rule, "mqtt_new_topic");
        assert_eq!(
            out[1].summary,
            "d1 published on a new topic s/d1/cmd (it had used 2)"
        );
        // A quiet pane ends the occurrence: out of range again is a new alert.
        w.observe(&msg(900, "d1", "s/d1/temp", "temp", -10.0), &mut out);
        assert_eq!(out.len(), 3);
        // The hum value learned from one sample only: not judged yet.
        w.observe(&msg(910, "d1", "s/d1/hum", "hum", 99.0), &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn disabled_rules_stay_quiet_and_each_rule_learns_with_its_own_span() {
        let rule = |name: &str, learn: Learn, minutes: u64, enabled: bool| LearnRule {
            name: name.into(),
            learn,
            severity: Severity::Low,
            learning: std::time::Duration::from_secs(minutes * 60),
            min_samples: 1,
            margin: 0.0,
            sources: vec!["mqtt".into()],
            enabled,
        };
        let off = DeviceWatch::new(&[
            rule("a", Learn::Topics, 1, false),
            rule("b", Learn::Values, 1, false),
        ]);
        assert!(!off.is_enabled());
        // Two value rules, learning 1 and 5 minutes: at 3 minutes only the
        // first judges; its range is what it saw in its first minute.
        let mut w = DeviceWatch::new(&[
            rule("quick", Learn::Values, 1, true),
            rule("slow", Learn::Values, 5, true),
        ]);
        let mut out = Vec::new();
        for t in 0..6 {
            w.observe(&msg(t * 10, "d", "t", "v", 10.0), &mut out);
        }
        w.observe(&msg(180, "d", "t", "v", 50.0), &mut out);
        let fired: Vec<&str> = out.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(fired, ["quick"]);
        assert_eq!(out[0].severity, Severity::Low);
        // Past 5 minutes the slow one judges too, with 50 learned into its
        // range: 50 is out of range for the quick one only, 60 for both.
        w.observe(&msg(360, "d", "t", "v", 50.0), &mut out);
        w.observe(&msg(420, "d", "t", "v", 60.0), &mut out);
        let fired: Vec<&str> = out.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(fired, ["quick", "quick", "quick", "slow"], "{out:?}");
        assert_eq!(out[3].evidence[2], ("learned_max".into(), 50.0));
    }
}
