//! The kinds of rule a rules file holds, and [`RuleSpec`], one `[[rules]]`
//! section of any kind: `condition` (this folder's [`super::Detector`]),
//! `count` (crate::count_rules) and `learn` (crate::device_watch).

use super::rules::UserRule;

/// The kinds of rule a rules file holds (`kind = ...`, `condition` when left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    Condition,
    Count,
    Learn,
}

/// Takes `kind` out of a rule's table.
pub(crate) fn kind_of(t: &mut toml::Table) -> Result<RuleKind, String> {
    match t.remove("kind") {
        None => Ok(RuleKind::Condition),
        Some(toml::Value::String(k)) => match k.as_str() {
            "condition" => Ok(RuleKind::Condition),
            "count" => Ok(RuleKind::Count),
            "learn" => Ok(RuleKind::Learn),
            other => Err(format!(
                "kind = {other:?}: use \"condition\" (the default), \"count\" or \"learn\""
            )),
        },
        Some(v) => Err(format!(
            "kind = {v}: write \"condition\", \"count\" or \"learn\""
        )),
    }
}

/// One `[[rules]]` section, of any kind: the same engine's three detectors.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleSpec {
    /// A condition on each entity's features per window.
    Condition(UserRule),
    /// Matching events counted over a sliding timespan.
    Count(crate::count_rules::CountRuleSpec),
    /// Each device's normal, learned then judged.
    Learn(crate::device_watch::LearnRule),
}

impl RuleSpec {
    pub fn name(&self) -> &str {
        match self {
            RuleSpec::Condition(r) => &r.name,
            RuleSpec::Count(r) => &r.name,
            RuleSpec::Learn(r) => &r.name,
        }
    }

    pub fn kind(&self) -> RuleKind {
        match self {
            RuleSpec::Condition(_) => RuleKind::Condition,
            RuleSpec::Count(_) => RuleKind::Count,
            RuleSpec::Learn(_) => RuleKind::Learn,
        }
    }
}

impl<'de> serde::Deserialize<'de> for RuleSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let name = t.get("name").and_then(|n| n.as_str()).map(str::to_string);
        let named = |e: String| match &name {
            Some(n) => D::Error::custom(format!("{n}: {e}")),
            None => D::Error::custom(e),
        };
        Ok(match kind_of(&mut t).map_err(named)? {
            RuleKind::Condition => {
                RuleSpec::Condition(t.try_into().map_err(|e| named(format!("{e}")))?)
            }
            RuleKind::Count => RuleSpec::Count(t.try_into().map_err(|e| named(format!("{e}")))?),
            RuleKind::Learn => RuleSpec::Learn(t.try_into().map_err(|e| named(format!("{e}")))?),
        })
    }
}
