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

use crate::Map;
use crate::detect::{Cmp, Condition, DetectionDef, DetectionSettings, EventDetector, alert_id};

const MAX_DEVICES: usize = 100_000;
const MAX_TOPICS: usize = 1_000;
const MAX_METRICS: usize = 1_000;

const fn key(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtLeast,
        default,
    }
}

/// The learning detections; their keys are settings, not features.
pub static DEVICE_DETECTIONS: &[DetectionDef] = &[
    DetectionDef {
        name: "mqtt_new_topic",
        severity: Severity::Medium,
        sources: &["mqtt"],
        description: "A device published on a topic it had never used, after its first \
            `learning_minutes` of event time (during which its topics are learned). A \
            compromised or misconfigured device often shows up on topics of other devices \
            or commands.",
        conditions: &[key("learning_minutes", 10.0)],
        summary: "{entity} published on a new topic {topic} (it had used {topics_known})",
    },
    DetectionDef {
        name: "mqtt_value_out_of_range",
        severity: Severity::Medium,
        sources: &["mqtt"],
        description: "A numeric value a device reports fell outside the range learned for \
            it — the smallest and largest values of its first `learning_minutes` (and at \
            least `min_samples` samples) — widened on each side by `margin` times the \
            range's width. A value that never varied while learning alerts on any change. \
            Consecutive panes out of range are one alert.",
        conditions: &[
            key("learning_minutes", 10.0),
            key("min_samples", 20.0),
            key("margin", 0.5),
        ],
        summary: "{entity} {metric} = {value}, outside its learned range [{learned_min}, {learned_max}]",
    },
];

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
    values: Map<String, Range>,
}

/// The timely-free core: MQTT events in, alerts out.
pub struct DeviceWatch {
    topic: Option<(Severity, i64)>,
    range: Option<(Severity, i64, u64, f64)>,
    devices: Map<Entity, Device>,
    /// Devices forgotten to stay within `MAX_DEVICES`.
    pub evicted: u64,
}

impl DeviceWatch {
    /// `settings` by detection name; a detection not named keeps its defaults.
    pub fn new(settings: &[(String, DetectionSettings)]) -> Self {
        let get = |def: &DetectionDef| {
            settings
                .iter()
                .find(|(n, _)| n == def.name)
                .map_or_else(|| DetectionSettings::defaults(def), |(_, s)| s.clone())
        };
        let minutes = |m: f64| (m.max(0.0) * 60e9) as i64;
        let t = get(&DEVICE_DETECTIONS[0]);
        let r = get(&DEVICE_DETECTIONS[1]);
        DeviceWatch {
            topic: t.enabled.then(|| (t.severity, minutes(t.thresholds[0]))),
            range: r.enabled.then(|| {
                (
                    r.severity,
                    minutes(r.thresholds[0]),
                    r.thresholds[1].max(1.0) as u64,
                    r.thresholds[2].max(0.0),
                )
            }),
            devices: Map::default(),
            evicted: 0,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.topic.is_some() || self.range.is_some()
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
        if let (Some((severity, learning)), Some(topic)) = (self.topic, &d.topic)
            && !dev.topics.contains(topic)
        {
            if age >= learning {
                let known = dev.topics.len();
                out.push(Alert {
                    id: alert_id(&format!("mqtt_new_topic\u{0}{topic}"), entity, pane),
                    rule: "mqtt_new_topic".into(),
                    severity,
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
        let Some((severity, learning, min_samples, margin)) = self.range else {
            return;
        };
        for s in &d.samples {
            let Some(x) = s.value.filter(|x| x.is_finite()) else {
                continue;
            };
            let known = dev.values.len();
            let r = match dev.values.get_mut(&s.metric) {
                Some(r) => r,
                None if known < MAX_METRICS => {
                    dev.values.entry(s.metric.clone()).or_insert(Range {
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
            let fmt = |v: f64| {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.3}")
                }
            };
            out.push(Alert {
                id: alert_id(
                    &format!("mqtt_value_out_of_range\u{0}{}", s.metric),
                    entity,
                    pane,
                ),
                rule: "mqtt_value_out_of_range".into(),
                severity,
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

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::{DeviceRecord, Sample};
    use std::sync::Arc;

    fn msg(ts_s: i64, device: &str, topic: &str, metric: &str, value: f64) -> EventRow {
        EventRow {
            source: Arc::from("iot"),
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
        let mut w = DeviceWatch::new(&[]);
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
    fn disabled_detections_stay_quiet() {
        let off = |n: &str| {
            let def = DEVICE_DETECTIONS.iter().find(|d| d.name == n).expect("def");
            (
                n.to_string(),
                DetectionSettings {
                    enabled: false,
                    ..DetectionSettings::defaults(def)
                },
            )
        };
        let w = DeviceWatch::new(&[off("mqtt_new_topic"), off("mqtt_value_out_of_range")]);
        assert!(!w.is_enabled());
    }
}
