//! The feature catalogue and the per-entity accumulators features are computed from.
//!
//! A feature is a [`FeatureSpec`]: its [`FeatureDef`] (name, family, source, unit,
//! dtype, description — everything downstream derives from it) plus `compute`, a
//! function of the entity's window accumulator. One file per source family.

mod app;
mod auth;
mod cross;
mod dhcp;
mod events;
mod family;
mod mqtt;
mod pcap;
mod snmp;
mod syslog;

pub use app::{AppObs, EXPLOIT_MARKERS, fingerprint_key, has_exploit_marker};
pub use auth::AuthObs;
pub use cross::{CROSS, fill_cross};
pub use events::{EventAcc, EventObs, EventWhat, event_catalogue};
pub use pcap::{LOGIN_PORTS, NEW_PEERS_OUT};
pub use snmp::{Combine, SNMP_METRICS, SnmpMetricDef, snmp_metric_index};
pub use syslog::{SYSLOG_NEW_TEMPLATES, template_hash};

use amoskys_schemas::{Addr, DnsInfo, EchoInfo, FeatureDef, HOP_NS, Packet, Proto, TcpFlags};
use serde::{Deserialize, Serialize};

use crate::histogram::Hist;
use crate::{Map, Moments, Set};

/// A packet feature: what it is, and how it is computed from a window.
pub type FeatureSpec = family::FamilyFeature<PaneAcc>;

/// The packet features, the first columns of the catalogue.
pub fn catalogue() -> &'static [FeatureSpec] {
    pcap::FEATURES
}

/// The catalogue's definitions, in column order: packet features, then the
/// syslog, SNMP and MQTT families, the cross-source features and the history
/// features.
pub fn defs() -> Vec<FeatureDef> {
    catalogue()
        .iter()
        .map(|s| s.def)
        .chain(event_catalogue().iter().copied())
        .chain(CROSS.iter().map(|c| c.def))
        .chain(crate::history::HISTORY_DEFS.iter().copied())
        .chain(crate::history::HORIZON_DEFS.iter().copied())
        .collect()
}

/// Number of features in the catalogue.
pub fn count() -> usize {
    catalogue().len()
        + event_catalogue().len()
        + CROSS.len()
        + crate::history::HISTORY_DEFS.len()
        + crate::history::HORIZON_DEFS.len()
}

/// The catalogue as Markdown: the body of docs/FEATURES.md.
pub fn markdown() -> String {
    use std::fmt::Write;
    let defs = defs();
    let mut s = String::new();
    let _ = writeln!(s, "# Features\n");
    let _ = writeln!(
        s,
        "Generated from the feature catalogue (`operators/src/features/`); a test fails when this \
         file is stale (`UPDATE_DOCS=1 cargo test -p amoskys-operators features_md` rewrites it).\n"
    );
    let _ = writeln!(
        s,
        "One row per entity per window in the `features` table: keys `entity`, `window_start`, \
         `window_end` (UTC, microseconds). Windows last 60 s and start every 30 s; each record \
         counts in the two windows that contain it. \"out\" is what the entity sent, \"in\" what \
         it received. Rates divide by the window's 60 s, also in the partly filled windows at the \
         edges of a capture. A family is null for an entity its source did not see in the window: \
         a host known only from syslog has null packet features, a device known only from MQTT \
         null syslog features. {} features.\n",
        defs.len()
    );
    let mut families: Vec<&str> = Vec::new();
    for d in &defs {
        if !families.contains(&d.family) {
            families.push(d.family);
        }
    }
    for fam in families {
        let _ = writeln!(s, "## {fam}\n");
        let _ = writeln!(
            s,
            "| name | source | unit | type | description | null when |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for d in defs.iter().filter(|d| d.family == fam) {
            let ty = match d.dtype {
                amoskys_schemas::FeatureDtype::Count => "uint64",
                amoskys_schemas::FeatureDtype::Float => "float64",
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {ty} | {} | {} |",
                d.name,
                d.source,
                d.unit,
                d.description,
                d.null_when
                    .unwrap_or("the entity had no packet in the window (0 when it had packets but none of these)")
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// Computes every feature of one window from packets; NaN stands for null (the
/// event families are null, and the history features are filled later).
pub fn compute_all(acc: &PaneAcc) -> Box<[f64]> {
    let mut v: Vec<f64> = Vec::with_capacity(count());
    v.extend(catalogue().iter().map(|s| {
        (s.compute)(acc)
            .filter(|v| v.is_finite())
            .unwrap_or(f64::NAN)
    }));
    v.resize(count(), f64::NAN);
    v.into_boxed_slice()
}

/// Computes every feature of one window from log and device records; the packet
/// features are null.
pub fn compute_events(acc: &EventAcc) -> Box<[f64]> {
    let mut v: Vec<f64> = vec![f64::NAN; catalogue().len()];
    events::event_values(acc, &mut v);
    // The history features are filled later, by the History operator.
    v.resize(count(), f64::NAN);
    v.into_boxed_slice()
}

/// Merges two rows of one entity and window from different families: each value
/// is whichever of the two is not null.
pub fn merge_values(into: &mut [f64], other: &[f64]) {
    for (a, b) in into.iter_mut().zip(other) {
        if a.is_nan() {
            *a = *b;
        }
    }
}

/// UDP ports of services that answer a small request with a large response,
/// and so serve reflection and amplification attacks (US-CERT/CISA alert
/// TA14-017A and its updates): QOTD 17, CharGEN 19, TFTP 69, Portmap 111, NTP
/// 123, NetBIOS 137, SNMP 161, CLDAP 389, RIPv1 520, MS SQL resolution 1434,
/// SSDP 1900, Apple Remote Desktop 3283, WS-Discovery 3702, mDNS 5353, CoAP
/// 5683, Ubiquiti discovery 10001, memcached 11211, Steam 27015, Quake 27960,
/// DVR discovery 37810. DNS (53) is read as DNS and has its own features.
pub const AMPLIFIER_PORTS: [u16; 20] = [
    17, 19, 69, 111, 123, 137, 161, 389, 520, 1434, 1900, 3283, 3702, 5353, 5683, 10001, 11211,
    27015, 27960, 37810,
];

/// One packet as seen from one of its endpoints (the entity).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Obs {
    pub entity: Addr,
    pub peer: Addr,
    pub ts_ns: i64,
    pub local_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub tcp_window: u16,
    /// True when the entity sent the packet.
    pub outbound: bool,
    pub ip_len: u32,
    pub dns: DnsInfo,
    pub echo: EchoInfo,
}

impl Obs {
    /// The two observations of a packet: by its sender and by its receiver.
    pub fn of(p: &Packet) -> [Obs; 2] {
        let base = Obs {
            entity: p.src,
            peer: p.dst,
            ts_ns: p.ts_ns,
            local_port: p.sport,
            remote_port: p.dport,
            proto: p.proto,
            tcp_flags: p.tcp_flags,
            tcp_window: p.tcp_window,
            outbound: true,
            ip_len: p.ip_len,
            dns: p.dns,
            echo: p.echo,
        };
        let inbound = Obs {
            entity: p.dst,
            peer: p.src,
            local_port: p.dport,
            remote_port: p.sport,
            outbound: false,
            ..base
        };
        [base, inbound]
    }

    fn has_ports(&self) -> bool {
        matches!(self.proto, Proto::TCP | Proto::UDP)
    }
}

/// Per-direction counters of one entity.
#[derive(Clone, Debug, Default)]
pub struct DirAcc {
    pub packets: u64,
    pub bytes: u64,
    pub size: Moments,
    /// Packets by size (IP length): exact size percentiles.
    pub size_hist: Hist,
    /// Gaps between consecutive packets in this direction, seconds.
    pub iat: Moments,
    /// Gaps by [`gap_bucket`] (µs): inter-arrival percentiles.
    pub iat_hist: Hist,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    /// SYN without ACK (connection attempts, retransmissions included).
    pub syn: u64,
    pub synack: u64,
    pub fin: u64,
    pub rst: u64,
    pub psh: u64,
}

impl DirAcc {
    #[inline]
    fn add(&mut self, o: &Obs) {
        self.packets += 1;
        self.bytes += u64::from(o.ip_len);
        self.size.push(f64::from(o.ip_len));
        self.size_hist.add(o.ip_len, 1);
        if let Some(l) = self.last_ns {
            self.push_gap(o.ts_ns - l);
        }
        self.first_ns.get_or_insert(o.ts_ns);
        self.last_ns = Some(o.ts_ns);
        match o.proto {
            Proto::TCP => {
                self.tcp += 1;
                let f = o.tcp_flags;
                let syn = f & TcpFlags::SYN != 0;
                let ack = f & TcpFlags::ACK != 0;
                self.syn += u64::from(syn && !ack);
                self.synack += u64::from(syn && ack);
                self.fin += u64::from(f & TcpFlags::FIN != 0);
                self.rst += u64::from(f & TcpFlags::RST != 0);
                self.psh += u64::from(f & TcpFlags::PSH != 0);
            }
            Proto::UDP => self.udp += 1,
            Proto::ICMP | Proto::ICMPV6 => self.icmp += 1,
            _ => {}
        }
    }

    #[inline]
    fn push_gap(&mut self, ns: i64) {
        let ns = ns.max(0);
        self.iat.push(ns as f64 / 1e9);
        self.iat_hist.add(gap_bucket(ns), 1);
    }

    /// Appends `later`, whose packets all came after this one's.
    fn append(&mut self, later: &DirAcc) {
        if later.packets == 0 {
            return;
        }
        if let (Some(l), Some(f)) = (self.last_ns, later.first_ns) {
            self.push_gap(f - l);
        }
        self.iat.merge(&later.iat);
        self.iat_hist.merge(&later.iat_hist);
        self.size_hist.merge(&later.size_hist);
        self.packets += later.packets;
        self.bytes += later.bytes;
        self.size.merge(&later.size);
        self.first_ns = self.first_ns.or(later.first_ns);
        self.last_ns = later.last_ns.or(self.last_ns);
        self.tcp += later.tcp;
        self.udp += later.udp;
        self.icmp += later.icmp;
        self.syn += later.syn;
        self.synack += later.synack;
        self.fin += later.fin;
        self.rst += later.rst;
        self.psh += later.psh;
    }
}

/// The bucket of an inter-arrival gap, in whole microseconds: exact below 16 µs,
/// above that the gap with all but its 4 leading bits cleared (so within 12.5 %
/// below the gap). Bounded: at most 16 + 8 · 28 buckets (gaps are capped at
/// u32::MAX µs, over an hour; a window's gaps are under a minute).
pub fn gap_bucket(ns: i64) -> u32 {
    let us = u32::try_from(ns.max(0) / 1000).unwrap_or(u32::MAX);
    if us < 16 {
        return us;
    }
    let shift = 31 - us.leading_zeros() - 3;
    (us >> shift) << shift
}

/// What became of a TCP connection attempt the entity made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// The entity sent a SYN.
    pub tried: bool,
    /// The peer answered with SYN-ACK.
    pub answered: bool,
}

/// Length of the bins a window is cut into for correlations: 5 s, twelve a window.
pub const BIN_NS: i64 = 5_000_000_000;
/// Bins in a pane.
pub const PANE_BINS: usize = (HOP_NS / BIN_NS) as usize;

/// What one entity did in one 5 s bin.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bin {
    /// Bytes sent and received.
    pub bytes: u64,
    /// TCP connections started: SYNs without ACK, sent or received.
    pub conns: u64,
}

/// Everything one entity did in one pane (30 s), or — merged — in one window.
#[derive(Clone, Debug, Default)]
pub struct PaneAcc {
    pub out: DirAcc,
    pub inb: DirAcc,
    /// Peers the entity sent packets to, with packet counts.
    pub peers_out: Map<Addr, u64>,
    pub peers_in: Set<Addr>,
    /// Destination ports of outbound TCP/UDP packets, with packet counts.
    pub dst_ports_out: Map<u16, u64>,
    /// Local ports that inbound TCP/UDP packets were sent to.
    pub local_ports_in: Set<u16>,
    /// Outbound TCP connection attempts by (peer, local port, peer port).
    pub attempts_out: Map<(Addr, u16, u16), Attempt>,
    /// Inbound SYNs by (peer, local port, peer port).
    pub attempts_in: Set<(Addr, u16, u16)>,
    /// Times of the first and last outbound SYN (without ACK), and the gaps
    /// between consecutive ones, in seconds.
    pub syn_first_ns: Option<i64>,
    pub syn_last_ns: Option<i64>,
    pub syn_gaps: Moments,
    /// DNS over UDP port 53: queries sent, with their names, types and name
    /// lengths and entropies (only queries with a question); responses received.
    pub dns_queries_out: u64,
    /// Query names (hashed), with the number of queries for each.
    pub dns_qnames_out: Map<u64, u64>,
    pub dns_qtypes_out: Set<u16>,
    pub dns_txt_out: u64,
    pub dns_qname_len_out: Moments,
    pub dns_qname_entropy_out: Moments,
    pub dns_responses_in: u64,
    pub dns_nxdomain_in: u64,
    /// DNS queries for NULL records (type 10): no resolver needs them; DNS
    /// tunnels (iodine) carry data in them.
    pub dns_null_out: u64,
    /// ICMP echo requests and replies sent: their data's bytes, distinct
    /// sizes and per-message byte entropy (messages with data only).
    pub echo_out: u64,
    pub echo_bytes_out: u64,
    pub echo_sizes_out: Set<u16>,
    pub echo_entropy_out: Moments,
    /// UDP packets received from well-known amplifier ports
    /// ([`AMPLIFIER_PORTS`]) by a unicast entity, by that port, and their
    /// distinct sources.
    pub amp_in: Map<u16, u64>,
    pub amp_sources_in: Set<Addr>,
    /// Window fields of the SYNs (without ACK) the entity sent.
    pub syn_windows_out: Moments,
    pub syn_window_values_out: Set<u16>,
    /// TCP packets the entity sent advertising a zero window (RST excluded).
    pub zero_window_out: u64,
    /// The pane's bins, then (in a window) the next pane's.
    pub bins: [Bin; 2 * PANE_BINS],
}

impl PaneAcc {
    #[inline]
    pub fn observe(&mut self, o: &Obs) {
        if o.dns.kind != 0 {
            self.observe_dns(o);
        }
        if o.echo.kind != 0 && o.outbound {
            self.echo_out += 1;
            self.echo_bytes_out += u64::from(o.echo.len);
            self.echo_sizes_out.insert(o.echo.len);
            if o.echo.len > 0 {
                self.echo_entropy_out.push(o.echo.entropy());
            }
        }
        let syn = o.proto == Proto::TCP && o.tcp_flags & TcpFlags::SYN != 0;
        let ack = o.tcp_flags & TcpFlags::ACK != 0;
        let bin = &mut self.bins[(o.ts_ns.rem_euclid(HOP_NS) / BIN_NS) as usize];
        bin.bytes += u64::from(o.ip_len);
        bin.conns += u64::from(syn && !ack);
        if o.outbound {
            self.out.add(o);
            self.zero_window_out += u64::from(
                o.proto == Proto::TCP && o.tcp_window == 0 && o.tcp_flags & TcpFlags::RST == 0,
            );
            *self.peers_out.entry(o.peer).or_insert(0) += 1;
            if o.has_ports() {
                *self.dst_ports_out.entry(o.remote_port).or_insert(0) += 1;
            }
            if syn && !ack {
                self.attempts_out
                    .entry((o.peer, o.local_port, o.remote_port))
                    .or_default()
                    .tried = true;
                if let Some(l) = self.syn_last_ns {
                    self.syn_gaps.push((o.ts_ns - l).max(0) as f64 / 1e9);
                }
                self.syn_windows_out.push(f64::from(o.tcp_window));
                self.syn_window_values_out.insert(o.tcp_window);
                self.syn_first_ns.get_or_insert(o.ts_ns);
                self.syn_last_ns = Some(o.ts_ns);
            }
        } else {
            self.inb.add(o);
            self.peers_in.insert(o.peer);
            if o.proto == Proto::UDP
                && AMPLIFIER_PORTS.contains(&o.remote_port)
                && !o.entity.ip().is_multicast()
                && o.entity.ip() != std::net::Ipv4Addr::BROADCAST
            {
                *self.amp_in.entry(o.remote_port).or_insert(0) += 1;
                self.amp_sources_in.insert(o.peer);
            }
            if o.has_ports() {
                self.local_ports_in.insert(o.local_port);
            }
            if syn && ack {
                self.attempts_out
                    .entry((o.peer, o.local_port, o.remote_port))
                    .or_default()
                    .answered = true;
            } else if syn {
                self.attempts_in
                    .insert((o.peer, o.local_port, o.remote_port));
            }
        }
    }

    fn observe_dns(&mut self, o: &Obs) {
        let d = &o.dns;
        if o.outbound && d.kind == DnsInfo::QUERY {
            self.dns_queries_out += 1;
            if d.qtype != 0 {
                *self.dns_qnames_out.entry(d.qname_hash).or_insert(0) += 1;
                self.dns_qtypes_out.insert(d.qtype);
                self.dns_txt_out += u64::from(d.qtype == 16);
                self.dns_null_out += u64::from(d.qtype == 10);
                self.dns_qname_len_out.push(f64::from(d.qname_len));
                self.dns_qname_entropy_out.push(d.qname_entropy());
            }
        } else if !o.outbound && d.kind == DnsInfo::RESPONSE {
            self.dns_responses_in += 1;
            self.dns_nxdomain_in += u64::from(d.rcode == 3);
        }
    }

    /// Extends this pane into the window of this pane followed by `later`.
    pub fn append(&mut self, later: &PaneAcc) {
        let w = self;
        w.out.append(&later.out);
        w.inb.append(&later.inb);
        for (p, n) in &later.peers_out {
            *w.peers_out.entry(*p).or_insert(0) += n;
        }
        w.peers_in.extend(later.peers_in.iter().copied());
        for (p, n) in &later.dst_ports_out {
            *w.dst_ports_out.entry(*p).or_insert(0) += n;
        }
        w.local_ports_in
            .extend(later.local_ports_in.iter().copied());
        for (k, a) in &later.attempts_out {
            let e = w.attempts_out.entry(*k).or_default();
            e.tried |= a.tried;
            e.answered |= a.answered;
        }
        w.attempts_in.extend(later.attempts_in.iter().copied());
        if let (Some(l), Some(f)) = (w.syn_last_ns, later.syn_first_ns) {
            w.syn_gaps.push((f - l).max(0) as f64 / 1e9);
        }
        w.syn_gaps.merge(&later.syn_gaps);
        w.dns_queries_out += later.dns_queries_out;
        for (q, n) in &later.dns_qnames_out {
            *w.dns_qnames_out.entry(*q).or_insert(0) += n;
        }
        w.dns_qtypes_out
            .extend(later.dns_qtypes_out.iter().copied());
        w.dns_txt_out += later.dns_txt_out;
        w.dns_null_out += later.dns_null_out;
        for (p, n) in &later.amp_in {
            *w.amp_in.entry(*p).or_insert(0) += n;
        }
        w.amp_sources_in
            .extend(later.amp_sources_in.iter().copied());
        w.echo_out += later.echo_out;
        w.echo_bytes_out += later.echo_bytes_out;
        w.echo_sizes_out
            .extend(later.echo_sizes_out.iter().copied());
        w.echo_entropy_out.merge(&later.echo_entropy_out);
        w.dns_qname_len_out.merge(&later.dns_qname_len_out);
        w.dns_qname_entropy_out.merge(&later.dns_qname_entropy_out);
        w.dns_responses_in += later.dns_responses_in;
        w.syn_windows_out.merge(&later.syn_windows_out);
        w.syn_window_values_out
            .extend(later.syn_window_values_out.iter().copied());
        w.zero_window_out += later.zero_window_out;
        w.dns_nxdomain_in += later.dns_nxdomain_in;
        w.syn_first_ns = w.syn_first_ns.or(later.syn_first_ns);
        w.syn_last_ns = later.syn_last_ns.or(w.syn_last_ns);
        for (a, b) in w.bins[PANE_BINS..].iter_mut().zip(&later.bins[..PANE_BINS]) {
            a.bytes += b.bytes;
            a.conns += b.conns;
        }
    }
}

/// Pearson correlation of paired values; `None` when either side does not vary.
pub fn pearson(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs.clone() {
        n += 1.0;
        sx += x;
        sy += y;
    }
    if n < 2.0 {
        return None;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut cxy, mut cxx, mut cyy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        let (dx, dy) = (x - mx, y - my);
        cxy += dx * dy;
        cxx += dx * dx;
        cyy += dy * dy;
    }
    (cxx > 0.0 && cyy > 0.0).then(|| (cxy / (cxx * cyy).sqrt()).clamp(-1.0, 1.0))
}

/// Shannon entropy, in bits, of a distribution given by counts. Counts are sorted
/// first so that the float sum does not depend on hash-map order.
pub fn entropy_bits(counts: impl Iterator<Item = u64>) -> Option<f64> {
    let mut c: Vec<u64> = counts.filter(|&n| n > 0).collect();
    let total: u64 = c.iter().sum();
    if total == 0 {
        return None;
    }
    c.sort_unstable();
    let t = total as f64;
    Some(
        c.iter()
            .map(|&n| {
                let p = n as f64 / t;
                -p * p.log2()
            })
            .sum::<f64>()
            .max(0.0)
            // -0.0 (one value: -1·log2(1)) is written as 0.
            + 0.0,
    )
}

#[cfg(test)]
mod tests;
