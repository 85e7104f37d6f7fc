//! The appliance's control and observation surfaces, both thin shells over the
//! core:
//!
//! - [`socket`]: the `wg` control socket (`/var/run/wireguard/<tun>.sock`, mode
//!   0600) speaking the cross-platform UAPI ([`cloudpipe_core::uapi`]): `get` is
//!   answered from the device, `set` goes to the supervisor (the reconciler is
//!   the only writer of the peer set), `cloudpipe_status` returns the status
//!   document;
//! - [`web`]: when the payload sets `status_port`, HTTP on the tenant address:
//!   `/status` (the same document as JSON, other clients' endpoints hidden from
//!   tunnel clients) and `/metrics` ([`metrics`], Prometheus text format).
//!
//! What they read is [`Shared`]: the device (live counters) and a [`View`] of the
//! reconciler's state that the supervisor publishes after every change.

pub mod metrics;
pub mod socket;
pub mod web;

use cloudpipe_core::config::{Config, Mode};
use cloudpipe_core::keys::PublicKey;
use cloudpipe_core::pool::Pool;
use cloudpipe_core::reconcile::{Reconciler, Revoked};
use cloudpipe_core::status::{ClientState, ClientStatus, PoolStatus, Status, STATUS_VERSION};
use cloudpipe_core::uapi::{SetRequest, UapiError};
use cloudpipe_core::wg::{Device, PeerInfo};
use ipnetwork::{IpNetwork, Ipv4Network};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// A change for the supervisor, from the control socket.
#[derive(Debug)]
pub enum Command {
    /// A `set=1`; the reply is the errno answer.
    Set {
        request: SetRequest,
        reply: oneshot::Sender<Result<(), UapiError>>,
    },
}

/// What the control surfaces read: the device and the supervisor's latest view.
pub struct Shared {
    pub device: Arc<Device>,
    view: Mutex<Arc<View>>,
    pub polls: PollCounters,
}

impl Shared {
    pub fn new(device: Arc<Device>, view: View) -> Shared {
        Shared {
            device,
            view: Mutex::new(Arc::new(view)),
            polls: PollCounters::default(),
        }
    }

    pub fn view(&self) -> Arc<View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_view(&self, view: View) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }

    /// The status document now.
    pub fn status(&self) -> Status {
        let now = SystemTime::now();
        status(&self.view(), &self.device.peers(now), now)
    }
}

/// Results of metadata readings, for `/metrics`.
#[derive(Debug, Default)]
pub struct PollCounters {
    /// Read, and the instance properties changed.
    pub changed: AtomicU64,
    /// Read, and nothing changed.
    pub unchanged: AtomicU64,
    /// Read, but the overlay was refused (the last good peers stay).
    pub rejected: AtomicU64,
    /// Not read (metadata service unreachable, bad document).
    pub failed: AtomicU64,
}

impl PollCounters {
    pub fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(result label, count)` for every result.
    pub fn all(&self) -> [(&'static str, u64); 4] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("changed", get(&self.changed)),
            ("unchanged", get(&self.unchanged)),
            ("rejected", get(&self.rejected)),
            ("error", get(&self.failed)),
        ]
    }
}

/// A peer as the view knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPeer {
    pub public_key: PublicKey,
    pub name: Option<String>,
    pub address: Option<Ipv4Addr>,
    pub allowed_ips: Vec<IpNetwork>,
}

/// The network's facts and the reconciler's state, as published after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub network: String,
    pub subnet: Ipv4Network,
    pub address: Ipv4Addr,
    pub endpoint: Option<String>,
    pub listen_port: u16,
    pub mtu: u16,
    pub mode: Mode,
    pub pool: Pool,
    pub public_key: PublicKey,
    pub peers: Vec<ViewPeer>,
    pub revoked: Vec<Revoked>,
    pub pool_used: u32,
    pub pool_free: u32,
    pub conflicts_total: u64,
}

impl View {
    pub fn new(config: &Config, r: &Reconciler, public_key: PublicKey) -> View {
        let (pool_used, pool_free) = r.pool_usage();
        View {
            network: config.network.clone(),
            subnet: config.subnet,
            address: config.address,
            endpoint: config.endpoint.clone(),
            listen_port: config.listen_port,
            mtu: config.mtu,
            mode: config.mode,
            pool: config.pool,
            public_key,
            peers: r
                .peers()
                .map(|p| ViewPeer {
                    public_key: p.config.public_key,
                    name: p.name.clone(),
                    address: p.address(r.pool()),
                    allowed_ips: p.config.allowed_ips.clone(),
                })
                .collect(),
            revoked: r.revoked().cloned().collect(),
            pool_used,
            pool_free,
            conflicts_total: r.conflicts_total(),
        }
    }

    /// The peer whose allowed IPs hold `ip` (longest prefix), if any: who a
    /// request from the tunnel comes from.
    pub fn peer_for(&self, ip: IpAddr) -> Option<&ViewPeer> {
        self.peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().map(move |n| (n, p)))
            .filter(|(n, _)| n.contains(ip))
            .max_by_key(|(n, _)| n.prefix())
            .map(|(_, p)| p)
    }

    /// Names for log lines, by key.
    pub fn names(&self) -> HashMap<PublicKey, String> {
        self.peers
            .iter()
            .filter_map(|p| Some((p.public_key, p.name.clone()?)))
            .collect()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The status document for `view` with the device's live `peers` at `now`.
pub fn status(view: &View, peers: &[PeerInfo], now: SystemTime) -> Status {
    let now_s = unix(now);
    let live: HashMap<PublicKey, &PeerInfo> = peers.iter().map(|p| (p.public_key, p)).collect();
    let mut clients: Vec<ClientStatus> = view
        .peers
        .iter()
        .map(|p| {
            let info = live.get(&p.public_key);
            let latest = info.and_then(|i| i.last_handshake).map(unix);
            ClientStatus {
                name: p.name.clone(),
                public_key: p.public_key.to_base64(),
                address: p.address,
                allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
                endpoint: info.and_then(|i| i.endpoint).map(|e| e.to_string()),
                latest_handshake: latest,
                rx_bytes: info.map_or(0, |i| i.rx_bytes),
                tx_bytes: info.map_or(0, |i| i.tx_bytes),
                state: ClientState::of(latest, now_s),
            }
        })
        .collect();
    // Pool order, then by name: how an operator reads the list.
    clients.sort_by(|a, b| {
        (a.address.is_none(), a.address, &a.name).cmp(&(b.address.is_none(), b.address, &b.name))
    });
    clients.extend(view.revoked.iter().map(|r| ClientStatus {
        name: r.name.clone(),
        public_key: r.public_key.to_base64(),
        address: r.address,
        allowed_ips: Vec::new(),
        endpoint: None,
        latest_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        state: ClientState::Revoked,
    }));
    Status {
        version: STATUS_VERSION,
        time: now_s,
        network: view.network.clone(),
        subnet: view.subnet.to_string(),
        address: view.address,
        endpoint: view.endpoint.clone(),
        listen_port: view.listen_port,
        public_key: view.public_key.to_base64(),
        mtu: view.mtu,
        mode: view.mode.to_string(),
        pool: PoolStatus {
            first: view.pool.first(),
            last: view.pool.last(),
            used: view.pool_used,
            free: view.pool_free,
        },
        clients,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudpipe_core::config::ConfigFile;
    use cloudpipe_core::keys::PrivateKey;
    use cloudpipe_core::uapi::PeerUpdate;
    use std::time::Duration;

    pub(crate) fn config() -> Config {
        let key = |b: u8| PrivateKey::from_bytes([b; 32]);
        let mut f = ConfigFile::new("lab", "10.77.0.0/24", &key(1));
        f.pool = Some(cloudpipe_core::config::PoolFile {
            first: "10.77.0.250".parse().unwrap(),
            last: "10.77.0.254".parse().unwrap(),
        });
        f.endpoint = Some("203.0.113.10:1194".into());
        f.peers = ["alice", "bob"]
            .iter()
            .enumerate()
            .map(|(i, n)| cloudpipe_core::config::PeerFile {
                name: n.to_string(),
                public_key: key(2 + i as u8).public_key().to_base64(),
                preshared_key: None,
                address: Ipv4Addr::new(10, 77, 0, 250 + i as u8),
            })
            .collect();
        Config::try_from(f).unwrap()
    }

    pub(crate) fn view() -> (Config, View) {
        let c = config();
        let (mut r, _) = Reconciler::new(&c, c.peers.clone());
        // A wg-added peer with a site behind it; bob removed with wg.
        r.control(&SetRequest {
            peers: vec![
                PeerUpdate {
                    allowed_ips: vec![
                        "10.77.0.253/32".parse().unwrap(),
                        "192.168.7.0/24".parse().unwrap(),
                    ],
                    ..PeerUpdate::new(PrivateKey::from_bytes([9; 32]).public_key())
                },
                PeerUpdate {
                    remove: true,
                    ..PeerUpdate::new(c.peers[1].public_key)
                },
            ],
            ..SetRequest::default()
        });
        let v = View::new(&c, &r, c.private_key.public_key());
        (c, v)
    }

    #[test]
    fn status_merges_the_view_with_live_counters() {
        let (c, v) = view();
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let alice = PeerInfo {
            public_key: c.peers[0].public_key,
            preshared_key: None,
            endpoint: Some("203.0.113.2:4000".parse().unwrap()),
            persistent_keepalive: None,
            allowed_ips: vec![],
            last_handshake: Some(now - Duration::from_secs(12)),
            rx_bytes: 5,
            tx_bytes: 6,
        };
        let s = status(&v, &[alice], now);
        assert_eq!(s.time, 10_000);
        assert_eq!((s.pool.used, s.pool.free), (2, 3));
        assert_eq!(s.endpoint.as_deref(), Some("203.0.113.10:1194"));
        let summary: Vec<_> = s
            .clients
            .iter()
            .map(|c| (c.name.clone(), c.address, c.state))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    Some("alice".into()),
                    Some(Ipv4Addr::new(10, 77, 0, 250)),
                    ClientState::Online
                ),
                (
                    None,
                    Some(Ipv4Addr::new(10, 77, 0, 253)),
                    ClientState::NeverConnected
                ),
                (
                    Some("bob".into()),
                    Some(Ipv4Addr::new(10, 77, 0, 251)),
                    ClientState::Revoked
                ),
            ]
        );
        assert_eq!(s.clients[0].latest_handshake, Some(9_988));
        assert_eq!((s.clients[0].rx_bytes, s.clients[0].tx_bytes), (5, 6));
        assert_eq!(s.clients[0].endpoint.as_deref(), Some("203.0.113.2:4000"));
        assert_eq!(
            s.clients[1].allowed_ips,
            vec!["10.77.0.253/32", "192.168.7.0/24"]
        );
    }

    #[test]
    fn requests_from_the_tunnel_map_to_their_peer() {
        let (c, v) = view();
        let who = |ip: &str| v.peer_for(ip.parse().unwrap()).map(|p| p.public_key);
        assert_eq!(who("10.77.0.250"), Some(c.peers[0].public_key));
        assert_eq!(
            who("192.168.7.9"),
            Some(PrivateKey::from_bytes([9; 32]).public_key())
        );
        assert_eq!(who("10.77.0.10"), None);
        assert_eq!(who("10.77.0.251"), None, "bob was removed");
        assert_eq!(v.names().len(), 1);
    }
}
