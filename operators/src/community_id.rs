//! Community ID flow hashing, version 1.
//!
//! The v1 definition: SHA-1 over seed (2 bytes, big-endian), the two addresses,
//! the IP protocol, one zero byte and, for TCP, UDP, SCTP, ICMP and ICMPv6, the two
//! ports (ICMP types and codes mapped to port equivalents), with the endpoints
//! ordered so both directions hash alike; the result is `1:` + base64. Written here
//! because it is a dozen lines over the `sha1` crate, while the crates that offer it
//! pull in a second packet model.

use amoskys_schemas::{Addr, Proto};
use base64::Engine;
use sha1::{Digest, Sha1};

const SCTP: u8 = 132;

/// ICMP/ICMPv6 message types that have a counterpart (request <-> reply).
fn icmp_counterpart(proto: u8, t: u16) -> Option<u16> {
    let pairs: &[(u16, u16)] = if proto == Proto::ICMP {
        &[(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)]
    } else {
        &[
            (128, 129),
            (130, 131),
            (133, 134),
            (135, 136),
            (139, 140),
            (144, 145),
        ]
    };
    pairs.iter().find_map(|&(a, b)| {
        if a == t {
            Some(b)
        } else if b == t {
            Some(a)
        } else {
            None
        }
    })
}

/// The endpoints of a packet in Community ID order: `(a, pa, b, pb, ports_used)`.
/// Both directions of a conversation give the same tuple.
pub fn ordered(
    proto: u8,
    src: Addr,
    sport: u16,
    dst: Addr,
    dport: u16,
) -> (Addr, u16, Addr, u16, bool) {
    match proto {
        Proto::ICMP | Proto::ICMPV6 => {
            // For ICMP, `sport` is the type and `dport` the code.
            match icmp_counterpart(proto, sport) {
                Some(c) => order(src, sport, dst, c),
                None => (src, sport, dst, dport, true), // one-way: kept as seen
            }
        }
        // A non-first fragment carries no ports: hash it as a portless protocol.
        Proto::TCP | Proto::UDP | SCTP if sport == 0 && dport == 0 => {
            let (a, _, b, _, _) = order(src, 0, dst, 0);
            (a, 0, b, 0, false)
        }
        Proto::TCP | Proto::UDP | SCTP => order(src, sport, dst, dport),
        _ => {
            let (a, _, b, _, _) = order(src, 0, dst, 0);
            (a, 0, b, 0, false)
        }
    }
}

fn order(src: Addr, sport: u16, dst: Addr, dport: u16) -> (Addr, u16, Addr, u16, bool) {
    if (src.wire_bytes(), sport) <= (dst.wire_bytes(), dport) {
        (src, sport, dst, dport, true)
    } else {
        (dst, dport, src, sport, true)
    }
}

/// The Community ID v1 string of an (already ordered or not) 5-tuple.
pub fn community_id(seed: u16, proto: u8, src: Addr, sport: u16, dst: Addr, dport: u16) -> String {
    let (a, pa, b, pb, ports) = ordered(proto, src, sport, dst, dport);
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(a.wire_bytes());
    h.update(b.wire_bytes());
    h.update([proto, 0]);
    if ports {
        h.update(pa.to_be_bytes());
        h.update(pb.to_be_bytes());
    }
    let digest = h.finalize();
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_hash_alike() {
        let a = Addr::v4([128, 232, 110, 120]);
        let b = Addr::v4([66, 35, 250, 204]);
        let x = community_id(0, Proto::TCP, a, 34855, b, 80);
        assert_eq!(x, community_id(0, Proto::TCP, b, 80, a, 34855));
        assert!(x.starts_with("1:") && x.len() == 30);
        assert_ne!(x, community_id(1, Proto::TCP, a, 34855, b, 80));
        // Echo request and reply belong together; an unreachable does not reverse.
        let req = community_id(0, Proto::ICMP, a, 8, b, 0);
        assert_eq!(req, community_id(0, Proto::ICMP, b, 0, a, 0));
        assert_ne!(
            community_id(0, Proto::ICMP, a, 3, b, 1),
            community_id(0, Proto::ICMP, b, 3, a, 1)
        );
    }
}
