//! The SNMP family: an agent's health metrics over the window's polls, the
//! ratios and correlations between them, and what changed from poll to poll
//! (restarts, links going down). The metrics themselves are listed once, in
//! `amoskys_schemas::with_snmp_catalogue`, for the source and for these features.

use amoskys_schemas::{DeviceRecord, FeatureDtype};

use super::family::{FamilyFeature, dspec};

use FeatureDtype::{Count as C, Float as F};

/// How the instances of a per-row SNMP metric (interfaces, cores, disks) combine
/// into one value per poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Sum,
    Mean,
    /// How many instances read 1 (ifOperStatus up).
    CountOnes,
}

/// One SNMP health metric: its name in `events.metric`, unit, meaning, and how its
/// instances combine.
#[derive(Clone, Copy, Debug)]
pub struct SnmpMetricDef {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub combine: Combine,
}

macro_rules! snmp_metrics {
    ($( ($name:literal, $unit:literal, $combine:ident, $desc:literal) ),* $(,)?) => {
        /// The SNMP health metrics, in feature order.
        pub const SNMP_METRICS: &[SnmpMetricDef] = &[
            $( SnmpMetricDef { name: $name, unit: $unit, description: $desc, combine: Combine::$combine } ),*
        ];
        pub(super) const SNMP_FEATURES: &[FamilyFeature<SnmpAcc>] = &snmp_metrics!(@specs 0usize; []; $( ($name, $unit, $desc) )*);
    };
    (@specs $i:expr; [$($done:expr),*]; ($name:literal, $unit:literal, $desc:literal) $($rest:tt)*) => {
        snmp_metrics!(@specs $i + 1; [$($done,)*
            dspec(concat!("snmp_", $name, "_mean"), "snmp", $unit, FeatureDtype::Float,
                concat!("Mean over the window's polls of: ", $desc), SNMP_NULL, snmp_mean::<{ $i }>),
            dspec(concat!("snmp_", $name, "_max"), "snmp", $unit, FeatureDtype::Float,
                concat!("Largest value in the window's polls of: ", $desc), SNMP_NULL, snmp_max::<{ $i }>)
        ]; $($rest)*)
    };
    (@specs $i:expr; [$($done:expr),*];) => { [$($done),*] };
}

const SNMP_NULL: Option<&str> =
    Some("the agent was not polled in the window, or does not have the metric");

macro_rules! feature_metrics {
    ($(($name:literal, $kind:ident, $unit:literal, $desc:literal, $combine:ident, $funit:literal, $fdesc:literal)),* $(,)?) => {
        snmp_metrics![$(($name, $funit, $combine, $fdesc)),*];
    };
}
amoskys_schemas::with_snmp_catalogue!(feature_metrics);

fn snmp_mean<const I: usize>(a: &SnmpAcc) -> Option<f64> {
    let s = a.series.get(I)?;
    (s.n > 0).then(|| s.sum / f64::from(s.n))
}
fn snmp_max<const I: usize>(a: &SnmpAcc) -> Option<f64> {
    let s = a.series.get(I)?;
    (s.n > 0).then_some(s.max)
}

/// Index of an SNMP metric by name.
pub fn snmp_metric_index(name: &str) -> Option<usize> {
    SNMP_METRICS.iter().position(|m| m.name == name)
}

/// Min/mean/max of one SNMP metric over polls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Series {
    pub n: u32,
    pub sum: f64,
    pub max: f64,
}

/// What a poll said of sysUpTime and of the interfaces up (NaN when it did not).
pub type Poll = (f64, f64);

/// An agent's polls in a pane, or (merged) a window.
#[derive(Clone, Debug, Default)]
pub struct SnmpAcc {
    pub polls: u64,
    /// Per metric of the catalogue (empty until the first poll).
    pub series: Vec<Series>,
    /// Per poll with both: processor load (mean over cores) and interface octets
    /// per second (in + out, all interfaces).
    pub cpu_net: Vec<(f64, f64)>,
    /// The same with the 1-minute load average (UCD laLoad) for processor load.
    pub load_net: Vec<(f64, f64)>,
    /// Per configured agent: its key, and sysUpTime and interfaces up at its
    /// first and last poll.
    pub agents: Vec<(u64, Poll, Poll)>,
    /// How often consecutive polls saw uptime go back (a restart), and
    /// interfaces go down (the sum of decreases).
    pub restarts: u64,
    pub links_down: f64,
}

impl SnmpAcc {
    pub fn observe(&mut self, values: &[(u8, f64)], agent: u64) {
        self.polls += 1;
        let get = |name| {
            let i = snmp_metric_index(name)?;
            values.iter().find(|v| usize::from(v.0) == i).map(|v| v.1)
        };
        let now = (
            get("sys_uptime").unwrap_or(f64::NAN),
            get("if_oper_status").unwrap_or(f64::NAN),
        );
        match self.agents.iter().position(|a| a.0 == agent) {
            Some(k) => {
                let prev = self.agents[k].2;
                self.step(prev, now);
                self.agents[k].2 = now;
            }
            None => self.agents.push((agent, now, now)),
        }
        if let (Some(i), Some(o)) = (get("if_in_octets"), get("if_out_octets")) {
            if let Some(c) = get("hr_processor_load") {
                self.cpu_net.push((c, i + o));
            }
            if let Some(l) = get("la_load_1") {
                self.load_net.push((l, i + o));
            }
        }
        if self.series.is_empty() {
            self.series = vec![Series::default(); SNMP_METRICS.len()];
        }
        for &(i, v) in values {
            if let Some(s) = self.series.get_mut(usize::from(i)) {
                s.max = if s.n == 0 { v } else { s.max.max(v) };
                s.n += 1;
                s.sum += v;
            }
        }
    }

    /// Counts what changed between two consecutive polls: uptime going back is a
    /// restart; fewer interfaces up is links going down. A missing value (NaN)
    /// compares false and counts nothing.
    fn step(&mut self, prev: Poll, now: Poll) {
        self.restarts += u64::from(now.0 < prev.0);
        if now.1 < prev.1 {
            self.links_down += prev.1 - now.1;
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &SnmpAcc) {
        self.polls += l.polls;
        self.cpu_net.extend_from_slice(&l.cpu_net);
        for &(key, first, last) in &l.agents {
            match self.agents.iter().position(|a| a.0 == key) {
                Some(k) => {
                    let prev = self.agents[k].2;
                    self.step(prev, first);
                    self.agents[k].2 = last;
                }
                None => self.agents.push((key, first, last)),
            }
        }
        self.restarts += l.restarts;
        self.links_down += l.links_down;
        self.load_net.extend_from_slice(&l.load_net);
        if !l.series.is_empty() {
            if self.series.is_empty() {
                self.series = l.series.clone();
            } else {
                for (a, b) in self.series.iter_mut().zip(&l.series) {
                    if b.n > 0 {
                        a.max = if a.n == 0 { b.max } else { a.max.max(b.max) };
                        a.n += b.n;
                        a.sum += b.sum;
                    }
                }
            }
        }
    }
}

/// The observation of one poll: per metric, its instances (cores, disks,
/// interfaces) combined into one value.
pub(super) fn poll(d: &DeviceRecord) -> Vec<(u8, f64)> {
    let mut acc: Vec<(u8, f64, u32)> = Vec::new();
    for s in &d.samples {
        let (Some(i), Some(v)) = (snmp_metric_index(&s.metric), s.value) else {
            continue;
        };
        if !v.is_finite() {
            continue;
        }
        let c = SNMP_METRICS[i].combine;
        let v = if c == Combine::CountOnes {
            f64::from(u8::from(v == 1.0))
        } else {
            v
        };
        match acc.iter_mut().find(|e| usize::from(e.0) == i) {
            Some(e) => {
                e.1 += v;
                e.2 += 1;
            }
            None => acc.push((i as u8, v, 1)),
        }
    }
    acc.into_iter()
        .map(|(i, sum, n)| match SNMP_METRICS[usize::from(i)].combine {
            Combine::Mean => (i, sum / f64::from(n)),
            _ => (i, sum),
        })
        .collect()
}

pub(super) static POLL_FEATURES: &[FamilyFeature<SnmpAcc>] = &[dspec(
    "snmp_polls",
    "snmp",
    "polls",
    C,
    "Successful SNMP polls of the agent in the window.",
    Some("the agent was not polled successfully in the window"),
    |a| (a.polls > 0).then_some(a.polls as f64),
)];

fn snmp_ratio(a: &SnmpAcc, num: &str, den: &str, subtract: bool) -> Option<f64> {
    let mean = |name: &str| {
        let s = a.series.get(snmp_metric_index(name)?)?;
        (s.n > 0).then(|| s.sum / f64::from(s.n))
    };
    let (n, d) = (mean(num)?, mean(den)?);
    let n = if subtract { d - n } else { n };
    (d > 0.0).then(|| n / d)
}

const RATIO_NULL: Option<&str> =
    Some("the agent did not report both metrics in the window, or the total is 0");

pub(super) static RATIO_FEATURES: &[FamilyFeature<SnmpAcc>] = &[
    dspec(
        "snmp_mem_used_ratio",
        "snmp",
        "ratio",
        F,
        "Memory in use: (window mean of memTotalReal - window mean of memAvailReal) / window mean of memTotalReal.",
        RATIO_NULL,
        |a| snmp_ratio(a, "mem_avail_real", "mem_total_real", true),
    ),
    dspec(
        "snmp_ram_used_ratio",
        "snmp",
        "ratio",
        F,
        "hrStorage RAM used / size, of the window means.",
        RATIO_NULL,
        |a| snmp_ratio(a, "hr_storage_ram_used", "hr_storage_ram_size", false),
    ),
    dspec(
        "snmp_swap_used_ratio",
        "snmp",
        "ratio",
        F,
        "hrStorage virtual memory (swap) used / size, of the window means.",
        RATIO_NULL,
        |a| snmp_ratio(a, "hr_storage_swap_used", "hr_storage_swap_size", false),
    ),
    dspec(
        "snmp_disk_used_ratio",
        "snmp",
        "ratio",
        F,
        "hrStorage fixed disks used / size (all disks together), of the window means.",
        RATIO_NULL,
        |a| snmp_ratio(a, "hr_storage_disk_used", "hr_storage_disk_size", false),
    ),
    dspec(
        "snmp_cpu_net_corr",
        "snmp",
        "r",
        F,
        "Pearson correlation, over the window's polls, of processor load (mean over \
         cores) with interface traffic (in + out octets per second, all interfaces): \
         near 1 when the device works for its traffic, near 0 when its load has \
         another cause.",
        Some(
            "fewer than 2 polls in the window had both values, or either was the same \
              in all of them",
        ),
        |a| super::pearson(a.cpu_net.iter().copied()),
    ),
    dspec(
        "snmp_agent_restarts",
        "snmp",
        "restarts",
        C,
        "Times sysUpTime went back between consecutive polls of one configured agent in \
         the window: the agent (or its device) restarted. Agents of several sections on \
         one address are compared each with its own polls.",
        Some("the agent was not polled in the window"),
        |a| (a.polls > 0).then_some(a.restarts as f64),
    ),
    dspec(
        "snmp_links_down",
        "snmp",
        "interfaces",
        C,
        "Interfaces that went from up to not up between consecutive polls of one \
         configured agent in the window (sum of the decreases in the number of interfaces \
         whose ifOperStatus is up).",
        Some("the agent was not polled in the window"),
        |a| (a.polls > 0).then_some(a.links_down),
    ),
    dspec(
        "snmp_load_net_corr",
        "snmp",
        "r",
        F,
        "Pearson correlation, over the window's polls, of the 1-minute load average \
         (UCD laLoad) with interface traffic (in + out octets per second, all \
         interfaces): for agents that report load but not hrProcessorLoad.",
        Some(
            "fewer than 2 polls in the window had both values, or either was the same \
              in all of them",
        ),
        |a| super::pearson(a.load_net.iter().copied()),
    ),
];
