//! The UDP datagram path, from arrival to drop or TUN write, and the TUN side back:
//! a server-role device (the appliance) with fixed peers, driven through
//! `wg::Worker::handle_datagram` and `handle_tun_packet` by a sequence of steps the
//! input chooses. Besides raw bytes from anyone, the steps steer real client
//! sessions (boringtun's `Tunn`, as a stock client): handshakes, packets sealed
//! with live keys, replays and tampering, so that the fuzzer gets past decryption
//! into routing, and the other way from the TUN device to a client.
//!
//! The network: 10.0.0.0/24 with a pushed route 192.168.10.0/24; alice
//! (10.0.0.250, with a preshared key) and bob (10.0.0.251) are peers; mallory has a
//! key nobody configured. Client-to-client and the TUN buffer size come from the
//! input.
//!
//! Checks, besides "never panics":
//! - bytes no client sealed (raw, forged, tampered or replayed datagrams) never
//!   reach the TUN device, are each counted as exactly one drop (tampered and
//!   replayed ones as at most one: a replay can be the first copy the device
//!   sees), and are answered, if at all, only to their source and with no more
//!   bytes than they had (no amplification);
//! - mallory (no configured key) gets nothing but cookie replies;
//! - a packet a client sealed reaches the TUN device at most as often as it was
//!   sealed, unchanged, and only when a naive model of the routing policy says so;
//!   every routing drop is the one the model names;
//! - what a client decrypts from the device is a packet the TUN side gave the
//!   device for that client's address, or one another client sent it (only with
//!   client-to-client on);
//! - the device counts every datagram it was handed.
#![no_main]

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use cloudpipe_core::config::{Config, ConfigFile};
use cloudpipe_core::keys::PrivateKey;
use cloudpipe_core::packet::{checksum, IpHeader};
use cloudpipe_core::wg::{Device, DropReason, PeerConfig, Stats, Transmits, TunBatch, Worker};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU8;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SERVER_KEY: [u8; 32] = [0x01; 32];
/// alice, bob (configured), mallory (not).
const CLIENT_KEYS: [[u8; 32]; 3] = [[0x11; 32], [0x12; 32], [0x13; 32]];
const ALICE_PSK: [u8; 32] = [0x09; 32];
const CLIENT_ADDRS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 250),
    Ipv4Addr::new(10, 0, 0, 251),
    Ipv4Addr::new(10, 0, 0, 252),
];
/// Steps per input: each handshake costs a few hundred microseconds.
const MAX_STEPS: usize = 48;
/// Inner packets are kept below any tunnel MTU.
const MAX_INNER_PAYLOAD: usize = 1300;

#[derive(Arbitrary, Debug)]
struct Input {
    client_to_client: bool,
    /// TUN buffers for a 9000-byte MTU instead of 1500 (`cloudpipe-net`'s tun: the
    /// larger of MTU and 1500, plus 64).
    jumbo: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Any bytes from any address.
    Raw { from: u8, bytes: Vec<u8> },
    /// A message type, a receiver index the device handed out, then any bytes: the
    /// peer lookup and boringtun's checks run.
    Forged {
        from: u8,
        kind: u8,
        index: u8,
        rest: Vec<u8>,
    },
    /// A whole handshake by a client: initiation, response, confirming keepalive.
    Connect { client: u8, from: u8 },
    /// Only the client's initiation; the answer waits in its inbox.
    Initiate { client: u8, from: u8 },
    /// The client reads its inbox and sends what its session answers.
    Receive { client: u8 },
    /// A packet sealed by a client's session.
    Send { client: u8, from: u8, inner: Inner },
    /// A datagram a client sent earlier, again, from any address.
    Replay { which: u16, from: u8 },
    /// A packet sealed by a client's session, one byte changed, from any address.
    Tamper {
        client: u8,
        from: u8,
        inner: Inner,
        at: u16,
        xor: NonZeroU8,
    },
    /// A packet read from the TUN device.
    Tun { inner: Inner },
    /// Time passes: the device's and the clients' timers run; at each new second
    /// the rate limits reset.
    Tick { centis: u8 },
    /// A client's peer is removed from the device under its live session.
    Remove { client: u8 },
    /// A client's peer is configured again.
    Restore { client: u8 },
}

#[derive(Arbitrary, Debug, Clone)]
enum Inner {
    V4 {
        src: Host,
        dst: Host,
        protocol: u8,
        payload: Vec<u8>,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        payload: Vec<u8>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Host {
    /// The sending client's own address (a tenant host's for TUN packets).
    Own,
    Client(u8),
    Tenant(u8),
    Routed(u8),
    Any([u8; 4]),
}

impl Inner {
    /// The packet's bytes; `own` is what [`Host::Own`] means here.
    fn bytes(&self, own: Ipv4Addr) -> Vec<u8> {
        match self {
            Inner::V4 {
                src,
                dst,
                protocol,
                payload,
            } => {
                let payload = &payload[..payload.len().min(MAX_INNER_PAYLOAD)];
                let total = 20 + payload.len();
                let mut p = vec![0u8; total];
                p[0] = 0x45;
                p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                p[8] = 64;
                p[9] = *protocol;
                p[12..16].copy_from_slice(&src.addr(own).octets());
                p[16..20].copy_from_slice(&dst.addr(own).octets());
                let c = checksum(&p[..20]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
                p[20..].copy_from_slice(payload);
                p
            }
            Inner::V6 { src, dst, payload } => {
                let payload = &payload[..payload.len().min(MAX_INNER_PAYLOAD)];
                let mut p = vec![0u8; 40 + payload.len()];
                p[0] = 0x60;
                p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
                p[6] = 17;
                p[7] = 64;
                p[8..24].copy_from_slice(src);
                p[24..40].copy_from_slice(dst);
                p[40..].copy_from_slice(payload);
                p
            }
            Inner::Raw(b) => b[..b.len().min(MAX_INNER_PAYLOAD)].to_vec(),
        }
    }

    fn structured(&self) -> bool {
        !matches!(self, Inner::Raw(_))
    }
}

impl Host {
    fn addr(self, own: Ipv4Addr) -> Ipv4Addr {
        match self {
            Host::Own => own,
            Host::Client(i) => CLIENT_ADDRS[usize::from(i) % CLIENT_ADDRS.len()],
            Host::Tenant(i) => Ipv4Addr::new(10, 0, 0, i),
            Host::Routed(i) => Ipv4Addr::new(192, 168, 10, i),
            Host::Any(o) => Ipv4Addr::from(o),
        }
    }
}

/// Where a step's datagram comes from: each client has four addresses of its own
/// (it roams among them); everything else is somebody else's.
fn client_addr(client: usize, from: u8) -> SocketAddr {
    SocketAddr::from((
        [203, 0, 113, (client * 10 + usize::from(from % 4) + 1) as u8],
        40000 + u16::from(from % 4),
    ))
}

fn any_addr(from: u8) -> SocketAddr {
    match from % 3 {
        // Spoofing a client's own source address.
        0 => client_addr(usize::from(from / 3) % 3, from / 9),
        1 => SocketAddr::from(([198, 51, 100, from], 1194)),
        _ => SocketAddr::from((
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(from)),
            51820,
        )),
    }
}

/// The network, with and without client-to-client (made once: key derivations are
/// the slowest part of an input).
fn config(client_to_client: bool) -> &'static Config {
    static CONFIGS: OnceLock<[Config; 2]> = OnceLock::new();
    &CONFIGS.get_or_init(|| [make_config(false), make_config(true)])[usize::from(client_to_client)]
}

fn make_config(client_to_client: bool) -> Config {
    let public = |k: [u8; 32]| PrivateKey::from_bytes(k).public_key().to_base64();
    let json = format!(
        r#"{{
  "version": 1, "network": "fuzz", "cidr": "10.0.0.0/24",
  "pool": {{ "first": "10.0.0.250", "last": "10.0.0.254" }},
  "routes": ["10.0.0.0/24", "192.168.10.0/24"],
  "client_to_client": {client_to_client},
  "private_key": "{}",
  "peers": [
    {{ "name": "alice", "public_key": "{}", "preshared_key": "{}", "address": "10.0.0.250" }},
    {{ "name": "bob", "public_key": "{}", "address": "10.0.0.251" }}
  ]
}}"#,
        PrivateKey::from_bytes(SERVER_KEY).to_base64(),
        public(CLIENT_KEYS[0]),
        cloudpipe_core::keys::PresharedKey::from_bytes(ALICE_PSK).to_base64(),
        public(CLIENT_KEYS[1]),
    );
    let file: ConfigFile = serde_json::from_str(&json).expect("the fuzz config parses");
    Config::try_from(file).expect("the fuzz config is valid")
}

/// What the routing policy should decide for a packet a configured client sent
/// (a naive model of `wg::policy` for this network).
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Deliver,
    ToPeer(usize),
    Drop(DropReason),
}

fn expect(from: usize, header: &IpHeader, present: &[bool; 2], client_to_client: bool) -> Expect {
    let owner = |ip: IpAddr| (0..2).find(|&c| present[c] && ip == IpAddr::V4(CLIENT_ADDRS[c]));
    if owner(header.src) != Some(from) {
        return Expect::Drop(DropReason::SpoofedSource);
    }
    if let Some(to) = owner(header.dst) {
        return if to == from {
            Expect::Drop(DropReason::DestinationNotAllowed)
        } else if client_to_client {
            Expect::ToPeer(to)
        } else {
            Expect::Drop(DropReason::ClientToClientDisabled)
        };
    }
    let allowed = match header.dst {
        IpAddr::V4(a) => {
            let o = a.octets();
            (o[0], o[1], o[2]) == (10, 0, 0) || (o[0], o[1], o[2]) == (192, 168, 10)
        }
        IpAddr::V6(_) => false,
    };
    if allowed {
        Expect::Deliver
    } else {
        Expect::Drop(DropReason::DestinationNotAllowed)
    }
}

struct Client {
    tunn: Tunn,
    /// Where it sends from now.
    addr: SocketAddr,
    /// Datagrams the device sent to it, not yet read.
    inbox: Vec<Vec<u8>>,
}

/// One handling of a datagram or TUN packet: what came out.
#[derive(Default)]
struct Out {
    net: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

struct Harness {
    device: Arc<Device>,
    worker: Worker,
    config: &'static Config,
    /// Made when first used (each costs two scalar multiplications).
    clients: [Option<Client>; 3],
    present: [bool; 2],
    client_to_client: bool,
    slot: usize,
    now: Instant,
    start: Instant,
    /// Every datagram a client sent to the device, for replays.
    sent: Vec<Vec<u8>>,
    /// Inner packets sealed by each client, with how many copies; and how many
    /// reached the TUN device.
    sealed: HashMap<(usize, Vec<u8>), (u32, u32)>,
    /// Packets given to the device from the TUN side, by destination, with counts.
    from_tun: HashMap<Vec<u8>, u32>,
    /// Receiver indices the device handed out (its handshake messages' sender index).
    indices: Vec<u32>,
    datagrams: u64,
}

impl Harness {
    fn new(client_to_client: bool, jumbo: bool) -> Self {
        let config = config(client_to_client);
        let peers = config.peers.iter().map(|p| p.peer_config()).collect();
        let device = Arc::new(Device::new(config.device_config(), peers, 0x00ab_cdef));
        let worker = device.worker();
        let now = Instant::now();
        Harness {
            device,
            worker,
            config,
            clients: [None, None, None],
            present: [true, true],
            client_to_client,
            slot: if jumbo { 9000 + 64 } else { 1500 + 64 },
            now,
            start: now,
            sent: Vec::new(),
            sealed: HashMap::new(),
            from_tun: HashMap::new(),
            indices: Vec::new(),
            datagrams: 0,
        }
    }

    /// Client `n`, made on first use.
    fn client(&mut self, n: usize) -> &mut Client {
        self.clients[n].get_or_insert_with(|| {
            let server = config(false).private_key.public_key();
            Client {
                tunn: Tunn::new(
                    x25519::StaticSecret::from(CLIENT_KEYS[n]),
                    x25519::PublicKey::from(*server.as_bytes()),
                    (n == 0).then_some(ALICE_PSK),
                    None,
                    n as u32 + 1,
                    None,
                ),
                addr: client_addr(n, 0),
                inbox: Vec::new(),
            }
        })
    }

    fn collect(&mut self, net: &Transmits, tun: &TunBatch) -> Out {
        let mut out = Out::default();
        for t in net.iter() {
            let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
            for c in t.contents.chunks(seg) {
                out.net.push((t.dest, c.to_vec()));
            }
        }
        out.tun = tun.iter().map(<[u8]>::to_vec).collect();
        // The device's handshake messages name the index it will be reached at.
        for (_, d) in &out.net {
            if matches!(d.first(), Some(1 | 2)) && d.len() >= 8 {
                self.indices
                    .push(u32::from_le_bytes([d[4], d[5], d[6], d[7]]));
            }
        }
        // Datagrams to a client's current address wait in its inbox.
        for (dest, d) in &out.net {
            if let Some(c) = self.clients.iter_mut().flatten().find(|c| c.addr == *dest) {
                c.inbox.push(d.clone());
            }
        }
        out
    }

    fn datagram(&mut self, src: SocketAddr, bytes: &[u8]) -> (Out, Stats, Stats) {
        let before = self.device.stats();
        let (mut net, mut tun) = (Transmits::new(4096, 64), TunBatch::new(0, self.slot));
        self.worker
            .handle_datagram(self.now, src, bytes, &mut net, &mut tun);
        self.datagrams += 1;
        let after = self.device.stats();
        assert_eq!(
            after.rx_datagrams, self.datagrams,
            "every datagram is counted"
        );
        (self.collect(&net, &tun), before, after)
    }

    /// A datagram a client produced: sent, remembered for replays, and checked.
    fn client_sends(&mut self, client: usize, bytes: Vec<u8>) {
        let src = self.client(client).addr;
        let (out, _, _) = self.datagram(src, &bytes);
        self.sent.push(bytes);
        if client == 2 {
            for (_, d) in &out.net {
                assert_eq!(d.first(), Some(&3), "mallory got more than a cookie reply");
            }
        }
        for p in &out.tun {
            self.delivered(client, p);
        }
    }

    /// A packet that reached the TUN device from `client`'s session.
    fn delivered(&mut self, client: usize, p: &[u8]) {
        let header = IpHeader::parse(p).expect("the device writes only IP packets to TUN");
        assert!(
            client < 2,
            "a packet from an unconfigured key reached the TUN device"
        );
        assert_eq!(
            header.len,
            p.len(),
            "TUN packets are cut at their IP length"
        );
        let mut copies = self
            .sealed
            .iter_mut()
            .filter(|((c, inner), _)| *c == client && inner.starts_with(p));
        let Some(((_, inner), (_, seen))) = copies.find(|(_, (sealed, seen))| seen < sealed) else {
            panic!("client {client}'s packet reached the TUN device more often than it was sealed (replay?), or was never sealed: {p:02x?}");
        };
        *seen += 1;
        let inner = inner.clone();
        let h = IpHeader::parse(&inner).expect("delivered packets parse");
        assert_eq!(
            expect(client, &h, &self.present, self.client_to_client),
            Expect::Deliver,
            "delivered against the policy: {h:?}"
        );
    }

    /// A client seals `inner`: the plaintext and the datagram its session makes of
    /// it (data, or an initiation when it has no session and queues the packet).
    /// Every plaintext is counted as sealed: queued ones are sent later, as they are.
    fn seal(&mut self, client: usize, inner: &Inner) -> Option<(Vec<u8>, Vec<u8>)> {
        let plain = inner.bytes(CLIENT_ADDRS[client]);
        let mut buf = vec![0u8; plain.len() + 256];
        let datagram = match self.client(client).tunn.encapsulate(&plain, &mut buf) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            _ => None,
        };
        // Queued (no datagram, or an initiation) or sealed: it may reach the device.
        self.sealed.entry((client, plain.clone())).or_default().0 += 1;
        datagram.map(|d| (plain, d))
    }

    /// Client `c` sends a handshake initiation from `from` (`force`: a new one even
    /// while one is under way). Whether it sent one.
    fn initiate(&mut self, c: usize, from: u8, force: bool) -> bool {
        self.client(c).addr = client_addr(c, from);
        let mut buf = vec![0u8; 256];
        let TunnResult::WriteToNetwork(init) = self
            .client(c)
            .tunn
            .format_handshake_initiation(&mut buf, force)
        else {
            return false;
        };
        let init = init.to_vec();
        self.client_sends(c, init);
        true
    }

    fn receive(&mut self, client: usize) {
        let inbox = std::mem::take(&mut self.client(client).inbox);
        let mut buf = vec![0u8; 65536];
        for d in inbox {
            let mut replies = Vec::new();
            match self.client(client).tunn.decapsulate(None, &d, &mut buf) {
                TunnResult::WriteToNetwork(p) => {
                    replies.push(p.to_vec());
                    loop {
                        match self.client(client).tunn.decapsulate(None, &[], &mut buf) {
                            TunnResult::WriteToNetwork(p) => replies.push(p.to_vec()),
                            _ => break,
                        }
                    }
                }
                TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => {
                    let p = p.to_vec();
                    self.decrypted_by(client, &p);
                }
                _ => {}
            }
            for r in replies {
                self.client_sends(client, r);
            }
        }
    }

    /// A packet `client` decrypted from the device: it was for that client.
    fn decrypted_by(&mut self, client: usize, p: &[u8]) {
        let from_tun = self
            .from_tun
            .iter_mut()
            .find(|(q, n)| **n > 0 && q.starts_with(p));
        if let Some((_, n)) = from_tun {
            *n -= 1;
            let h = IpHeader::parse(p).expect("the device forwards only IP packets");
            assert_eq!(
                h.dst,
                IpAddr::V4(CLIENT_ADDRS[client]),
                "a TUN packet went to the wrong client"
            );
            return;
        }
        assert!(
            self.client_to_client,
            "a client got a packet that came from no TUN read: {p:02x?}"
        );
        let other = 1 - client.min(1);
        let forwarded = self
            .sealed
            .iter()
            .any(|((c, inner), _)| *c == other && inner.starts_with(p));
        assert!(forwarded, "a client got a packet nobody sent it: {p:02x?}");
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Raw { from, bytes } => {
                let src = any_addr(*from);
                let (out, before, after) = self.datagram(src, bytes);
                stranger(&out, bytes.len(), src, &before, &after, true);
            }
            Step::Forged {
                from,
                kind,
                index,
                rest,
            } => {
                let src = any_addr(*from);
                let idx = match self.indices.len() {
                    0 => u32::from(*index) << 8,
                    n => self.indices[usize::from(*index) % n],
                };
                let mut bytes = vec![kind % 4 + 1, 0, 0, 0];
                bytes.extend_from_slice(&idx.to_le_bytes());
                bytes.extend_from_slice(rest);
                let (out, before, after) = self.datagram(src, &bytes);
                stranger(&out, bytes.len(), src, &before, &after, true);
            }
            Step::Connect { client, from } => {
                let c = usize::from(*client) % 3;
                if self.initiate(c, *from, true) {
                    self.receive(c);
                }
            }
            Step::Initiate { client, from } => {
                self.initiate(usize::from(*client) % 3, *from, false);
            }
            Step::Receive { client } => self.receive(usize::from(*client) % 3),
            Step::Send {
                client,
                from,
                inner,
            } => {
                let c = usize::from(*client) % 3;
                self.client(c).addr = client_addr(c, *from);
                let Some((plain, datagram)) = self.seal(c, inner) else {
                    return;
                };
                if datagram.first() != Some(&4) {
                    // No session yet: the client queued the packet (seal counted
                    // it) and sends an initiation.
                    self.client_sends(c, datagram);
                    return;
                }
                let src = self.client(c).addr;
                let (out, before, after) = self.datagram(src, &datagram);
                self.sent.push(datagram);
                for p in &out.tun {
                    self.delivered(c, p);
                }
                if c == 2 || !inner.structured() {
                    return;
                }
                let Ok(header) = IpHeader::parse(&plain) else {
                    return;
                };
                assert!(
                    dropped(&before, &after) + out.tun.len() + out.net.len() >= 1,
                    "a data packet vanished: neither dropped nor passed on"
                );
                let want = expect(c, &header, &self.present, self.client_to_client);
                for r in [
                    DropReason::SpoofedSource,
                    DropReason::DestinationNotAllowed,
                    DropReason::ClientToClientDisabled,
                ] {
                    if after.drops(r) > before.drops(r) {
                        assert_eq!(want, Expect::Drop(r), "{header:?}");
                    }
                }
                if matches!(want, Expect::ToPeer(_)) {
                    // To the other client, or dropped for want of its endpoint;
                    // never into the TUN device.
                    assert!(out.tun.is_empty());
                }
            }
            Step::Replay { which, from } => {
                if self.sent.is_empty() {
                    return;
                }
                let bytes = self.sent[usize::from(*which) % self.sent.len()].clone();
                let src = any_addr(*from);
                let (out, before, after) = self.datagram(src, &bytes);
                stranger(&out, bytes.len(), src, &before, &after, false);
            }
            Step::Tamper {
                client,
                from,
                inner,
                at,
                xor,
            } => {
                let c = usize::from(*client) % 3;
                let Some((plain, mut datagram)) = self.seal(c, inner) else {
                    return;
                };
                if datagram.first() == Some(&4) {
                    // This copy is spoilt; it was never sent as it was sealed.
                    if let Some(e) = self.sealed.get_mut(&(c, plain)) {
                        e.0 -= 1;
                    }
                }
                let i = usize::from(*at) % datagram.len();
                datagram[i] ^= xor.get();
                let src = any_addr(*from);
                let (out, before, after) = self.datagram(src, &datagram);
                stranger(&out, datagram.len(), src, &before, &after, false);
            }
            Step::Tun { inner } => {
                let p = inner.bytes(Ipv4Addr::new(10, 0, 0, 10));
                let (mut net, mut tun) = (Transmits::new(4096, 64), TunBatch::new(0, self.slot));
                self.worker
                    .handle_tun_packet(self.now, &p, &mut net, &mut tun);
                let out = self.collect(&net, &tun);
                if let Ok(h) = IpHeader::parse(&p) {
                    *self.from_tun.entry(p[..h.len].to_vec()).or_default() += 1;
                }
                for (dest, _) in &out.net {
                    let peer = self
                        .device
                        .peers(std::time::SystemTime::UNIX_EPOCH)
                        .into_iter()
                        .find(|i| i.endpoint == Some(*dest));
                    assert!(
                        peer.is_some(),
                        "a TUN packet was sent to {dest}, no peer's endpoint"
                    );
                }
                for t in &out.tun {
                    // Only ICMP host unreachable goes back into the TUN device, to
                    // the packet's source.
                    let h = IpHeader::parse(t).expect("ICMP answers parse");
                    let original = IpHeader::parse(&p).expect("answered packets parse");
                    assert_eq!(t.get(9), Some(&1), "not ICMP: {t:02x?}");
                    assert_eq!(h.dst, original.src);
                }
            }
            Step::Tick { centis } => {
                let second = self.now.duration_since(self.start).as_secs();
                self.now += Duration::from_millis(u64::from(*centis) * 10);
                if self.now.duration_since(self.start).as_secs() != second {
                    self.device.reset_rate_limits();
                }
                let mut net = Transmits::new(4096, 64);
                self.device.update_timers(self.now, &mut net);
                let tun = TunBatch::new(0, 64);
                self.collect(&net, &tun);
                let mut buf = vec![0u8; 256];
                for c in 0..3 {
                    let Some(client) = self.clients[c].as_mut() else {
                        continue;
                    };
                    if let TunnResult::WriteToNetwork(p) = client.tunn.update_timers(&mut buf) {
                        let p = p.to_vec();
                        self.client_sends(c, p);
                    }
                }
            }
            Step::Remove { client } => {
                let c = usize::from(*client) % 2;
                let key = self.config.peers[c].public_key;
                self.device.edit(|e| e.remove_peer(&key));
                self.present[c] = false;
            }
            Step::Restore { client } => {
                let c = usize::from(*client) % 2;
                let cfg: PeerConfig = self.config.peers[c].peer_config();
                self.device
                    .edit(|e| e.upsert_peer(cfg, true))
                    .expect("a client key is not the device's own");
                self.present[c] = true;
            }
        }
    }
}

/// A datagram no client sent as it arrived: nothing reaches the TUN device;
/// answers go only to its source and are no larger than it; it is one drop
/// (`exactly`), or at most one (a replay or a tampered copy may be the first the
/// device sees of a message it then handles as the real one).
fn stranger(out: &Out, len: usize, src: SocketAddr, before: &Stats, after: &Stats, exactly: bool) {
    assert!(out.tun.is_empty(), "unsealed bytes reached the TUN device");
    let mut answered = 0;
    for (dest, d) in &out.net {
        assert_eq!(*dest, src, "an answer went to someone else");
        answered += d.len();
    }
    assert!(
        answered <= len,
        "{len} bytes in, {answered} out: amplification"
    );
    let dropped = dropped(before, after);
    if exactly {
        assert_eq!(dropped, 1, "raw bytes are one drop");
    } else {
        assert!(dropped <= 1, "one datagram, {dropped} drops");
    }
}

/// Drops counted between two readings.
fn dropped(before: &Stats, after: &Stats) -> usize {
    let sum = |s: &Stats| s.drops_by_reason().map(|(_, n)| n).sum::<u64>();
    (sum(after) - sum(before)) as usize
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(input.client_to_client, input.jumbo);
    for step in input.steps.iter().take(MAX_STEPS) {
        h.step(step);
    }
});
