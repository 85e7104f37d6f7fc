//! The appliance's data path: the network's [`Config`] and peers as a server-role
//! WireGuard device, run on cloudpipe-net's workers between the TUN queues and the
//! UDP queues that boot opened. This is the only place where the daemon meets the
//! data path; everything per packet happens in cloudpipe-net and the core.
//!
//! The device knows peers by key; the names (for logs and status) live here.

use cloudpipe_core::config::{Config, Peer};
use cloudpipe_core::keys::PublicKey;
use cloudpipe_core::wg::Device;
use cloudpipe_net::tun::{TunOptions, TunQueue};
use cloudpipe_net::udp::UdpQueue;
use cloudpipe_net::Tunnel;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// How often the daemon looks for newly connected peers (one INFO line each).
const CONNECTED_CHECK: Duration = Duration::from_secs(1);

/// The I/O queues of the data path, opened at boot (as root) and handed to
/// [`spawn`] after privileges are dropped.
pub struct Queues {
    pub tun: Vec<TunQueue>,
    pub udp: Vec<UdpQueue>,
}

/// How many worker queues, and whether the TUN device uses offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPath {
    /// Queues (each with two threads); 0 picks one per CPU.
    pub workers: usize,
    /// `IFF_VNET_HDR` TSO/USO offloads on the TUN device.
    pub offload: bool,
}

impl DataPath {
    /// The worker count to use: the flag's, or one per CPU.
    pub fn queues(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Name of the TUN device on the appliance.
pub const DEFAULT_TUN_NAME: &str = "cloudpipe0";

/// Bind UDP `port` on every IPv4 address: one socket per queue (`SO_REUSEPORT`).
pub fn open_udp(port: u16, path: DataPath) -> anyhow::Result<Vec<UdpQueue>> {
    cloudpipe_net::udp::open(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        path.queues(),
        0,
    )
    .map_err(|e| anyhow::anyhow!("binding UDP port {port}: {e}"))
}

/// Create the TUN device `name` (layer 3, no packet information header) with one
/// queue per worker. The device lives as long as its queues: a crash leaves
/// nothing behind. MTU, link state and routes are set through [`crate::netconf`].
pub fn open_tun(name: &str, mtu: u16, path: DataPath) -> anyhow::Result<Vec<TunQueue>> {
    let tun = cloudpipe_net::tun::create(&TunOptions {
        name: name.to_string(),
        queues: path.queues(),
        offload: path.offload,
        mtu,
    })?;
    info!(
        queues = tun.len(),
        offload = tun.first().is_some_and(TunQueue::offload),
        "TUN device created"
    );
    Ok(tun)
}

/// A client as status and logs show it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: PublicKey,
    pub address: Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    pub since_last_handshake: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

struct Inner {
    tunnel: Tunnel,
    peers: Mutex<HashMap<PublicKey, Peer>>,
}

/// A handle to the running data path. Dropping it stops the workers.
pub struct TunnelHandle {
    inner: Arc<Inner>,
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        self.inner.tunnel.stopper().raise();
    }
}

impl TunnelHandle {
    /// Replace the peer set: new peers are added, missing ones removed (their
    /// sessions end at once), unchanged ones keep their sessions.
    pub async fn set_peers(&self, peers: Vec<Peer>) -> anyhow::Result<()> {
        let changes = self
            .inner
            .tunnel
            .device()
            .set_peers(peers.iter().map(Peer::peer_config).collect());
        let mut known = lock(&self.inner.peers);
        for k in &changes.removed {
            if let Some(p) = known.get(k) {
                info!(peer = %p.name, "peer removed");
            }
        }
        *known = peers.into_iter().map(|p| (p.public_key, p)).collect();
        for k in &changes.added {
            if let Some(p) = known.get(k) {
                info!(peer = %p.name, "peer added");
            }
        }
        Ok(())
    }

    /// Current per-peer state.
    pub async fn status(&self) -> anyhow::Result<Vec<PeerStatus>> {
        Ok(status(&self.inner))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn status(inner: &Inner) -> Vec<PeerStatus> {
    let now = SystemTime::now();
    let known = lock(&inner.peers);
    inner
        .tunnel
        .device()
        .peers(now)
        .into_iter()
        .filter_map(|p| {
            let peer = known.get(&p.public_key)?;
            Some(PeerStatus {
                name: peer.name.clone(),
                public_key: p.public_key,
                address: peer.address,
                endpoint: p.endpoint,
                since_last_handshake: p.last_handshake.and_then(|t| now.duration_since(t).ok()),
                tx_bytes: p.tx_bytes,
                rx_bytes: p.rx_bytes,
            })
        })
        .collect()
}

/// Start the data path for `config` with `peers` on `queues`. The returned task
/// ends when the handle is dropped (`Ok`) or a worker fails (`Err`, with why).
pub fn spawn(
    config: &Config,
    peers: Vec<Peer>,
    queues: Queues,
) -> anyhow::Result<(TunnelHandle, JoinHandle<anyhow::Result<()>>)> {
    let device = Arc::new(Device::new(
        config.device_config(),
        peers.iter().map(Peer::peer_config).collect(),
        random_u32(),
    ));
    let tunnel = Tunnel::start(device, queues.udp, queues.tun)?;
    info!(peers = peers.len(), threads = tunnel.threads(), "tunnel up");
    let inner = Arc::new(Inner {
        tunnel,
        peers: Mutex::new(peers.into_iter().map(|p| (p.public_key, p)).collect()),
    });
    let watched = inner.clone();
    let task = tokio::spawn(async move {
        let mut connected: HashSet<PublicKey> = HashSet::new();
        let mut tick = tokio::time::interval(CONNECTED_CHECK);
        let waiter = watched.clone();
        let mut done = tokio::task::spawn_blocking(move || waiter.tunnel.wait());
        loop {
            tokio::select! {
                r = &mut done => {
                    let stats = watched.tunnel.device().stats();
                    let drops: Vec<String> = stats
                        .drops_by_reason()
                        .filter(|(_, n)| *n > 0)
                        .map(|(r, n)| format!("{}={n}", r.as_str()))
                        .collect();
                    info!(
                        rx_datagrams = stats.rx_datagrams,
                        to_tun = stats.to_tun,
                        to_network = stats.to_network,
                        tun_write_errors = watched.tunnel.io_stats().tun_write_errors,
                        drops = %drops.join(","),
                        "tunnel counters"
                    );
                    return match r {
                        Ok(None) => { info!("tunnel stopping"); Ok(()) }
                        Ok(Some(e)) => Err(anyhow::anyhow!("{e}")),
                        Err(e) => Err(anyhow::anyhow!("tunnel watcher: {e}")),
                    };
                }
                _ = tick.tick() => log_handshakes(&watched, &mut connected),
            }
        }
    });
    Ok((TunnelHandle { inner }, task))
}

/// One INFO line when a peer's first handshake completes; endpoints only at DEBUG.
fn log_handshakes(inner: &Inner, connected: &mut HashSet<PublicKey>) {
    let list = status(inner);
    connected.retain(|k| list.iter().any(|p| p.public_key == *k));
    for p in list {
        if p.since_last_handshake.is_some() && connected.insert(p.public_key) {
            info!(peer = %p.name, "peer connected");
            debug!(peer = %p.name, endpoint = ?p.endpoint, address = %p.address, "peer endpoint");
        }
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // getrandom failing at boot would be extraordinary; a fixed seed only makes
    // session indices predictable across restarts, not insecure.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_ne_bytes(b)
}
