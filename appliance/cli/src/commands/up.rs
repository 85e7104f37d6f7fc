//! `cloudpipe up CONFIG` / `cloudpipe down CONFIG`: a WireGuard client from a
//! wg-quick file on cloudpipe's forwarding core, for Linux hosts without kernel
//! WireGuard (and the like-for-like peer of the benchmarks).
//!
//! What wg-quick(8) does, in the same order: the interface is named after the file;
//! its addresses, MTU (default 1420) and a route per allowed IP (unless `Table =
//! off`) are set; DNS goes to resolvconf; PreUp/PostUp/PreDown/PostDown run with
//! `%i` replaced by the interface name. The process stays in the foreground until
//! SIGINT or SIGTERM (`cloudpipe down` sends it), then removes what it added.
//! Differences: a route that would carry the peer's own endpoint (a default route,
//! say) is refused instead of set up with policy routing.

use crate::cli::{DownArgs, UpArgs};
use anyhow::{bail, Context, Result};
use cloudpipe_core::wg::Device;
use cloudpipe_core::wg_quick::{self, Hook, Table, WgQuick};
use cloudpipe_net::netconf::Net;
use cloudpipe_net::tun::TunOptions;
use cloudpipe_net::Tunnel;
use ipnetwork::IpNetwork;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// wg-quick's default when the file sets no MTU (1500 minus 80 bytes of
/// IPv6 + UDP + WireGuard overhead).
pub const DEFAULT_MTU: u16 = 1420;
/// Where a running `up` records its PID for `down`.
pub const RUN_DIR: &str = "/run/cloudpipe";
/// How long `down` waits for the process to clean up and exit.
const DOWN_TIMEOUT: Duration = Duration::from_secs(5);

struct Loaded {
    name: String,
    conf: WgQuick,
}

fn load(path: &Path) -> Result<Loaded> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let name = wg_quick::interface_name(file_name).map_err(anyhow::Error::msg)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let conf = wg_quick::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o007 != 0 {
            eprintln!(
                "warning: {} is readable by everyone and holds a private key: chmod 600 it",
                path.display()
            );
        }
    }
    Ok(Loaded { name, conf })
}

/// `RUN_DIR/NAME@NETNS.pid`: interface names are per network namespace, so the
/// file is too (NETNS: the inode of this process's `/proc/self/ns/net`). It holds
/// `PID STARTTIME` (`/proc/PID/stat` field 22, clock ticks since boot), so that a
/// stale file whose PID was taken by another process is never believed.
fn pid_file(name: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let netns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    Path::new(RUN_DIR).join(format!("{name}@{netns}.pid"))
}

/// Field 22 of `/proc/PID/stat` (starttime); `None` when no such process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The `cloudpipe up` process a PID file names, if that very process still runs.
fn running_up(pid_path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_path).ok()?;
    let mut words = text.split_whitespace();
    let pid: i32 = words.next()?.parse().ok()?;
    let started: u64 = words.next()?.parse().ok()?;
    (start_time(pid) == Some(started)).then_some(pid)
}

/// Resolve each peer's endpoint (IPv4 preferred, as the UDP socket is IPv4 unless
/// an endpoint is IPv6 only).
fn resolve(conf: &WgQuick) -> Result<Vec<Option<SocketAddr>>> {
    conf.peers
        .iter()
        .map(|p| {
            let Some(ep) = &p.endpoint else {
                return Ok(None);
            };
            let addrs: Vec<SocketAddr> = ep
                .to_socket_addrs()
                .with_context(|| format!("resolving Endpoint {ep}"))?
                .collect();
            let pick = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first());
            pick.copied()
                .map(Some)
                .with_context(|| format!("Endpoint {ep} resolves to no address"))
        })
        .collect()
}

/// Routes that would carry a peer's own encrypted packets into the tunnel.
fn check_endpoints_outside_routes(conf: &WgQuick, endpoints: &[Option<SocketAddr>]) -> Result<()> {
    if conf.interface.table == Table::Off {
        return Ok(());
    }
    for ep in endpoints.iter().flatten() {
        for p in &conf.peers {
            if let Some(net) = p.allowed_ips.iter().find(|n| n.contains(ep.ip())) {
                bail!(
                    "Endpoint {ep} lies inside AllowedIPs {net}: its own encrypted packets would be \
                     routed into the tunnel. Narrow AllowedIPs so that it excludes {}, or set \
                     Table = off and route it yourself (wg-quick handles a default route with \
                     policy routing; cloudpipe up does not yet)",
                    ep.ip()
                );
            }
        }
    }
    Ok(())
}

fn run_hooks(conf: &WgQuick, which: Hook, name: &str) -> Result<()> {
    for (h, cmd) in &conf.interface.hooks {
        if *h == which {
            let cmd = cmd.replace("%i", name);
            let st = std::process::Command::new("sh")
                .args(["-c", &cmd])
                .status()
                .with_context(|| format!("running {which:?} hook {cmd:?}"))?;
            if !st.success() {
                bail!("{which:?} hook {cmd:?} failed ({st})");
            }
        }
    }
    Ok(())
}

/// DNS through resolvconf, as wg-quick does; without it, say so.
fn set_dns(conf: &WgQuick, name: &str) {
    let servers = conf.dns_servers();
    if servers.is_empty() {
        return;
    }
    let mut text = String::new();
    for s in &servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    let search = conf.dns_search();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    let r = std::process::Command::new("resolvconf")
        .args(["-a", &format!("tun.{name}"), "-m", "0", "-x"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
            c.wait()
        });
    match r {
        Ok(st) if st.success() => {}
        _ => eprintln!(
            "warning: DNS ({}) not set: resolvconf is missing or failed; install openresolv or set the name servers yourself",
            servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn unset_dns(conf: &WgQuick, name: &str) {
    if !conf.dns_servers().is_empty() {
        let _ = std::process::Command::new("resolvconf")
            .args(["-d", &format!("tun.{name}"), "-f"])
            .status();
    }
}

pub fn up(args: UpArgs) -> Result<()> {
    let Loaded { name, conf } = load(&args.config)?;
    if conf.peers.is_empty() {
        bail!(
            "{}: no [Peer] section: nothing to connect to",
            args.config.display()
        );
    }
    let v4: Vec<(Ipv4Addr, u8)> = conf
        .interface
        .addresses
        .iter()
        .map(|a| match a {
            IpNetwork::V4(n) => Ok((n.ip(), n.prefix())),
            IpNetwork::V6(n) => {
                bail!("Address {n}: IPv6 addresses are not supported by cloudpipe up yet")
            }
        })
        .collect::<Result<_>>()?;
    let endpoints = resolve(&conf)?;
    check_endpoints_outside_routes(&conf, &endpoints)?;
    let queues = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mtu = conf.interface.mtu.unwrap_or(DEFAULT_MTU);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let net = Net::connect()?;
        if net.link_by_name(&name).await?.is_some() {
            bail!("{name} already exists: is it up already? (`cloudpipe down {}`)", args.config.display());
        }
        run_hooks(&conf, Hook::PreUp, &name)?;
        let bind_v6 = endpoints.iter().flatten().all(|e| e.is_ipv6()) && endpoints.iter().any(Option::is_some);
        let bind: SocketAddr = if bind_v6 {
            (std::net::Ipv6Addr::UNSPECIFIED, conf.interface.listen_port.unwrap_or(0)).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, conf.interface.listen_port.unwrap_or(0)).into()
        };
        let udp = cloudpipe_net::udp::open(bind, queues, conf.interface.fwmark)
            .with_context(|| format!("binding UDP {bind}"))?;
        let port = udp[0].local_addr()?.port();
        let tun = cloudpipe_net::tun::create(&TunOptions {
            name: name.clone(),
            queues,
            offload: args.offload,
            mtu,
        })?;
        let link = net
            .link_by_name(&name)
            .await?
            .with_context(|| format!("TUN device {name} vanished"))?;
        let configured = async {
            for (a, p) in &v4 {
                net.ensure_address(link.index, *a, *p).await?;
            }
            net.set_up(link.index, Some(u32::from(mtu))).await?;
            if conf.interface.table == Table::Auto {
                for p in &conf.peers {
                    for n in &p.allowed_ips {
                        match n {
                            IpNetwork::V4(n) => net.replace_route(n.network(), n.prefix(), link.index).await?,
                            IpNetwork::V6(n) => eprintln!("warning: AllowedIPs {n}: IPv6 routes are not set by cloudpipe up yet"),
                        }
                    }
                }
            } else if let Table::Id(t) = conf.interface.table {
                bail!("Table = {t}: only auto and off are supported by cloudpipe up");
            }
            anyhow::Ok(())
        };
        if let Err(e) = configured.await {
            let _ = net.delete_link(link.index).await;
            return Err(e);
        }
        let (device_config, peers) = conf.device(port, &endpoints);
        let device = Arc::new(Device::new(device_config, peers, random_u32()));
        let tunnel = Arc::new(Tunnel::start(device, udp, tun)?);
        set_dns(&conf, &name);
        std::fs::create_dir_all(RUN_DIR).ok();
        let pid = pid_file(&name);
        let me = std::process::id();
        let started = start_time(me as i32).context("reading /proc/self/stat")?;
        std::fs::write(&pid, format!("{me} {started}\n"))
            .with_context(|| format!("writing {}", pid.display()))?;
        if let Err(e) = run_hooks(&conf, Hook::PostUp, &name) {
            eprintln!("warning: {e:#}");
        }
        eprintln!(
            "{name} up: {} peer(s), UDP port {port}, {queues} queue(s); stop with Ctrl-C or `cloudpipe down {}`",
            conf.peers.len(),
            args.config.display()
        );
        let outcome = wait(&tunnel).await;
        if let Err(e) = run_hooks(&conf, Hook::PreDown, &name) {
            eprintln!("warning: {e:#}");
        }
        tunnel.stopper().raise();
        drop(tunnel);
        unset_dns(&conf, &name);
        if let Ok(Some(l)) = net.link_by_name(&name).await {
            let _ = net.delete_link(l.index).await;
        }
        let _ = std::fs::remove_file(&pid);
        if let Err(e) = run_hooks(&conf, Hook::PostDown, &name) {
            eprintln!("warning: {e:#}");
        }
        outcome
    })
}

/// Until SIGINT, SIGTERM or a failure of the data path.
async fn wait(tunnel: &Arc<Tunnel>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = tunnel.clone();
    let failed = tokio::task::spawn_blocking(move || t.wait());
    tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        r = failed => match r {
            Ok(Some(e)) => bail!("the tunnel failed: {e}"),
            Ok(None) => Ok(()),
            Err(e) => bail!("the tunnel watcher failed: {e}"),
        },
    }
}

pub fn down(args: DownArgs) -> Result<()> {
    let Loaded { name, .. } = load(&args.config)?;
    let pid_path = pid_file(&name);
    let alive = |p: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok();
    if let Some(p) = running_up(&pid_path) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGTERM,
        )
        .with_context(|| format!("signalling the `cloudpipe up` process {p}"))?;
        let deadline = Instant::now() + DOWN_TIMEOUT;
        // The process removes its PID file last, once everything it added is gone
        // (and a parent that has not reaped it yet keeps it "alive" as a zombie).
        while alive(p) && pid_path.exists() {
            if Instant::now() > deadline {
                bail!(
                    "{name}: process {p} did not stop within {}s",
                    DOWN_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{name} down");
        return Ok(());
    }
    // No process: a crash may have left the device behind.
    let _ = std::fs::remove_file(&pid_path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let net = Net::connect()?;
        match net.link_by_name(&name).await? {
            Some(l) => {
                net.delete_link(l.index).await?;
                eprintln!("{name}: no running `cloudpipe up`; removed the interface it left");
                Ok(())
            }
            None => bail!("{name} is not up"),
        }
    })
}

fn random_u32() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_believed_only_for_the_process_that_wrote_it() {
        let dir = std::env::temp_dir().join(format!("cp-up-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t@1.pid");
        let me = std::process::id() as i32;
        let started = start_time(me).expect("our own /proc/self/stat");
        std::fs::write(&path, format!("{me} {started}\n")).unwrap();
        assert_eq!(running_up(&path), Some(me));
        // The same PID started at another time (a stale file whose PID was reused).
        std::fs::write(&path, format!("{me} {}\n", started + 1)).unwrap();
        assert_eq!(running_up(&path), None);
        // The old format (a bare PID) names no process for sure.
        std::fs::write(&path, format!("{me}\n")).unwrap();
        assert_eq!(running_up(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn conf(allowed: &str, table: &str) -> WgQuick {
        wg_quick::parse(&format!(
            "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nTable = {table}\n\
             [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 203.0.113.10:1194\nAllowedIPs = {allowed}\n"
        ))
        .unwrap()
    }

    #[test]
    fn an_endpoint_inside_the_routes_is_refused_with_the_fix() {
        let ep = vec![Some("203.0.113.10:1194".parse().unwrap())];
        let e = check_endpoints_outside_routes(&conf("0.0.0.0/0", "auto"), &ep).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("inside AllowedIPs 0.0.0.0/0") && msg.contains("Narrow AllowedIPs"),
            "{msg}"
        );
        check_endpoints_outside_routes(&conf("10.0.0.0/24", "auto"), &ep).unwrap();
        check_endpoints_outside_routes(&conf("0.0.0.0/0", "off"), &ep).unwrap();
    }
}
