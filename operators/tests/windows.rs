//! The window operator against an independent, from-scratch computation of every
//! feature in the catalogue, on seeded random traffic, under 1, 2 and 4 workers.
//!
//! (Over 600 lines: the independent computation has to cover the whole
//! catalogue.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use amoskys_operators::features::defs;
use amoskys_operators::{Featurize, WindowCounters};
use amoskys_schemas::{
    Addr, DnsInfo, EchoInfo, FeatureRow, HOP_NS, Packet, Proto, TcpFlags, pane_of,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::core::UnorderedInput;

const S: i64 = 1_000_000_000;

/// Random traffic among a few hosts over `minutes`, in time order.
fn traffic(seed: u64, n: usize, minutes: i64) -> Vec<Packet> {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts: Vec<Addr> = (1..=6)
        .map(|i| Addr::v4([10, 0, 0, i]))
        .chain([Addr::v6([
            0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
        ])])
        .collect();
    let t0 = 1_700_000_000 * S;
    let mut ts: Vec<i64> = (0..n)
        .map(|_| t0 + rng.random_range(0..minutes * 60 * S))
        .collect();
    // Some packets exactly on pane boundaries.
    for t in ts.iter_mut().step_by(37) {
        *t = (*t / HOP_NS) * HOP_NS;
    }
    ts.sort_unstable();
    ts.into_iter()
        .enumerate()
        .map(|(i, ts_ns)| {
            let src = hosts[rng.random_range(0..hosts.len())];
            let mut dst = hosts[rng.random_range(0..hosts.len())];
            if dst == src && rng.random_bool(0.8) {
                dst = hosts[(hosts.iter().position(|h| *h == src).unwrap_or(0) + 1) % hosts.len()];
            }
            let proto = [
                Proto::TCP,
                Proto::TCP,
                Proto::TCP,
                Proto::UDP,
                Proto::ICMP,
                47,
            ][rng.random_range(0..6)];
            let flags = if proto == Proto::TCP {
                [
                    TcpFlags::SYN,
                    TcpFlags::SYN | TcpFlags::ACK,
                    TcpFlags::ACK,
                    TcpFlags::ACK | TcpFlags::PSH,
                    TcpFlags::FIN | TcpFlags::ACK,
                    TcpFlags::RST,
                    TcpFlags::RST | TcpFlags::ACK,
                ][rng.random_range(0..7)]
            } else {
                0
            };
            let (sport, dport) = match proto {
                // 1900 (SSDP) is an amplifier port: some of its packets answer
                // nothing the receiver sent.
                Proto::TCP | Proto::UDP => (
                    [80u16, 443, 22, 5000, 5001, 1900][rng.random_range(0..6)],
                    if rng.random_bool(0.005) {
                        1900
                    } else {
                        [80u16, 443, 22, 5000, 5001, 53][rng.random_range(0..6)]
                    },
                ),
                Proto::ICMP => (8, 0),
                _ => (0, 0),
            };
            // DNS on UDP port 53: queries and responses with a few names.
            let dns = if proto == Proto::UDP && dport == 53 {
                let name = rng.random_range(0..5u64);
                DnsInfo {
                    kind: rng.random_range(1..=2),
                    rcode: [0, 0, 3][rng.random_range(0..3)],
                    qtype: [0u16, 1, 28, 16, 10][rng.random_range(0..5)],
                    qname_len: 8 + name as u16,
                    qname_entropy_bits: (2.0f32 + name as f32 / 4.0).to_bits(),
                    qname_hash: name,
                    domain_keys: [name + 1, 0, 0],
                }
            } else {
                DnsInfo::default()
            };
            Packet {
                ts_ns,
                seq: i as u64,
                src,
                dst,
                sport,
                dport,
                proto,
                tcp_flags: flags,
                fragment: false,
                ip_len: rng.random_range(40..1500),
                tcp_window: if proto == Proto::TCP {
                    [0u16, 1024, 65535][rng.random_range(0..3)]
                } else {
                    0
                },
                dns,
                dhcp: Default::default(),
                echo: if proto == Proto::ICMP {
                    EchoInfo {
                        kind: rng.random_range(0..=2),
                        len: [0u16, 32, 56, 56, 1000][rng.random_range(0..5)],
                        entropy_bits: (rng.random_range(0.0f32..8.0)).to_bits(),
                    }
                } else {
                    EchoInfo::default()
                },
                ..Default::default()
            }
        })
        .collect()
}

/// Runs the window operator with `workers` workers; returns rows sorted by key.
fn run(packets: &[Packet], workers: usize) -> Vec<FeatureRow> {
    run_capped(packets, workers, usize::MAX, Arc::default())
}

/// [`run`] with at most `max_entities` entities a window on each worker.
fn run_capped(
    packets: &[Packet],
    workers: usize,
    max_entities: usize,
    counters: Arc<WindowCounters>,
) -> Vec<FeatureRow> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let (pk, o) = (Arc::new(packets.to_vec()), out.clone());
    timely::execute(timely::Config::process(workers), move |worker| {
        let o = o.clone();
        let counters = counters.clone();
        let (mut input, mut cap) = worker.dataflow::<u64, _, _>(|scope| {
            let ((input, cap), stream) =
                scope.new_unordered_input::<CapacityContainerBuilder<Vec<Packet>>>();
            stream
                .featurize(counters, max_entities)
                .inspect(move |r: &FeatureRow| {
                    if let Ok(mut g) = o.lock() {
                        g.push(r.clone());
                    }
                });
            (input, cap)
        });
        if worker.index() == 0 {
            for chunk in pk.chunks(97) {
                for p in chunk {
                    let pane = pane_of(p.ts_ns);
                    input
                        .activate()
                        .session(&cap.delayed(&pane))
                        .give(p.clone());
                }
                let last = pane_of(chunk[chunk.len() - 1].ts_ns);
                if last > *cap.time() + 1 {
                    cap.downgrade(&(last - 1));
                }
                worker.step();
            }
        }
        drop(cap);
        while worker.step() {}
    })
    .expect("timely");
    let mut rows = out.lock().map(|g| g.clone()).unwrap_or_default();
    rows.sort_by(|a, b| (a.window, &a.entity).cmp(&(b.window, &b.entity)));
    rows
}

/// Every feature of every (entity, window), computed from the raw packet list.
fn oracle(packets: &[Packet]) -> BTreeMap<(u64, String), BTreeMap<&'static str, Option<f64>>> {
    let mut by: BTreeMap<(u64, Addr), Vec<(bool, &Packet)>> = BTreeMap::new();
    // Peers each entity sent to, per pane: the memory "new peers" are judged by.
    let mut sent_to: BTreeMap<(u64, Addr), BTreeSet<Addr>> = BTreeMap::new();
    for p in packets {
        let pane = pane_of(p.ts_ns);
        sent_to.entry((pane, p.src)).or_default().insert(p.dst);
        for w in [pane.saturating_sub(1), pane] {
            by.entry((w, p.src)).or_default().push((true, p));
            by.entry((w, p.dst)).or_default().push((false, p));
        }
    }
    let mut out = BTreeMap::new();
    for ((w, e), list) in by {
        let out_p: Vec<&Packet> = list.iter().filter(|(o, _)| *o).map(|(_, p)| *p).collect();
        let in_p: Vec<&Packet> = list.iter().filter(|(o, _)| !*o).map(|(_, p)| *p).collect();
        let mut f: BTreeMap<&'static str, Option<f64>> = BTreeMap::new();
        let cnt = |v: &[&Packet], pred: &dyn Fn(&Packet) -> bool| {
            v.iter().filter(|p| pred(p)).count() as f64
        };
        let bytes = |v: &[&Packet]| v.iter().map(|p| f64::from(p.ip_len)).sum::<f64>();
        let stats = |xs: Vec<f64>| -> [Option<f64>; 4] {
            if xs.is_empty() {
                return [None; 4];
            }
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            let min = xs.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            [Some(min), Some(max), Some(mean), Some(var.sqrt())]
        };
        let sizes = |v: &[&Packet]| v.iter().map(|p| f64::from(p.ip_len)).collect::<Vec<_>>();
        let gaps = |v: &[&Packet]| {
            v.windows(2)
                .map(|w| (w[1].ts_ns - w[0].ts_ns) as f64 / 1e9)
                .collect::<Vec<_>>()
        };
        let is = |p: &Packet, flag: u8| p.proto == Proto::TCP && p.tcp_flags & flag != 0;
        let syn = |p: &Packet| is(p, TcpFlags::SYN) && !is(p, TcpFlags::ACK);
        let synack = |p: &Packet| is(p, TcpFlags::SYN) && is(p, TcpFlags::ACK);
        let (po, pi, bo, bi) = (
            out_p.len() as f64,
            in_p.len() as f64,
            bytes(&out_p),
            bytes(&in_p),
        );
        f.insert("packets_out", Some(po));
        f.insert("packets_in", Some(pi));
        f.insert("bytes_out", Some(bo));
        f.insert("bytes_in", Some(bi));
        f.insert("packets_out_per_s", Some(po / 60.0));
        f.insert("packets_in_per_s", Some(pi / 60.0));
        f.insert("bytes_out_per_s", Some(bo / 60.0));
        f.insert("bytes_in_per_s", Some(bi / 60.0));
        f.insert("bytes_out_share", (bo + bi > 0.0).then(|| bo / (bo + bi)));
        for (name, proto) in [
            ("tcp", vec![Proto::TCP]),
            ("udp", vec![Proto::UDP]),
            ("icmp", vec![Proto::ICMP, Proto::ICMPV6]),
        ] {
            let key_out: &'static str = Box::leak(format!("{name}_packets_out").into_boxed_str());
            let key_in: &'static str = Box::leak(format!("{name}_packets_in").into_boxed_str());
            f.insert(key_out, Some(cnt(&out_p, &|p| proto.contains(&p.proto))));
            f.insert(key_in, Some(cnt(&in_p, &|p| proto.contains(&p.proto))));
        }
        for (dir, v) in [("out", &out_p), ("in", &in_p)] {
            let [a, b, c, d] = stats(sizes(v));
            let [g1, g2, g3, g4] = stats(gaps(v));
            // Nearest rank over the sorted values; gaps in whole µs with all but
            // the 4 leading bits cleared (exact below 16 µs).
            let rank = |mut xs: Vec<f64>, q: f64| -> Option<f64> {
                xs.sort_by(f64::total_cmp);
                let n = xs.len();
                (n > 0).then(|| xs[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
            };
            let bucket = |ns: i64| -> f64 {
                let us = (ns.max(0) / 1000) as u64;
                let kept = if us < 16 {
                    us
                } else {
                    let shift = 64 - us.leading_zeros() - 4;
                    (us >> shift) << shift
                };
                kept as f64 / 1e6
            };
            let buckets: Vec<f64> = v
                .windows(2)
                .map(|w| bucket(w[1].ts_ns - w[0].ts_ns))
                .collect();
            for (k, val) in [
                ("pkt_size_{}_p50", rank(sizes(v), 0.5)),
                ("pkt_size_{}_p90", rank(sizes(v), 0.9)),
                ("iat_{}_p50", rank(buckets.clone(), 0.5)),
                ("iat_{}_p90", rank(buckets.clone(), 0.9)),
                ("pkt_size_{}_min", a),
                ("pkt_size_{}_max", b),
                ("pkt_size_{}_mean", c),
                ("pkt_size_{}_std", d),
                ("iat_{}_min", g1),
                ("iat_{}_max", g2),
                ("iat_{}_mean", g3),
                ("iat_{}_std", g4),
            ] {
                f.insert(Box::leak(k.replace("{}", dir).into_boxed_str()), val);
            }
        }
        let all_ts: Vec<i64> = list.iter().map(|(_, p)| p.ts_ns).collect();
        let span = all_ts
            .iter()
            .max()
            .zip(all_ts.iter().min())
            .map_or(0.0, |(a, b)| (a - b) as f64 / 1e9);
        f.insert("active_span_s", Some(span));
        let flagc = |v: &[&Packet], pred: &dyn Fn(&Packet) -> bool| Some(cnt(v, pred));
        f.insert("tcp_syn_out", flagc(&out_p, &syn));
        f.insert("tcp_syn_in", flagc(&in_p, &syn));
        f.insert("tcp_synack_out", flagc(&out_p, &synack));
        f.insert("tcp_synack_in", flagc(&in_p, &synack));
        for (flag, name) in [
            (TcpFlags::FIN, "fin"),
            (TcpFlags::RST, "rst"),
            (TcpFlags::PSH, "psh"),
        ] {
            f.insert(
                Box::leak(format!("tcp_{name}_out").into_boxed_str()),
                flagc(&out_p, &|p| is(p, flag)),
            );
            f.insert(
                Box::leak(format!("tcp_{name}_in").into_boxed_str()),
                flagc(&in_p, &|p| is(p, flag)),
            );
        }
        let tcp_out = cnt(&out_p, &|p| p.proto == Proto::TCP);
        let tcp_in = cnt(&in_p, &|p| p.proto == Proto::TCP);
        let syn_out = cnt(&out_p, &syn);
        f.insert(
            "tcp_syn_ratio_out",
            (tcp_out > 0.0).then(|| syn_out / tcp_out),
        );
        f.insert(
            "tcp_rst_ratio_in",
            (tcp_in > 0.0).then(|| cnt(&in_p, &|p| is(p, TcpFlags::RST)) / tcp_in),
        );
        f.insert(
            "tcp_synack_per_syn",
            (syn_out > 0.0).then(|| cnt(&in_p, &synack) / syn_out),
        );
        let peers_out: BTreeSet<Addr> = out_p.iter().map(|p| p.dst).collect();
        let peers_in: BTreeSet<Addr> = in_p.iter().map(|p| p.src).collect();
        let ported = |p: &&&Packet| p.proto == Proto::TCP || p.proto == Proto::UDP;
        let dports: Vec<u16> = out_p.iter().filter(ported).map(|p| p.dport).collect();
        let lports: BTreeSet<u16> = in_p.iter().filter(ported).map(|p| p.dport).collect();
        f.insert("distinct_peers_out", Some(peers_out.len() as f64));
        let before: BTreeSet<Addr> = (w.saturating_sub(4)..w)
            .filter_map(|q| sent_to.get(&(q, e)))
            .flatten()
            .copied()
            .collect();
        f.insert(
            "new_peers_out",
            Some(peers_out.difference(&before).count() as f64),
        );
        let entropy = |keys: Vec<u64>| -> Option<f64> {
            let mut h: BTreeMap<u64, f64> = BTreeMap::new();
            keys.iter().for_each(|k| *h.entry(*k).or_default() += 1.0);
            let t = keys.len() as f64;
            (t > 0.0).then(|| {
                h.values()
                    .map(|c| -(c / t) * (c / t).log2())
                    .sum::<f64>()
                    .max(0.0)
            })
        };
        f.insert(
            "peer_entropy_out",
            entropy(out_p.iter().map(|p| p.dst.route_hash()).collect()),
        );
        // Twelve 5 s bins from the window's start: bytes and connection starts.
        let mut bins = [(0.0f64, 0.0f64); 12];
        for (_, p) in &list {
            let b = ((p.ts_ns - w as i64 * HOP_NS) / 5_000_000_000) as usize;
            bins[b].0 += f64::from(p.ip_len);
            bins[b].1 += f64::from(u8::from(syn(p)));
        }
        let mx = bins.iter().map(|b| b.0).sum::<f64>() / 12.0;
        let my = bins.iter().map(|b| b.1).sum::<f64>() / 12.0;
        let cxy: f64 = bins.iter().map(|b| (b.0 - mx) * (b.1 - my)).sum();
        let cxx: f64 = bins.iter().map(|b| (b.0 - mx).powi(2)).sum();
        let cyy: f64 = bins.iter().map(|b| (b.1 - my).powi(2)).sum();
        f.insert(
            "bytes_conns_corr",
            (cxx > 0.0 && cyy > 0.0).then(|| cxy / (cxx * cyy).sqrt()),
        );
        f.insert("distinct_peers_in", Some(peers_in.len() as f64));
        f.insert(
            "distinct_dst_ports_out",
            Some(dports.iter().collect::<BTreeSet<_>>().len() as f64),
        );
        f.insert("distinct_local_ports_in", Some(lports.len() as f64));
        let mut hist: BTreeMap<u16, f64> = BTreeMap::new();
        dports
            .iter()
            .for_each(|p| *hist.entry(*p).or_default() += 1.0);
        let tot = dports.len() as f64;
        f.insert(
            "dst_port_entropy_out",
            (tot > 0.0).then(|| {
                hist.values()
                    .map(|c| -(c / tot) * (c / tot).log2())
                    .sum::<f64>()
                    .max(0.0)
            }),
        );
        let tried: BTreeSet<(Addr, u16, u16)> = out_p
            .iter()
            .filter(|p| syn(p))
            .map(|p| (p.dst, p.sport, p.dport))
            .collect();
        let answered: BTreeSet<(Addr, u16, u16)> = in_p
            .iter()
            .filter(|p| synack(p))
            .map(|p| (p.src, p.dport, p.sport))
            .collect();
        let failed = tried.iter().filter(|k| !answered.contains(k)).count() as f64;
        f.insert("conn_attempts_out", Some(tried.len() as f64));
        f.insert("conn_failed_out", Some(failed));
        f.insert(
            "failed_conn_ratio_out",
            (!tried.is_empty()).then(|| failed / tried.len() as f64),
        );
        let tried_in: BTreeSet<(Addr, u16, u16)> = in_p
            .iter()
            .filter(|p| syn(p))
            .map(|p| (p.src, p.dport, p.sport))
            .collect();
        f.insert("conn_attempts_in", Some(tried_in.len() as f64));
        f.insert(
            "auth_conn_attempts_out",
            Some(
                tried
                    .iter()
                    .filter(|(_, _, port)| [21, 22, 23, 3389].contains(port))
                    .count() as f64,
            ),
        );
        let cv = |[_, _, mean, sd]: [Option<f64>; 4]| match (mean, sd) {
            (Some(m), Some(s)) if m > 0.0 => Some(s / m),
            _ => None,
        };
        let burst = |[_, _, mean, sd]: [Option<f64>; 4]| match (mean, sd) {
            (Some(m), Some(s)) if m + s > 0.0 => Some((s - m) / (s + m)),
            _ => None,
        };
        let out_gaps = stats(gaps(&out_p));
        let syns: Vec<&Packet> = out_p.iter().copied().filter(|p| syn(p)).collect();
        let syn_gaps = stats(gaps(&syns));
        f.insert("iat_out_cv", cv(out_gaps));
        f.insert("iat_out_burstiness", burst(out_gaps));
        f.insert("syn_interval_mean_out", syn_gaps[2]);
        f.insert("syn_interval_cv_out", cv(syn_gaps));
        f.insert("syn_burstiness_out", burst(syn_gaps));
        let syn_attempts: BTreeSet<(Addr, u16, u16)> = out_p
            .iter()
            .filter(|p| syn(p))
            .map(|p| (p.dst, p.sport, p.dport))
            .collect();
        f.insert(
            "syn_retransmits_out",
            Some(cnt(&out_p, &syn) - syn_attempts.len() as f64),
        );
        let syn_windows = stats(syns.iter().map(|p| f64::from(p.tcp_window)).collect());
        f.insert("syn_window_mean_out", syn_windows[2]);
        f.insert(
            "syn_window_distinct_out",
            Some(
                syns.iter()
                    .map(|p| p.tcp_window)
                    .collect::<BTreeSet<_>>()
                    .len() as f64,
            ),
        );
        f.insert(
            "tcp_zero_window_out",
            Some(cnt(&out_p, &|p| {
                p.proto == Proto::TCP && p.tcp_window == 0 && p.tcp_flags & TcpFlags::RST == 0
            })),
        );
        let queries: Vec<&Packet> = out_p
            .iter()
            .copied()
            .filter(|p| p.dns.kind == DnsInfo::QUERY)
            .collect();
        let asked: Vec<&Packet> = queries
            .iter()
            .copied()
            .filter(|p| p.dns.qtype != 0)
            .collect();
        let responses: Vec<&Packet> = in_p
            .iter()
            .copied()
            .filter(|p| p.dns.kind == DnsInfo::RESPONSE)
            .collect();
        let nx = responses.iter().filter(|p| p.dns.rcode == 3).count() as f64;
        f.insert("dns_queries_out", Some(queries.len() as f64));
        f.insert("dns_responses_in", Some(responses.len() as f64));
        f.insert("dns_nxdomain_in", Some(nx));
        f.insert(
            "dns_nxdomain_ratio_in",
            (!responses.is_empty()).then(|| nx / responses.len() as f64),
        );
        let distinct = |k: &dyn Fn(&Packet) -> u64| {
            Some(asked.iter().map(|p| k(p)).collect::<BTreeSet<u64>>().len() as f64)
        };
        f.insert("dns_distinct_qnames_out", distinct(&|p| p.dns.qname_hash));
        f.insert(
            "dns_distinct_qtypes_out",
            distinct(&|p| u64::from(p.dns.qtype)),
        );
        f.insert(
            "dns_txt_queries_out",
            Some(asked.iter().filter(|p| p.dns.qtype == 16).count() as f64),
        );
        let lens = stats(asked.iter().map(|p| f64::from(p.dns.qname_len)).collect());
        let ents = stats(asked.iter().map(|p| p.dns.qname_entropy()).collect());
        f.insert("dns_qname_len_mean_out", lens[2]);
        f.insert("dns_qname_len_max_out", lens[1]);
        f.insert("dns_qname_entropy_mean_out", ents[2]);
        f.insert(
            "dns_null_queries_out",
            Some(asked.iter().filter(|p| p.dns.qtype == 10).count() as f64),
        );
        let echo: Vec<&Packet> = out_p.iter().copied().filter(|p| p.echo.kind != 0).collect();
        f.insert("icmp_echo_out", Some(echo.len() as f64));
        f.insert(
            "icmp_echo_bytes_out",
            Some(echo.iter().map(|p| f64::from(p.echo.len)).sum()),
        );
        f.insert(
            "icmp_echo_sizes_out",
            (!echo.is_empty()).then(|| {
                echo.iter()
                    .map(|p| p.echo.len)
                    .collect::<BTreeSet<_>>()
                    .len() as f64
            }),
        );
        let echo_ent = stats(
            echo.iter()
                .filter(|p| p.echo.len > 0)
                .map(|p| p.echo.entropy())
                .collect(),
        );
        f.insert("icmp_echo_entropy_mean_out", echo_ent[2]);
        // Reflection: UDP from an amplifier port to which the entity sent nothing.
        let amplifiers = [
            17u16, 19, 69, 111, 123, 137, 161, 389, 520, 1434, 1900, 3283, 3702, 5353, 5683, 10001,
            11211, 27015, 27960, 37810,
        ];
        let amp: Vec<&Packet> = in_p
            .iter()
            .copied()
            .filter(|p| p.proto == Proto::UDP && amplifiers.contains(&p.sport))
            .collect();
        let asked_ports: BTreeSet<u16> = out_p
            .iter()
            .filter(|p| matches!(p.proto, Proto::TCP | Proto::UDP))
            .map(|p| p.dport)
            .collect();
        f.insert(
            "udp_amplifier_in",
            Some(
                amp.iter()
                    .filter(|p| !asked_ports.contains(&p.sport))
                    .count() as f64,
            ),
        );
        f.insert(
            "udp_amplifier_sources_in",
            Some(amp.iter().map(|p| p.src).collect::<BTreeSet<_>>().len() as f64),
        );
        f.insert(
            "dns_qname_spread_out",
            entropy(asked.iter().map(|p| p.dns.qname_hash).collect()),
        );
        out.insert((w, e.to_string()), f);
    }
    out
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

#[test]
fn every_feature_matches_a_from_scratch_computation() {
    let packets = traffic(11, 6000, 7);
    let rows = run(&packets, 1);
    let want = oracle(&packets);
    // The packet features; the event families are null in rows made from packets.
    let n_packet = amoskys_operators::features::catalogue().len();
    let defs: Vec<_> = defs().into_iter().take(n_packet).collect();
    assert_eq!(rows.len(), want.len(), "one row per entity per window");
    let mut checked = BTreeSet::new();
    for r in &rows {
        assert!(r.values[n_packet..].iter().all(|v| v.is_nan()));
        let exp = want
            .get(&(r.window, r.entity.to_string()))
            .unwrap_or_else(|| panic!("unexpected row {} {}", r.window, r.entity));
        for (i, d) in defs.iter().enumerate() {
            let v = &r.get(i);
            let e = exp
                .get(d.name)
                .unwrap_or_else(|| panic!("oracle lacks {}", d.name));
            assert!(
                close(*v, *e),
                "{} window {} entity {}: got {v:?}, want {e:?}",
                d.name,
                r.window,
                r.entity
            );
            if v.is_some_and(|x| x != 0.0) {
                checked.insert(d.name);
            }
        }
    }
    // The traffic exercises every feature with a non-zero value somewhere.
    let never: Vec<&str> = defs
        .iter()
        .map(|d| d.name)
        .filter(|n| !checked.contains(n))
        .collect();
    assert!(never.is_empty(), "features never non-zero: {never:?}");
}

#[test]
fn rows_do_not_depend_on_the_worker_count() {
    let packets = traffic(5, 4000, 4);
    let one = run(&packets, 1);
    assert!(!one.is_empty());
    let bits = |rows: &[FeatureRow]| -> Vec<(u64, String, Vec<u64>)> {
        rows.iter()
            .map(|r| {
                (
                    r.window,
                    r.entity.to_string(),
                    r.values.iter().map(|v| v.to_bits()).collect(),
                )
            })
            .collect()
    };
    for w in [2, 4] {
        assert_eq!(bits(&one), bits(&run(&packets, w)), "{w} workers");
    }
}

#[test]
fn a_packet_on_a_window_edge_lands_in_the_two_windows_that_contain_it() {
    let t = 1_700_000_010 * S; // not on a boundary
    let edge = (t / HOP_NS + 1) * HOP_NS; // exactly the start of pane p+1
    let mk = |ts_ns, seq| Packet {
        ts_ns,
        seq,
        src: Addr::v4([1, 1, 1, 1]),
        dst: Addr::v4([2, 2, 2, 2]),
        proto: Proto::UDP,
        sport: 1,
        dport: 2,
        ip_len: 100,
        ..Default::default()
    };
    let rows = run(&[mk(edge - 1, 0), mk(edge, 1)], 1);
    let p = (edge / HOP_NS) as u64;
    let per_window: BTreeMap<u64, f64> = rows
        .iter()
        .filter(|r| r.entity.to_string() == "1.1.1.1")
        .map(|r| (r.window, r.get(0).unwrap_or(0.0)))
        .collect();
    // edge - 1 ns is in pane p-1: windows p-2 and p-1. edge is in pane p: windows p-1 and p.
    let want: BTreeMap<u64, f64> = [(p - 2, 1.0), (p - 1, 2.0), (p, 1.0)].into_iter().collect();
    assert_eq!(per_window, want);
    assert_eq!(defs()[0].name, "packets_out");
}

#[test]
fn past_the_entity_limit_a_window_counts_the_rest_under_an_overflow_entity() {
    // Ten sources, one packet each, in one pane; three entities a window kept.
    let t = 1_700_000_010 * S;
    let packets: Vec<Packet> = (0..10u8)
        .map(|i| Packet {
            ts_ns: t + i64::from(i),
            seq: u64::from(i),
            src: Addr::v4([10, 0, 0, 10 + i]),
            dst: Addr::v4([10, 0, 0, 1]),
            proto: Proto::UDP,
            sport: 1000,
            dport: 53,
            ip_len: 100,
            ..Default::default()
        })
        .collect();
    let counters = Arc::new(WindowCounters::default());
    let rows = run_capped(&packets, 1, 3, counters.clone());
    let sent: BTreeMap<(u64, String), f64> = rows
        .iter()
        .map(|r| ((r.window, r.entity.to_string()), r.get(0).unwrap_or(0.0)))
        .collect();
    for w in sent.keys().map(|(w, _)| *w).collect::<BTreeSet<_>>() {
        let of = |e: &str| sent.get(&(w, e.to_string())).copied();
        // The destination and the first two sources keep rows of their own;
        // the other eight sources' packets are one row under `100::`.
        assert_eq!(of("10.0.0.10"), Some(1.0));
        assert_eq!(of("10.0.0.11"), Some(1.0));
        assert_eq!(of("10.0.0.12"), None);
        assert_eq!(of("100::"), Some(8.0), "{sent:?}");
        assert_eq!(sent.keys().filter(|(x, _)| *x == w).count(), 4);
    }
    // Two observations a packet (source and destination): the eight packets'
    // source sides and nothing else went over.
    assert_eq!(
        counters.overflow.load(std::sync::atomic::Ordering::Relaxed),
        8
    );
}
