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

/// Whether `name` works as a WireGuard interface name: wg-quick takes the interface
/// name from the config's file name and accepts `[a-zA-Z0-9_=+.-]{1,15}` (its own
/// check), and the mobile apps name the tunnel after the file by the same rule.
pub fn is_interface_name(name: &str) -> bool {
    (1..=MAX_INTERFACE_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b))
}

/// The interface (and config file) name to suggest for a tunnel to these networks:
/// their names joined by `+`, cut to [`MAX_INTERFACE_NAME`] characters. Network
/// names are already made of allowed characters.
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

/// Everything one client's config holds.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub address: Ipv4Addr,
    pub private_key: PrivateKey,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub server_public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// `host:port` of the appliance's floating IP.
    pub endpoint: String,
    pub allowed_ips: Vec<Ipv4Network>,
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
        ClientConfig {
            address,
            private_key,
            dns: network.dns.clone(),
            // Always written: wg-quick's own guess (the route to the endpoint less
            // 80) knows nothing of the tenant network behind the appliance.
            mtu: Some(network.mtu),
            server_public_key: network.private_key.public_key(),
            preshared_key,
            endpoint,
            allowed_ips: network.client_allowed_ips(),
        }
    }

    /// The wg-quick file.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let join = |v: Vec<String>| v.join(", ");
        let _ = writeln!(s, "[Interface]");
        let _ = writeln!(s, "Address = {}/32", self.address);
        let _ = writeln!(s, "PrivateKey = {}", self.private_key.to_base64());
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
        let _ = writeln!(s, "\n[Peer]");
        let _ = writeln!(s, "PublicKey = {}", self.server_public_key);
        if let Some(psk) = &self.preshared_key {
            let _ = writeln!(s, "PresharedKey = {}", psk.to_base64());
        }
        let _ = writeln!(s, "Endpoint = {}", self.endpoint);
        let _ = writeln!(
            s,
            "AllowedIPs = {}",
            join(self.allowed_ips.iter().map(|n| n.to_string()).collect())
        );
        let _ = writeln!(s, "PersistentKeepalive = {PERSISTENT_KEEPALIVE}");
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
        assert!(text.contains(&format!("PrivateKey = {}\n", c.private_key.to_base64())));
        assert!(text.contains("DNS = 10.0.0.1\n"));
        assert!(text.contains(&format!("PublicKey = {}\n", c.server_public_key)));
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
        c.preshared_key = None;
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
            c.allowed_ips,
            vec!["10.0.0.0/24".parse::<Ipv4Network>().unwrap()],
            "a route equal to the subnet is not repeated"
        );
        assert_eq!(c.server_public_key, net.private_key.public_key());
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
    fn interface_names_follow_wg_quick() {
        for ok in ["wg0", "net1", "web+db", "a_b=c.d-e", "fifteen-chars-x"] {
            assert!(is_interface_name(ok), "{ok}");
        }
        for bad in ["", "sixteen-chars-xx", "a b", "a@b", "a/b", "ünï"] {
            assert!(!is_interface_name(bad), "{bad}");
        }
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
