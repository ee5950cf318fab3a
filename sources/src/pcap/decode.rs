//! Link-layer and IP decoding, on top of etherparse.
//!
//! etherparse's lax slicer handles Ethernet II, up to three VLAN tags (802.1Q,
//! 802.1ad QinQ), MACsec, IPv4 (options, fragments) and IPv6 (extension header
//! chains), TCP, UDP, ICMP and ICMPv6 on truncated (snaplen) packets. Written here are
//! only the thin framings etherparse has no lax entry for: Linux cooked capture v1 and
//! v2, BSD loopback (NULL/LOOP) and PPPoE session frames, each a fixed header of a few
//! bytes in front of an EtherType or IP packet.
//!
//! (Over 600 lines with its tests; the decoding is about 530.)

use amoskys_schemas::{Addr, DhcpInfo, Packet};
use amoskys_schemas::{DnsInfo, EchoInfo};
use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// libpcap link-layer header types the decoder understands.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_OPENBSD: i32 = 12;
    pub const RAW_BSDOS: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const NFLOG: i32 = 239;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// Why a packet did not become an IP [`Packet`]. A bounded set: each is a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// The capture's link type is not one the decoder reads.
    UnsupportedLinktype,
    /// Shorter than its link-layer header.
    TruncatedLink,
    /// ARP (or RARP) frame.
    Arp,
    /// An EtherType other than IPv4/IPv6/ARP (LLDP, STP/LLC, loopback test, ...).
    NonIp,
    /// The IP header is missing, truncated or invalid.
    BadIp,
    /// The timestamp is before 1970 or does not fit in 64-bit nanoseconds.
    BadTimestamp,
}

impl Skip {
    pub const ALL: [Skip; 6] = [
        Skip::UnsupportedLinktype,
        Skip::TruncatedLink,
        Skip::Arp,
        Skip::NonIp,
        Skip::BadIp,
        Skip::BadTimestamp,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::UnsupportedLinktype => "unsupported_linktype",
            Skip::TruncatedLink => "truncated_link_header",
            Skip::Arp => "arp",
            Skip::NonIp => "non_ip",
            Skip::BadIp => "bad_ip_header",
            Skip::BadTimestamp => "bad_timestamp",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters kept while decoding: what came in, what became a packet record, and
/// why the rest did not.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    pub packets: u64,
    /// Sum of on-the-wire lengths of all packets read.
    pub bytes: u64,
    pub ip_packets: u64,
    pub ip_bytes: u64,
    /// IP packets that are fragments (counted in `ip_packets` too).
    pub fragments: u64,
    /// IP packets whose transport header was cut short (counted in `ip_packets`).
    pub truncated_transport: u64,
    /// IP packets whose record's length disagrees with their IP header's (see
    /// `Packet::ip_len`): counted by the header, bounded by the record.
    pub length_mismatch: u64,
    /// Packets that did not become records, by reason (serialised as a map).
    #[serde(serialize_with = "skipped_by_reason")]
    pub skipped: [u64; Skip::ALL.len()],
}

fn skipped_by_reason<S: serde::Serializer>(
    v: &[u64; Skip::ALL.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (reason, n) in Skip::ALL.iter().zip(v) {
        m.serialize_entry(reason.as_str(), n)?;
    }
    m.end()
}

impl DecodeStats {
    pub fn skip(&mut self, s: Skip) {
        self.skipped[s.index()] += 1;
    }
    pub fn skipped(&self, s: Skip) -> u64 {
        self.skipped[s.index()]
    }
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
    pub fn merge(&mut self, o: &DecodeStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.ip_packets += o.ip_packets;
        self.ip_bytes += o.ip_bytes;
        self.fragments += o.fragments;
        self.truncated_transport += o.truncated_transport;
        self.length_mismatch += o.length_mismatch;
        for (a, b) in self.skipped.iter_mut().zip(o.skipped) {
            *a += b;
        }
    }
}

const ETH_PPPOE_SESSION: u16 = 0x8864;
const ETH_ARP: u16 = 0x0806;
const ETH_RARP: u16 = 0x8035;

/// Decodes one frame of link type `lt` into `out` (whose `ts_ns` and `seq` the
/// caller sets), `wire_len` bytes long on the wire as its record says, and
/// gives the transport payload as captured (empty for fragments and for what
/// has none). Never panics, whatever the bytes.
pub fn decode<'d>(
    lt: i32,
    data: &'d [u8],
    wire_len: u32,
    out: &mut Packet,
    stats: &mut DecodeStats,
) -> Result<&'d [u8], Skip> {
    let sliced = match lt {
        linktype::ETHERNET => match LaxSlicedPacket::from_ethernet(data) {
            Ok(s) => s,
            Err(_) => return Err(Skip::TruncatedLink),
        },
        linktype::RAW
        | linktype::RAW_OPENBSD
        | linktype::RAW_BSDOS
        | linktype::IPV4
        | linktype::IPV6 => LaxSlicedPacket::from_ip(data).map_err(|_| Skip::BadIp)?,
        linktype::LINUX_SLL => {
            // 16 bytes: packet type, ARPHRD, address length, address (8), protocol.
            let Some(proto) = data.get(14..16) else {
                return Err(Skip::TruncatedLink);
            };
            from_ether_type(u16::from_be_bytes([proto[0], proto[1]]), &data[16..])?
        }
        linktype::LINUX_SLL2 => {
            // 20 bytes: protocol, reserved, ifindex, ARPHRD, packet type, address length, address (8).
            if data.len() < 20 {
                return Err(Skip::TruncatedLink);
            }
            from_ether_type(u16::from_be_bytes([data[0], data[1]]), &data[20..])?
        }
        linktype::NULL | linktype::LOOP => {
            // 4-byte address family: host order for NULL, network order for LOOP. The
            // values for IPv4 (2) and the several IPv6 ones are recognised in either order.
            let Some(af) = data.get(..4) else {
                return Err(Skip::TruncatedLink);
            };
            let le = u32::from_le_bytes([af[0], af[1], af[2], af[3]]);
            let be = u32::from_be_bytes([af[0], af[1], af[2], af[3]]);
            let is_ip = |v: u32| matches!(v, 2 | 10 | 24 | 28 | 30);
            if !(is_ip(le) || is_ip(be)) {
                return Err(Skip::NonIp);
            }
            LaxSlicedPacket::from_ip(&data[4..]).map_err(|_| Skip::BadIp)?
        }
        linktype::NFLOG => nflog(data)?,
        _ => return Err(Skip::UnsupportedLinktype),
    };
    let payload = fill(&sliced, out, stats)?;
    out.ip_len = ip_length(&sliced, data, wire_len, stats);
    Ok(payload)
}

/// The IP packet's length: its header's total length (IPv6: 40 + payload
/// length), bounded by what the record says was on the wire past the link
/// header. A record that says otherwise (more than the IP packet beyond
/// Ethernet's minimum-frame padding and a frame check sequence, or less) is
/// counted in `length_mismatch`. An IPv6 jumbogram (payload length 0) gives no
/// length: the record's figure is all there is.
fn ip_length(s: &LaxSlicedPacket<'_>, frame: &[u8], wire_len: u32, stats: &mut DecodeStats) -> u32 {
    let (header, total) = match &s.net {
        Some(LaxNetSlice::Ipv4(v4)) => (v4.header().slice(), u32::from(v4.header().total_len())),
        Some(LaxNetSlice::Ipv6(v6)) => {
            let plen = v6.header().payload_length();
            (
                v6.header().slice(),
                if plen == 0 { 0 } else { 40 + u32::from(plen) },
            )
        }
        _ => return wire_len,
    };
    // Where the IP header starts in the frame: the link header's length (PPPoE
    // and NFLOG included). A header outside the frame cannot happen; then 0.
    let link = (header.as_ptr() as usize)
        .checked_sub(frame.as_ptr() as usize)
        .filter(|o| *o <= frame.len())
        .unwrap_or(0) as u32;
    let on_wire = wire_len.saturating_sub(link);
    if total == 0 {
        return on_wire;
    }
    if on_wire < total || on_wire > (total + 4).max(64u32.saturating_sub(link)) {
        stats.length_mismatch += 1;
    }
    total.min(on_wire)
}

fn from_ether_type(et: u16, payload: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    match et {
        ETH_ARP | ETH_RARP => Err(Skip::Arp),
        ETH_PPPOE_SESSION => pppoe(payload),
        _ => Ok(LaxSlicedPacket::from_ether_type(EtherType(et), payload)),
    }
}

/// Linux NFLOG: a 4-byte header (address family, version, resource id), then
/// type-length-value attributes padded to 4 bytes; type 9 holds the IP packet. The
/// TLV header is in the capturing host's byte order: little-endian is tried first.
fn nflog(data: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let Some(&family) = data.first() else {
        return Err(Skip::TruncatedLink);
    };
    if data.len() < 4 {
        return Err(Skip::TruncatedLink);
    }
    if !matches!(family, 2 | 10) {
        return Err(Skip::NonIp);
    }
    for little in [true, false] {
        let mut off = 4usize;
        while let Some(h) = data.get(off..off + 4) {
            let (len, ty) = if little {
                (
                    u16::from_le_bytes([h[0], h[1]]),
                    u16::from_le_bytes([h[2], h[3]]),
                )
            } else {
                (
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                )
            };
            let len = usize::from(len);
            if len < 4 || off + len > data.len() {
                break;
            }
            if ty & 0x7fff == 9 {
                return LaxSlicedPacket::from_ip(&data[off + 4..off + len])
                    .map_err(|_| Skip::BadIp);
            }
            off += len.div_ceil(4) * 4;
        }
    }
    Err(Skip::TruncatedLink)
}

/// PPPoE session frame: 6-byte PPPoE header, 2-byte PPP protocol, then IPv4 (0x0021)
/// or IPv6 (0x0057).
fn pppoe(p: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    let Some(proto) = p.get(6..8) else {
        return Err(Skip::TruncatedLink);
    };
    match u16::from_be_bytes([proto[0], proto[1]]) {
        0x0021 | 0x0057 => LaxSlicedPacket::from_ip(&p[8..]).map_err(|_| Skip::BadIp),
        _ => Err(Skip::NonIp),
    }
}

fn fill<'d>(
    s: &LaxSlicedPacket<'d>,
    out: &mut Packet,
    stats: &mut DecodeStats,
) -> Result<&'d [u8], Skip> {
    let mut first_fragment = false;
    let payload = match &s.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            out.src = Addr::v4(h.source());
            out.dst = Addr::v4(h.destination());
            first_fragment = h.fragments_offset().value() == 0;
            v4.payload()
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            out.src = Addr::v6(h.source());
            out.dst = Addr::v6(h.destination());
            v6.payload()
        }
        Some(LaxNetSlice::Arp(_)) => return Err(Skip::Arp),
        None => {
            return match s.ether_payload().map(|p| p.ether_type.0) {
                Some(0x0800) | Some(0x86dd) => Err(Skip::BadIp),
                Some(ETH_ARP) | Some(ETH_RARP) => Err(Skip::Arp),
                Some(ETH_PPPOE_SESSION) => {
                    let inner = s.ether_payload().map(|p| p.payload).unwrap_or_default();
                    let inner = pppoe(inner)?;
                    fill(&inner, out, stats)
                }
                _ if s.link.is_none() && s.link_exts.is_empty() => Err(Skip::BadIp),
                _ => Err(Skip::NonIp),
            };
        }
    };
    out.proto = payload.ip_number.0;
    out.fragment = payload.fragmented;
    out.sport = 0;
    out.dport = 0;
    out.tcp_flags = 0;
    out.tcp_window = 0;
    out.tcp_seq = 0;
    out.dns = DnsInfo::default();
    out.echo = EchoInfo::default();
    let mut data: &'d [u8] = &[];
    match &s.transport {
        Some(TransportSlice::Tcp(t)) => {
            out.sport = t.source_port();
            out.dport = t.destination_port();
            // Byte 13 of the TCP header holds CWR..FIN in the order of TcpFlags.
            out.tcp_flags = t.header_slice().get(13).copied().unwrap_or(0);
            out.tcp_window = t.window_size();
            out.tcp_seq = t.sequence_number();
            data = t.payload();
        }
        Some(TransportSlice::Udp(u)) => {
            out.sport = u.source_port();
            out.dport = u.destination_port();
            if out.sport == 53 || out.dport == 53 {
                out.dns = dns_info(u.payload());
            } else if matches!((out.sport, out.dport), (67 | 68, 67 | 68)) {
                out.dhcp = dhcp_info(u.payload());
            }
            data = u.payload();
        }
        Some(TransportSlice::Icmpv4(i)) => {
            out.sport = u16::from(i.type_u8());
            out.dport = u16::from(i.code_u8());
            data = i.payload();
            out.echo = echo_info(i.type_u8(), 8, 0, data);
        }
        Some(TransportSlice::Icmpv6(i)) => {
            out.sport = u16::from(i.type_u8());
            out.dport = u16::from(i.code_u8());
            data = i.payload();
            out.echo = echo_info(i.type_u8(), 128, 129, data);
        }
        _ if payload.fragmented && first_fragment && matches!(out.proto, 6 | 17) => {
            // The first fragment of a TCP or UDP datagram starts with its ports
            // (etherparse leaves fragmented payloads unparsed).
            let b = payload.payload;
            if b.len() >= 4 {
                out.sport = u16::from_be_bytes([b[0], b[1]]);
                out.dport = u16::from_be_bytes([b[2], b[3]]);
            }
            if out.proto == 6 {
                out.tcp_flags = b.get(13).copied().unwrap_or(0);
            }
        }
        _ => {
            if !payload.fragmented && s.stop_err.is_some() && matches!(out.proto, 1 | 6 | 17 | 58) {
                stats.truncated_transport += 1;
            }
        }
    }
    if out.fragment {
        stats.fragments += 1;
    }
    Ok(data)
}

/// The echo data of an ICMP message of type `t` (`request` and `reply` are
/// the echo types of its version); kind 0 for any other type. `data` follows
/// the identifier and sequence number (etherparse's header holds them).
fn echo_info(t: u8, request: u8, reply: u8, data: &[u8]) -> EchoInfo {
    let kind = match t {
        _ if t == request => EchoInfo::REQUEST,
        _ if t == reply => EchoInfo::REPLY,
        _ => return EchoInfo::default(),
    };
    EchoInfo {
        kind,
        len: data.len().min(usize::from(u16::MAX)) as u16,
        entropy_bits: (amoskys_schemas::byte_entropy(data) as f32).to_bits(),
    }
}

/// The payloads of one batch of packets, copied into one buffer (at most
/// `keep` bytes of each) and handed to the packets as slices of it when the
/// batch is complete: one allocation per batch, however many packets.
#[derive(Debug, Default)]
pub struct PayloadArena {
    keep: usize,
    buf: Vec<u8>,
    /// Per packet kept: its index in the batch and its span in `buf`.
    spans: Vec<(usize, usize, usize)>,
}

impl PayloadArena {
    /// Keeps at most `keep` bytes of each payload; 0 keeps none.
    pub fn new(keep: usize) -> Self {
        PayloadArena {
            keep,
            ..Default::default()
        }
    }

    /// Notes the payload of the batch's packet `index`.
    #[inline]
    pub fn note(&mut self, index: usize, payload: &[u8]) {
        if self.keep == 0 || payload.is_empty() {
            return;
        }
        let p = &payload[..payload.len().min(self.keep)];
        let at = self.buf.len();
        self.buf.extend_from_slice(p);
        self.spans.push((index, at, p.len()));
    }

    /// Gives each noted packet of `batch` its payload, and starts afresh.
    pub fn finish(&mut self, batch: &mut [Packet]) {
        if self.spans.is_empty() {
            return;
        }
        let cap = self.buf.capacity();
        let all = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(cap)));
        for (i, at, len) in self.spans.drain(..) {
            if let Some(p) = batch.get_mut(i) {
                p.payload = all.slice(at..at + len);
            }
        }
    }
}

/// The message type (option 53) and client hardware address of a DHCP message:
/// a BOOTP header of 236 bytes, the magic cookie, then options. Anything else,
/// or a hardware address that is not Ethernet's 6 bytes, gives type 0.
pub fn dhcp_info(m: &[u8]) -> DhcpInfo {
    let mut d = DhcpInfo::default();
    if m.len() < 240 || m[1] != 1 || m[2] != 6 || m[236..240] != [0x63, 0x82, 0x53, 0x63] {
        return d;
    }
    let mut i = 240;
    while let Some(&code) = m.get(i) {
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let Some(&len) = m.get(i + 1) else { break };
                if code == 53 && len == 1 {
                    if let Some(&t) = m.get(i + 2) {
                        d.msg_type = if (1..=8).contains(&t) { t } else { 0 };
                    }
                    break;
                }
                i += 2 + usize::from(len);
            }
        }
    }
    if d.msg_type != 0 {
        d.chaddr.copy_from_slice(&m[28..34]);
    }
    d
}

/// The header and first question of a DNS message. Read by hand: only these
/// few fields are wanted, and a DNS library would decode every record of every
/// response on the hot path. Anything malformed gives what could be read.
pub fn dns_info(m: &[u8]) -> DnsInfo {
    let mut d = DnsInfo::default();
    if m.len() < 12 {
        return d;
    }
    let flags = u16::from_be_bytes([m[2], m[3]]);
    d.kind = if flags & 0x8000 != 0 {
        DnsInfo::RESPONSE
    } else {
        DnsInfo::QUERY
    };
    d.rcode = (flags & 0x000f) as u8;
    if u16::from_be_bytes([m[4], m[5]]) == 0 {
        return d;
    }
    let mut name: Vec<u8> = Vec::with_capacity(64);
    let mut i = 12;
    loop {
        let Some(&len) = m.get(i) else { return d };
        if len == 0 {
            i += 1;
            break;
        }
        // A compression pointer or a reserved label type: not in a first question.
        if len & 0xc0 != 0 || name.len() + usize::from(len) > 253 {
            return d;
        }
        let Some(label) = m.get(i + 1..i + 1 + usize::from(len)) else {
            return d;
        };
        if !name.is_empty() {
            name.push(b'.');
        }
        name.extend_from_slice(label);
        i += 1 + usize::from(len);
    }
    if let Some(t) = m.get(i..i + 2) {
        d.qtype = u16::from_be_bytes([t[0], t[1]]);
    }
    d.qname_len = name.len() as u16;
    d.qname_entropy_bits = (amoskys_schemas::byte_entropy(&name) as f32).to_bits();
    d.qname_hash = amoskys_schemas::stable_hash(&name);
    d.domain_keys = amoskys_schemas::domain_keys(&name);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn dns_header_and_first_question() {
        let mut m = vec![0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["www", "exAmple", "com"] {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 16, 0, 1]);
        let d = dns_info(&m);
        assert_eq!(
            (d.kind, d.rcode, d.qtype, d.qname_len),
            (DnsInfo::RESPONSE, 3, 16, 15)
        );
        assert!(d.qname_entropy() > 2.0);
        // Domain keys ignore case and cover the name's last three and two labels.
        use amoskys_schemas::domain_key;
        assert_eq!(
            d.domain_keys,
            [
                domain_key(b"www.example.com"),
                0,
                domain_key(b"Example.COM")
            ]
        );
        // Truncated in the name: header facts only.
        let d = dns_info(&m[..16]);
        assert_eq!((d.kind, d.qname_len), (DnsInfo::RESPONSE, 0));
        assert_eq!(dns_info(&[1, 2, 3]).kind, 0);
    }

    #[test]
    fn dhcp_type_and_client_address() {
        let mut m = vec![0u8; 240];
        m[0] = 1; // BOOTREQUEST
        m[1] = 1; // Ethernet
        m[2] = 6;
        m[28..34].copy_from_slice(&[0x90, 0xb1, 0x1c, 0x99, 0x49, 0x29]);
        m[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
        m.extend_from_slice(&[0, 61, 2, 1, 2, 53, 1, 8, 255]);
        let d = dhcp_info(&m);
        assert_eq!(d.msg_type, 8);
        assert!(d.from_client());
        assert_eq!(d.client(), "90:b1:1c:99:49:29");
        // No cookie, a truncated option or an unknown type: not DHCP.
        let mut bad = m.clone();
        bad[236] = 0;
        assert_eq!(dhcp_info(&bad).msg_type, 0);
        assert_eq!(dhcp_info(&m[..246]).msg_type, 0);
        let mut odd = m.clone();
        odd[247] = 42;
        assert_eq!(dhcp_info(&odd).msg_type, 0);
    }

    fn tcp_ipv4(flags_syn: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(40000, 443, 7, 1024);
        if flags_syn {
            b = b.syn();
        }
        let mut v = Vec::new();
        b.write(&mut v, b"hello").expect("write");
        v
    }

    fn run(lt: i32, data: &[u8]) -> Result<Packet, Skip> {
        let mut p = Packet::default();
        let mut st = DecodeStats::default();
        decode(lt, data, data.len() as u32, &mut p, &mut st).map(|_| p)
    }

    fn eth(et: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&et.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn every_framing_reaches_the_same_tcp_packet() {
        let ip = tcp_ipv4(true);
        let mut vlan = vec![0u8; 12];
        vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        vlan.extend_from_slice(&ip);
        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x07, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        qinq.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(&ip);
        let mut pppoe = vec![0x11, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x21];
        pppoe.extend_from_slice(&ip);
        let cases: Vec<(i32, Vec<u8>)> = vec![
            (linktype::ETHERNET, eth(0x0800, &ip)),
            (linktype::ETHERNET, vlan),
            (linktype::ETHERNET, qinq),
            (linktype::ETHERNET, eth(0x8864, &pppoe)),
            (linktype::RAW, ip.clone()),
            (linktype::IPV4, ip.clone()),
            (linktype::LINUX_SLL, sll),
            (linktype::LINUX_SLL2, sll2),
            (linktype::NULL, null),
            (linktype::LOOP, lo),
        ];
        for (lt, frame) in cases {
            let p = run(lt, &frame).unwrap_or_else(|e| panic!("linktype {lt}: {e:?}"));
            assert_eq!(p.src, Addr::v4([10, 0, 0, 1]), "linktype {lt}");
            assert_eq!(
                (p.sport, p.dport, p.proto),
                (40000, 443, 6),
                "linktype {lt}"
            );
            assert_eq!(p.tcp_flags, amoskys_schemas::TcpFlags::SYN, "linktype {lt}");
        }
    }

    #[test]
    fn ipv6_extension_headers_and_icmpv6() {
        let mut v = Vec::new();
        PacketBuilder::ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .icmpv6_echo_request(1, 2)
        .write(&mut v, b"ping")
        .expect("write");
        let p = run(linktype::IPV6, &v).expect("icmpv6");
        assert_eq!((p.proto, p.sport, p.dport), (58, 128, 0));
        // Insert a hop-by-hop header (next header 58, length 0 = 8 bytes) in front of ICMPv6.
        let mut ext = v[..40].to_vec();
        ext[6] = 0; // next header: hop-by-hop
        let plen = u16::from_be_bytes([v[4], v[5]]) + 8;
        ext[4..6].copy_from_slice(&plen.to_be_bytes());
        ext.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&v[40..]);
        let p = run(linktype::IPV6, &ext).expect("ext headers");
        assert_eq!((p.proto, p.sport), (58, 128));
    }

    #[test]
    fn nflog_payload_attribute_is_found() {
        let ip = tcp_ipv4(true);
        let mut f = vec![2, 0, 0, 0];
        f.extend_from_slice(&8u16.to_le_bytes()); // a 4-byte attribute (prefix), padded
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&((ip.len() + 4) as u16).to_le_bytes());
        f.extend_from_slice(&9u16.to_le_bytes());
        f.extend_from_slice(&ip);
        let p = run(linktype::NFLOG, &f).expect("nflog");
        assert_eq!((p.sport, p.dport), (40000, 443));
        assert_eq!(
            run(linktype::NFLOG, &[2, 0, 0, 0, 200, 0]).err(),
            Some(Skip::TruncatedLink)
        );
    }

    #[test]
    fn a_first_fragment_keeps_its_ports() {
        let mut ip = tcp_ipv4(true);
        ip[6] = 0x20; // more fragments, offset 0
        let p = run(linktype::RAW, &ip).expect("decoded");
        assert!(p.fragment);
        assert_eq!(
            (p.sport, p.dport, p.tcp_flags),
            (40000, 443, amoskys_schemas::TcpFlags::SYN)
        );
    }

    #[test]
    fn fragments_are_counted_and_keep_their_addresses() {
        let mut ip = tcp_ipv4(false);
        ip[6] = 0x00;
        ip[7] = 0x10; // fragment offset 16 * 8 bytes, no more-fragments flag
        let mut p = Packet::default();
        let mut st = DecodeStats::default();
        decode(linktype::RAW, &ip, ip.len() as u32, &mut p, &mut st).expect("decoded");
        assert!(p.fragment);
        assert_eq!((p.sport, p.dport), (0, 0));
        assert_eq!(st.fragments, 1);
    }

    /// Bytes are the IP header's, bounded by the record: padding, trailers and a
    /// record that claims more are not counted, and the mismatch is.
    #[test]
    fn bytes_come_from_the_ip_header_bounded_by_the_record() {
        let ip = tcp_ipv4(false); // 20 + 20 + 5 = 45 bytes
        let frame = eth(0x0800, &ip);
        let len = |data: &[u8], wire: u32| {
            let mut p = Packet::default();
            let mut st = DecodeStats::default();
            decode(linktype::ETHERNET, data, wire, &mut p, &mut st).expect("decoded");
            (p.ip_len, st.length_mismatch)
        };
        assert_eq!(len(&frame, frame.len() as u32), (45, 0));
        // Padded to Ethernet's 60-byte minimum: the padding is no traffic.
        let mut padded = frame.clone();
        padded.resize(60, 0);
        assert_eq!(len(&padded, 60), (45, 0));
        // A record that says 262,144 bytes of a 45-byte packet.
        assert_eq!(len(&frame, 262_144), (45, 1));
        // A record shorter than the IP header says: the record bounds it.
        assert_eq!(len(&frame, 40), (26, 1));
        // IPv6: 40 + payload length.
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .udp(5353, 53)
            .write(&mut v6, &[0u8; 12])
            .expect("write");
        let f6 = eth(0x86dd, &v6);
        assert_eq!(len(&f6, f6.len() as u32 + 200), (60, 1));
    }

    #[test]
    fn junk_is_counted_by_reason_never_a_panic() {
        assert_eq!(
            run(linktype::ETHERNET, &[1, 2, 3]).err(),
            Some(Skip::TruncatedLink)
        );
        assert_eq!(
            run(linktype::ETHERNET, &eth(0x0806, &[0; 28])).err(),
            Some(Skip::Arp)
        );
        assert_eq!(
            run(linktype::ETHERNET, &eth(0x9000, &[0; 28])).err(),
            Some(Skip::NonIp)
        );
        assert_eq!(
            run(linktype::ETHERNET, &eth(0x0800, &[0x45, 0])).err(),
            Some(Skip::BadIp)
        );
        assert_eq!(run(linktype::RAW, &[0x60]).err(), Some(Skip::BadIp));
        assert_eq!(
            run(linktype::LINUX_SLL2, &[0; 5]).err(),
            Some(Skip::TruncatedLink)
        );
        assert_eq!(run(147, &[0; 64]).err(), Some(Skip::UnsupportedLinktype));
        // Every prefix of a valid frame decodes or is skipped; none panics.
        let frame = eth(0x0800, &tcp_ipv4(true));
        for n in 0..frame.len() {
            let _ = run(linktype::ETHERNET, &frame[..n]);
        }
    }
}
