//! Bidirectional flow assembly.
//!
//! (Over 600 lines with its tests; the flow table and its operator are about
//! 570.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amoskys_schemas::{
    Addr, EndReason, Entity, FlowRecord, Packet, Proto, TcpFlags, pane_start_ns,
};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;

use crate::app::AppState;
use crate::community_id::{community_id, ordered};
use crate::features::{EventObs, EventWhat};
use crate::{Map, Moments};

/// Flows per worker whose payload is being read at once; past it a new flow's
/// payload is not read (counted in `FlowCounters::app_skipped`). With
/// `application_bytes` per side this bounds the bytes held.
pub const MAX_APP_FLOWS: usize = 16_384;

/// Flow timeouts and the table's size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// A flow with no packet for this long ends (`idle_timeout`).
    pub idle_ns: i64,
    /// A flow older than this is cut into a new record (`active_timeout`).
    pub active_ns: i64,
    /// After FIN from both sides or a RST, late segments (the last ACK, retransmitted
    /// FINs) still join the flow for this long.
    pub closed_ns: i64,
    /// Flows held at once by one worker; past it the longest-idle are expired early.
    pub max_flows: usize,
    /// Community ID seed.
    pub community_id_seed: u16,
    /// Payload bytes of each direction read for application metadata (0: off).
    pub application_bytes: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            idle_ns: 120 * 1_000_000_000,
            active_ns: 1800 * 1_000_000_000,
            closed_ns: 5 * 1_000_000_000,
            max_flows: 1_000_000,
            community_id_seed: 0,
            application_bytes: 8192,
        }
    }
}

/// The direction-free key of a flow: its endpoints in Community ID order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub a: Addr,
    pub pa: u16,
    pub b: Addr,
    pub pb: u16,
    pub proto: u8,
}

impl FlowKey {
    pub fn of(p: &Packet) -> FlowKey {
        let (a, pa, b, pb, _) = ordered(p.proto, p.src, p.sport, p.dst, p.dport);
        FlowKey {
            a,
            pa,
            b,
            pb,
            proto: p.proto,
        }
    }

    /// A hash that is the same on every worker and run, to route a flow's packets
    /// (both directions, ICMP requests and replies alike) to one worker.
    pub fn route_hash(&self) -> u64 {
        let ports = (u64::from(self.pa) << 24) | (u64::from(self.pb) << 8) | u64::from(self.proto);
        self.a.route_hash().rotate_left(17)
            ^ self.b.route_hash()
            ^ ports.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Dir {
    packets: u64,
    bytes: u64,
    flags: u8,
    size: Moments,
    iat: Moments,
    last_ns: Option<i64>,
}

impl Dir {
    #[inline]
    fn add(&mut self, p: &Packet) {
        self.packets += 1;
        self.bytes += u64::from(p.ip_len);
        self.flags |= p.tcp_flags;
        self.size.push(f64::from(p.ip_len));
        if let Some(l) = self.last_ns {
            self.iat.push((p.ts_ns - l).max(0) as f64 / 1e9);
        }
        self.last_ns = Some(p.ts_ns);
    }
}

/// What a packet did to the reading of its flow's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    Same,
    /// The flow's payload started being read.
    Started,
    /// The flow's payload will not be read: too many flows were being read.
    Skipped,
}

#[derive(Debug)]
struct FlowState {
    src: Addr,
    sport: u16,
    dst: Addr,
    dport: u16,
    first_ns: i64,
    last_ns: i64,
    fwd: Dir,
    bwd: Dir,
    fragments: u64,
    fin_fwd: bool,
    fin_bwd: bool,
    /// When the flow closed (FIN both ways or RST), and how.
    closed: Option<(i64, EndReason)>,
    /// Each side's SYN sequence number, until its payload is read.
    syn: [Option<u32>; 2],
    /// What its payload says, once it has carried some.
    app: Option<Box<AppState>>,
    /// Its payload went unread: too many flows were being read.
    app_skipped: bool,
}

impl FlowState {
    fn open(p: &Packet) -> FlowState {
        // A SYN-ACK opening a record means we missed the SYN: its receiver originated.
        let reversed = p.has_flag(TcpFlags::SYN) && p.has_flag(TcpFlags::ACK);
        let (src, sport, dst, dport) = if reversed {
            (p.dst, p.dport, p.src, p.sport)
        } else {
            (p.src, p.sport, p.dst, p.dport)
        };
        FlowState {
            src,
            sport,
            dst,
            dport,
            first_ns: p.ts_ns,
            last_ns: p.ts_ns,
            fwd: Dir::default(),
            bwd: Dir::default(),
            fragments: 0,
            fin_fwd: false,
            fin_bwd: false,
            closed: None,
            syn: [None; 2],
            app: None,
            app_skipped: false,
        }
    }

    /// Reads the payload of `p` (from the originator when `fwd`), up to
    /// `limit` bytes per side; `may_start` says whether a flow not yet read
    /// may start being read.
    fn read_payload(
        &mut self,
        p: &Packet,
        fwd: bool,
        limit: usize,
        may_start: bool,
        obs: &mut Vec<EventObs>,
    ) -> Reading {
        if limit == 0 || p.proto != Proto::TCP {
            return Reading::Same;
        }
        if p.has_flag(TcpFlags::SYN) {
            match &mut self.app {
                Some(a) => a.syn(fwd, p.tcp_seq),
                None => self.syn[usize::from(!fwd)] = Some(p.tcp_seq),
            }
        }
        if p.payload.is_empty() || self.app_skipped {
            return Reading::Same;
        }
        let started = self.app.is_none();
        if started {
            if !may_start {
                self.app_skipped = true;
                return Reading::Skipped;
            }
            let mut a = Box::<AppState>::default();
            for (side, seq) in self.syn.iter().enumerate() {
                if let Some(s) = seq {
                    a.syn(side == 0, *s);
                }
            }
            self.app = Some(a);
        }
        if let Some(a) = &mut self.app
            && !a.finished()
        {
            a.segment(fwd, p.tcp_seq, &p.payload, limit);
            let (opener, ts_ns) = (self.src, p.ts_ns);
            a.take_read(self.dport, &mut |o| {
                obs.push(EventObs {
                    entity: Entity::Ip(opener),
                    ts_ns,
                    what: EventWhat::App(o),
                })
            });
        }
        if started {
            Reading::Started
        } else {
            Reading::Same
        }
    }

    /// Adds `p`, reading its payload (see [`FlowState::read_payload`]); what
    /// reading a side said goes to `obs`, for the host that opened the flow.
    fn add(
        &mut self,
        p: &Packet,
        limit: usize,
        may_start: bool,
        obs: &mut Vec<EventObs>,
    ) -> Reading {
        // Ports tell the sides apart (even on one address); ICMP types do not.
        let fwd = match p.proto {
            Proto::TCP | Proto::UDP | 132 => p.src == self.src && p.sport == self.sport,
            _ => p.src == self.src,
        };
        if fwd {
            self.fwd.add(p)
        } else {
            self.bwd.add(p)
        }
        self.first_ns = self.first_ns.min(p.ts_ns);
        self.last_ns = self.last_ns.max(p.ts_ns);
        self.fragments += u64::from(p.fragment);
        if p.is_tcp() && self.closed.is_none() {
            if p.tcp_flags & TcpFlags::RST != 0 {
                self.closed = Some((p.ts_ns, EndReason::Rst));
            } else if p.tcp_flags & TcpFlags::FIN != 0 {
                if fwd {
                    self.fin_fwd = true
                } else {
                    self.fin_bwd = true
                }
                if self.fin_fwd && self.fin_bwd {
                    self.closed = Some((p.ts_ns, EndReason::Fin));
                }
            }
        }
        self.read_payload(p, fwd, limit, may_start, obs)
    }

    /// Whether packet `p` starts a new record instead of joining this one, and why
    /// this one ends.
    fn ends_before(&self, p: &Packet, cfg: &FlowConfig) -> Option<EndReason> {
        if let Some((at, why)) = self.closed {
            let new_syn = p.has_flag(TcpFlags::SYN) && !p.has_flag(TcpFlags::ACK);
            if new_syn || p.ts_ns - at > cfg.closed_ns {
                return Some(why);
            }
            return None;
        }
        if p.ts_ns - self.last_ns > cfg.idle_ns {
            return Some(EndReason::Idle);
        }
        if p.ts_ns - self.first_ns > cfg.active_ns {
            return Some(EndReason::Active);
        }
        None
    }

    /// Why the flow has ended by `now`, if it has.
    fn expired_at(&self, now: i64, cfg: &FlowConfig) -> Option<EndReason> {
        match self.closed {
            Some((at, why)) => (now - at > cfg.closed_ns).then_some(why),
            None => (now - self.last_ns > cfg.idle_ns).then_some(EndReason::Idle),
        }
    }

    fn record(&self, key: &FlowKey, seed: u16, end_reason: EndReason) -> FlowRecord {
        FlowRecord {
            community_id: community_id(seed, key.proto, self.src, self.sport, self.dst, self.dport),
            proto: key.proto,
            src: self.src,
            sport: self.sport,
            dst: self.dst,
            dport: self.dport,
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            packets_fwd: self.fwd.packets,
            packets_bwd: self.bwd.packets,
            bytes_fwd: self.fwd.bytes,
            bytes_bwd: self.bwd.bytes,
            tcp_flags_fwd: self.fwd.flags,
            tcp_flags_bwd: self.bwd.flags,
            fragments: self.fragments,
            size_fwd: self.fwd.size.summary(),
            size_bwd: self.bwd.size.summary(),
            iat_fwd: self.fwd.iat.summary(),
            iat_bwd: self.bwd.iat.summary(),
            end_reason,
            app: self.app.as_ref().and_then(|a| a.info()).map(Box::new),
        }
    }
}

/// Counters a flow table keeps, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct FlowCounters {
    /// Packets the flow tables have taken in.
    pub packets_in: AtomicU64,
    pub flows: AtomicU64,
    /// Flows expired early because the table was full.
    pub evicted: AtomicU64,
    /// Flows whose payload was not read: [`MAX_APP_FLOWS`] were being read.
    pub app_skipped: AtomicU64,
    /// Set by whoever feeds the dataflow before it closes its input: the last
    /// watermark (a pane). When the input ends, flows that were idle by then end as
    /// `idle_timeout` whether or not this worker saw that frontier, and only the
    /// rest as `end_of_input` — so the records do not depend on scheduling.
    pub final_pane: AtomicU64,
}

/// The flow table: packets in (in capture order per flow), finished flows out.
pub struct FlowAssembler {
    cfg: FlowConfig,
    flows: Map<FlowKey, FlowState>,
    evicted: u64,
    /// Flows held whose payload is being read (at most [`MAX_APP_FLOWS`]).
    app_flows: usize,
    /// Flows whose payload was not read because `app_flows` was at its limit.
    app_skipped: u64,
    /// What reading flows' sides said, for the hosts that opened them, until
    /// taken.
    app_obs: Vec<EventObs>,
}

impl FlowAssembler {
    pub fn new(cfg: FlowConfig) -> Self {
        let cap = cfg.max_flows.min(1 << 16);
        FlowAssembler {
            cfg,
            flows: Map::with_capacity_and_hasher(cap, Default::default()),
            evicted: 0,
            app_flows: 0,
            app_skipped: 0,
            app_obs: Vec::new(),
        }
    }

    /// What reading flows' sides said since the last call, for the hosts that
    /// opened them (observations for the `app` feature family).
    pub fn take_app_obs(&mut self) -> Vec<EventObs> {
        std::mem::take(&mut self.app_obs)
    }

    /// Flows whose payload was not read because too many were being read.
    pub fn app_skipped(&self) -> u64 {
        self.app_skipped
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Flows expired early so far because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Adds one packet; finished flows it reveals are pushed to `out`.
    pub fn observe(&mut self, p: &Packet, out: &mut Vec<FlowRecord>) {
        let key = FlowKey::of(p);
        let limit = self.cfg.application_bytes;
        let may_start = self.app_flows < MAX_APP_FLOWS;
        let reading = if let Some(st) = self.flows.get_mut(&key) {
            if let Some(why) = st.ends_before(p, &self.cfg) {
                out.push(st.record(&key, self.cfg.community_id_seed, why));
                self.app_flows -= usize::from(st.app.is_some());
                *st = FlowState::open(p);
            }
            st.add(p, limit, may_start, &mut self.app_obs)
        } else {
            if self.flows.len() >= self.cfg.max_flows.max(1) {
                self.evict(out);
            }
            let mut st = FlowState::open(p);
            let reading = st.add(p, limit, may_start, &mut self.app_obs);
            self.flows.insert(key, st);
            reading
        };
        match reading {
            Reading::Started => self.app_flows += 1,
            Reading::Skipped => self.app_skipped += 1,
            Reading::Same => {}
        }
    }

    /// Expires the longest-idle sixteenth of the table (at least one flow).
    fn evict(&mut self, out: &mut Vec<FlowRecord>) {
        let n = (self.flows.len() / 16).max(1);
        let mut ages: Vec<(i64, FlowKey)> =
            self.flows.iter().map(|(k, s)| (s.last_ns, *k)).collect();
        ages.select_nth_unstable(n - 1);
        ages.truncate(n);
        for (_, k) in ages {
            if let Some(st) = self.flows.remove(&k) {
                out.push(st.record(&k, self.cfg.community_id_seed, EndReason::Evicted));
                self.app_flows -= usize::from(st.app.is_some());
                self.evicted += 1;
            }
        }
    }

    /// Emits every flow that has ended by event time `now_ns`.
    pub fn expire(&mut self, now_ns: i64, out: &mut Vec<FlowRecord>) {
        let (cfg, seed) = (self.cfg, self.cfg.community_id_seed);
        let app_flows = &mut self.app_flows;
        self.flows
            .retain(|k, st| match st.expired_at(now_ns, &cfg) {
                Some(why) => {
                    out.push(st.record(k, seed, why));
                    *app_flows -= usize::from(st.app.is_some());
                    false
                }
                None => true,
            });
    }

    /// Emits every flow still held (the input has ended).
    pub fn flush(&mut self, out: &mut Vec<FlowRecord>) {
        let seed = self.cfg.community_id_seed;
        for (k, st) in self.flows.drain() {
            let why = st.closed.map_or(EndReason::EndOfInput, |(_, w)| w);
            out.push(st.record(&k, seed, why));
        }
        self.app_flows = 0;
    }
}

/// Assembles packets into flows. Packets are routed to workers by their flow, so a
/// flow's packets meet in one table in input order.
pub trait AssembleFlows<'scope> {
    /// Finished flows, and what reading their application layer said about
    /// the hosts that opened them (observations for the event windows).
    fn assemble_flows(
        self,
        cfg: FlowConfig,
        counters: Arc<FlowCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FlowRecord>>,
        Stream<'scope, u64, Vec<EventObs>>,
    );
}

impl<'scope> AssembleFlows<'scope> for Stream<'scope, u64, Vec<Packet>> {
    fn assemble_flows(
        self,
        cfg: FlowConfig,
        counters: Arc<FlowCounters>,
    ) -> (
        Stream<'scope, u64, Vec<FlowRecord>>,
        Stream<'scope, u64, Vec<EventObs>>,
    ) {
        use timely::dataflow::operators::generic::OutputBuilder;
        use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
        let pact = Exchange::new(|p: &Packet| FlowKey::of(p).route_hash());
        let mut builder = OperatorBuilder::new("AssembleFlows".to_owned(), self.scope());
        let mut input = builder.new_input(self, pact);
        let (flows_out, flows) = builder.new_output();
        let (obs_out, obs) = builder.new_output();
        let mut flows_out = OutputBuilder::from(flows_out);
        let mut obs_out = OutputBuilder::from(obs_out);
        builder.build(move |mut caps| {
            // Flows are given at the frontier's pane; observations at their
            // packets' (the second capability is dropped: inputs carry theirs).
            let mut cap = Some(caps.remove(0));
            drop(caps);
            let mut table = FlowAssembler::new(cfg);
            let mut swept_to = 0u64;
            let mut out: Vec<FlowRecord> = Vec::new();
            let mut reported_skips = 0u64;
            let mut reported_evictions = 0u64;
            move |frontiers| {
                let frontier = &frontiers[0];
                let mut flows_h = flows_out.activate();
                let mut obs_h = obs_out.activate();
                input.for_each(|time, data| {
                    for p in data.iter() {
                        table.observe(p, &mut out);
                    }
                    let mut seen = table.take_app_obs();
                    if !seen.is_empty() {
                        obs_h.session(&time).give_container(&mut seen);
                    }
                    counters
                        .packets_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                });
                match frontier.frontier().first().copied() {
                    Some(f) => {
                        // Every pane before `f` is complete: flows idle since before
                        // its start can no longer be continued by a timely packet.
                        if f > swept_to {
                            table.expire(pane_start_ns(f), &mut out);
                            swept_to = f;
                        }
                        if let Some(c) = cap.as_mut().filter(|c| *c.time() < f) {
                            c.downgrade(&f);
                        }
                    }
                    None => {
                        let last = counters.final_pane.load(Ordering::SeqCst);
                        if last > swept_to {
                            table.expire(pane_start_ns(last), &mut out);
                            swept_to = last;
                        }
                        table.flush(&mut out);
                    }
                }
                if table.evicted() > reported_evictions {
                    counters
                        .evicted
                        .fetch_add(table.evicted() - reported_evictions, Ordering::Relaxed);
                    reported_evictions = table.evicted();
                }
                if table.app_skipped() > reported_skips {
                    counters
                        .app_skipped
                        .fetch_add(table.app_skipped() - reported_skips, Ordering::Relaxed);
                    reported_skips = table.app_skipped();
                }
                if !out.is_empty() {
                    counters
                        .flows
                        .fetch_add(out.len() as u64, Ordering::Relaxed);
                    if let Some(c) = cap.as_ref() {
                        flows_h.session(c).give_container(&mut out);
                    }
                    out.clear();
                }
                if frontier.frontier().is_empty() {
                    cap = None;
                }
            }
        });
        (flows, obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn pkt(ts_s: f64, from_client: bool, flags: u8) -> Packet {
        let (c, s) = (Addr::v4([10, 0, 0, 1]), Addr::v4([10, 0, 0, 2]));
        let (src, dst, sport, dport) = if from_client {
            (c, s, 5555, 80)
        } else {
            (s, c, 80, 5555)
        };
        Packet {
            ts_ns: (ts_s * 1e9) as i64,
            src,
            dst,
            sport,
            dport,
            proto: Proto::TCP,
            tcp_flags: flags,
            ip_len: 60,
            ..Default::default()
        }
    }

    #[test]
    fn payload_is_read_for_a_bounded_number_of_flows_at_once() {
        let mut t = FlowAssembler::new(FlowConfig::default());
        let mut out = Vec::new();
        let extra = 10;
        for k in 0..(MAX_APP_FLOWS + extra) as u32 {
            let p = Packet {
                src: Addr::v4(k.to_be_bytes()),
                tcp_flags: F::ACK | F::PSH,
                payload: bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n"),
                ..pkt(0.0, true, 0)
            };
            t.observe(&p, &mut out);
        }
        assert_eq!(t.app_skipped(), extra as u64);
        t.flush(&mut out);
        let read = out.iter().filter(|r| r.app.is_some()).count();
        assert_eq!(read, MAX_APP_FLOWS);
        assert!(
            out.iter()
                .filter_map(|r| r.app.as_deref())
                .all(|a| a.protocol == Some("http"))
        );
        // Once flows end, new ones are read again.
        t.observe(&pkt(1.0, true, F::SYN), &mut out);
        let p = Packet {
            tcp_flags: F::ACK,
            payload: bytes::Bytes::from_static(b"SSH-2.0-x\r\n"),
            ..pkt(1.1, true, 0)
        };
        t.observe(&p, &mut out);
        assert_eq!(t.app_skipped(), extra as u64);
    }

    fn run(pkts: &[Packet], cfg: FlowConfig) -> Vec<FlowRecord> {
        let mut t = FlowAssembler::new(cfg);
        let mut out = Vec::new();
        pkts.iter().for_each(|p| t.observe(p, &mut out));
        t.flush(&mut out);
        out
    }

    use TcpFlags as F;

    #[test]
    fn handshake_data_and_close_make_one_flow_with_the_trailing_ack() {
        let pkts = [
            pkt(1.0, true, F::SYN),
            pkt(1.1, false, F::SYN | F::ACK),
            pkt(1.2, true, F::ACK),
            pkt(1.3, true, F::FIN | F::ACK),
            pkt(1.4, false, F::FIN | F::ACK),
            pkt(1.5, true, F::ACK),
        ];
        let f = run(&pkts, FlowConfig::default());
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].packets_fwd, f[0].packets_bwd), (4, 2));
        assert_eq!(f[0].end_reason, EndReason::Fin);
        assert_eq!(f[0].src, Addr::v4([10, 0, 0, 1]));
        assert_eq!(f[0].tcp_flags_bwd, F::SYN | F::ACK | F::FIN);
        assert!((f[0].iat_fwd.mean - (0.5 / 3.0)).abs() < 1e-9);
        // A new SYN on the same ports after the close is a new connection.
        let mut more = pkts.to_vec();
        more.push(pkt(2.0, true, F::SYN));
        assert_eq!(run(&more, FlowConfig::default()).len(), 2);
    }

    #[test]
    fn idle_and_active_timeouts_split_flows() {
        let cfg = FlowConfig {
            idle_ns: 10 * S,
            active_ns: 100 * S,
            ..Default::default()
        };
        let f = run(
            &[
                pkt(0.0, true, F::ACK),
                pkt(5.0, true, F::ACK),
                pkt(16.0, true, F::ACK),
            ],
            cfg,
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].end_reason, EndReason::Idle);
        let steady: Vec<Packet> = (0..30)
            .map(|i| pkt(f64::from(i) * 9.0, true, F::ACK))
            .collect();
        let f = run(&steady, cfg);
        assert_eq!(
            f.iter()
                .filter(|r| r.end_reason == EndReason::Active)
                .count(),
            2
        );
        assert_eq!(f.iter().map(|r| r.packets_fwd).sum::<u64>(), 30);
    }

    #[test]
    fn both_directions_and_icmp_replies_route_alike() {
        let p = pkt(0.0, true, F::SYN);
        let r = pkt(0.1, false, F::SYN | F::ACK);
        assert_eq!(FlowKey::of(&p).route_hash(), FlowKey::of(&r).route_hash());
        let echo = Packet {
            proto: Proto::ICMP,
            sport: 8,
            dport: 0,
            ..p.clone()
        };
        let reply = Packet {
            proto: Proto::ICMP,
            sport: 0,
            dport: 0,
            src: p.dst,
            dst: p.src,
            ..p.clone()
        };
        assert_eq!(FlowKey::of(&echo), FlowKey::of(&reply));
        assert_eq!(
            FlowKey::of(&echo).route_hash(),
            FlowKey::of(&reply).route_hash()
        );
        let other = Packet {
            sport: 5556,
            ..p.clone()
        };
        assert_ne!(
            FlowKey::of(&p).route_hash(),
            FlowKey::of(&other).route_hash()
        );
    }

    #[test]
    fn sweeping_expires_what_arrival_would_have_split() {
        let cfg = FlowConfig {
            idle_ns: 10 * S,
            ..Default::default()
        };
        let mut t = FlowAssembler::new(cfg);
        let mut out = Vec::new();
        t.observe(&pkt(0.0, true, F::ACK), &mut out);
        t.expire(9 * S, &mut out);
        assert!(out.is_empty());
        t.expire(11 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_expires_its_longest_idle_flows() {
        let cfg = FlowConfig {
            max_flows: 32,
            ..Default::default()
        };
        let mut t = FlowAssembler::new(cfg);
        let mut out = Vec::new();
        for i in 0..100u16 {
            let mut p = pkt(f64::from(i), true, F::ACK);
            p.sport = 1000 + i;
            t.observe(&p, &mut out);
        }
        assert!(t.len() <= 32);
        assert_eq!(out.len() as u64, t.evicted());
        assert!(out.iter().all(|r| r.end_reason == EndReason::Evicted));
        // The evicted ones are the oldest.
        let newest_evicted = out.iter().map(|r| r.first_ns).max().unwrap_or_default();
        assert!(newest_evicted < 100 * S - 32 * S);
    }
}
