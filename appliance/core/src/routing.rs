//! Cryptokey routing decisions, both ways, and why a packet was dropped.
//!
//! Inbound (decrypted from a peer): the inner source must be that peer's own pool
//! address; the destination must be something the network offers clients (tenant
//! subnet or a pushed route); a destination owned by another client goes straight to
//! it only when client-to-client is on. Outbound (read from the TUN): the peer that
//! owns the destination gets it; nobody owns it: ICMP host unreachable.

use crate::config::Config;
use crate::packet::Ipv4Packet;
use crate::peer_table::{PeerId, PeerTable};
use ipnetwork::Ipv4Network;

/// Why a packet was dropped. Each has a counter in the device statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Not a WireGuard message, or a malformed one.
    Malformed,
    /// A handshake initiation from a key that is not a configured peer.
    UnknownKey,
    /// A message whose receiver index matches no peer.
    UnknownIndex,
    /// boringtun refused it (bad MAC, AEAD tag, replayed counter, stale handshake...).
    Rejected,
    /// Decrypted packet whose inner source is not the sending peer's address.
    SpoofedSource,
    /// Inner packet that is not well-formed IPv4.
    BadInnerPacket,
    /// Destination is neither the tenant subnet nor a pushed route.
    DestinationNotAllowed,
    /// Destination is another client and client-to-client is off.
    ClientToClientDisabled,
    /// Packet for a peer whose endpoint is not known yet.
    NoEndpoint,
    /// Packet from the TUN that is not IPv4.
    NotIpv4,
    /// No peer owns the destination (answered with ICMP unreachable when due).
    NoRoute,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Malformed,
        DropReason::UnknownKey,
        DropReason::UnknownIndex,
        DropReason::Rejected,
        DropReason::SpoofedSource,
        DropReason::BadInnerPacket,
        DropReason::DestinationNotAllowed,
        DropReason::ClientToClientDisabled,
        DropReason::NoEndpoint,
        DropReason::NotIpv4,
        DropReason::NoRoute,
    ];

    /// A stable snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownKey => "unknown_key",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::Rejected => "rejected",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::BadInnerPacket => "bad_inner_packet",
            DropReason::DestinationNotAllowed => "destination_not_allowed",
            DropReason::ClientToClientDisabled => "client_to_client_disabled",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::NoRoute => "no_route",
        }
    }
}

/// The network's rules for client traffic, taken from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_destinations: Vec<Ipv4Network>,
    client_to_client: bool,
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            allowed_destinations: config.client_allowed_ips(),
            client_to_client: config.client_to_client,
        }
    }
}

/// Where a packet decrypted from a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Into the TUN: the kernel forwards it to the tenant network.
    Deliver,
    /// Straight to another client (client-to-client).
    ToPeer(PeerId),
    Drop(DropReason),
}

/// Where a packet read from the TUN goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    ToPeer(PeerId),
    /// Nobody owns the destination.
    Unreachable,
}

pub fn route_inbound<S>(
    table: &PeerTable<S>,
    policy: &Policy,
    from: PeerId,
    packet: &Ipv4Packet<'_>,
) -> Inbound {
    let Some(sender) = table.get(from) else {
        return Inbound::Drop(DropReason::UnknownIndex);
    };
    if packet.src() != sender.peer.address {
        return Inbound::Drop(DropReason::SpoofedSource);
    }
    let dst = packet.dst();
    if let Some(to) = table.by_addr(dst) {
        return if to == from {
            // A client talking to itself through us: nothing sensible to do.
            Inbound::Drop(DropReason::DestinationNotAllowed)
        } else if policy.client_to_client {
            Inbound::ToPeer(to)
        } else {
            Inbound::Drop(DropReason::ClientToClientDisabled)
        };
    }
    if policy.allowed_destinations.iter().any(|n| n.contains(dst)) {
        Inbound::Deliver
    } else {
        Inbound::Drop(DropReason::DestinationNotAllowed)
    }
}

pub fn route_outbound<S>(table: &PeerTable<S>, packet: &Ipv4Packet<'_>) -> Outbound {
    match table.by_addr(packet.dst()) {
        Some(id) => Outbound::ToPeer(id),
        None => Outbound::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{tests::sample_file, Config};
    use crate::packet::tests::udp_packet;
    use std::net::Ipv4Addr;

    fn setup(c2c: bool) -> (PeerTable<()>, Policy, PeerId, PeerId) {
        let mut f = sample_file();
        f.client_to_client = c2c;
        let c = Config::try_from(f).unwrap();
        let mut t = PeerTable::new(0);
        let a = t.insert(c.peers[0].clone(), |_| ()).unwrap();
        let b = t.insert(c.peers[1].clone(), |_| ()).unwrap();
        (t, Policy::from_config(&c), a, b)
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn route(t: &PeerTable<()>, p: &Policy, from: PeerId, src: &str, dst: &str) -> Inbound {
        let pkt = udp_packet(ip(src), ip(dst), b"x");
        route_inbound(t, p, from, &Ipv4Packet::new_checked(&pkt).unwrap())
    }

    #[test]
    fn inbound_source_must_be_the_peers_own() {
        let (t, p, a, _) = setup(false);
        assert_eq!(
            route(&t, &p, a, "10.0.0.250", "10.0.0.10"),
            Inbound::Deliver
        );
        assert_eq!(
            route(&t, &p, a, "10.0.0.251", "10.0.0.10"),
            Inbound::Drop(DropReason::SpoofedSource)
        );
        assert_eq!(
            route(&t, &p, a, "10.0.0.2", "10.0.0.10"),
            Inbound::Drop(DropReason::SpoofedSource)
        );
    }

    #[test]
    fn inbound_destination_policy() {
        let (t, p, a, b) = setup(false);
        assert_eq!(
            route(&t, &p, a, "10.0.0.250", "192.168.50.7"),
            Inbound::Deliver,
            "pushed route"
        );
        assert_eq!(
            route(&t, &p, a, "10.0.0.250", "8.8.8.8"),
            Inbound::Drop(DropReason::DestinationNotAllowed)
        );
        assert_eq!(
            route(&t, &p, a, "10.0.0.250", "10.0.0.251"),
            Inbound::Drop(DropReason::ClientToClientDisabled)
        );
        let (t, p, a, _) = setup(true);
        assert_eq!(
            route(&t, &p, a, "10.0.0.250", "10.0.0.251"),
            Inbound::ToPeer(b)
        );
    }

    #[test]
    fn outbound_by_owner() {
        let (t, _, a, _) = setup(false);
        let pkt = udp_packet(ip("10.0.0.10"), ip("10.0.0.250"), b"x");
        assert_eq!(
            route_outbound(&t, &Ipv4Packet::new_checked(&pkt).unwrap()),
            Outbound::ToPeer(a)
        );
        let pkt = udp_packet(ip("10.0.0.10"), ip("10.0.0.253"), b"x");
        assert_eq!(
            route_outbound(&t, &Ipv4Packet::new_checked(&pkt).unwrap()),
            Outbound::Unreachable
        );
    }
}
