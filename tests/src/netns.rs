//! Sockets inside a lab namespace, from the test process itself: a thread joins the
//! namespace (setns affects only that thread), opens the socket and hands it back.
//! A socket keeps the namespace it was created in wherever it is used afterwards.

use crate::{Lab, Role};
use std::net::{SocketAddr, UdpSocket};

/// Run `f` on a new thread inside the network namespace `ns` (`/run/netns/NS`).
pub fn run_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| anyhow::anyhow!("setns {path}: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

impl Lab {
    /// A UDP socket bound to `addr` inside `role`'s namespace.
    pub fn udp_socket(&self, role: Role, addr: SocketAddr) -> anyhow::Result<UdpSocket> {
        run_in(&self.ns(role), move || Ok(UdpSocket::bind(addr)?))
    }
}
