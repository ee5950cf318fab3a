//! Features of an entity's own history: change against its previous windows and
//! variability against its running baseline.
//!
//! For each base feature `b` of [`HISTORY_BASES`]:
//! - `b_delta`: `b` now minus `b` in the previous window (one hop, 30 s, earlier);
//!   null when the entity had no row there, or `b` is null in either;
//! - `b_accel`: `b_delta` now minus `b_delta` in the previous window (needs rows
//!   in the three latest windows);
//! - `b_zscore`: `(b − μ) / σ` against an exponentially weighted mean and
//!   variance (α = 0.1) of the entity's earlier values of `b` (its rows' non-null
//!   values, in window order); null until 5 earlier values, or when σ = 0.
//!
//! - `b_10m` for each base `b` of [`HORIZON_BASES`]: the sum of `b` over the
//!   ten minutes ending with this window (this window and the nine
//!   non-overlapping windows before it, [`HORIZON_WINDOWS`]), so that attempts
//!   spread thinner than any one window's threshold still add up, as Zeek's
//!   password-guessing and fail2ban's find-time count over minutes, and
//!   `b_10m_max`, the largest of those windows' values (a rule for slow
//!   guessing leaves bursts to the per-window rule); null when `b` is null in
//!   all of them.
//!
//! State is per entity, on the worker that owns the entity, and bounded: an
//! entity unseen for `idle_windows` windows is forgotten, and past `max_entities`
//! the longest-unseen are forgotten first (counted in `evicted`). A forgotten
//! entity starts over, as a new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{Entity, FeatureDef, FeatureDtype, FeatureRow};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::Map;
use crate::hold::WindowHold;

/// The features whose history is followed, in feature order.
pub const HISTORY_BASES: [&str; 10] = [
    "packets_out",
    "bytes_out",
    "packets_in",
    "bytes_in",
    "distinct_peers_out",
    "distinct_dst_ports_out",
    "conn_attempts_out",
    "syslog_messages",
    "auth_failures_as_remote",
    "mqtt_messages",
];

/// The features summed over a horizon longer than a window: login attempts
/// seen in packets, failures logged, failures read from clear-text logins.
pub const HORIZON_BASES: [&str; 3] = [
    "auth_conn_attempts_out",
    "auth_failures_as_remote",
    "app_login_failures_out",
];
/// Non-overlapping windows summed by the horizon features: ten minutes.
pub const HORIZON_WINDOWS: u64 = 10;
/// Windows (hops) remembered for them: windows overlap by half, so every
/// other one of the last `2 × HORIZON_WINDOWS`.
const HORIZON_SLOTS: usize = 2 * HORIZON_WINDOWS as usize;

macro_rules! horizon_defs {
    ($($b:literal),*) => {
        /// The horizon features' definitions, one per base.
        pub const HORIZON_DEFS: &[FeatureDef] = &[$(
            FeatureDef {
                name: concat!($b, "_10m"),
                family: "horizon",
                source: "derived",
                unit: "count",
                dtype: FeatureDtype::Count,
                description: concat!("`", $b, "` summed over the ten minutes ending with this window: this window and the nine non-overlapping windows before it (a window without a row counts 0)."),
                null_when: Some("the value is null in all of those windows"),
            },
            FeatureDef {
                name: concat!($b, "_10m_max"),
                family: "horizon",
                source: "derived",
                unit: "count",
                dtype: FeatureDtype::Count,
                description: concat!("The largest `", $b, "` of any one of the windows `", $b, "_10m` sums: tells attempts spread thin from a burst."),
                null_when: Some("the value is null in all of those windows"),
            },
        )*];
    };
}

horizon_defs!(
    "auth_conn_attempts_out",
    "auth_failures_as_remote",
    "app_login_failures_out"
);

/// Weight of the newest value in the running baseline.
pub const EWMA_ALPHA: f64 = 0.1;
/// Earlier values needed before a z-score is given.
pub const ZSCORE_MIN_HISTORY: u32 = 5;

macro_rules! history_defs {
    ($($b:literal),*) => {
        /// The history features' definitions: for each base, delta, accel, zscore.
        pub const HISTORY_DEFS: &[FeatureDef] = &[$(
            FeatureDef {
                name: concat!($b, "_delta"),
                family: "change",
                source: "derived",
                unit: "difference",
                dtype: FeatureDtype::Float,
                description: concat!("`", $b, "` minus its value in the entity's previous window (30 s earlier)."),
                null_when: Some("the entity had no row in the previous window, or the value is null in either"),
            },
            FeatureDef {
                name: concat!($b, "_accel"),
                family: "change",
                source: "derived",
                unit: "difference",
                dtype: FeatureDtype::Float,
                description: concat!("`", $b, "_delta` minus its value in the previous window."),
                null_when: Some("the entity lacks a row, or a value, in one of its three latest windows"),
            },
            FeatureDef {
                name: concat!($b, "_zscore"),
                family: "variability",
                source: "derived",
                unit: "standard deviations",
                dtype: FeatureDtype::Float,
                description: concat!("`", $b, "` against the entity's exponentially weighted (alpha 0.1) mean and standard deviation of its earlier values."),
                null_when: Some("fewer than 5 earlier values, or no variation in them"),
            },
        )*];
    };
}

history_defs!(
    "packets_out",
    "bytes_out",
    "packets_in",
    "bytes_in",
    "distinct_peers_out",
    "distinct_dst_ports_out",
    "conn_attempts_out",
    "syslog_messages",
    "auth_failures_as_remote",
    "mqtt_messages"
);

/// How much history is kept.
#[derive(Clone, Copy, Debug)]
pub struct HistoryConfig {
    /// Entities followed at once (per worker).
    pub max_entities: usize,
    /// Windows after which an unseen entity is forgotten.
    pub idle_windows: u64,
}

/// Counters of the history operators.
#[derive(Debug, Default)]
pub struct HistoryCounters {
    /// Entities forgotten because the state was full.
    pub evicted: AtomicU64,
    /// Entities followed now (over all workers).
    pub entities: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Ewma {
    n: u32,
    mean: f64,
    var: f64,
}

impl Ewma {
    fn z(&self, x: f64) -> Option<f64> {
        let sd = self.var.sqrt();
        (self.n >= ZSCORE_MIN_HISTORY && sd > 0.0).then(|| (x - self.mean) / sd)
    }

    fn push(&mut self, x: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += EWMA_ALPHA * d;
            self.var = (1.0 - EWMA_ALPHA) * (self.var + EWMA_ALPHA * d * d);
        }
        self.n = self.n.saturating_add(1);
    }
}

#[derive(Clone, Debug)]
struct EntityHistory {
    /// The window of the entity's latest row, its base values, and its deltas.
    last: u64,
    values: [f64; HISTORY_BASES.len()],
    deltas: [f64; HISTORY_BASES.len()],
    ewma: [Ewma; HISTORY_BASES.len()],
    /// The horizon bases of the latest windows, by window modulo the slots,
    /// with the window each slot holds.
    recent: [[f64; HORIZON_SLOTS]; HORIZON_BASES.len()],
    recent_window: [u64; HORIZON_SLOTS],
}

impl EntityHistory {
    fn new(window: u64) -> Self {
        EntityHistory {
            last: window,
            values: [f64::NAN; HISTORY_BASES.len()],
            deltas: [f64::NAN; HISTORY_BASES.len()],
            ewma: [Ewma::default(); HISTORY_BASES.len()],
            recent: [[f64::NAN; HORIZON_SLOTS]; HORIZON_BASES.len()],
            recent_window: [u64::MAX; HORIZON_SLOTS],
        }
    }
}

/// The timely-free core: per-entity history, fed rows in window order.
pub struct History {
    /// Column of each base in a row, and of each base's three outputs.
    base_idx: Vec<usize>,
    out_idx: Vec<[usize; 3]>,
    /// Column of each horizon base, of its sum and of its maximum.
    horizon_idx: Vec<(usize, usize, usize)>,
    /// Each entity's latest window (kept inline: expiry reads it for every
    /// entity) and its history, boxed: growing a map of 400-byte values would
    /// copy (and fault in) them all at each doubling.
    state: Map<Entity, (u64, Box<EntityHistory>)>,
    cfg: HistoryConfig,
    pub evicted: u64,
}

impl History {
    /// `defs` is the whole catalogue (base and history features must be in it).
    pub fn new(defs: &[FeatureDef], cfg: HistoryConfig) -> Self {
        let pos = |n: &str| defs.iter().position(|d| d.name == n);
        let mut base_idx = Vec::new();
        let mut out_idx = Vec::new();
        for b in HISTORY_BASES {
            let (Some(bi), Some(d), Some(a), Some(z)) = (
                pos(b),
                pos(&format!("{b}_delta")),
                pos(&format!("{b}_accel")),
                pos(&format!("{b}_zscore")),
            ) else {
                continue;
            };
            base_idx.push(bi);
            out_idx.push([d, a, z]);
        }
        let horizon_idx = HORIZON_BASES
            .iter()
            .filter_map(|b| {
                Some((
                    pos(b)?,
                    pos(&format!("{b}_10m"))?,
                    pos(&format!("{b}_10m_max"))?,
                ))
            })
            .collect();
        History {
            base_idx,
            out_idx,
            horizon_idx,
            state: Map::default(),
            cfg,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Fills the history features of `row` and records it. Rows of one entity
    /// must come in window order.
    pub fn apply(&mut self, row: &mut FeatureRow) {
        // The entity's state, updated in place (it is a kilobyte: copying it
        // per row cost more than the arithmetic).
        let (fresh, h) = match self.state.get_mut(&row.entity) {
            Some((last, h)) => {
                *last = row.window;
                (false, &mut **h)
            }
            None => {
                let e = self
                    .state
                    .entry(row.entity.clone())
                    .or_insert((row.window, Box::new(EntityHistory::new(row.window))));
                (true, &mut *e.1)
            }
        };
        let adjacent = !fresh && h.last + 1 == row.window;
        for (k, &bi) in self.base_idx.iter().enumerate() {
            let x = row.values[bi];
            let [di, ai, zi] = self.out_idx[k];
            let delta = if adjacent { x - h.values[k] } else { f64::NAN };
            let accel = if adjacent {
                delta - h.deltas[k]
            } else {
                f64::NAN
            };
            let z = if fresh || x.is_nan() {
                None
            } else {
                h.ewma[k].z(x)
            };
            // NaN in, NaN out: a null anywhere gives a null.
            row.values[di] = delta;
            row.values[ai] = accel;
            row.values[zi] = z.filter(|z| z.is_finite()).unwrap_or(f64::NAN);
            h.values[k] = x;
            h.deltas[k] = delta;
            if !x.is_nan() {
                h.ewma[k].push(x);
            }
        }
        h.last = row.window;
        let slot = (row.window % HORIZON_SLOTS as u64) as usize;
        h.recent_window[slot] = row.window;
        for (k, &(bi, si, mi)) in self.horizon_idx.iter().enumerate() {
            h.recent[k][slot] = row.values[bi];
            let (mut sum, mut max) = (f64::NAN, f64::NAN);
            for back in 0..HORIZON_WINDOWS {
                let Some(w) = row.window.checked_sub(2 * back) else {
                    break;
                };
                let s = (w % HORIZON_SLOTS as u64) as usize;
                let v = h.recent[k][s];
                if h.recent_window[s] == w && !v.is_nan() {
                    sum = if sum.is_nan() { v } else { sum + v };
                    max = max.max(v);
                }
            }
            row.values[si] = sum;
            row.values[mi] = max;
        }
    }

    /// Forgets entities unseen since before `window − idle_windows`, then the
    /// longest-unseen while more than `max_entities` are followed.
    pub fn expire(&mut self, window: u64) {
        let horizon = window.saturating_sub(self.cfg.idle_windows);
        self.state.retain(|_, (last, _)| *last >= horizon);
        if self.state.len() > self.cfg.max_entities {
            let over = self.state.len() - self.cfg.max_entities;
            let mut lasts: Vec<(u64, Entity)> = self
                .state
                .iter()
                .map(|(e, (last, _))| (*last, e.clone()))
                .collect();
            lasts.sort_unstable();
            for (_, e) in lasts.into_iter().take(over) {
                self.state.remove(&e);
            }
            self.evicted += over as u64;
        }
    }
}

/// Fills the history features of feature rows (one row per entity per window).
pub trait WithHistory<'scope> {
    fn with_history(
        self,
        defs: Vec<FeatureDef>,
        cfg: HistoryConfig,
        counters: Arc<HistoryCounters>,
    ) -> Stream<'scope, u64, Vec<FeatureRow>>;
}

impl<'scope> WithHistory<'scope> for Stream<'scope, u64, Vec<FeatureRow>> {
    fn with_history(
        self,
        defs: Vec<FeatureDef>,
        cfg: HistoryConfig,
        counters: Arc<HistoryCounters>,
    ) -> Stream<'scope, u64, Vec<FeatureRow>> {
        let pact = Exchange::new(|r: &FeatureRow| r.entity.route_hash());
        self.unary_frontier(pact, "History", move |_cap, _info| {
            let mut core = History::new(&defs, cfg);
            let mut hold = WindowHold::default();
            let mut reported = (0u64, 0usize);
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let out_idx = output.output_index();
                    for r in data.drain(..) {
                        hold.push(r, time, || cap.delayed(&time, out_idx));
                    }
                });
                // Windows go through in order, so each entity's rows do too.
                let f = frontier.frontier().first().copied();
                while let Some((w, cap, mut rows)) = hold.pop_complete(f) {
                    for r in rows.iter_mut() {
                        core.apply(r);
                    }
                    core.expire(w);
                    output.session(&cap).give_container(&mut rows);
                }
                let now = (core.evicted, core.len());
                if now != reported {
                    counters
                        .evicted
                        .fetch_add(now.0 - reported.0, Ordering::Relaxed);
                    if now.1 >= reported.1 {
                        counters
                            .entities
                            .fetch_add((now.1 - reported.1) as u64, Ordering::Relaxed);
                    } else {
                        counters
                            .entities
                            .fetch_sub((reported.1 - now.1) as u64, Ordering::Relaxed);
                    }
                    reported = now;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::Addr;

    fn defs() -> Vec<FeatureDef> {
        crate::features::defs()
    }

    fn row(defs: &[FeatureDef], e: u8, window: u64, packets_out: f64) -> FeatureRow {
        let mut values = vec![f64::NAN; defs.len()];
        let i = defs
            .iter()
            .position(|d| d.name == "packets_out")
            .unwrap_or(0);
        values[i] = packets_out;
        FeatureRow {
            entity: Entity::Ip(Addr::from(std::net::IpAddr::from([10, 0, 0, e]))),
            window,
            values: values.into(),
        }
    }

    fn get(defs: &[FeatureDef], r: &FeatureRow, name: &str) -> Option<f64> {
        let i = defs.iter().position(|d| d.name == name)?;
        Some(r.values[i]).filter(|v| !v.is_nan())
    }

    #[test]
    fn deltas_need_the_previous_window_and_zscores_a_history() {
        let d = defs();
        let mut h = History::new(
            &d,
            HistoryConfig {
                max_entities: 10,
                idle_windows: 100,
            },
        );
        let xs = [10.0, 12.0, 11.0, 13.0, 12.0, 40.0];
        let mut out = Vec::new();
        for (w, x) in xs.iter().enumerate() {
            let mut r = row(&d, 1, w as u64, *x);
            h.apply(&mut r);
            out.push(r);
        }
        assert_eq!(get(&d, &out[0], "packets_out_delta"), None);
        assert_eq!(get(&d, &out[1], "packets_out_delta"), Some(2.0));
        assert_eq!(get(&d, &out[1], "packets_out_accel"), None);
        assert_eq!(get(&d, &out[2], "packets_out_accel"), Some(-3.0));
        for r in &out[..5] {
            assert_eq!(get(&d, r, "packets_out_zscore"), None);
        }
        // The baseline, computed here from its definition.
        let (mut mean, mut var) = (xs[0], 0.0);
        for x in &xs[1..5] {
            let dx = x - mean;
            mean += 0.1 * dx;
            var = 0.9 * (var + 0.1 * dx * dx);
        }
        let want = (40.0 - mean) / f64::sqrt(var);
        let got = get(&d, &out[5], "packets_out_zscore").unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // A gap: no delta across it.
        let mut r = row(&d, 1, 9, 5.0);
        h.apply(&mut r);
        assert_eq!(get(&d, &r, "packets_out_delta"), None);
        assert!(get(&d, &r, "packets_out_zscore").is_some());
        // A null base gives null history features but keeps the rest.
        assert_eq!(get(&d, &r, "bytes_out_delta"), None);
    }

    #[test]
    fn horizon_sums_every_other_window_over_ten_minutes() {
        let d = defs();
        let mut h = History::new(
            &d,
            HistoryConfig {
                max_entities: 10,
                idle_windows: 100,
            },
        );
        let base = d
            .iter()
            .position(|f| f.name == "auth_conn_attempts_out")
            .expect("base");
        let mut at = |w: u64, v: f64| {
            let mut r = row(&d, 1, w, 1.0);
            r.values[base] = v;
            h.apply(&mut r);
            (
                get(&d, &r, "auth_conn_attempts_out_10m"),
                get(&d, &r, "auth_conn_attempts_out_10m_max"),
            )
        };
        // Windows 0..=19, odd ones 1 attempt, even ones 100: windows 19, 17,
        // .., 1 are summed (ten of them); the overlapping even ones are not.
        let mut last = (None, None);
        for w in 0..20 {
            last = at(w, if w % 2 == 0 { 100.0 } else { 1.0 });
        }
        assert_eq!(last, (Some(10.0), Some(1.0)));
        // Window 21 reaches back to 3: 1 dropped (window 1), 21 added.
        assert_eq!(at(21, 5.0), (Some(14.0), Some(5.0)));
        // Window 22 reaches back to the even windows: 100 each from 4 to 18
        // (window 20 had no row).
        assert_eq!(at(22, 0.0), (Some(800.0), Some(100.0)));
        // A gap longer than the horizon leaves only the new window.
        assert_eq!(at(60, 2.0), (Some(2.0), Some(2.0)));
        // A null base everywhere in the horizon gives null.
        assert_eq!(at(100, f64::NAN), (None, None));
    }

    #[test]
    fn state_is_bounded_and_idle_entities_are_forgotten() {
        let d = defs();
        let mut h = History::new(
            &d,
            HistoryConfig {
                max_entities: 3,
                idle_windows: 4,
            },
        );
        for e in 0..5u8 {
            let mut r = row(&d, e, u64::from(e), 1.0);
            h.apply(&mut r);
        }
        h.expire(4);
        assert_eq!(h.len(), 3);
        assert_eq!(h.evicted, 2);
        h.expire(7);
        // Windows 2 and 3 are more than 4 windows before 7... 3 >= 3 stays.
        assert_eq!(h.len(), 2);
        h.expire(100);
        assert!(h.is_empty());
    }
}
