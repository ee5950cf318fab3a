//! The detections' sections: `[detections.<name>]`, `[[rules]]`,
//! `[[count_rules]]`, `[correlation]` and `[threat_intel]`.

use super::*;

/// `[[count_rules]]`: events matching a filter, grouped and counted over a
/// sliding timespan, Sigma-style (docs/DETECTIONS.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRuleConfig {
    pub name: String,
    /// Field = pattern (`*` for any characters, case-insensitive), or a list of
    /// patterns; every field must match.
    #[serde(default)]
    pub filter: std::collections::BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// `event_count` or `value_count`.
    #[serde(default = "event_count")]
    pub count: String,
    /// The field `value_count` counts distinct values of.
    pub value: Option<String>,
    pub timespan: PositiveSecs,
    /// The count that fires it.
    pub threshold: u64,
    #[serde(default = "medium")]
    pub severity: amoskys_schemas::Severity,
    /// One line, with `{group}`, `{count}` and `{timespan}` placeholders.
    pub summary: Option<String>,
}

/// A pattern, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn event_count() -> String {
    "event_count".into()
}

impl CountRuleConfig {
    pub fn spec(&self) -> amoskys_operators::count_rules::CountRuleSpec {
        amoskys_operators::count_rules::CountRuleSpec {
            name: self.name.clone(),
            filter: self
                .filter
                .iter()
                .map(|(k, v)| {
                    let pats = match v {
                        OneOrMany::One(p) => vec![p.clone()],
                        OneOrMany::Many(ps) => ps.clone(),
                    };
                    (k.clone(), pats)
                })
                .collect(),
            group_by: self.group_by.clone(),
            count: self.count.clone(),
            value: self.value.clone(),
            timespan_ns: self.timespan.0.as_nanos_i64(),
            threshold: self.threshold,
            severity: self.severity,
            summary: self.summary.clone(),
        }
    }
}

/// `[correlation]`: the cross-source incident (docs/DETECTIONS.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    pub enabled: bool,
    pub severity: amoskys_schemas::Severity,
    /// Failed logins logged for the remote address in one window.
    pub login_failures: f64,
    /// Connections from it to login services seen in packets in the same window.
    pub login_connections: f64,
    /// Processor load (%) of a host it connected to, read by SNMP: named as
    /// further evidence when reached.
    pub target_cpu: f64,
    /// Evidence of the same address within this long of the last is the same
    /// incident.
    pub incident_gap: PositiveSecs,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        let d = amoskys_operators::correlate::CorrelationSettings::default();
        CorrelationConfig {
            enabled: d.enabled,
            severity: d.severity,
            login_failures: d.login_failures,
            login_connections: d.login_connections,
            target_cpu: d.target_cpu,
            incident_gap: PositiveSecs(Secs::from_secs(
                d.gap_panes * amoskys_schemas::HOP_SECONDS as u64,
            )),
        }
    }
}

impl CorrelationConfig {
    pub fn settings(&self) -> amoskys_operators::correlate::CorrelationSettings {
        amoskys_operators::correlate::CorrelationSettings {
            enabled: self.enabled,
            severity: self.severity,
            login_failures: self.login_failures,
            login_connections: self.login_connections,
            target_cpu: self.target_cpu,
            gap_panes: (self.incident_gap.0.0.as_secs() / amoskys_schemas::HOP_SECONDS as u64)
                .max(1),
        }
    }
}

/// `[threat_intel]`: indicators matched against what the sources see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatIntelConfig {
    /// One IP address, network (CIDR) or domain per line; `#` comments. Re-read
    /// when it changes.
    pub file: PathBuf,
    #[serde(default = "high")]
    pub severity: amoskys_schemas::Severity,
    /// How often the file is checked for changes.
    #[serde(default = "one_second")]
    pub reload: PositiveSecs,
}

fn high() -> amoskys_schemas::Severity {
    amoskys_schemas::Severity::High
}

fn one_second() -> PositiveSecs {
    PositiveSecs(Secs::from_secs(1))
}

impl ThreatIntelConfig {
    pub fn settings(&self) -> amoskys_operators::correlate::IntelSettings {
        amoskys_operators::correlate::IntelSettings {
            file: self.file.clone(),
            severity: self.severity,
        }
    }
}

/// `[[rules]]`: a detection written in the file (docs/DETECTIONS.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Comparisons of features with numbers, with `and`, `or`, `not` and
    /// parentheses, e.g. `conn_failed_out >= 20 and failed_conn_ratio_out > 0.8`.
    pub condition: String,
    #[serde(default = "medium")]
    pub severity: amoskys_schemas::Severity,
    /// The sources its features come from; derived from them when left out.
    #[serde(default)]
    pub sources: Vec<String>,
    /// One line, with `{entity}` and `{feature_name}` placeholders.
    pub summary: Option<String>,
    /// `entity` (default), `network/<len>` or `all`.
    pub group_by: Option<String>,
    /// With a group: how many of its entities must match in one window.
    #[serde(default = "one")]
    pub min_entities: u64,
}

fn one() -> u64 {
    1
}

fn medium() -> amoskys_schemas::Severity {
    amoskys_schemas::Severity::Medium
}

impl RuleConfig {
    pub fn rule(&self) -> amoskys_operators::detect::UserRule {
        amoskys_operators::detect::UserRule {
            name: self.name.clone(),
            condition: self.condition.clone(),
            severity: self.severity,
            sources: self.sources.clone(),
            summary: self.summary.clone(),
            group_by: self.group_by.clone(),
            min_entities: self.min_entities,
        }
    }
}

/// `[detections.<name>]`: per built-in detection, `enabled`, `severity` and its
/// thresholds by feature name (docs/DETECTIONS.md). Detections not named run with
/// their defaults.
#[derive(Debug, Default)]
pub struct DetectionsConfig(pub Vec<(String, amoskys_operators::detect::DetectionSettings)>);

impl<'de> Deserialize<'de> for DetectionsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use amoskys_operators::detect::{DETECTIONS, DetectionSettings};
        use serde::de::Error;
        let raw: std::collections::BTreeMap<String, toml::Table> = Deserialize::deserialize(d)?;
        let mut out = Vec::new();
        for (name, table) in raw {
            let all = || {
                DETECTIONS
                    .iter()
                    .chain(amoskys_operators::device_watch::DEVICE_DETECTIONS)
            };
            let def = all().find(|x| x.name == name).ok_or_else(|| {
                let known: Vec<&str> = all().map(|x| x.name).collect();
                D::Error::custom(format!(
                    "[detections.{name}]: no such detection (known: {})",
                    known.join(", ")
                ))
            })?;
            let mut s = DetectionSettings::defaults(def);
            for (key, value) in table {
                match key.as_str() {
                    "enabled" => {
                        s.enabled = value.as_bool().ok_or_else(|| {
                            D::Error::custom(format!(
                                "[detections.{name}] enabled: write true or false"
                            ))
                        })?
                    }
                    "severity" => s.severity = value
                        .as_str()
                        .and_then(|v| serde_json::from_value(serde_json::json!(v)).ok())
                        .ok_or_else(|| {
                            D::Error::custom(format!(
                                "[detections.{name}] severity: write low, medium, high or critical"
                            ))
                        })?,
                    feature => {
                        let i = def.conditions.iter().position(|c| c.feature == feature).ok_or_else(|| {
                            let keys: Vec<&str> = def.conditions.iter().map(|c| c.feature).collect();
                            D::Error::custom(format!(
                                "[detections.{name}] {feature}: not a key of this detection (enabled, severity, {})",
                                keys.join(", ")
                            ))
                        })?;
                        let v = value
                            .as_float()
                            .or_else(|| value.as_integer().map(|i| i as f64))
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| {
                                D::Error::custom(format!(
                                    "[detections.{name}] {feature}: write a number"
                                ))
                            })?;
                        s.thresholds[i] = v;
                    }
                }
            }
            out.push((name, s));
        }
        Ok(DetectionsConfig(out))
    }
}
