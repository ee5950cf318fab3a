//! The MQTT family: what a device's messages say (volume, topics, the numeric
//! values they carry, their rhythm).

use amoskys_schemas::{FeatureDtype, WINDOW_SECONDS};

use super::family::{FamilyFeature, dspec};
use crate::{Moments, Set};

use FeatureDtype::{Count as C, Float as F};

const W: f64 = WINDOW_SECONDS as f64;

/// What one device's MQTT messages said in a pane, or (merged) a window.
#[derive(Clone, Debug, Default)]
pub struct MqttAcc {
    pub messages: u64,
    pub bytes: u64,
    /// Messages with no numeric value.
    pub opaque: u64,
    pub topics: Set<u64>,
    pub values: Moments,
    /// Times of the first and last message, and the gaps between messages.
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    pub intervals: Moments,
}

impl MqttAcc {
    pub fn observe(&mut self, ts_ns: i64, bytes: u32, topic: u64, values: &[f64]) {
        self.messages += 1;
        self.bytes += u64::from(bytes);
        if let Some(l) = self.last_ns {
            self.intervals.push((ts_ns - l).max(0) as f64 / 1e9);
        }
        self.first_ns.get_or_insert(ts_ns);
        self.last_ns = Some(ts_ns);
        self.topics.insert(topic);
        if values.is_empty() {
            self.opaque += 1;
        }
        for v in values {
            self.values.push(*v);
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &MqttAcc) {
        if let (Some(last), Some(first)) = (self.last_ns, l.first_ns) {
            self.intervals.push((first - last).max(0) as f64 / 1e9);
        }
        self.intervals.merge(&l.intervals);
        self.first_ns = self.first_ns.or(l.first_ns);
        self.last_ns = l.last_ns.or(self.last_ns);
        self.messages += l.messages;
        self.bytes += l.bytes;
        self.opaque += l.opaque;
        self.topics.extend(l.topics.iter().copied());
        self.values.merge(&l.values);
    }
}

const MQTT_NULL: Option<&str> = Some("no MQTT message about the entity in the window");

fn mq(a: &MqttAcc, v: f64) -> Option<f64> {
    (a.messages > 0).then_some(v)
}

pub(super) static MQTT_FEATURES: &[FamilyFeature<MqttAcc>] = &[
    dspec(
        "mqtt_messages",
        "mqtt",
        "messages",
        C,
        "MQTT messages about the device.",
        MQTT_NULL,
        |a| mq(a, a.messages as f64),
    ),
    dspec(
        "mqtt_messages_per_s",
        "mqtt",
        "messages/s",
        F,
        "MQTT messages about the device per second of the window.",
        MQTT_NULL,
        |a| mq(a, a.messages as f64 / W),
    ),
    dspec(
        "mqtt_bytes",
        "mqtt",
        "bytes",
        C,
        "Payload bytes of the device's messages.",
        MQTT_NULL,
        |a| mq(a, a.bytes as f64),
    ),
    dspec(
        "mqtt_bytes_per_s",
        "mqtt",
        "bytes/s",
        F,
        "Payload bytes of the device's messages per second of the window.",
        MQTT_NULL,
        |a| mq(a, a.bytes as f64 / W),
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
        |a| mq(a, a.opaque as f64),
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
