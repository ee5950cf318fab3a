//! Network features of a host, from packets (source `pcap`).
//!
//! "out" counts packets the entity sent, "in" packets it received. Rates divide by
//! the full window length (60 s), also for the partly filled windows at the edges
//! of a capture. Inter-arrival times are gaps between consecutive packets of one
//! direction in capture order.
//!
//! Why one file of this size: it holds one thing, the catalogue of packet
//! features (an entry of name, unit, meaning, null rule and computation for each
//! of them, DNS, UDP reflection and ICMP echo included) over the packet
//! accumulator of features/mod.rs. It is one static table in column order, the
//! order of the `features` table; split, its parts would have to be joined back
//! in that order at run time.

use amoskys_schemas::{FeatureDtype, WINDOW_SECONDS};

use super::{FeatureSpec, PaneAcc, entropy_bits, pearson};

const SRC: &str = "pcap";
const W: f64 = WINDOW_SECONDS as f64;

/// A packet feature: read from captures, whatever its family.
const fn spec(
    name: &'static str,
    family: &'static str,
    unit: &'static str,
    dtype: FeatureDtype,
    description: &'static str,
    null_when: Option<&'static str>,
    compute: fn(&PaneAcc) -> Option<f64>,
) -> FeatureSpec {
    let mut f = super::family::dspec(name, family, unit, dtype, description, null_when, compute);
    f.def.source = SRC;
    f
}

use FeatureDtype::{Count as C, Float as F};

const NEVER: Option<&str> = None;
const NO_OUT: Option<&str> = Some("the entity sent no packet in the window");
const NO_IN: Option<&str> = Some("the entity received no packet in the window");
const FEW_OUT: Option<&str> = Some("the entity sent fewer than 2 packets in the window");
const FEW_IN: Option<&str> = Some("the entity received fewer than 2 packets in the window");

/// TCP ports of login services: FTP, SSH, Telnet, RDP.
pub const LOGIN_PORTS: [u16; 4] = [21, 22, 23, 3389];

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}
fn n(v: u64) -> Option<f64> {
    Some(v as f64)
}

pub(super) static FEATURES: &[FeatureSpec] = &[
    // volume
    spec(
        "packets_out",
        "volume",
        "packets",
        C,
        "Packets sent by the entity.",
        NEVER,
        |a| n(a.out.packets),
    ),
    spec(
        "packets_in",
        "volume",
        "packets",
        C,
        "Packets received by the entity.",
        NEVER,
        |a| n(a.inb.packets),
    ),
    spec(
        "bytes_out",
        "volume",
        "bytes",
        C,
        "Bytes sent: each packet's IP length (header and payload), as NetFlow counts them.",
        NEVER,
        |a| n(a.out.bytes),
    ),
    spec(
        "bytes_in",
        "volume",
        "bytes",
        C,
        "Bytes received: each packet's IP length (header and payload), as NetFlow counts them.",
        NEVER,
        |a| n(a.inb.bytes),
    ),
    spec(
        "packets_out_per_s",
        "volume",
        "packets/s",
        F,
        "Packets sent per second of window.",
        NEVER,
        |a| Some(a.out.packets as f64 / W),
    ),
    spec(
        "packets_in_per_s",
        "volume",
        "packets/s",
        F,
        "Packets received per second of window.",
        NEVER,
        |a| Some(a.inb.packets as f64 / W),
    ),
    spec(
        "bytes_out_per_s",
        "volume",
        "bytes/s",
        F,
        "Bytes sent per second of window.",
        NEVER,
        |a| Some(a.out.bytes as f64 / W),
    ),
    spec(
        "bytes_in_per_s",
        "volume",
        "bytes/s",
        F,
        "Bytes received per second of window.",
        NEVER,
        |a| Some(a.inb.bytes as f64 / W),
    ),
    spec(
        "bytes_out_share",
        "volume",
        "ratio",
        F,
        "Share of the entity's bytes that it sent: out / (out + in).",
        Some("the entity sent and received nothing"),
        |a| ratio(a.out.bytes, a.out.bytes + a.inb.bytes),
    ),
    spec(
        "tcp_packets_out",
        "volume",
        "packets",
        C,
        "TCP packets sent.",
        NEVER,
        |a| n(a.out.tcp),
    ),
    spec(
        "tcp_packets_in",
        "volume",
        "packets",
        C,
        "TCP packets received.",
        NEVER,
        |a| n(a.inb.tcp),
    ),
    spec(
        "udp_packets_out",
        "volume",
        "packets",
        C,
        "UDP packets sent.",
        NEVER,
        |a| n(a.out.udp),
    ),
    spec(
        "udp_packets_in",
        "volume",
        "packets",
        C,
        "UDP packets received.",
        NEVER,
        |a| n(a.inb.udp),
    ),
    spec(
        "icmp_packets_out",
        "volume",
        "packets",
        C,
        "ICMP and ICMPv6 packets sent.",
        NEVER,
        |a| n(a.out.icmp),
    ),
    spec(
        "icmp_packets_in",
        "volume",
        "packets",
        C,
        "ICMP and ICMPv6 packets received.",
        NEVER,
        |a| n(a.inb.icmp),
    ),
    // packet sizes
    spec(
        "pkt_size_out_min",
        "size",
        "bytes",
        F,
        "Smallest packet sent.",
        NO_OUT,
        |a| a.out.size.get_min(),
    ),
    spec(
        "pkt_size_out_max",
        "size",
        "bytes",
        F,
        "Largest packet sent.",
        NO_OUT,
        |a| a.out.size.get_max(),
    ),
    spec(
        "pkt_size_out_mean",
        "size",
        "bytes",
        F,
        "Mean size of packets sent.",
        NO_OUT,
        |a| a.out.size.get_mean(),
    ),
    spec(
        "pkt_size_out_std",
        "size",
        "bytes",
        F,
        "Population standard deviation of the sizes of packets sent.",
        NO_OUT,
        |a| a.out.size.get_std(),
    ),
    spec(
        "pkt_size_out_p50",
        "size",
        "bytes",
        F,
        "Median size of packets sent (nearest rank).",
        NO_OUT,
        |a| a.out.size_hist.quantile(0.5).map(f64::from),
    ),
    spec(
        "pkt_size_out_p90",
        "size",
        "bytes",
        F,
        "90th percentile of the sizes of packets sent (nearest rank).",
        NO_OUT,
        |a| a.out.size_hist.quantile(0.9).map(f64::from),
    ),
    spec(
        "pkt_size_in_min",
        "size",
        "bytes",
        F,
        "Smallest packet received.",
        NO_IN,
        |a| a.inb.size.get_min(),
    ),
    spec(
        "pkt_size_in_max",
        "size",
        "bytes",
        F,
        "Largest packet received.",
        NO_IN,
        |a| a.inb.size.get_max(),
    ),
    spec(
        "pkt_size_in_mean",
        "size",
        "bytes",
        F,
        "Mean size of packets received.",
        NO_IN,
        |a| a.inb.size.get_mean(),
    ),
    spec(
        "pkt_size_in_std",
        "size",
        "bytes",
        F,
        "Population standard deviation of the sizes of packets received.",
        NO_IN,
        |a| a.inb.size.get_std(),
    ),
    spec(
        "pkt_size_in_p50",
        "size",
        "bytes",
        F,
        "Median size of packets received (nearest rank).",
        NO_IN,
        |a| a.inb.size_hist.quantile(0.5).map(f64::from),
    ),
    spec(
        "pkt_size_in_p90",
        "size",
        "bytes",
        F,
        "90th percentile of the sizes of packets received (nearest rank).",
        NO_IN,
        |a| a.inb.size_hist.quantile(0.9).map(f64::from),
    ),
    // timing
    spec(
        "iat_out_min",
        "timing",
        "s",
        F,
        "Shortest gap between two consecutive packets sent.",
        FEW_OUT,
        |a| a.out.iat.get_min(),
    ),
    spec(
        "iat_out_max",
        "timing",
        "s",
        F,
        "Longest gap between two consecutive packets sent.",
        FEW_OUT,
        |a| a.out.iat.get_max(),
    ),
    spec(
        "iat_out_mean",
        "timing",
        "s",
        F,
        "Mean gap between consecutive packets sent.",
        FEW_OUT,
        |a| a.out.iat.get_mean(),
    ),
    spec(
        "iat_out_std",
        "timing",
        "s",
        F,
        "Population standard deviation of the gaps between packets sent.",
        FEW_OUT,
        |a| a.out.iat.get_std(),
    ),
    spec(
        "iat_out_p50",
        "timing",
        "s",
        F,
        "Median gap between packets sent (nearest rank), to 1 µs below \
         16 µs and within 12.5 % (rounded down) above.",
        FEW_OUT,
        |a| a.out.iat_hist.quantile(0.5).map(|us| f64::from(us) / 1e6),
    ),
    spec(
        "iat_out_p90",
        "timing",
        "s",
        F,
        "90th percentile of the gaps between packets sent (nearest rank), to 1 µs below \
         16 µs and within 12.5 % (rounded down) above.",
        FEW_OUT,
        |a| a.out.iat_hist.quantile(0.9).map(|us| f64::from(us) / 1e6),
    ),
    spec(
        "iat_in_min",
        "timing",
        "s",
        F,
        "Shortest gap between two consecutive packets received.",
        FEW_IN,
        |a| a.inb.iat.get_min(),
    ),
    spec(
        "iat_in_max",
        "timing",
        "s",
        F,
        "Longest gap between two consecutive packets received.",
        FEW_IN,
        |a| a.inb.iat.get_max(),
    ),
    spec(
        "iat_in_mean",
        "timing",
        "s",
        F,
        "Mean gap between consecutive packets received.",
        FEW_IN,
        |a| a.inb.iat.get_mean(),
    ),
    spec(
        "iat_in_std",
        "timing",
        "s",
        F,
        "Population standard deviation of the gaps between packets received.",
        FEW_IN,
        |a| a.inb.iat.get_std(),
    ),
    spec(
        "iat_in_p50",
        "timing",
        "s",
        F,
        "Median gap between packets received (nearest rank), to 1 µs below \
         16 µs and within 12.5 % (rounded down) above.",
        FEW_IN,
        |a| a.inb.iat_hist.quantile(0.5).map(|us| f64::from(us) / 1e6),
    ),
    spec(
        "iat_in_p90",
        "timing",
        "s",
        F,
        "90th percentile of the gaps between packets received (nearest rank), to 1 µs below \
         16 µs and within 12.5 % (rounded down) above.",
        FEW_IN,
        |a| a.inb.iat_hist.quantile(0.9).map(|us| f64::from(us) / 1e6),
    ),
    spec(
        "active_span_s",
        "timing",
        "s",
        F,
        "Time from the entity's first to its last packet (either direction) in the window.",
        NEVER,
        |a| {
            let first = [a.out.first_ns, a.inb.first_ns].into_iter().flatten().min();
            let last = [a.out.last_ns, a.inb.last_ns].into_iter().flatten().max();
            Some(
                first
                    .zip(last)
                    .map_or(0.0, |(f, l)| (l - f).max(0) as f64 / 1e9),
            )
        },
    ),
    // TCP flags
    spec(
        "tcp_syn_out",
        "tcp",
        "packets",
        C,
        "TCP SYN without ACK sent (connection attempts, retransmissions included).",
        NEVER,
        |a| n(a.out.syn),
    ),
    spec(
        "tcp_syn_in",
        "tcp",
        "packets",
        C,
        "TCP SYN without ACK received.",
        NEVER,
        |a| n(a.inb.syn),
    ),
    spec(
        "tcp_synack_out",
        "tcp",
        "packets",
        C,
        "TCP SYN-ACK sent (connections accepted).",
        NEVER,
        |a| n(a.out.synack),
    ),
    spec(
        "tcp_synack_in",
        "tcp",
        "packets",
        C,
        "TCP SYN-ACK received.",
        NEVER,
        |a| n(a.inb.synack),
    ),
    spec(
        "tcp_fin_out",
        "tcp",
        "packets",
        C,
        "TCP packets with FIN sent.",
        NEVER,
        |a| n(a.out.fin),
    ),
    spec(
        "tcp_fin_in",
        "tcp",
        "packets",
        C,
        "TCP packets with FIN received.",
        NEVER,
        |a| n(a.inb.fin),
    ),
    spec(
        "tcp_rst_out",
        "tcp",
        "packets",
        C,
        "TCP packets with RST sent.",
        NEVER,
        |a| n(a.out.rst),
    ),
    spec(
        "tcp_rst_in",
        "tcp",
        "packets",
        C,
        "TCP packets with RST received.",
        NEVER,
        |a| n(a.inb.rst),
    ),
    spec(
        "tcp_psh_out",
        "tcp",
        "packets",
        C,
        "TCP packets with PSH sent.",
        NEVER,
        |a| n(a.out.psh),
    ),
    spec(
        "tcp_psh_in",
        "tcp",
        "packets",
        C,
        "TCP packets with PSH received.",
        NEVER,
        |a| n(a.inb.psh),
    ),
    spec(
        "tcp_syn_ratio_out",
        "tcp",
        "ratio",
        F,
        "Share of sent TCP packets that are SYN without ACK.",
        Some("the entity sent no TCP packet"),
        |a| ratio(a.out.syn, a.out.tcp),
    ),
    spec(
        "tcp_rst_ratio_in",
        "tcp",
        "ratio",
        F,
        "Share of received TCP packets that carry RST.",
        Some("the entity received no TCP packet"),
        |a| ratio(a.inb.rst, a.inb.tcp),
    ),
    spec(
        "tcp_synack_per_syn",
        "tcp",
        "ratio",
        F,
        "SYN-ACKs received per SYN sent.",
        Some("the entity sent no SYN"),
        |a| ratio(a.inb.synack, a.out.syn),
    ),
    // fan-out and fan-in
    spec(
        "distinct_peers_out",
        "fanout",
        "hosts",
        C,
        "Distinct addresses the entity sent packets to.",
        NEVER,
        |a| n(a.peers_out.len() as u64),
    ),
    spec(
        "distinct_peers_in",
        "fanout",
        "hosts",
        C,
        "Distinct addresses that sent packets to the entity.",
        NEVER,
        |a| n(a.peers_in.len() as u64),
    ),
    spec(
        "distinct_dst_ports_out",
        "fanout",
        "ports",
        C,
        "Distinct TCP/UDP destination ports the entity sent to.",
        NEVER,
        |a| n(a.dst_ports_out.len() as u64),
    ),
    spec(
        "distinct_local_ports_in",
        "fanout",
        "ports",
        C,
        "Distinct local TCP/UDP ports that received packets.",
        NEVER,
        |a| n(a.local_ports_in.len() as u64),
    ),
    spec(
        NEW_PEERS_OUT,
        "fanout",
        "hosts",
        C,
        "Distinct addresses the entity sent packets to in the window and to none in \
         the 2 minutes before it: a host starting to talk to many new peers is \
         scanning or spreading.",
        NEVER,
        // Filled by the window operator, which remembers the entity's recent peers.
        |_| None,
    ),
    // entropy
    spec(
        "dst_port_entropy_out",
        "entropy",
        "bits",
        F,
        "Shannon entropy of the destination ports of sent TCP/UDP packets, weighted by packets.",
        Some("the entity sent no TCP or UDP packet"),
        |a| entropy_bits(a.dst_ports_out.values().copied()),
    ),
    spec(
        "peer_entropy_out",
        "entropy",
        "bits",
        F,
        "Shannon entropy of the addresses the entity sent packets to, weighted by \
         packets: 0 for one peer, high when traffic spreads evenly over many.",
        NO_OUT,
        |a| entropy_bits(a.peers_out.values().copied()),
    ),
    spec(
        "dns_qname_spread_out",
        "entropy",
        "bits",
        F,
        "Shannon entropy of the entity's DNS queries over the names they asked for \
         (first question), weighted by queries: high when many different names are \
         each asked once, as in generated-domain lookups.",
        Some("the entity sent no DNS query with a question in the window"),
        |a| entropy_bits(a.dns_qnames_out.values().copied()),
    ),
    // connections
    spec(
        "conn_attempts_out",
        "connections",
        "connections",
        C,
        "Distinct outbound TCP connection attempts (SYN sent; peer, local and remote port).",
        NEVER,
        |a| n(a.attempts_out.values().filter(|t| t.tried).count() as u64),
    ),
    spec(
        "conn_failed_out",
        "connections",
        "connections",
        C,
        "Outbound TCP connection attempts not answered by a SYN-ACK within the window (refused or unanswered).",
        NEVER,
        |a| {
            n(a.attempts_out
                .values()
                .filter(|t| t.tried && !t.answered)
                .count() as u64)
        },
    ),
    spec(
        "failed_conn_ratio_out",
        "connections",
        "ratio",
        F,
        "Share of outbound TCP connection attempts that failed.",
        Some("the entity made no connection attempt"),
        |a| {
            let tried = a.attempts_out.values().filter(|t| t.tried).count() as u64;
            ratio(
                a.attempts_out
                    .values()
                    .filter(|t| t.tried && !t.answered)
                    .count() as u64,
                tried,
            )
        },
    ),
    spec(
        "conn_attempts_in",
        "connections",
        "connections",
        C,
        "Distinct inbound TCP connection attempts (SYN received).",
        NEVER,
        |a| n(a.attempts_in.len() as u64),
    ),
    spec(
        "auth_conn_attempts_out",
        "connections",
        "connections",
        C,
        "Distinct outbound TCP connection attempts to login services: FTP (21), SSH \
         (22), Telnet (23), RDP (3389). Many short ones are password guessing.",
        NEVER,
        |a| {
            n(a.attempts_out
                .iter()
                .filter(|((_, _, port), t)| t.tried && LOGIN_PORTS.contains(port))
                .count() as u64)
        },
    ),
    // periodicity and burstiness: the raw material of beacon detection
    spec(
        "iat_out_cv",
        "periodicity",
        "ratio",
        F,
        "Coefficient of variation (std / mean) of the gaps between the entity's sent packets.",
        Some("the entity sent fewer than 2 packets in the window, or all at one instant"),
        |a| cv(&a.out.iat),
    ),
    spec(
        "iat_out_burstiness",
        "periodicity",
        "score",
        F,
        "Burstiness (std - mean) / (std + mean) of the gaps between sent packets: -1 \
         periodic, 0 random (Poisson), towards 1 bursty.",
        Some("the entity sent fewer than 2 packets in the window, or all at one instant"),
        |a| burstiness(&a.out.iat),
    ),
    spec(
        "syn_interval_mean_out",
        "periodicity",
        "s",
        F,
        "Mean gap between the entity's consecutive connection attempts (SYN without ACK).",
        Some("the entity sent fewer than 2 SYNs in the window"),
        |a| (a.syn_gaps.n > 0).then_some(a.syn_gaps.mean),
    ),
    spec(
        "syn_interval_cv_out",
        "periodicity",
        "ratio",
        F,
        "Coefficient of variation of the gaps between connection attempts: near 0 for a \
         beacon calling home on a timer.",
        Some("the entity sent fewer than 2 SYNs in the window, or all at one instant"),
        |a| cv(&a.syn_gaps),
    ),
    spec(
        "syn_burstiness_out",
        "periodicity",
        "score",
        F,
        "Burstiness (std - mean) / (std + mean) of the gaps between connection attempts.",
        Some("the entity sent fewer than 2 SYNs in the window, or all at one instant"),
        |a| burstiness(&a.syn_gaps),
    ),
    // TCP behaviour
    spec(
        "syn_retransmits_out",
        "tcp",
        "packets",
        C,
        "SYNs the entity sent beyond the first of each connection attempt (same peer and \
         ports): retransmitted attempts, unanswered or slow.",
        NEVER,
        |a| {
            n(a.out
                .syn
                .saturating_sub(a.attempts_out.values().filter(|t| t.tried).count() as u64))
        },
    ),
    spec(
        "syn_window_mean_out",
        "tcp",
        "bytes",
        F,
        "Mean initial window (the window field of the SYNs the entity sent, unscaled).",
        Some("the entity sent no SYN in the window"),
        |a| (a.syn_windows_out.n > 0).then_some(a.syn_windows_out.mean),
    ),
    spec(
        "syn_window_distinct_out",
        "tcp",
        "windows",
        C,
        "Distinct initial windows in the entity's SYNs (several TCP stacks or crafted packets).",
        NEVER,
        |a| n(a.syn_window_values_out.len() as u64),
    ),
    spec(
        "tcp_zero_window_out",
        "tcp",
        "packets",
        C,
        "TCP packets the entity sent advertising a zero window (its receive buffer full), \
         resets excluded.",
        NEVER,
        |a| n(a.zero_window_out),
    ),
    // DNS over UDP port 53
    spec(
        "dns_queries_out",
        "dns",
        "queries",
        C,
        "DNS queries the entity sent (UDP port 53).",
        NEVER,
        |a| n(a.dns_queries_out),
    ),
    spec(
        "dns_responses_in",
        "dns",
        "responses",
        C,
        "DNS responses the entity received.",
        NEVER,
        |a| n(a.dns_responses_in),
    ),
    spec(
        "dns_nxdomain_in",
        "dns",
        "responses",
        C,
        "DNS responses received saying the name does not exist (NXDOMAIN).",
        NEVER,
        |a| n(a.dns_nxdomain_in),
    ),
    spec(
        "dns_nxdomain_ratio_in",
        "dns",
        "ratio",
        F,
        "NXDOMAIN responses over all DNS responses received: high for malware trying \
         generated domains.",
        Some("the entity received no DNS response in the window"),
        |a| ratio(a.dns_nxdomain_in, a.dns_responses_in),
    ),
    spec(
        "dns_distinct_qnames_out",
        "dns",
        "names",
        C,
        "Distinct names in the DNS queries the entity sent (first question).",
        NEVER,
        |a| n(a.dns_qnames_out.len() as u64),
    ),
    spec(
        "dns_distinct_qtypes_out",
        "dns",
        "types",
        C,
        "Distinct record types asked for in the entity's DNS queries.",
        NEVER,
        |a| n(a.dns_qtypes_out.len() as u64),
    ),
    spec(
        "dns_txt_queries_out",
        "dns",
        "queries",
        C,
        "DNS queries for TXT records the entity sent (a tunnelling channel).",
        NEVER,
        |a| n(a.dns_txt_out),
    ),
    spec(
        "dns_qname_len_mean_out",
        "dns",
        "characters",
        F,
        "Mean length of the names the entity asked for (dotted, no final dot).",
        Some("the entity sent no DNS query with a question in the window"),
        |a| (a.dns_qname_len_out.n > 0).then_some(a.dns_qname_len_out.mean),
    ),
    spec(
        "dns_qname_len_max_out",
        "dns",
        "characters",
        F,
        "Longest name the entity asked for.",
        Some("the entity sent no DNS query with a question in the window"),
        |a| a.dns_qname_len_out.get_max(),
    ),
    spec(
        "dns_qname_entropy_mean_out",
        "dns",
        "bits/character",
        F,
        "Mean Shannon entropy of the characters of each name asked for: high for \
         generated or encoded names.",
        Some("the entity sent no DNS query with a question in the window"),
        |a| (a.dns_qname_entropy_out.n > 0).then_some(a.dns_qname_entropy_out.mean),
    ),
    spec(
        "dns_null_queries_out",
        "dns",
        "queries",
        C,
        "DNS queries for NULL records (type 10) the entity sent: no ordinary \
         resolver asks for them; DNS tunnels such as iodine carry data in their answers.",
        NEVER,
        |a| n(a.dns_null_out),
    ),
    // UDP reflection
    spec(
        "udp_amplifier_in",
        "reflection",
        "packets",
        C,
        "UDP packets the entity received from a well-known amplifier port (NTP, SNMP, \
         SSDP, CLDAP, memcached, CharGEN and others: AMPLIFIER_PORTS in \
         operators/src/features/mod.rs) to which it sent nothing in the window: \
         responses without requests. Multicast and broadcast destinations are not counted.",
        NEVER,
        |a| {
            n(a.amp_in
                .iter()
                .filter(|(p, _)| !a.dst_ports_out.contains_key(p))
                .map(|(_, c)| *c)
                .sum())
        },
    ),
    spec(
        "udp_amplifier_sources_in",
        "reflection",
        "hosts",
        C,
        "Distinct hosts that sent the entity UDP packets from a well-known amplifier port.",
        NEVER,
        |a| n(a.amp_sources_in.len() as u64),
    ),
    // ICMP echo
    spec(
        "icmp_echo_out",
        "icmp",
        "messages",
        C,
        "ICMP and ICMPv6 echo requests and replies the entity sent.",
        NEVER,
        |a| n(a.echo_out),
    ),
    spec(
        "icmp_echo_bytes_out",
        "icmp",
        "bytes",
        C,
        "Data bytes (after identifier and sequence number) of the echo requests and \
         replies the entity sent: ping sends tens of bytes a second, a tunnel over ICMP \
         what it carries.",
        NEVER,
        |a| n(a.echo_bytes_out),
    ),
    spec(
        "icmp_echo_sizes_out",
        "icmp",
        "sizes",
        C,
        "Distinct data sizes of the echo messages the entity sent: ping keeps one \
         size, a tunnel's sizes follow what it carries.",
        Some("the entity sent no echo request or reply in the window"),
        |a| (a.echo_out > 0).then_some(a.echo_sizes_out.len() as f64),
    ),
    spec(
        "icmp_echo_entropy_mean_out",
        "icmp",
        "bits/byte",
        F,
        "Mean Shannon entropy of the bytes of each echo message's data the entity \
         sent (messages with data): ping's fixed patterns stay low for their length, \
         encrypted or compressed data carried in echoes approaches 8.",
        Some("the entity sent no echo request or reply with data in the window"),
        |a| (a.echo_entropy_out.n > 0).then_some(a.echo_entropy_out.mean),
    ),
    // correlation
    spec(
        "bytes_conns_corr",
        "correlation",
        "r",
        F,
        "Pearson correlation, over the window's twelve 5 s bins, of the bytes the \
         entity sent and received with the TCP connections it started or was asked \
         for (SYNs without ACK): near 1 when every connection carries a similar \
         load, as in scripted transfers.",
        Some(
            "the bytes or the connection starts are the same in every 5 s bin of the window \
              (e.g. no TCP connection started)",
        ),
        |a| pearson(a.bins.iter().map(|b| (b.bytes as f64, b.conns as f64))),
    ),
];

/// The feature the window operator fills from the entity's recent peers.
pub const NEW_PEERS_OUT: &str = "new_peers_out";

fn cv(m: &crate::Moments) -> Option<f64> {
    (m.n > 0 && m.mean > 0.0).then(|| m.std() / m.mean)
}

fn burstiness(m: &crate::Moments) -> Option<f64> {
    let (sd, mean) = (m.std(), m.mean);
    (m.n > 0 && sd + mean > 0.0).then(|| (sd - mean) / (sd + mean))
}
