//! The host side of the appliance: what it adds to the VM's network and removes
//! again. At boot ([`configure`]): the tenant address, link and default route,
//! forwarding, the TUN device with the pool routed through it, proxy ARP or the
//! NAT table. While serving ([`Host::apply`]): the reconciler's host diffs (proxy
//! neighbour entries, routes through the TUN device). On a clean stop
//! ([`undo`]): the TUN device (its routes go with it), proxy entries in the pool,
//! the NAT table; the tenant address and default route stay (DHCP's, or the
//! appliance's identity).

use crate::dad;
use crate::mtu;
use crate::nat;
use crate::run::Settings;
use crate::tunnel;
use cloudpipe_core::config::{Config, Mode};
use cloudpipe_core::pool::Pool;
use cloudpipe_core::reconcile::HostDiff;
use cloudpipe_net::netconf::{self, Link, Net};
use cloudpipe_net::tun::TunQueue;
use std::collections::BTreeSet;

/// Everything this daemon adds to the system and must remove on a clean stop.
#[derive(Debug, Clone)]
pub struct Cleanup {
    pub tun_name: String,
    pub tenant_index: u32,
    pub pool: Pool,
    pub nat: bool,
}

impl Cleanup {
    pub fn new(settings: &Settings, config: &Config, tenant_index: u32) -> Cleanup {
        Cleanup {
            tun_name: settings.tun_name.clone(),
            tenant_index,
            pool: config.pool,
            nat: config.mode == Mode::Masquerade,
        }
    }
}

/// What boot configured: the tenant link, the TUN device's index and the data
/// path's queues.
pub struct Configured {
    pub tenant: Link,
    pub tun_index: u32,
    /// The TUN device's MTU: what the tenant network carries, at most the payload's.
    pub tun_mtu: u16,
    pub queues: tunnel::Queues,
}

/// Configure the VM for `config`. Proxy entries in the pool that a previous run
/// left are removed: the reconciler's boot diff adds the current ones. On error,
/// what was added is removed again.
pub async fn configure(
    settings: &Settings,
    config: &Config,
    network_data: Option<&[u8]>,
) -> anyhow::Result<Configured> {
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
    netconf::enable_forwarding().map_err(|e| match e.raw_os_error() {
        // The unit's ProtectKernelTunables=yes: the image presets it instead.
        Some(libc::EROFS) => anyhow::anyhow!(
            "enabling IPv4 forwarding: {e}: /proc/sys is read-only here (ProtectKernelTunables=); \
             set net.ipv4.ip_forward = 1 in /etc/sysctl.d, as the image's 90-cloudpipe.conf does"
        ),
        _ => anyhow::anyhow!("enabling IPv4 forwarding: {e}"),
    })?;
    // What the tenant network carries sets the tunnel's MTU; nobody else may hold the
    // appliance's or the clients' addresses.
    let mac = dad::mac_of(&tenant.name).ok();
    let mac_text = mac.map(|m| dad::mac_string(&m));
    let tunnel_mtu = mtu::for_tenant(
        config,
        &tenant.name,
        tenant.mtu,
        mac_text.as_deref(),
        network_data,
    )
    .tunnel;
    dad::check_tenant(&tenant.name, tenant.index, mac, config);
    let cleanup = Cleanup::new(settings, config, tenant.index);
    let result = async {
        let (tun, tun_index) = tun_up(&net, settings, config, tunnel_mtu).await?;
        // A previous run's entries (a crash leaves them): the boot diff adds
        // the ones this run wants.
        remove_pool_proxies(&net, tenant.index, &config.pool).await?;
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
            }
            Mode::Masquerade => {
                nat::apply(&nat::ruleset(&tenant.name, &config.pool.cidrs(), config.address))?;
                tracing::info!(table = nat::TABLE, interface = %tenant.name, "masquerade rules loaded");
            }
        }
        Ok::<_, anyhow::Error>((tun, tun_index))
    }
    .await;
    match result {
        Ok((tun, tun_index)) => Ok(Configured {
            tenant,
            tun_index,
            tun_mtu: tunnel_mtu,
            queues: tunnel::Queues { tun, udp },
        }),
        Err(e) => {
            undo_with(&net, &cleanup).await;
            Err(e)
        }
    }
}

/// Create the TUN device with its queues and bring it up: the tunnel MTU, IPv4
/// only (no link-local address, router solicitations or ND into the tunnel), the
/// pool routed through it. Returns the queues and the device's index.
async fn tun_up(
    net: &Net,
    settings: &Settings,
    config: &Config,
    mtu: u16,
) -> anyhow::Result<(Vec<TunQueue>, u32)> {
    let tun = tunnel::open_tun(&settings.tun_name, mtu, settings.data_path)?;
    let link = net
        .link_by_name(&settings.tun_name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("TUN device {} vanished", settings.tun_name))?;
    if let Err(e) = netconf::set_sysctl(
        &format!("net/ipv6/conf/{}/disable_ipv6", settings.tun_name),
        "1",
    ) {
        tracing::debug!(error = %e, "cannot disable IPv6 on the TUN device");
    }
    net.set_up(link.index, Some(u32::from(mtu))).await?;
    for cidr in config.pool.cidrs() {
        net.replace_route(cidr.network(), cidr.prefix(), link.index)
            .await?;
    }
    tracing::info!(tun = %settings.tun_name, mtu, pool_first = %config.pool.first(), pool_last = %config.pool.last(), "tunnel device up, pool routed through it");
    Ok((tun, link.index))
}

async fn remove_pool_proxies(net: &Net, index: u32, pool: &Pool) -> anyhow::Result<()> {
    for a in net
        .proxies(index)
        .await?
        .into_iter()
        .filter(|a| pool.contains(*a))
    {
        net.del_proxy(index, a).await?;
        tracing::debug!(address = %a, "stale proxy neighbour entry removed");
    }
    Ok(())
}

/// The host while serving: where the reconciler's host diffs go, and what puts
/// back what the kernel removed (a link that went down loses its routes and proxy
/// entries) or someone deleted (the TUN device).
pub struct Host {
    net: Net,
    tenant: Link,
    tun_index: u32,
    tun_mtu: u16,
}

impl Host {
    pub fn new(tenant: Link, tun_index: u32, tun_mtu: u16) -> anyhow::Result<Host> {
        Ok(Host {
            net: Net::connect()?,
            tenant,
            tun_index,
            tun_mtu,
        })
    }

    pub fn tenant(&self) -> &Link {
        &self.tenant
    }

    /// The TUN device's index (a recreated device has a new one).
    pub fn tun_index(&self) -> u32 {
        self.tun_index
    }

    /// Whether the TUN device `name` exists (with the index this host knows).
    pub async fn tun_exists(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self
            .net
            .link_by_name(name)
            .await?
            .is_some_and(|l| l.index == self.tun_index))
    }

    /// Create the TUN device again (it was deleted), as boot did; the routes of
    /// `entries` go through it too. Returns its queues.
    pub async fn recreate_tun(
        &mut self,
        settings: &Settings,
        config: &Config,
        entries: &HostDiff,
    ) -> anyhow::Result<Vec<TunQueue>> {
        let (queues, index) = tun_up(&self.net, settings, config, self.tun_mtu).await?;
        self.tun_index = index;
        self.restore(config, entries).await?;
        Ok(queues)
    }

    /// Put back what the appliance needs and the kernel dropped: with the tenant
    /// link up, its address, a default route (when none is left) and the proxy
    /// entries of `entries` (stale ones in the pool go); the TUN device up with the
    /// tunnel MTU and the pool and `entries`' routes through it. Returns what was
    /// put back, for a log line (empty: nothing was missing).
    pub async fn restore(
        &self,
        config: &Config,
        entries: &HostDiff,
    ) -> anyhow::Result<Vec<String>> {
        let (net, t) = (&self.net, self.tenant.index);
        let mut done = Vec::new();
        let tenant_up = net.links().await?.iter().any(|l| l.index == t && l.up);
        if tenant_up {
            if net
                .ensure_address(t, config.address, config.subnet.prefix())
                .await?
            {
                done.push(format!("address {}", config.address));
            }
            match net.ensure_default_route(config.gateway, t).await {
                Ok(true) => done.push(format!("default route via {}", config.gateway)),
                Ok(false) => {}
                // Another agent (a DHCP client) may have put one back meanwhile.
                Err(_) if net.default_route_link().await?.is_some() => {}
                Err(e) => return Err(e.context(format!("default route via {}", config.gateway))),
            }
            let have: BTreeSet<_> = net
                .proxies(t)
                .await?
                .into_iter()
                .filter(|a| config.pool.contains(*a))
                .collect();
            let want: BTreeSet<_> = entries.add_proxies.iter().copied().collect();
            for a in want.difference(&have) {
                net.add_proxy(t, *a).await?;
            }
            for a in have.difference(&want) {
                net.del_proxy(t, *a).await?;
            }
            let added = want.difference(&have).count();
            if added > 0 {
                done.push(format!("{added} proxy entries"));
            }
        }
        let tun = self.tun_index;
        if !net.links().await?.iter().any(|l| l.index == tun && l.up) {
            net.set_up(tun, Some(u32::from(self.tun_mtu))).await?;
            done.push("the TUN device up".into());
        }
        let routed: BTreeSet<(std::net::Ipv4Addr, u8)> = net
            .routes()
            .await?
            .into_iter()
            .filter(|r| r.oif == Some(tun))
            .map(|r| (r.dst, r.prefix))
            .collect();
        let mut routes = 0;
        for r in config.pool.cidrs().iter().chain(&entries.add_routes) {
            if !routed.contains(&(r.network(), r.prefix())) {
                net.replace_route(r.network(), r.prefix(), tun).await?;
                routes += 1;
            }
        }
        if routes > 0 {
            done.push(format!("{routes} routes through the TUN device"));
        }
        Ok(done)
    }

    /// Apply `diff`; every item is tried. Errors name the entry and why.
    pub async fn apply(&self, diff: &HostDiff) -> Result<(), Vec<String>> {
        let (t, ifname) = (self.tenant.index, &self.tenant.name);
        let mut errors = Vec::new();
        for a in &diff.remove_proxies {
            match self.net.del_proxy(t, *a).await {
                Ok(()) => {
                    tracing::debug!(interface = %ifname, address = %a, "proxy neighbour removed")
                }
                Err(e) => errors.push(format!("removing the proxy entry for {a}: {e:#}")),
            }
        }
        for r in &diff.remove_routes {
            match self
                .net
                .del_route(r.network(), r.prefix(), self.tun_index)
                .await
            {
                Ok(()) => tracing::info!(route = %r, "route through the tunnel removed"),
                Err(e) => errors.push(format!("removing the route {r}: {e:#}")),
            }
        }
        for a in &diff.add_proxies {
            match self.net.add_proxy(t, *a).await {
                Ok(()) => {
                    tracing::debug!(interface = %ifname, address = %a, "proxy neighbour added")
                }
                Err(e) => errors.push(format!("adding the proxy entry for {a}: {e:#}")),
            }
        }
        for r in &diff.add_routes {
            match self
                .net
                .replace_route(r.network(), r.prefix(), self.tun_index)
                .await
            {
                Ok(()) => tracing::info!(route = %r, "route through the tunnel added"),
                Err(e) => errors.push(format!("adding the route {r}: {e:#}")),
            }
        }
        let changed = diff.add_proxies.len() + diff.remove_proxies.len();
        if changed > 0 {
            tracing::info!(interface = %ifname, added = diff.add_proxies.len(), removed = diff.remove_proxies.len(), "proxy neighbour entries updated");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Remove what the daemon added (see the module documentation).
pub async fn undo(c: &Cleanup) {
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
    tracing::info!(
        "cleaned up: TUN, its routes, proxy entries and NAT rules removed; tenant address kept"
    );
}
