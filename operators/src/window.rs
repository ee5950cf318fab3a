//! Hopping windows (60 s, every 30 s) of per-entity features.
//!
//! Each observation updates the accumulator of its entity in its one 30 s pane;
//! window `k` is pane `k` followed by pane `k + 1`, merged when both are complete
//! (the frontier has passed pane `k + 1`). So a packet is counted in two windows
//! while being accumulated once, and a pane is dropped after its second window.
//!
//! (Over 600 lines: the pane store and the operators that use it (packet
//! windows, event windows, merging a window's families) change together; the
//! tests are the last 60.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use amoskys_schemas::{Addr, Entity, EventRow, FeatureRow, Packet, pane_of};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::Map;
pub use crate::features::Obs;
use crate::features::{EventAcc, EventObs, PaneAcc, compute_all, compute_events, merge_values};
use crate::hold::WindowHold;

/// Counters the window operator keeps.
#[derive(Debug, Default)]
pub struct WindowCounters {
    /// Observations (two per packet) the window operators have taken in.
    pub obs_in: AtomicU64,
    /// Feature rows emitted.
    pub rows: AtomicU64,
    /// Observations that arrived for a pane whose windows were already closed.
    pub late: AtomicU64,
    /// Observations of entities past a window's limit, counted under the
    /// overflow entity `100::<worker>`.
    pub overflow: AtomicU64,
}

/// Panes an item (a peer, a message template) is remembered for: an item of a
/// window is new when its entity had it in none of the 4 panes (2 minutes) before.
pub const NOVELTY_PANES: u64 = 4;

/// What a window operator keeps per entity per pane.
pub(crate) trait WindowAcc: Default {
    /// Extends this pane's accumulator into the window of this pane and `later`.
    fn append(&mut self, later: &Self);
    fn compute(&self) -> Box<[f64]>;
    /// Appends the items whose novelty is a feature: the peers an entity sent to,
    /// the message templates a host logged.
    fn items(&self, out: &mut Vec<u64>);
    /// Whether the novelty feature applies to this window (else it stays null).
    fn novelty_applies(&self) -> bool;
    /// The column of the novelty feature.
    fn novelty_column() -> usize;
}

fn column_of(name: &str) -> usize {
    crate::features::defs()
        .iter()
        .position(|d| d.name == name)
        .expect("the novelty feature is in the catalogue")
}

impl WindowAcc for PaneAcc {
    #[inline]
    fn append(&mut self, later: &Self) {
        PaneAcc::append(self, later);
    }
    fn compute(&self) -> Box<[f64]> {
        compute_all(self)
    }
    fn items(&self, out: &mut Vec<u64>) {
        out.extend(self.peers_out.keys().map(Addr::route_hash));
    }
    fn novelty_applies(&self) -> bool {
        true
    }
    fn novelty_column() -> usize {
        static COL: OnceLock<usize> = OnceLock::new();
        *COL.get_or_init(|| column_of(crate::features::NEW_PEERS_OUT))
    }
}

impl WindowAcc for EventAcc {
    fn append(&mut self, later: &Self) {
        EventAcc::append(self, later);
    }
    fn compute(&self) -> Box<[f64]> {
        compute_events(self)
    }
    fn items(&self, out: &mut Vec<u64>) {
        out.extend(self.syslog.templates.keys().copied());
    }
    fn novelty_applies(&self) -> bool {
        self.syslog.messages > 0
    }
    fn novelty_column() -> usize {
        static COL: OnceLock<usize> = OnceLock::new();
        *COL.get_or_init(|| column_of(crate::features::SYSLOG_NEW_TEMPLATES))
    }
}

/// The items of each entity's recent panes, each with the last pane it was seen
/// in. Held for [`NOVELTY_PANES`] to twice that many panes (swept every
/// [`NOVELTY_PANES`] windows): bounded by what the last four minutes brought.
struct RecentItems<K> {
    by: Map<K, Map<u64, u64>>,
}

impl<K> Default for RecentItems<K> {
    fn default() -> Self {
        RecentItems { by: Map::default() }
    }
}

impl<K: WindowKey> RecentItems<K> {
    /// How many of `items` (of window `w`) the entity had in none of the
    /// [`NOVELTY_PANES`] panes before the window.
    fn new_count(&self, e: &K, items: &[u64], w: u64) -> u64 {
        let Some(m) = self.by.get(e) else {
            return items.len() as u64;
        };
        items
            .iter()
            .filter(|i| m.get(i).is_none_or(|&s| s + NOVELTY_PANES < w))
            .count() as u64
    }

    /// Remembers that the entity had `items` in `pane`.
    fn note(&mut self, e: &K, items: &[u64], pane: u64) {
        if items.is_empty() {
            return;
        }
        let m = self.by.entry(e.clone()).or_default();
        for i in items {
            m.insert(*i, pane);
        }
    }

    /// Forgets items last seen before `pane`, and entities left with none; gives
    /// back the room of maps that have shrunk to a quarter.
    fn forget_before(&mut self, pane: u64) {
        self.by.retain(|_, m| {
            m.retain(|_, s| *s >= pane);
            if m.len() * 4 < m.capacity() {
                m.shrink_to_fit();
            }
            !m.is_empty()
        });
    }
}

/// What a window operator keys its state by.
pub(crate) trait WindowKey: Clone + Eq + std::hash::Hash {
    fn entity(&self) -> Entity;
    /// The key a full window on `worker` counts further entities under.
    fn overflow(worker: usize) -> Self;
}

/// `100::<worker>`, in the discard-only prefix 100::/64 (RFC 6666) that no
/// flow or log names: one overflow entity per worker, so that an entity still
/// has one row a window (rows of one entity are expected on one worker).
fn overflow_addr(worker: usize) -> Addr {
    Addr::from(std::net::IpAddr::V6(std::net::Ipv6Addr::new(
        0x100,
        0,
        0,
        0,
        0,
        0,
        0,
        worker as u16,
    )))
}

impl WindowKey for Addr {
    fn entity(&self) -> Entity {
        Entity::Ip(*self)
    }
    fn overflow(worker: usize) -> Self {
        overflow_addr(worker)
    }
}

impl WindowKey for Entity {
    fn entity(&self) -> Entity {
        self.clone()
    }
    fn overflow(worker: usize) -> Self {
        Entity::Ip(overflow_addr(worker))
    }
}

struct Pane<K, A> {
    cap: Capability<u64>,
    /// Whether the earlier window containing this pane (`pane - 1`) was emitted.
    first_window_done: bool,
    /// Boxed: an accumulator is several hundred bytes, and a map of them would move
    /// (and fault in) megabytes each time it grows, for every pane.
    entities: Map<K, Box<A>>,
}

/// Window state of one worker: panes by index.
pub(crate) struct PaneStore<K, A> {
    panes: BTreeMap<u64, Pane<K, A>>,
    /// Entities of the last pane emitted: the next pane's map starts that large.
    last_entities: usize,
    recent: RecentItems<K>,
}

impl<K, A> Default for PaneStore<K, A> {
    fn default() -> Self {
        PaneStore {
            panes: BTreeMap::new(),
            last_entities: 0,
            recent: RecentItems::default(),
        }
    }
}

impl<K: WindowKey, A: WindowAcc> PaneStore<K, A> {
    /// The accumulator of `key` in `pane`, creating the pane (holding `cap` at
    /// `pane`) if needed.
    #[inline]
    fn slot(&mut self, pane: u64, cap: impl FnOnce() -> Capability<u64>) -> &mut Map<K, Box<A>> {
        let last = self.last_entities;
        &mut self
            .panes
            .entry(pane)
            .or_insert_with(|| Pane {
                cap: cap(),
                first_window_done: false,
                entities: Map::with_capacity_and_hasher(last, Default::default()),
            })
            .entities
    }

    /// Entities held by every open pane together.
    fn held(&self) -> usize {
        self.panes.values().map(|p| p.entities.len()).sum()
    }

    /// Emits every window whose two panes are before `frontier` (all, if `None`),
    /// counting the rows in `counters`.
    fn emit(
        &mut self,
        frontier: Option<u64>,
        counters: &WindowCounters,
        mut give: impl FnMut(&Capability<u64>, Vec<FeatureRow>),
    ) {
        while let Some((&p0, pane)) = self.panes.first_key_value() {
            let w = if pane.first_window_done || p0 == 0 {
                p0
            } else {
                p0 - 1
            };
            if frontier.is_some_and(|f| w + 1 >= f) {
                break;
            }
            // Pane w is not needed after window w: take it, and merge pane w + 1
            // into its accumulators in place rather than copying either.
            let mut a = if w == p0 { self.panes.remove(&w) } else { None };
            if let Some(a) = a.as_ref() {
                self.last_entities = a.entities.len();
            }
            let b = self.panes.get(&(w + 1));
            let cap = a.as_ref().or(b).map(|p| p.cap.clone());
            let recent = &mut self.recent;
            let mut items = Vec::new();
            let mut row = |e: &K, acc: &A, recent: &RecentItems<K>| {
                let mut values = acc.compute();
                if acc.novelty_applies() {
                    items.clear();
                    acc.items(&mut items);
                    values[A::novelty_column()] = recent.new_count(e, &items, w) as f64;
                }
                FeatureRow {
                    entity: e.entity(),
                    window: w,
                    values,
                }
            };
            let mut rows = Vec::new();
            let mut own = Vec::new();
            if let Some(a) = a.as_mut() {
                for (e, acc) in a.entities.iter_mut() {
                    // Pane w's own items, remembered once the window is computed.
                    own.clear();
                    acc.items(&mut own);
                    if let Some(later) = b.and_then(|p| p.entities.get(e)) {
                        acc.append(later);
                    }
                    rows.push(row(e, acc, recent));
                    recent.note(e, &own, w);
                }
            }
            if let Some(b) = b {
                let seen = |e: &K| a.as_ref().is_some_and(|a| a.entities.contains_key(e));
                rows.extend(
                    b.entities
                        .iter()
                        .filter(|(e, _)| !seen(e))
                        .map(|(e, acc)| row(e, acc, recent)),
                );
            }
            // Stale items do not count (new_count checks their pane), so they are
            // swept only every NOVELTY_PANES windows: memory of at most twice that
            // many panes, for a quarter of the sweeps.
            if w % NOVELTY_PANES == 0 {
                recent.forget_before((w + 1).saturating_sub(NOVELTY_PANES));
            }
            if let Some(cap) = cap {
                if !rows.is_empty() {
                    counters
                        .rows
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                }
                give(&cap, rows);
            }
            if let Some(next) = self.panes.get_mut(&(w + 1)) {
                next.first_window_done = true;
            }
        }
    }
}

/// Turns packets into per-entity feature rows, one per entity per window:
/// at most `max_entities` entities a window on this worker, the rest counted
/// together under the overflow entity `100::<worker>`.
pub trait Featurize<'scope> {
    fn featurize(
        self,
        counters: Arc<WindowCounters>,
        max_entities: usize,
    ) -> Stream<'scope, u64, Vec<FeatureRow>>;
}

impl<'scope> Featurize<'scope> for Stream<'scope, u64, Vec<Packet>> {
    fn featurize(
        self,
        counters: Arc<WindowCounters>,
        max_entities: usize,
    ) -> Stream<'scope, u64, Vec<FeatureRow>> {
        let obs = self.unary::<CapacityContainerBuilder<Vec<Obs>>, _, _, _>(
            Pipeline,
            "Observe",
            |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut v: Vec<Obs> = Vec::with_capacity(data.len() * 2);
                        for p in data.iter() {
                            v.extend(Obs::of(p));
                        }
                        output.session(&cap).give_container(&mut v);
                    });
                }
            },
        );
        hop_windows(obs, "HopWindow(60s/30s)", counters, max_entities)
    }
}

/// An observation a window operator takes: when, about whom, and what it adds
/// to that entity's accumulator of the pane.
pub(crate) trait Observation: timely::ExchangeData {
    type Key: WindowKey;
    type Acc: WindowAcc;
    fn ts_ns(&self) -> i64;
    fn key(&self) -> Self::Key;
    /// The worker-routing hash of its entity.
    fn route(&self) -> u64;
    fn add_to(&self, acc: &mut Self::Acc);
}

impl Observation for Obs {
    type Key = Addr;
    type Acc = PaneAcc;
    fn ts_ns(&self) -> i64 {
        self.ts_ns
    }
    fn key(&self) -> Addr {
        self.entity
    }
    fn route(&self) -> u64 {
        self.entity.route_hash()
    }
    #[inline]
    fn add_to(&self, acc: &mut PaneAcc) {
        acc.observe(self);
    }
}

impl Observation for EventObs {
    type Key = Entity;
    type Acc = EventAcc;
    fn ts_ns(&self) -> i64 {
        self.ts_ns
    }
    fn key(&self) -> Entity {
        self.entity.clone()
    }
    fn route(&self) -> u64 {
        self.entity.route_hash()
    }
    fn add_to(&self, acc: &mut EventAcc) {
        acc.observe(self);
    }
}

/// The window operator, whatever it windows: observations are exchanged by
/// entity, accumulated once in their pane, and each window's row emitted once
/// the frontier has passed both its panes. Observations for a pane whose
/// windows are closed are counted as late and left out.
fn hop_windows<'s, O: Observation>(
    obs: Stream<'s, u64, Vec<O>>,
    name: &str,
    counters: Arc<WindowCounters>,
    max_entities: usize,
) -> Stream<'s, u64, Vec<FeatureRow>> {
    let pact = Exchange::new(|o: &O| o.route());
    let worker = obs.scope().index();
    obs.unary_frontier(pact, name, move |_cap, _info| {
        let mut store = PaneStore::<O::Key, O::Acc>::default();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(&time) = cap.least() else { return };
                let out_idx = output.output_index();
                let (mut late, mut over) = (0u64, 0u64);
                // Observations come in runs of one pane: look the pane up once a run.
                let pane = |o: &O| pane_of(o.ts_ns().max(0));
                // Entities held by all open panes together: at most a
                // window's worth (two panes), however many panes a slow
                // watermark leaves open, so that memory follows the setting.
                let mut held = store.held();
                for run in data.chunk_by(|a, b| pane(a) == pane(b)) {
                    let p = pane(&run[0]);
                    if p < time {
                        late += run.len() as u64;
                        continue;
                    }
                    let slot = store.slot(p, || cap.delayed(&p, out_idx));
                    for o in run {
                        let key = o.key();
                        let key = if slot.contains_key(&key) {
                            key
                        } else if slot.len() < max_entities && held < max_entities.saturating_mul(2)
                        {
                            held += 1;
                            key
                        } else {
                            over += 1;
                            O::Key::overflow(worker)
                        };
                        o.add_to(slot.entry(key).or_default());
                    }
                }
                if late > 0 {
                    counters.late.fetch_add(late, Ordering::Relaxed);
                }
                if over > 0 {
                    counters.overflow.fetch_add(over, Ordering::Relaxed);
                }
                counters
                    .obs_in
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            });
            let f = frontier.frontier().first().copied();
            store.emit(f, &counters, |cap, mut rows| {
                output.session(cap).give_container(&mut rows);
            });
        }
    })
}

/// Turns log and device records into per-entity feature rows of the syslog, SNMP
/// and MQTT families, one per entity per window.
pub trait FeaturizeEvents<'scope> {
    /// What each record says about each entity.
    fn observe_events(self) -> Stream<'scope, u64, Vec<EventObs>>;
}

/// The DHCP messages among packets, as observations of the clients' hardware
/// addresses for the event windows.
pub trait DhcpObservations<'scope> {
    fn dhcp_observations(self) -> Stream<'scope, u64, Vec<EventObs>>;
}

impl<'scope> DhcpObservations<'scope> for Stream<'scope, u64, Vec<Packet>> {
    fn dhcp_observations(self) -> Stream<'scope, u64, Vec<EventObs>> {
        self.unary::<CapacityContainerBuilder<Vec<EventObs>>, _, _, _>(
            Pipeline,
            "ObserveDhcp",
            |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut v: Vec<EventObs> =
                            data.iter().filter_map(EventObs::of_dhcp).collect();
                        if !v.is_empty() {
                            output.session(&cap).give_container(&mut v);
                        }
                    });
                }
            },
        )
    }
}

/// Per-entity feature rows, one per entity per window, of event observations
/// (at most `max_entities` a window on this worker, as [`Featurize`]).
pub trait EventWindows<'scope> {
    fn event_windows(
        self,
        counters: Arc<WindowCounters>,
        max_entities: usize,
    ) -> Stream<'scope, u64, Vec<FeatureRow>>;
}

impl<'scope> FeaturizeEvents<'scope> for Stream<'scope, u64, Vec<EventRow>> {
    fn observe_events(self) -> Stream<'scope, u64, Vec<EventObs>> {
        self.unary::<CapacityContainerBuilder<Vec<EventObs>>, _, _, _>(
            Pipeline,
            "ObserveEvents",
            |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut v = Vec::with_capacity(data.len());
                        for r in data.iter() {
                            EventObs::of(r, &mut v);
                        }
                        output.session(&cap).give_container(&mut v);
                    });
                }
            },
        )
    }
}

impl<'scope> EventWindows<'scope> for Stream<'scope, u64, Vec<EventObs>> {
    fn event_windows(
        self,
        counters: Arc<WindowCounters>,
        max_entities: usize,
    ) -> Stream<'scope, u64, Vec<FeatureRow>> {
        hop_windows(self, "EventWindow(60s/30s)", counters, max_entities)
    }
}

/// Joins feature rows of one entity and window coming from different families
/// (packets, events) into one row. Every window operator routes rows by
/// `Entity::route_hash` (packets by their address, events by their entity), so
/// the rows of one entity are already on one worker: no exchange is needed.
pub trait MergeRows<'scope> {
    fn merge_rows(self) -> Stream<'scope, u64, Vec<FeatureRow>>;
}

impl<'scope> MergeRows<'scope> for Stream<'scope, u64, Vec<FeatureRow>> {
    fn merge_rows(self) -> Stream<'scope, u64, Vec<FeatureRow>> {
        self.unary_frontier(Pipeline, "MergeFamilies", move |_cap, _info| {
            let mut hold = WindowHold::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let out_idx = output.output_index();
                    for r in data.drain(..) {
                        hold.push(r, time, || cap.delayed(&time, out_idx));
                    }
                });
                let f = frontier.frontier().first().copied();
                while let Some((w, cap, rows)) = hold.pop_complete(f) {
                    let mut out = merge_window(rows, w);
                    output.session(&cap).give_container(&mut out);
                }
            }
        })
    }
}

/// The rows of one window merged per entity. Packet rows (every one has
/// `packets_out`) are most of them and at most one per entity: they keep
/// their order, and only the few rows of the other families (logs, devices,
/// application observations) are looked up and merged into them; rows of
/// entities without packets follow. Order and memory stay as the window
/// operator made them, which the Parquet encoder and the statistics after it
/// read faster than rows scattered by a hash map.
fn merge_window(rows: Vec<FeatureRow>, w: u64) -> Vec<FeatureRow> {
    let mut others: Map<Entity, Box<[f64]>> = Map::default();
    let mut out: Vec<FeatureRow> = Vec::with_capacity(rows.len());
    for r in rows {
        if r.values.first().is_some_and(|v| !v.is_nan()) {
            out.push(r);
            continue;
        }
        match others.entry(r.entity) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                merge_values(e.get_mut(), &r.values);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(r.values);
            }
        }
    }
    if !others.is_empty() {
        for r in out.iter_mut() {
            if let Some(v) = others.remove(&r.entity) {
                merge_values(&mut r.values, &v);
            }
        }
        let mut rest: Vec<(Entity, Box<[f64]>)> = others.into_iter().collect();
        rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.extend(rest.into_iter().map(|(entity, values)| FeatureRow {
            entity,
            window: w,
            values,
        }));
    }
    for r in out.iter_mut() {
        crate::features::fill_cross(&mut r.values);
    }
    out
}

/// Cuts feature rows down to the packet features (the first columns).
pub trait PacketFeaturesOnly<'scope> {
    fn packet_features_only(self) -> Stream<'scope, u64, Vec<FeatureRow>>;
}

impl<'scope> PacketFeaturesOnly<'scope> for Stream<'scope, u64, Vec<FeatureRow>> {
    fn packet_features_only(self) -> Stream<'scope, u64, Vec<FeatureRow>> {
        let n = crate::features::catalogue().len();
        self.unary::<CapacityContainerBuilder<Vec<FeatureRow>>, _, _, _>(
            Pipeline,
            "PacketFeaturesOnly",
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        for r in data.iter_mut() {
                            r.values = r.values[..n.min(r.values.len())].into();
                        }
                        output.session(&cap).give_container(data);
                    });
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_packet_rows_in_order_and_fills_them_from_other_families() {
        let n = crate::features::count();
        let row = |e: &str, first: f64, last: f64| {
            let mut values = vec![f64::NAN; n];
            values[0] = first;
            values[n - 1] = last;
            FeatureRow {
                entity: Entity::Name(e.into()),
                window: 7,
                values: values.into(),
            }
        };
        // Packet rows c, a, b (packets_out set); rows of another family for a
        // and for z, which has no packets.
        let rows = vec![
            row("c", 1.0, f64::NAN),
            row("z", f64::NAN, 9.0),
            row("a", 2.0, f64::NAN),
            row("a", f64::NAN, 5.0),
            row("b", 3.0, f64::NAN),
        ];
        let out = merge_window(rows, 7);
        let names: Vec<String> = out.iter().map(|r| r.entity.to_string()).collect();
        assert_eq!(names, ["c", "a", "b", "z"]);
        let a = &out[1].values;
        assert_eq!((a[0], a[n - 1]), (2.0, 5.0));
        assert!(out[0].values[n - 1].is_nan() && out[3].values[0].is_nan());
        assert!(out.iter().all(|r| r.window == 7));
    }

    #[test]
    fn an_item_is_new_unless_seen_in_the_four_panes_before_the_window() {
        let mut r = RecentItems::<Entity>::default();
        let e = Entity::Name("h".into());
        let other = Entity::Name("o".into());
        r.note(&e, &[1, 2], 10);
        r.note(&e, &[3], 13);
        // Window 14 looks back at panes 10..=13.
        assert_eq!(r.new_count(&e, &[1, 2, 3, 4], 14), 1);
        // Window 15 looks back at panes 11..=14: pane 10's items are new again.
        assert_eq!(r.new_count(&e, &[1, 2, 3, 4], 15), 3);
        assert_eq!(r.new_count(&other, &[1, 2], 14), 2);
        r.forget_before(11);
        assert_eq!(r.by.get(&e).map(|m| m.len()), Some(1));
        r.forget_before(14);
        assert!(
            r.by.is_empty(),
            "an entity with nothing recent is forgotten"
        );
    }
}
