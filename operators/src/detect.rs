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
        name: "service_probe",
        severity: Severity::Medium,
        sources: &["pcap"],
        description: "Connections to a few hosts that are accepted and then torn down by the \
            client with RSTs, again and again: service and version probing (nmap -sV), which \
            opens each service, sends a probe and aborts. Ordinary clients close with FIN. \
            Raise `tcp_rst_out` for applications that abort their connections by design.",
        conditions: &[
            at_least("conn_attempts_out", 5.0),
            at_least("tcp_rst_out", 10.0),
            at_most("distinct_peers_out", 3.0),
            at_least("tcp_synack_per_syn", 0.9),
        ],
        summary: "{entity} opened {conn_attempts_out} connections to {distinct_peers_out} host(s), all accepted, and sent {tcp_rst_out} RSTs",
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
        description: "Failed logins from one remote address (or host name), as logged by \
            the hosts it tried: sshd, PAM, dropbear, FTP servers, each attempt counted once \
            however many lines it gave. Lower `auth_failures_as_remote` to catch slow guessing.",
        conditions: &[at_least("auth_failures_as_remote", 10.0)],
        summary: "{entity} failed {auth_failures_as_remote} logins on {auth_distinct_targets_as_remote} host(s) as {auth_distinct_users_as_remote} user(s)",
    },
    DetectionDef {
        name: "log_injection",
        severity: Severity::High,
        sources: &["syslog"],
        description: "Authentication lines whose client-chosen text (a user name, a reason) \
            carries the line's own address structure (` from A port P`, ` rhost=A`): a client \
            trying to have another host blamed in the entity's log, or to hide. No legitimate \
            user name looks like that. The alert is on the host whose log was targeted; a line \
            with two readings blames no remote host at all.",
        conditions: &[at_least("auth_injection_lines", 1.0)],
        summary: "{entity} logged {auth_injection_lines} authentication line(s) with an address in client-chosen text",
    },
    DetectionDef {
        name: "dhcp_flood",
        severity: Severity::High,
        sources: &["pcap"],
        description: "Many DHCP client messages with one hardware address in one window: a \
            client asks a few times a minute at most, even retrying, while a flood (to \
            exhaust the server's pool or load it) sends dozens a second. The entity is the \
            client hardware address (`chaddr`). A flood that changes the hardware address \
            with every message needs the link-layer source, which packets here are not keyed \
            on.",
        conditions: &[at_least("dhcp_client_messages", 50.0)],
        summary: "{entity} sent {dhcp_client_messages} DHCP messages from {dhcp_client_ips} address(es)",
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
    let _ = writeln!(
        s,
        "A rule may group its matches instead of alerting per entity: `group_by = \
         \"network/24\"` (the entities of one IPv4 network of that prefix length; IPv6 hosts \
         by /64; named devices belong to none) or `\"all\"`, with `min_entities` (default 1): \
         one alert per group and window once that many of its entities match, named after \
         the group (`10.0.0.0/24`, `all`), with the number of entities and the largest value \
         of each feature among them as evidence (`{{entities}}` in a summary). Consecutive \
         windows are one occurrence, as for single entities.\n"
    );
    let _ = writeln!(
        s,
        "```toml\n[[rules]]\nname = \"subnet_failing\"\n\
         condition = \"conn_failed_out >= 5\"\ngroup_by = \"network/24\"\nmin_entities = 3\n```\n"
    );
    let _ = writeln!(
        s,
        "## Counting rules over events (`[[count_rules]]`)\n\n\
         Sigma-style aggregations over the `events` table's rows (syslog messages, MQTT and \
         SNMP samples), evaluated as the events arrive: the events whose fields match \
         `filter` (each field one pattern or a list of them; a pattern matches the whole \
         value, case-insensitively, `*` standing for any characters), grouped by the \
         `group_by` fields, counted over a sliding `timespan` of event time — every event \
         (`count = \"event_count\"`) or the distinct values of one field (`count = \
         \"value_count\"`, `value = \"<field>\"`). A group whose count reaches `threshold` \
         raises an alert, at most one per `timespan`; its entity is the group's value when it \
         groups by one field (an address becomes that host), else the fields and values. \
         Fields: {}. `validate` refuses an unknown field, a missing `value` for \
         `value_count`, an empty pattern or a threshold of 0, naming the rule.\n",
        crate::count_rules::FIELDS
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "```toml\n[[count_rules]]\nname = \"user_enumeration\"\n\
         filter = {{ appname = \"sshd\", message = \"Invalid user * from *\" }}\n\
         group_by = [\"auth_remote\"]\ncount = \"value_count\"      # or \"event_count\"\n\
         value = \"auth_user\"\ntimespan = \"10m\"\nthreshold = 5\nseverity = \"high\"\n\
         summary = \"{{group}}: {{count}} users in {{timespan}}\"   # optional\n```\n"
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
    for d in crate::device_watch::DEVICE_DETECTIONS {
        let _ = writeln!(s, "## `{}`\n", d.name);
        let _ = writeln!(
            s,
            "Severity **{}**; sources: {}; learned per device from its events, in the \
             long-running job.\n\n{}\n",
            d.severity,
            d.sources.join(", "),
            d.description
        );
        let _ = writeln!(s, "| key | default |\n|---|---|");
        for c in d.conditions {
            let _ = writeln!(s, "| `{}` | {} |", c.feature, c.default);
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

impl DetectCounters {
    /// Counts `alerts`, if any, and hands them to `give`.
    pub fn emit(&self, alerts: &mut Vec<Alert>, give: impl FnOnce(&mut Vec<Alert>)) {
        if !alerts.is_empty() {
            self.alerts
                .fetch_add(alerts.len() as u64, Ordering::Relaxed);
            give(alerts);
        }
    }
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
    /// `entity` (the default: one alert per entity), `network/<len>` (the
    /// entities of one IPv4 network of that prefix length, IPv6 hosts by /64) or
    /// `all`: with a group, one alert per group and window once `min_entities`
    /// of its entities match.
    pub group_by: Option<String>,
    pub min_entities: u64,
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
    fn compile(&self, defs: &[FeatureDef]) -> Result<Rule, String> {
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
            if Grouping::parse(r.group_by.as_deref())? == Grouping::Entity {
                rules.push(r.compile(defs)?);
            }
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
                    counters.emit(&mut raised, |v| alerts_h.session(&cap).give_container(v));
                    rows_h.session(&cap).give_container(data);
                });
            }
        });
        (rows, alerts)
    }
}

/// A detection over events as they arrive, one at a time.
pub trait EventDetector: 'static {
    /// Appends the alerts `row` raises.
    fn observe(&mut self, row: &amoskys_schemas::EventRow, out: &mut Vec<Alert>);
}

/// Runs `detector` over the events stream, on the worker that holds them (the
/// events come in on worker 0, in arrival order).
pub fn detect_events<'s, D: EventDetector>(
    events: Stream<'s, u64, Vec<amoskys_schemas::EventRow>>,
    name: &str,
    mut detector: D,
    counters: Arc<DetectCounters>,
) -> Stream<'s, u64, Vec<Alert>> {
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::Operator;
    events.unary::<CapacityContainerBuilder<Vec<Alert>>, _, _, _>(
        Pipeline,
        name,
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut out = Vec::new();
                    for e in data.iter() {
                        detector.observe(e, &mut out);
                    }
                    counters.emit(&mut out, |v| output.session(&cap).give_container(v));
                });
            }
        },
    )
}

/// One entity's row matching a grouped rule, on its way to the group's worker.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct GroupMatch {
    rule: usize,
    group: String,
    window: u64,
    entity: String,
    /// The rule's evidence features, in its order (NaN for null).
    values: Vec<f64>,
}

/// Rules whose `group_by` is a network or `all`: matches of several entities in
/// one window make one alert for the group, once `min_entities` of them match.
pub struct GroupRules {
    rules: Vec<(Rule, Grouping, u64)>,
}

impl GroupRules {
    pub fn new(defs: &[FeatureDef], user_rules: &[UserRule]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for r in user_rules {
            r.check(defs).map_err(|e| format!("rule {}: {e}", r.name))?;
            let g = Grouping::parse(r.group_by.as_deref())?;
            if g != Grouping::Entity {
                rules.push((r.compile(defs)?, g, r.min_entities));
            }
        }
        Ok(GroupRules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The group an entity falls in; a named device is in no network.
    fn group_of(g: Grouping, e: &Entity) -> Option<String> {
        match (g, e) {
            (Grouping::All, _) => Some("all".into()),
            (Grouping::Network(len), Entity::Ip(a)) => {
                let v4 = a.is_v4();
                let shown = if v4 { len } else { 64 };
                let net = a.masked(if v4 { 96 + len } else { 64 });
                Some(format!("{net}/{shown}"))
            }
            _ => None,
        }
    }
}

/// Evaluates grouped rules over feature rows: the matches are sent to one
/// worker per group, held until their window is complete, and counted.
pub fn detect_groups<'s>(
    rows: Stream<'s, u64, Vec<FeatureRow>>,
    rules: GroupRules,
    counters: Arc<DetectCounters>,
) -> Stream<'s, u64, Vec<Alert>> {
    use std::collections::BTreeMap;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::{Capability, Operator};
    let rules = Arc::new(rules);
    let r1 = rules.clone();
    let matches = rows.unary::<CapacityContainerBuilder<Vec<GroupMatch>>, _, _, _>(
        Pipeline,
        "GroupMatches",
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut v = Vec::new();
                    for row in data.iter() {
                        for (k, (rule, g, _)) in r1.rules.iter().enumerate() {
                            if rule.expr.eval(&row.values) != Some(true) {
                                continue;
                            }
                            let Some(group) = GroupRules::group_of(*g, &row.entity) else {
                                continue;
                            };
                            v.push(GroupMatch {
                                rule: k,
                                group,
                                window: row.window,
                                entity: row.entity.to_string(),
                                values: rule
                                    .evidence
                                    .iter()
                                    .map(|(c, _)| row.get(*c).unwrap_or(f64::NAN))
                                    .collect(),
                            });
                        }
                    }
                    if !v.is_empty() {
                        output.session(&cap).give_container(&mut v);
                    }
                });
            }
        },
    );
    let route =
        |m: &GroupMatch| ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one((m.rule, &m.group));
    matches.unary_frontier::<CapacityContainerBuilder<Vec<Alert>>, _, _, _>(
        Exchange::new(route),
        "GroupRules",
        move |_cap, _info| {
            // Rows of window w come at time w or w + 1: a window is complete
            // once the frontier has passed w + 1.
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<GroupMatch>)> = BTreeMap::new();
            let mut firing: Map<(usize, String), u64> = Map::default();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each(|cap, data| {
                    for m in data.drain(..) {
                        let at = (m.window + 1).max(*cap.least().unwrap_or(&0));
                        pending
                            .entry(m.window)
                            .or_insert_with(|| (cap.delayed(&at, port), Vec::new()))
                            .1
                            .push(m);
                    }
                });
                while let Some(e) = pending.first_entry() {
                    if frontier.less_equal(&(e.key() + 1)) {
                        break;
                    }
                    let (w, (cap, ms)) = e.remove_entry();
                    let mut by: BTreeMap<(usize, String), Vec<GroupMatch>> = BTreeMap::new();
                    for m in ms {
                        by.entry((m.rule, m.group.clone())).or_default().push(m);
                    }
                    let mut out = Vec::new();
                    for ((k, group), mut ms) in by {
                        let (rule, _, min) = &rules.rules[k];
                        ms.sort_by(|a, b| a.entity.cmp(&b.entity));
                        ms.dedup_by(|a, b| a.entity == b.entity);
                        if (ms.len() as u64) < *min {
                            continue;
                        }
                        let key = (k, group.clone());
                        let continues = firing.get(&key).is_some_and(|&p| p + 1 >= w);
                        firing.insert(key, w);
                        if continues {
                            continue;
                        }
                        let entity = Entity::Name(Arc::from(group.as_str()));
                        let mut evidence = vec![("entities".to_string(), ms.len() as f64)];
                        for (j, (_, n)) in rule.evidence.iter().enumerate() {
                            let max = ms
                                .iter()
                                .map(|m| m.values[j])
                                .filter(|v| !v.is_nan())
                                .fold(f64::NAN, f64::max);
                            if !max.is_nan() {
                                evidence.push((n.clone(), max));
                            }
                        }
                        let text = rule.summary.replace("{entities}", &ms.len().to_string());
                        out.push(Alert {
                            id: alert_id(&rule.name, &entity, w),
                            rule: rule.name.clone(),
                            severity: rule.severity,
                            summary: summary(&text, &entity, &evidence),
                            entity,
                            window: w,
                            sources: rule.sources.clone(),
                            evidence,
                        });
                    }
                    firing.retain(|_, p| *p + 1 >= w);
                    counters.emit(&mut out, |v| output.session(&cap).give_container(v));
                }
            }
        },
    )
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
            group_by: None,
            min_entities: 1,
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
    fn a_grouped_rule_alerts_once_per_network_when_enough_hosts_match() {
        use timely::dataflow::operators::ToStream;
        use timely::dataflow::operators::capture::{Capture, Event};
        let defs = crate::features::defs();
        let mut r = rule("conn_failed_out >= 5");
        r.group_by = Some("network/24".into());
        r.min_entities = 3;
        r.check(&defs).expect("valid");
        let host = |ip: [u8; 4], window: u64, failed: f64| {
            let mut x = row(&defs, &[("conn_failed_out", failed)]);
            x.entity = Entity::Ip(Addr::from(std::net::IpAddr::from(ip)));
            x.window = window;
            x
        };
        let mut rows = Vec::new();
        // Window 10: three hosts of 10.0.0.0/24 match (one twice as strongly), one
        // of 10.0.1.0/24; window 11: the same three (the same occurrence); window
        // 12: only two; window 13: three again (a new occurrence).
        for w in [10, 11, 13] {
            rows.push(host([10, 0, 0, 1], w, 5.0));
            rows.push(host([10, 0, 0, 2], w, 9.0));
            rows.push(host([10, 0, 0, 3], w, 6.0));
        }
        rows.push(host([10, 0, 0, 1], 12, 5.0));
        rows.push(host([10, 0, 0, 2], 12, 5.0));
        rows.push(host([10, 0, 0, 4], 12, 1.0));
        rows.push(host([10, 0, 1, 1], 10, 50.0));
        let rules = GroupRules::new(&defs, &[r.clone()]).expect("rules");
        let rx = timely::example(move |scope| {
            detect_groups(rows.to_stream(scope), rules, Arc::default()).capture()
        });
        let alerts: Vec<Alert> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Messages(_, v) => Some(v),
                Event::Progress(_) => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            alerts
                .iter()
                .map(|a| (a.entity.to_string(), a.window))
                .collect::<Vec<_>>(),
            [
                ("10.0.0.0/24".to_string(), 10),
                ("10.0.0.0/24".to_string(), 13)
            ]
        );
        assert_eq!(
            alerts[0].evidence,
            [
                ("entities".to_string(), 3.0),
                ("conn_failed_out".to_string(), 9.0)
            ]
        );
        assert_eq!(
            alerts[0].summary,
            "10.0.0.0/24: 3 entities matched conn_failed_out >= 5"
        );
        // Per-entity detection leaves grouped rules alone.
        let d = Detector::new(&defs, &[], &[r]).expect("detector");
        assert!(d.rules.iter().all(|x| x.name != "mine"));
        for (g, says) in [
            (Some("network/33"), "network/"),
            (Some("subnet"), "network/"),
        ] {
            let mut bad = rule("bytes_out > 1");
            bad.group_by = g.map(str::to_string);
            assert!(bad.check(&defs).expect_err(says).contains(says));
        }
        let mut bad = rule("bytes_out > 1");
        bad.min_entities = 2;
        assert!(bad.check(&defs).expect_err("min").contains("group_by"));
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
