//! The DHCP family, read from packets and windowed per client hardware
//! address: a client's requests, the server's replies, the addresses it used.

use amoskys_schemas::{Addr, FeatureDef, FeatureDtype, WINDOW_SECONDS};

use super::family::FamilyFeature;
use crate::Set;

use FeatureDtype::{Count as C, Float as F};

const W: f64 = WINDOW_SECONDS as f64;

/// DHCP messages about one hardware address in a pane, or (merged) a window.
#[derive(Clone, Debug, Default)]
pub struct DhcpAcc {
    /// Messages by type (index = option 53 value).
    pub by_type: [u64; 9],
    /// The client's source addresses.
    pub ips: Set<Addr>,
}

impl DhcpAcc {
    pub fn observe(&mut self, msg_type: u8, src: Addr) {
        self.by_type[usize::from(msg_type.min(8))] += 1;
        if matches!(msg_type, 1 | 3 | 4 | 7 | 8) && src != Addr::v4([0, 0, 0, 0]) {
            self.ips.insert(src);
        }
    }

    /// Extends this pane with a later one.
    pub fn append(&mut self, l: &DhcpAcc) {
        for (a, b) in self.by_type.iter_mut().zip(l.by_type) {
            *a += b;
        }
        self.ips.extend(l.ips.iter().copied());
    }
}

/// A DHCP feature: family `dhcp`, read from packets.
const fn dhcp_spec(
    name: &'static str,
    unit: &'static str,
    dtype: FeatureDtype,
    description: &'static str,
    compute: fn(&DhcpAcc) -> Option<f64>,
) -> FamilyFeature<DhcpAcc> {
    FamilyFeature {
        def: FeatureDef {
            name,
            family: "dhcp",
            source: "pcap",
            unit,
            dtype,
            description,
            null_when: Some("no DHCP message about the hardware address in the window"),
        },
        compute,
    }
}

fn dhcp_client(a: &DhcpAcc) -> u64 {
    [1, 3, 4, 7, 8].iter().map(|&t| a.by_type[t]).sum()
}

fn dh(a: &DhcpAcc, v: f64) -> Option<f64> {
    (a.by_type.iter().sum::<u64>() > 0).then_some(v)
}

/// Per client hardware address (`chaddr`): the entity is the address as text.
pub(super) static DHCP_FEATURES: &[FamilyFeature<DhcpAcc>] = &[
    dhcp_spec(
        "dhcp_client_messages",
        "messages",
        C,
        "DHCP messages the client sent (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM) with this hardware address.",
        |a| dh(a, dhcp_client(a) as f64),
    ),
    dhcp_spec(
        "dhcp_client_messages_per_s",
        "messages/s",
        F,
        "`dhcp_client_messages` per second of the window.",
        |a| dh(a, dhcp_client(a) as f64 / W),
    ),
    dhcp_spec(
        "dhcp_discovers",
        "messages",
        C,
        "DHCPDISCOVER messages from the hardware address.",
        |a| dh(a, a.by_type[1] as f64),
    ),
    dhcp_spec(
        "dhcp_informs",
        "messages",
        C,
        "DHCPINFORM messages from the hardware address.",
        |a| dh(a, a.by_type[8] as f64),
    ),
    dhcp_spec(
        "dhcp_server_replies",
        "messages",
        C,
        "DHCP replies (OFFER, ACK, NAK) to the hardware address.",
        |a| dh(a, (a.by_type[2] + a.by_type[5] + a.by_type[6]) as f64),
    ),
    dhcp_spec(
        "dhcp_client_ips",
        "addresses",
        C,
        "Distinct IP source addresses (0.0.0.0 aside) of the client's messages: one host keeps one.",
        |a| dh(a, a.ips.len() as f64),
    ),
];
