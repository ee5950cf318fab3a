//! The built-in detections: rules shipped in operators/rules/builtin.toml,
//! conjunctions of thresholds on catalogue features, each tunable in flows.toml
//! (`[detections.<name>]`) or replaced by a `[[rules]]` section of its name.

use std::sync::LazyLock;

use amoskys_schemas::Severity;
use serde::Deserialize;

use super::expr::{Expr, Op, parse_condition};
use super::kinds::RuleKind;
use crate::device_watch::LearnRule;

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

/// The built-in detections, read from operators/rules/builtin.toml (embedded
/// in the binary): rules in the language of flows.toml's `[[rules]]`, each a
/// conjunction of `>=`/`<=` thresholds with every feature once, so each
/// threshold can be tuned by its feature's name.
pub static DETECTIONS: LazyLock<Vec<DetectionDef>> = LazyLock::new(|| builtin().0);

/// The built-in learning rules (`kind = "learn"`), from the same file.
pub static LEARNING: LazyLock<Vec<BuiltinLearn>> = LazyLock::new(|| builtin().1);

fn builtin() -> (Vec<DetectionDef>, Vec<BuiltinLearn>) {
    parse_builtin(BUILTIN).expect("operators/rules/builtin.toml is valid")
}

/// A built-in learning rule and what it means.
#[derive(Debug)]
pub struct BuiltinLearn {
    pub rule: LearnRule,
    pub description: &'static str,
}

/// The built-in rules file, as shipped.
pub const BUILTIN: &str = include_str!("../../rules/builtin.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuiltinRule {
    name: String,
    severity: Severity,
    sources: Vec<String>,
    condition: String,
    summary: String,
    description: String,
}

/// Text that lives as long as the process: the built-ins are read once.
fn keep(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Reads a rules file of built-in form: condition rules each a conjunction of
/// thresholds on catalogue features, each feature at most once; learning rules
/// (`kind = "learn"`); every one with a `description`.
pub fn parse_builtin(text: &str) -> Result<(Vec<DetectionDef>, Vec<BuiltinLearn>), String> {
    let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let defs = crate::features::defs();
    let mut out: Vec<DetectionDef> = Vec::new();
    let mut learning: Vec<BuiltinLearn> = Vec::new();
    for mut t in file.rules {
        let name = t
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        if out.iter().any(|d| d.name == name) || learning.iter().any(|l| l.rule.name == name) {
            return Err(format!("{name}: the name is used twice"));
        }
        match super::kinds::kind_of(&mut t).map_err(|e| format!("{name}: {e}"))? {
            RuleKind::Condition => {}
            RuleKind::Learn => {
                let description = match t.remove("description") {
                    Some(toml::Value::String(d)) => keep(d),
                    _ => return Err(format!("{name}: a built-in needs a description")),
                };
                let rule: LearnRule = t.try_into().map_err(|e| format!("{name}: {e}"))?;
                learning.push(BuiltinLearn { rule, description });
                continue;
            }
            RuleKind::Count => {
                return Err(format!("{name}: no counting rule is built in"));
            }
        }
        let r: BuiltinRule = t.try_into().map_err(|e| format!("{name}: {e}"))?;
        let (expr, _) =
            parse_condition(&r.condition, &defs).map_err(|e| format!("{}: {e}", r.name))?;
        let mut conditions: Vec<Condition> = Vec::new();
        let mut stack = vec![&expr];
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Expr::Cmp { col, op, value } => {
                    let cmp = match op {
                        Op::Ge => Cmp::AtLeast,
                        Op::Le => Cmp::AtMost,
                        _ => {
                            return Err(format!(
                                "{}: a built-in compares with >= or <= only",
                                r.name
                            ));
                        }
                    };
                    let feature = defs[*col].name;
                    if conditions.iter().any(|c| c.feature == feature) {
                        return Err(format!("{}: {feature} is compared twice", r.name));
                    }
                    conditions.push(Condition {
                        feature,
                        cmp,
                        default: *value,
                    });
                }
                _ => {
                    return Err(format!(
                        "{}: a built-in is a conjunction (and) of thresholds",
                        r.name
                    ));
                }
            }
        }
        out.push(DetectionDef {
            name: keep(r.name),
            severity: r.severity,
            sources: Vec::leak(r.sources.into_iter().map(keep).collect()),
            description: keep(r.description),
            conditions: Vec::leak(conditions),
            summary: keep(r.summary),
        });
    }
    Ok((out, learning))
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

/// `[detections.<name>]` of flows.toml: per built-in, `enabled`, `severity` and
/// its keys — a condition rule's thresholds by feature name, a learning rule's
/// [`LearnRule::keys`]. Built-ins not named run as shipped.
#[derive(Clone, Debug, Default)]
pub struct Tunings {
    /// Condition rules, by name.
    pub conditions: Vec<(String, DetectionSettings)>,
    /// Learning rules as tuned (only those named).
    pub learning: Vec<LearnRule>,
}

impl Tunings {
    /// Whether `[detections.<name>]` is written.
    pub fn tunes(&self, name: &str) -> bool {
        self.conditions.iter().any(|(n, _)| n == name)
            || self.learning.iter().any(|r| r.name == name)
    }

    /// The learning rules to run: the built-ins as tuned, those replaced by a
    /// user's rule of the same name left out, then the user's.
    pub fn learn_rules(&self, user: &[LearnRule]) -> Vec<LearnRule> {
        LEARNING
            .iter()
            .filter(|b| !user.iter().any(|u| u.name == b.rule.name))
            .map(|b| {
                self.learning
                    .iter()
                    .find(|t| t.name == b.rule.name)
                    .unwrap_or(&b.rule)
                    .clone()
            })
            .chain(user.iter().cloned())
            .collect()
    }
}

impl<'de> Deserialize<'de> for Tunings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw: std::collections::BTreeMap<String, toml::Table> = Deserialize::deserialize(d)?;
        let mut out = Tunings::default();
        for (name, table) in raw {
            let err = |what: String| D::Error::custom(format!("[detections.{name}] {what}"));
            let def = DETECTIONS.iter().find(|x| x.name == name);
            let learn = LEARNING.iter().find(|l| l.rule.name == name);
            if def.is_none() && learn.is_none() {
                let known: Vec<&str> = DETECTIONS
                    .iter()
                    .map(|x| x.name)
                    .chain(LEARNING.iter().map(|l| l.rule.name.as_str()))
                    .collect();
                return Err(D::Error::custom(format!(
                    "[detections.{name}]: no such detection (known: {})",
                    known.join(", ")
                )));
            }
            let mut settings = def.map(DetectionSettings::defaults);
            let mut rule = learn.map(|l| l.rule.clone());
            for (key, value) in table {
                match key.as_str() {
                    "enabled" => {
                        let on = value
                            .as_bool()
                            .ok_or_else(|| err("enabled: write true or false".into()))?;
                        settings.iter_mut().for_each(|s| s.enabled = on);
                        rule.iter_mut().for_each(|r| r.enabled = on);
                    }
                    "severity" => {
                        let sev: Severity = value.try_into().ok().ok_or_else(|| {
                            err("severity: write low, medium, high or critical".into())
                        })?;
                        settings.iter_mut().for_each(|s| s.severity = sev);
                        rule.iter_mut().for_each(|r| r.severity = sev);
                    }
                    key => {
                        let v = value
                            .as_float()
                            .or_else(|| value.as_integer().map(|i| i as f64))
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| err(format!("{key}: write a number")))?;
                        if let (Some(def), Some(s)) = (def, settings.as_mut()) {
                            let i = def
                                .conditions
                                .iter()
                                .position(|c| c.feature == key)
                                .ok_or_else(|| {
                                    let keys: Vec<&str> =
                                        def.conditions.iter().map(|c| c.feature).collect();
                                    err(format!(
                                        "{key}: not a key of this detection (enabled, severity, {})",
                                        keys.join(", ")
                                    ))
                                })?;
                            s.thresholds[i] = v;
                        }
                        if let Some(r) = rule.as_mut() {
                            r.tune(key, v).map_err(err)?;
                        }
                    }
                }
            }
            if let Some(s) = settings {
                out.conditions.push((name.clone(), s));
            }
            out.learning.extend(rule);
        }
        Ok(out)
    }
}

/// A rule replaces a built-in of its own kind only: the name of a built-in of
/// another kind is refused, with the reason.
pub fn check_name(kind: RuleKind, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    let builtin = if DETECTIONS.iter().any(|d| d.name == name) {
        Some(RuleKind::Condition)
    } else if LEARNING.iter().any(|l| l.rule.name == name) {
        Some(RuleKind::Learn)
    } else {
        None
    };
    match builtin {
        Some(k) if k != kind => Err(format!(
            "{name} is the name of a built-in {} rule: a rule replaces a built-in of its own kind",
            match k {
                RuleKind::Condition => "condition",
                RuleKind::Count => "count",
                RuleKind::Learn => "learning",
            }
        )),
        _ => Ok(()),
    }
}
