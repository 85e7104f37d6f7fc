//! The WireGuard device: an identity (static key pair, handshake rate limiter), a
//! role, and a peer set, shared by the workers that move packets.
//!
//! Sharing without a global lock: the configuration (identity, role, peers by key
//! and by session index, the allowed-IPs table) is an immutable snapshot behind an
//! [`ArcSwap`]; readers take the current one for each packet, writers build a new
//! one under the writers' mutex and swap it in. A peer's mutable state (its
//! boringtun `Tunn`, endpoint, keepalive) sits behind that peer's own mutex, so
//! workers contend only when they move the same peer's packets at the same moment.
//!
//! Time is an argument: every entry point that needs the clock takes `now`
//! (`Instant` for timers, `SystemTime` for reporting). boringtun's `Tunn` keeps its
//! own timers on the monotonic clock; [`Device::update_timers`] advances them.

use super::allowed_ips::AllowedIps;
use super::policy::{route_inbound, Inbound, Role};
use super::stats::{Counters, DropReason, Stats};
use super::transmit::{Transmits, TunBatch};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::packet::{icmp_unreachable, IpHeader, Ipv4Packet};
use arc_swap::ArcSwap;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use ipnetwork::IpNetwork;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Handshake messages per second, across all peers, above which initiations are
/// answered with cookie replies (whitepaper 5.4.7). wireguard-go uses the same order
/// of magnitude. Each message is counted once, by the worker that receives it
/// (a peer's `Tunn` gets a limiter that is never under load: see
/// [`Identity::sessions`]).
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// ICMP unreachable answers per second: a flood to unassigned addresses must not
/// turn into a flood of answers.
pub const ICMP_PER_SECOND: u32 = 100;
/// Bytes WireGuard adds to a data packet: 16 bytes of header and a 16-byte
/// Poly1305 tag (whitepaper 5.4.6), plus up to 15 bytes of padding.
pub const DATA_OVERHEAD: usize = 32 + 15;
/// The largest handshake message (an initiation, whitepaper 5.4.2), and the least
/// room boringtun wants for any output.
pub const MIN_OUTPUT: usize = 148;
/// Cookie reply size (whitepaper 5.4.7).
const COOKIE_REPLY_LEN: usize = 64;
/// Session indices carry the peer's 24-bit index in their top bits (boringtun
/// shifts the index given to `Tunn::new` left by 8).
pub const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// The device's own settings (the `[Interface]` of a WireGuard config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: PrivateKey,
    /// UDP port the I/O layer listens on; reported by the UAPI, not used here.
    pub listen_port: u16,
    /// Firewall mark for outgoing datagrams (0: none); reported by the UAPI.
    pub fwmark: u32,
    pub role: Role,
}

/// One peer's settings (a `[Peer]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// Where to send before the peer has been heard from (clients know their
    /// server's; a server learns each client's from its packets).
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives when nothing else is sent; `None` or 0: off.
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<IpNetwork>,
}

impl PeerConfig {
    /// A peer with only a key and its allowed IPs.
    pub fn new(public_key: PublicKey, allowed_ips: Vec<IpNetwork>) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips,
        }
    }
}

/// What a peer looks like from outside, for status, the UAPI and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<IpNetwork>,
    /// Wall-clock time of the latest completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes of inner packets received from and sent to the peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What a change to the peer set did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<PublicKey>,
    pub removed: Vec<PublicKey>,
    /// Peers kept whose settings changed (their session is kept unless the
    /// preshared key changed).
    pub updated: Vec<PublicKey>,
}

impl PeerChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

/// A refused change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("no peer with public key {0}")]
    NoSuchPeer(PublicKey),
    #[error("{0} is the device's own public key: a device cannot be its own peer")]
    OwnKey(PublicKey),
    #[error("the 2^24 peer indices are all in use")]
    IndicesExhausted,
}

/// A peer as the workers see it.
pub struct Peer {
    public_key: PublicKey,
    /// The peer's 24-bit index (top bits of its session indices).
    index: u32,
    state: Mutex<PeerState>,
}

struct PeerState {
    /// The boringtun session state, made on first use: making one costs an X25519
    /// operation and about 11 KiB (hence the box), which the idle peers of a large
    /// set never pay.
    tunn: Option<Box<Tunn>>,
    /// The identity `tunn` was made with (a private key change re-keys it).
    made_by: Option<Arc<Identity>>,
    preshared_key: Option<PresharedKey>,
    /// Where the latest authenticated packet came from (roaming follows it), or the
    /// configured endpoint until then.
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u16>,
    /// When a datagram was last sent to the peer (persistent keepalive).
    last_sent: Option<Instant>,
}

impl Peer {
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The peer's session state in `st` (its lock), made now if it is not yet.
    fn tunn<'a>(&self, st: &'a mut PeerState, identity: &Arc<Identity>) -> &'a mut Tunn {
        let current = st
            .made_by
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, identity));
        match &mut st.tunn {
            Some(t) if !current => t.set_static_private(
                identity.secret.clone(),
                identity.public,
                Some(identity.sessions.clone()),
            ),
            Some(_) => {}
            None => {
                st.tunn = Some(Box::new(identity.tunn(
                    &self.public_key,
                    st.preshared_key.as_ref(),
                    self.index,
                )))
            }
        }
        st.made_by = Some(identity.clone());
        st.tunn.as_mut().expect("made above")
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A worker that panicked while holding a peer leaves a state that is still
        // a valid Tunn; keep going rather than take every worker down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("public_key", &self.public_key)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

struct Identity {
    private_key: PrivateKey,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    /// The limiter the peers' `Tunn`s check again with: a message reaches a
    /// `Tunn` only after the worker's check against `rate_limiter` passed, so this
    /// one is never under load. Were it the shared one, the second count of one
    /// message could cross the limit and `Tunn` would answer with a cookie reply,
    /// after its sender had been taken for a peer: an unauthenticated message
    /// (a replayed initiation) would then move that peer's endpoint.
    sessions: Arc<RateLimiter>,
}

impl Identity {
    fn new(private_key: PrivateKey) -> Arc<Self> {
        let secret = x25519::StaticSecret::from(*private_key.as_bytes());
        let public = x25519::PublicKey::from(&secret);
        Arc::new(Identity {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            sessions: Arc::new(RateLimiter::new(&public, u64::MAX)),
            private_key,
            secret,
            public,
        })
    }

    fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public.to_bytes())
    }

    fn tunn(&self, cfg_key: &PublicKey, psk: Option<&PresharedKey>, index: u32) -> Tunn {
        Tunn::new(
            self.secret.clone(),
            x25519::PublicKey::from(*cfg_key.as_bytes()),
            psk.map(|k| *k.as_bytes()),
            // Persistent keepalive is ours (update_timers), so that changing it
            // never restarts the peer's session.
            None,
            index,
            Some(self.sessions.clone()),
        )
    }
}

/// The shared, immutable configuration snapshot.
#[derive(Clone)]
struct Snapshot {
    identity: Arc<Identity>,
    listen_port: u16,
    fwmark: u32,
    role: Arc<Role>,
    peers: HashMap<PublicKey, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    allowed_ips: AllowedIps<Arc<Peer>>,
    /// Each peer's networks in `allowed_ips`, in the order they were given.
    nets: HashMap<PublicKey, Vec<IpNetwork>>,
}

/// The WireGuard device. `Sync`: share it (`Arc`) between workers and the control
/// side.
pub struct Device {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers and owns the index allocator.
    writer: Mutex<u32>,
    workers: Mutex<Vec<Arc<Counters>>>,
    icmp_budget: AtomicU32,
}

impl Device {
    /// A device with `config` and `peers`. `index_seed` should be random: session
    /// indices then differ across restarts, so a stale client message finds no
    /// session. Invalid peers (the device's own key) are skipped.
    pub fn new(config: DeviceConfig, peers: Vec<PeerConfig>, index_seed: u32) -> Self {
        let identity = Identity::new(config.private_key);
        let device = Device {
            snapshot: ArcSwap::from_pointee(Snapshot {
                identity,
                listen_port: config.listen_port,
                fwmark: config.fwmark,
                role: Arc::new(config.role),
                peers: HashMap::new(),
                by_index: HashMap::new(),
                allowed_ips: AllowedIps::new(),
                nets: HashMap::new(),
            }),
            writer: Mutex::new(index_seed & INDEX_MASK),
            workers: Mutex::new(Vec::new()),
            icmp_budget: AtomicU32::new(ICMP_PER_SECOND),
        };
        device.set_peers(peers);
        device
    }

    /// A worker: the per-thread handle that moves packets, with its own counters.
    pub fn worker(self: &Arc<Self>) -> Worker {
        let counters = Arc::new(Counters::default());
        lock(&self.workers).push(counters.clone());
        Worker {
            device: self.clone(),
            counters,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.snapshot.load().identity.public_key()
    }

    pub fn private_key(&self) -> PrivateKey {
        self.snapshot.load().identity.private_key.clone()
    }

    pub fn listen_port(&self) -> u16 {
        self.snapshot.load().listen_port
    }

    pub fn fwmark(&self) -> u32 {
        self.snapshot.load().fwmark
    }

    pub fn role(&self) -> Arc<Role> {
        self.snapshot.load().role.clone()
    }

    pub fn peer_count(&self) -> usize {
        self.snapshot.load().peers.len()
    }

    /// Counters summed over every worker.
    pub fn stats(&self) -> Stats {
        let workers = lock(&self.workers);
        Stats::sum(workers.iter().map(|c| &**c))
    }

    /// Every peer's state, in public-key order; `now` turns boringtun's "time since
    /// the last handshake" into a wall-clock time.
    pub fn peers(&self, now: SystemTime) -> Vec<PeerInfo> {
        let snap = self.snapshot.load();
        let mut out: Vec<PeerInfo> = snap
            .peers
            .values()
            .map(|p| {
                let st = p.lock();
                let (since, tx, rx) = st.tunn.as_ref().map_or((None, 0, 0), |t| {
                    let (since, tx, rx, _, _) = t.stats();
                    (since, tx, rx)
                });
                PeerInfo {
                    public_key: p.public_key,
                    preshared_key: st.preshared_key.clone(),
                    endpoint: st.endpoint,
                    persistent_keepalive: st.persistent_keepalive,
                    allowed_ips: snap.nets.get(&p.public_key).cloned().unwrap_or_default(),
                    last_handshake: since.and_then(|d| now.checked_sub(d)),
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                }
            })
            .collect();
        out.sort_by(|a, b| a.public_key.as_bytes().cmp(b.public_key.as_bytes()));
        out
    }

    /// Change the configuration in one step: `f` edits a copy that replaces the
    /// current one when it returns (even when it returns an error: edits made
    /// before the error stay, as in the UAPI, where each line takes effect).
    pub fn edit<R>(&self, f: impl FnOnce(&mut Edit<'_>) -> R) -> R {
        let mut next_index = lock(&self.writer);
        let mut edit = Edit {
            snap: Snapshot::clone(&self.snapshot.load()),
            next_index: &mut next_index,
            changes: PeerChanges::default(),
        };
        let r = f(&mut edit);
        self.snapshot.store(Arc::new(edit.snap));
        r
    }

    /// Make the peer set exactly `peers`: missing ones are removed (their sessions
    /// end), new ones added, present ones updated in place (sessions kept unless
    /// the preshared key changed; allowed IPs replaced).
    pub fn set_peers(&self, peers: Vec<PeerConfig>) -> PeerChanges {
        self.edit(|e| {
            let keep: std::collections::HashSet<PublicKey> =
                peers.iter().map(|p| p.public_key).collect();
            let stale: Vec<PublicKey> = e
                .snap
                .peers
                .keys()
                .filter(|k| !keep.contains(k))
                .copied()
                .collect();
            for k in stale {
                e.remove_peer(&k);
            }
            for p in peers {
                // Only the own key fails, and it is skipped by design.
                let _ = e.upsert_peer(p, true);
            }
            std::mem::take(&mut e.changes)
        })
    }

    /// Once a second: the shared handshake rate limiter and the ICMP budget.
    pub fn reset_rate_limits(&self) {
        self.snapshot.load().identity.rate_limiter.reset_count();
        self.icmp_budget.store(ICMP_PER_SECOND, Ordering::Relaxed);
    }

    /// Run every peer's timers (retransmit, rekey, keepalive, expiry, persistent
    /// keepalive); call every 100-250 ms (boringtun's advice). Datagrams due go to
    /// `out`.
    pub fn update_timers(&self, now: Instant, out: &mut Transmits) {
        let snap = self.snapshot.load();
        let mut scratch = [0u8; MIN_OUTPUT];
        for peer in snap.peers.values() {
            let mut st = peer.lock();
            let endpoint = st.endpoint;
            let keepalive_due = match (st.persistent_keepalive, endpoint) {
                (Some(k), Some(_)) if k > 0 => st
                    .last_sent
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(k.into())),
                _ => false,
            };
            if st.tunn.is_none() && !keepalive_due {
                // Never spoken to and nothing due: no timers to run.
                continue;
            }
            let tunn = peer.tunn(&mut st, &snap.identity);
            let sent = match endpoint {
                Some(ep) => out
                    .push_with(ep, MIN_OUTPUT, |dst| match tunn.update_timers(dst) {
                        TunnResult::WriteToNetwork(p) => Some(p.len()),
                        _ => None,
                    })
                    .is_some(),
                None => {
                    // Nowhere to send: let the timers run (expiry) and drop output.
                    let _ = tunn.update_timers(&mut scratch);
                    false
                }
            };
            let mut keepalive_sent = false;
            if let (true, false, Some(ep)) = (keepalive_due, sent, endpoint) {
                keepalive_sent = out
                    .push_with(ep, MIN_OUTPUT, |dst| match tunn.encapsulate(&[], dst) {
                        TunnResult::WriteToNetwork(p) => Some(p.len()),
                        _ => None,
                    })
                    .is_some();
            }
            if sent || keepalive_sent {
                st.last_sent = Some(now);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A change in progress (see [`Device::edit`]).
pub struct Edit<'d> {
    snap: Snapshot,
    next_index: &'d mut u32,
    changes: PeerChanges,
}

impl Edit<'_> {
    /// What the edit has done to the peer set so far.
    pub fn changes(&self) -> &PeerChanges {
        &self.changes
    }

    pub fn has_peer(&self, key: &PublicKey) -> bool {
        self.snap.peers.contains_key(key)
    }

    pub fn peer_keys(&self) -> Vec<PublicKey> {
        self.snap.peers.keys().copied().collect()
    }

    /// A new identity: every session ends; a peer with the new public key goes
    /// (a device cannot be its own peer), as in the kernel's implementation.
    pub fn set_private_key(&mut self, key: PrivateKey) {
        let identity = Identity::new(key);
        let own = identity.public_key();
        if self.snap.peers.contains_key(&own) {
            self.remove_peer(&own);
        }
        for p in self.snap.peers.values() {
            let mut st = p.lock();
            if let Some(t) = &mut st.tunn {
                t.set_static_private(
                    identity.secret.clone(),
                    identity.public,
                    Some(identity.sessions.clone()),
                );
                st.made_by = Some(identity.clone());
            }
        }
        self.snap.identity = identity;
    }

    pub fn set_listen_port(&mut self, port: u16) {
        self.snap.listen_port = port;
    }

    pub fn set_fwmark(&mut self, mark: u32) {
        self.snap.fwmark = mark;
    }

    pub fn set_role(&mut self, role: Role) {
        self.snap.role = Arc::new(role);
    }

    /// Add `cfg`'s peer or update it in place; `replace_allowed_ips` drops its
    /// other allowed IPs first (else `cfg`'s are added to them). An allowed IP
    /// held by another peer moves to this one.
    pub fn upsert_peer(
        &mut self,
        cfg: PeerConfig,
        replace_allowed_ips: bool,
    ) -> Result<(), DeviceError> {
        if cfg.public_key == self.snap.identity.public_key() {
            return Err(DeviceError::OwnKey(cfg.public_key));
        }
        let key = cfg.public_key;
        let existed = self.snap.peers.contains_key(&key);
        if !existed {
            self.add_peer(key)?;
        }
        let mut changed = self.set_preshared_key(&key, cfg.preshared_key)?;
        if let Some(ep) = cfg.endpoint {
            changed |= self.set_endpoint(&key, ep)?;
        }
        changed |= self.set_persistent_keepalive(&key, cfg.persistent_keepalive)?;
        if replace_allowed_ips {
            changed |= self.replace_allowed_ips(&key, &cfg.allowed_ips)?;
        } else {
            for net in &cfg.allowed_ips {
                changed |= self.add_allowed_ip(&key, *net)?;
            }
        }
        if existed && changed && !self.changes.updated.contains(&key) {
            self.changes.updated.push(key);
        }
        Ok(())
    }

    /// Add a peer with no allowed IPs and default settings (no-op if present).
    pub fn add_peer(&mut self, key: PublicKey) -> Result<(), DeviceError> {
        if self.snap.peers.contains_key(&key) {
            return Ok(());
        }
        if key == self.snap.identity.public_key() {
            return Err(DeviceError::OwnKey(key));
        }
        let index = self.allocate_index()?;
        let peer = Arc::new(Peer {
            public_key: key,
            index,
            state: Mutex::new(PeerState {
                tunn: None,
                made_by: None,
                preshared_key: None,
                endpoint: None,
                persistent_keepalive: None,
                last_sent: None,
            }),
        });
        self.snap.by_index.insert(index, peer.clone());
        self.snap.peers.insert(key, peer);
        self.changes.added.push(key);
        Ok(())
    }

    fn allocate_index(&mut self) -> Result<u32, DeviceError> {
        if self.snap.by_index.len() > INDEX_MASK as usize {
            return Err(DeviceError::IndicesExhausted);
        }
        // 2^24 indices against at most thousands of peers: a free one is near.
        loop {
            let i = *self.next_index;
            *self.next_index = (i + 1) & INDEX_MASK;
            if !self.snap.by_index.contains_key(&i) {
                return Ok(i);
            }
        }
    }

    /// Remove a peer: its session ends and its allowed IPs go. Returns whether it
    /// was present.
    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        let Some(peer) = self.snap.peers.remove(key) else {
            return false;
        };
        self.snap.by_index.remove(&peer.index);
        for net in self.snap.nets.remove(key).unwrap_or_default() {
            self.snap.allowed_ips.remove(net);
        }
        if let Some(pos) = self.changes.added.iter().position(|k| k == key) {
            self.changes.added.remove(pos);
        } else {
            self.changes.removed.push(*key);
        }
        self.changes.updated.retain(|k| k != key);
        true
    }

    /// Remove every peer.
    pub fn clear_peers(&mut self) {
        for k in self.peer_keys() {
            self.remove_peer(&k);
        }
    }

    fn peer(&self, key: &PublicKey) -> Result<Arc<Peer>, DeviceError> {
        self.snap
            .peers
            .get(key)
            .cloned()
            .ok_or(DeviceError::NoSuchPeer(*key))
    }

    /// Set the preshared key. A different key starts a new session for this peer
    /// (its handshake state holds the key); the same key changes nothing.
    pub fn set_preshared_key(
        &mut self,
        key: &PublicKey,
        psk: Option<PresharedKey>,
    ) -> Result<bool, DeviceError> {
        let peer = self.peer(key)?;
        let mut st = peer.lock();
        if st.preshared_key == psk {
            return Ok(false);
        }
        // The session ends; the next handshake makes one with the new key.
        st.tunn = None;
        st.preshared_key = psk;
        Ok(true)
    }

    pub fn set_endpoint(&mut self, key: &PublicKey, ep: SocketAddr) -> Result<bool, DeviceError> {
        let peer = self.peer(key)?;
        let mut st = peer.lock();
        Ok(st.endpoint.replace(ep) != Some(ep))
    }

    pub fn set_persistent_keepalive(
        &mut self,
        key: &PublicKey,
        seconds: Option<u16>,
    ) -> Result<bool, DeviceError> {
        let seconds = seconds.filter(|s| *s > 0);
        let peer = self.peer(key)?;
        let mut st = peer.lock();
        let changed = st.persistent_keepalive != seconds;
        st.persistent_keepalive = seconds;
        Ok(changed)
    }

    /// Add one allowed IP to the peer (moving it from another peer if held).
    pub fn add_allowed_ip(&mut self, key: &PublicKey, net: IpNetwork) -> Result<bool, DeviceError> {
        let peer = self.peer(key)?;
        Ok(self.take_net(&peer, net))
    }

    /// `net` (host bits cleared) now routes to `peer`; returns whether that changed.
    fn take_net(&mut self, peer: &Arc<Peer>, net: IpNetwork) -> bool {
        let net = IpNetwork::new(net.network(), net.prefix()).expect("prefix of a valid network");
        match self.snap.allowed_ips.insert(net, peer.clone()) {
            Some(prev) if Arc::ptr_eq(&prev, peer) => return false,
            Some(prev) => {
                if let Some(list) = self.snap.nets.get_mut(&prev.public_key) {
                    list.retain(|n| *n != net);
                }
            }
            None => {}
        }
        self.snap.nets.entry(peer.public_key).or_default().push(net);
        true
    }

    /// Make the peer's allowed IPs exactly `nets`.
    pub fn replace_allowed_ips(
        &mut self,
        key: &PublicKey,
        nets: &[IpNetwork],
    ) -> Result<bool, DeviceError> {
        let peer = self.peer(key)?;
        let before = self.snap.nets.remove(key).unwrap_or_default();
        for net in &before {
            self.snap.allowed_ips.remove(*net);
        }
        let mut taken = false;
        for net in nets {
            let was_other = self
                .snap
                .allowed_ips
                .get(*net)
                .is_some_and(|p| !Arc::ptr_eq(p, &peer));
            self.take_net(&peer, *net);
            taken |= was_other;
        }
        let mut after = self.snap.nets.get(key).cloned().unwrap_or_default();
        after.sort();
        let mut before = before;
        before.sort();
        Ok(taken || before != after)
    }
}

/// A per-thread handle that moves packets through the device: decrypts datagrams,
/// encrypts TUN packets, and counts into its own counters.
pub struct Worker {
    device: Arc<Device>,
    counters: Arc<Counters>,
}

impl Worker {
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// A datagram received from `src` on the UDP side. Decrypted packets go to
    /// `tun`; handshake answers, cookie replies and client-to-client packets to `net`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        net: &mut Transmits,
        tun: &mut TunBatch,
    ) {
        self.counters.rx_datagram();
        let snap = self.device.snapshot.load();
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        let packet =
            match snap
                .identity
                .rate_limiter
                .verify_packet(Some(src.ip()), datagram, &mut cookie)
            {
                Ok(p) => p,
                Err(TunnResult::WriteToNetwork(reply)) => {
                    net.push(src, reply);
                    self.counters.cookie_reply();
                    self.counters.to_network();
                    return self.counters.dropped(DropReason::RateLimited);
                }
                Err(TunnResult::Err(e)) => {
                    return self.counters.dropped(DropReason::from_wireguard(&e))
                }
                Err(_) => return self.counters.dropped(DropReason::Malformed),
            };
        let is_init = matches!(packet, Packet::HandshakeInit(_));
        let peer = match &packet {
            Packet::HandshakeInit(init) => {
                match parse_handshake_anon(&snap.identity.secret, &snap.identity.public, init) {
                    Ok(half) => snap
                        .peers
                        .get(&PublicKey::from_bytes(half.peer_static_public)),
                    Err(e) => return self.counters.dropped(DropReason::from_wireguard(&e)),
                }
                .ok_or(DropReason::UnknownKey)
            }
            Packet::HandshakeResponse(p) => by_index(&snap, p.receiver_idx),
            Packet::PacketCookieReply(p) => by_index(&snap, p.receiver_idx),
            Packet::PacketData(p) => by_index(&snap, p.receiver_idx),
        };
        let peer = match peer {
            Ok(p) => p,
            Err(reason) => return self.counters.dropped(reason),
        };
        let slot_len = tun.slot_len();
        if datagram.len() > slot_len + DATA_OVERHEAD {
            return self.counters.dropped(DropReason::TooLarge);
        }
        let mut st = peer.lock();
        if st.tunn.is_none() && !is_init {
            // No session was ever made with this peer: a stale index.
            return self.counters.dropped(DropReason::UnknownIndex);
        }
        let tunn = peer.tunn(&mut st, &snap.identity);
        let len = match tunn.decapsulate(Some(src.ip()), datagram, tun.slot()) {
            TunnResult::WriteToNetwork(reply) => {
                net.push(src, reply);
                self.counters.to_network();
                if is_init {
                    self.counters.handshake_response();
                }
                // Packets queued while the handshake was under way.
                loop {
                    let slot = tun.slot();
                    match tunn.decapsulate(None, &[], slot) {
                        TunnResult::WriteToNetwork(p) => {
                            net.push(src, p);
                            self.counters.to_network();
                        }
                        _ => break,
                    }
                }
                st.endpoint = Some(src);
                st.last_sent = Some(now);
                return;
            }
            TunnResult::WriteToTunnelV4(p, _) | TunnResult::WriteToTunnelV6(p, _) => p.len(),
            TunnResult::Done => {
                // A keepalive, or a handshake response that completed a session.
                st.endpoint = Some(src);
                return;
            }
            TunnResult::Err(e) => return self.counters.dropped(DropReason::from_wireguard(&e)),
        };
        st.endpoint = Some(src);
        drop(st);
        let header = match IpHeader::parse(&tun.slot()[..len]) {
            Ok(h) => h,
            Err(_) => return self.counters.dropped(DropReason::BadInnerPacket),
        };
        match route_inbound(&snap.role, &snap.allowed_ips, peer, &header) {
            Inbound::Deliver => {
                tun.commit(header.len);
                self.counters.to_tun();
            }
            Inbound::ToPeer(to) => {
                let plain = &tun.slot()[..header.len];
                self.encapsulate_to(now, &snap.identity, &to, plain, net);
            }
            Inbound::Drop(reason) => self.counters.dropped(reason),
        }
    }

    /// A packet read from the TUN device: encrypted for the peer whose allowed IPs
    /// hold its destination (into `net`), or answered with ICMP host unreachable
    /// (into `tun`, server role, within the budget).
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        net: &mut Transmits,
        tun: &mut TunBatch,
    ) {
        let header = match IpHeader::parse(packet) {
            Ok(h) => h,
            Err(_) => return self.counters.dropped(DropReason::BadTunPacket),
        };
        let snap = self.device.snapshot.load();
        if let Some(peer) = snap.allowed_ips.lookup(header.dst) {
            return self.encapsulate_to(now, &snap.identity, peer, &packet[..header.len], net);
        }
        self.counters.dropped(DropReason::NoRoute);
        if let (Role::Server(_), IpAddr::V4(dst)) = (&*snap.role, header.dst) {
            let budget =
                self.device
                    .icmp_budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
            if budget.is_ok() {
                let Ok(original) = Ipv4Packet::new_checked(packet) else {
                    return;
                };
                // Answer from the unreachable address itself: it is routed through
                // the TUN, so the kernel accepts it as coming from there.
                if let Some(n) = icmp_unreachable(&original, dst, tun.slot()) {
                    tun.commit(n);
                    self.counters.icmp_unreachable();
                    self.counters.to_tun();
                }
            }
        }
    }

    fn encapsulate_to(
        &self,
        now: Instant,
        identity: &Arc<Identity>,
        peer: &Peer,
        plain: &[u8],
        net: &mut Transmits,
    ) {
        let mut st = peer.lock();
        let Some(ep) = st.endpoint else {
            return self.counters.dropped(DropReason::NoEndpoint);
        };
        let tunn = peer.tunn(&mut st, identity);
        let reserve = (plain.len() + DATA_OVERHEAD).max(MIN_OUTPUT);
        let mut err = None;
        let sent = net.push_with(ep, reserve, |dst| match tunn.encapsulate(plain, dst) {
            TunnResult::WriteToNetwork(p) => Some(p.len()),
            TunnResult::Err(e) => {
                err = Some(e);
                None
            }
            // Queued until a handshake completes.
            _ => None,
        });
        match (sent, err) {
            (Some(_), _) => {
                st.last_sent = Some(now);
                self.counters.to_network();
            }
            (None, Some(e)) => self.counters.dropped(DropReason::from_wireguard(&e)),
            (None, None) => {}
        }
    }
}

fn by_index(snap: &Snapshot, receiver_idx: u32) -> Result<&Arc<Peer>, DropReason> {
    snap.by_index
        .get(&(receiver_idx >> 8))
        .ok_or(DropReason::UnknownIndex)
}
