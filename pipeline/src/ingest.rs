//! Worker 0's loop: moves batches from the sources' channels into the
//! dataflow, keeps the watermark, and holds back while too much is unprocessed.
//!
//! The watermark is the slowest source's newest event time less the lateness,
//! over the sources that count (see [`Clock`]): a recorded source counts while
//! it is open; a live one while it has been heard from within `idle`, and
//! before it is first heard from it holds everything back for `idle`, as if it
//! might still send the oldest records. When every live source is quiet, each
//! one's time runs on with the wall clock since it was last heard, so the last
//! windows close. Packets move the watermark one by one, so that which packets
//! are late does not depend on how they were batched; they go in as runs of
//! one pane, at that pane. Records go in at the current watermark (they are
//! written whatever their lateness; the windows count the late ones).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amoskys_operators::FlowCounters;
use amoskys_operators::WindowCounters;
use amoskys_schemas::{EventRow, Packet, pane_of};
use amoskys_sources::Clock;
use amoskys_sources::wal::Batch;
use timely::dataflow::operators::ActivateCapability;
use tokio::sync::mpsc;

use crate::graph::{Inputs, PacketInput};

/// How far past the watermark a logged record's pane is noted (10 minutes).
const FUTURE_PANES: u64 = 20;

/// Counters of what went in, shared between worker 0 and the metrics.
#[derive(Default)]
pub struct Ingested {
    pub events: AtomicU64,
    pub packets: AtomicU64,
    /// Records older than the watermark when they arrived.
    pub late: AtomicU64,
    /// Packets older than the watermark: counted and left out.
    pub late_packets: AtomicU64,
    /// The input's watermark, as a pane.
    pub watermark_pane: AtomicU64,
}

/// The receiving end of one source's channel.
pub enum Rx {
    Records(mpsc::Receiver<Batch>),
    Packets(mpsc::Receiver<Vec<Packet>>),
}

/// One source, as the driver sees it.
pub struct Input {
    pub name: Arc<str>,
    pub rx: Rx,
    pub clock: Clock,
    max_ts: i64,
    last_seen: Instant,
    open: bool,
}

impl Input {
    pub fn new(name: &str, rx: Rx, clock: Clock) -> Input {
        Input {
            name: name.into(),
            rx,
            clock,
            max_ts: i64::MIN,
            last_seen: Instant::now(),
            open: true,
        }
    }
}

/// How far one source lets the watermark go.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Hold {
    /// Not at all: it may still send the oldest data.
    All,
    /// To its newest event time.
    Active(i64),
    /// Quiet: to its newest event time plus the wall time since; counts only
    /// when no source is active.
    Quiet(i64),
    /// It does not count.
    Nothing,
}

impl Input {
    fn hold(&self, idle: Duration) -> Hold {
        let seen = self.max_ts > i64::MIN;
        match self.clock {
            Clock::Recorded => match (self.open, seen) {
                (false, _) => Hold::Nothing,
                (true, false) => Hold::All,
                (true, true) => Hold::Active(self.max_ts),
            },
            Clock::Live | Clock::Received => {
                let quiet_for = self.last_seen.elapsed();
                match (seen, quiet_for < idle) {
                    (false, true) if self.open => Hold::All,
                    (false, _) => Hold::Nothing,
                    (true, true) => Hold::Active(self.max_ts),
                    (true, false) => {
                        Hold::Quiet(self.max_ts.saturating_add(
                            i64::try_from(quiet_for.as_nanos()).unwrap_or(i64::MAX),
                        ))
                    }
                }
            }
        }
    }
}

/// The watermark's event time the holds allow: `None` when something holds all.
fn allowed(holds: impl Iterator<Item = Hold>) -> Option<i64> {
    let (mut active, mut quiet) = (None::<i64>, None::<i64>);
    for h in holds {
        match h {
            Hold::All => return None,
            Hold::Active(t) => active = Some(active.map_or(t, |a| a.min(t))),
            Hold::Quiet(t) => quiet = Some(quiet.map_or(t, |q| q.min(t))),
            Hold::Nothing => {}
        }
    }
    active.or(quiet)
}

pub struct Driver<'a> {
    pub inputs: Vec<Input>,
    pub lateness_ns: i64,
    pub idle: Duration,
    pub max_in_flight: u64,
    pub ingested: &'a Ingested,
    /// Events handed to the events sink.
    pub delivered: &'a AtomicU64,
    pub flows: &'a FlowCounters,
    pub windows: &'a WindowCounters,
    /// How often to look at the indicator file again.
    pub intel_every: Duration,
    pub packets_sent: u64,
    /// Where the logged records went, by pane (the long-running job with logs).
    pub durable: Option<Arc<crate::durable::Durable>>,
}

impl Driver<'_> {
    /// Whether the dataflow holds more than `max_in_flight` records or packets.
    fn too_full(&self) -> bool {
        let events = self
            .ingested
            .events
            .load(Ordering::Relaxed)
            .saturating_sub(self.delivered.load(Ordering::Relaxed));
        let f = self
            .packets_sent
            .saturating_sub(self.flows.packets_in.load(Ordering::Relaxed));
        let w = (2 * self.packets_sent).saturating_sub(self.windows.obs_in.load(Ordering::Relaxed));
        events > self.max_in_flight || f > self.max_in_flight || w > 2 * self.max_in_flight
    }

    /// Runs until every source's channel is closed and drained.
    pub fn drive(&mut self, worker: &mut timely::worker::Worker, io: Inputs) {
        let Inputs {
            records: mut rec_in,
            records_cap: mut rec_cap,
            packets: mut pkt_in,
            packets_cap: mut pkt_cap,
            mut intel,
        } = io;
        // Recorded sources are read as fast as they come: wait little.
        let park = if self.inputs.iter().any(|i| i.clock == Clock::Recorded) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        if let Some(feed) = &mut intel {
            feed.poll(Duration::ZERO);
        }
        while self.inputs.iter().any(|i| i.open) {
            // While the dataflow holds too much, leave the sources' channels full:
            // TCP readers, MQTT clients, pollers and file readers wait; UDP and
            // live captures count what they drop.
            if self.too_full() {
                worker.step_or_park(Some(Duration::from_millis(1)));
                continue;
            }
            let mut got = false;
            for i in 0..self.inputs.len() {
                if !self.inputs[i].open {
                    continue;
                }
                match &mut self.inputs[i].rx {
                    Rx::Records(rx) => match rx.try_recv() {
                        Ok(batch) => {
                            got = true;
                            self.give_records(i, &mut rec_in, &rec_cap, batch);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => self.inputs[i].open = false,
                    },
                    Rx::Packets(rx) => match rx.try_recv() {
                        Ok(batch) => {
                            got = true;
                            self.give_packets(i, &mut pkt_in, &mut pkt_cap, batch);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => self.inputs[i].open = false,
                    },
                }
            }
            self.advance_watermark(&mut rec_cap, &mut pkt_cap);
            if let Some(feed) = &mut intel {
                feed.poll(self.intel_every);
                feed.advance(*rec_cap.time());
            }
            if got {
                worker.step();
            } else {
                worker.step_or_park(Some(park));
            }
        }
        self.flows
            .final_pane
            .store(*pkt_cap.time(), Ordering::SeqCst);
    }

    fn give_records(
        &mut self,
        i: usize,
        rec_in: &mut crate::graph::RecordInput,
        cap: &ActivateCapability<u64>,
        batch: Batch,
    ) {
        let inp = &mut self.inputs[i];
        let first = batch.first_offset;
        inp.last_seen = Instant::now();
        let mut rows = Vec::with_capacity(batch.records.len());
        let mut behind = 0;
        let mut seen = Vec::new();
        for (k, mut r) in batch.records.into_iter().enumerate() {
            if inp.clock == Clock::Received {
                r.use_received_time();
            }
            let ts = r.ts_ns();
            inp.max_ts = inp.max_ts.max(ts);
            if let (Some(f), Some(_)) = (first, &self.durable) {
                // A record timed far ahead (a clock hours fast) is noted no
                // further than FUTURE_PANES past the watermark, so that it
                // does not hold its log for hours.
                let pane = pane_of(ts.max(0)).min(cap.time().saturating_add(FUTURE_PANES));
                seen.push((pane, f + k as u64));
            }
            if pane_of(ts.max(0)) < *cap.time() {
                behind += 1;
            }
            rows.push(EventRow {
                source: inp.name.clone(),
                record: r,
                log_offset: first.map(|f| f + k as u64),
            });
        }
        if let Some(d) = &self.durable {
            d.note(&inp.name, &seen);
        }
        self.ingested
            .events
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.ingested.late.fetch_add(behind, Ordering::Relaxed);
        rec_in.activate().session(cap).give_container(&mut rows);
    }

    /// Packets go in as runs of one pane, at that pane. Each packet newer than
    /// its source's newest moves the watermark at once; those behind it are
    /// late: counted, and left out.
    fn give_packets(
        &mut self,
        i: usize,
        pkt_in: &mut PacketInput,
        cap: &mut ActivateCapability<u64>,
        batch: Vec<Packet>,
    ) {
        let idle = self.idle;
        // What the other sources allow; this one is active now, so quiet ones
        // do not count.
        let holds: Vec<Hold> = (self.inputs.iter().enumerate())
            .filter(|(k, _)| *k != i)
            .map(|(_, inp)| inp.hold(idle))
            .filter(|h| !matches!(h, Hold::Quiet(_)))
            .collect();
        let held = holds.contains(&Hold::All);
        let others = allowed(holds.into_iter());
        let lateness = self.lateness_ns;
        let inp = &mut self.inputs[i];
        inp.last_seen = Instant::now();
        let mut sent = 0u64;
        let mut late = 0u64;
        let mut run: Vec<Packet> = Vec::new();
        let mut run_pane = None;
        let mut flush = |run: &mut Vec<Packet>, pane: u64, cap: &ActivateCapability<u64>| {
            sent += run.len() as u64;
            pkt_in
                .activate()
                .session(&cap.delayed(&pane))
                .give_container(run);
            run.clear();
        };
        for p in batch {
            if p.ts_ns > inp.max_ts {
                inp.max_ts = p.ts_ns;
                if !held {
                    let t = others.map_or(p.ts_ns, |o| o.min(p.ts_ns));
                    let wm = pane_of(t.saturating_sub(lateness).max(0));
                    if wm > *cap.time() {
                        if let Some(rp) = run_pane.take() {
                            flush(&mut run, rp, cap);
                        }
                        cap.downgrade(&wm);
                    }
                }
            }
            let pane = pane_of(p.ts_ns.max(0));
            if pane < *cap.time() {
                late += 1;
                continue;
            }
            if run_pane != Some(pane) {
                if let Some(rp) = run_pane {
                    flush(&mut run, rp, cap);
                }
                run_pane = Some(pane);
            }
            run.push(p);
        }
        if let Some(rp) = run_pane {
            flush(&mut run, rp, cap);
        }
        self.packets_sent += sent;
        self.ingested
            .packets
            .store(self.packets_sent, Ordering::Relaxed);
        self.ingested
            .late_packets
            .fetch_add(late, Ordering::Relaxed);
    }

    fn advance_watermark(
        &mut self,
        rec_cap: &mut ActivateCapability<u64>,
        pkt_cap: &mut ActivateCapability<u64>,
    ) {
        let idle = self.idle;
        let Some(t) = allowed(self.inputs.iter().map(|i| i.hold(idle))) else {
            return;
        };
        let wm = pane_of(t.saturating_sub(self.lateness_ns).max(0));
        if wm > *rec_cap.time() {
            rec_cap.downgrade(&wm);
            self.ingested.watermark_pane.store(wm, Ordering::Relaxed);
        }
        if wm > *pkt_cap.time() {
            pkt_cap.downgrade(&wm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_not_heard_from_holds_everything() {
        assert_eq!(allowed([Hold::Active(5), Hold::All].into_iter()), None);
    }

    #[test]
    fn the_slowest_active_source_sets_the_watermark_and_quiet_ones_count_only_alone() {
        let h = [
            Hold::Active(50),
            Hold::Quiet(10),
            Hold::Active(20),
            Hold::Nothing,
        ];
        assert_eq!(allowed(h.into_iter()), Some(20));
        assert_eq!(
            allowed([Hold::Quiet(30), Hold::Quiet(10)].into_iter()),
            Some(10)
        );
        assert_eq!(allowed([Hold::Nothing].into_iter()), None);
    }

    #[test]
    fn a_recorded_source_holds_until_it_is_heard_and_stops_holding_when_it_ends() {
        let (_tx, rx) = mpsc::channel(1);
        let mut i = Input::new("r", Rx::Packets(rx), Clock::Recorded);
        let long = Duration::from_secs(3600);
        assert_eq!(
            i.hold(Duration::ZERO),
            Hold::All,
            "no wall clock for recorded data"
        );
        i.max_ts = 7;
        assert_eq!(i.hold(Duration::ZERO), Hold::Active(7));
        i.open = false;
        assert_eq!(i.hold(long), Hold::Nothing);
    }

    #[test]
    fn a_live_source_holds_for_idle_then_goes_quiet() {
        let (_tx, rx) = mpsc::channel(1);
        let mut i = Input::new("l", Rx::Records(rx), Clock::Live);
        let long = Duration::from_secs(3600);
        assert_eq!(i.hold(long), Hold::All);
        assert_eq!(i.hold(Duration::ZERO), Hold::Nothing);
        i.max_ts = 1_000;
        assert_eq!(i.hold(long), Hold::Active(1_000));
        match i.hold(Duration::ZERO) {
            Hold::Quiet(t) => assert!(t >= 1_000),
            h => panic!("{h:?}"),
        }
    }
}
