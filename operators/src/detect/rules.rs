//! Rules written in flows.toml (`[[rules]]`) and the compiled form every
//! per-row detection runs: built-ins and users' rules alike.

use amoskys_schemas::{FeatureDef, Severity};

use super::expr::{Expr, parse_condition};
use super::placeholders;

/// A condition rule written in flows.toml (`[[rules]]`, the default kind).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRule {
    pub name: String,
    /// Comparisons of features with numbers, with `and`, `or`, `not` and
    /// parentheses, e.g. `conn_failed_out >= 20 and failed_conn_ratio_out > 0.8`.
    pub condition: String,
    #[serde(default = "medium")]
    pub severity: Severity,
    /// The sources its features come from (derived from them when not given).
    #[serde(default)]
    pub sources: Vec<String>,
    /// One line; `{entity}` and `{feature}` placeholders as in the built-ins.
    #[serde(default)]
    pub summary: Option<String>,
    /// `entity` (the default: one alert per entity), `network/<len>` (the
    /// entities of one IPv4 network of that prefix length, IPv6 hosts by /64) or
    /// `all`: with a group, one alert per group and window once `min_entities`
    /// of its entities match.
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default = "one")]
    pub min_entities: u64,
}

fn medium() -> Severity {
    Severity::Medium
}

fn one() -> u64 {
    1
}

/// How a rule's matches are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    Entity,
    /// IPv4 prefix length (IPv6 hosts are grouped by /64).
    Network(u8),
    All,
}

impl Grouping {
    pub fn parse(s: Option<&str>) -> Result<Grouping, String> {
        match s {
            None | Some("entity") => Ok(Grouping::Entity),
            Some("all") => Ok(Grouping::All),
            Some(n) => n
                .strip_prefix("network/")
                .and_then(|l| l.parse::<u8>().ok())
                .filter(|l| *l <= 32)
                .map(Grouping::Network)
                .ok_or_else(|| {
                    format!(
                        "group_by = {n:?}: use \"entity\", \"all\" or \"network/<prefix length 0-32>\""
                    )
                }),
        }
    }
}

impl UserRule {
    /// Checks the rule against the catalogue: a clear reason when it is wrong.
    pub fn check(&self, defs: &[FeatureDef]) -> Result<(), String> {
        let (_, features) = parse_condition(&self.condition, defs)?;
        if !self.sources.is_empty() {
            for f in &features {
                let src = defs.iter().find(|d| d.name == *f).map_or("", |d| d.source);
                let needs: Vec<&str> = src.split('+').filter(|s| *s != "derived").collect();
                if let Some(missing) = needs.iter().find(|s| !self.sources.iter().any(|x| x == *s))
                {
                    return Err(format!(
                        "{f} comes from {missing}, which is not in its sources {:?}",
                        self.sources
                    ));
                }
            }
        }
        let grouping = Grouping::parse(self.group_by.as_deref())?;
        for n in self.summary.iter().flat_map(|s| placeholders(s)) {
            let extra = grouping != Grouping::Entity && n == "entities";
            if !extra && !defs.iter().any(|d| d.name == n) {
                return Err(format!("summary placeholder {{{n}}} is not a feature"));
            }
        }
        if self.min_entities == 0 {
            return Err("min_entities must be at least 1".into());
        }
        if grouping == Grouping::Entity && self.min_entities > 1 {
            return Err("min_entities needs a group_by other than \"entity\"".into());
        }
        Ok(())
    }
}

impl UserRule {
    /// The rule ready to evaluate (checked first by [`UserRule::check`]).
    pub(super) fn compile(&self, defs: &[FeatureDef]) -> Result<Rule, String> {
        let (expr, features) = parse_condition(&self.condition, defs)?;
        let sources = if self.sources.is_empty() {
            let mut s: Vec<String> = Vec::new();
            for f in &features {
                let src = defs.iter().find(|d| d.name == *f).map_or("", |d| d.source);
                for part in src.split('+').filter(|p| *p != "derived") {
                    if !s.iter().any(|x| x == part) {
                        s.push(part.to_string());
                    }
                }
            }
            s
        } else {
            self.sources.clone()
        };
        let grouped = Grouping::parse(self.group_by.as_deref())? != Grouping::Entity;
        let summary = self.summary.clone().unwrap_or_else(|| {
            if grouped {
                format!(
                    "{{entity}}: {{entities}} entities matched {}",
                    self.condition
                )
            } else {
                format!("{{entity}} matched {}", self.condition)
            }
        });
        let mut evidence: Vec<(usize, String)> = Vec::new();
        for n in features
            .into_iter()
            .chain(placeholders(&summary))
            .filter(|n| !(grouped && n == "entities"))
        {
            if !evidence.iter().any(|(_, e)| *e == n) {
                let col = defs
                    .iter()
                    .position(|d| d.name == n)
                    .ok_or_else(|| format!("feature {n} is not in the catalogue"))?;
                evidence.push((col, n));
            }
        }
        Ok(Rule {
            name: self.name.clone(),
            severity: self.severity,
            sources,
            expr,
            evidence,
            summary,
        })
    }
}

pub(super) struct Rule {
    pub(super) name: String,
    pub(super) severity: Severity,
    pub(super) sources: Vec<String>,
    pub(super) expr: Expr,
    /// Columns of the features named in the condition and the summary.
    pub(super) evidence: Vec<(usize, String)>,
    pub(super) summary: String,
}
