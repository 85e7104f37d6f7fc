//! Cryptokey routing decisions, both ways, per role.
//!
//! Every role enforces WireGuard's rule (whitepaper section 2): a packet decrypted
//! from a peer passes only if its inner source is among that peer's allowed IPs, and
//! a packet read from the TUN device goes to the peer whose allowed IPs hold its
//! destination (longest prefix). The server role (the appliance) adds its network's
//! rules on top: clients reach only the tenant subnet and pushed routes, another
//! client only when client-to-client is on, and a destination nobody owns is
//! answered with ICMP host unreachable.

use super::allowed_ips::AllowedIps;
use super::stats::DropReason;
use crate::packet::IpHeader;
use ipnetwork::IpNetwork;
use std::sync::Arc;

/// What the device is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The appliance: many clients, each owning its pool address.
    Server(ServerPolicy),
    /// A plain WireGuard interface (`cloudpipe up`, a benchmark peer): the kernel's
    /// routing table decides what enters the tunnel; nothing is added on top.
    Client,
}

/// The network's rules for client traffic (from the payload's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Where clients may send: the tenant subnet and the pushed routes.
    pub destinations: Vec<IpNetwork>,
    /// Whether a client may reach another client through the appliance.
    pub client_to_client: bool,
}

/// Where a packet decrypted from a peer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<P> {
    /// Into the TUN device.
    Deliver,
    /// Straight to another peer (client-to-client), encrypted again.
    ToPeer(P),
    Drop(DropReason),
}

/// Decide where `packet`, decrypted from `from`, goes.
pub fn route_inbound<P>(
    role: &Role,
    allowed: &AllowedIps<Arc<P>>,
    from: &Arc<P>,
    packet: &IpHeader,
) -> Inbound<Arc<P>> {
    match allowed.lookup(packet.src) {
        Some(owner) if Arc::ptr_eq(owner, from) => {}
        _ => return Inbound::Drop(DropReason::SpoofedSource),
    }
    let policy = match role {
        Role::Client => return Inbound::Deliver,
        Role::Server(p) => p,
    };
    if let Some(to) = allowed.lookup(packet.dst) {
        return if Arc::ptr_eq(to, from) {
            // A client talking to itself through us: nothing sensible to do.
            Inbound::Drop(DropReason::DestinationNotAllowed)
        } else if policy.client_to_client {
            Inbound::ToPeer(to.clone())
        } else {
            Inbound::Drop(DropReason::ClientToClientDisabled)
        };
    }
    if policy.destinations.iter().any(|n| n.contains(packet.dst)) {
        Inbound::Deliver
    } else {
        Inbound::Drop(DropReason::DestinationNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn hdr(src: &str, dst: &str) -> IpHeader {
        IpHeader {
            src: src.parse::<IpAddr>().unwrap(),
            dst: dst.parse::<IpAddr>().unwrap(),
            len: 20,
        }
    }

    fn setup(c2c: bool) -> (Role, AllowedIps<Arc<String>>, Arc<String>, Arc<String>) {
        let (a, b) = (Arc::new("alice".to_string()), Arc::new("bob".to_string()));
        let mut t = AllowedIps::new();
        t.insert("10.0.0.250/32".parse().unwrap(), a.clone());
        t.insert("10.0.0.251/32".parse().unwrap(), b.clone());
        let role = Role::Server(ServerPolicy {
            destinations: vec![
                "10.0.0.0/24".parse().unwrap(),
                "192.168.50.0/24".parse().unwrap(),
            ],
            client_to_client: c2c,
        });
        (role, t, a, b)
    }

    #[test]
    fn inbound_source_must_be_the_peers_own() {
        let (role, t, a, _) = setup(false);
        let r = |s, d| route_inbound(&role, &t, &a, &hdr(s, d));
        assert_eq!(r("10.0.0.250", "10.0.0.10"), Inbound::Deliver);
        assert_eq!(
            r("10.0.0.251", "10.0.0.10"),
            Inbound::Drop(DropReason::SpoofedSource)
        );
        assert_eq!(
            r("10.0.0.2", "10.0.0.10"),
            Inbound::Drop(DropReason::SpoofedSource)
        );
        assert_eq!(
            r("fd00::1", "10.0.0.10"),
            Inbound::Drop(DropReason::SpoofedSource)
        );
        assert_eq!(
            route_inbound(&Role::Client, &t, &a, &hdr("10.0.0.251", "8.8.8.8")),
            Inbound::Drop(DropReason::SpoofedSource),
            "the client role checks sources too"
        );
        assert_eq!(
            route_inbound(&Role::Client, &t, &a, &hdr("10.0.0.250", "8.8.8.8")),
            Inbound::Deliver
        );
    }

    #[test]
    fn inbound_destination_policy() {
        let (role, t, a, b) = setup(false);
        let r = |s, d| route_inbound(&role, &t, &a, &hdr(s, d));
        assert_eq!(
            r("10.0.0.250", "192.168.50.7"),
            Inbound::Deliver,
            "pushed route"
        );
        assert_eq!(
            r("10.0.0.250", "8.8.8.8"),
            Inbound::Drop(DropReason::DestinationNotAllowed)
        );
        assert_eq!(
            r("10.0.0.250", "10.0.0.251"),
            Inbound::Drop(DropReason::ClientToClientDisabled)
        );
        assert_eq!(
            r("10.0.0.250", "10.0.0.250"),
            Inbound::Drop(DropReason::DestinationNotAllowed)
        );
        let (role, t, a, _) = setup(true);
        match route_inbound(&role, &t, &a, &hdr("10.0.0.250", "10.0.0.251")) {
            Inbound::ToPeer(p) => assert_eq!(*p, *b),
            other => panic!("{other:?}"),
        }
    }
}
