//! Why packets were dropped, and the device's counters.
//!
//! Each worker (one per I/O thread) counts into its own [`Counters`]: plain relaxed
//! atomics that only that worker writes, so counting never contends. [`Stats`] is
//! their sum, taken when someone asks (status, metrics).

use boringtun::noise::errors::WireGuardError;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a packet was dropped. Each has a counter; [`DropReason::as_str`] is its
/// stable name in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Not a WireGuard message, or a malformed one.
    Malformed,
    /// A handshake initiation from a key that is not a configured peer.
    UnknownKey,
    /// A message whose receiver index matches no peer.
    UnknownIndex,
    /// A message authentication code or AEAD tag that does not verify (forged or
    /// corrupted).
    BadMac,
    /// A data packet whose counter was already seen or is too old (replay;
    /// WireGuard whitepaper section 5.4.6).
    Replay,
    /// boringtun refused it for another reason (unexpected or stale message).
    Rejected,
    /// A handshake initiation answered with a cookie reply because the device is
    /// under load (whitepaper section 5.4.7).
    RateLimited,
    /// A decrypted packet whose inner source is not among the sending peer's
    /// allowed IPs (cryptokey routing).
    SpoofedSource,
    /// A decrypted packet that is not well-formed IP.
    BadInnerPacket,
    /// Destination is neither the tenant subnet nor a pushed route (server role).
    DestinationNotAllowed,
    /// Destination is another client and client-to-client is off (server role).
    ClientToClientDisabled,
    /// A packet for a peer whose endpoint is not known yet.
    NoEndpoint,
    /// A packet read from the TUN device that is not well-formed IP.
    BadTunPacket,
    /// No peer's allowed IPs contain the destination (answered with ICMP host
    /// unreachable in the server role, within a budget).
    NoRoute,
    /// A datagram larger than any packet the tunnel can carry.
    TooLarge,
}

impl DropReason {
    pub const ALL: [DropReason; 15] = [
        DropReason::Malformed,
        DropReason::UnknownKey,
        DropReason::UnknownIndex,
        DropReason::BadMac,
        DropReason::Replay,
        DropReason::Rejected,
        DropReason::RateLimited,
        DropReason::SpoofedSource,
        DropReason::BadInnerPacket,
        DropReason::DestinationNotAllowed,
        DropReason::ClientToClientDisabled,
        DropReason::NoEndpoint,
        DropReason::BadTunPacket,
        DropReason::NoRoute,
        DropReason::TooLarge,
    ];

    /// A stable snake_case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownKey => "unknown_key",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::BadMac => "bad_mac",
            DropReason::Replay => "replay",
            DropReason::Rejected => "rejected",
            DropReason::RateLimited => "rate_limited",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::BadInnerPacket => "bad_inner_packet",
            DropReason::DestinationNotAllowed => "destination_not_allowed",
            DropReason::ClientToClientDisabled => "client_to_client_disabled",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::BadTunPacket => "bad_tun_packet",
            DropReason::NoRoute => "no_route",
            DropReason::TooLarge => "too_large",
        }
    }

    /// The reason for one of boringtun's errors.
    pub fn from_wireguard(e: &WireGuardError) -> Self {
        match e {
            WireGuardError::InvalidMac | WireGuardError::InvalidAeadTag => DropReason::BadMac,
            WireGuardError::InvalidCounter | WireGuardError::DuplicateCounter => DropReason::Replay,
            WireGuardError::InvalidPacket
            | WireGuardError::IncorrectPacketLength
            | WireGuardError::DestinationBufferTooSmall => DropReason::Malformed,
            WireGuardError::WrongIndex | WireGuardError::NoCurrentSession => {
                DropReason::UnknownIndex
            }
            WireGuardError::UnderLoad => DropReason::RateLimited,
            _ => DropReason::Rejected,
        }
    }
}

/// One worker's counters. Only that worker writes them (relaxed atomics, no
/// contention); readers sum every worker's into [`Stats`].
#[derive(Debug, Default)]
pub struct Counters {
    drops: [AtomicU64; DropReason::ALL.len()],
    rx_datagrams: AtomicU64,
    to_tun: AtomicU64,
    to_network: AtomicU64,
    handshake_responses: AtomicU64,
    cookie_replies: AtomicU64,
    icmp_unreachables: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn dropped(&self, reason: DropReason) {
        bump(&self.drops[reason as usize]);
    }
    pub(crate) fn rx_datagram(&self) {
        bump(&self.rx_datagrams);
    }
    pub(crate) fn to_tun(&self) {
        bump(&self.to_tun);
    }
    pub(crate) fn to_network(&self) {
        bump(&self.to_network);
    }
    pub(crate) fn handshake_response(&self) {
        bump(&self.handshake_responses);
    }
    pub(crate) fn cookie_reply(&self) {
        bump(&self.cookie_replies);
    }
    pub(crate) fn icmp_unreachable(&self) {
        bump(&self.icmp_unreachables);
    }

    fn add_to(&self, s: &mut Stats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (sum, c) in s.drops.iter_mut().zip(&self.drops) {
            *sum += get(c);
        }
        s.rx_datagrams += get(&self.rx_datagrams);
        s.to_tun += get(&self.to_tun);
        s.to_network += get(&self.to_network);
        s.handshake_responses += get(&self.handshake_responses);
        s.cookie_replies += get(&self.cookie_replies);
        s.icmp_unreachables += get(&self.icmp_unreachables);
    }
}

/// The device's counters, summed over its workers. Every field counts packets
/// since the device started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    drops: [u64; DropReason::ALL.len()],
    /// Datagrams received on the UDP side.
    pub rx_datagrams: u64,
    /// Packets handed to the TUN device.
    pub to_tun: u64,
    /// Datagrams handed to the UDP socket.
    pub to_network: u64,
    /// Handshake initiations answered with a response (handshakes completed, seen
    /// from the responder).
    pub handshake_responses: u64,
    /// Cookie replies sent to initiations under load.
    pub cookie_replies: u64,
    /// ICMP host-unreachable answers written.
    pub icmp_unreachables: u64,
}

impl Stats {
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every drop reason with its count.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.drops(r)))
    }

    pub(crate) fn sum<'a>(workers: impl IntoIterator<Item = &'a Counters>) -> Stats {
        let mut s = Stats::default();
        for w in workers {
            w.add_to(&mut s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_reason_is_listed() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn workers_sum() {
        let (a, b) = (Counters::default(), Counters::default());
        a.dropped(DropReason::Replay);
        b.dropped(DropReason::Replay);
        b.to_tun();
        let s = Stats::sum([&a, &b]);
        assert_eq!(s.drops(DropReason::Replay), 2);
        assert_eq!(s.to_tun, 1);
        assert_eq!(
            DropReason::from_wireguard(&WireGuardError::InvalidMac),
            DropReason::BadMac
        );
    }
}
