//! One owner of the appliance's peer set.
//!
//! Several sources change the peers of a running appliance: the boot payload, the
//! metadata overlay (instance properties, polled and re-read on SIGHUP) and the
//! control socket (`wg set`, `wg syncconf`). Each hands the [`Reconciler`] a
//! change; it keeps the desired set, decides, and returns one [`Diff`]: the edits
//! for the WireGuard device and for the host (proxy neighbour entries, routes).
//! No I/O: the daemon applies the diff.
//!
//! The rules:
//! - **The latest change to a peer wins.** A metadata reading changes only the
//!   peers whose metadata entry differs from the previous reading's (added,
//!   changed or revoked there); a peer the metadata did not touch keeps what the
//!   control socket last did to it. So a peer removed with `wg set ... remove`
//!   stays removed while the overlay stays the same, and comes back only when a
//!   later metadata change names it again (revoked then added back, or changed).
//! - **WireGuard's own semantics inside a change**: an allowed IP belongs to one
//!   peer, and giving it to another moves it (counted as an address conflict);
//!   `replace_peers`, `update_only`, `remove`, `replace_allowed_ips` act as in
//!   wireguard-go (see [`crate::uapi`]).
//! - **A restart rebuilds** the set from the payload and the metadata current at
//!   boot ([`Reconciler::new`]): control-socket changes last as long as the
//!   process, like a kernel WireGuard interface's.
//!
//! Host side, derived from the desired set: in proxy-ARP mode a proxy neighbour
//! entry on the tenant interface for every pool address a peer holds; a route
//! through the TUN device for every IPv4 allowed IP outside the tenant subnet
//! (the pool is routed once at boot). Allowed IPs inside the subnet but outside
//! the pool, IPv6 ones and a default route get no host change (the tenant subnet
//! is the tenant's; IPv6 is off on the tunnel device).

use crate::config::{Config, Mode, Peer};
use crate::keys::PublicKey;
use crate::pool::Pool;
use crate::uapi::SetRequest;
use crate::wg::{Device, PeerChanges, PeerConfig};
use ipnetwork::{IpNetwork, Ipv4Network};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

/// Removed peers remembered for status ("revoked"); the oldest go first.
pub const MAX_REVOKED: usize = 256;

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The boot payload (with the metadata read at boot).
    Boot,
    /// A reading of the instance properties (poll or SIGHUP).
    Metadata,
    /// The control socket (`wg`).
    Control,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Boot => "boot",
            Source::Metadata => "metadata",
            Source::Control => "control socket",
        }
    }
}

/// A peer the appliance should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The client's name, when a payload or the overlay gave one (peers added with
    /// `wg` have none, unless they were known before).
    pub name: Option<String>,
    /// Key, preshared key, keepalive and allowed IPs (never an endpoint: endpoints
    /// are learnt from traffic, or given once by a change, see [`Diff::endpoints`]).
    pub config: PeerConfig,
}

impl DesiredPeer {
    /// The pool address the peer holds (its first allowed /32 inside the pool).
    pub fn address(&self, pool: &Pool) -> Option<Ipv4Addr> {
        self.config.allowed_ips.iter().find_map(|n| match n {
            IpNetwork::V4(v4) if v4.prefix() == 32 && pool.contains(v4.ip()) => Some(v4.ip()),
            _ => None,
        })
    }
}

/// A peer that was removed, remembered for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub public_key: PublicKey,
    pub name: Option<String>,
    pub address: Option<Ipv4Addr>,
    pub by: Source,
}

/// What one change does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Peers to remove from the device (their sessions end).
    pub remove: Vec<PublicKey>,
    /// Peers to add or update (settings and allowed IPs replaced; a session is
    /// kept unless its preshared key changed).
    pub upsert: Vec<PeerConfig>,
    /// Endpoints a change gave (`endpoint=`), applied after the upserts.
    pub endpoints: Vec<(PublicKey, SocketAddr)>,
    pub host: HostDiff,
    /// Allowed IPs moved from one peer to another by this change.
    pub conflicts: Vec<Conflict>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.upsert.is_empty()
            && self.endpoints.is_empty()
            && self.host.is_empty()
    }

    /// Apply the device part in one transaction (workers see the old set or the new
    /// one, never half). Returns what changed.
    pub fn apply_to(&self, device: &Device) -> PeerChanges {
        device.edit(|e| {
            for k in &self.remove {
                e.remove_peer(k);
            }
            for cfg in &self.upsert {
                // The reconciler never keeps the device's own key (see
                // `Reconciler::set_own_key`): the only error cannot happen here.
                let _ = e.upsert_peer(cfg.clone(), true);
            }
            for (k, ep) in &self.endpoints {
                let _ = e.set_endpoint(k, *ep);
            }
            e.changes().clone()
        })
    }
}

/// An allowed IP one change moved from a peer to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub net: IpNetwork,
    pub from: PublicKey,
    pub to: PublicKey,
}

/// Host changes: proxy neighbour entries on the tenant interface, routes through
/// the TUN device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDiff {
    pub add_proxies: Vec<Ipv4Addr>,
    pub remove_proxies: Vec<Ipv4Addr>,
    pub add_routes: Vec<Ipv4Network>,
    pub remove_routes: Vec<Ipv4Network>,
}

impl HostDiff {
    pub fn is_empty(&self) -> bool {
        self.add_proxies.is_empty()
            && self.remove_proxies.is_empty()
            && self.add_routes.is_empty()
            && self.remove_routes.is_empty()
    }
}

/// What the host should hold for a desired set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HostState {
    proxies: BTreeSet<Ipv4Addr>,
    routes: BTreeSet<Ipv4Network>,
}

/// How two keyed sets differ, keys in order: only in `after` (added), only in
/// `before` (removed), in both with different values (changed). The one comparison
/// of old and new peer sets: the reconciler's diffs and readings, and the
/// overlay the CLI publishes ([`crate::overlay::Overlay::between`]) use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedDiff<'a, K> {
    pub added: Vec<&'a K>,
    pub removed: Vec<&'a K>,
    pub changed: Vec<&'a K>,
}

pub fn keyed_diff<'a, K: Ord, V: PartialEq>(
    before: &'a BTreeMap<K, V>,
    after: &'a BTreeMap<K, V>,
) -> KeyedDiff<'a, K> {
    let mut d = KeyedDiff {
        added: Vec::new(),
        removed: before.keys().filter(|k| !after.contains_key(*k)).collect(),
        changed: Vec::new(),
    };
    for (k, v) in after {
        match before.get(k) {
            None => d.added.push(k),
            Some(old) if old != v => d.changed.push(k),
            Some(_) => {}
        }
    }
    d
}

/// The network facts the reconciler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Network {
    subnet: Ipv4Network,
    pool: Pool,
    mode: Mode,
    own_key: PublicKey,
}

/// The owner of the desired peer set. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Reconciler {
    net: Network,
    desired: BTreeMap<PublicKey, DesiredPeer>,
    /// The last metadata reading applied (the payload's peers with the overlay).
    metadata: BTreeMap<PublicKey, Peer>,
    revoked: VecDeque<Revoked>,
    conflicts_total: u64,
}

impl Reconciler {
    /// The set a (re)started appliance runs: `peers` is the payload's peers with the
    /// overlay read at boot applied (or the payload's alone). The diff takes an
    /// empty device and a host without entries to that set.
    pub fn new(config: &Config, peers: Vec<Peer>) -> (Self, Diff) {
        let mut r = Reconciler {
            net: Network {
                subnet: config.subnet,
                pool: config.pool,
                mode: config.mode,
                own_key: config.private_key.public_key(),
            },
            desired: BTreeMap::new(),
            metadata: BTreeMap::new(),
            revoked: VecDeque::new(),
            conflicts_total: 0,
        };
        let diff = r.metadata_reading(peers, Source::Boot);
        (r, diff)
    }

    /// A metadata reading: the payload's peers with the current overlay applied
    /// (what [`crate::overlay::Overlay::apply`] returns). Only peers whose entry
    /// differs from the previous reading change.
    pub fn metadata(&mut self, peers: Vec<Peer>) -> Diff {
        self.metadata_reading(peers, Source::Metadata)
    }

    fn metadata_reading(&mut self, peers: Vec<Peer>, source: Source) -> Diff {
        let next: BTreeMap<PublicKey, Peer> = peers
            .into_iter()
            .filter(|p| p.public_key != self.net.own_key)
            .map(|p| (p.public_key, p))
            .collect();
        let d = keyed_diff(&self.metadata, &next);
        let touched: Vec<PublicKey> = d
            .added
            .into_iter()
            .chain(d.changed)
            .chain(d.removed)
            .copied()
            .collect();
        self.change(|r, diff| {
            for k in touched {
                match next.get(&k) {
                    Some(p) => {
                        let wanted = DesiredPeer {
                            name: Some(p.name.clone()),
                            config: p.peer_config(),
                        };
                        r.put(wanted, diff);
                    }
                    None => r.remove(&k, source),
                }
            }
            r.metadata = next;
        })
    }

    /// A `set=1` from the control socket, with wireguard-go's semantics. The device
    /// keys of the request (private key, port, mark) are the caller's.
    pub fn control(&mut self, set: &SetRequest) -> Diff {
        self.change(|r, diff| {
            if set.replace_peers {
                let all: Vec<PublicKey> = r.desired.keys().copied().collect();
                for k in all {
                    r.remove(&k, Source::Control);
                }
            }
            for u in &set.peers {
                let k = u.public_key;
                // A device cannot be its own peer: wireguard-go ignores the section.
                if k == r.net.own_key {
                    continue;
                }
                let exists = r.desired.contains_key(&k);
                if u.remove {
                    if exists {
                        r.remove(&k, Source::Control);
                    }
                    continue;
                }
                if !exists && u.update_only {
                    continue;
                }
                let mut wanted = r.desired.get(&k).cloned().unwrap_or_else(|| DesiredPeer {
                    // A peer added back with `wg` keeps the name it was known by.
                    name: r.revoked_entry(&k).and_then(|v| v.name.clone()),
                    config: PeerConfig::new(k, Vec::new()),
                });
                if let Some(psk) = &u.preshared_key {
                    wanted.config.preshared_key = psk.clone();
                }
                if let Some(s) = u.persistent_keepalive {
                    wanted.config.persistent_keepalive = (s > 0).then_some(s);
                }
                if u.replace_allowed_ips {
                    wanted.config.allowed_ips.clear();
                }
                for net in &u.allowed_ips {
                    if !wanted.config.allowed_ips.contains(net) {
                        wanted.config.allowed_ips.push(*net);
                    }
                }
                r.put(wanted, diff);
                if let Some(ep) = u.endpoint {
                    diff.endpoints.retain(|(key, _)| *key != k);
                    diff.endpoints.push((k, ep));
                }
            }
        })
    }

    /// The device's key changed (`private_key=`): a peer with the new public key
    /// goes, as the device drops it.
    pub fn set_own_key(&mut self, own_key: PublicKey) -> Diff {
        self.net.own_key = own_key;
        self.change(|r, _| {
            if r.desired.contains_key(&own_key) {
                r.remove(&own_key, Source::Control);
            }
        })
    }

    /// The desired peers, in public-key order.
    pub fn peers(&self) -> impl Iterator<Item = &DesiredPeer> {
        self.desired.values()
    }

    pub fn peer(&self, key: &PublicKey) -> Option<&DesiredPeer> {
        self.desired.get(key)
    }

    /// Peers removed while running (latest last), for status.
    pub fn revoked(&self) -> impl Iterator<Item = &Revoked> {
        self.revoked.iter()
    }

    pub fn pool(&self) -> &Pool {
        &self.net.pool
    }

    /// Pool addresses held by a peer, and free ones.
    pub fn pool_usage(&self) -> (u32, u32) {
        let mut used = BTreeSet::new();
        for net in self.desired.values().flat_map(|p| &p.config.allowed_ips) {
            if let IpNetwork::V4(v4) = net {
                let (first, last) = pool_overlap(&self.net.pool, *v4);
                used.extend(first..=last);
            }
        }
        let used = used.len() as u32;
        (used, self.net.pool.len().saturating_sub(used))
    }

    /// Allowed IPs moved between peers since start.
    pub fn conflicts_total(&self) -> u64 {
        self.conflicts_total
    }

    /// Everything the host holds for the desired set (proxy entries, routes through
    /// the TUN device), as the diff from a host without any: what to put back when
    /// the kernel dropped it (a link that went down, a TUN device deleted).
    pub fn host_entries(&self) -> HostDiff {
        let s = self.host_state();
        HostDiff {
            add_proxies: s.proxies.into_iter().collect(),
            add_routes: s.routes.into_iter().collect(),
            ..HostDiff::default()
        }
    }

    /// Allowed IPs of the desired set that get no host change (inside the tenant
    /// subnet but outside the pool, IPv6, or a default route), for a warning.
    pub fn unrouted(&self) -> Vec<(PublicKey, IpNetwork)> {
        let mut out = Vec::new();
        for p in self.desired.values() {
            for net in &p.config.allowed_ips {
                if matches!(self.host_part(net), HostPart::Nothing) {
                    out.push((p.config.public_key, *net));
                }
            }
        }
        out
    }

    /// Run `f` on the desired set and return the diff from before to after.
    fn change(&mut self, f: impl FnOnce(&mut Self, &mut Diff)) -> Diff {
        let before = self.desired.clone();
        let host_before = self.host_state();
        let mut diff = Diff::default();
        f(self, &mut diff);
        let d = keyed_diff(&before, &self.desired);
        diff.remove = d.removed.into_iter().copied().collect();
        let mut upserts: Vec<&PublicKey> = d.added.into_iter().chain(d.changed).collect();
        upserts.sort();
        diff.upsert = upserts
            .into_iter()
            .map(|k| self.desired[k].config.clone())
            .collect();
        diff.endpoints.retain(|(k, _)| self.desired.contains_key(k));
        let host_after = self.host_state();
        diff.host = HostDiff {
            add_proxies: host_after
                .proxies
                .difference(&host_before.proxies)
                .copied()
                .collect(),
            remove_proxies: host_before
                .proxies
                .difference(&host_after.proxies)
                .copied()
                .collect(),
            add_routes: host_after
                .routes
                .difference(&host_before.routes)
                .copied()
                .collect(),
            remove_routes: host_before
                .routes
                .difference(&host_after.routes)
                .copied()
                .collect(),
        };
        self.conflicts_total += diff.conflicts.len() as u64;
        diff
    }

    /// Make `wanted` a desired peer (replacing its entry); its allowed IPs move to
    /// it from any other peer that held them.
    fn put(&mut self, wanted: DesiredPeer, diff: &mut Diff) {
        let k = wanted.config.public_key;
        for (other, p) in self.desired.iter_mut() {
            if *other == k {
                continue;
            }
            p.config.allowed_ips.retain(|net| {
                let taken = wanted.config.allowed_ips.contains(net);
                if taken {
                    diff.conflicts.push(Conflict {
                        net: *net,
                        from: *other,
                        to: k,
                    });
                }
                !taken
            });
        }
        self.revoked.retain(|v| v.public_key != k);
        self.desired.insert(k, wanted);
    }

    fn remove(&mut self, key: &PublicKey, by: Source) {
        let Some(p) = self.desired.remove(key) else {
            return;
        };
        self.revoked.retain(|v| v.public_key != *key);
        if self.revoked.len() >= MAX_REVOKED {
            self.revoked.pop_front();
        }
        self.revoked.push_back(Revoked {
            public_key: *key,
            address: p.address(&self.net.pool),
            name: p.name,
            by,
        });
    }

    fn revoked_entry(&self, key: &PublicKey) -> Option<&Revoked> {
        self.revoked.iter().find(|v| v.public_key == *key)
    }

    /// What the host holds for one allowed IP.
    fn host_part(&self, net: &IpNetwork) -> HostPart {
        let IpNetwork::V4(v4) = *net else {
            return HostPart::Nothing;
        };
        let subnet = self.net.subnet;
        if subnet.contains(v4.network()) && v4.prefix() >= subnet.prefix() {
            let (first, last) = pool_overlap(&self.net.pool, v4);
            if first > last {
                HostPart::Nothing
            } else if self.net.mode == Mode::ProxyArp {
                HostPart::Proxies(first, last)
            } else {
                // Masquerade: the pool is routed at boot, no proxy entries.
                HostPart::InPool
            }
        } else if v4.prefix() > 0 {
            HostPart::Route(v4)
        } else {
            HostPart::Nothing
        }
    }

    fn host_state(&self) -> HostState {
        let mut s = HostState::default();
        for net in self.desired.values().flat_map(|p| &p.config.allowed_ips) {
            match self.host_part(net) {
                HostPart::Proxies(first, last) => {
                    s.proxies.extend((first..=last).map(Ipv4Addr::from))
                }
                HostPart::Route(r) => {
                    s.routes.insert(r);
                }
                HostPart::InPool | HostPart::Nothing => {}
            }
        }
        s
    }
}

/// What the host holds for one allowed IP.
enum HostPart {
    /// Proxy entries for the pool addresses `first..=last` (as u32).
    Proxies(u32, u32),
    /// Pool addresses, routed at boot (masquerade mode: no proxy entries).
    InPool,
    /// A route through the TUN device.
    Route(Ipv4Network),
    /// Nothing: inside the tenant subnet but outside the pool, IPv6, or default.
    Nothing,
}

/// The part of `net` inside the pool, as `(first, last)`; empty when first > last.
fn pool_overlap(pool: &Pool, net: Ipv4Network) -> (u32, u32) {
    (
        u32::from(pool.first()).max(u32::from(net.network())),
        u32::from(pool.last()).min(u32::from(net.broadcast())),
    )
}

#[cfg(test)]
mod tests;
