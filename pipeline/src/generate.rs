//! A sample capture: a small office network, written as a real pcap file.
//!
//! Every frame is a correctly formed Ethernet/IP/TCP-UDP-ICMP packet built with
//! etherparse and written with libpcap; timing comes from a seeded generator, so
//! the same options give the same bytes. What is in it:
//! - each client resolves a name (UDP/53), then opens a TCP session to a web server
//!   (handshake, request, response segments, FIN/ACK close) every 5–40 s;
//! - each client pings its gateway once a minute (ICMP echo request/reply);
//! - every fourth client also speaks IPv6 (UDP/123 to a time server every 64 s);
//! - from minute 2, one host SYN-scans ports 1–300 of a server: closed ports answer
//!   RST-ACK, open ones SYN-ACK followed by the scanner's RST.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use etherparse::PacketBuilder;

use crate::error::PipelineError;

/// Start of every generated capture: 2024-01-15 09:00:00 UTC.
pub const EPOCH_S: i64 = 1_705_309_200;

pub struct GenerateOptions {
    pub out: PathBuf,
    pub seed: u64,
    pub hosts: u16,
    pub minutes: u16,
    /// Whether one host scans a server's ports (from minute 2).
    pub scan: bool,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

#[derive(Clone, Copy)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

fn mac(ip: Ip) -> [u8; 6] {
    match ip {
        Ip::V4(a) => [0x02, 0, a[0], a[1], a[2], a[3]],
        Ip::V6(a) => [0x02, 0x66, a[12], a[13], a[14], a[15]],
    }
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp { flags: u8, seq: u32, ack: u32 },
    Udp,
    Echo { reply: bool, id: u16, seq: u16 },
}

struct Out {
    frames: Vec<(i64, u64, Vec<u8>)>,
    n: u64,
}

impl Out {
    // One argument per header field keeps every call site readable as a packet.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        ts_ns: i64,
        src: Ip,
        dst: Ip,
        sport: u16,
        dport: u16,
        l4: L4,
        payload_len: usize,
    ) {
        let payload = vec![0x61u8; payload_len];
        let eth = PacketBuilder::ethernet2(mac(src), mac(dst));
        let ip = match (src, dst) {
            (Ip::V4(s), Ip::V4(d)) => eth.ipv4(s, d, 64),
            (Ip::V6(s), Ip::V6(d)) => eth.ipv6(s, d, 64),
            _ => return,
        };
        let mut frame = Vec::with_capacity(payload_len + 80);
        let written = match l4 {
            L4::Tcp { flags, seq, ack } => {
                let mut b = ip.tcp(sport, dport, seq, 64240);
                if flags & 0x02 != 0 {
                    b = b.syn();
                }
                if flags & 0x10 != 0 {
                    b = b.ack(ack);
                }
                if flags & 0x01 != 0 {
                    b = b.fin();
                }
                if flags & 0x04 != 0 {
                    b = b.rst();
                }
                if flags & 0x08 != 0 {
                    b = b.psh();
                }
                b.write(&mut frame, &payload).is_ok()
            }
            L4::Udp => ip.udp(sport, dport).write(&mut frame, &payload).is_ok(),
            L4::Echo { reply, id, seq } => match (src, reply) {
                (Ip::V4(_), false) => ip
                    .icmpv4_echo_request(id, seq)
                    .write(&mut frame, &payload)
                    .is_ok(),
                (Ip::V4(_), true) => ip
                    .icmpv4_echo_reply(id, seq)
                    .write(&mut frame, &payload)
                    .is_ok(),
                (Ip::V6(_), false) => ip
                    .icmpv6_echo_request(id, seq)
                    .write(&mut frame, &payload)
                    .is_ok(),
                (Ip::V6(_), true) => ip
                    .icmpv6_echo_reply(id, seq)
                    .write(&mut frame, &payload)
                    .is_ok(),
            },
        };
        if written {
            self.frames.push((ts_ns, self.n, frame));
            self.n += 1;
        }
    }

    /// A whole TCP session from `c` to `s`: handshake, request, response, close.
    #[allow(clippy::too_many_arguments)]
    fn tcp_session(
        &mut self,
        rng: &mut Rng,
        t: i64,
        c: Ip,
        s: Ip,
        cport: u16,
        sport: u16,
        req: usize,
        resp: usize,
    ) {
        let rtt = rng.range(1_000_000, 30_000_000) as i64;
        let (mut cs, mut ss) = (rng.next() as u32, rng.next() as u32);
        let mut t = t;
        let tcp = |flags, seq, ack| L4::Tcp { flags, seq, ack };
        self.push(t, c, s, cport, sport, tcp(0x02, cs, 0), 0);
        t += rtt / 2;
        self.push(t, s, c, sport, cport, tcp(0x12, ss, cs.wrapping_add(1)), 0);
        cs = cs.wrapping_add(1);
        ss = ss.wrapping_add(1);
        t += rtt / 2;
        self.push(t, c, s, cport, sport, tcp(0x10, cs, ss), 0);
        self.push(t + 20_000, c, s, cport, sport, tcp(0x18, cs, ss), req);
        cs = cs.wrapping_add(req as u32);
        t += rtt / 2 + rng.range(200_000, 5_000_000) as i64;
        let mut left = resp;
        while left > 0 {
            let seg = left.min(1448);
            left -= seg;
            let flags = if left == 0 { 0x18 } else { 0x10 };
            self.push(t, s, c, sport, cport, tcp(flags, ss, cs), seg);
            ss = ss.wrapping_add(seg as u32);
            t += 120_000;
            self.push(t + rtt / 2, c, s, cport, sport, tcp(0x10, cs, ss), 0);
        }
        t += rtt;
        self.push(t, c, s, cport, sport, tcp(0x11, cs, ss), 0);
        t += rtt / 2;
        self.push(t, s, c, sport, cport, tcp(0x11, ss, cs.wrapping_add(1)), 0);
        t += rtt / 2;
        self.push(
            t,
            c,
            s,
            cport,
            sport,
            tcp(0x10, cs.wrapping_add(1), ss.wrapping_add(1)),
            0,
        );
    }
}

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>()
        .map(|a| a.octets())
        .unwrap_or_default()
}

/// Writes the sample capture; returns the number of packets.
pub fn generate_capture(o: &GenerateOptions) -> Result<u64, PipelineError> {
    if u64::from(o.hosts) * u64::from(o.minutes) > 250_000 {
        return Err(PipelineError::Dataflow(
            "hosts x minutes may be at most 250000 (the capture is built in memory)".into(),
        ));
    }
    let mut rng = Rng(o.seed ^ 0x00a0_5c45);
    let mut out = Out {
        frames: Vec::new(),
        n: 0,
    };
    let start = EPOCH_S * 1_000_000_000;
    let end = start + i64::from(o.minutes) * 60 * 1_000_000_000;
    let gateway = Ip::V4(v4("10.1.0.1"));
    let dns = Ip::V4(v4("10.1.1.53"));
    let servers = [
        Ip::V4(v4("10.1.1.10")),
        Ip::V4(v4("198.51.100.20")),
        Ip::V4(v4("203.0.113.5")),
    ];
    let ntp6 = Ip::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x7b]);

    for h in 0..o.hosts {
        let a = u32::from(Ipv4Addr::new(10, 1, 0, 10)) + u32::from(h);
        let client = Ip::V4(Ipv4Addr::from(a).octets());
        let mut port = 32768 + (rng.next() % 20000) as u16;
        // Sessions.
        let mut t = start + rng.range(0, 5_000_000_000) as i64;
        while t < end {
            port = if port >= 60999 { 32768 } else { port + 1 };
            let q = rng.range(40, 90) as usize;
            out.push(t, client, dns, port, 53, L4::Udp, q);
            out.push(
                t + rng.range(300_000, 20_000_000) as i64,
                dns,
                client,
                53,
                port,
                L4::Udp,
                q + rng.range(16, 200) as usize,
            );
            let srv = servers[(rng.next() % servers.len() as u64) as usize];
            let dport = if rng.next().is_multiple_of(3) {
                80
            } else {
                443
            };
            port = if port >= 60999 { 32768 } else { port + 1 };
            let req = rng.range(200, 900) as usize;
            let resp = rng.range(300, 60_000) as usize;
            out.tcp_session(
                &mut rng,
                t + 25_000_000,
                client,
                srv,
                port,
                dport,
                req,
                resp,
            );
            t += rng.range(5_000_000_000, 40_000_000_000) as i64;
        }
        // Pings.
        let mut t = start + rng.range(0, 60_000_000_000) as i64;
        let mut seq = 0u16;
        while t < end {
            seq = seq.wrapping_add(1);
            out.push(
                t,
                client,
                gateway,
                0,
                0,
                L4::Echo {
                    reply: false,
                    id: h,
                    seq,
                },
                56,
            );
            out.push(
                t + 400_000,
                gateway,
                client,
                0,
                0,
                L4::Echo {
                    reply: true,
                    id: h,
                    seq,
                },
                56,
            );
            t += 60_000_000_000;
        }
        // IPv6 time sync for every fourth host.
        if h % 4 == 0 {
            let mut c6 = [0xfdu8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            c6[14..].copy_from_slice(&(h + 0x10).to_be_bytes());
            let c6 = Ip::V6(c6);
            let mut t = start + rng.range(0, 64_000_000_000) as i64;
            while t < end {
                out.push(t, c6, ntp6, 123, 123, L4::Udp, 48);
                out.push(t + 1_500_000, ntp6, c6, 123, 123, L4::Udp, 48);
                t += 64_000_000_000;
            }
        }
    }
    // The port scan.
    let scanner = Ip::V4(v4("10.1.0.250"));
    let target = servers[0];
    let mut t = start + 120 * 1_000_000_000;
    for p in 1..=300u16 {
        if !o.scan {
            break;
        }
        if t >= end {
            break;
        }
        let seq = rng.next() as u32;
        out.push(
            t,
            scanner,
            target,
            61_000,
            p,
            L4::Tcp {
                flags: 0x02,
                seq,
                ack: 0,
            },
            0,
        );
        let open = p == 80 || p == 443 || p == 22;
        let flags = if open { 0x12 } else { 0x14 };
        out.push(
            t + 300_000,
            target,
            scanner,
            p,
            61_000,
            L4::Tcp {
                flags,
                seq: rng.next() as u32,
                ack: seq.wrapping_add(1),
            },
            0,
        );
        if open {
            out.push(
                t + 600_000,
                scanner,
                target,
                61_000,
                p,
                L4::Tcp {
                    flags: 0x04,
                    seq: seq.wrapping_add(1),
                    ack: 0,
                },
                0,
            );
        }
        t += 50_000_000;
    }

    out.frames.sort_by_key(|(ts, n, _)| (*ts, *n));
    write_pcap(&o.out, &out.frames)?;
    Ok(out.frames.len() as u64)
}

fn write_pcap(path: &PathBuf, frames: &[(i64, u64, Vec<u8>)]) -> Result<(), PipelineError> {
    let err = |e: pcap::Error| PipelineError::Io {
        context: format!("write {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PipelineError::Io {
            context: format!("create {}", dir.display()),
            source,
        })?;
    }
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(err)?;
    let mut sf = dead.savefile(path).map_err(err)?;
    for (ts, _, data) in frames {
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: (ts / 1_000_000_000) as libc::time_t,
                tv_usec: ((ts % 1_000_000_000) / 1000) as libc::suseconds_t,
            },
            caplen: data.len() as u32,
            len: data.len() as u32,
        };
        sf.write(&pcap::Packet::new(&header, data));
    }
    sf.flush().map_err(err)?;
    Ok(())
}
