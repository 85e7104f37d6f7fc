//! The `wg` control socket: `<dir>/<interface>.sock` (dir `/var/run/wireguard`,
//! where `wg` looks), a stream socket of mode 0600 in a directory only root can
//! write, speaking the cross-platform UAPI. The codec is
//! [`cloudpipe_core::uapi`]; this is the shell around it: accept, read a framed
//! request (bounded in size and time), answer, repeat until the client closes.
//!
//! A malformed request gets an errno answer and is logged; nothing a client sends
//! stops the daemon.

use super::{Command, Shared};
use cloudpipe_core::uapi::{
    self, errno, frame_after, parse_request, write_errno, write_get, write_status, DeviceInfo,
    Frame, Request, UapiError,
};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Where `wg` (wireguard-tools) looks for userspace implementations' sockets.
pub const DEFAULT_DIR: &str = "/var/run/wireguard";
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// A client gets this long to send a whole request (or to send the next one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `set` may wait for the supervisor (a host change in progress).
const SET_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound socket. Dropping it removes the socket file.
#[derive(Debug)]
pub struct Bound {
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    /// The directory, when this daemon created it.
    made_dir: Option<PathBuf>,
}

impl Bound {
    /// Create `dir` (0755, as wireguard-go does) if missing and bind
    /// `dir/<interface>.sock` with mode 0600. A stale socket (nobody answers) is
    /// replaced; a live one means another daemon serves this interface: an error.
    pub fn bind(dir: &Path, interface: &str) -> anyhow::Result<Bound> {
        let path = dir.join(format!("{interface}.sock"));
        let mut made_dir = None;
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            made_dir = Some(dir.to_path_buf());
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                anyhow::bail!(
                    "{} is in use: another WireGuard implementation serves {interface} (stop it, or give this daemon another --tun-name)",
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .map_err(|e| anyhow::anyhow!("removing the stale {}: {e}", path.display()))?;
        }
        // The socket is created with the process umask: make it 0600 from the start.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let bound = std::os::unix::net::UnixListener::bind(&path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| anyhow::anyhow!("binding {}: {e}", path.display()))?;
        let bound = Bound {
            path,
            listener: Some(listener),
            made_dir,
        };
        std::fs::set_permissions(&bound.path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| anyhow::anyhow!("{}: {e}", bound.path.display()))?;
        Ok(bound)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket's directory, if [`Bound::bind`] created it.
    pub fn made_dir(&self) -> Option<&Path> {
        self.made_dir.as_deref()
    }

    /// The listener, for [`serve`] (once).
    pub fn take_listener(&mut self) -> io::Result<UnixListener> {
        let l = self
            .listener
            .take()
            .ok_or_else(|| io::Error::other("the control socket is already served"))?;
        l.set_nonblocking(true)?;
        UnixListener::from_std(l)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(path = %self.path.display(), "control socket removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A directory this daemon did not make and, no longer root, cannot
            // write: the next start finds the socket stale and replaces it.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::info!(path = %self.path.display(), error = %e, "the control socket stays behind; the next start replaces it")
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the control socket")
            }
        }
    }
}

/// Accept and serve connections until the task is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, commands: mpsc::Sender<Command>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, commands) = (shared.clone(), commands.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &shared, &commands).await {
                tracing::debug!(error = %e, "control socket: connection ended");
            }
            drop(permit);
        });
    }
}

/// Serve one connection: requests one after another until the client closes.
async fn connection(
    mut stream: UnixStream,
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Bytes of `buf` already searched for the end of a request.
        let mut scanned = 0;
        let (request, closed) = loop {
            match frame_after(&buf, scanned) {
                Frame::Complete(n) => break (buf.drain(..n).collect::<Vec<u8>>(), false),
                Frame::TooLong => {
                    tracing::warn!(
                        limit = uapi::MAX_REQUEST_LEN,
                        "control socket: request too long; closing"
                    );
                    let mut out = String::new();
                    write_errno(&mut out, errno::EMSGSIZE);
                    return stream.write_all(out.as_bytes()).await;
                }
                Frame::Incomplete => scanned = buf.len(),
            }
            let n = match tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut chunk)).await {
                Ok(r) => r?,
                Err(_) if buf.is_empty() => return Ok(()),
                Err(_) => {
                    tracing::warn!("control socket: incomplete request timed out; closing");
                    return Ok(());
                }
            };
            if n == 0 {
                // The client closed its side: what it sent (if anything) is the
                // last request, as wireguard-go reads a set up to EOF.
                if buf.is_empty() {
                    return Ok(());
                }
                break (std::mem::take(&mut buf), true);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let answer = answer(&request, shared, commands).await;
        stream.write_all(answer.as_bytes()).await?;
        if closed {
            return Ok(());
        }
    }
}

/// The answer to one request.
async fn answer(request: &[u8], shared: &Shared, commands: &mpsc::Sender<Command>) -> String {
    let mut out = String::new();
    let result = match parse_request(request) {
        Ok(Request::Get) => {
            let d = &shared.device;
            let info = DeviceInfo {
                private_key: d.private_key(),
                listen_port: d.listen_port(),
                fwmark: d.fwmark(),
            };
            write_get(&mut out, &info, &d.peers(SystemTime::now()));
            return out;
        }
        Ok(Request::Status) => match serde_json::to_string(&shared.status()) {
            Ok(json) => {
                write_status(&mut out, &json);
                return out;
            }
            Err(e) => Err(UapiError::new(errno::EIO, format!("status: {e}"))),
        },
        Ok(Request::Set(request)) => set(request, commands).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => write_errno(&mut out, 0),
        Err(e) => {
            tracing::warn!(errno = e.errno, "control socket: request refused: {e}");
            write_errno(&mut out, e.errno);
        }
    }
    out
}

async fn set(request: uapi::SetRequest, commands: &mpsc::Sender<Command>) -> Result<(), UapiError> {
    let (reply, answer) = oneshot::channel();
    let stopping = || UapiError::new(errno::EIO, "the daemon is stopping");
    commands
        .send(Command::Set { request, reply })
        .await
        .map_err(|_| stopping())?;
    match tokio::time::timeout(SET_TIMEOUT, answer).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(stopping()),
        Err(_) => Err(UapiError::new(errno::EIO, "the change timed out")),
    }
}
