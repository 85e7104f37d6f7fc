//! Orchestration: the only module that knows sources, network configuration and the
//! tunnel together.
//!
//! Boot runs on a single-threaded runtime with full privileges: find and check the
//! payload (nothing is touched until it is accepted), configure the tenant interface,
//! forwarding, TUN, routes and proxy ARP or NAT, bind UDP. That runtime is then shut
//! down so the process has one thread, capabilities are dropped to CAP_NET_ADMIN,
//! and the serving runtime starts: the tunnel, readiness, metadata polling, SIGHUP,
//! and cleanup on SIGTERM/SIGINT.

use crate::http;
use crate::metadata;
use crate::nat;
use crate::notify::Notifier;
use crate::privileges;
use crate::source::{self, Origin, SourceError, Sources};
use crate::tunnel;
use cloudpipe_core::config::{Config, Mode, Peer};
use cloudpipe_core::overlay::Overlay;
use cloudpipe_core::payload::{self, Payload, PayloadError};
use cloudpipe_net::netconf::{self, Link, Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
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

/// Time the tunnel task gets to finish after its handle is dropped.
const TUNNEL_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Settings {
    pub sources: Sources,
    /// Metadata polling interval; zero turns polling off.
    pub poll_interval: Duration,
    pub tun_name: String,
    /// Worker queues and TUN offloads.
    pub data_path: tunnel::DataPath,
    /// Keep every capability (debugging, or running unprivileged tests).
    pub keep_privileges: bool,
}

/// What boot built, handed to the serving phase.
struct Booted {
    config: Config,
    source: Origin,
    user_data: Vec<u8>,
    tenant: Link,
    queues: tunnel::Queues,
    peers: Vec<Peer>,
    meta: Option<BTreeMap<String, String>>,
}

/// Everything this daemon adds to the system and must remove on a clean stop.
struct Cleanup {
    tun_name: String,
    tenant_index: u32,
    pool: cloudpipe_core::pool::Pool,
    nat: bool,
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
    let cleanup = Cleanup {
        tun_name: settings.tun_name.clone(),
        tenant_index: booted.tenant.index,
        pool: booted.config.pool,
        nat: booted.config.mode == Mode::Masquerade,
    };
    let dropped = if settings.keep_privileges {
        tracing::warn!("--keep-privileges: running with every capability");
        Ok(())
    } else {
        privileges::drop_all_but(&[privileges::CAP_NET_ADMIN])
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
            undo(&cleanup).await;
            return ExitCode::from(exit::FAILURE);
        }
        if !settings.keep_privileges {
            tracing::info!("privileges dropped: only CAP_NET_ADMIN kept");
        }
        let code = serve(booted, &settings, &notifier).await;
        notifier.send("STOPPING=1");
        undo(&cleanup).await;
        ExitCode::from(code)
    })
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
        Some(m) => peers_from_meta(&config, m, &src).unwrap_or_else(|| config.peers.clone()),
        None => config.peers.clone(),
    };
    notifier.status("configuring the network");
    match configure(settings, &config, &peers).await {
        Ok((tenant, queues)) => Ok(Booted {
            config,
            source: fetched.source,
            user_data: fetched.user_data,
            tenant,
            queues,
            peers,
            meta,
        }),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "network configuration failed");
            notifier.status(&format!("failed: {e:#}"));
            Err(exit::FAILURE)
        }
    }
}

/// The field a payload rejection is about, for the log line.
fn payload_field(e: &PayloadError) -> String {
    match e {
        PayloadError::Config(c) => format!("{}.{}", payload::CONFIG_MEMBER, c.field),
        PayloadError::Json(_) => payload::CONFIG_MEMBER.to_string(),
        _ => "user_data".to_string(),
    }
}

/// The peers an overlay gives, or `None` (logged) if the overlay is bad.
fn peers_from_meta(
    config: &Config,
    meta: &BTreeMap<String, String>,
    src: &str,
) -> Option<Vec<Peer>> {
    let overlay = match Overlay::from_properties(meta.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(source = %src, "metadata overlay rejected, keeping the last good peers: {e}");
            return None;
        }
    };
    match overlay.apply(config) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(source = %src, field = %e.field, "metadata overlay rejected, keeping the last good peers: {e}");
            None
        }
    }
}

async fn configure(
    settings: &Settings,
    config: &Config,
    peers: &[Peer],
) -> anyhow::Result<(Link, tunnel::Queues)> {
    let net = Net::connect()?;
    let links = net.links().await?;
    let default_oif = net.default_route_link().await?;
    let tenant = netconf::pick_tenant(
        &links,
        config.interface.as_deref(),
        default_oif,
        &settings.tun_name,
    )
    .map_err(anyhow::Error::msg)?
    .clone();
    // Bind first: a port in use fails the boot before anything is changed.
    let udp = tunnel::open_udp(config.listen_port, settings.data_path)?;
    if net
        .ensure_address(tenant.index, config.address, config.subnet.prefix())
        .await?
    {
        tracing::info!(interface = %tenant.name, address = %config.address, prefix = config.subnet.prefix(), "address added");
    }
    net.set_up(tenant.index, config.tenant_mtu.map(u32::from))
        .await?;
    if net
        .ensure_default_route(config.gateway, tenant.index)
        .await?
    {
        tracing::info!(interface = %tenant.name, gateway = %config.gateway, "default route added");
    }
    netconf::enable_forwarding().map_err(|e| anyhow::anyhow!("enabling IPv4 forwarding: {e}"))?;
    let cleanup = Cleanup {
        tun_name: settings.tun_name.clone(),
        tenant_index: tenant.index,
        pool: config.pool,
        nat: config.mode == Mode::Masquerade,
    };
    let result = async {
        let tun = tunnel::open_tun(&settings.tun_name, config.mtu, settings.data_path)?;
        let link = net
            .link_by_name(&settings.tun_name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("TUN device {} vanished", settings.tun_name))?;
        // IPv4 only: no link-local address, router solicitations or ND into the tunnel.
        if let Err(e) = netconf::set_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", settings.tun_name), "1") {
            tracing::debug!(error = %e, "cannot disable IPv6 on the TUN device");
        }
        net.set_up(link.index, Some(u32::from(config.mtu))).await?;
        for cidr in config.pool.cidrs() {
            net.replace_route(cidr.network(), cidr.prefix(), link.index).await?;
        }
        tracing::info!(tun = %settings.tun_name, mtu = config.mtu, pool_first = %config.pool.first(), pool_last = %config.pool.last(), "tunnel device up, pool routed through it");
        match config.mode {
            Mode::ProxyArp => {
                // A table a masquerade run may have left goes (absent nft is fine here).
                let _ = nat::remove();
                // Answer ARP for clients at once instead of after a random delay of up
                // to 0.8 s (proxy_delay): a tenant VM's first packet to a client is not
                // held back.
                let key = format!("net/ipv4/neigh/{}/proxy_delay", tenant.name);
                if let Err(e) = netconf::set_sysctl(&key, "0") {
                    tracing::warn!(error = %e, %key, "cannot set proxy_delay");
                }
                sync_proxies(&net, tenant.index, config, peers, &tenant.name).await?
            }
            Mode::Masquerade => {
                // Entries a proxy-arp run may have left in the pool go.
                sync_proxies(&net, tenant.index, config, &[], &tenant.name).await?;
                nat::apply(&nat::ruleset(&tenant.name, &config.pool.cidrs(), config.address))?;
                tracing::info!(table = nat::TABLE, interface = %tenant.name, "masquerade rules loaded");
            }
        }
        Ok::<_, anyhow::Error>(tun)
    }
    .await;
    match result {
        Ok(tun) => Ok((tenant, tunnel::Queues { tun, udp })),
        Err(e) => {
            undo_with(&net, &cleanup).await;
            Err(e)
        }
    }
}

/// Make the proxy neighbour entries inside the pool on the tenant link exactly the
/// addresses of `peers`. Entries outside the pool are someone else's and stay.
async fn sync_proxies(
    net: &Net,
    index: u32,
    config: &Config,
    peers: &[Peer],
    ifname: &str,
) -> anyhow::Result<()> {
    let want: BTreeSet<Ipv4Addr> = peers.iter().map(|p| p.address).collect();
    let have: BTreeSet<Ipv4Addr> = net
        .proxies(index)
        .await?
        .into_iter()
        .filter(|a| config.pool.contains(*a))
        .collect();
    for a in want.difference(&have) {
        net.add_proxy(index, *a).await?;
        tracing::debug!(interface = %ifname, address = %a, "proxy neighbour added");
    }
    for a in have.difference(&want) {
        net.del_proxy(index, *a).await?;
        tracing::debug!(interface = %ifname, address = %a, "proxy neighbour removed");
    }
    if want != have {
        tracing::info!(interface = %ifname, entries = want.len(), "proxy neighbour entries synced");
    }
    Ok(())
}

async fn serve(booted: Booted, settings: &Settings, notifier: &Notifier) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let net = match Net::connect() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "netlink");
            return exit::FAILURE;
        }
    };
    let Booted {
        config,
        source,
        user_data,
        tenant,
        queues,
        mut peers,
        mut meta,
    } = booted;
    let (mut term, mut int, mut hup, mut usr1) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            tracing::error!("cannot install signal handlers");
            return exit::FAILURE;
        }
    };
    let (handle, mut task) = match tunnel::spawn(&config, peers.clone(), queues) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start the data path");
            return exit::FAILURE;
        }
    };
    notifier.send(&format!(
        "READY=1\nSTATUS=serving {} peers on UDP port {}",
        peers.len(),
        config.listen_port
    ));
    tracing::info!(source = %source, interface = %tenant.name, address = %config.address, port = config.listen_port, peers = peers.len(), "ready");

    let polling = !settings.poll_interval.is_zero();
    let mut ticker = tokio::time::interval(if polling {
        settings.poll_interval
    } else {
        Duration::from_secs(3600)
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut poll_failing = false;
    let mut task_done = false;
    let code = loop {
        let reason = tokio::select! {
            _ = term.recv() => break 0,
            _ = int.recv() => break 0,
            r = &mut task => {
                task_done = true;
                match r {
                    Ok(Ok(())) => tracing::error!("tunnel stopped"),
                    Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "tunnel failed"),
                    Err(e) => tracing::error!(error = %e, "tunnel task panicked"),
                }
                break exit::FAILURE;
            }
            _ = usr1.recv() => {
                log_status(&handle).await;
                continue;
            }
            _ = hup.recv() => "SIGHUP",
            _ = ticker.tick(), if polling => "poll",
        };
        // Reads take up to a request timeout: stay responsive to a stop meanwhile.
        let read = async {
            if reason == "SIGHUP" {
                check_payload(&source, &user_data, &config, settings).await;
            }
            read_meta(settings, &source).await
        };
        let read = tokio::select! {
            r = read => r,
            _ = term.recv() => break 0,
            _ = int.recv() => break 0,
        };
        let fresh = match read {
            Ok(m) => {
                if poll_failing {
                    tracing::info!("metadata service reachable again");
                    poll_failing = false;
                }
                m
            }
            Err(e) => {
                // One line when it starts failing, not one per poll.
                if !poll_failing || reason == "SIGHUP" {
                    tracing::warn!(error = %e, trigger = reason, "cannot read metadata; keeping current peers");
                }
                poll_failing = true;
                continue;
            }
        };
        if meta.as_ref() == Some(&fresh) && reason != "SIGHUP" {
            continue;
        }
        tracing::info!(
            trigger = reason,
            properties = fresh.len(),
            "instance properties read"
        );
        meta = Some(fresh);
        let Some(new_peers) =
            peers_from_meta(&config, meta.as_ref().expect("just set"), "meta_data.json")
        else {
            continue;
        };
        if new_peers == peers {
            continue;
        }
        let (added, removed) = diff(&peers, &new_peers);
        if let Err(e) = handle.set_peers(new_peers.clone()).await {
            tracing::error!(error = %e, "cannot update the tunnel's peers");
            break exit::FAILURE;
        }
        if config.mode == Mode::ProxyArp {
            if let Err(e) =
                sync_proxies(&net, tenant.index, &config, &new_peers, &tenant.name).await
            {
                tracing::error!(error = %format!("{e:#}"), "cannot sync proxy neighbour entries");
            }
        }
        tracing::info!(peers = new_peers.len(), added, removed, "peers updated");
        notifier.status(&format!(
            "serving {} peers on UDP port {}",
            new_peers.len(),
            config.listen_port
        ));
        peers = new_peers;
    };
    if code == 0 {
        tracing::info!("stopping");
    }
    drop(handle);
    if !task_done {
        let _ = tokio::time::timeout(TUNNEL_STOP_GRACE, task).await;
    }
    code
}

/// SIGUSR1: one journal line per peer (no addresses or endpoints above DEBUG).
async fn log_status(handle: &tunnel::TunnelHandle) {
    match handle.status().await {
        Ok(list) => {
            for p in list {
                let age = p.since_last_handshake.map(|d| d.as_secs());
                tracing::info!(peer = %p.name, handshake_age_s = ?age, rx_bytes = p.rx_bytes, tx_bytes = p.tx_bytes, "peer status");
                tracing::debug!(peer = %p.name, address = %p.address, endpoint = ?p.endpoint, "peer addresses");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the tunnel's status"),
    }
}

fn diff(old: &[Peer], new: &[Peer]) -> (usize, usize) {
    let o: BTreeSet<_> = old.iter().map(|p| (p.public_key, p.address)).collect();
    let n: BTreeSet<_> = new.iter().map(|p| (p.public_key, p.address)).collect();
    (n.difference(&o).count(), o.difference(&n).count())
}

/// Instance properties, from the metadata service or (when booted from one) a config
/// drive that can be read without mounting.
/// SIGHUP: read the payload again. It cannot change on a real cloud (user-data is
/// fixed at launch) but a `--payload` file can; a changed configuration is reported,
/// not applied: the pool, keys and addresses of a running appliance stay put.
async fn check_payload(origin: &Origin, booted: &[u8], config: &Config, settings: &Settings) {
    match source::reread(origin, &settings.sources).await {
        Ok(bytes) if bytes == booted => {}
        Ok(bytes) => match payload::decode(&bytes) {
            Ok(Payload::Cloudpipe(c)) if *c == *config => {}
            Ok(_) => {
                tracing::warn!(source = %origin, "the payload changed; restart cloudpiped to apply it (instance properties are applied live)")
            }
            Err(e) => {
                tracing::warn!(source = %origin, field = %payload_field(&e), "the payload changed and would be rejected: {e}")
            }
        },
        Err(e) => tracing::warn!(source = %origin, error = %e, "cannot read the payload again"),
    }
}

async fn read_meta(
    settings: &Settings,
    source: &Origin,
) -> anyhow::Result<BTreeMap<String, String>> {
    let s = &settings.sources;
    let url = s.metadata_url.join(metadata::META_DATA_PATH);
    let http_err = match http::get(&url, source::meta_data_limits(s.request_timeout)).await {
        Ok(doc) => return metadata::parse_meta(&doc).map_err(anyhow::Error::msg),
        Err(e) => anyhow::anyhow!("{url}: {e}"),
    };
    if let Origin::ConfigDrive(p) = source {
        if let Ok(c) = crate::configdrive::read(p, &s.mount_dir) {
            if let Some(doc) = c.meta_data {
                return metadata::parse_meta(&doc).map_err(anyhow::Error::msg);
            }
        }
    }
    Err(http_err)
}

/// Remove what the daemon added: TUN, proxy entries in the pool, the NAT table. The
/// tenant address and default route stay (DHCP's, or the appliance's identity).
async fn undo(c: &Cleanup) {
    match Net::connect() {
        Ok(net) => undo_with(&net, c).await,
        Err(e) => tracing::error!(error = %e, "cleanup: netlink"),
    }
}

async fn undo_with(net: &Net, c: &Cleanup) {
    if let Ok(Some(l)) = net.link_by_name(&c.tun_name).await {
        if let Err(e) = net.delete_link(l.index).await {
            tracing::warn!(error = %e, tun = %c.tun_name, "cleanup: cannot delete TUN device");
        }
    }
    match net.proxies(c.tenant_index).await {
        Ok(list) => {
            for a in list.into_iter().filter(|a| c.pool.contains(*a)) {
                if let Err(e) = net.del_proxy(c.tenant_index, a).await {
                    tracing::warn!(error = %e, "cleanup: cannot remove a proxy neighbour entry");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cleanup: cannot list proxy neighbour entries"),
    }
    if c.nat {
        if let Err(e) = nat::remove() {
            tracing::warn!(error = %format!("{e:#}"), "cleanup: cannot remove the NAT table");
        }
    }
    tracing::info!("cleaned up: TUN, proxy entries and NAT rules removed; tenant address kept");
}

#[cfg(test)]
mod tests {
    use super::*;

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
