//! The WireGuard data path: one UDP socket, one TUN device, one `noise::Tunn` per
//! peer. (Being built: this is the interface the boot code calls.)

use cloudpipe_core::config::{Config, Peer};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Changes a running tunnel accepts.
#[derive(Debug)]
pub enum Command {
    /// Replace the peer set: new peers are added, missing ones removed (their sessions
    /// end at once), unchanged ones keep their sessions.
    SetPeers(Vec<Peer>),
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
}

/// Start the data path on an already configured TUN device and a bound UDP socket.
/// The task runs until the handle and every clone of it are dropped, or an I/O error
/// on the TUN or socket ends it.
pub fn spawn(
    config: &Config,
    peers: Vec<Peer>,
    tun: tun_rs::AsyncDevice,
    udp: tokio::net::UdpSocket,
) -> (TunnelHandle, JoinHandle<anyhow::Result<()>>) {
    let (tx, mut rx) = mpsc::channel(16);
    let _ = (config, peers, Arc::new(tun), udp);
    let task = tokio::spawn(async move {
        while let Some(_cmd) = rx.recv().await {}
        Ok(())
    });
    (TunnelHandle { tx }, task)
}
