//! The built-in detections: rules shipped in operators/rules/builtin.toml,
//! conjunctions of thresholds on catalogue features, each tunable in flows.toml
//! (`[detections.<name>]`) or replaced by a `[[rules]]` section of its name.

use std::sync::LazyLock;

use amoskys_schemas::Severity;
use serde::Deserialize;

use super::expr::{Expr, Op, parse_condition};

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
pub static DETECTIONS: LazyLock<Vec<DetectionDef>> =
    LazyLock::new(|| parse_builtin(BUILTIN).expect("operators/rules/builtin.toml is valid"));

/// The built-in rules file, as shipped.
pub const BUILTIN: &str = include_str!("../../rules/builtin.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<BuiltinRule>,
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

/// Reads a rules file of built-in form: every condition a conjunction of
/// thresholds on catalogue features, each feature at most once.
pub fn parse_builtin(text: &str) -> Result<Vec<DetectionDef>, String> {
    let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let defs = crate::features::defs();
    let mut out: Vec<DetectionDef> = Vec::new();
    for r in file.rules {
        if out.iter().any(|d| d.name == r.name) {
            return Err(format!("{}: the name is used twice", r.name));
        }
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
    Ok(out)
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
