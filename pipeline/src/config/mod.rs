//! `flows.toml`: the pipeline's configuration file.
//!
//! Every table and key is optional; what is left out takes the default shown in
//! `examples/flows.toml`. Unknown keys are errors, and so are values out of range:
//! both are reported with the file, line and column.
//!
//! This file holds the whole file's shape, the sections of the dataflow
//! (window, flows, features, runtime) and the checks that need more than one
//! key, reported with file and line. Every other section is deserialized by
//! the crate that uses it: the sources' by the sources crate, the detections'
//! (`[[rules]]`, `[detections]`, `[correlation]`, `[threat_intel]`) by the
//! operators, the outputs' (sinks.rs lists them) by the sinks and query
//! crates; durations and ranges are amoskys_schemas::values, shared by all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod sinks;

pub use amoskys_operators::correlate::{CorrelationSettings, IntelSettings};
pub use amoskys_operators::count_rules::CountRuleSpec;
pub use amoskys_operators::detect::{RuleKind, RuleSpec, Tunings, UserRule};
pub use amoskys_operators::device_watch::LearnRule;
pub use amoskys_schemas::values::{Bounded, PositiveSecs, Secs};
pub use sinks::*;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sources: SourcesConfig,
    pub window: WindowConfig,
    pub flows: FlowsConfig,
    pub features: FeaturesConfig,
    pub runtime: RuntimeConfig,
    pub sinks: SinksConfig,
    /// `[detections.<name>]`: the built-ins tuned (docs/DETECTIONS.md).
    pub detections: Tunings,
    /// `[[rules]]` of every kind: condition, count, learn.
    pub rules: Vec<RuleSpec>,
    /// `[correlation]`: the cross-source incident.
    pub correlation: CorrelationSettings,
    /// `[threat_intel]`: indicators matched against what the sources see.
    pub threat_intel: Option<IntelSettings>,
    /// `[[count_rules]]`: the older spelling of `[[rules]]` with `kind = "count"`.
    pub count_rules: Vec<CountRuleSpec>,
}

/// Event-time windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// How far behind the newest packet the watermark trails. Packets older than the
    /// watermark are late: counted, and left out of flows and features.
    pub lateness: Secs,
    /// A source with no record for this long (wall clock) stops holding the
    /// watermark back, so one quiet listener never stalls the others. A source
    /// not yet heard from holds it back for this long after the start.
    pub idle_timeout: PositiveSecs,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            lateness: Secs::from_secs(10),
            idle_timeout: PositiveSecs(Secs::from_secs(30)),
        }
    }
}

pub use amoskys_sources::SourcesConfig;

/// Flow assembly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// A flow with no packet for this long ends.
    pub idle_timeout: PositiveSecs,
    /// A flow older than this is cut, and continues in a new record.
    pub active_timeout: PositiveSecs,
    /// After FIN from both sides or a RST, stragglers still join the flow this long.
    pub closed_timeout: Secs,
    /// Flows held at once (over all workers); past it the longest-idle are expired
    /// early and counted.
    pub max_flows: Bounded<1, 1_000_000_000>,
    /// Seed of the Community ID hash.
    pub community_id_seed: Bounded<0, 65_535>,
    /// Payload bytes of each direction of a flow read for application metadata
    /// (protocol, HTTP, TLS, SSH, ...: docs/APPLICATION.md); 0 turns it off.
    pub application_bytes: Bounded<0, 65_536>,
}

impl FlowsConfig {
    /// The flow tables' settings, the table size split over `workers`.
    pub fn settings(&self, workers: usize) -> amoskys_operators::FlowConfig {
        amoskys_operators::FlowConfig {
            idle_ns: self.idle_timeout.0.as_nanos_i64(),
            active_ns: self.active_timeout.0.as_nanos_i64(),
            closed_ns: self.closed_timeout.as_nanos_i64(),
            max_flows: (self.max_flows.0 as usize).div_ceil(workers.max(1)),
            community_id_seed: self.community_id_seed.0 as u16,
            application_bytes: self.application_bytes.0 as usize,
        }
    }
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            idle_timeout: PositiveSecs(Secs::from_secs(120)),
            active_timeout: PositiveSecs(Secs::from_secs(1800)),
            closed_timeout: Secs::from_secs(5),
            max_flows: Bounded(1_000_000),
            community_id_seed: Bounded(0),
            application_bytes: Bounded(amoskys_sources::pcap::DEFAULT_APPLICATION_BYTES as u64),
        }
    }
}

/// Per-entity state of the history features (change and variability).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Entities whose history is kept at once (over all workers); past it the
    /// longest-unseen are forgotten, and counted.
    pub max_entity_state: Bounded<1, 1_000_000_000>,
    /// An entity unseen for this long (event time) is forgotten.
    pub entity_state_idle: PositiveSecs,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            max_entity_state: Bounded(1_000_000),
            entity_state_idle: PositiveSecs(Secs::from_secs(3600)),
        }
    }
}

impl FeaturesConfig {
    /// The history operator's settings for `workers` workers.
    pub fn history(&self, workers: usize) -> amoskys_operators::HistoryConfig {
        amoskys_operators::HistoryConfig {
            max_entities: (self.max_entity_state.0 as usize).div_ceil(workers.max(1)),
            idle_windows: (self.entity_state_idle.0.0.as_secs()
                / amoskys_schemas::HOP_SECONDS as u64)
                .max(1),
        }
    }
}

/// Threads and queues.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Timely workers (threads); `-w` overrides it.
    pub workers: Bounded<1, 256>,
    /// Packets per batch handed from the capture reader to the dataflow.
    pub batch_size: Bounded<1, 1_048_576>,
    /// Packets the dataflow may hold unprocessed before the reader waits.
    pub max_in_flight: Bounded<1024, 1_073_741_824>,
    /// Serve Prometheus metrics of the long-running job on this address
    /// (`--metrics-listen` wins); none by default.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: Bounded(1),
            batch_size: Bounded(1024),
            max_in_flight: Bounded(262_144),
            metrics_listen: None,
        }
    }
}

/// A configuration file that could not be used, with where and why.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                reason: e.message().trim().to_string(),
            }
        })?;
        cfg.check(path, text)?;
        // What the flows read of each direction is what a capture keeps of
        // each packet.
        for p in &mut cfg.sources.pcap {
            p.keep_payload = cfg.flows.application_bytes.0 as usize;
        }
        Ok(cfg)
    }

    /// The `[[rules]]` of kind `condition`.
    pub fn condition_rules(&self) -> Vec<UserRule> {
        self.rules
            .iter()
            .filter_map(|r| match r {
                RuleSpec::Condition(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    /// The counting rules: `[[rules]]` of kind `count`, then `[[count_rules]]`.
    pub fn counting_rules(&self) -> Vec<CountRuleSpec> {
        self.rules
            .iter()
            .filter_map(|r| match r {
                RuleSpec::Count(c) => Some(c.clone()),
                _ => None,
            })
            .chain(self.count_rules.iter().cloned())
            .collect()
    }

    /// The learning rules to run: the built-ins as tuned, and `[[rules]]` of
    /// kind `learn` (replacing a built-in of the same name).
    pub fn learning_rules(&self) -> Vec<LearnRule> {
        let user: Vec<LearnRule> = self
            .rules
            .iter()
            .filter_map(|r| match r {
                RuleSpec::Learn(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        self.detections.learn_rules(&user)
    }

    /// Checks that read other files (keys, certificates): done by `validate` and
    /// when a job starts.
    pub fn check_files(&self) -> Result<(), String> {
        if let Some(w) = &self.sinks.webhook {
            w.settings(&self.sinks.parquet.path)?;
        }
        if let Some(f) = &self.sinks.flight {
            f.settings(self.sinks.parquet.path.clone())?;
        }
        if let Some(t) = &self.threat_intel {
            let text = std::fs::read_to_string(&t.file).map_err(|e| {
                format!("[threat_intel] file {}: cannot read: {e}", t.file.display())
            })?;
            let (_, bad) = amoskys_operators::correlate::parse_indicators(&text);
            if let Some((line, why)) = bad.first() {
                return Err(format!(
                    "[threat_intel] file {}:{line}: {why} ({} such line(s))",
                    t.file.display(),
                    bad.len()
                ));
            }
        }
        Ok(())
    }

    /// Checks that need more than one key.
    fn check(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        // Every problem is found, then reported in the order of the file.
        let mut errs: Vec<(usize, String)> = Vec::new();
        let at = |header: &str, nth: usize| section_offset(text, header, nth);
        let defs = amoskys_operators::features::defs();
        let all = self.rules.iter().map(|r| ("[[rules]]", r.name())).chain(
            self.count_rules
                .iter()
                .map(|r| ("[[count_rules]]", r.name.as_str())),
        );
        let mut nth = std::collections::HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (header, name) in all {
            let k = nth.entry(header).or_insert(0usize);
            if !seen.insert(name) {
                errs.push((
                    at(header, *k),
                    format!("{header} {name}: the name is used twice"),
                ));
            }
            *k += 1;
        }
        for (k, r) in self.rules.iter().enumerate() {
            let named = amoskys_operators::detect::check_name(r.kind(), r.name());
            let checked = named.and_then(|()| match r {
                RuleSpec::Condition(c) => c.check(&defs).and_then(|()| {
                    if self.detections.tunes(&c.name) {
                        Err(format!(
                            "it replaces the built-in {0}, which [detections.{0}] tunes: \
                             put the thresholds in the rule's condition and drop [detections.{0}]",
                            c.name
                        ))
                    } else {
                        Ok(())
                    }
                }),
                RuleSpec::Count(c) => c.check().map(|_| ()),
                RuleSpec::Learn(l) => l.check().and_then(|()| {
                    if self.detections.tunes(&l.name) {
                        Err(format!(
                            "it replaces the built-in {0}, which [detections.{0}] tunes: \
                             drop [detections.{0}]",
                            l.name
                        ))
                    } else {
                        Ok(())
                    }
                }),
            });
            if let Err(e) = checked {
                errs.push((at("[[rules]]", k), format!("[[rules]] {}: {e}", r.name())));
            }
        }
        for (k, r) in self.count_rules.iter().enumerate() {
            let named = amoskys_operators::detect::check_name(RuleKind::Count, &r.name);
            if let Err(e) = named.and_then(|()| r.check().map(|_| ())) {
                errs.push((
                    at("[[count_rules]]", k),
                    format!("[[count_rules]] {}: {e}", r.name),
                ));
            }
        }
        if let Err(e) = self.correlation.check() {
            errs.push((at("[correlation]", 0), format!("[correlation] {e}")));
        }
        if self.flows.active_timeout.0.0 < self.flows.idle_timeout.0.0 {
            errs.push((
                at("[flows]", 0),
                format!(
                    "[flows] active_timeout ({:?}) is shorter than idle_timeout ({:?})",
                    self.flows.active_timeout.0.0, self.flows.idle_timeout.0.0
                ),
            ));
        }
        // Each source checks its own section; names and bound addresses must
        // differ across all of them.
        let mut names = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for (k, src) in self.sources.sections() {
            let (kind, name) = (src.kind(), src.name());
            let here = at(&format!("[[sources.{kind}]]"), k);
            if name.trim().is_empty() || !names.insert(name.to_string()) {
                errs.push((here, format!(
                    "[[sources.{kind}]] name {name:?} is empty or used twice: every source needs its own name"
                )));
            }
            for a in src.binds() {
                if !addrs.insert(a.clone()) {
                    errs.push((
                        here,
                        format!("[[sources.{kind}]] {name}: {a} is listened on twice"),
                    ));
                }
            }
            if let Err(e) = src.check() {
                errs.push((here, e));
            }
        }
        if self.window.lateness.0 > Duration::from_secs(3600) {
            errs.push((
                at("[window]", 0),
                "[window] lateness may be at most 1h: state for every open pane is kept that long"
                    .into(),
            ));
        }
        if errs.is_empty() {
            return Ok(());
        }
        errs.sort_by_key(|e| e.0);
        let line = |off: usize| text[..off.min(text.len())].matches('\n').count() + 1;
        let (first, _) = errs[0];
        let reason = errs
            .iter()
            .enumerate()
            .map(|(i, (off, r))| match (i, *off < text.len()) {
                (0, _) => r.clone(),
                (_, true) => format!("\n{}:{}: {r}", path.display(), line(*off)),
                (_, false) => format!("\n{}: {r}", path.display()),
            })
            .collect();
        Err(ConfigError {
            file: path.to_path_buf(),
            line: (first < text.len()).then(|| line(first)),
            column: None,
            reason,
        })
    }

    /// What the long-running job needs beyond a valid file, checked by
    /// `validate` too: at least one source, and an output directory it can write.
    pub fn check_job(&self) -> Result<(), String> {
        if self.sources.is_empty() {
            return Err(NO_SOURCES.into());
        }
        writable(&self.sinks.parquet.path).map_err(|e| {
            format!(
                "[sinks.parquet] path {}: {e}",
                self.sinks.parquet.path.display()
            )
        })
    }
}

/// Why a configuration without sources cannot run as the long-running job.
pub const NO_SOURCES: &str = "no sources configured: add a [[sources.syslog]], [[sources.mqtt]], [[sources.snmp]] or [[sources.pcap]] section (see examples/flows.toml), or use `replay` for captures";

/// Where the `nth` (0-based) `header` line starts in `text`; the end of the
/// text when there is no such line (a default that was never written).
fn section_offset(text: &str, header: &str, nth: usize) -> usize {
    let mut found = 0;
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let bare: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if bare.starts_with(header) {
            if found == nth {
                return off;
            }
            found += 1;
        }
        off += line.len();
    }
    text.len()
}

/// Whether files can be written in `dir` (or in the directory that would hold
/// it, when it does not exist yet): a probe file is made and removed.
pub fn writable(dir: &Path) -> Result<(), String> {
    let mut d = dir;
    while !d.exists() {
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => {
                d = Path::new(".");
                break;
            }
        }
    }
    if !d.is_dir() {
        return Err(format!("{} is not a directory", d.display()));
    }
    let probe = d.join(format!(".amoskys-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("cannot write in {}: {e}", d.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("flows.toml"))
    }

    #[test]
    fn every_source_kind_parses_as_users_write_it() {
        let c = parse(
            r#"
[[sources.syslog]]
name = "edge"
listen = "udp://127.0.0.1:5514"        # also tcp://… ; several listeners allowed

[[sources.mqtt]]
name = "iot"
broker = "mqtt://127.0.0.1:1883"
topics = ["sensors/#"]
device_pattern = "sensors/{device}/{metric}"
qos = 1

[[sources.snmp]]
name = "core"
agents = ["127.0.0.1:1161"]
version = "2c"
community = "public"
interval = "10s"

[[sources.pcap]]
name = "wire"
interface = "lo"
filter = "tcp or udp"

[sinks.parquet]
path = "data"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources.mqtt[0].topics, ["sensors/#"]);
        assert_eq!(c.sources.snmp[0].interval, Duration::from_secs(10));
        assert_eq!(c.sources.pcap[0].filter.as_deref(), Some("tcp or udp"));
        let e = parse("[[sources.mqtt]]\nname = \"edge\"\nbroker = \"mqtt://h\"\ntopics = []\n")
            .expect_err("no topics");
        assert!(e.to_string().contains("topics"), "{e}");
        let e = parse("[[sources.syslog]]\nname = \"x\"\nlisten = \"udp://127.0.0.1:1\"\n[[sources.pcap]]\nname = \"x\"\ninterface = \"lo\"\n")
            .expect_err("same name");
        assert!(e.to_string().contains("used twice"), "{e}");
    }

    #[test]
    fn detections_are_tuned_by_name_and_bad_ones_rejected_with_the_reason() {
        let c = parse(
            "[detections.vertical_scan]\nseverity = \"critical\"\ndistinct_dst_ports_out = 50\n\
             [detections.beaconing]\nenabled = false\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (name, s) = &c.detections.conditions[1];
        assert_eq!(name, "vertical_scan");
        assert_eq!(s.severity, amoskys_schemas::Severity::Critical);
        assert_eq!(s.thresholds, [50.0, 4.0]);
        assert!(!c.detections.conditions[0].1.enabled);
        for (text, says) in [
            ("[detections.portscan]\n", "no such detection"),
            (
                "[detections.syn_flood]\nbytes_out = 3\n",
                "not a key of this detection",
            ),
            (
                "[detections.syn_flood]\ntcp_syn_in = \"many\"\n",
                "write a number",
            ),
            (
                "[detections.syn_flood]\nseverity = \"urgent\"\n",
                "low, medium, high or critical",
            ),
            ("[detections.syn_flood]\nenabled = 1\n", "true or false"),
        ] {
            let e = parse(text).expect_err(text);
            let e = e.to_string();
            assert!(e.contains(says) && e.contains("flows.toml:"), "{text}: {e}");
        }
    }

    #[test]
    fn rules_parse_and_a_bad_one_is_rejected_with_its_name_and_reason() {
        let c = parse(
            "[[rules]]\nname = \"failed_fanout\"\ncondition = \"conn_failed_out >= 20 and distinct_peers_out > 10\"\nseverity = \"high\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.condition_rules()[0].severity,
            amoskys_schemas::Severity::High
        );
        // A rule may take a built-in's name: it replaces the built-in.
        parse("[[rules]]\nname = \"syn_flood\"\ncondition = \"tcp_syn_in > 1\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        for (text, says) in [
            (
                "[[rules]]\nname = \"r\"\ncondition = \"nope > 1\"\n",
                "[[rules]] r: \"nope\" is not a feature",
            ),
            (
                "[[rules]]\nname = \"r\"\ncondition = \"bytes_out > 1\"\n[[rules]]\nname = \"r\"\ncondition = \"bytes_out > 2\"\n",
                "used twice",
            ),
            (
                "[[rules]]\nname = \"r\"\ncondition = \"bytes_out > 1\"\nseverity = \"dire\"\n",
                "expected one of `low`",
            ),
            ("[[rules]]\nname = \"r\"\n", "condition"),
            (
                "[detections.syn_flood]\ntcp_syn_in = 9\n[[rules]]\nname = \"syn_flood\"\ncondition = \"tcp_syn_in > 1\"\n",
                "replaces the built-in syn_flood",
            ),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_webhook_section_parses_and_its_files_are_checked() {
        let c = parse("[sinks.webhook]\nurl = \"http://127.0.0.1:9/h\"\nbatch = 5\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let w = c.sinks.webhook.as_ref().expect("webhook");
        let s = w.settings(Path::new("out")).expect("settings");
        assert_eq!(
            (s.batch, s.spool_dir.as_path()),
            (5, Path::new("out/_webhook_spool"))
        );
        assert_eq!(s.non_retryable, [400, 401, 403, 404, 405, 410, 413, 422]);
        c.check_files().expect("no files to read");
        for (extra, says) in [
            ("url = \"ftp://x\"\n", "http://"),
            (
                "url = \"http://x\"\nsigning_key = \"/nonexistent/key\"\n",
                "signing_key",
            ),
            (
                "url = \"http://x\"\nclient_cert = \"c.pem\"\n",
                "go together",
            ),
        ] {
            let c = parse(&format!("[sinks.webhook]\n{extra}")).unwrap_or_else(|e| panic!("{e}"));
            let e = c.check_files().expect_err(extra);
            assert!(e.contains(says), "{extra}: {e}");
        }
        assert!(parse("[sinks.webhook]\nurl = \"http://x\"\nretries = 3\n").is_err());
    }

    #[test]
    fn correlation_and_threat_intel_parse_and_bad_values_are_refused() {
        let c = parse("[correlation]\nlogin_failures = 5\nincident_gap = \"1h\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let s = &c.correlation;
        assert_eq!(
            (s.login_failures, s.login_connections, s.gap_panes),
            (5.0, 3.0, 120)
        );
        assert!(c.threat_intel.is_none());
        for (bad, says) in [
            ("[correlation]\nlogin_failures = 0\n", "above 0"),
            ("[correlation]\nincident_gap = \"10s\"\n", "at least 30s"),
            ("[correlation]\nthreshold = 3\n", "unknown field"),
            (
                "[threat_intel]\nseverity = \"high\"\n",
                "missing field `file`",
            ),
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let dir = std::env::temp_dir().join(format!("amoskys-intel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("ind.txt");
        std::fs::write(&f, "10.0.0.0/8\nevil.example\n").expect("write");
        let c = parse(&format!(
            "[threat_intel]\nfile = {:?}\n",
            f.display().to_string()
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        c.check_files().expect("a good file");
        std::fs::write(&f, "10.0.0.0/8\n10.0.0.300\n").expect("write");
        let e = c.check_files().expect_err("a bad line");
        assert!(e.contains("ind.txt:2") && e.contains("10.0.0.300"), "{e}");
        std::fs::remove_file(&f).expect("rm");
        assert!(c.check_files().expect_err("gone").contains("cannot read"));
    }

    #[test]
    fn count_rules_parse_and_a_bad_one_is_rejected_with_its_name_and_reason() {
        let c = parse(
            "[[count_rules]]\nname = \"spray\"\nfilter = { appname = \"sshd\", auth_kind = [\"failure\", \"invalid_user\"] }\n\
             group_by = [\"auth_remote\"]\ncount = \"value_count\"\nvalue = \"auth_user\"\n\
             timespan = \"10m\"\nthreshold = 5\nseverity = \"high\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = &c.count_rules[0];
        assert_eq!(c.counting_rules(), std::slice::from_ref(s));
        assert_eq!(s.filter.len(), 2);
        assert_eq!(s.filter[1].1, ["failure", "invalid_user"]);
        assert_eq!(s.timespan_ns, 600_000_000_000);
        for (bad, says) in [
            (
                "count = \"value_count\"\n",
                "[[count_rules]] r: count = \"value_count\" needs value",
            ),
            (
                "group_by = [\"user\"]\n",
                "[[count_rules]] r: \"user\" is not an event field",
            ),
            ("filter = { message = \"\" }\n", "empty pattern"),
        ] {
            let e = parse(&format!(
                "[[count_rules]]\nname = \"r\"\ntimespan = \"1m\"\nthreshold = 3\n{bad}"
            ))
            .expect_err(bad)
            .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = parse("[[count_rules]]\nname = \"r\"\nthreshold = 3\n")
            .expect_err("timespan")
            .to_string();
        assert!(e.contains("timespan"), "{e}");
    }

    #[test]
    fn counting_and_learning_are_kinds_of_rule() {
        let c = parse(
            "[[rules]]\nname = \"spray\"\nkind = \"count\"\nfilter = { appname = \"sshd\" }\n\
             timespan = \"5m\"\nthreshold = 10\n\
             [[rules]]\nname = \"mqtt_new_topic\"\nkind = \"learn\"\nlearn = \"topics\"\nlearning = \"1h\"\n\
             [[rules]]\nname = \"slow_values\"\nkind = \"learn\"\nlearn = \"values\"\nmargin = 2\n\
             [[count_rules]]\nname = \"older\"\ntimespan = \"1m\"\nthreshold = 3\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<_> = c.rules.iter().map(RuleSpec::kind).collect();
        assert_eq!(kinds, [RuleKind::Count, RuleKind::Learn, RuleKind::Learn]);
        let counting: Vec<String> = c.counting_rules().into_iter().map(|r| r.name).collect();
        assert_eq!(counting, ["spray", "older"]);
        assert_eq!(c.counting_rules()[0].timespan_ns, 300_000_000_000);
        // The user's mqtt_new_topic replaces the built-in; the built-in
        // mqtt_value_out_of_range stays; slow_values is added.
        let learning: Vec<(String, u64, f64)> = c
            .learning_rules()
            .into_iter()
            .map(|r| (r.name, r.learning.as_secs(), r.margin))
            .collect();
        assert_eq!(
            learning,
            [
                ("mqtt_value_out_of_range".into(), 600, 0.5),
                ("mqtt_new_topic".into(), 3600, 0.5),
                ("slow_values".into(), 600, 2.0),
            ]
        );
        for (text, says) in [
            (
                "[[rules]]\nname = \"x\"\nkind = \"sigma\"\n",
                "x: kind = \"sigma\": use \"condition\"",
            ),
            (
                "[[rules]]\nname = \"x\"\nkind = \"learn\"\nlearn = \"colours\"\n",
                "unknown variant `colours`",
            ),
            (
                "[[rules]]\nname = \"x\"\nkind = \"count\"\ncondition = \"bytes_out > 1\"\n",
                "unknown field `condition`",
            ),
            (
                "[[rules]]\nname = \"syn_flood\"\nkind = \"learn\"\nlearn = \"topics\"\n",
                "syn_flood is the name of a built-in condition rule",
            ),
            (
                "[[rules]]\nname = \"x\"\nkind = \"count\"\ntimespan = \"1m\"\nthreshold = 1\n\
                 [[count_rules]]\nname = \"x\"\ntimespan = \"1m\"\nthreshold = 1\n",
                "used twice",
            ),
            (
                "[[rules]]\nname = \"x\"\nkind = \"learn\"\nlearn = \"values\"\nmargin = -1\n",
                "margin = -1",
            ),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn learning_rules_are_tuned_by_their_keys() {
        let c = parse(
            "[detections.mqtt_value_out_of_range]\nlearning_minutes = 0.5\nmin_samples = 3\nmargin = 0\n\
             [detections.mqtt_new_topic]\nenabled = false\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rules = c.learning_rules();
        let topics = rules
            .iter()
            .find(|r| r.name == "mqtt_new_topic")
            .expect("topics");
        assert!(!topics.enabled);
        let values = rules
            .iter()
            .find(|r| r.name == "mqtt_value_out_of_range")
            .expect("values");
        assert_eq!(
            (values.learning.as_secs(), values.min_samples, values.margin),
            (30, 3, 0.0)
        );
        let e = parse("[detections.mqtt_new_topic]\nmargin = 1\n")
            .expect_err("topics have no margin")
            .to_string();
        assert!(e.contains("margin: not a key"), "{e}");
    }

    #[test]
    fn a_pcap_source_is_an_interface_or_files() {
        let head = "[[sources.pcap]]\nname = \"p\"\n";
        let c = parse(&format!("{head}file = \"x/*.pcap\"\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources.pcap[0].file.as_deref(), Some("x/*.pcap"));
        for (bad, says) in [
            ("", "either interface"),
            (
                "interface = \"lo\"\nfile = \"a.pcap\"\n",
                "either interface",
            ),
            ("file = \"a.pcap\"\nfilter = \"tcp\"\n", "not to files"),
        ] {
            let e = parse(&format!("{head}{bad}")).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_built_in_default_parses() {
        let c =
            parse(include_str!("../../../examples/default.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sources.syslog.len(), 1);
    }

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let text = include_str!("../../../examples/flows.toml");
        let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
        let d = Config::default();
        assert_eq!(c.flows.idle_timeout, d.flows.idle_timeout);
        assert_eq!(c.flows.active_timeout, d.flows.active_timeout);
        assert_eq!(c.flows.max_flows, d.flows.max_flows);
        assert_eq!(c.window.lateness, d.window.lateness);
        assert_eq!(c.window.idle_timeout, d.window.idle_timeout);
        assert_eq!(c.sources.syslog.len(), 1);
        assert_eq!(c.sources.syslog[0].listen.len(), 2);
        assert_eq!(c.runtime.workers, d.runtime.workers);
        assert_eq!(c.sinks.parquet.zstd_level, d.sinks.parquet.zstd_level);
        assert_eq!(c.sinks.parquet.path, d.sinks.parquet.path);
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.flows.idle_timeout.0, Secs::from_secs(120));
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let e = parse("[flows]\nidle_timeout = \"0s\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("flows.toml:2:"), "{e}");
        assert!(e.contains("greater than zero"), "{e}");
        let e = parse("[flows]\n\nidel_timeout = \"5s\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("flows.toml:3:"), "{e}");
        assert!(e.contains("unknown field `idel_timeout`"), "{e}");
        let e = parse("[runtime]\nworkers = 0\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("flows.toml:2:") && e.contains("out of range"),
            "{e}"
        );
        let e = parse("[window]\nlateness = \"soon\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("invalid duration"), "{e}");
        let e = parse("[flows]\nidle_timeout = \"2h\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("active_timeout"), "{e}");
        let e = parse("[[sources.syslog]]\nname = \"a\"\nlisten = \"udp://127.0.0.1:1\"\n[[sources.syslog]]\nname = \"a\"\nlisten = \"tcp://127.0.0.1:1\"\n")
            .err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("used twice"), "{e}");
        let e = parse("[[sources.syslog]]\nname = \"a\"\nlisten = \"http://127.0.0.1:1\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("flows.toml:3:") && e.contains("unknown scheme"),
            "{e}"
        );
        let e = parse("[sinks.parquet]\nzstd_level = 30\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(":2:") && e.contains("1 to 22"), "{e}");
    }
}
