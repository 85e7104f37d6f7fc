//! systemd's readiness protocol (sd_notify), by hand: one datagram per message to the
//! unix socket named in $NOTIFY_SOCKET (a path, or `@name` for the abstract
//! namespace). Without $NOTIFY_SOCKET every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                SocketAddr::from_pathname(&path).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Notifier { target }
    }

    /// Send `state` (e.g. `READY=1`, `STATUS=...`); failures are logged, not fatal.
    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, "sd_notify failed");
            }
        }
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }
}
