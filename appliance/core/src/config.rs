//! The appliance configuration carried in the boot payload (format v1).
//!
//! [`ConfigFile`] is the serialized form (JSON member `cloudpipe.json` of the
//! payload zip, documented in docs/payload.md). [`Config`] is what a `ConfigFile`
//! becomes once every field is checked: it cannot hold an address outside the
//! subnet, a malformed key or two peers on one address. Every rejection names the
//! field it is about.

use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::pool::Pool;
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The payload format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// WireGuard's usual tunnel MTU: 1500 minus 80 bytes of IPv6+UDP+WireGuard overhead.
/// The payload's default ceiling; the appliance uses less on a smaller tenant network.
pub const DEFAULT_TUNNEL_MTU: u16 = 1420;
/// What WireGuard adds to a packet on the tenant network: an outer IPv6 header (40
/// bytes), UDP (8) and WireGuard's data header and tag (32). Over IPv4 it is 60; 80
/// fits both, as wg-quick assumes.
pub const WIREGUARD_OVERHEAD: u16 = 80;
/// The tenant network MTU assumed when none is given: Neutron's ML2/OVS with VXLAN,
/// the most common (1500 less 50 of VXLAN). OVN's Geneve networks have 1442, flat and
/// VLAN provider networks 1500; a tunnel made for 1450 also fits 1500.
pub const DEFAULT_TENANT_MTU: u16 = 1450;

/// The tunnel MTU that fits a tenant network of MTU `tenant_mtu`: that less
/// [`WIREGUARD_OVERHEAD`], or `None` when less than [`MIN_MTU`] would be left.
pub fn tunnel_mtu(tenant_mtu: u16) -> Option<u16> {
    tenant_mtu
        .checked_sub(WIREGUARD_OVERHEAD)
        .filter(|m| *m >= MIN_MTU)
}
/// IANA's OpenVPN port, kept from Nova's cloudpipe so security groups and floating IP
/// forwards stay the same.
pub const DEFAULT_LISTEN_PORT: u16 = 1194;
/// Smallest MTU accepted for either interface (IPv4's minimum datagram size).
pub const MIN_MTU: u16 = 576;
/// Largest MTU accepted (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// Peer names end up in file names, metadata values and logs: keep them short and plain.
pub const MAX_NAME_LEN: usize = 32;
/// A DNS name (253) with a port fits.
pub const MAX_ENDPOINT_LEN: usize = 261;

/// How tenant VMs see clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Clients keep their pool address inside the tenant subnet; the appliance answers
    /// ARP for them. Needs the pool in the port's allowed-address-pairs under Neutron.
    #[default]
    ProxyArp,
    /// Client traffic leaves with the appliance's own address (for ports without
    /// allowed-address-pairs); tenant VMs cannot open connections to clients.
    Masquerade,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::ProxyArp => "proxy-arp",
            Mode::Masquerade => "masquerade",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "proxy-arp" => Ok(Mode::ProxyArp),
            "masquerade" => Ok(Mode::Masquerade),
            _ => Err(format!(
                "unknown mode {s:?}: expected proxy-arp or masquerade"
            )),
        }
    }
}

/// The serialized configuration, as written in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub version: u32,
    /// The tenant network's name (informational, and for logs).
    pub network: String,
    /// Tenant subnet, e.g. `10.0.0.0/24` (network address, no host bits).
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The appliance's own address; default: the subnet's second host (`.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Tenant interface name; default: the one holding the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Tunnel (TUN) MTU; default 1420.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Tenant interface MTU; default: leave it as DHCP set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Client pool; default: Nova's top-N-below-broadcast with N = number of peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolFile>,
    /// Extra routes pushed to clients (Nova's `dmz_net/dmz_mask`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub client_to_client: bool,
    /// Where clients connect, `HOST:PORT` (the floating IP); shown by status only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// TCP port of the status and metrics listener on the appliance's tenant
    /// address; unset: no listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u16>,
    pub private_key: String,
    #[serde(default)]
    pub peers: Vec<PeerFile>,
}

impl ConfigFile {
    /// A file of the current version with every optional field at its default
    /// (Nova's pool rule, `.1`/`.2`, port 1194, MTU 1420, proxy ARP) and no peers.
    pub fn new(network: &str, cidr: &str, private_key: &PrivateKey) -> Self {
        ConfigFile {
            version: FORMAT_VERSION,
            network: network.to_string(),
            cidr: cidr.to_string(),
            gateway: None,
            address: None,
            interface: None,
            mtu: None,
            tenant_mtu: None,
            listen_port: None,
            pool: None,
            routes: Vec::new(),
            dns: Vec::new(),
            mode: Mode::default(),
            client_to_client: false,
            endpoint: None,
            status_port: None,
            private_key: private_key.to_base64(),
            peers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFile {
    pub name: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
    pub address: Ipv4Addr,
}

impl From<&Peer> for PeerFile {
    fn from(p: &Peer) -> Self {
        PeerFile {
            name: p.name.clone(),
            public_key: p.public_key.to_base64(),
            preshared_key: p.preshared_key.as_ref().map(|k| k.to_base64()),
            address: p.address,
        }
    }
}

/// A rejected configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub network: String,
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
    pub interface: Option<String>,
    pub mtu: u16,
    pub tenant_mtu: Option<u16>,
    pub listen_port: u16,
    pub pool: Pool,
    pub routes: Vec<Ipv4Network>,
    pub dns: Vec<Ipv4Addr>,
    pub mode: Mode,
    pub client_to_client: bool,
    /// Where clients connect (`HOST:PORT`), if the payload says; informational.
    pub endpoint: Option<String>,
    /// TCP port of the status and metrics listener, if any.
    pub status_port: Option<u16>,
    pub private_key: PrivateKey,
    pub peers: Vec<Peer>,
}

/// One client allowed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub address: Ipv4Addr,
}

impl Peer {
    /// The client as a WireGuard peer of the appliance: its key, preshared key and
    /// its one pool address as allowed IPs (the endpoint is learnt from its packets).
    pub fn peer_config(&self) -> crate::wg::PeerConfig {
        crate::wg::PeerConfig {
            preshared_key: self.preshared_key.clone(),
            ..crate::wg::PeerConfig::new(
                self.public_key,
                vec![ipnetwork::IpNetwork::V4(
                    Ipv4Network::new(self.address, 32).expect("/32 is valid"),
                )],
            )
        }
    }
}

/// Check a peer name: 1-32 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if name.starts_with(['.', '-']) {
        return Err("must not start with '.' or '-'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {c:?} not allowed (use A-Z a-z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// Parse `a.b.c.d/n` strictly: no host bits set.
pub fn parse_cidr(s: &str) -> Result<Ipv4Network, String> {
    let net: Ipv4Network = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not an IPv4 CIDR ({e})"))?;
    if net.ip() != net.network() {
        return Err(format!(
            "{s:?} has host bits set (network is {}/{})",
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

/// Address blocks a tenant subnet can never overlap: hosts there are not reachable
/// neighbours on a Neutron network (IANA special-purpose registry, RFC 6890).
const SPECIAL_BLOCKS: [([u8; 4], u8, &str); 5] = [
    ([0, 0, 0, 0], 8, "\"this network\", RFC 1122"),
    ([127, 0, 0, 0], 8, "loopback, RFC 1122"),
    (
        [169, 254, 0, 0],
        16,
        "link-local and the metadata service, RFC 3927",
    ),
    ([224, 0, 0, 0], 4, "multicast, RFC 5771"),
    ([240, 0, 0, 0], 4, "reserved and broadcast, RFC 1112"),
];

/// A tenant subnet is a unicast range outside [`SPECIAL_BLOCKS`]; the error names
/// the block it overlaps and what to use instead.
pub fn check_unicast_subnet(subnet: Ipv4Network) -> Result<(), String> {
    for (ip, prefix, what) in SPECIAL_BLOCKS {
        let block = Ipv4Network::new(Ipv4Addr::from(ip), prefix).expect("valid block");
        if block.contains(subnet.network()) || subnet.contains(block.network()) {
            return Err(format!(
                "{subnet} overlaps {block} ({what}): a tenant subnet is a unicast range, \
                 such as the private 10.0.0.0/24 (RFC 1918)"
            ));
        }
    }
    Ok(())
}

impl Config {
    /// The fixed addresses clients can never get: gateway and appliance.
    pub fn reserved(&self) -> [(Ipv4Addr, &'static str); 2] {
        [
            (self.gateway, "gateway"),
            (self.address, "appliance address"),
        ]
    }

    /// What clients route through the tunnel: the tenant subnet plus pushed routes.
    pub fn client_allowed_ips(&self) -> Vec<Ipv4Network> {
        let mut v = vec![self.subnet];
        v.extend(self.routes.iter().copied().filter(|r| *r != self.subnet));
        v
    }

    /// The WireGuard device this network's appliance runs: the server role with
    /// the subnet and pushed routes as the clients' destinations.
    pub fn device_config(&self) -> crate::wg::DeviceConfig {
        crate::wg::DeviceConfig {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port,
            fwmark: 0,
            role: crate::wg::Role::Server(crate::wg::ServerPolicy {
                destinations: self
                    .client_allowed_ips()
                    .into_iter()
                    .map(ipnetwork::IpNetwork::V4)
                    .collect(),
                client_to_client: self.client_to_client,
            }),
        }
    }

    pub fn peer_by_key(&self, key: &PublicKey) -> Option<&Peer> {
        self.peers.iter().find(|p| p.public_key == *key)
    }

    pub fn to_file(&self) -> ConfigFile {
        ConfigFile {
            version: FORMAT_VERSION,
            network: self.network.clone(),
            cidr: self.subnet.to_string(),
            gateway: Some(self.gateway),
            address: Some(self.address),
            interface: self.interface.clone(),
            mtu: Some(self.mtu),
            tenant_mtu: self.tenant_mtu,
            listen_port: Some(self.listen_port),
            pool: Some(PoolFile {
                first: self.pool.first(),
                last: self.pool.last(),
            }),
            routes: self.routes.iter().map(|r| r.to_string()).collect(),
            dns: self.dns.clone(),
            mode: self.mode,
            client_to_client: self.client_to_client,
            endpoint: self.endpoint.clone(),
            status_port: self.status_port,
            private_key: self.private_key.to_base64(),
            peers: self.peers.iter().map(PeerFile::from).collect(),
        }
    }

    /// Check that `peers` fit this configuration: names and keys unique and valid,
    /// addresses unique and inside the pool, no peer with the server's own key.
    pub fn check_peers(&self, peers: &[Peer]) -> Result<(), ConfigError> {
        let server_pub = self.private_key.public_key();
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, p) in peers.iter().enumerate() {
            let f = |x: &str| format!("peers[{i}].{x}");
            check_name(&p.name).map_err(|r| err(f("name"), r))?;
            if !names.insert(p.name.as_str()) {
                return Err(err(f("name"), format!("duplicate name {:?}", p.name)));
            }
            if p.public_key.is_low_order() {
                return Err(err(
                    f("public_key"),
                    format!(
                        "{} is a low-order Curve25519 point (all zeros is one): no handshake \
                         can complete with it; use the key `wg pubkey` prints for the \
                         client's private key",
                        p.public_key
                    ),
                ));
            }
            if p.public_key == server_pub {
                return Err(err(f("public_key"), "is the server's own public key"));
            }
            if !keys.insert(p.public_key) {
                return Err(err(f("public_key"), "duplicate public key"));
            }
            if !self.pool.contains(p.address) {
                return Err(err(
                    f("address"),
                    format!(
                        "{} is outside the client pool {}-{}",
                        p.address,
                        self.pool.first(),
                        self.pool.last()
                    ),
                ));
            }
            if !addrs.insert(p.address) {
                return Err(err(
                    f("address"),
                    format!("{} is given to two peers", p.address),
                ));
            }
        }
        Ok(())
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = ConfigError;

    fn try_from(f: ConfigFile) -> Result<Self, ConfigError> {
        if f.version != FORMAT_VERSION {
            return Err(err(
                "version",
                format!(
                    "format version {} is not supported (this build reads {FORMAT_VERSION})",
                    f.version
                ),
            ));
        }
        check_name(&f.network).map_err(|r| err("network", r))?;
        let subnet = parse_cidr(&f.cidr).map_err(|r| err("cidr", r))?;
        if subnet.prefix() > 29 {
            return Err(err(
                "cidr",
                format!(
                    "/{} leaves no room for gateway, appliance and clients (at most /29)",
                    subnet.prefix()
                ),
            ));
        }
        check_unicast_subnet(subnet).map_err(|r| err("cidr", r))?;
        let host = |n: u32| Ipv4Addr::from(u32::from(subnet.network()) + n);
        let in_subnet = |field: &str, a: Ipv4Addr| -> Result<Ipv4Addr, ConfigError> {
            if !subnet.contains(a) {
                return Err(err(field, format!("{a} is outside {subnet}")));
            }
            if a == subnet.network() || a == subnet.broadcast() {
                return Err(err(
                    field,
                    format!("{a} is the network or broadcast address of {subnet}"),
                ));
            }
            Ok(a)
        };
        let gateway = in_subnet("gateway", f.gateway.unwrap_or(host(1)))?;
        let address = in_subnet("address", f.address.unwrap_or(host(2)))?;
        if address == gateway {
            return Err(err("address", format!("{address} is also the gateway")));
        }
        if let Some(name) = &f.interface {
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ' '])
                || name == "."
                || name == ".."
            {
                return Err(err(
                    "interface",
                    format!("{name:?} is not a valid interface name"),
                ));
            }
        }
        let mtu_ok = |field: &str, m: u16| {
            if (MIN_MTU..=MAX_MTU).contains(&m) {
                Ok(m)
            } else {
                Err(err(field, format!("{m} is outside {MIN_MTU}..={MAX_MTU}")))
            }
        };
        let mtu = mtu_ok("mtu", f.mtu.unwrap_or(DEFAULT_TUNNEL_MTU))?;
        let tenant_mtu = f.tenant_mtu.map(|m| mtu_ok("tenant_mtu", m)).transpose()?;
        let listen_port = f.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
        if listen_port == 0 {
            return Err(err("listen_port", "must not be 0"));
        }
        if f.status_port == Some(0) {
            return Err(err(
                "status_port",
                "must not be 0 (leave it out for no status listener)",
            ));
        }
        if let Some(e) = &f.endpoint {
            if e.is_empty()
                || e.len() > MAX_ENDPOINT_LEN
                || e.contains(|c: char| c.is_whitespace() || c.is_control())
            {
                return Err(err(
                    "endpoint",
                    format!(
                        "{e:?} is not HOST:PORT (at most {MAX_ENDPOINT_LEN} characters, no spaces)"
                    ),
                ));
            }
        }
        let reserved = [(gateway, "gateway"), (address, "appliance address")];
        let pool = match f.pool {
            Some(p) => Pool::new(p.first, p.last, subnet, &reserved),
            None => Pool::nova_default(subnet, f.peers.len().max(1) as u32, &reserved),
        }
        .map_err(|e| err("pool", e))?;
        let routes = f
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| parse_cidr(r).map_err(|e| err(format!("routes[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let private_key: PrivateKey = f.private_key.parse().map_err(|e| err("private_key", e))?;
        let mut peers = Vec::with_capacity(f.peers.len());
        for (i, p) in f.peers.into_iter().enumerate() {
            let public_key = p
                .public_key
                .parse()
                .map_err(|e| err(format!("peers[{i}].public_key"), e))?;
            let preshared_key = p
                .preshared_key
                .map(|k| k.parse())
                .transpose()
                .map_err(|e| err(format!("peers[{i}].preshared_key"), e))?;
            peers.push(Peer {
                name: p.name,
                public_key,
                preshared_key,
                address: p.address,
            });
        }
        let config = Config {
            network: f.network,
            subnet,
            gateway,
            address,
            interface: f.interface,
            mtu,
            tenant_mtu,
            listen_port,
            pool,
            routes,
            dns: f.dns,
            mode: f.mode,
            client_to_client: f.client_to_client,
            endpoint: f.endpoint,
            status_port: f.status_port,
            private_key,
            peers: Vec::new(),
        };
        config.check_peers(&peers)?;
        Ok(Config { peers, ..config })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid file with two peers on a /24, for tests across the crate.
    pub(crate) fn sample_file() -> ConfigFile {
        let key = |b: u8| PrivateKey::from_bytes([b; 32]);
        ConfigFile {
            pool: Some(PoolFile {
                first: "10.0.0.250".parse().unwrap(),
                last: "10.0.0.254".parse().unwrap(),
            }),
            routes: vec!["192.168.50.0/24".into()],
            dns: vec!["10.0.0.1".parse().unwrap()],
            peers: vec![
                PeerFile {
                    name: "alice".into(),
                    public_key: key(2).public_key().to_base64(),
                    preshared_key: Some(PresharedKey::from_bytes([9; 32]).to_base64()),
                    address: "10.0.0.250".parse().unwrap(),
                },
                PeerFile {
                    name: "bob".into(),
                    public_key: key(3).public_key().to_base64(),
                    preshared_key: None,
                    address: "10.0.0.251".parse().unwrap(),
                },
            ],
            ..ConfigFile::new("net1", "10.0.0.0/24", &key(1))
        }
    }

    fn rejected(f: ConfigFile) -> ConfigError {
        Config::try_from(f).expect_err("config should be rejected")
    }

    #[test]
    fn defaults_follow_nova() {
        let c = Config::try_from(sample_file()).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.address, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(c.listen_port, 1194);
        assert_eq!(c.mtu, 1420);
        let mut f = sample_file();
        f.pool = None;
        f.peers[0].address = "10.0.0.253".parse().unwrap();
        f.peers[1].address = "10.0.0.254".parse().unwrap();
        let c = Config::try_from(f).unwrap();
        assert_eq!(
            (c.pool.first(), c.pool.len()),
            (Ipv4Addr::new(10, 0, 0, 253), 2)
        );
    }

    #[test]
    fn new_file_is_valid_with_every_default() {
        let c = Config::try_from(ConfigFile::new(
            "n",
            "10.9.0.0/24",
            &PrivateKey::from_bytes([1; 32]),
        ))
        .unwrap();
        assert_eq!(
            (c.gateway, c.address),
            (Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 2))
        );
        assert_eq!((c.listen_port, c.mtu, c.mode), (1194, 1420, Mode::ProxyArp));
        assert_eq!(
            (c.pool.first(), c.pool.len()),
            (Ipv4Addr::new(10, 9, 0, 254), 1)
        );
        assert!(c.peers.is_empty() && c.routes.is_empty() && !c.client_to_client);
    }

    #[test]
    fn round_trips_through_file() {
        let c = Config::try_from(sample_file()).unwrap();
        assert_eq!(Config::try_from(c.to_file()).unwrap(), c);
        let mut f = sample_file();
        f.endpoint = Some("203.0.113.10:1194".into());
        f.status_port = Some(9100);
        let c = Config::try_from(f).unwrap();
        assert_eq!(c.status_port, Some(9100));
        assert_eq!(Config::try_from(c.to_file()).unwrap(), c);
    }

    #[test]
    fn a_tenant_subnet_is_unicast() {
        for (cidr, block) in [
            ("0.0.0.0/0", "0.0.0.0/8"),
            ("0.0.0.0/24", "0.0.0.0/8"),
            ("127.0.0.0/24", "127.0.0.0/8"),
            ("169.254.0.0/16", "169.254.0.0/16"),
            ("224.0.0.0/24", "224.0.0.0/4"),
            ("255.255.255.0/24", "240.0.0.0/4"),
            ("128.0.0.0/1", "169.254.0.0/16"),
        ] {
            let mut f = sample_file();
            f.cidr = cidr.into();
            let e = rejected(f);
            assert_eq!(e.field, "cidr", "{cidr}");
            assert!(e.to_string().contains(block), "{cidr}: {e}");
            assert!(e.to_string().contains("RFC 1918"), "{cidr}: {e}");
        }
        for cidr in [
            "10.0.0.0/24",
            "172.16.5.0/24",
            "192.168.1.0/24",
            "100.64.0.0/24",
            "8.8.8.0/24",
        ] {
            assert_eq!(
                check_unicast_subnet(cidr.parse().unwrap()),
                Ok(()),
                "{cidr}"
            );
        }
    }

    #[test]
    fn rejections_name_the_field() {
        let mut f = sample_file();
        f.version = 2;
        assert_eq!(rejected(f).field, "version");
        let mut f = sample_file();
        f.cidr = "10.0.0.5/24".into();
        assert_eq!(rejected(f).field, "cidr");
        let mut f = sample_file();
        f.address = Some("10.0.1.2".parse().unwrap());
        assert_eq!(rejected(f).field, "address");
        let mut f = sample_file();
        f.gateway = Some("10.0.0.2".parse().unwrap());
        assert_eq!(rejected(f).field, "address");
        let mut f = sample_file();
        f.peers[1].address = f.peers[0].address;
        assert_eq!(rejected(f).field, "peers[1].address");
        let mut f = sample_file();
        f.peers[1].address = "10.0.0.9".parse().unwrap();
        assert_eq!(rejected(f).field, "peers[1].address");
        let mut f = sample_file();
        f.peers[1].public_key = f.peers[0].public_key.clone();
        assert_eq!(rejected(f).field, "peers[1].public_key");
        let mut f = sample_file();
        f.peers[0].public_key = "short".into();
        assert_eq!(rejected(f).field, "peers[0].public_key");
        let mut f = sample_file();
        f.peers[0].name = "../etc".into();
        assert_eq!(rejected(f).field, "peers[0].name");
        let mut f = sample_file();
        f.private_key = "x".into();
        assert_eq!(rejected(f).field, "private_key");
        let mut f = sample_file();
        f.routes.push("300.0.0.0/8".into());
        assert_eq!(rejected(f).field, "routes[1]");
        let mut f = sample_file();
        f.mtu = Some(100);
        assert_eq!(rejected(f).field, "mtu");
        let mut f = sample_file();
        f.status_port = Some(0);
        assert_eq!(rejected(f).field, "status_port");
        let mut f = sample_file();
        f.endpoint = Some("vpn example:1194".into());
        assert_eq!(rejected(f).field, "endpoint");
        let mut f = sample_file();
        f.pool = Some(PoolFile {
            first: "10.0.0.2".parse().unwrap(),
            last: "10.0.0.20".parse().unwrap(),
        });
        assert_eq!(rejected(f).field, "pool");
        let mut f = sample_file();
        f.peers[0].public_key = PrivateKey::from_bytes([1; 32]).public_key().to_base64();
        assert_eq!(rejected(f).field, "peers[0].public_key");
    }

    #[test]
    fn tunnel_mtu_leaves_room_for_wireguard() {
        assert_eq!(tunnel_mtu(1500), Some(DEFAULT_TUNNEL_MTU));
        assert_eq!(tunnel_mtu(DEFAULT_TENANT_MTU), Some(1370));
        assert_eq!(tunnel_mtu(1442), Some(1362));
        assert_eq!(tunnel_mtu(MIN_MTU + WIREGUARD_OVERHEAD), Some(MIN_MTU));
        assert_eq!(tunnel_mtu(MIN_MTU + WIREGUARD_OVERHEAD - 1), None);
        assert_eq!(tunnel_mtu(40), None);
    }

    #[test]
    fn unknown_json_fields_are_rejected() {
        let mut v = serde_json::to_value(sample_file()).unwrap();
        v["surprise"] = 1.into();
        let e = serde_json::from_value::<ConfigFile>(v).unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");
    }
}
