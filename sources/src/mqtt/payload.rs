//! What an MQTT message means: which device and metric its topic names, and the
//! samples its payload carries.

use std::fmt;

use amoskys_schemas::Sample;
use serde::{Deserialize, Deserializer};

/// One level of a [`TopicPattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Literal(String),
    Device,
    Metric,
    /// `+`: any one level.
    Any,
    /// `#`: the rest of the topic (last level only).
    Rest,
}

/// Maps topics to devices and metrics: `sensors/{device}/{metric}`. Levels are
/// literals, `{device}`, `{metric}`, `+` (any one level) or a final `#`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    levels: Vec<Level>,
}

/// The device and metric a topic names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMatch<'a> {
    pub device: Option<&'a str>,
    pub metric: Option<&'a str>,
}

impl TopicPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("device_pattern is empty".into());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let l = match *p {
                "{device}" => Level::Device,
                "{metric}" => Level::Metric,
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(format!("{s:?}: '#' may only be the last level")),
                lit if lit.contains(['{', '}', '+', '#']) => {
                    return Err(format!(
                        "{s:?}: level {lit:?} is not a literal, {{device}}, {{metric}}, + or #"
                    ));
                }
                lit => Level::Literal(lit.to_string()),
            };
            levels.push(l);
        }
        let count = |want: &Level| levels.iter().filter(|l| *l == want).count();
        if count(&Level::Device) != 1 {
            return Err(format!("{s:?}: needs exactly one {{device}} level"));
        }
        if count(&Level::Metric) > 1 {
            return Err(format!("{s:?}: at most one {{metric}} level"));
        }
        Ok(TopicPattern {
            text: s.to_string(),
            levels,
        })
    }

    /// The device and metric of `topic`, or `None` if the topic does not fit.
    pub fn matches<'a>(&self, topic: &'a str) -> Option<TopicMatch<'a>> {
        let mut m = TopicMatch {
            device: None,
            metric: None,
        };
        let mut parts = topic.split('/');
        for l in &self.levels {
            if *l == Level::Rest {
                return Some(m);
            }
            let p = parts.next()?;
            match l {
                Level::Literal(lit) if lit != p => return None,
                Level::Device if p.is_empty() => return None,
                Level::Device => m.device = Some(p),
                Level::Metric => m.metric = Some(p).filter(|p| !p.is_empty()),
                _ => {}
            }
        }
        parts.next().is_none().then_some(m)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TopicPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Numeric fields nested deeper than this are not followed.
const MAX_DEPTH: usize = 8;
/// Samples taken from one message at most; the rest are counted as truncated.
pub const MAX_SAMPLES: usize = 256;

fn sample(metric: String, value: f64) -> Sample {
    Sample {
        metric,
        instance: None,
        value: Some(value),
        raw: None,
        oid: None,
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, depth: usize, out: &mut Vec<Sample>) -> bool {
    match v {
        serde_json::Value::Number(n) => {
            if out.len() >= MAX_SAMPLES {
                return false;
            }
            if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                out.push(sample(prefix.to_string(), f));
            }
            true
        }
        serde_json::Value::Object(map) if depth < MAX_DEPTH => {
            let mut complete = true;
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                complete &= flatten(&name, v, depth + 1, out);
            }
            complete
        }
        _ => true,
    }
}

/// What a payload holds.
#[derive(Debug, PartialEq)]
pub enum Payload {
    /// A JSON object: its numeric fields (nested names joined with `.`).
    Object {
        samples: Vec<Sample>,
        truncated: bool,
    },
    /// A number, as JSON or as text.
    Number(f64),
    /// Anything else: only its size is kept.
    Opaque,
}

/// Reads a payload; `metric` names the value of a plain number and prefixes the
/// fields of an object (`{metric}.{field}`).
pub fn parse_payload(bytes: &[u8], metric: &str) -> Payload {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.trim(),
        Err(_) => return Payload::Opaque,
    };
    if text.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let mut samples = Vec::new();
            let complete = flatten(metric, &v, 0, &mut samples);
            return Payload::Object {
                samples,
                truncated: !complete,
            };
        }
        return Payload::Opaque;
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Payload::Number(f),
        _ => Payload::Opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_device_and_metric() {
        let p = TopicPattern::parse("sensors/{device}/{metric}").expect("pattern");
        let m = p.matches("sensors/dev-7/temp").expect("match");
        assert_eq!(m.device, Some("dev-7"));
        assert_eq!(m.metric, Some("temp"));
        assert!(p.matches("sensors/dev-7").is_none());
        assert!(p.matches("sensors/dev-7/temp/x").is_none());
        assert!(p.matches("other/dev-7/temp").is_none());
        assert!(p.matches("sensors//temp").is_none());
        let p = TopicPattern::parse("site/+/{device}/#").expect("pattern");
        let m = p.matches("site/a/plc1/x/y").expect("match");
        assert_eq!((m.device, m.metric), (Some("plc1"), None));
    }

    #[test]
    fn bad_patterns_are_explained() {
        for bad in [
            "",
            "a/b",
            "{device}/{device}",
            "a/#/{device}",
            "a{device}/x",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_payload(b" 21.5\n", "temp"), Payload::Number(21.5));
        assert_eq!(parse_payload(b"nan", "temp"), Payload::Opaque);
        assert_eq!(parse_payload(&[0xff, 0x00, 0x12], "x"), Payload::Opaque);
        assert_eq!(parse_payload(b"{broken", "x"), Payload::Opaque);
        match parse_payload(br#"{"t": 1.5, "s": "on", "n": {"a": 2, "b": true}}"#, "env") {
            Payload::Object { samples, truncated } => {
                assert!(!truncated);
                let mut got: Vec<(String, f64)> = samples
                    .into_iter()
                    .map(|s| (s.metric, s.value.unwrap_or(f64::NAN)))
                    .collect();
                got.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(got, vec![("env.n.a".into(), 2.0), ("env.t".into(), 1.5)]);
            }
            other => panic!("{other:?}"),
        }
        let many = format!(
            "{{{}}}",
            (0..300)
                .map(|i| format!("\"k{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        match parse_payload(many.as_bytes(), "") {
            Payload::Object { samples, truncated } => {
                assert!(truncated);
                assert_eq!(samples.len(), MAX_SAMPLES);
            }
            other => panic!("{other:?}"),
        }
    }
}
