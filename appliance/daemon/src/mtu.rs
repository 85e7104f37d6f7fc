//! The tunnel's MTU: what the tenant network carries less WireGuard's overhead, never
//! more than the payload allows.
//!
//! A WireGuard packet on the tenant network is the inner packet plus
//! [`WIREGUARD_OVERHEAD`] (80 bytes with an IPv6-capable outer path). A tunnel MTU of
//! 1420 on a VXLAN network of MTU 1450 makes every full-size packet 1500 bytes on a
//! 1450-byte link: fragmented, or lost where DF is set. So the tunnel MTU is taken from
//! the tenant link, whose MTU comes, in order of trust, from the payload's
//! `tenant_mtu` (which the daemon set on the NIC), or the smaller of the NIC's MTU and
//! Neutron's network MTU in `network_data.json` (a NIC nothing configured keeps 1500 and
//! cannot tell; DHCP option 26 or the hypervisor set it otherwise). The payload's `mtu`
//! is a ceiling: it is what clients' configs say.

use cloudpipe_core::config::{MIN_MTU, WIREGUARD_OVERHEAD};

/// Where the tenant link's MTU was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSource {
    /// The payload's `tenant_mtu`.
    Payload,
    /// The NIC's own MTU.
    Nic,
    /// `network_data.json`: lower than the NIC's.
    NetworkData,
}

impl std::fmt::Display for LinkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkSource::Payload => "payload tenant_mtu",
            LinkSource::Nic => "the NIC",
            LinkSource::NetworkData => "network_data.json",
        })
    }
}

/// The tunnel MTU and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The TUN device's MTU.
    pub tunnel: u16,
    /// The tenant link's MTU it was derived from.
    pub link: u32,
    pub source: LinkSource,
    /// The payload's `mtu`: what clients' configs were made with.
    pub ceiling: u16,
}

impl Choice {
    /// What the link carries inside WireGuard (may be below [`MIN_MTU`] on an absurd link).
    pub fn fits(&self) -> u32 {
        self.link.saturating_sub(u32::from(WIREGUARD_OVERHEAD))
    }

    /// The payload allows more than the link carries: clients with the payload's MTU
    /// will send packets that do not fit (the tunnel uses less, they do not know).
    pub fn clients_too_large(&self) -> bool {
        u32::from(self.ceiling) > self.fits()
    }
}

/// Choose the tunnel MTU: the tenant link's MTU (see the module docs) less
/// [`WIREGUARD_OVERHEAD`], at most `ceiling`, at least [`MIN_MTU`].
pub fn choose(
    ceiling: u16,
    payload_tenant_mtu: Option<u16>,
    nic: u32,
    network_data: Option<u32>,
) -> Choice {
    let (link, source) = match (payload_tenant_mtu, network_data) {
        (Some(t), _) => (u32::from(t), LinkSource::Payload),
        (None, Some(n)) if n > 0 && n < nic => (n, LinkSource::NetworkData),
        _ => (nic, LinkSource::Nic),
    };
    let fits = link.saturating_sub(u32::from(WIREGUARD_OVERHEAD));
    let tunnel = u32::from(ceiling).min(fits).max(u32::from(MIN_MTU));
    Choice {
        tunnel: u16::try_from(tunnel).expect("at most the payload's u16 ceiling"),
        link,
        source,
        ceiling,
    }
}

/// Choose for the booting appliance ([`choose`], `network_data.json` matched by the
/// NIC's MAC) and log what was chosen and why.
pub fn for_tenant(
    config: &cloudpipe_core::config::Config,
    ifname: &str,
    nic: u32,
    mac: Option<&str>,
    network_data: Option<&[u8]>,
) -> Choice {
    let from_network_data = network_data.and_then(|doc| {
        match cloudpipe_core::metadata::link_mtu(doc, mac.unwrap_or_default()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring network_data.json");
                None
            }
        }
    });
    let c = choose(config.mtu, config.tenant_mtu, nic, from_network_data);
    tracing::info!(interface = %ifname, tunnel_mtu = c.tunnel, link_mtu = c.link, from = %c.source, nic_mtu = nic, network_data_mtu = ?from_network_data, payload_mtu = c.ceiling, "tunnel MTU: the tenant link's less {WIREGUARD_OVERHEAD} bytes of WireGuard, at most the payload's");
    if c.clients_too_large() {
        tracing::warn!(
            payload_mtu = c.ceiling,
            link_mtu = c.link,
            tunnel_mtu = c.tunnel,
            "the payload's MTU {} (what clients' configs say) does not fit the tenant network's {}: \
             clients' full-size packets will be fragmented; give them configs made with \
             `cloudpipe network create --mtu {}`",
            c.ceiling,
            c.link,
            c.link
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunnel_fits_the_tenant_network() {
        // A 1420 payload on VXLAN (1450), Geneve (1442) and flat (1500) networks.
        assert_eq!(choose(1420, None, 1450, None).tunnel, 1370);
        assert_eq!(choose(1420, None, 1442, None).tunnel, 1362);
        let c = choose(1420, None, 1500, None);
        assert_eq!(
            (c.tunnel, c.source, c.clients_too_large()),
            (1420, LinkSource::Nic, false)
        );
        // Clients made for 1450 on a 1500 network: the payload's ceiling holds.
        assert_eq!(choose(1370, None, 1500, None).tunnel, 1370);
        assert!(choose(1420, None, 1450, None).clients_too_large());
        assert!(!choose(1370, None, 1450, None).clients_too_large());
    }

    #[test]
    fn network_data_speaks_for_a_nic_that_cannot_tell() {
        // Nothing configured the NIC: 1500; Neutron says 1442.
        let c = choose(1420, None, 1500, Some(1442));
        assert_eq!(
            (c.tunnel, c.link, c.source),
            (1362, 1442, LinkSource::NetworkData)
        );
        // A NIC already smaller than network_data.json says is believed.
        let c = choose(1420, None, 1442, Some(1500));
        assert_eq!((c.tunnel, c.source), (1362, LinkSource::Nic));
        // The payload's tenant_mtu (set on the NIC) wins.
        let c = choose(1420, Some(1400), 1500, Some(1442));
        assert_eq!((c.tunnel, c.source), (1320, LinkSource::Payload));
    }

    #[test]
    fn never_below_the_minimum() {
        let c = choose(1420, None, 600, None);
        assert_eq!(c.tunnel, MIN_MTU);
        assert!(c.clients_too_large());
    }
}
