//! Hopping windows (60 s, every 30 s) of per-entity features.
//!
//! Each observation updates the accumulator of its entity in its one 30 s pane;
//! window `k` is pane `k` followed by pane `k + 1`, merged when both are complete
//! (the frontier has passed pane `k + 1`). So a packet is counted in two windows
//! while being accumulated once, and a pane is dropped after its second window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{Addr, Entity, FeatureRow, Packet, pane_of};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::Map;
pub use crate::features::Obs;
use crate::features::{PaneAcc, compute_all};

/// Counters the window operator keeps.
#[derive(Debug, Default)]
pub struct WindowCounters {
    /// Observations (two per packet) the window operators have taken in.
    pub obs_in: AtomicU64,
    /// Feature rows emitted.
    pub rows: AtomicU64,
    /// Observations that arrived for a pane whose windows were already closed.
    pub late: AtomicU64,
}

struct Pane {
    cap: Capability<u64>,
    /// Whether the earlier window containing this pane (`pane - 1`) was emitted.
    first_window_done: bool,
    /// Boxed: an accumulator is several hundred bytes, and a map of them would move
    /// (and fault in) megabytes each time it grows, for every pane.
    entities: Map<Addr, Box<PaneAcc>>,
}

/// Window state of one worker: panes by index.
#[derive(Default)]
pub struct PaneStore {
    panes: BTreeMap<u64, Pane>,
    /// Entities of the last pane emitted: the next pane's map starts that large.
    last_entities: usize,
}

impl PaneStore {
    /// Emits every window whose two panes are before `frontier` (all, if `None`).
    fn emit(
        &mut self,
        frontier: Option<u64>,
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
            let row = |e: &Addr, acc: &PaneAcc| FeatureRow {
                entity: Entity::Ip(*e),
                window: w,
                values: compute_all(acc),
            };
            let mut rows = Vec::new();
            if let Some(a) = a.as_mut() {
                for (e, acc) in a.entities.iter_mut() {
                    if let Some(later) = b.and_then(|p| p.entities.get(e)) {
                        acc.append(later);
                    }
                    rows.push(row(e, acc));
                }
            }
            if let Some(b) = b {
                let seen = |e: &Addr| a.as_ref().is_some_and(|a| a.entities.contains_key(e));
                rows.extend(
                    b.entities
                        .iter()
                        .filter(|(e, _)| !seen(e))
                        .map(|(e, acc)| row(e, acc)),
                );
            }
            if let Some(cap) = cap {
                give(&cap, rows);
            }
            if let Some(next) = self.panes.get_mut(&(w + 1)) {
                next.first_window_done = true;
            }
        }
    }
}

/// Turns packets into per-entity feature rows, one per entity per window.
pub trait Featurize<'scope> {
    fn featurize(self, counters: Arc<WindowCounters>) -> Stream<'scope, u64, Vec<FeatureRow>>;
}

impl<'scope> Featurize<'scope> for Stream<'scope, u64, Vec<Packet>> {
    fn featurize(self, counters: Arc<WindowCounters>) -> Stream<'scope, u64, Vec<FeatureRow>> {
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
        let pact = Exchange::new(|o: &Obs| o.entity.route_hash());
        obs.unary_frontier(pact, "HopWindow(60s/30s)", move |_cap, _info| {
            let mut store = PaneStore::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    let out_idx = output.output_index();
                    let mut late = 0u64;
                    // Observations come in runs of one pane: look the pane up once a run.
                    for run in data.chunk_by(|a, b| pane_of(a.ts_ns) == pane_of(b.ts_ns)) {
                        let pane = pane_of(run[0].ts_ns);
                        if pane < time {
                            late += run.len() as u64;
                            continue;
                        }
                        let slot = store.panes.entry(pane).or_insert_with(|| Pane {
                            cap: cap.delayed(&pane, out_idx),
                            first_window_done: false,
                            entities: Map::with_capacity_and_hasher(
                                store.last_entities,
                                Default::default(),
                            ),
                        });
                        for o in run {
                            slot.entities.entry(o.entity).or_default().observe(o);
                        }
                    }
                    if late > 0 {
                        counters.late.fetch_add(late, Ordering::Relaxed);
                    }
                    counters
                        .obs_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                });
                let f = frontier.frontier().first().copied();
                let mut emitted = 0u64;
                store.emit(f, |cap, mut rows| {
                    emitted += rows.len() as u64;
                    output.session(cap).give_container(&mut rows);
                });
                if emitted > 0 {
                    counters.rows.fetch_add(emitted, Ordering::Relaxed);
                }
            }
        })
    }
}
