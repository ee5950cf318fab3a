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
pub use amoskys_operators::model::ModelSpec;
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
    /// `[[models]]`: anomaly models every feature row is scored with
    /// (docs/MODELS.md).
    pub models: Vec<ModelSpec>,
    /// `[wal]`: the write-ahead log of the live record sources
    /// (docs/ARCHITECTURE.md, "Durability").
    pub wal: amoskys_sources::wal::WalConfig,
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
    /// Entities a window keeps apart, per kind (addresses of packets; entities
    /// of log and device records), all workers together. Past it, a window's
    /// further entities are counted together under `100::<worker>` (the
    /// discard-only prefix 100::/64) and the observations
    /// counted (`amoskys_window_overflow_observations_total`): memory stays
    /// bounded however many addresses the input names, and what they did
    /// still shows (and alerts) as one row. All open panes together keep at
    /// most twice as many, however far the watermark lags.
    pub max_entities: Bounded<1, 100_000_000>,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            lateness: Secs::from_secs(10),
            idle_timeout: PositiveSecs(Secs::from_secs(30)),
            max_entities: Bounded(20_000),
        }
    }
}

impl WindowConfig {
    /// Each worker's share of `max_entities`.
    pub fn entities_per_worker(&self, workers: usize) -> usize {
        (self.max_entities.0 as usize).div_ceil(workers.max(1))
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
        ModelSpec::check_all(&self.models)?;
        for m in &self.models {
            m.load()?;
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
        self.wal.check()?;
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
mod tests;
