//! The WireGuard data path's I/O shell: one UDP socket, one TUN device, and the
//! core's [`Device`] in between. This is the only place where the WireGuard logic
//! meets sockets.
//!
//! One task owns everything (no locks): it waits for either side to become
//! readable, drains up to [`BATCH`] packets from it without waiting, runs them
//! through the device, and sends what the device left in its outbox. A 100 ms tick
//! drives boringtun's timers; once a second the rate limiters reset.

use cloudpipe_core::config::{Config, Peer};
use cloudpipe_core::device::{Dest, Device, Outbox, PeerStatus, BUF_LEN};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Packets taken from one side before the outbox is flushed: bounds latency and
/// memory, and lets one wakeup serve a burst.
pub const BATCH: usize = 32;
/// boringtun wants its timers run every 100-250 ms.
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Socket buffers for the UDP socket: a burst from the TUN side must not overflow
/// the kernel's default (~200 KiB) while the loop is busy; wireguard-go uses 7 MiB.
const SOCKET_BUFFER: usize = 4 << 20;
/// Rate limiter and ICMP budget period.
const RATE_LIMIT_PERIOD: Duration = Duration::from_secs(1);

/// Changes and questions a running tunnel accepts.
#[derive(Debug)]
pub enum Command {
    /// Replace the peer set: new peers are added, missing ones removed (their sessions
    /// end at once), unchanged ones keep their sessions.
    SetPeers(Vec<Peer>),
    /// Current per-peer state.
    Status(oneshot::Sender<Vec<PeerStatus>>),
}

/// A handle to a running tunnel.
#[derive(Clone)]
pub struct TunnelHandle {
    tx: mpsc::Sender<Command>,
}

impl TunnelHandle {
    pub async fn set_peers(&self, peers: Vec<Peer>) -> anyhow::Result<()> {
        self.tx
            .send(Command::SetPeers(peers))
            .await
            .map_err(|_| anyhow::anyhow!("tunnel has stopped"))
    }

    pub async fn status(&self) -> anyhow::Result<Vec<PeerStatus>> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Status(tx))
            .await
            .map_err(|_| anyhow::anyhow!("tunnel has stopped"))?;
        Ok(rx.await?)
    }
}

/// Start the data path on an already configured TUN device and a bound UDP socket.
/// The task runs until the handle and every clone of it are dropped, or an I/O error
/// on the TUN or socket ends it.
pub fn spawn(
    config: &Config,
    peers: Vec<Peer>,
    tun: tun_rs::AsyncDevice,
    udp: UdpSocket,
) -> (TunnelHandle, JoinHandle<anyhow::Result<()>>) {
    let (tx, rx) = mpsc::channel(16);
    grow_socket_buffers(&udp);
    let device = Device::new(config, &peers, random_u32());
    info!(peers = peers.len(), "tunnel up");
    let task = tokio::spawn(run(device, Arc::new(tun), udp, rx));
    (TunnelHandle { tx }, task)
}

/// Raise the UDP socket's buffers past `net.core.{r,w}mem_max` (CAP_NET_ADMIN, which
/// the daemon keeps), or as far as the limit allows without it.
fn grow_socket_buffers(udp: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(udp, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(udp, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(udp, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(udp, sockopt::SndBuf, &SOCKET_BUFFER);
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // getrandom failing at boot would be extraordinary; a fixed seed only makes
    // session indices predictable across restarts, not insecure.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_ne_bytes(b)
}

async fn run(
    mut device: Device,
    tun: Arc<tun_rs::AsyncDevice>,
    udp: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
) -> anyhow::Result<()> {
    let mut out = Outbox::new();
    let mut buf = vec![0u8; BUF_LEN];
    let mut timers = tokio::time::interval(TIMER_TICK);
    timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rate = tokio::time::interval(RATE_LIMIT_PERIOD);
    let mut connected: std::collections::HashSet<String> = Default::default();
    loop {
        tokio::select! {
            r = udp.readable() => {
                r?;
                for _ in 0..BATCH {
                    match udp.try_recv_from(&mut buf) {
                        Ok((n, src)) => device.handle_datagram(src, &buf[..n], &mut out),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors from earlier sends surface here; not fatal.
                        Err(e) => { debug!(error = %e, "udp receive"); break; }
                    }
                }
            }
            r = tun.readable() => {
                r?;
                for _ in 0..BATCH {
                    match tun.try_recv(&mut buf) {
                        Ok(n) => device.handle_tun_packet(&buf[..n], &mut out),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(anyhow::anyhow!("reading the TUN device: {e}")),
                    }
                }
            }
            _ = timers.tick() => device.update_timers(&mut out),
            _ = rate.tick() => {
                device.reset_rate_limits();
                log_handshakes(&device, &mut connected);
            }
            cmd = commands.recv() => match cmd {
                None => {
                    info!("tunnel stopping");
                    return Ok(());
                }
                Some(Command::SetPeers(peers)) => {
                    let changes = device.set_peers(&peers);
                    for name in &changes.removed {
                        connected.remove(name);
                        info!(peer = %name, "peer removed");
                    }
                    for name in &changes.added {
                        info!(peer = %name, "peer added");
                    }
                }
                Some(Command::Status(reply)) => {
                    let _ = reply.send(device.peers().collect());
                }
            },
        }
        flush(&mut out, &tun, &udp).await?;
    }
}

/// Send everything the device produced. A failed UDP send (no route to a roaming
/// client, a full socket buffer) loses that datagram, as the network would.
async fn flush(out: &mut Outbox, tun: &tun_rs::AsyncDevice, udp: &UdpSocket) -> anyhow::Result<()> {
    for (dest, bytes) in out.iter() {
        match dest {
            Dest::Udp(addr) => match udp.try_send_to(bytes, addr) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = udp.send_to(bytes, addr).await {
                        debug!(error = %e, "udp send");
                    }
                }
                Err(e) => debug!(error = %e, "udp send"),
            },
            Dest::Tun => match tun.try_send(bytes) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tun.send(bytes).await?;
                }
                Err(e) => warn!(error = %e, "writing to the TUN device"),
            },
        }
    }
    out.clear();
    Ok(())
}

/// One INFO line when a peer's first handshake completes; endpoints only at DEBUG.
fn log_handshakes(device: &Device, connected: &mut std::collections::HashSet<String>) {
    for p in device.peers() {
        if p.since_last_handshake.is_some() && connected.insert(p.name.clone()) {
            info!(peer = %p.name, "peer connected");
            debug!(peer = %p.name, endpoint = ?p.endpoint, address = %p.address, "peer endpoint");
        }
    }
}
