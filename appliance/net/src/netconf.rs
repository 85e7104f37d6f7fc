//! The VM's network over rtnetlink: links, addresses, routes and proxy neighbour
//! entries, plus IPv4 forwarding through /proc/sys. Nothing here shells out to `ip`.
//!
//! Every operation is idempotent: it looks before it adds, or replaces, so a restart
//! after a crash finds its own leftovers instead of failing or duplicating them.

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

/// A link as the picker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
    pub loopback: bool,
}

/// A route in the main table, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

pub struct Net {
    handle: Handle,
}

impl Net {
    /// Open an rtnetlink connection; its driver runs as a task on the current runtime.
    pub fn connect() -> anyhow::Result<Net> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Net { handle })
    }

    pub async fn links(&self) -> anyhow::Result<Vec<Link>> {
        let mut out = Vec::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await? {
            out.push(link_of(&m));
        }
        Ok(out)
    }

    pub async fn link_by_name(&self, name: &str) -> anyhow::Result<Option<Link>> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// IPv4 addresses on a link, with prefix lengths.
    pub async fn addresses(&self, index: u32) -> anyhow::Result<Vec<(Ipv4Addr, u8)>> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s.try_next().await? {
            if m.header.index != index {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Add `addr/prefix` unless the link already has `addr` (with any prefix: DHCP
    /// may have put it there). Returns whether it was added.
    pub async fn ensure_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> anyhow::Result<bool> {
        if self.addresses(index).await?.iter().any(|(a, _)| *a == addr) {
            return Ok(false);
        }
        self.handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await?;
        Ok(true)
    }

    /// Set MTU (when given) and bring the link up.
    pub async fn set_up(&self, index: u32, mtu: Option<u32>) -> anyhow::Result<()> {
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.handle.link().set(b.build()).execute().await?;
        Ok(())
    }

    pub async fn delete_link(&self, index: u32) -> anyhow::Result<()> {
        self.handle.link().del(index).execute().await?;
        Ok(())
    }

    /// IPv4 routes of the main table.
    pub async fn routes(&self) -> anyhow::Result<Vec<Route>> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = s.try_next().await? {
            if let Some(r) = route_of(&m) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The link holding the default route, if any.
    pub async fn default_route_link(&self) -> anyhow::Result<Option<u32>> {
        Ok(self
            .routes()
            .await?
            .into_iter()
            .find(|r| r.prefix == 0)
            .and_then(|r| r.oif))
    }

    /// Add a default route via `gateway` on `index` if there is no default route.
    /// Returns whether it was added.
    pub async fn ensure_default_route(
        &self,
        gateway: Ipv4Addr,
        index: u32,
    ) -> anyhow::Result<bool> {
        if self.routes().await?.iter().any(|r| r.prefix == 0) {
            return Ok(false);
        }
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle.route().add(msg).execute().await?;
        Ok(true)
    }

    /// Route `dst/prefix` out of `index` (replacing any route for the same prefix).
    pub async fn replace_route(&self, dst: Ipv4Addr, prefix: u8, index: u32) -> anyhow::Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(index)
            .build();
        self.handle.route().add(msg).replace().execute().await?;
        Ok(())
    }

    /// Remove the route `dst/prefix` out of `index`; a route already gone is fine.
    pub async fn del_route(&self, dst: Ipv4Addr, prefix: u8, index: u32) -> anyhow::Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(index)
            .build();
        match self.handle.route().del(msg).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            r => Ok(r?),
        }
    }

    /// Proxy neighbour (NTF_PROXY) IPv4 entries on `index`.
    pub async fn proxies(&self, index: u32) -> anyhow::Result<Vec<Ipv4Addr>> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .neighbours()
            .get()
            .proxies()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(m) = s.try_next().await? {
            if m.header.ifindex != index || !m.header.flags.contains(NeighbourFlags::Proxy) {
                continue;
            }
            for a in &m.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) = a {
                    out.push(*ip);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub async fn add_proxy(&self, index: u32, addr: Ipv4Addr) -> anyhow::Result<()> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(addr))
            .flags(NeighbourFlags::Proxy)
            .replace()
            .execute()
            .await?;
        Ok(())
    }

    pub async fn del_proxy(&self, index: u32, addr: Ipv4Addr) -> anyhow::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Proxy;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr,
            )));
        self.handle.neighbours().del(m).execute().await?;
        Ok(())
    }
}

/// A link's state changed (the kernel's `RTNLGRP_LINK` notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// The link as it is now (for a removed link, as it was).
    pub link: Link,
    /// The link was deleted.
    pub removed: bool,
}

/// Subscribe to link notifications: every link added, changed (up, down, carrier)
/// or deleted, as it happens. The netlink socket and the task that reads it live as
/// long as the receiver.
pub fn watch_links() -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>> {
    use futures_util::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::sys::{AsyncSocket, SocketAddr};
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
    let driver = tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                // Nobody listens any more: close the socket.
                _ = tx.closed() => None,
            };
            let Some((m, _)) = next else { break };
            let event = match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => LinkEvent {
                    link: link_of(&l),
                    removed: false,
                },
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => LinkEvent {
                    link: link_of(&l),
                    removed: true,
                },
                _ => continue,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
        driver.abort();
    });
    Ok(rx)
}

/// Turn on IPv4 forwarding (the appliance routes between the tunnel and the subnet).
pub fn enable_forwarding() -> std::io::Result<()> {
    set_sysctl("net/ipv4/ip_forward", "1")
}

pub fn set_sysctl(key: &str, value: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/{key}");
    if std::fs::read_to_string(&path)?.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value)
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        loopback: m.header.flags.contains(LinkFlags::Loopback)
            || m.header.link_layer_type == LinkLayerType::Loopback,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Carrier(c) => l.carrier = l.carrier || *c == 1 && l.up,
            _ => {}
        }
    }
    l
}

fn route_of(m: &RouteMessage) -> Option<Route> {
    let mut table = u32::from(m.header.table);
    let mut r = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix: m.header.destination_prefix_length,
        gateway: None,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)
        && m.header.address_family == AddressFamily::Inet)
        .then_some(r)
}

/// Choose the tenant interface: the named one, else the one holding the default
/// route, else the first non-loopback link with a carrier (in index order). Never
/// the tunnel itself.
pub fn pick_tenant<'a>(
    links: &'a [Link],
    named: Option<&str>,
    default_route_oif: Option<u32>,
    tun_name: &str,
) -> Result<&'a Link, String> {
    if let Some(name) = named {
        return links
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| format!("interface: no link named {name:?} on this VM"));
    }
    if let Some(l) =
        default_route_oif.and_then(|i| links.iter().find(|l| l.index == i && l.name != tun_name))
    {
        return Ok(l);
    }
    // A link with a carrier first; else (a config-drive boot where nothing brought
    // the NIC up, so no carrier shows yet) the first link that is down: we bring it up.
    let mut candidates: Vec<&Link> = links
        .iter()
        .filter(|l| !l.loopback && l.name != tun_name && (l.carrier || !l.up))
        .collect();
    candidates.sort_by_key(|l| (!l.carrier, l.index));
    candidates.first().copied().ok_or_else(|| {
        "interface: no link holds the default route, none has a carrier and none is down"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, carrier: bool, loopback: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mtu: 1500,
            up: carrier,
            carrier,
            loopback,
        }
    }

    #[test]
    fn tenant_interface_choice() {
        let links = vec![
            link(1, "lo", true, true),
            link(2, "eth0", false, false),
            link(3, "eth1", true, false),
            link(4, "cloudpipe0", true, false),
        ];
        assert_eq!(
            pick_tenant(&links, Some("eth0"), Some(3), "cloudpipe0")
                .unwrap()
                .index,
            2
        );
        assert!(pick_tenant(&links, Some("eth9"), None, "cloudpipe0").is_err());
        assert_eq!(
            pick_tenant(&links, None, Some(2), "cloudpipe0")
                .unwrap()
                .index,
            2
        );
        assert_eq!(
            pick_tenant(&links, None, None, "cloudpipe0").unwrap().index,
            3
        );
        // The default route through our own tunnel does not make it the tenant link.
        assert_eq!(
            pick_tenant(&links, None, Some(4), "cloudpipe0")
                .unwrap()
                .index,
            3
        );
        // Only a down NIC (nothing configured it yet): that one.
        assert_eq!(
            pick_tenant(&links[..2], None, None, "cloudpipe0")
                .unwrap()
                .index,
            2
        );
        // Up without carrier (cable out) is not a candidate.
        let mut dead = link(2, "eth0", false, false);
        dead.up = true;
        assert!(pick_tenant(&[links[0].clone(), dead], None, None, "cloudpipe0").is_err());
    }
}
