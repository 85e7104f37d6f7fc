//! The daemon's lifecycle: boot, privileges, runtimes, exit status.
//!
//! Boot runs on a single-threaded runtime with full privileges: find and check the
//! payload (nothing is touched until it is accepted), configure the host
//! ([`plumbing::configure`]), bind UDP, the control socket and the status listener.
//! That runtime is then shut down so the process has one thread, capabilities are
//! dropped to CAP_NET_ADMIN, and the serving runtime runs [`supervisor::serve`];
//! on its return the kernel objects are removed ([`plumbing::undo`]).

use crate::control::{socket, web};
use crate::notify::Notifier;
use crate::plumbing::{self, Cleanup};
use crate::privileges;
use crate::source::{self, Origin, SourceError, Sources};
use crate::supervisor;
use crate::tunnel;
use cloudpipe_core::config::{Config, Peer};
use cloudpipe_core::metadata;
use cloudpipe_core::payload::{self, Payload, PayloadError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit statuses, distinct so that a unit's `RestartPreventExitStatus=` and tests can
/// tell a bad payload (restarting will not help) from a transient failure.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const REJECTED: u8 = 2;
    pub const NO_PAYLOAD: u8 = 3;
    pub const UNREACHABLE: u8 = 4;
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub sources: Sources,
    /// Metadata polling interval; zero turns polling off.
    pub poll_interval: Duration,
    pub tun_name: String,
    /// Worker queues and TUN offloads.
    pub data_path: tunnel::DataPath,
    /// Where the control socket `<tun_name>.sock` goes.
    pub control_dir: PathBuf,
    /// Keep root and every capability (debugging).
    pub keep_privileges: bool,
    /// Who to become after set-up when started as root (`--user`).
    pub user: Option<privileges::RunAs>,
}

/// What boot built, handed to the serving phase.
pub struct Booted {
    pub config: Config,
    pub source: Origin,
    pub user_data: Vec<u8>,
    pub tenant: cloudpipe_net::netconf::Link,
    pub tun_index: u32,
    /// The TUN device's MTU (a recreated device gets it again).
    pub tun_mtu: u16,
    pub queues: tunnel::Queues,
    /// The payload's peers with the overlay read at boot applied.
    pub peers: Vec<Peer>,
    /// The instance properties read at boot.
    pub meta: Option<BTreeMap<String, String>>,
    /// The control socket (removed when dropped).
    pub control: socket::Bound,
    /// The status listener, when the payload sets `status_port`.
    pub status_listener: Option<std::net::TcpListener>,
}

pub fn main(settings: Settings) -> ExitCode {
    let notifier = Notifier::from_env();
    // A reload while booting has nothing to re-read yet; it must not kill the daemon
    // (SIGHUP's default). The serving phase installs the real handler.
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    if let Err(e) = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::SigIgn,
        )
    } {
        tracing::warn!(error = %e, "cannot ignore SIGHUP during boot");
    }
    let setup = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let booted = setup.block_on(boot(&settings, &notifier));
    // Joins the runtime's blocking threads: capabilities are per thread, and the drop
    // below must happen while this is the only one.
    setup.shutdown_timeout(Duration::from_secs(2));
    let booted = match booted {
        Ok(b) => b,
        Err(code) => return ExitCode::from(code),
    };
    let cleanup = Cleanup::new(&settings, &booted.config, booted.tenant.index);
    let dropped = if settings.keep_privileges {
        tracing::warn!("--keep-privileges: running with every capability");
        Ok(None)
    } else {
        hand_over(&booted, settings.user.as_ref())
            .and_then(|()| privileges::drop_after_setup(settings.user.as_ref()))
            .map(Some)
    };
    let serving = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(exit::FAILURE);
        }
    };
    serving.block_on(async move {
        if let Err(e) = dropped {
            tracing::error!(error = %format!("{e:#}"), "cannot drop privileges; stopping");
            drop(booted);
            plumbing::undo(&cleanup).await;
            return ExitCode::from(exit::FAILURE);
        }
        if let Ok(Some(d)) = &dropped {
            tracing::info!(
                uid = d.uid,
                gid = d.gid,
                bounding_set_lowered = d.bounding_lowered,
                "privileges dropped: only CAP_NET_ADMIN kept"
            );
        }
        let code = supervisor::serve(booted, &settings, &notifier).await;
        notifier.send("STOPPING=1");
        plumbing::undo(&cleanup).await;
        ExitCode::from(code)
    })
}

/// Before a root daemon becomes `user`: what it must still manage as that user
/// becomes its own. The control socket (0600) is the user's, and so is its
/// directory when the daemon made it (else removing the socket at stop needs the
/// directory's owner: a shared /run/wireguard keeps a stale socket, which the next
/// start replaces).
fn hand_over(booted: &Booted, user: Option<&privileges::RunAs>) -> anyhow::Result<()> {
    let Some(u) = user.filter(|u| !u.is_root() && nix::unistd::geteuid().is_root()) else {
        return Ok(());
    };
    let chown = |p: &std::path::Path| {
        nix::unistd::chown(p, Some(u.uid), Some(u.gid))
            .map_err(|e| anyhow::anyhow!("chown {} to {}: {e}", p.display(), u.name))
    };
    chown(booted.control.path())?;
    if let Some(dir) = booted.control.made_dir() {
        chown(dir)?;
    }
    Ok(())
}

/// Find, check and apply the payload. On error, the exit status; the system is left
/// as it was found (except an address DHCP would have given anyway).
async fn boot(settings: &Settings, notifier: &Notifier) -> Result<Booted, u8> {
    notifier.status("looking for the payload");
    let fetched = source::fetch(&settings.sources).await.map_err(|e| {
        let code = match &e {
            SourceError::NoPayload(_) => exit::NO_PAYLOAD,
            SourceError::Unreachable { .. } => exit::UNREACHABLE,
            SourceError::Other(_) => exit::FAILURE,
        };
        tracing::error!(error = %e, "cannot boot");
        notifier.status(&format!("failed: {e}"));
        code
    })?;
    let src = fetched.source.to_string();
    let config = match payload::decode(&fetched.user_data) {
        Ok(Payload::Cloudpipe(c)) => *c,
        Ok(Payload::Nova(n)) => {
            tracing::error!(source = %src, field = "user_data", "payload rejected: {}", n.migration_hint());
            notifier.status("failed: Nova cloudpipe payload");
            return Err(exit::REJECTED);
        }
        Err(e) => {
            tracing::error!(source = %src, field = %payload_field(&e), "payload rejected: {e}");
            notifier.status(&format!("failed: payload rejected: {e}"));
            return Err(exit::REJECTED);
        }
    };
    tracing::info!(source = %src, network = %config.network, subnet = %config.subnet, mode = %config.mode, peers = config.peers.len(), "payload accepted");
    let meta = fetched
        .meta_data
        .as_deref()
        .and_then(|doc| match metadata::parse_meta(doc) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(source = %src, error = %e, "ignoring meta_data.json");
                None
            }
        });
    let peers = match &meta {
        Some(m) => {
            supervisor::peers_from_meta(&config, m, &src).unwrap_or_else(|| config.peers.clone())
        }
        None => config.peers.clone(),
    };
    notifier.status("configuring the network");
    let configured =
        match plumbing::configure(settings, &config, fetched.network_data.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "network configuration failed");
                notifier.status(&format!("failed: {e:#}"));
                return Err(exit::FAILURE);
            }
        };
    let cleanup = Cleanup::new(settings, &config, configured.tenant.index);
    match listeners(settings, &config) {
        Ok((control, status_listener)) => Ok(Booted {
            config,
            source: fetched.source,
            user_data: fetched.user_data,
            tenant: configured.tenant,
            tun_index: configured.tun_index,
            tun_mtu: configured.tun_mtu,
            queues: configured.queues,
            peers,
            meta,
            control,
            status_listener,
        }),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot open the control surfaces");
            notifier.status(&format!("failed: {e:#}"));
            drop(configured);
            plumbing::undo(&cleanup).await;
            Err(exit::FAILURE)
        }
    }
}

/// The control socket and, when the payload sets `status_port`, the status
/// listener on the tenant address (bound now: the port may be privileged).
fn listeners(
    settings: &Settings,
    config: &Config,
) -> anyhow::Result<(socket::Bound, Option<std::net::TcpListener>)> {
    let control = socket::Bound::bind(&settings.control_dir, &settings.tun_name)?;
    let status = config
        .status_port
        .map(|port| web::bind(SocketAddr::from((config.address, port))))
        .transpose()?;
    Ok((control, status))
}

/// The field a payload rejection is about, for the log line.
pub fn payload_field(e: &PayloadError) -> String {
    match e {
        PayloadError::Config(c) => format!("{}.{}", payload::CONFIG_MEMBER, c.field),
        PayloadError::Json(_) => payload::CONFIG_MEMBER.to_string(),
        _ => "user_data".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_example_config_is_a_valid_payload_config() {
        let file: cloudpipe_core::config::ConfigFile =
            serde_json::from_str(include_str!("../../../configs/example-network.json")).unwrap();
        let config = Config::try_from(file).unwrap();
        assert_eq!(config.address, Ipv4Addr::new(10, 0, 0, 2));
        assert!(payload::encode(&config, payload::Encoding::Nova).is_ok());
    }

    #[test]
    fn rejections_name_their_field() {
        let e = PayloadError::Config(cloudpipe_core::config::ConfigError {
            field: "peers[1].address".into(),
            reason: "x".into(),
        });
        assert_eq!(payload_field(&e), "cloudpipe.json.peers[1].address");
        assert_eq!(payload_field(&PayloadError::Empty), "user_data");
    }
}
