//! The built-in metric set: which OIDs a poll reads, and how the readings become
//! [`Sample`]s (scaling, instance names, counter rates).
//!
//! Everything here is pure: [`extract`] takes what one poll received and the
//! agent's [`RateState`], so the arithmetic is tested without an agent.
//!
//! Why one file of this size: the catalogue's metrics as the MIBs give them
//! (scalars, tables, counters and their rates) in one table-driven reader; its
//! tests take a third.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use amoskys_schemas::Sample;

use super::value::{Oid, Readings, Value, join, oid_string};

/// One metric of the built-in set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// The `metric` column's value.
    pub name: &'static str,
    /// Unit of `value` (after scaling, and per second for rates).
    pub unit: &'static str,
    pub description: &'static str,
    /// Read from counters: `value` is derived from the difference between two
    /// polls (a rate per second, or a share of CPU ticks), null on the first
    /// poll and after a reset, wrap ambiguity or agent reboot; `raw` holds the
    /// counter itself. Gauges have `raw` null.
    pub counter: bool,
}

const fn gauge(name: &'static str, unit: &'static str, description: &'static str) -> MetricDef {
    MetricDef {
        name,
        unit,
        description,
        counter: false,
    }
}

const fn counter(name: &'static str, unit: &'static str, description: &'static str) -> MetricDef {
    MetricDef {
        name,
        unit,
        description,
        counter: true,
    }
}

macro_rules! source_metrics {
    ($(($name:literal, $kind:ident, $unit:literal, $desc:literal, $combine:ident, $funit:literal, $fdesc:literal)),* $(,)?) => {
        /// The metrics an SNMP source produces, in catalogue order
        /// (amoskys_schemas::with_snmp_catalogue). An agent that lacks an
        /// object simply yields no sample for it.
        pub const METRICS: &[MetricDef] = &[$($kind($name, $unit, $desc)),*];
    };
}
amoskys_schemas::with_snmp_catalogue!(source_metrics);

// ---- OIDs ------------------------------------------------------------------

const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const HR_MEMORY_SIZE: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 2, 2, 0];
/// hrStorageTypes: .2 ram, .3 virtual memory, .4 fixed disk.
const HR_STORAGE_TYPES: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 2, 1];
/// hrStorageEntry: .2 type, .3 descr, .4 allocation units, .5 size, .6 used.
const HR_STORAGE_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 2, 3, 1];
const HR_PROCESSOR_LOAD: &[u32] = &[1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2];
/// diskIOEntry: .2 device, .3 NRead, .4 NWritten, .5 reads, .6 writes,
/// .12 NReadX, .13 NWrittenX.
const DISK_IO_ENTRY: &[u32] = &[1, 3, 6, 1, 4, 1, 2021, 13, 15, 1, 1];
/// ifEntry: .2 descr, .8 oper status, .10 in octets, .11 in ucast, .13 in
/// discards, .14 in errors, .16 out octets, .17 out ucast, .19 out discards,
/// .20 out errors.
const IF_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 2, 2, 1];
/// ifXEntry: .6 HC in octets, .7 HC in ucast, .10 HC out octets, .11 HC out ucast.
const IFX_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1];
/// laLoad.1/.2/.3.
const LA_LOAD: &[u32] = &[1, 3, 6, 1, 4, 1, 2021, 10, 1, 3];
/// UCD memory: .5.0 total real, .6.0 avail real, .14.0 buffer, .15.0 cached.
const UCD_MEMORY: &[u32] = &[1, 3, 6, 1, 4, 1, 2021, 4];
/// UCD systemStats: .9/.10/.11 percent gauges, .50 and up raw tick counters.
const UCD_SYSTEM_STATS: &[u32] = &[1, 3, 6, 1, 4, 1, 2021, 11];

/// The raw CPU tick counters summed into the total, by systemStats arc:
/// user, nice, system, idle, wait, interrupt, softIRQ, steal. ssCpuRawKernel
/// (.55) is left out on purpose: net-snmp reports it as 0 on Linux and as a copy
/// of the system ticks on the BSDs, so adding it would count system time twice.
const CPU_RAW: [u32; 8] = [50, 51, 52, 53, 54, 56, 61, 64];
const CPU_USER: usize = 0;
const CPU_SYSTEM: usize = 2;
const CPU_IDLE: usize = 3;
/// The agent's own percent gauges for user, system, idle.
const CPU_GAUGES: [u32; 3] = [9, 10, 11];

/// The scalars one GET reads.
/// The scalar OIDs one poll GETs (the benchmarks replay them).
pub fn scalar_oids() -> Vec<Vec<u32>> {
    let mut v = vec![SYS_UPTIME.to_vec(), HR_MEMORY_SIZE.to_vec()];
    v.extend((1..=3).map(|i| join(LA_LOAD, &[i])));
    v.extend([5, 6, 14, 15].map(|i| join(UCD_MEMORY, &[i, 0])));
    v.extend(CPU_RAW.map(|i| join(UCD_SYSTEM_STATS, &[i, 0])));
    v.extend(CPU_GAUGES.map(|i| join(UCD_SYSTEM_STATS, &[i, 0])));
    v
}

/// The table columns GETBULK walks.
/// The table columns one poll walks with GETBULK (the benchmarks replay them).
pub fn table_columns() -> Vec<Vec<u32>> {
    let mut v = vec![HR_PROCESSOR_LOAD.to_vec()];
    v.extend([2, 3, 4, 5, 6].map(|c| join(HR_STORAGE_ENTRY, &[c])));
    v.extend([2, 3, 4, 5, 6, 12, 13].map(|c| join(DISK_IO_ENTRY, &[c])));
    v.extend([2, 8, 10, 11, 13, 14, 16, 17, 19, 20].map(|c| join(IF_ENTRY, &[c])));
    v.extend([6, 7, 10, 11].map(|c| join(IFX_ENTRY, &[c])));
    v
}

// ---- counters ----------------------------------------------------------------

/// A counter reading, with its width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    C32(u32),
    C64(u64),
}

impl Counter {
    fn as_f64(self) -> f64 {
        match self {
            Counter::C32(c) => f64::from(c),
            Counter::C64(c) => c as f64,
        }
    }

    fn read(v: &Value) -> Option<Counter> {
        match *v {
            Value::Counter32(c) => Some(Counter::C32(c)),
            Value::Counter64(c) => Some(Counter::C64(c)),
            _ => None,
        }
    }
}

/// How much a counter advanced from `prev` to `cur`. A decrease is taken as a
/// wrap (through 2^32 or 2^64) when the wrapped difference is at most half the
/// counter's range, and as a reset (`None`) otherwise; a change of width is a
/// reset too.
pub(crate) fn counter_delta(prev: Counter, cur: Counter) -> Option<u64> {
    match (prev, cur) {
        (Counter::C32(p), Counter::C32(c)) => {
            let d = c.wrapping_sub(p);
            (c >= p || d <= u32::MAX / 2).then_some(u64::from(d))
        }
        (Counter::C64(p), Counter::C64(c)) => {
            let d = c.wrapping_sub(p);
            (c >= p || d <= u64::MAX / 2).then_some(d)
        }
        _ => None,
    }
}

struct Last {
    counter: Counter,
    at: Instant,
    generation: u64,
}

struct CpuBase {
    parts: [Option<Counter>; CPU_RAW.len()],
}

/// What one agent's previous polls left for the next: counter readings (for
/// rates), CPU ticks, and sysUpTime (to notice a reboot).
#[derive(Default)]
pub(crate) struct RateState {
    uptime: Option<u32>,
    counters: HashMap<Oid, Last>,
    cpu: Option<CpuBase>,
    generation: u64,
}

impl RateState {
    /// Starts a poll. A sysUpTime lower than the last one means the agent
    /// restarted: every counter base is dropped, so this poll's rates are null.
    /// Returns whether that happened.
    pub(crate) fn begin_poll(&mut self, uptime: Option<u32>) -> bool {
        self.generation += 1;
        let mut rebooted = false;
        if let Some(now) = uptime {
            if self.uptime.is_some_and(|before| now < before) {
                self.counters.clear();
                self.cpu = None;
                rebooted = true;
            }
            self.uptime = Some(now);
        }
        rebooted
    }

    /// Ends a poll: forgets counters this poll did not read (rows that went away).
    pub(crate) fn end_poll(&mut self) {
        let g = self.generation;
        self.counters.retain(|_, l| l.generation == g);
    }

    /// The rate per second since the previous reading of `oid`, and remembers
    /// this one. `None` on the first reading, after a reset, or when no time
    /// passed.
    pub(crate) fn rate(&mut self, oid: &[u32], cur: Counter, now: Instant) -> Option<f64> {
        let last = Last {
            counter: cur,
            at: now,
            generation: self.generation,
        };
        let prev = match self.counters.get_mut(oid) {
            Some(slot) => std::mem::replace(slot, last),
            None => {
                self.counters.insert(oid.to_vec(), last);
                return None;
            }
        };
        let dt = now.checked_duration_since(prev.at)?.as_secs_f64();
        let d = counter_delta(prev.counter, cur)?;
        (dt > 0.0).then(|| d as f64 / dt)
    }

    /// CPU shares (user, system, idle in percent) from the raw tick counters.
    /// `None` on the first poll, after a reset, and when the agent's counters did
    /// not move since the last poll (net-snmp refreshes them every few seconds);
    /// in that last case the older base is kept, so the next share spans both
    /// intervals.
    fn cpu_shares(&mut self, cur: [Option<Counter>; CPU_RAW.len()]) -> Option<[f64; 3]> {
        let Some(base) = &self.cpu else {
            self.cpu = Some(CpuBase { parts: cur });
            return None;
        };
        let mut deltas = [0u64; CPU_RAW.len()];
        let mut ok = true;
        for (i, (p, c)) in base.parts.iter().zip(cur.iter()).enumerate() {
            match (p, c) {
                (Some(p), Some(c)) => match counter_delta(*p, *c) {
                    Some(d) => deltas[i] = d,
                    None => ok = false,
                },
                (None, None) => {}
                // A counter that appeared or went away: start over.
                _ => ok = false,
            }
        }
        if !ok {
            self.cpu = Some(CpuBase { parts: cur });
            return None;
        }
        let total: u64 = deltas.iter().sum();
        if total == 0 {
            return None;
        }
        self.cpu = Some(CpuBase { parts: cur });
        let pct = |i: usize| deltas[i] as f64 * 100.0 / total as f64;
        Some([pct(CPU_USER), pct(CPU_SYSTEM), pct(CPU_IDLE)])
    }
}

// ---- parsing -------------------------------------------------------------------

/// An UCD laLoad string (`"0.15"`, possibly padded) as a number.
pub(crate) fn parse_load(bytes: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let v: f64 = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .parse()
        .ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Which of the storage metrics an hrStorageType belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageKind {
    Ram,
    Swap,
    Disk,
}

impl StorageKind {
    fn metrics(self) -> (&'static str, &'static str) {
        match self {
            StorageKind::Ram => ("hr_storage_ram_used", "hr_storage_ram_size"),
            StorageKind::Swap => ("hr_storage_swap_used", "hr_storage_swap_size"),
            StorageKind::Disk => ("hr_storage_disk_used", "hr_storage_disk_size"),
        }
    }
}

/// hrStorageRam, hrStorageVirtualMemory and hrStorageFixedDisk; other types
/// (hrStorageOther, removable disks, RAM disks, ...) are not part of the set.
pub(crate) fn storage_kind(storage_type: &[u32]) -> Option<StorageKind> {
    match storage_type.strip_prefix(HR_STORAGE_TYPES)? {
        [2] => Some(StorageKind::Ram),
        [3] => Some(StorageKind::Swap),
        [4] => Some(StorageKind::Disk),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    let Value::OctetString(b) = v else {
        return None;
    };
    let s = String::from_utf8_lossy(b);
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

fn int(v: &Value) -> Option<i64> {
    match *v {
        Value::Integer(i) => Some(i),
        Value::Gauge32(g) => Some(i64::from(g)),
        _ => None,
    }
}

/// The rows of a table column: (index, value).
fn column<'a>(r: &'a Readings, col: &'a [u32]) -> impl Iterator<Item = (&'a [u32], &'a Value)> {
    r.range(col.to_vec()..)
        .take_while(move |(k, _)| k.starts_with(col))
        .filter(move |(k, _)| k.len() > col.len())
        .map(move |(k, v)| (&k[col.len()..], v))
}

// ---- extraction ------------------------------------------------------------------

/// What [`extract`] made of one poll.
pub(crate) struct Extracted {
    pub samples: Vec<Sample>,
    /// Values of the wrong ASN.1 type (or unparseable), skipped.
    pub bad_values: u64,
    /// The first of them, described for the log.
    pub first_bad: Option<String>,
    /// sysUpTime went down since the previous poll.
    pub rebooted: bool,
}

struct Ctx<'a> {
    r: &'a Readings,
    state: &'a mut RateState,
    now: Instant,
    out: Vec<Sample>,
    bad: u64,
    first_bad: Option<String>,
}

impl Ctx<'_> {
    /// Counts a value of the wrong type (or unparseable), and keeps the first
    /// one's description for the log.
    fn wrong(&mut self, metric: &str, oid: &[u32]) {
        self.bad += 1;
        if self.first_bad.is_none() {
            let t = self.r.get(oid).map_or("nothing", Value::type_name);
            self.first_bad = Some(format!("{metric} at {}: {t}", oid_string(oid)));
        }
    }

    /// The value at `oid`, unless the agent does not have it.
    fn lookup(&self, oid: &[u32]) -> Option<&Value> {
        self.r.get(oid).filter(|v| !v.is_absent())
    }

    fn push(
        &mut self,
        metric: &str,
        instance: Option<String>,
        oid: &[u32],
        value: Option<f64>,
        raw: Option<f64>,
    ) {
        self.out.push(Sample {
            metric: metric.to_string(),
            instance,
            value,
            raw,
            oid: Some(oid_string(oid)),
        });
    }

    /// A numeric gauge (INTEGER or Gauge32), times `scale`. Negative values are
    /// wrong for everything we read as a gauge, and counted as bad.
    fn gauge(&mut self, metric: &str, instance: Option<String>, oid: &[u32], scale: f64) {
        let Some(v) = self.lookup(oid) else {
            return;
        };
        match int(v) {
            Some(n) if n >= 0 => self.push(metric, instance, oid, Some(n as f64 * scale), None),
            _ => self.wrong(metric, oid),
        }
    }

    /// A counter as a rate per second.
    fn counter(&mut self, metric: &str, instance: Option<String>, oid: &[u32]) {
        let Some(v) = self.lookup(oid) else {
            return;
        };
        let Some(c) = Counter::read(v) else {
            self.wrong(metric, oid);
            return;
        };
        let rate = self.state.rate(oid, c, self.now);
        self.push(metric, instance, oid, rate, Some(c.as_f64()));
    }

    /// A counter read from `prefer` (a 64-bit column) when the agent has it, else
    /// from `fallback`.
    fn counter_pref(
        &mut self,
        metric: &str,
        instance: Option<String>,
        prefer: &[u32],
        fallback: &[u32],
    ) {
        match self.lookup(prefer).map(Counter::read) {
            Some(Some(_)) => return self.counter(metric, instance, prefer),
            Some(None) => self.wrong(metric, prefer),
            None => {}
        }
        self.counter(metric, instance, fallback);
    }

    /// A row's readable name from a text column, else its index.
    fn instance(&self, descr_col: &[u32], index: &[u32]) -> String {
        self.lookup(&join(descr_col, index))
            .and_then(text)
            .unwrap_or_else(|| oid_string(index))
    }

    /// Indices that appear in any of `cols`.
    fn indices(&self, cols: &[Oid]) -> BTreeSet<Oid> {
        cols.iter()
            .flat_map(|c| column(self.r, c).map(|(i, _)| i.to_vec()))
            .collect()
    }

    fn scalars(&mut self) {
        if let Some(v) = self.lookup(SYS_UPTIME) {
            match *v {
                Value::TimeTicks(t) => self.push(
                    "sys_uptime",
                    None,
                    SYS_UPTIME,
                    Some(f64::from(t) / 100.0),
                    None,
                ),
                _ => self.wrong("sys_uptime", SYS_UPTIME),
            }
        }
        self.gauge("hr_memory_size", None, HR_MEMORY_SIZE, 1024.0);
        for (i, name) in [(1, "la_load_1"), (2, "la_load_5"), (3, "la_load_15")] {
            let oid = join(LA_LOAD, &[i]);
            let Some(v) = self.lookup(&oid) else {
                continue;
            };
            match v {
                Value::OctetString(b) => match parse_load(b) {
                    Some(x) => self.push(name, None, &oid, Some(x), None),
                    None => self.wrong(name, &oid),
                },
                _ => self.wrong(name, &oid),
            }
        }
        for (arc, name) in [
            (5, "mem_total_real"),
            (6, "mem_avail_real"),
            (15, "mem_cached"),
            (14, "mem_buffer"),
        ] {
            self.gauge(name, None, &join(UCD_MEMORY, &[arc, 0]), 1024.0);
        }
    }

    fn cpu(&mut self) {
        const NAMES: [&str; 3] = ["ss_cpu_user", "ss_cpu_system", "ss_cpu_idle"];
        let oids = CPU_RAW.map(|a| join(UCD_SYSTEM_STATS, &[a, 0]));
        let mut parts = [None; CPU_RAW.len()];
        for (i, oid) in oids.iter().enumerate() {
            if let Some(v) = self.lookup(oid) {
                match Counter::read(v) {
                    Some(c) => parts[i] = Some(c),
                    None => self.wrong("ss_cpu_*", oid),
                }
            }
        }
        let wanted = [CPU_USER, CPU_SYSTEM, CPU_IDLE];
        if wanted.iter().all(|&i| parts[i].is_some()) {
            let shares = self.state.cpu_shares(parts);
            for (k, &i) in wanted.iter().enumerate() {
                let raw = parts[i].map(Counter::as_f64);
                self.push(NAMES[k], None, &oids[i], shares.map(|s| s[k]), raw);
            }
        } else {
            // No raw ticks: the agent's own percentages over its last minute.
            self.state.cpu = None;
            for (k, arc) in CPU_GAUGES.iter().enumerate() {
                self.gauge(NAMES[k], None, &join(UCD_SYSTEM_STATS, &[*arc, 0]), 1.0);
            }
        }
    }

    fn processors(&mut self) {
        let rows: Vec<Oid> = column(self.r, HR_PROCESSOR_LOAD)
            .map(|(i, _)| i.to_vec())
            .collect();
        for idx in rows {
            let oid = join(HR_PROCESSOR_LOAD, &idx);
            self.gauge("hr_processor_load", Some(oid_string(&idx)), &oid, 1.0);
        }
    }

    fn storage(&mut self) {
        let type_col = join(HR_STORAGE_ENTRY, &[2]);
        let descr_col = join(HR_STORAGE_ENTRY, &[3]);
        let rows: Vec<(Oid, Value)> = column(self.r, &type_col)
            .map(|(i, v)| (i.to_vec(), v.clone()))
            .collect();
        for (idx, t) in rows {
            let kind = match &t {
                Value::ObjectId(t) => storage_kind(t),
                v if v.is_absent() => None,
                _ => {
                    self.wrong("hr_storage_*", &join(&type_col, &idx));
                    None
                }
            };
            let Some(kind) = kind else {
                continue;
            };
            let units_oid = join(&join(HR_STORAGE_ENTRY, &[4]), &idx);
            let units = match self.lookup(&units_oid) {
                None => continue,
                Some(v) => match int(v) {
                    Some(u) if u > 0 => u as f64,
                    _ => {
                        self.wrong("hr_storage_*", &units_oid);
                        continue;
                    }
                },
            };
            let instance = self.instance(&descr_col, &idx);
            let (used, size) = kind.metrics();
            let used_oid = join(HR_STORAGE_ENTRY, &[6]);
            let size_oid = join(HR_STORAGE_ENTRY, &[5]);
            self.gauge(used, Some(instance.clone()), &join(&used_oid, &idx), units);
            self.gauge(size, Some(instance), &join(&size_oid, &idx), units);
        }
    }

    fn disk_io(&mut self) {
        let col = |c: u32| join(DISK_IO_ENTRY, &[c]);
        let rows = self.indices(&[col(2), col(5), col(6), col(3), col(4), col(12), col(13)]);
        for idx in rows {
            let at = |c: u32| join(&col(c), &idx);
            let instance = self.instance(&col(2), &idx);
            self.counter("disk_io_reads", Some(instance.clone()), &at(5));
            self.counter("disk_io_writes", Some(instance.clone()), &at(6));
            self.counter_pref(
                "disk_io_read_bytes",
                Some(instance.clone()),
                &at(12),
                &at(3),
            );
            self.counter_pref("disk_io_written_bytes", Some(instance), &at(13), &at(4));
        }
    }

    fn interfaces(&mut self) {
        let ifc = |c: u32| join(IF_ENTRY, &[c]);
        let cols: Vec<Oid> = [2, 8, 10, 11, 13, 14, 16, 17, 19, 20].map(ifc).to_vec();
        let rows = self.indices(&cols);
        for idx in rows {
            let at = |c: u32| join(&ifc(c), &idx);
            let hc = |c: u32| join(&join(IFX_ENTRY, &[c]), &idx);
            let instance = self.instance(&ifc(2), &idx);
            let i = || Some(instance.clone());
            self.counter_pref("if_in_octets", i(), &hc(6), &at(10));
            self.counter_pref("if_out_octets", i(), &hc(10), &at(16));
            self.counter_pref("if_in_ucast_pkts", i(), &hc(7), &at(11));
            self.counter_pref("if_out_ucast_pkts", i(), &hc(11), &at(17));
            self.counter("if_in_errors", i(), &at(14));
            self.counter("if_out_errors", i(), &at(20));
            self.counter("if_in_discards", i(), &at(13));
            self.counter("if_out_discards", i(), &at(19));
            self.gauge("if_oper_status", i(), &at(8), 1.0);
        }
    }
}

/// Turns one poll's readings into samples, updating the agent's rate state.
/// `now` is the poll's instant (rates are per second of it).
pub(crate) fn extract(readings: &Readings, state: &mut RateState, now: Instant) -> Extracted {
    let uptime = match readings.get(SYS_UPTIME) {
        Some(Value::TimeTicks(t)) => Some(*t),
        _ => None,
    };
    let rebooted = state.begin_poll(uptime);
    let mut cx = Ctx {
        r: readings,
        state,
        now,
        out: Vec::new(),
        bad: 0,
        first_bad: None,
    };
    cx.scalars();
    cx.cpu();
    cx.processors();
    cx.storage();
    cx.disk_io();
    cx.interfaces();
    let Ctx {
        out,
        bad,
        first_bad,
        ..
    } = cx;
    state.end_poll();
    Extracted {
        samples: out,
        bad_values: bad,
        first_bad,
        rebooted,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn c32(v: u32) -> Value {
        Value::Counter32(v)
    }

    fn find<'a>(samples: &'a [Sample], metric: &str, instance: Option<&str>) -> Option<&'a Sample> {
        samples
            .iter()
            .find(|s| s.metric == metric && s.instance.as_deref() == instance)
    }

    #[test]
    fn counter_deltas() {
        use Counter::{C32, C64};
        assert_eq!(counter_delta(C32(100), C32(350)), Some(250));
        assert_eq!(counter_delta(C64(7), C64(7)), Some(0));
        // Wraps: through 2^32 and 2^64.
        assert_eq!(counter_delta(C32(u32::MAX - 99), C32(50)), Some(150));
        assert_eq!(counter_delta(C64(u64::MAX - 9), C64(5)), Some(15));
        // A drop that a wrap cannot explain is a reset.
        assert_eq!(counter_delta(C32(1_000_000_000), C32(10)), None);
        assert_eq!(counter_delta(C64(1 << 40), C64(3)), None);
        // A counter that changed width is a different counter.
        assert_eq!(counter_delta(C32(5), C64(6)), None);
    }

    #[test]
    fn rates_need_two_readings_and_restart_after_a_reboot() {
        let oid = [1, 3, 6, 1, 2, 1, 2, 2, 1, 10, 1];
        let t0 = Instant::now();
        let mut st = RateState::default();
        st.begin_poll(Some(1000));
        assert_eq!(st.rate(&oid, Counter::C32(1000), t0), None, "first reading");
        st.end_poll();

        let t1 = t0 + Duration::from_millis(2500);
        st.begin_poll(Some(1250));
        let r = st.rate(&oid, Counter::C32(6000), t1).expect("rate");
        assert!((r - 5000.0 / 2.5).abs() < 1e-9, "{r}");
        st.end_poll();

        let t2 = t1 + Duration::from_secs(1);
        st.begin_poll(Some(1350));
        let r = st.rate(&oid, Counter::C32(100), t2);
        assert_eq!(r, None, "6000 -> 100 is a reset, not a wrap");
        st.end_poll();

        // Wrap through 2^32 over one second.
        let t3 = t2 + Duration::from_secs(1);
        st.begin_poll(Some(1450));
        st.rate(&oid, Counter::C32(u32::MAX - 9), t3);
        st.end_poll();
        let t4 = t3 + Duration::from_secs(2);
        st.begin_poll(Some(1650));
        let r = st.rate(&oid, Counter::C32(30), t4).expect("wrap");
        assert!((r - 20.0).abs() < 1e-9, "{r}");
        st.end_poll();

        // The agent restarted: its uptime went down, every rate starts over even
        // though this counter only went up.
        let t5 = t4 + Duration::from_secs(1);
        assert!(st.begin_poll(Some(10)));
        assert_eq!(st.rate(&oid, Counter::C32(40), t5), None);
        st.end_poll();
        let t6 = t5 + Duration::from_secs(1);
        assert!(!st.begin_poll(Some(110)));
        assert!(st.rate(&oid, Counter::C32(50), t6).is_some());
    }

    #[test]
    fn counters_not_read_in_a_poll_are_forgotten() {
        let a = [1, 3, 1];
        let b = [1, 3, 2];
        let t0 = Instant::now();
        let mut st = RateState::default();
        st.begin_poll(None);
        st.rate(&a, Counter::C64(1), t0);
        st.rate(&b, Counter::C64(1), t0);
        st.end_poll();
        st.begin_poll(None);
        st.rate(&a, Counter::C64(2), t0 + Duration::from_secs(1));
        st.end_poll();
        assert_eq!(st.counters.len(), 1);
        st.begin_poll(None);
        assert_eq!(
            st.rate(&b, Counter::C64(3), t0 + Duration::from_secs(2)),
            None
        );
    }

    #[test]
    fn load_strings() {
        assert_eq!(parse_load(b"0.15"), Some(0.15));
        assert_eq!(parse_load(b" 2.50\0"), Some(2.5));
        assert_eq!(parse_load(b"3"), Some(3.0));
        for bad in [&b""[..], b"abc", b"-1.0", b"NaN", b"inf", b"\xff\xfe"] {
            assert_eq!(parse_load(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn storage_types() {
        let t = |last: u32| join(HR_STORAGE_TYPES, &[last]);
        assert_eq!(storage_kind(&t(2)), Some(StorageKind::Ram));
        assert_eq!(storage_kind(&t(3)), Some(StorageKind::Swap));
        assert_eq!(storage_kind(&t(4)), Some(StorageKind::Disk));
        assert_eq!(storage_kind(&t(1)), None, "hrStorageOther");
        assert_eq!(storage_kind(&t(5)), None, "hrStorageRemovableDisk");
        assert_eq!(storage_kind(&join(&t(4), &[1])), None);
        assert_eq!(storage_kind(&[1, 3, 6, 1, 4]), None);
    }

    #[test]
    fn catalogue_is_complete_and_unique() {
        assert_eq!(METRICS.len(), 32);
        let names: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), METRICS.len());
        assert!(
            METRICS
                .iter()
                .all(|m| !m.unit.is_empty() && !m.description.is_empty())
        );
    }

    /// An agent with one row of everything, its counters at `base + step`.
    fn agent(base: u32, step: u32, uptime: u32) -> Readings {
        let mut r = Readings::new();
        let c = base + step;
        r.insert(SYS_UPTIME.to_vec(), Value::TimeTicks(uptime));
        r.insert(HR_MEMORY_SIZE.to_vec(), Value::Integer(2048));
        for i in 1..=3 {
            r.insert(
                join(LA_LOAD, &[i]),
                Value::OctetString(format!("0.{i}5").into_bytes()),
            );
        }
        for arc in [5, 6, 14, 15] {
            r.insert(
                join(UCD_MEMORY, &[arc, 0]),
                Value::Integer(i64::from(arc) * 10),
            );
        }
        for (k, arc) in CPU_RAW.iter().enumerate() {
            let ticks = base + step * (k as u32 + 1);
            r.insert(join(UCD_SYSTEM_STATS, &[*arc, 0]), c32(ticks));
        }
        r.insert(join(HR_PROCESSOR_LOAD, &[196_608]), Value::Integer(12));
        let st = |c: u32| join(HR_STORAGE_ENTRY, &[c]);
        for (idx, ty) in [(1u32, 2u32), (3, 3), (31, 4), (6, 1)] {
            r.insert(
                join(&st(2), &[idx]),
                Value::ObjectId(join(HR_STORAGE_TYPES, &[ty])),
            );
            r.insert(
                join(&st(3), &[idx]),
                Value::OctetString(format!("store{idx}").into_bytes()),
            );
            r.insert(join(&st(4), &[idx]), Value::Integer(4096));
            r.insert(join(&st(5), &[idx]), Value::Integer(1000));
            r.insert(join(&st(6), &[idx]), Value::Integer(250));
        }
        let dio = |col: u32| join(DISK_IO_ENTRY, &[col, 9]);
        r.insert(dio(2), Value::OctetString(b"vda".to_vec()));
        for col in [3, 4, 5, 6] {
            r.insert(dio(col), c32(c));
        }
        for col in [12, 13] {
            r.insert(dio(col), Value::Counter64(u64::from(c) * 10));
        }
        let ifc = |col: u32, i: u32| join(IF_ENTRY, &[col, i]);
        for i in [1, 2] {
            r.insert(
                ifc(2, i),
                Value::OctetString(format!("eth{i}").into_bytes()),
            );
            r.insert(ifc(8, i), Value::Integer(1));
            for col in [10, 11, 13, 14, 16, 17, 19, 20] {
                r.insert(ifc(col, i), c32(c));
            }
        }
        // Only interface 1 has 64-bit counters.
        for col in [6, 7, 10, 11] {
            r.insert(
                join(IFX_ENTRY, &[col, 1]),
                Value::Counter64(u64::from(c) * 100),
            );
        }
        r
    }

    #[test]
    fn a_full_agent_yields_every_metric_with_rates_from_the_second_poll() {
        let mut st = RateState::default();
        let t0 = Instant::now();
        let first = extract(&agent(1000, 0, 500), &mut st, t0);
        assert_eq!(first.bad_values, 0, "{:?}", first.first_bad);
        let emitted: BTreeSet<&str> = first.samples.iter().map(|s| s.metric.as_str()).collect();
        let catalogue: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
        assert_eq!(emitted, catalogue);
        for s in &first.samples {
            let def = METRICS
                .iter()
                .find(|m| m.name == s.metric)
                .expect("in catalogue");
            if def.counter {
                assert_eq!(s.value, None, "{} on the first poll", s.metric);
                assert!(s.raw.is_some(), "{}", s.metric);
            } else {
                assert!(s.value.is_some() && s.raw.is_none(), "{}", s.metric);
            }
            assert!(s.oid.is_some());
        }

        let step = 300;
        let dt = 2.0;
        let second = extract(
            &agent(1000, step, 700),
            &mut st,
            t0 + Duration::from_secs(2),
        );
        let s = &second.samples;
        // Interface 1 reads the 64-bit column, interface 2 the 32-bit one.
        let in1 = find(s, "if_in_octets", Some("eth1")).expect("eth1");
        assert_eq!(in1.oid.as_deref(), Some("1.3.6.1.2.1.31.1.1.1.6.1"));
        assert_eq!(in1.value, Some(f64::from(step) * 100.0 / dt));
        assert_eq!(in1.raw, Some(f64::from(1000 + step) * 100.0));
        let in2 = find(s, "if_in_octets", Some("eth2")).expect("eth2");
        assert_eq!(in2.oid.as_deref(), Some("1.3.6.1.2.1.2.2.1.10.2"));
        assert_eq!(in2.value, Some(f64::from(step) / dt));
        let rd = find(s, "disk_io_read_bytes", Some("vda")).expect("vda");
        assert_eq!(rd.oid.as_deref(), Some("1.3.6.1.4.1.2021.13.15.1.1.12.9"));
        assert_eq!(rd.value, Some(f64::from(step) * 10.0 / dt));

        // Storage: allocation units times the reading; hrStorageOther left out.
        let ram = find(s, "hr_storage_ram_size", Some("store1")).expect("ram");
        assert_eq!(ram.value, Some(1000.0 * 4096.0));
        assert!(find(s, "hr_storage_disk_used", Some("store31")).is_some());
        assert!(s.iter().all(|x| x.instance.as_deref() != Some("store6")));
        assert_eq!(
            find(s, "hr_memory_size", None).and_then(|x| x.value),
            Some(2048.0 * 1024.0)
        );
        assert_eq!(find(s, "sys_uptime", None).and_then(|x| x.value), Some(7.0));
        assert_eq!(find(s, "la_load_5", None).and_then(|x| x.value), Some(0.25));

        // CPU: part k advanced by step*(k+1) ticks.
        let total: f64 = (1..=CPU_RAW.len())
            .map(|k| (step as usize * k) as f64)
            .sum();
        for (name, i) in [
            ("ss_cpu_user", CPU_USER),
            ("ss_cpu_system", CPU_SYSTEM),
            ("ss_cpu_idle", CPU_IDLE),
        ] {
            let v = find(s, name, None).and_then(|x| x.value).expect(name);
            let want = f64::from(step) * (i as f64 + 1.0) * 100.0 / total;
            assert!((v - want).abs() < 1e-9, "{name}: {v} vs {want}");
        }
    }

    #[test]
    fn cpu_ticks_that_did_not_move_give_no_share_and_keep_their_base() {
        let mut st = RateState::default();
        let t0 = Instant::now();
        extract(&agent(1000, 0, 100), &mut st, t0);
        // Counters unchanged (the agent's cache): no share.
        let same = extract(&agent(1000, 0, 200), &mut st, t0 + Duration::from_secs(1));
        assert_eq!(
            find(&same.samples, "ss_cpu_idle", None).and_then(|x| x.value),
            None
        );
        // They moved: the share spans both intervals, from the first poll's base.
        let moved = extract(&agent(1000, 10, 300), &mut st, t0 + Duration::from_secs(2));
        let idle = find(&moved.samples, "ss_cpu_idle", None).and_then(|x| x.value);
        let total: f64 = (1..=CPU_RAW.len()).map(|k| (10 * k) as f64).sum();
        assert_eq!(idle, Some(40.0 * 100.0 / total));
    }

    #[test]
    fn cpu_falls_back_to_the_agents_percentages() {
        let mut r = Readings::new();
        for (arc, v) in CPU_GAUGES.iter().zip([7, 3, 90]) {
            r.insert(join(UCD_SYSTEM_STATS, &[*arc, 0]), Value::Integer(v));
        }
        r.insert(join(UCD_SYSTEM_STATS, &[50, 0]), Value::Missing);
        let ex = extract(&r, &mut RateState::default(), Instant::now());
        let idle = find(&ex.samples, "ss_cpu_idle", None).expect("idle");
        assert_eq!((idle.value, idle.raw), (Some(90.0), None));
        assert_eq!(idle.oid.as_deref(), Some("1.3.6.1.4.1.2021.11.11.0"));
    }

    #[test]
    fn values_of_the_wrong_type_are_skipped_and_counted() {
        let mut r = agent(1000, 0, 100);
        r.insert(
            HR_MEMORY_SIZE.to_vec(),
            Value::OctetString(b"2048".to_vec()),
        );
        r.insert(join(LA_LOAD, &[1]), Value::Integer(1));
        r.insert(join(LA_LOAD, &[2]), Value::OctetString(b"high".to_vec()));
        r.insert(join(IF_ENTRY, &[14, 2]), Value::Integer(5));
        r.insert(SYS_UPTIME.to_vec(), Value::Gauge32(5));
        r.insert(join(UCD_MEMORY, &[5, 0]), Value::Integer(-1));
        // A wrong 64-bit column falls back to the 32-bit one (counted once).
        r.insert(join(IFX_ENTRY, &[6, 1]), Value::OctetString(b"x".to_vec()));
        // Absent objects are not errors.
        r.insert(join(UCD_MEMORY, &[15, 0]), Value::Missing);
        let ex = extract(&r, &mut RateState::default(), Instant::now());
        assert_eq!(ex.bad_values, 7, "{:?}", ex.first_bad);
        assert!(ex.first_bad.is_some());
        let s = &ex.samples;
        for m in [
            "hr_memory_size",
            "la_load_1",
            "la_load_5",
            "sys_uptime",
            "mem_total_real",
            "mem_cached",
        ] {
            assert!(find(s, m, None).is_none(), "{m}");
        }
        assert!(find(s, "if_in_errors", Some("eth2")).is_none());
        assert!(find(s, "if_in_errors", Some("eth1")).is_some());
        let in1 = find(s, "if_in_octets", Some("eth1")).expect("fallback");
        assert_eq!(in1.oid.as_deref(), Some("1.3.6.1.2.1.2.2.1.10.1"));
    }

    #[test]
    fn rows_without_a_name_use_their_index() {
        let mut r = Readings::new();
        r.insert(join(IF_ENTRY, &[10, 7]), c32(1));
        let ex = extract(&r, &mut RateState::default(), Instant::now());
        assert_eq!(ex.samples.len(), 1);
        assert_eq!(ex.samples[0].instance.as_deref(), Some("7"));
    }
}
