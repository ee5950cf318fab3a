//! Rare TLS client fingerprints: a JA4 that no other host of the network uses.
//!
//! Browsers, system libraries and language runtimes each have a JA4 shared by
//! every host that runs them; a client with a TLS stack of its own (malware, an
//! implant, an attack tool) has one that only its host sends. Whether a
//! fingerprint is rare is a fact about the whole network, so the ClientHellos
//! of all workers meet in one operator (on worker 0: there is one per TLS
//! connection, few beside the packets), which learns the population and judges
//! each hello in event-time order, so the result does not depend on how many
//! workers there are.
//!
//! A hello is rare when the network's population is learned — [`LEARNING_NS`]
//! of event time since the first ClientHello, and at least [`MIN_CLIENTS`]
//! hosts sending ClientHellos — and no host other than its sender has used its
//! JA4. State is bounded: at most [`MAX_PRINTS`] fingerprints, the one seen
//! longest ago forgotten first.

use std::collections::BTreeMap;

use amoskys_schemas::{Entity, pane_of, pane_start_ns};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map as _;

use crate::Map;
use crate::features::{AppObs, EventObs, EventWhat};

/// Event time learned before any fingerprint is judged rare.
pub const LEARNING_NS: i64 = 10 * 60 * 1_000_000_000;
/// Hosts that must have sent ClientHellos before any fingerprint is judged
/// rare: on a network of one or two TLS clients every fingerprint is theirs.
pub const MIN_CLIENTS: usize = 3;
/// Fingerprints remembered.
pub const MAX_PRINTS: usize = 65_536;

/// Who used one fingerprint: up to two hosts (enough to tell "only this one"),
/// and when it was last seen.
#[derive(Clone, Debug)]
struct Users {
    first: Entity,
    second: Option<Entity>,
    last_ns: i64,
}

/// The network's population of JA4 fingerprints.
#[derive(Debug, Default)]
pub struct Population {
    prints: Map<u64, Users>,
    /// Up to [`MIN_CLIENTS`] distinct hosts seen sending ClientHellos.
    clients: Vec<Entity>,
    first_ns: Option<i64>,
    /// Fingerprints forgotten to keep within [`MAX_PRINTS`].
    pub forgotten: u64,
}

impl Population {
    /// Learns that `host` sent a ClientHello with fingerprint `ja4` at `ts_ns`
    /// (hellos are given in event-time order); whether it was rare.
    pub fn hello(&mut self, host: &Entity, ja4: u64, ts_ns: i64) -> bool {
        let first_ns = *self.first_ns.get_or_insert(ts_ns);
        if self.clients.len() < MIN_CLIENTS && !self.clients.contains(host) {
            self.clients.push(host.clone());
        }
        let learned = ts_ns - first_ns >= LEARNING_NS && self.clients.len() >= MIN_CLIENTS;
        if !self.prints.contains_key(&ja4) && self.prints.len() >= MAX_PRINTS {
            self.forget_oldest();
        }
        let users = self.prints.entry(ja4).or_insert_with(|| Users {
            first: host.clone(),
            second: None,
            last_ns: ts_ns,
        });
        users.last_ns = users.last_ns.max(ts_ns);
        if users.second.is_none() && users.first != *host {
            users.second = Some(host.clone());
        }
        learned && users.second.is_none()
    }

    /// Forgets the eighth of the fingerprints seen longest ago (exactly
    /// that many: ties in time are broken by fingerprint).
    fn forget_oldest(&mut self) {
        let mut ages: Vec<(i64, u64)> = self.prints.iter().map(|(k, u)| (u.last_ns, *k)).collect();
        let k = (ages.len() / 8).max(1);
        ages.select_nth_unstable(k - 1);
        for (_, print) in &ages[..k] {
            self.prints.remove(print);
        }
        self.forgotten += k as u64;
    }
}

/// A ClientHello waiting to be judged: its time, sender, fingerprint, whether
/// it named no server or went to a port not usual for TLS, and the timely time
/// it came at.
type Hello = (i64, Entity, u64, bool, u64);

/// The observations of rare fingerprints among application observations: one
/// per rare ClientHello, for its sender, at its time (an [`AppObs`] with
/// `rare_ja4` set), to be windowed with them.
pub trait RareFingerprints<'scope> {
    fn rare_fingerprints(self) -> Stream<'scope, u64, Vec<EventObs>>;
}

impl<'scope> RareFingerprints<'scope> for Stream<'scope, u64, Vec<EventObs>> {
    fn rare_fingerprints(self) -> Stream<'scope, u64, Vec<EventObs>> {
        // Only ClientHellos with a JA4 travel, every one to worker 0: the
        // population is the network's.
        let hellos = self.flat_map(|o: EventObs| {
            let EventWhat::App(a) = &o.what else {
                return None;
            };
            (a.client_side && a.ja4 != 0).then_some(o)
        });
        let pact = Exchange::new(|_: &EventObs| 0u64);
        hellos.unary_frontier::<CapacityContainerBuilder<Vec<EventObs>>, _, _, _>(
            pact,
            "RareFingerprints",
            |_cap, _info| {
                let mut population = Population::default();
                let mut pending: Vec<Hello> = Vec::new();
                let mut caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        for o in data.iter() {
                            let EventWhat::App(a) = &o.what else { continue };
                            // Hellos from before their pane's time are late for
                            // the windows too: judged by nobody, learned from
                            // by nobody, so the order stays event time's.
                            if !a.client_side || a.ja4 == 0 || pane_of(o.ts_ns) < time {
                                continue;
                            }
                            let traits = a.no_sni || a.nonstandard_port;
                            pending.push((o.ts_ns, o.entity.clone(), a.ja4, traits, time));
                            caps.entry(time)
                                .or_insert_with(|| cap.delayed(&time, output.output_index()));
                        }
                    });
                    // Every hello before the frontier's pane is in: judge them in
                    // event-time order.
                    let complete = frontier
                        .frontier()
                        .first()
                        .map_or(i64::MAX, |&f| pane_start_ns(f));
                    if !pending.iter().any(|h| h.0 < complete) {
                        return;
                    }
                    let (mut now, rest): (Vec<Hello>, Vec<Hello>) =
                        pending.drain(..).partition(|h| h.0 < complete);
                    pending = rest;
                    now.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
                    let mut rare: BTreeMap<u64, Vec<EventObs>> = BTreeMap::new();
                    for (ts_ns, host, ja4, traits, time) in now {
                        if population.hello(&host, ja4, ts_ns) {
                            rare.entry(time).or_default().push(EventObs {
                                entity: host,
                                ts_ns,
                                what: EventWhat::App(AppObs {
                                    protocol: "tls".to_string(),
                                    rare_ja4: true,
                                    rare_ja4_traits: traits,
                                    ..AppObs::default()
                                }),
                            });
                        }
                    }
                    for (time, mut obs) in rare {
                        output.session(&caps[&time]).give_container(&mut obs);
                    }
                    caps.retain(|t, _| pending.iter().any(|h| h.4 == *t));
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amoskys_schemas::Addr;

    fn host(i: u8) -> Entity {
        Entity::Ip(Addr::v4([10, 0, 0, i]))
    }

    #[test]
    fn a_fingerprint_of_one_host_is_rare_once_the_network_is_learned() {
        let mut p = Population::default();
        let min = 60 * 1_000_000_000;
        // Learning: three hosts share fingerprint 1; host 4 alone uses 2.
        for i in 1..=3 {
            assert!(!p.hello(&host(i), 1, i64::from(i) * min));
        }
        assert!(!p.hello(&host(4), 2, 5 * min), "still learning");
        // Learned: 2 is still host 4's alone; 1 is shared; 3 is new and alone.
        assert!(p.hello(&host(4), 2, 11 * min));
        assert!(!p.hello(&host(5), 1, 11 * min));
        assert!(p.hello(&host(5), 3, 12 * min));
        // Once another host uses 3, it is rare for neither.
        assert!(!p.hello(&host(6), 3, 13 * min));
        assert!(!p.hello(&host(5), 3, 14 * min));
    }

    #[test]
    fn too_few_clients_make_nothing_rare() {
        let mut p = Population::default();
        let min = 60 * 1_000_000_000;
        for t in 0..30 {
            assert!(!p.hello(&host(1), 7 + t as u64 % 2, t * min));
            assert!(!p.hello(&host(2), 9, t * min));
        }
    }

    #[test]
    fn the_population_is_bounded_and_forgets_the_oldest() {
        let mut p = Population::default();
        for k in 0..(MAX_PRINTS as u64 + 10) {
            p.hello(&host((k % 5) as u8), k, k as i64);
        }
        assert!(p.prints.len() <= MAX_PRINTS);
        assert!(p.forgotten > 0);
        // The newest are kept, the oldest gone.
        assert!(p.prints.contains_key(&(MAX_PRINTS as u64 + 9)));
        assert!(!p.prints.contains_key(&0));
        // Fingerprints all seen at one time: an eighth goes, not all.
        let mut p = Population::default();
        for k in 0..=(MAX_PRINTS as u64) {
            p.hello(&host(1), k, 0);
        }
        assert_eq!(p.forgotten, (MAX_PRINTS / 8) as u64);
        assert_eq!(p.prints.len(), MAX_PRINTS - MAX_PRINTS / 8 + 1);
    }
}
