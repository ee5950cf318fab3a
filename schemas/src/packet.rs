use serde::{Deserialize, Serialize};

use crate::addr::Addr;

/// IP protocol numbers the pipeline treats specially.
pub struct Proto;
impl Proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub struct TcpFlags;
impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// One decoded IP packet: the normalized record a capture source produces.
///
/// Fixed size, so batches are plain `Vec<Packet>`; the transport payload, when
/// the source keeps it (application metadata on), is a slice of one buffer
/// shared by the whole batch, never an allocation per packet. For ICMP and
/// ICMPv6, `sport` carries the type and `dport` the code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Packet {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Position in the input (0-based, across all files of a replay).
    pub seq: u64,
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// TCP window field as sent, before any scaling (0 for other protocols).
    pub tcp_window: u16,
    /// True when this is an IP fragment (a non-first fragment has no ports).
    pub fragment: bool,
    /// Length of the IP packet, in bytes: the IP header's total length (IPv6: 40 +
    /// payload length), bounded by what the capture record says was on the wire.
    /// What flows and features count, as NetFlow/IPFIX and Zeek's `ip_bytes` do:
    /// link headers, Ethernet padding and trailers are not the hosts' traffic, and
    /// a record that claims more than its IP header does is not believed. Only
    /// where the header gives no length (an IPv6 jumbogram) is the record's own
    /// figure (less the link header) used.
    pub ip_len: u32,
    /// What a DNS message over UDP port 53 says (kind 0 for any other packet).
    pub dns: DnsInfo,
    /// What a DHCP message over UDP ports 67/68 says (type 0 for any other packet).
    pub dhcp: DhcpInfo,
    /// What an ICMP or ICMPv6 echo request or reply carries (kind 0 for any
    /// other packet).
    pub echo: EchoInfo,
    /// TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
    /// The transport payload as captured (TCP segment data, UDP datagram, ICMP
    /// body), when the source keeps payloads; empty otherwise.
    pub payload: bytes::Bytes,
}

/// The message type and client hardware address of a DHCP message.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct DhcpInfo {
    /// Option 53: 1 DISCOVER, 2 OFFER, 3 REQUEST, 4 DECLINE, 5 ACK, 6 NAK,
    /// 7 RELEASE, 8 INFORM; 0 when the packet is not DHCP.
    pub msg_type: u8,
    /// `chaddr`: the client's Ethernet address.
    pub chaddr: [u8; 6],
}

impl DhcpInfo {
    /// Whether a client sent it (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM)
    /// rather than a server (OFFER, ACK, NAK).
    pub fn from_client(&self) -> bool {
        matches!(self.msg_type, 1 | 3 | 4 | 7 | 8)
    }

    /// The client's hardware address as text, `aa:bb:cc:dd:ee:ff`.
    pub fn client(&self) -> String {
        let c = self.chaddr;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            c[0], c[1], c[2], c[3], c[4], c[5]
        )
    }
}

/// The header and first question of a DNS message.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct DnsInfo {
    /// 0 not DNS, 1 query, 2 response.
    pub kind: u8,
    /// Response code (3 is NXDOMAIN).
    pub rcode: u8,
    /// Type of the first question (1 A, 28 AAAA, 16 TXT, ...); 0 without one.
    pub qtype: u16,
    /// Length of the first question's name, dotted, without the final dot.
    pub qname_len: u16,
    /// Shannon entropy of the name's characters, in bits per character, as f32 bits.
    pub qname_entropy_bits: u32,
    /// Hash of the name (fixed keys), to count distinct names.
    pub qname_hash: u64,
    /// [`domain_key`] of the name, of its last three labels and of its last two
    /// (0 where the name has no such part): what domain indicators match.
    pub domain_keys: [u64; 3],
}

/// The data of an ICMP echo request or reply (RFC 792; ICMPv6: RFC 4443):
/// ping sends a fixed pattern of one size, and the reply returns it unchanged.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct EchoInfo {
    /// 0 not an echo message, 1 request, 2 reply.
    pub kind: u8,
    /// Bytes of data after the identifier and sequence number.
    pub len: u16,
    /// Shannon entropy of the data's bytes, in bits per byte, as f32 bits.
    pub entropy_bits: u32,
}

impl EchoInfo {
    pub const REQUEST: u8 = 1;
    pub const REPLY: u8 = 2;

    pub fn entropy(&self) -> f64 {
        f64::from(f32::from_bits(self.entropy_bits))
    }
}

/// Shannon entropy of a byte string's bytes, in bits per byte (0 for nothing).
pub fn byte_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in data {
        counts[usize::from(*b)] += 1;
    }
    let n = data.len() as f64;
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    h.max(0.0)
}

/// The key a domain name is matched by: FNV-1a over its lowercase bytes, without
/// a final dot. Never 0 for a non-empty name.
pub fn domain_key(name: &[u8]) -> u64 {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return 0;
    }
    let h = name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h.max(1)
}

/// The keys of a name and of its last three and last two labels, as
/// [`DnsInfo::domain_keys`] holds them.
pub fn domain_keys(name: &[u8]) -> [u64; 3] {
    let mut out = [domain_key(name), 0, 0];
    let dots: Vec<usize> = name
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'.')
        .map(|(i, _)| i)
        .collect();
    // The last three labels start after the third dot from the end, the last two
    // after the second; a name with fewer labels has only its full key.
    for (slot, back) in [(1, 3), (2, 2)] {
        if dots.len() >= back {
            out[slot] = domain_key(&name[dots[dots.len() - back] + 1..]);
        }
    }
    out
}

impl DnsInfo {
    pub const QUERY: u8 = 1;
    pub const RESPONSE: u8 = 2;

    pub fn qname_entropy(&self) -> f64 {
        f64::from(f32::from_bits(self.qname_entropy_bits))
    }
}

impl Packet {
    pub fn is_tcp(&self) -> bool {
        self.proto == Proto::TCP
    }
    pub fn has_flag(&self, f: u8) -> bool {
        self.proto == Proto::TCP && self.tcp_flags & f != 0
    }
}
