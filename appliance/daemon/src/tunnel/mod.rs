//! The appliance's data path: the network's [`Config`] and peers as a server-role
//! WireGuard device, run on cloudpipe-net's workers between the TUN queues and the
//! UDP queues that boot opened. This is the only place where the daemon meets the
//! data path; everything per packet happens in cloudpipe-net and the core.
//!
//! The device knows peers by key; the reconciler (see `supervisor`) owns the peer
//! set and hands this module its diffs and the names log lines use.

use cloudpipe_core::config::Config;
use cloudpipe_core::keys::PublicKey;
use cloudpipe_core::reconcile::Diff;
use cloudpipe_core::wg::{Device, PeerChanges};
use cloudpipe_net::tun::{TunOptions, TunQueue};
use cloudpipe_net::udp::UdpQueue;
use cloudpipe_net::{Tunnel, TunnelError};
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

/// A client as the SIGUSR1 log lines show it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub since_last_handshake: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

struct Inner {
    tunnel: Tunnel,
    /// Peer names for log lines (the reconciler owns them; see [`TunnelHandle::set_names`]).
    names: Mutex<HashMap<PublicKey, String>>,
}

/// How the data path's task ends: `Ok` when its handle was dropped, else why the
/// workers stopped.
pub type TunnelTask = JoinHandle<Result<(), TunnelError>>;

/// A handle to the running data path. Dropping it stops the workers.
pub struct TunnelHandle {
    inner: Arc<Inner>,
    /// Handles on the UDP sockets, for `fwmark` changes.
    udp: Vec<UdpQueue>,
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        self.inner.tunnel.stopper().raise();
    }
}

impl TunnelHandle {
    pub fn device(&self) -> &Arc<Device> {
        self.inner.tunnel.device()
    }

    /// Apply a reconciler diff to the device in one step, and take `names` (the
    /// reconciler's, after the change) for log lines: one INFO line per peer added
    /// or removed.
    pub fn apply(&self, diff: &Diff, names: HashMap<PublicKey, String>) -> PeerChanges {
        let changes = diff.apply_to(self.device());
        let mut known = lock(&self.inner.names);
        for k in &changes.removed {
            info!(peer = %name_of(&known, k), "peer removed");
        }
        *known = names;
        for k in &changes.added {
            info!(peer = %name_of(&known, k), "peer added");
        }
        changes
    }

    /// Mark every datagram the tunnel sends (`SO_MARK`; 0 removes the mark).
    pub fn set_fwmark(&self, mark: u32) -> std::io::Result<()> {
        for q in &self.udp {
            q.set_mark(mark)?;
        }
        self.device().edit(|e| e.set_fwmark(mark));
        Ok(())
    }

    /// Current per-peer state, for the SIGUSR1 log lines.
    pub fn status(&self) -> Vec<PeerStatus> {
        status(&self.inner)
    }

    /// Start the workers again on new TUN queues, after the old ones failed (the
    /// device was deleted): the same device, so every session, counter and
    /// setting is kept, and the same UDP sockets.
    pub fn restart(&mut self, tun: Vec<TunQueue>) -> anyhow::Result<TunnelTask> {
        let udp = self
            .udp
            .iter()
            .map(UdpQueue::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        let names = lock(&self.inner.names).clone();
        let tunnel = Tunnel::start(self.device().clone(), udp, tun)?;
        info!(threads = tunnel.threads(), "tunnel restarted");
        self.inner = Arc::new(Inner {
            tunnel,
            names: Mutex::new(names),
        });
        Ok(watch(self.inner.clone()))
    }
}

/// A peer's name, or the first 8 characters of its key (as `wg` users recognise a
/// peer) when it has none.
fn name_of(names: &HashMap<PublicKey, String>, k: &PublicKey) -> String {
    names.get(k).cloned().unwrap_or_else(|| short_key(k))
}

pub fn short_key(k: &PublicKey) -> String {
    let b = k.to_base64();
    format!("{}…", &b[..8])
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn status(inner: &Inner) -> Vec<PeerStatus> {
    let now = SystemTime::now();
    let known = lock(&inner.names);
    inner
        .tunnel
        .device()
        .peers(now)
        .into_iter()
        .map(|p| PeerStatus {
            name: name_of(&known, &p.public_key),
            public_key: p.public_key,
            endpoint: p.endpoint,
            since_last_handshake: p.last_handshake.and_then(|t| now.duration_since(t).ok()),
            tx_bytes: p.tx_bytes,
            rx_bytes: p.rx_bytes,
        })
        .collect()
}

/// Start the data path for `config` on `queues` with the peers of the reconciler's
/// boot diff. The returned task ends when the handle is dropped (`Ok`) or a
/// worker fails (`Err`, with why).
pub fn spawn(
    config: &Config,
    boot: &Diff,
    names: HashMap<PublicKey, String>,
    queues: Queues,
) -> anyhow::Result<(TunnelHandle, TunnelTask)> {
    let device = Arc::new(Device::new(
        config.device_config(),
        Vec::new(),
        random_u32(),
    ));
    boot.apply_to(&device);
    let udp = queues
        .udp
        .iter()
        .map(UdpQueue::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let tunnel = Tunnel::start(device.clone(), queues.udp, queues.tun)?;
    info!(
        peers = device.peer_count(),
        threads = tunnel.threads(),
        "tunnel up"
    );
    let inner = Arc::new(Inner {
        tunnel,
        names: Mutex::new(names),
    });
    let task = watch(inner.clone());
    Ok((TunnelHandle { inner, udp }, task))
}

/// The task that logs newly connected peers and ends with the workers.
fn watch(watched: Arc<Inner>) -> TunnelTask {
    tokio::spawn(async move {
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
                        Ok(Some(e)) => Err(e),
                        Err(e) => Err(TunnelError::Panic(format!("tunnel watcher: {e}"))),
                    };
                }
                _ = tick.tick() => log_handshakes(&watched, &mut connected),
            }
        }
    })
}

/// One INFO line when a peer's first handshake completes; endpoints only at DEBUG.
fn log_handshakes(inner: &Inner, connected: &mut HashSet<PublicKey>) {
    let list = status(inner);
    connected.retain(|k| list.iter().any(|p| p.public_key == *k));
    for p in list {
        if p.since_last_handshake.is_some() && connected.insert(p.public_key) {
            info!(peer = %p.name, "peer connected");
            debug!(peer = %p.name, endpoint = ?p.endpoint, "peer endpoint");
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
