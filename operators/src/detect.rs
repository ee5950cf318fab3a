//! Built-in detections: conditions over an entity's feature row in one window.
//!
//! Each detection is a conjunction of thresholds on catalogue features
//! (`feature >= value` or `feature <= value`; a null feature never satisfies
//! one). Thresholds, severity and whether a detection runs come from flows.toml
//! (`[detections.<name>]`). An occurrence that fires in consecutive windows (they
//! overlap by 30 s, so one burst is seen twice) is one alert, raised in its first
//! window; its id hashes the detection, the entity and that window, so the same
//! input always gives the same id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{Alert, Entity, FeatureDef, FeatureRow, Severity};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::Map;

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

const fn at_least(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtLeast,
        default,
    }
}

const fn at_most(feature: &'static str, default: f64) -> Condition {
    Condition {
        feature,
        cmp: Cmp::AtMost,
        default,
    }
}

/// The built-in detections.
pub static DETECTIONS: &[DetectionDef] = &[
    DetectionDef {
        name: "vertical_scan",
        severity: Severity::High,
        sources: &["pcap"],
        description: "One source probing many ports of a few hosts (TCP or UDP), as nmap does. \
            Raise `distinct_dst_ports_out` for hosts that legitimately reach many services of \
            one server (e.g. passive FTP, RPC).",
        conditions: &[
            at_least("distinct_dst_ports_out", 100.0),
            at_most("distinct_peers_out", 4.0),
        ],
        summary: "{entity} sent to {distinct_dst_ports_out} ports on {distinct_peers_out} host(s)",
    },
    DetectionDef {
        name: "horizontal_scan",
        severity: Severity::High,
        sources: &["pcap"],
        description: "One source probing the same few ports on many hosts (TCP or UDP), as a \
            worm or a sweep does. Raise `distinct_peers_out` for resolvers, proxies and NAT \
            gateways.",
        conditions: &[
            at_least("distinct_peers_out", 100.0),
            at_most("distinct_dst_ports_out", 4.0),
        ],
        summary: "{entity} sent to {distinct_peers_out} hosts on {distinct_dst_ports_out} port(s)",
    },
    DetectionDef {
        name: "syn_flood",
        severity: Severity::Critical,
        sources: &["pcap"],
        description: "Many TCP SYNs received from many sources (spoofed or distributed) in one \
            window. Tune `tcp_syn_in` to a few times the busiest legitimate minute of the \
            target.",
        conditions: &[
            at_least("tcp_syn_in", 1000.0),
            at_least("distinct_peers_in", 50.0),
        ],
        summary: "{entity} received {tcp_syn_in} SYNs from {distinct_peers_in} sources",
    },
    DetectionDef {
        name: "synack_reflection",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many SYN-ACKs received while sending no SYN: the entity's address was \
            spoofed in SYNs to reflectors, which answer it.",
        conditions: &[
            at_least("tcp_synack_in", 500.0),
            at_most("tcp_syn_out", 0.0),
        ],
        summary: "{entity} received {tcp_synack_in} SYN-ACKs from {distinct_peers_in} sources without sending a SYN",
    },
    DetectionDef {
        name: "dns_reflection",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DNS responses received while sending no query: reflection or \
            amplification aimed at the entity.",
        conditions: &[
            at_least("dns_responses_in", 200.0),
            at_most("dns_queries_out", 0.0),
        ],
        summary: "{entity} received {dns_responses_in} DNS responses without asking",
    },
    DetectionDef {
        name: "login_bruteforce_network",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many TCP connections to login services (FTP, SSH, Telnet, RDP) from one \
            source in one window. Raise `auth_conn_attempts_out` for jump hosts and \
            monitoring that log in often.",
        conditions: &[at_least("auth_conn_attempts_out", 20.0)],
        summary: "{entity} opened {auth_conn_attempts_out} connections to login services",
    },
    DetectionDef {
        name: "login_bruteforce_logs",
        severity: Severity::High,
        sources: &["syslog"],
        description: "Failed logins from one remote address, as logged by the hosts it tried \
            (sshd). Lower `auth_failures_as_remote` to catch slow guessing.",
        conditions: &[at_least("auth_failures_as_remote", 10.0)],
        summary: "{entity} failed {auth_failures_as_remote} logins on {auth_distinct_targets_as_remote} host(s) as {auth_distinct_users_as_remote} user(s)",
    },
    DetectionDef {
        name: "dns_tunnel",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DNS queries with long names: data carried in query names. Lower \
            `dns_qname_len_mean_out` cautiously: CDNs use long names too.",
        conditions: &[
            at_least("dns_queries_out", 50.0),
            at_least("dns_qname_len_mean_out", 50.0),
        ],
        summary: "{entity} sent {dns_queries_out} DNS queries, names {dns_qname_len_mean_out} characters on average",
    },
    DetectionDef {
        name: "dga",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Many distinct names asked and most answered NXDOMAIN: malware trying \
            generated domains to find its controller.",
        conditions: &[
            at_least("dns_distinct_qnames_out", 20.0),
            at_least("dns_nxdomain_ratio_in", 0.5),
        ],
        summary: "{entity} asked {dns_distinct_qnames_out} names, {dns_nxdomain_ratio_in} of answers NXDOMAIN",
    },
    DetectionDef {
        name: "beaconing",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Connection attempts at near-constant intervals: a bot checking in. \
            Raise `syn_interval_cv_out` to catch jittered beacons, at the cost of \
            scheduled jobs.",
        conditions: &[
            at_least("conn_attempts_out", 6.0),
            at_most("syn_interval_cv_out", 0.1),
        ],
        summary: "{entity} made {conn_attempts_out} connection attempts every {syn_interval_mean_out} s (CV {syn_interval_cv_out})",
    },
    DetectionDef {
        name: "exfiltration",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Bytes sent far above the entity's own running baseline (z-score), and \
            many of them.",
        conditions: &[
            at_least("bytes_out_zscore", 6.0),
            at_least("bytes_out", 50e6),
        ],
        summary: "{entity} sent {bytes_out} bytes, {bytes_out_zscore} standard deviations above its baseline",
    },
    DetectionDef {
        name: "device_cpu_saturation",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's processor load (hrProcessorLoad, mean over cores and \
            polls) near its limit for a window.",
        conditions: &[at_least("snmp_hr_processor_load_mean", 90.0)],
        summary: "{entity} processor load {snmp_hr_processor_load_mean} %",
    },
    DetectionDef {
        name: "device_memory_saturation",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's memory (UCD total minus available, over total) nearly \
            all used.",
        conditions: &[at_least("snmp_mem_used_ratio", 0.95)],
        summary: "{entity} memory {snmp_mem_used_ratio} used",
    },
    DetectionDef {
        name: "device_interface_errors",
        severity: Severity::Low,
        sources: &["snmp"],
        description: "Interface input errors on an SNMP agent (per second, summed over \
            interfaces).",
        conditions: &[at_least("snmp_if_in_errors_max", 1.0)],
        summary: "{entity} interface input errors up to {snmp_if_in_errors_max}/s",
    },
    DetectionDef {
        name: "device_restart",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "An SNMP agent's sysUpTime went back between two polls: the device (or \
            its agent) restarted.",
        conditions: &[at_least("snmp_agent_restarts", 1.0)],
        summary: "{entity} restarted ({snmp_agent_restarts} time(s) in the window)",
    },
    DetectionDef {
        name: "device_link_down",
        severity: Severity::Medium,
        sources: &["snmp"],
        description: "Interfaces of an SNMP agent went from up to down between two polls.",
        conditions: &[at_least("snmp_links_down", 1.0)],
        summary: "{entity}: {snmp_links_down} interface(s) went down",
    },
    DetectionDef {
        name: "mqtt_flood",
        severity: Severity::Medium,
        sources: &["mqtt"],
        description: "A device publishing far more MQTT messages than sensors do.",
        conditions: &[at_least("mqtt_messages_per_s", 100.0)],
        summary: "{entity} published {mqtt_messages_per_s} MQTT messages/s",
    },
];

/// The detections as Markdown: the body of docs/DETECTIONS.md.
pub fn markdown() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# Detections\n");
    let _ = writeln!(
        s,
        "Generated from the detection catalogue (`operators/src/detect.rs`); a test fails when \
         this file is stale (`UPDATE_DOCS=1 cargo test -p amoskys-operators detections_md` \
         rewrites it).\n"
    );
    let _ = writeln!(
        s,
        "Each detection is a set of thresholds on one entity's features in one window \
         (docs/FEATURES.md), all of which must hold; a null feature holds none. An occurrence \
         that fires in consecutive windows is one alert, raised in its first window, with an id \
         that hashes the detection, the entity and that window. Alerts go to the `alerts` table \
         with the feature values that fired them as evidence. Every key can be set in \
         flows.toml:\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[detections.vertical_scan]\nenabled = true          # false turns it off\n\
         severity = \"high\"       # low, medium, high or critical\n\
         distinct_dst_ports_out = 100   # a threshold, by feature name\n```\n"
    );
    let _ = writeln!(
        s,
        "Rules of your own go in `[[rules]]`: a condition over any features of the catalogue \
         — comparisons (`>=`, `>`, `<=`, `<`, `==`, `!=`) with numbers, combined with `and`, \
         `or`, `not` and parentheses (`and` binds tighter). A comparison with a null feature is \
         unknown, and unknown propagates as in SQL; a rule fires only when its condition is \
         true. `validate` refuses a rule that names no feature, has a syntax error, reuses a \
         name or needs a feature from a source not in its `sources`, saying which rule and \
         why.\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[[rules]]\nname = \"failed_fanout\"\n\
         condition = \"conn_failed_out >= 20 and (failed_conn_ratio_out >= 0.8 or distinct_peers_out > 10)\"\n\
         severity = \"high\"                # default medium\n\
         sources = [\"pcap\"]                # optional: derived from the features\n\
         summary = \"{{entity}} failed {{conn_failed_out}} connections\"   # optional\n```\n"
    );
    for d in DETECTIONS {
        let _ = writeln!(s, "## `{}`\n", d.name);
        let _ = writeln!(
            s,
            "Severity **{}**; sources: {}.\n\n{}\n",
            d.severity,
            d.sources.join(", "),
            d.description
        );
        let _ = writeln!(s, "| key | fires when | default |\n|---|---|---|");
        for c in d.conditions {
            let op = match c.cmp {
                Cmp::AtLeast => "≥",
                Cmp::AtMost => "≤",
            };
            let _ = writeln!(s, "| `{}` | {op} threshold | {} |", c.feature, c.default);
        }
        let _ = writeln!(s, "\nSummary: `{}`\n", d.summary);
    }
    s.push_str(&crate::correlate::markdown());
    s
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

/// Counters of the detection operator.
#[derive(Debug, Default)]
pub struct DetectCounters {
    pub alerts: AtomicU64,
}

/// A comparison operator of a rule's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

/// A condition over one row's features. A comparison with a null feature is
/// unknown, and unknown propagates as in SQL (`and`, `or`, `not`); a rule fires
/// only when its condition is true.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Cmp { col: usize, op: Op, value: f64 },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    fn eval(&self, values: &[f64]) -> Option<bool> {
        match self {
            Expr::Cmp { col, op, value } => {
                let v = values.get(*col).copied().filter(|v| !v.is_nan())?;
                Some(match op {
                    Op::Ge => v >= *value,
                    Op::Gt => v > *value,
                    Op::Le => v <= *value,
                    Op::Lt => v < *value,
                    Op::Eq => v == *value,
                    Op::Ne => v != *value,
                })
            }
            Expr::And(a, b) => match (a.eval(values), b.eval(values)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Expr::Or(a, b) => match (a.eval(values), b.eval(values)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Expr::Not(a) => a.eval(values).map(|b| !b),
        }
    }
}

/// Parses a rule's condition: comparisons of catalogue features with numbers
/// (`>=`, `>`, `<=`, `<`, `==`, `!=`), combined with `and`, `or`, `not` and
/// parentheses (`and` binds tighter than `or`). Returns the expression and the
/// features it names, in order of appearance.
pub fn parse_condition(text: &str, defs: &[FeatureDef]) -> Result<(Expr, Vec<String>), String> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        defs,
        features: Vec::new(),
    };
    let e = p.or()?;
    if let Some(t) = p.tokens.get(p.pos) {
        return Err(format!("unexpected {t:?} after a complete condition"));
    }
    Ok((e, p.features))
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            out.push(c.to_string());
            chars.next();
        } else if "<>=!".contains(c) {
            chars.next();
            let two = chars.peek().is_some_and(|&(_, d)| d == '=');
            if two {
                chars.next();
            }
            let op = &text[i..i + if two { 2 } else { 1 }];
            if !matches!(op, ">=" | ">" | "<=" | "<" | "==" | "!=") {
                return Err(format!(
                    "unknown operator {op:?} (use >=, >, <=, <, ==, !=)"
                ));
            }
            out.push(op.to_string());
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
            // A feature name, a keyword or a number (signed, with an exponent).
            chars.next();
            let mut end = i + 1;
            while let Some(&(j, d)) = chars.peek() {
                let exponent_sign = (d == '+' || d == '-')
                    && text[i..j].ends_with(['e', 'E'])
                    && text[i..j]
                        .trim_start_matches('-')
                        .starts_with(|x: char| x.is_ascii_digit());
                if d.is_ascii_alphanumeric() || d == '_' || d == '.' || exponent_sign {
                    end = j + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(text[i..end].to_string());
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [String],
    pos: usize,
    defs: &'a [FeatureDef],
    features: Vec<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<&str> {
        let t = self.tokens.get(self.pos).map(String::as_str);
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.peek() == Some("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some("not") => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.pos += 1;
                let e = self.or()?;
                match self.next() {
                    Some(")") => Ok(e),
                    _ => Err("a ( without its )".into()),
                }
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let name = self
            .next()
            .ok_or("the condition ends where a feature name should be")?
            .to_string();
        let col = self
            .defs
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| format!("{name:?} is not a feature (docs/FEATURES.md lists them)"))?;
        let op = match self.next() {
            Some(">=") => Op::Ge,
            Some(">") => Op::Gt,
            Some("<=") => Op::Le,
            Some("<") => Op::Lt,
            Some("==") => Op::Eq,
            Some("!=") => Op::Ne,
            other => {
                return Err(format!(
                    "after {name}: expected a comparison, found {other:?}"
                ));
            }
        };
        let value: f64 = match self.next() {
            Some(t) => t
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| format!("after {name}: {t:?} is not a number"))?,
            None => {
                return Err(format!(
                    "after {name}: the condition ends where a number should be"
                ));
            }
        };
        if !self.features.contains(&name) {
            self.features.push(name);
        }
        Ok(Expr::Cmp { col, op, value })
    }
}

/// A rule written in flows.toml (`[[rules]]`).
#[derive(Clone, Debug, PartialEq)]
pub struct UserRule {
    pub name: String,
    pub condition: String,
    pub severity: Severity,
    /// The sources its features come from (derived from them when not given).
    pub sources: Vec<String>,
    /// One line; `{entity}` and `{feature}` placeholders as in the built-ins.
    pub summary: Option<String>,
}

impl UserRule {
    /// Checks the rule against the catalogue: a clear reason when it is wrong.
    pub fn check(&self, defs: &[FeatureDef]) -> Result<(), String> {
        if DETECTIONS.iter().any(|d| d.name == self.name) {
            return Err(format!(
                "{} is a built-in detection; tune it in [detections.{}] or pick another name",
                self.name, self.name
            ));
        }
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
        for n in self.summary.iter().flat_map(|s| placeholders(s)) {
            if !defs.iter().any(|d| d.name == n) {
                return Err(format!("summary placeholder {{{n}}} is not a feature"));
            }
        }
        Ok(())
    }
}

struct Rule {
    name: String,
    severity: Severity,
    sources: Vec<String>,
    expr: Expr,
    /// Columns of the features named in the condition and the summary.
    evidence: Vec<(usize, String)>,
    summary: String,
}

/// The timely-free core: feature rows in, alerts out. Rows of one entity must
/// come in window order.
pub struct Detector {
    rules: Vec<Rule>,
    /// Per (rule, entity): the last window the rule fired in.
    firing: Map<(usize, Entity), u64>,
    /// The newest window seen, and the last one `firing` was swept at.
    newest: u64,
    swept: u64,
}

impl Detector {
    /// `settings` by detection name (a detection not named keeps its defaults),
    /// and the rules written in flows.toml.
    pub fn new(
        defs: &[FeatureDef],
        settings: &[(String, DetectionSettings)],
        user_rules: &[UserRule],
    ) -> Result<Self, String> {
        let col = |n: &str| {
            defs.iter()
                .position(|d| d.name == n)
                .ok_or_else(|| format!("feature {n} is not in the catalogue"))
        };
        let evidence = |names: Vec<String>| -> Result<Vec<(usize, String)>, String> {
            let mut out: Vec<(usize, String)> = Vec::new();
            for n in names {
                if !out.iter().any(|(_, e)| *e == n) {
                    out.push((col(&n)?, n));
                }
            }
            Ok(out)
        };
        let mut rules = Vec::new();
        for def in DETECTIONS {
            let s = settings
                .iter()
                .find(|(n, _)| n == def.name)
                .map_or_else(|| DetectionSettings::defaults(def), |(_, s)| s.clone());
            if !s.enabled {
                continue;
            }
            let mut expr: Option<Expr> = None;
            for (c, t) in def.conditions.iter().zip(&s.thresholds) {
                let op = match c.cmp {
                    Cmp::AtLeast => Op::Ge,
                    Cmp::AtMost => Op::Le,
                };
                let cmp = Expr::Cmp {
                    col: col(c.feature)?,
                    op,
                    value: *t,
                };
                expr = Some(match expr {
                    None => cmp,
                    Some(e) => Expr::And(Box::new(e), Box::new(cmp)),
                });
            }
            let names = def
                .conditions
                .iter()
                .map(|c| c.feature.to_string())
                .chain(placeholders(def.summary))
                .collect();
            rules.push(Rule {
                name: def.name.to_string(),
                severity: s.severity,
                sources: def.sources.iter().map(|s| s.to_string()).collect(),
                expr: expr.ok_or_else(|| format!("{} has no condition", def.name))?,
                evidence: evidence(names)?,
                summary: def.summary.to_string(),
            });
        }
        for r in user_rules {
            r.check(defs).map_err(|e| format!("rule {}: {e}", r.name))?;
            let (expr, features) = parse_condition(&r.condition, defs)?;
            let sources = if r.sources.is_empty() {
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
                r.sources.clone()
            };
            let summary = r
                .summary
                .clone()
                .unwrap_or_else(|| format!("{{entity}} matched {}", r.condition));
            let names = features.into_iter().chain(placeholders(&summary)).collect();
            rules.push(Rule {
                name: r.name.clone(),
                severity: r.severity,
                sources,
                expr,
                evidence: evidence(names)?,
                summary,
            });
        }
        Ok(Detector {
            rules,
            firing: Map::default(),
            newest: 0,
            swept: 0,
        })
    }

    /// The alerts `row` raises.
    pub fn observe(&mut self, row: &FeatureRow, out: &mut Vec<Alert>) {
        if row.window > self.newest {
            self.newest = row.window;
        }
        // An occurrence is over once a window passed without it: forget it.
        if self.newest > self.swept + 1 {
            let newest = self.newest;
            self.firing.retain(|_, w| *w + 1 >= newest);
            self.swept = newest;
        }
        for (k, rule) in self.rules.iter().enumerate() {
            if rule.expr.eval(&row.values) != Some(true) {
                continue;
            }
            let key = (k, row.entity.clone());
            let continues = self
                .firing
                .get(&key)
                .is_some_and(|&w| w + 1 == row.window || w == row.window);
            self.firing.insert(key, row.window);
            if continues {
                continue;
            }
            let evidence: Vec<(String, f64)> = rule
                .evidence
                .iter()
                .filter_map(|(c, n)| row.get(*c).map(|v| (n.clone(), v)))
                .collect();
            out.push(Alert {
                id: alert_id(&rule.name, &row.entity, row.window),
                rule: rule.name.clone(),
                severity: rule.severity,
                entity: row.entity.clone(),
                window: row.window,
                sources: rule.sources.clone(),
                summary: summary(&rule.summary, &row.entity, &evidence),
                evidence,
            });
        }
    }
}

/// The `{name}` placeholders of a summary, `{entity}` excluded.
fn placeholders(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(n, _)| n))
        .filter(|n| *n != "entity")
        .map(str::to_string)
        .collect()
}

fn summary(template: &str, entity: &Entity, evidence: &[(String, f64)]) -> String {
    let mut s = template.replace("{entity}", &entity.to_string());
    for (n, v) in evidence {
        let text = if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        };
        s = s.replace(&format!("{{{n}}}"), &text);
    }
    s
}

/// 128 bits of FNV-1a (two 64-bit passes with different offsets) over the
/// detection, the entity and the window: stable across runs, workers and builds.
pub fn alert_id(rule: &str, entity: &Entity, window: u64) -> String {
    let text = format!("{rule}\u{0}{entity}\u{0}{window}");
    let fnv = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// Runs the detections over feature rows: the rows pass on unchanged, and the
/// alerts they raise come out as a second stream.
pub trait Detect<'scope> {
    fn detect(
        self,
        detector: Detector,
        counters: Arc<DetectCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FeatureRow>>,
        Stream<'scope, u64, Vec<Alert>>,
    );
}

impl<'scope> Detect<'scope> for Stream<'scope, u64, Vec<FeatureRow>> {
    fn detect(
        self,
        mut detector: Detector,
        counters: Arc<DetectCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FeatureRow>>,
        Stream<'scope, u64, Vec<Alert>>,
    ) {
        let mut builder = OperatorBuilder::new("Detect".to_owned(), self.scope());
        // Rows of an entity are already on one worker, in window order.
        let mut input = builder.new_input(self, Pipeline);
        let (rows_out, rows) = builder.new_output();
        let (alerts_out, alerts) = builder.new_output();
        let mut rows_out = OutputBuilder::from(rows_out);
        let mut alerts_out = OutputBuilder::from(alerts_out);
        builder.build(move |_| {
            move |_frontiers| {
                let mut rows_h = rows_out.activate();
                let mut alerts_h = alerts_out.activate();
                input.for_each(|cap, data| {
                    let mut raised = Vec::new();
                    for r in data.iter() {
                        detector.observe(r, &mut raised);
                    }
                    if !raised.is_empty() {
                        counters
                            .alerts
                            .fetch_add(raised.len() as u64, Ordering::Relaxed);
                        alerts_h.session(&cap).give_container(&mut raised);
                    }
                    rows_h.session(&cap).give_container(data);
                });
            }
        });
        (rows, alerts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::Addr;

    fn row(defs: &[FeatureDef], window: u64, set: &[(&str, f64)]) -> FeatureRow {
        let mut values = vec![f64::NAN; defs.len()].into_boxed_slice();
        for (n, v) in set {
            let i = defs.iter().position(|d| d.name == *n).expect("feature");
            values[i] = *v;
        }
        FeatureRow {
            entity: Entity::Ip(Addr::from(std::net::IpAddr::from([10, 0, 0, 1]))),
            window,
            values,
        }
    }

    #[test]
    fn detections_md_matches_the_catalogue() {
        crate::assert_doc_fresh("docs/DETECTIONS.md", &markdown(), "detections_md");
    }

    #[test]
    fn every_detection_names_catalogue_features() {
        let defs = crate::features::defs();
        Detector::new(&defs, &[], &[]).expect("all features resolve");
    }

    #[test]
    fn an_occurrence_over_overlapping_windows_is_one_alert_with_a_stable_id() {
        let defs = crate::features::defs();
        let mut d = Detector::new(&defs, &[], &[]).expect("detector");
        let scan = [
            ("distinct_dst_ports_out", 500.0),
            ("distinct_peers_out", 1.0),
        ];
        let mut out = Vec::new();
        for w in [10, 11, 12] {
            d.observe(&row(&defs, w, &scan), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!(
            (a.rule.as_str(), a.window, a.severity),
            ("vertical_scan", 10, Severity::High)
        );
        assert_eq!(a.summary, "10.0.0.1 sent to 500 ports on 1 host(s)");
        assert_eq!(a.id, alert_id("vertical_scan", &a.entity, 10));
        assert_eq!(a.id.len(), 32);
        // A quiet window ends the occurrence; the next one is a new alert.
        d.observe(
            &row(&defs, 13, &[("distinct_dst_ports_out", 3.0)]),
            &mut out,
        );
        d.observe(&row(&defs, 14, &scan), &mut out);
        assert_eq!(out.len(), 2);
        assert_ne!(out[1].id, out[0].id);
        // Below a threshold, or null, nothing fires.
        let mut none = Vec::new();
        let mut fresh = Detector::new(&defs, &[], &[]).expect("detector");
        fresh.observe(
            &row(
                &defs,
                1,
                &[
                    ("distinct_dst_ports_out", 99.0),
                    ("distinct_peers_out", 1.0),
                ],
            ),
            &mut none,
        );
        fresh.observe(
            &row(&defs, 3, &[("distinct_dst_ports_out", 500.0)]),
            &mut none,
        );
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn settings_change_thresholds_severity_and_enablement() {
        let defs = crate::features::defs();
        let s = DetectionSettings {
            enabled: true,
            severity: Severity::Low,
            thresholds: vec![50.0, 4.0],
        };
        let mut d =
            Detector::new(&defs, &[("vertical_scan".into(), s.clone())], &[]).expect("detector");
        let mut out = Vec::new();
        d.observe(
            &row(
                &defs,
                1,
                &[
                    ("distinct_dst_ports_out", 60.0),
                    ("distinct_peers_out", 1.0),
                ],
            ),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].severity, Severity::Low);
        let off = DetectionSettings {
            enabled: false,
            ..s
        };
        let mut d = Detector::new(&defs, &[("vertical_scan".into(), off)], &[]).expect("detector");
        let mut out = Vec::new();
        d.observe(
            &row(
                &defs,
                1,
                &[
                    ("distinct_dst_ports_out", 600.0),
                    ("distinct_peers_out", 1.0),
                ],
            ),
            &mut out,
        );
        assert!(out.is_empty());
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;
    use amoskys_schemas::Addr;

    fn row(defs: &[FeatureDef], set: &[(&str, f64)]) -> FeatureRow {
        let mut values = vec![f64::NAN; defs.len()].into_boxed_slice();
        for (n, v) in set {
            values[defs.iter().position(|d| d.name == *n).expect("feature")] = *v;
        }
        FeatureRow {
            entity: Entity::Ip(Addr::from(std::net::IpAddr::from([10, 0, 0, 2]))),
            window: 7,
            values,
        }
    }

    fn rule(condition: &str) -> UserRule {
        UserRule {
            name: "mine".into(),
            condition: condition.into(),
            severity: Severity::Medium,
            sources: vec![],
            summary: None,
        }
    }

    #[test]
    fn conditions_combine_with_and_or_not_and_treat_null_as_unknown() {
        let defs = crate::features::defs();
        let fires = |cond: &str, set: &[(&str, f64)]| {
            let mut d = Detector::new(
                &defs,
                &[(
                    "vertical_scan".into(),
                    DetectionSettings {
                        enabled: false,
                        severity: Severity::Low,
                        thresholds: vec![0.0, 0.0],
                    },
                )],
                &[rule(cond)],
            )
            .expect("detector");
            let mut out = Vec::new();
            d.observe(&row(&defs, set), &mut out);
            out.iter().any(|a| a.rule == "mine")
        };
        let c =
            "conn_failed_out >= 20 and (failed_conn_ratio_out >= 0.8 or distinct_peers_out > 10)";
        assert!(fires(
            c,
            &[("conn_failed_out", 25.0), ("failed_conn_ratio_out", 0.9)]
        ));
        assert!(fires(
            c,
            &[
                ("conn_failed_out", 25.0),
                ("failed_conn_ratio_out", 0.1),
                ("distinct_peers_out", 11.0)
            ]
        ));
        assert!(!fires(
            c,
            &[
                ("conn_failed_out", 25.0),
                ("failed_conn_ratio_out", 0.1),
                ("distinct_peers_out", 10.0)
            ]
        ));
        assert!(!fires(
            c,
            &[("conn_failed_out", 19.0), ("failed_conn_ratio_out", 0.9)]
        ));
        // Null is unknown: `not` of unknown does not fire, `or` with a true side does.
        assert!(!fires("not bytes_out > 5", &[]));
        assert!(fires("not bytes_out > 5", &[("bytes_out", 1.0)]));
        assert!(fires(
            "bytes_out > 5 or packets_out == 3",
            &[("packets_out", 3.0)]
        ));
        assert!(fires(
            "bytes_out != 1e3 and bytes_out < -1.5e-2",
            &[("bytes_out", -1.0)]
        ));
    }

    #[test]
    fn a_bad_rule_says_why() {
        let defs = crate::features::defs();
        for (cond, says) in [
            ("bytes_outt > 5", "not a feature"),
            ("bytes_out = 5", "unknown operator"),
            ("bytes_out >> 5", "not a number"),
            ("bytes_out > five", "not a number"),
            ("(bytes_out > 5", "without its )"),
            ("bytes_out > 5 packets_out < 2", "unexpected"),
            ("bytes_out >", "ends where a number"),
            ("bytes_out > 5 and", "ends where a feature"),
            ("bytes_out ~ 5", "unexpected character"),
        ] {
            let e = rule(cond).check(&defs).expect_err(cond);
            assert!(e.contains(says), "{cond}: {e}");
        }
        let mut r = rule("auth_failures >= 3");
        r.sources = vec!["pcap".into()];
        assert!(
            r.check(&defs)
                .expect_err("source")
                .contains("comes from syslog")
        );
        let mut r = rule("bytes_out > 1");
        r.name = "syn_flood".into();
        assert!(r.check(&defs).expect_err("name").contains("built-in"));
    }

    #[test]
    fn a_user_rule_alerts_with_its_evidence_and_derived_sources() {
        let defs = crate::features::defs();
        let mut r = rule("auth_failures_per_conn_in >= 3");
        r.summary = Some("{entity} failed {auth_failures} logins".into());
        let mut d = Detector::new(&defs, &[], &[r]).expect("detector");
        let mut out = Vec::new();
        d.observe(
            &row(
                &defs,
                &[("auth_failures_per_conn_in", 4.0), ("auth_failures", 12.0)],
            ),
            &mut out,
        );
        let a = out.iter().find(|a| a.rule == "mine").expect("alert");
        assert_eq!(a.sources, ["syslog", "pcap"]);
        assert_eq!(a.summary, "10.0.0.2 failed 12 logins");
        assert_eq!(
            a.evidence,
            [
                ("auth_failures_per_conn_in".to_string(), 4.0),
                ("auth_failures".to_string(), 12.0)
            ]
        );
    }
}
