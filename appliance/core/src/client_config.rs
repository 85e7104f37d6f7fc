//! Client configs: the standard wg-quick file a user imports into any WireGuard
//! client (wg-quick, wireguard-go + wg, the mobile apps), and `wg-quick strip`, which
//! turns it into what `wg setconf` accepts.

use crate::config::Config;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use ipnetwork::Ipv4Network;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Clients behind NAT keep their mapping open with a keepalive this often (seconds),
/// the value WireGuard's documentation recommends.
pub const PERSISTENT_KEEPALIVE: u16 = 25;

/// Longest interface name Linux takes: IFNAMSIZ (16) less the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;

/// The interface (and config file) name to suggest for a tunnel to these networks:
/// their names joined by `+`, cut to [`MAX_INTERFACE_NAME`] characters, so that
/// [`crate::wg_quick::interface_name`] takes it (wg-quick and the mobile apps name
/// the tunnel after the file). Network names are already made of allowed characters.
pub fn suggested_interface_name<S: AsRef<str>>(networks: &[S]) -> String {
    let joined: Vec<&str> = networks.iter().map(AsRef::as_ref).collect();
    let mut name: String = joined
        .join("+")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_=+.-".contains(*c))
        .take(MAX_INTERFACE_NAME)
        .collect();
    if name.is_empty() {
        name = "cloudpipe".into();
    }
    name
}

/// The client's own key: held by the CLI, or made on the user's device (only its
/// public half was registered, as the WireGuard apps do it).
#[derive(Debug, Clone)]
pub enum ClientKey {
    Private(PrivateKey),
    OnDevice(PublicKey),
}

impl ClientKey {
    pub fn public_key(&self) -> PublicKey {
        match self {
            ClientKey::Private(k) => k.public_key(),
            ClientKey::OnDevice(p) => *p,
        }
    }
}

/// One appliance the client talks to: a `[Peer]` section.
#[derive(Debug, Clone)]
pub struct ServerPeer {
    /// The network's name (a comment in configs for several networks).
    pub network: String,
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// `host:port` of the appliance's floating IP.
    pub endpoint: String,
    /// The network's subnet and pushed routes.
    pub allowed_ips: Vec<Ipv4Network>,
}

/// The client's part in one network: the network, its address there, the preshared
/// key shared with that appliance and the endpoint (`host:port`).
#[derive(Debug, Clone)]
pub struct Membership<'a> {
    pub network: &'a Config,
    pub address: Ipv4Addr,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: String,
}

/// Why one tunnel cannot reach a set of networks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// One destination would be routed to two appliances.
    #[error("network {a}'s {a_what} {a_net} overlaps network {b}'s {b_what} {b_net}: one tunnel cannot route both")]
    Overlap {
        a: String,
        a_what: &'static str,
        a_net: Ipv4Network,
        b: String,
        b_what: &'static str,
        b_net: Ipv4Network,
    },
    /// The kernel sends traffic for routes outside every subnet from the tunnel's
    /// first address: only one network's appliance accepts it.
    #[error("networks {a} and {b} both push routes outside their subnets ({a_net}, {b_net}): one tunnel sends such traffic from a single address, which only one of the two appliances accepts; give the user a separate tunnel (another client name) for one of them")]
    RoutesFromTwoNetworks {
        a: String,
        a_net: Ipv4Network,
        b: String,
        b_net: Ipv4Network,
    },
    #[error("a tunnel needs at least one network")]
    NoNetwork,
}

/// Everything one client's config holds: one `[Interface]`, one `[Peer]` per
/// appliance.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Interface addresses: the pool address as a /32 for one network; for several,
    /// each with its subnet's prefix length, so the kernel's connected route gives
    /// traffic to each subnet that network's address as its source (routes without
    /// a source address, as wg-quick adds them, use the first one).
    pub addresses: Vec<Ipv4Network>,
    pub key: ClientKey,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub peers: Vec<ServerPeer>,
}

impl ClientConfig {
    /// A client of `network` at `address`; the endpoint is `host:port`.
    pub fn for_network(
        network: &Config,
        address: Ipv4Addr,
        private_key: PrivateKey,
        preshared_key: Option<PresharedKey>,
        endpoint: String,
    ) -> Self {
        Self::for_networks(
            ClientKey::Private(private_key),
            &[Membership {
                network,
                address,
                preshared_key,
                endpoint,
            }],
        )
        .expect("one network never overlaps itself")
    }

    /// One tunnel to every network in `members`: refused when a destination (subnet
    /// or pushed route) of one network overlaps one of another, or when two networks
    /// push routes outside their subnets. The network pushing such routes comes
    /// first (its address is the one those routes leave with); the rest keep their
    /// order. The MTU is the smallest of the networks', DNS servers are all of theirs.
    pub fn for_networks(key: ClientKey, members: &[Membership]) -> Result<Self, TunnelError> {
        let first = members.first().ok_or(TunnelError::NoNetwork)?;
        let what = |m: &Membership, n: &Ipv4Network| {
            if *n == m.network.subnet {
                "subnet"
            } else {
                "route"
            }
        };
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                for an in a.network.client_allowed_ips() {
                    if let Some(bn) = b
                        .network
                        .client_allowed_ips()
                        .into_iter()
                        .find(|bn| an.overlaps(*bn))
                    {
                        return Err(TunnelError::Overlap {
                            a: a.network.network.clone(),
                            a_what: what(a, &an),
                            a_net: an,
                            b: b.network.network.clone(),
                            b_what: what(b, &bn),
                            b_net: bn,
                        });
                    }
                }
            }
        }
        let outside = |m: &Membership| {
            m.network
                .routes
                .iter()
                .copied()
                .find(|r| !r.is_subnet_of(m.network.subnet))
        };
        let pushing: Vec<(&Membership, Ipv4Network)> = members
            .iter()
            .filter_map(|m| outside(m).map(|r| (m, r)))
            .collect();
        if let [(a, a_net), (b, b_net), ..] = pushing[..] {
            return Err(TunnelError::RoutesFromTwoNetworks {
                a: a.network.network.clone(),
                a_net,
                b: b.network.network.clone(),
                b_net,
            });
        }
        let mut ordered: Vec<&Membership> = members.iter().collect();
        ordered.sort_by_key(|m| outside(m).is_none());
        let several = members.len() > 1;
        let mtu = members
            .iter()
            .map(|m| m.network.mtu)
            .min()
            .unwrap_or(first.network.mtu);
        let mut dns = Vec::new();
        for d in members.iter().flat_map(|m| &m.network.dns) {
            if !dns.contains(d) {
                dns.push(*d);
            }
        }
        Ok(ClientConfig {
            addresses: ordered
                .iter()
                .map(|m| {
                    let prefix = if several {
                        m.network.subnet.prefix()
                    } else {
                        32
                    };
                    Ipv4Network::new(m.address, prefix).expect("a prefix of at most 32")
                })
                .collect(),
            key,
            dns,
            // Always written: wg-quick's own guess (the route to the endpoint less
            // 80) knows nothing of the tenant network behind the appliance.
            mtu: Some(mtu),
            peers: ordered
                .iter()
                .map(|m| ServerPeer {
                    network: m.network.network.clone(),
                    public_key: m.network.private_key.public_key(),
                    preshared_key: m.preshared_key.clone(),
                    endpoint: m.endpoint.clone(),
                    allowed_ips: m.network.client_allowed_ips(),
                })
                .collect(),
        })
    }

    /// The wg-quick file. A key made on the device appears as a placeholder that
    /// wg-quick and the apps refuse until the user puts the key in.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let join = |v: Vec<String>| v.join(", ");
        let _ = writeln!(s, "[Interface]");
        let _ = writeln!(
            s,
            "Address = {}",
            join(self.addresses.iter().map(|a| a.to_string()).collect())
        );
        match &self.key {
            ClientKey::Private(k) => {
                let _ = writeln!(s, "PrivateKey = {}", k.to_base64());
            }
            ClientKey::OnDevice(p) => {
                let _ = writeln!(
                    s,
                    "# This key was made on your device and never left it: put it here."
                );
                let _ = writeln!(s, "PrivateKey = {}", placeholder(p));
            }
        }
        if !self.dns.is_empty() {
            let _ = writeln!(
                s,
                "DNS = {}",
                join(self.dns.iter().map(|d| d.to_string()).collect())
            );
        }
        if let Some(mtu) = self.mtu {
            let _ = writeln!(s, "MTU = {mtu}");
        }
        for p in &self.peers {
            let _ = writeln!(s);
            if self.peers.len() > 1 {
                let _ = writeln!(s, "# network {}", p.network);
            }
            let _ = writeln!(s, "[Peer]");
            let _ = writeln!(s, "PublicKey = {}", p.public_key);
            if let Some(psk) = &p.preshared_key {
                let _ = writeln!(s, "PresharedKey = {}", psk.to_base64());
            }
            let _ = writeln!(s, "Endpoint = {}", p.endpoint);
            let _ = writeln!(
                s,
                "AllowedIPs = {}",
                join(p.allowed_ips.iter().map(|n| n.to_string()).collect())
            );
            let _ = writeln!(s, "PersistentKeepalive = {PERSISTENT_KEEPALIVE}");
        }
        s
    }
}

/// Where a client's endpoint lies against the networks its config routes into the
/// tunnel (`AllowedIPs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointRoute {
    /// An address outside them, or IPv6 (the tunnel carries IPv4 only).
    Outside,
    /// An IPv4 address inside this one: the client would send its own encrypted
    /// packets into the tunnel, where they loop (nothing passes, the link fills).
    /// wg-quick and the WireGuard apps exclude the endpoint from a default route
    /// (`0.0.0.0/0`) only, so that one is not counted.
    Inside(Ipv4Network),
    /// A name: where it resolves is not known here.
    Name(String),
}

/// Check an endpoint (`HOST:PORT`, `[IPV6]:PORT`, or a bare host) against `allowed_ips`.
pub fn endpoint_route(endpoint: &str, allowed_ips: &[Ipv4Network]) -> EndpointRoute {
    let host = if endpoint.starts_with('[') {
        return EndpointRoute::Outside;
    } else {
        endpoint
            .rsplit_once(':')
            .map_or(endpoint, |(h, _)| h)
            .trim()
    };
    match host.parse::<Ipv4Addr>() {
        Ok(ip) => allowed_ips
            .iter()
            .find(|n| n.prefix() > 0 && n.contains(ip))
            .map_or(EndpointRoute::Outside, |n| EndpointRoute::Inside(*n)),
        Err(_) if host.parse::<std::net::Ipv6Addr>().is_ok() => EndpointRoute::Outside,
        Err(_) => EndpointRoute::Name(host.to_string()),
    }
}

/// What stands for a private key the CLI never had (`PrivateKey = ...`): no base64
/// key, so wg-quick, `wg setconf` and the apps refuse the file until it is replaced.
pub fn placeholder(public_key: &PublicKey) -> String {
    format!("<the private key of {public_key}>")
}

/// The `[Interface]` keys only wg-quick understands (`wg-quick strip` removes them).
const WG_QUICK_ONLY: [&str; 9] = [
    "address",
    "dns",
    "mtu",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
];

/// `wg-quick strip`: drop wg-quick-only keys, comments and blank lines.
pub fn strip(conf: &str) -> String {
    let mut out = String::new();
    let mut in_interface = false;
    for raw in conf.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            in_interface = line.eq_ignore_ascii_case("[interface]");
        } else if in_interface {
            let key = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if WG_QUICK_ONLY.contains(&key.as_str()) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_file;

    fn sample() -> ClientConfig {
        let net = Config::try_from(sample_file()).unwrap();
        ClientConfig::for_network(
            &net,
            "10.0.0.252".parse().unwrap(),
            PrivateKey::from_bytes([5; 32]),
            Some(PresharedKey::from_bytes([6; 32])),
            "198.51.100.7:1194".into(),
        )
    }

    #[test]
    fn renders_a_wg_quick_file() {
        let c = sample();
        let text = c.render();
        assert!(text.contains("Address = 10.0.0.252/32\n"));
        let ClientKey::Private(key) = &c.key else {
            panic!("a held key")
        };
        assert!(text.contains(&format!("PrivateKey = {}\n", key.to_base64())));
        assert!(text.contains("DNS = 10.0.0.1\n"));
        assert!(text.contains(&format!("PublicKey = {}\n", c.peers[0].public_key)));
        assert!(text.contains("Endpoint = 198.51.100.7:1194\n"));
        assert!(text.contains("AllowedIPs = 10.0.0.0/24, 192.168.50.0/24\n"));
        assert!(text.contains("PersistentKeepalive = 25\n"));
        assert!(
            text.contains("MTU = 1420\n"),
            "the MTU is always written: {text}"
        );
    }

    #[test]
    fn optional_lines_follow_the_network() {
        let mut c = sample();
        c.dns.clear();
        c.peers[0].preshared_key = None;
        c.mtu = Some(1380);
        let text = c.render();
        assert!(!text.contains("DNS"), "{text}");
        assert!(!text.contains("PresharedKey"), "{text}");
        assert!(text.contains("MTU = 1380\n"), "{text}");
        let mut f = sample_file();
        f.mtu = Some(1280);
        f.routes = vec!["10.0.0.0/24".into()];
        let net = Config::try_from(f).unwrap();
        let c = ClientConfig::for_network(
            &net,
            "10.0.0.250".parse().unwrap(),
            PrivateKey::from_bytes([5; 32]),
            None,
            "vpn:1194".into(),
        );
        assert_eq!(c.mtu, Some(1280));
        assert_eq!(
            c.peers[0].allowed_ips,
            vec!["10.0.0.0/24".parse::<Ipv4Network>().unwrap()],
            "a route equal to the subnet is not repeated"
        );
        assert_eq!(c.peers[0].public_key, net.private_key.public_key());
    }

    #[test]
    fn rendered_sections_and_keys_come_in_wg_quick_order() {
        let text = sample().render();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split(" = ").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "[Interface]",
                "Address",
                "PrivateKey",
                "DNS",
                "MTU",
                "[Peer]",
                "PublicKey",
                "PresharedKey",
                "Endpoint",
                "AllowedIPs",
                "PersistentKeepalive"
            ]
        );
    }

    #[test]
    fn strip_drops_every_wg_quick_key_and_only_in_interface() {
        let conf = "\
[Interface]
Address = 10.0.0.2/32, fd00::2/128
DNS = 10.0.0.1
MTU = 1380
Table = off
PreUp = echo pre-up
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PreDown = echo pre-down
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = true
  privatekey   =   abc
ListenPort = 51820
FwMark = 0x42

[Peer]
PublicKey = def # the server
AllowedIPs = 0.0.0.0/0
";
        assert_eq!(
            strip(conf),
            "[Interface]\nprivatekey   =   abc\nListenPort = 51820\nFwMark = 0x42\n\
             [Peer]\nPublicKey = def\nAllowedIPs = 0.0.0.0/0\n"
        );
        // Outside [Interface] the same names are left for wg to judge.
        assert_eq!(strip("[Peer]\nDNS = x\n"), "[Peer]\nDNS = x\n");
        // Section names and keys are matched without regard to case, as wg does.
        assert_eq!(
            strip("[interface]\naddress = 1\nMtu = 2\n"),
            "[interface]\n"
        );
    }

    /// A network named `name` on `cidr` (its .1 gateway, .2 appliance) pushing
    /// `routes`, with `mtu` and `dns`.
    fn network(name: &str, cidr: &str, routes: &[&str], mtu: u16, dns: &[&str]) -> Config {
        let mut b = [0u8; 32];
        b[..name.len()].copy_from_slice(name.as_bytes());
        Config::try_from(crate::config::ConfigFile {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            mtu: Some(mtu),
            dns: dns.iter().map(|d| d.parse().unwrap()).collect(),
            ..crate::config::ConfigFile::new(name, cidr, &PrivateKey::from_bytes(b))
        })
        .unwrap()
    }

    fn member<'a>(n: &'a Config, last: u8) -> Membership<'a> {
        let o = n.subnet.network().octets();
        Membership {
            network: n,
            address: Ipv4Addr::new(o[0], o[1], o[2], last),
            preshared_key: Some(PresharedKey::from_bytes([last; 32])),
            endpoint: format!("{}.example:1194", n.network),
        }
    }

    #[test]
    fn one_tunnel_to_several_networks_has_a_peer_each() {
        let web = network("web", "10.1.0.0/24", &[], 1420, &["10.1.0.1"]);
        let db = network(
            "db",
            "10.2.0.0/16",
            &["10.2.0.0/16"],
            1380,
            &["10.1.0.1", "10.2.0.1"],
        );
        let key = PrivateKey::from_bytes([9; 32]);
        let c = ClientConfig::for_networks(
            ClientKey::Private(key.clone()),
            &[member(&web, 250), member(&db, 254)],
        )
        .unwrap();
        let text = c.render();
        assert_eq!(
            text,
            format!(
                "[Interface]\n\
                 Address = 10.1.0.250/24, 10.2.0.254/16\n\
                 PrivateKey = {}\n\
                 DNS = 10.1.0.1, 10.2.0.1\n\
                 MTU = 1380\n\n\
                 # network web\n[Peer]\nPublicKey = {}\nPresharedKey = {}\n\
                 Endpoint = web.example:1194\nAllowedIPs = 10.1.0.0/24\nPersistentKeepalive = 25\n\n\
                 # network db\n[Peer]\nPublicKey = {}\nPresharedKey = {}\n\
                 Endpoint = db.example:1194\nAllowedIPs = 10.2.0.0/16\nPersistentKeepalive = 25\n",
                key.to_base64(),
                web.private_key.public_key(),
                PresharedKey::from_bytes([250; 32]).to_base64(),
                db.private_key.public_key(),
                PresharedKey::from_bytes([254; 32]).to_base64(),
            )
        );
        // `cloudpipe up` reads it back: two peers, both addresses.
        let w = crate::wg_quick::parse(&text).unwrap();
        assert_eq!(w.peers.len(), 2);
        assert_eq!(w.interface.addresses.len(), 2);
        // wg-quick strip leaves what `wg setconf` takes: two peers, no comments.
        let stripped = strip(&text);
        assert_eq!(stripped.matches("[Peer]").count(), 2);
        assert!(!stripped.contains('#') && !stripped.contains("Address"));
    }

    #[test]
    fn the_network_pushing_routes_comes_first() {
        let web = network("web", "10.1.0.0/24", &[], 1420, &[]);
        let db = network("db", "10.2.0.0/24", &["192.168.50.0/24"], 1420, &[]);
        let c = ClientConfig::for_networks(
            ClientKey::Private(PrivateKey::from_bytes([9; 32])),
            &[member(&web, 250), member(&db, 250)],
        )
        .unwrap();
        let order: Vec<&str> = c.peers.iter().map(|p| p.network.as_str()).collect();
        assert_eq!(order, ["db", "web"]);
        assert_eq!(
            c.addresses,
            vec![
                "10.2.0.250/24".parse::<Ipv4Network>().unwrap(),
                "10.1.0.250/24".parse().unwrap()
            ]
        );
        assert_eq!(
            c.peers[0].allowed_ips,
            vec![
                "10.2.0.0/24".parse::<Ipv4Network>().unwrap(),
                "192.168.50.0/24".parse().unwrap()
            ]
        );
        assert_eq!(c.mtu, Some(1420), "always written");
    }

    #[test]
    fn overlaps_and_routes_from_two_networks_are_refused_naming_both() {
        let web = network("web", "10.1.0.0/24", &["192.168.0.0/16"], 1420, &[]);
        let db = network("db", "10.1.0.0/25", &[], 1420, &[]);
        let lab = network("lab", "10.3.0.0/24", &["192.168.50.0/24"], 1420, &[]);
        let other = network("other", "10.4.0.0/24", &["172.16.0.0/12"], 1420, &[]);
        let key = || ClientKey::Private(PrivateKey::from_bytes([9; 32]));
        let e =
            ClientConfig::for_networks(key(), &[member(&web, 250), member(&db, 100)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network web's subnet 10.1.0.0/24 overlaps network db's subnet 10.1.0.0/25: one tunnel cannot route both"
        );
        let e =
            ClientConfig::for_networks(key(), &[member(&web, 250), member(&lab, 250)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network web's route 192.168.0.0/16 overlaps network lab's route 192.168.50.0/24: one tunnel cannot route both"
        );
        let e = ClientConfig::for_networks(key(), &[member(&lab, 250), member(&other, 250)])
            .unwrap_err();
        assert!(
            matches!(&e, TunnelError::RoutesFromTwoNetworks { a, b, .. } if a == "lab" && b == "other"),
            "{e}"
        );
        assert!(e.to_string().contains("another client name"), "{e}");
        assert_eq!(
            ClientConfig::for_networks(key(), &[]).unwrap_err(),
            TunnelError::NoNetwork
        );
    }

    #[test]
    fn a_key_made_on_the_device_is_a_placeholder_wg_refuses() {
        let web = network("web", "10.1.0.0/24", &[], 1420, &[]);
        let public = PrivateKey::from_bytes([7; 32]).public_key();
        let c =
            ClientConfig::for_networks(ClientKey::OnDevice(public), &[member(&web, 250)]).unwrap();
        let text = c.render();
        assert!(
            text.contains(&format!("PrivateKey = <the private key of {public}>\n")),
            "{text}"
        );
        assert!(text.contains("Address = 10.1.0.250/32\n"), "{text}");
        assert_eq!(c.key.public_key(), public);
    }

    #[test]
    fn an_endpoint_inside_a_routed_network_is_found() {
        let nets: Vec<Ipv4Network> = ["10.0.0.0/24", "203.0.113.0/24", "0.0.0.0/0"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            endpoint_route("203.0.113.10:1194", &nets),
            EndpointRoute::Inside(nets[1])
        );
        assert_eq!(
            endpoint_route("10.0.0.7", &nets),
            EndpointRoute::Inside(nets[0])
        );
        // A default route is handled by the clients themselves.
        assert_eq!(
            endpoint_route("198.51.100.7:1194", &nets),
            EndpointRoute::Outside
        );
        assert_eq!(
            endpoint_route("[2001:db8::1]:1194", &nets),
            EndpointRoute::Outside
        );
        assert_eq!(
            endpoint_route("vpn.example.org:1194", &nets),
            EndpointRoute::Name("vpn.example.org".into())
        );
    }

    #[test]
    fn suggested_names_are_interface_names() {
        let is_interface_name =
            |n: &str| crate::wg_quick::interface_name(&format!("{n}.conf")).is_ok();
        assert_eq!(suggested_interface_name(&["net1"]), "net1");
        assert_eq!(suggested_interface_name(&["web", "db"]), "web+db");
        let long = suggested_interface_name(&["a-network-name-of-31-characters"]);
        assert_eq!(long, "a-network-name-");
        assert!(is_interface_name(&long));
        assert!(is_interface_name(&suggested_interface_name::<&str>(&[])));
    }

    #[test]
    fn strip_is_idempotent() {
        let once = strip(&sample().render());
        assert_eq!(strip(&once), once);
    }

    #[test]
    fn strip_keeps_only_what_wg_setconf_takes() {
        let stripped = strip(&sample().render());
        for gone in ["Address", "DNS", "MTU"] {
            assert!(!stripped.contains(gone), "{gone} left in:\n{stripped}");
        }
        for kept in [
            "[Interface]",
            "PrivateKey",
            "[Peer]",
            "PublicKey",
            "PresharedKey",
            "Endpoint",
            "AllowedIPs",
            "PersistentKeepalive",
        ] {
            assert!(stripped.contains(kept), "{kept} missing from:\n{stripped}");
        }
        let with_hooks =
            "[Interface] # x\nPostUp = iptables -A\nListenPort = 1\n\n[Peer]\nPublicKey = k\n";
        assert_eq!(
            strip(with_hooks),
            "[Interface]\nListenPort = 1\n[Peer]\nPublicKey = k\n"
        );
    }
}
