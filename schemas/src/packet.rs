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
/// Fixed size and `Copy`, so batches are plain `Vec<Packet>` with no per-packet
/// allocation. For ICMP and ICMPv6, `sport` carries the type and `dport` the code.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
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
    /// True when this is an IP fragment (a non-first fragment has no ports).
    pub fragment: bool,
    /// Length of the packet on the wire, in bytes (the pcap "original length").
    pub wire_len: u32,
}

impl Packet {
    pub fn is_tcp(&self) -> bool {
        self.proto == Proto::TCP
    }
    pub fn has_flag(&self, f: u8) -> bool {
        self.proto == Proto::TCP && self.tcp_flags & f != 0
    }
}
