//! The WireGuard device: every peer's `noise::Tunn`, the peer table and the routing
//! policy, driven by bytes in and bytes out.
//!
//! The I/O shell (the daemon's `tunnel` module) feeds it datagrams from the UDP
//! socket, packets from the TUN device and a timer tick, and sends whatever it leaves
//! in the [`Outbox`]. Nothing here touches a socket; the only clock is the one inside
//! boringtun's timers, advanced by [`Device::update_timers`].

use crate::config::{Config, Peer};
use crate::keys::PublicKey;
use crate::packet::{icmp_unreachable, Ipv4Packet, PacketError};
use crate::peer_table::{PeerId, PeerTable};
use crate::routing::{route_inbound, route_outbound, DropReason, Inbound, Outbound, Policy};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65535;
/// Every output buffer: boringtun needs `src + 32` bytes and at least 148.
pub const BUF_LEN: usize = MAX_DATAGRAM + 64;
/// Handshakes per second, across all peers, above which boringtun answers
/// initiations with cookie replies (wireguard-go uses the same order of magnitude).
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// ICMP unreachable answers per second: a flood to unassigned pool addresses must
/// not turn into a flood of answers.
pub const ICMP_PER_SECOND: u32 = 100;

/// Where an output packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Udp(SocketAddr),
    Tun,
}

/// Output packets of one call (or one batch), in reusable buffers: no allocation
/// once it has grown to the batch's size.
#[derive(Default)]
pub struct Outbox {
    bufs: Vec<Box<[u8]>>,
    items: Vec<(Dest, usize, usize)>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }
    /// The next free buffer.
    fn slot(&mut self) -> &mut [u8] {
        let i = self.items.len();
        if self.bufs.len() <= i {
            self.bufs.push(vec![0u8; BUF_LEN].into_boxed_slice());
        }
        &mut self.bufs[i]
    }
    /// Keep the first `len` bytes of the free buffer as the next output. boringtun
    /// always writes its output at the start of the buffer it is given.
    fn commit_len(&mut self, dest: Dest, len: usize) {
        self.items.push((dest, 0, len));
    }
    pub fn iter(&self) -> impl Iterator<Item = (Dest, &[u8])> {
        self.items
            .iter()
            .zip(&self.bufs)
            .map(|(&(d, s, l), b)| (d, &b[s..s + l]))
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

/// One peer's WireGuard state.
pub struct Session {
    tunn: Tunn,
    /// Where the latest authenticated packet came from (roaming follows it).
    endpoint: Option<SocketAddr>,
}

fn new_session(
    secret: &x25519::StaticSecret,
    limiter: &Arc<RateLimiter>,
    peer: &Peer,
    index: u32,
) -> Session {
    Session {
        tunn: Tunn::new(
            secret.clone(),
            x25519::PublicKey::from(*peer.public_key.as_bytes()),
            peer.preshared_key.as_ref().map(|k| *k.as_bytes()),
            None,
            index,
            Some(limiter.clone()),
        ),
        endpoint: None,
    }
}

/// What a peer looks like from outside, for status and logs.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: PublicKey,
    pub address: std::net::Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    pub since_last_handshake: Option<Duration>,
    pub tx_bytes: usize,
    pub rx_bytes: usize,
}

/// Counters for the whole device.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    drops: [u64; DropReason::ALL.len()],
    pub to_tun: u64,
    pub to_network: u64,
}

impl Stats {
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
    fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// What [`Device::set_peers`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

pub struct Device {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    table: PeerTable<Session>,
    policy: Policy,
    stats: Stats,
    icmp_budget: u32,
    /// Plaintext copy for client-to-client forwarding (decrypt into one buffer,
    /// encrypt from another).
    scratch: Box<[u8]>,
}

impl Device {
    /// A device for `config`'s network with `peers` (the payload's, after any
    /// metadata overlay). `index_seed` should be random.
    pub fn new(config: &Config, peers: &[Peer], index_seed: u32) -> Self {
        let secret = x25519::StaticSecret::from(*config.private_key.as_bytes());
        let public = x25519::PublicKey::from(&secret);
        let mut device = Self {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            table: PeerTable::new(index_seed),
            policy: Policy::from_config(config),
            stats: Stats::default(),
            icmp_budget: ICMP_PER_SECOND,
            scratch: vec![0u8; BUF_LEN].into_boxed_slice(),
        };
        device.set_peers(peers);
        device
    }

    /// Replace the peer set. Peers whose key, preshared key and address are unchanged
    /// keep their sessions; removed peers' sessions end now.
    pub fn set_peers(&mut self, peers: &[Peer]) -> PeerChanges {
        let mut changes = PeerChanges::default();
        let stale: Vec<PeerId> = self
            .table
            .iter()
            .filter(|(_, e)| {
                !peers.iter().any(|p| {
                    p.public_key == e.peer.public_key
                        && p.preshared_key == e.peer.preshared_key
                        && p.address == e.peer.address
                })
            })
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            if let Some(e) = self.table.remove(id) {
                changes.removed.push(e.peer.name);
            }
        }
        for p in peers {
            match self.table.by_key(&p.public_key) {
                Some(id) => {
                    if let Some(e) = self.table.get_mut(id) {
                        e.peer.name.clone_from(&p.name);
                    }
                }
                None => {
                    let (secret, limiter) = (&self.secret, &self.rate_limiter);
                    if self
                        .table
                        .insert(p.clone(), |index| new_session(secret, limiter, p, index))
                        .is_ok()
                    {
                        changes.added.push(p.name.clone());
                    }
                }
            }
        }
        changes
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public.to_bytes())
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        self.table.iter().map(|(_, e)| {
            let (since, tx, rx, _, _) = e.session.tunn.stats();
            PeerStatus {
                name: e.peer.name.clone(),
                public_key: e.peer.public_key,
                address: e.peer.address,
                endpoint: e.session.endpoint,
                since_last_handshake: since,
                tx_bytes: tx,
                rx_bytes: rx,
            }
        })
    }

    /// Once a second: the shared handshake rate limiter and the ICMP budget.
    pub fn reset_rate_limits(&mut self) {
        self.rate_limiter.reset_count();
        self.icmp_budget = ICMP_PER_SECOND;
    }

    /// A datagram from the UDP socket.
    pub fn handle_datagram(&mut self, src: SocketAddr, datagram: &[u8], out: &mut Outbox) {
        let id = match self
            .rate_limiter
            .verify_packet(Some(src.ip()), datagram, out.slot())
        {
            Ok(packet) => match self.peer_for(&packet) {
                Ok(id) => id,
                Err(reason) => return self.stats.drop(reason),
            },
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let n = cookie.len();
                out.commit_len(Dest::Udp(src), n);
                return;
            }
            Err(_) => return self.stats.drop(DropReason::Malformed),
        };
        let Some(entry) = self.table.get_mut(id) else {
            return self.stats.drop(DropReason::UnknownIndex);
        };
        match entry
            .session
            .tunn
            .decapsulate(Some(src.ip()), datagram, out.slot())
        {
            TunnResult::WriteToNetwork(reply) => {
                let n = reply.len();
                entry.session.endpoint = Some(src);
                out.commit_len(Dest::Udp(src), n);
                self.stats.to_network += 1;
                // Packets queued while the handshake was under way.
                loop {
                    let entry = self.table.get_mut(id).expect("peer present");
                    match entry.session.tunn.decapsulate(None, &[], out.slot()) {
                        TunnResult::WriteToNetwork(p) => {
                            let n = p.len();
                            out.commit_len(Dest::Udp(src), n);
                            self.stats.to_network += 1;
                        }
                        _ => break,
                    }
                }
            }
            TunnResult::WriteToTunnelV4(packet, _) => {
                let n = packet.len();
                entry.session.endpoint = Some(src);
                self.route_decrypted(id, n, out);
            }
            TunnResult::WriteToTunnelV6(..) => {
                entry.session.endpoint = Some(src);
                self.stats.drop(DropReason::BadInnerPacket);
            }
            TunnResult::Done => entry.session.endpoint = Some(src),
            TunnResult::Err(_) => self.stats.drop(DropReason::Rejected),
        }
    }

    /// Which peer a verified message is for.
    fn peer_for(&self, packet: &Packet<'_>) -> Result<PeerId, DropReason> {
        match packet {
            Packet::HandshakeInit(init) => {
                let half =
                    parse_handshake_anon(&self.secret, &self.public, init).map_err(
                        |e| match e {
                            WireGuardError::InvalidMac | WireGuardError::InvalidAeadTag => {
                                DropReason::Rejected
                            }
                            _ => DropReason::Malformed,
                        },
                    )?;
                self.table
                    .by_key(&PublicKey::from_bytes(half.peer_static_public))
                    .ok_or(DropReason::UnknownKey)
            }
            Packet::HandshakeResponse(p) => self.by_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => self.by_index(p.receiver_idx),
            Packet::PacketData(p) => self.by_index(p.receiver_idx),
        }
    }

    fn by_index(&self, receiver_idx: u32) -> Result<PeerId, DropReason> {
        self.table
            .by_receiver_index(receiver_idx)
            .ok_or(DropReason::UnknownIndex)
    }

    /// The decrypted packet of `len` bytes sits in the outbox's free slot.
    fn route_decrypted(&mut self, from: PeerId, len: usize, out: &mut Outbox) {
        let plain = &out.slot()[..len];
        let packet = match Ipv4Packet::new_checked(plain) {
            Ok(p) => p,
            Err(_) => return self.stats.drop(DropReason::BadInnerPacket),
        };
        match route_inbound(&self.table, &self.policy, from, &packet) {
            Inbound::Deliver => {
                let n = packet.as_bytes().len();
                out.commit_len(Dest::Tun, n);
                self.stats.to_tun += 1;
            }
            Inbound::ToPeer(to) => {
                let n = packet.as_bytes().len();
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch[..n].copy_from_slice(&out.slot()[..n]);
                self.encapsulate_to(to, &scratch[..n], out);
                self.scratch = scratch;
            }
            Inbound::Drop(reason) => self.stats.drop(reason),
        }
    }

    /// A packet read from the TUN device.
    pub fn handle_tun_packet(&mut self, packet: &[u8], out: &mut Outbox) {
        let packet = match Ipv4Packet::new_checked(packet) {
            Ok(p) => p,
            Err(PacketError::NotIpv4) => return self.stats.drop(DropReason::NotIpv4),
            Err(_) => return self.stats.drop(DropReason::BadInnerPacket),
        };
        match route_outbound(&self.table, &packet) {
            Outbound::ToPeer(id) => self.encapsulate_to(id, packet.as_bytes(), out),
            Outbound::Unreachable => {
                self.stats.drop(DropReason::NoRoute);
                if self.icmp_budget > 0 {
                    // Answer from the unreachable address itself: it is routed
                    // through the TUN, so the kernel accepts it as coming from there.
                    if let Some(n) = icmp_unreachable(&packet, packet.dst(), out.slot()) {
                        self.icmp_budget -= 1;
                        out.commit_len(Dest::Tun, n);
                        self.stats.to_tun += 1;
                    }
                }
            }
        }
    }

    fn encapsulate_to(&mut self, id: PeerId, plain: &[u8], out: &mut Outbox) {
        let Some(entry) = self.table.get_mut(id) else {
            return self.stats.drop(DropReason::NoRoute);
        };
        let endpoint = entry.session.endpoint;
        match entry.session.tunn.encapsulate(plain, out.slot()) {
            TunnResult::WriteToNetwork(p) => match endpoint {
                Some(ep) => {
                    let n = p.len();
                    out.commit_len(Dest::Udp(ep), n);
                    self.stats.to_network += 1;
                }
                None => self.stats.drop(DropReason::NoEndpoint),
            },
            TunnResult::Err(_) => self.stats.drop(DropReason::Rejected),
            _ => {}
        }
    }

    /// Run every peer's timers (keepalive, rekey, expiry); call every 100-250 ms.
    pub fn update_timers(&mut self, out: &mut Outbox) {
        for (_, entry) in self.table.iter_mut() {
            let endpoint = entry.session.endpoint;
            if let TunnResult::WriteToNetwork(p) = entry.session.tunn.update_timers(out.slot()) {
                if let Some(ep) = endpoint {
                    let n = p.len();
                    out.commit_len(Dest::Udp(ep), n);
                    self.stats.to_network += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_file;
    use crate::keys::PrivateKey;
    use crate::packet::tests::udp_packet;
    use std::net::Ipv4Addr;

    /// A stock WireGuard client, played by boringtun's Tunn directly.
    struct Client {
        tunn: Tunn,
        addr: SocketAddr,
        buf: Vec<u8>,
    }

    impl Client {
        fn new(config: &Config, key_byte: u8, psk: Option<[u8; 32]>, addr: &str) -> Self {
            let server = x25519::PublicKey::from(*config.private_key.public_key().as_bytes());
            Client {
                tunn: Tunn::new(
                    x25519::StaticSecret::from([key_byte; 32]),
                    server,
                    psk,
                    None,
                    key_byte as u32,
                    None,
                ),
                addr: addr.parse().unwrap(),
                buf: vec![0; BUF_LEN],
            }
        }
        /// Handshake with the device; returns the device's outputs during it.
        fn connect(&mut self, dev: &mut Device) {
            let init = match self.tunn.format_handshake_initiation(&mut self.buf, false) {
                TunnResult::WriteToNetwork(p) => p.to_vec(),
                other => panic!("{other:?}"),
            };
            let mut out = Outbox::new();
            dev.handle_datagram(self.addr, &init, &mut out);
            let replies: Vec<Vec<u8>> = out
                .iter()
                .map(|(d, b)| {
                    assert_eq!(d, Dest::Udp(self.addr));
                    b.to_vec()
                })
                .collect();
            assert_eq!(replies.len(), 1, "one handshake response");
            match self.tunn.decapsulate(None, &replies[0], &mut self.buf) {
                TunnResult::WriteToNetwork(keepalive) => {
                    let k = keepalive.to_vec();
                    let mut out = Outbox::new();
                    dev.handle_datagram(self.addr, &k, &mut out);
                    assert!(out.is_empty());
                }
                other => panic!("{other:?}"),
            }
        }
        fn seal(&mut self, packet: &[u8]) -> Vec<u8> {
            match self.tunn.encapsulate(packet, &mut self.buf) {
                TunnResult::WriteToNetwork(p) => p.to_vec(),
                other => panic!("{other:?}"),
            }
        }
        fn open(&mut self, datagram: &[u8]) -> Vec<u8> {
            match self.tunn.decapsulate(None, datagram, &mut self.buf) {
                TunnResult::WriteToTunnelV4(p, _) => p.to_vec(),
                other => panic!("{other:?}"),
            }
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn setup(c2c: bool) -> (Config, Device, Client, Client) {
        let mut f = sample_file();
        f.client_to_client = c2c;
        let c = Config::try_from(f).unwrap();
        let dev = Device::new(&c, &c.peers, 42);
        // sample_file: alice = key [2;32] + psk [9;32] at .250, bob = key [3;32] at .251.
        let alice = Client::new(&c, 2, Some([9; 32]), "203.0.113.7:40000");
        let bob = Client::new(&c, 3, None, "203.0.113.8:40001");
        (c, dev, alice, bob)
    }

    fn send(dev: &mut Device, from: SocketAddr, datagram: &[u8]) -> Vec<(Dest, Vec<u8>)> {
        let mut out = Outbox::new();
        dev.handle_datagram(from, datagram, &mut out);
        out.iter().map(|(d, b)| (d, b.to_vec())).collect()
    }

    #[test]
    fn handshake_and_data_both_ways() {
        let (_, mut dev, mut alice, _) = setup(false);
        alice.connect(&mut dev);
        let pkt = udp_packet(ip("10.0.0.250"), ip("10.0.0.10"), b"hello tenant");
        let out = send(&mut dev, alice.addr, &alice.seal(&pkt));
        assert_eq!(out, vec![(Dest::Tun, pkt.clone())]);

        let reply = udp_packet(ip("10.0.0.10"), ip("10.0.0.250"), b"hello client");
        let mut out = Outbox::new();
        dev.handle_tun_packet(&reply, &mut out);
        let sent: Vec<_> = out.iter().map(|(d, b)| (d, b.to_vec())).collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Dest::Udp(alice.addr));
        assert_eq!(alice.open(&sent[0].1), reply);
        let st = dev.peers().find(|p| p.name == "alice").unwrap();
        assert!(st.since_last_handshake.is_some());
        assert_eq!(st.endpoint, Some(alice.addr));
    }

    #[test]
    fn spoofed_inner_source_is_dropped() {
        let (_, mut dev, mut alice, _) = setup(false);
        alice.connect(&mut dev);
        let pkt = udp_packet(ip("10.0.0.251"), ip("10.0.0.10"), b"i am bob");
        assert!(send(&mut dev, alice.addr, &alice.seal(&pkt)).is_empty());
        assert_eq!(dev.stats().drops(DropReason::SpoofedSource), 1);
    }

    #[test]
    fn unknown_key_gets_no_answer() {
        let (c, mut dev, _, _) = setup(false);
        let mut mallory = Client::new(&c, 77, None, "198.51.100.1:1");
        let init = match mallory
            .tunn
            .format_handshake_initiation(&mut mallory.buf, false)
        {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        assert!(send(&mut dev, mallory.addr, &init).is_empty());
        assert_eq!(dev.stats().drops(DropReason::UnknownKey), 1);
    }

    #[test]
    fn wrong_preshared_key_never_completes() {
        let (c, mut dev, _, _) = setup(false);
        let mut fake = Client::new(&c, 2, Some([1; 32]), "203.0.113.7:40000");
        let init = match fake.tunn.format_handshake_initiation(&mut fake.buf, false) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        let out = send(&mut dev, fake.addr, &init);
        // The response is sent (the PSK only enters after), but the client cannot
        // finish it, so no data ever flows.
        for (_, resp) in out {
            assert!(matches!(
                fake.tunn.decapsulate(None, &resp, &mut fake.buf),
                TunnResult::Err(_)
            ));
        }
    }

    #[test]
    fn roaming_follows_the_latest_authenticated_packet() {
        let (_, mut dev, mut alice, _) = setup(false);
        alice.connect(&mut dev);
        alice.addr = "203.0.113.7:50000".parse().unwrap();
        let pkt = udp_packet(ip("10.0.0.250"), ip("10.0.0.10"), b"moved");
        send(&mut dev, alice.addr, &alice.seal(&pkt));
        let mut out = Outbox::new();
        dev.handle_tun_packet(
            &udp_packet(ip("10.0.0.10"), ip("10.0.0.250"), b"x"),
            &mut out,
        );
        assert_eq!(out.iter().next().unwrap().0, Dest::Udp(alice.addr));
        // A forged datagram from elsewhere does not move the endpoint.
        send(
            &mut dev,
            "198.51.100.9:9".parse().unwrap(),
            &[4, 0, 0, 0, 1, 2, 3],
        );
        assert_eq!(
            dev.peers().find(|p| p.name == "alice").unwrap().endpoint,
            Some(alice.addr)
        );
    }

    #[test]
    fn client_to_client_follows_policy() {
        for c2c in [false, true] {
            let (_, mut dev, mut alice, mut bob) = setup(c2c);
            alice.connect(&mut dev);
            bob.connect(&mut dev);
            let pkt = udp_packet(ip("10.0.0.250"), ip("10.0.0.251"), b"hi bob");
            let out = send(&mut dev, alice.addr, &alice.seal(&pkt));
            if c2c {
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].0, Dest::Udp(bob.addr));
                assert_eq!(bob.open(&out[0].1), pkt);
            } else {
                assert!(out.is_empty());
                assert_eq!(dev.stats().drops(DropReason::ClientToClientDisabled), 1);
            }
        }
    }

    #[test]
    fn unowned_destination_is_answered_with_icmp() {
        let (_, mut dev, _, _) = setup(false);
        let mut out = Outbox::new();
        let pkt = udp_packet(ip("10.0.0.10"), ip("10.0.0.253"), b"anyone?");
        dev.handle_tun_packet(&pkt, &mut out);
        let (d, icmp) = out.iter().next().unwrap();
        assert_eq!(d, Dest::Tun);
        let v = Ipv4Packet::new_checked(icmp).unwrap();
        assert_eq!(
            (v.src(), v.dst(), v.protocol()),
            (ip("10.0.0.253"), ip("10.0.0.10"), 1)
        );
        // The budget caps answers within one second.
        for _ in 0..2 * ICMP_PER_SECOND {
            out.clear();
            dev.handle_tun_packet(&pkt, &mut out);
        }
        assert!(out.is_empty());
        dev.reset_rate_limits();
        dev.handle_tun_packet(&pkt, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn removed_peer_loses_its_session_others_keep_theirs() {
        let (c, mut dev, mut alice, mut bob) = setup(false);
        alice.connect(&mut dev);
        bob.connect(&mut dev);
        let changes = dev.set_peers(&c.peers[1..]);
        assert_eq!(changes.removed, vec!["alice".to_string()]);
        let pkt = udp_packet(ip("10.0.0.250"), ip("10.0.0.10"), b"still here?");
        assert!(send(&mut dev, alice.addr, &alice.seal(&pkt)).is_empty());
        assert_eq!(dev.stats().drops(DropReason::UnknownIndex), 1);
        let pkt = udp_packet(ip("10.0.0.251"), ip("10.0.0.10"), b"bob continues");
        assert_eq!(
            send(&mut dev, bob.addr, &bob.seal(&pkt)),
            vec![(Dest::Tun, pkt)]
        );
        // Re-adding alice needs a new handshake, which works.
        dev.set_peers(&c.peers);
        alice.tunn = Client::new(&c, 2, Some([9; 32]), "203.0.113.7:40000").tunn;
        alice.connect(&mut dev);
    }

    #[test]
    fn hostile_datagrams_never_panic() {
        let (_, mut dev, mut alice, _) = setup(false);
        alice.connect(&mut dev);
        let good = alice.seal(&udp_packet(ip("10.0.0.250"), ip("10.0.0.10"), b"x"));
        let mut out = Outbox::new();
        let mut seed = 1u64;
        for len in 0..400usize {
            let mut d: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            if len >= 4 {
                d[0] = (len % 5) as u8; // all message types
                d[1..4].fill(0);
            }
            dev.handle_datagram(alice.addr, &d, &mut out);
            // Bit flips of a valid data packet.
            let mut g = good.clone();
            let i = len % g.len();
            g[i] ^= 0x40;
            dev.handle_datagram(alice.addr, &g, &mut out);
            dev.handle_tun_packet(&d, &mut out);
            out.clear();
        }
        assert!(dev.stats().drops(DropReason::Malformed) > 0);
    }

    #[test]
    fn new_and_existing_peer_keys() {
        let (c, dev, _, _) = setup(false);
        assert_eq!(dev.public_key(), c.private_key.public_key());
        assert_eq!(dev.peers().count(), 2);
        let _ = PrivateKey::from_bytes([0; 32]);
    }
}
