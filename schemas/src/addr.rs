use std::fmt;

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address in 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`)
/// so that one fixed-size, `Copy` key serves both families on the hot path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Addr(pub [u8; 16]);

impl Addr {
    pub fn v4(octets: [u8; 4]) -> Self {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&octets);
        Addr(b)
    }

    pub fn v6(octets: [u8; 16]) -> Self {
        Addr(octets)
    }

    /// True for an IPv4(-mapped) address.
    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0u8; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    /// The address with the bits past `len` (of the 128-bit form: an IPv4 /24 is
    /// 120) cleared: its network.
    pub fn masked(&self, len: u8) -> Addr {
        let mut b = self.0;
        for (i, byte) in b.iter_mut().enumerate() {
            let keep = (i32::from(len) - 8 * i as i32).clamp(0, 8);
            *byte &= (0xffu16 << (8 - keep)) as u8;
        }
        Addr(b)
    }

    /// The address as the standard library sees it (IPv4 for mapped addresses).
    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }

    /// The address bytes as they appear on the wire: 4 for IPv4, 16 for IPv6.
    pub fn wire_bytes(&self) -> &[u8] {
        if self.is_v4() {
            &self.0[12..]
        } else {
            &self.0[..]
        }
    }

    /// Appends the address in its usual text form (dotted quad for IPv4). IPv4 is
    /// written digit by digit: `fmt` machinery cost more than the rest of a row.
    pub fn push_to(&self, out: &mut String) {
        if self.is_v4() {
            for (i, &o) in self.0[12..].iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + (o / 10) % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        } else {
            use std::fmt::Write;
            let _ = write!(out, "{}", self.ip());
        }
    }

    /// A 64-bit hash that is the same on every worker and every run, used to route
    /// records to workers (`Exchange`). Not used for hash tables.
    pub fn route_hash(&self) -> u64 {
        let a = u64::from_le_bytes(self.0[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(self.0[8..].try_into().unwrap_or_default());
        mix64(a ^ mix64(b))
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Addr::v4(v4.octets()),
            IpAddr::V6(v6) => Addr::v6(v6.octets()),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v4() && f.width().is_none() {
            let mut s = String::with_capacity(15);
            self.push_to(&mut s);
            f.write_str(&s)
        } else {
            self.ip().fmt(f)
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

/// SplitMix64 finaliser: a fixed, well-mixed bijection on u64.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trips_and_displays_plainly() {
        let a = Addr::v4([10, 0, 0, 1]);
        assert!(a.is_v4());
        assert_eq!(a.to_string(), "10.0.0.1");
        assert_eq!(a.wire_bytes(), &[10, 0, 0, 1]);
        let b: Addr = "2001:db8::1"
            .parse::<IpAddr>()
            .map(Addr::from)
            .unwrap_or_default();
        assert!(!b.is_v4());
        assert_eq!(b.to_string(), "2001:db8::1");
        assert_ne!(a.route_hash(), b.route_hash());
        for octets in [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [10, 9, 100, 250],
            [1, 20, 199, 7],
        ] {
            let mut s = String::new();
            Addr::v4(octets).push_to(&mut s);
            assert_eq!(s, std::net::Ipv4Addr::from(octets).to_string());
        }
    }
}
