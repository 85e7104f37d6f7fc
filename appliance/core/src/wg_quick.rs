//! Reading a wg-quick configuration file: the format of wg(8) ("CONFIGURATION FILE
//! FORMAT") plus wg-quick(8)'s `[Interface]` keys (Address, DNS, MTU, Table, the
//! hooks, SaveConfig). What `cloudpipe up` brings up, and what every config that
//! `cloudpipe client add` writes must parse as.
//!
//! Sections and keys are case-insensitive; `#` starts a comment; list keys
//! (Address, DNS, AllowedIPs) may repeat and take comma-separated values. Every
//! rejection names the line, the key and the fix.

use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::wg::{DeviceConfig, PeerConfig, Role};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, SocketAddr};

/// A parsed wg-quick file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgQuick {
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

/// The `[Interface]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub private_key: PrivateKey,
    /// `Address`: the interface's addresses with their prefix (a bare address is a
    /// /32 or /128, as wg-quick takes it).
    pub addresses: Vec<IpNetwork>,
    /// `DNS`: name servers (addresses) and search domains (anything else).
    pub dns: Vec<String>,
    pub mtu: Option<u16>,
    pub listen_port: Option<u16>,
    /// `FwMark`: 0 when off.
    pub fwmark: u32,
    /// `Table`: `off` keeps routes out of the routing table.
    pub table: Table,
    /// PreUp, PostUp, PreDown, PostDown commands, in file order.
    pub hooks: Vec<(Hook, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    PreUp,
    PostUp,
    PreDown,
    PostDown,
}

/// wg-quick's `Table` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Table {
    /// Routes for every peer's allowed IPs in the main table.
    #[default]
    Auto,
    /// No routes.
    Off,
    /// Routes in this routing table.
    Id(u32),
}

/// A `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// `Endpoint` as written (`host:port`, `[v6]:port`); resolving it is I/O.
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<IpNetwork>,
    pub persistent_keepalive: Option<u16>,
}

/// A rejected file: the 1-based line and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> ParseError {
    ParseError {
        line,
        reason: reason.into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Interface,
    Peer,
}

/// Parse a wg-quick file.
pub fn parse(text: &str) -> Result<WgQuick, ParseError> {
    let mut section = Section::None;
    let mut iface = RawInterface::default();
    let mut peers: Vec<RawPeer> = Vec::new();
    let mut last_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        last_line = n;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = match line.to_ascii_lowercase().as_str() {
                "[interface]" if iface.seen => {
                    return Err(err(n, "a second [Interface] section: one per file"))
                }
                "[interface]" => {
                    iface.seen = true;
                    Section::Interface
                }
                "[peer]" => {
                    peers.push(RawPeer {
                        line: n,
                        ..RawPeer::default()
                    });
                    Section::Peer
                }
                _ => {
                    return Err(err(
                        n,
                        format!("unknown section {line}: expected [Interface] or [Peer]"),
                    ))
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(n, format!("{line:?} is not `Key = Value`")));
        };
        let (key, value) = (key.trim(), value.trim());
        match section {
            Section::None => {
                return Err(err(
                    n,
                    format!("{key} comes before any [Interface] or [Peer] section"),
                ))
            }
            Section::Interface => iface.set(n, key, value)?,
            Section::Peer => peers
                .last_mut()
                .expect("in a peer section")
                .set(n, key, value)?,
        }
    }
    if !iface.seen {
        return Err(err(last_line.max(1), "no [Interface] section"));
    }
    let interface = iface.finish()?;
    let peers = peers
        .into_iter()
        .map(RawPeer::finish)
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys = std::collections::BTreeSet::new();
    for p in &peers {
        if !keys.insert(p.public_key) {
            return Err(err(
                last_line,
                format!("peer {} appears twice", p.public_key),
            ));
        }
        if p.public_key == interface.private_key.public_key() {
            return Err(err(
                last_line,
                "a [Peer] has the interface's own public key",
            ));
        }
    }
    Ok(WgQuick { interface, peers })
}

#[derive(Default)]
struct RawInterface {
    seen: bool,
    private_key: Option<(usize, String)>,
    addresses: Vec<IpNetwork>,
    dns: Vec<String>,
    mtu: Option<u16>,
    listen_port: Option<u16>,
    fwmark: u32,
    table: Table,
    hooks: Vec<(Hook, String)>,
}

impl RawInterface {
    fn set(&mut self, n: usize, key: &str, v: &str) -> Result<(), ParseError> {
        match key.to_ascii_lowercase().as_str() {
            "privatekey" => self.private_key = Some((n, v.to_string())),
            "address" => {
                for a in list(v) {
                    self.addresses
                        .push(parse_net(a).map_err(|r| err(n, format!("Address: {r}")))?);
                }
            }
            "dns" => self.dns.extend(list(v).map(str::to_string)),
            "mtu" => {
                self.mtu = Some(
                    v.parse()
                        .ok()
                        .filter(|m| (576..=65535).contains(m))
                        .ok_or_else(|| {
                            err(n, format!("MTU: {v:?} is not a number from 576 to 65535"))
                        })?,
                )
            }
            "listenport" => {
                self.listen_port = Some(v.parse().map_err(|_| {
                    err(
                        n,
                        format!("ListenPort: {v:?} is not a port number (0-65535)"),
                    )
                })?)
            }
            "fwmark" => {
                self.fwmark = parse_fwmark(v).map_err(|r| err(n, format!("FwMark: {r}")))?
            }
            "table" => {
                self.table = match v.to_ascii_lowercase().as_str() {
                    "off" => Table::Off,
                    "auto" => Table::Auto,
                    t => Table::Id(t.parse().map_err(|_| {
                        err(
                            n,
                            format!("Table: {v:?} is not off, auto or a table number"),
                        )
                    })?),
                }
            }
            "preup" => self.hooks.push((Hook::PreUp, v.to_string())),
            "postup" => self.hooks.push((Hook::PostUp, v.to_string())),
            "predown" => self.hooks.push((Hook::PreDown, v.to_string())),
            "postdown" => self.hooks.push((Hook::PostDown, v.to_string())),
            "saveconfig" => {}
            _ => {
                return Err(err(
                    n,
                    format!(
                        "unknown [Interface] key {key:?} (known: PrivateKey, Address, DNS, MTU, \
                         ListenPort, FwMark, Table, PreUp, PostUp, PreDown, PostDown, SaveConfig)"
                    ),
                ))
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Interface, ParseError> {
        let (n, key) = self
            .private_key
            .ok_or_else(|| err(1, "[Interface] has no PrivateKey"))?;
        let private_key = key.parse::<PrivateKey>().map_err(|_| {
            err(
                n,
                format!(
                    "PrivateKey: {:?} is not a WireGuard key (44 characters of base64); if this \
                     config was made for a key kept on your device, put that device's private \
                     key here",
                    shorten(&key)
                ),
            )
        })?;
        Ok(Interface {
            private_key,
            addresses: self.addresses,
            dns: self.dns,
            mtu: self.mtu,
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            table: self.table,
            hooks: self.hooks,
        })
    }
}

#[derive(Default)]
struct RawPeer {
    line: usize,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<String>,
    allowed_ips: Vec<IpNetwork>,
    persistent_keepalive: Option<u16>,
}

impl RawPeer {
    fn set(&mut self, n: usize, key: &str, v: &str) -> Result<(), ParseError> {
        let bad_key = |what: &str| {
            err(
                n,
                format!(
                    "{what}: {:?} is not a WireGuard key (44 characters of base64)",
                    shorten(v)
                ),
            )
        };
        match key.to_ascii_lowercase().as_str() {
            "publickey" => self.public_key = Some(v.parse().map_err(|_| bad_key("PublicKey"))?),
            "presharedkey" => {
                self.preshared_key = Some(v.parse().map_err(|_| bad_key("PresharedKey"))?)
            }
            "endpoint" => {
                check_endpoint(v).map_err(|r| err(n, format!("Endpoint: {r}")))?;
                self.endpoint = Some(v.to_string());
            }
            "allowedips" => {
                for a in list(v) {
                    self.allowed_ips
                        .push(parse_net(a).map_err(|r| err(n, format!("AllowedIPs: {r}")))?);
                }
            }
            "persistentkeepalive" => {
                self.persistent_keepalive = match v {
                    "off" | "0" => None,
                    _ => Some(v.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        err(
                            n,
                            format!("PersistentKeepalive: {v:?} is not off or 1-65535 seconds"),
                        )
                    })?),
                }
            }
            _ => {
                return Err(err(
                    n,
                    format!(
                        "unknown [Peer] key {key:?} (known: PublicKey, PresharedKey, Endpoint, \
                         AllowedIPs, PersistentKeepalive)"
                    ),
                ))
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Peer, ParseError> {
        Ok(Peer {
            public_key: self
                .public_key
                .ok_or_else(|| err(self.line, "[Peer] has no PublicKey"))?,
            preshared_key: self.preshared_key,
            endpoint: self.endpoint,
            allowed_ips: self.allowed_ips,
            persistent_keepalive: self.persistent_keepalive,
        })
    }
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Keys are secrets: an error shows at most their first characters.
fn shorten(s: &str) -> String {
    if s.chars().count() > 8 {
        format!("{}...", s.chars().take(4).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `a.b.c.d/n`, `x::y/n`, or a bare address (a host route).
fn parse_net(s: &str) -> Result<IpNetwork, String> {
    if s.contains('/') {
        s.parse::<IpNetwork>()
            .map_err(|_| format!("{s:?} is not an IP network such as 10.0.0.0/24"))
    } else {
        s.parse::<IpAddr>()
            .map(IpNetwork::from)
            .map_err(|_| format!("{s:?} is not an IP address or network"))
    }
}

fn parse_fwmark(v: &str) -> Result<u32, String> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.map_err(|_| format!("{v:?} is not off or a 32-bit number"))
}

/// `host:port` or `[v6]:port` with a port from 1 to 65535.
fn check_endpoint(v: &str) -> Result<(), String> {
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| format!("{v:?} has no port: write HOST:PORT, e.g. vpn.example.com:1194"))?;
    if host.is_empty() || host.contains("://") {
        return Err(format!("{v:?}: expected HOST:PORT, not a URL"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("{v:?}: write an IPv6 endpoint as [ADDRESS]:PORT"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{v:?}: {port:?} is not a port from 1 to 65535")),
    }
}

impl WgQuick {
    /// The client-role device this file describes; `endpoints[i]` is peer `i`'s
    /// resolved endpoint (resolution is the caller's I/O).
    pub fn device(
        &self,
        listen_port: u16,
        endpoints: &[Option<SocketAddr>],
    ) -> (DeviceConfig, Vec<PeerConfig>) {
        let config = DeviceConfig {
            private_key: self.interface.private_key.clone(),
            listen_port,
            fwmark: self.interface.fwmark,
            role: Role::Client,
        };
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| PeerConfig {
                public_key: p.public_key,
                preshared_key: p.preshared_key.clone(),
                endpoint: endpoints.get(i).copied().flatten(),
                persistent_keepalive: p.persistent_keepalive,
                allowed_ips: p.allowed_ips.clone(),
            })
            .collect();
        (config, peers)
    }

    /// Name servers among `DNS` (the rest are search domains).
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        self.interface
            .dns
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect()
    }

    /// Search domains among `DNS`.
    pub fn dns_search(&self) -> Vec<&str> {
        self.interface
            .dns
            .iter()
            .filter(|d| d.parse::<IpAddr>().is_err())
            .map(String::as_str)
            .collect()
    }
}

/// The interface name wg-quick gives a config file: its name without `.conf`, which
/// must be a valid Linux interface name (1-15 characters of `[a-zA-Z0-9_=+.-]`).
pub fn interface_name(file_name: &str) -> Result<String, String> {
    let stem = file_name.strip_suffix(".conf").unwrap_or(file_name);
    if stem.is_empty() || stem.len() > 15 {
        return Err(format!(
            "{file_name:?}: the interface is named after the file without .conf, which must \
             be 1 to 15 characters; rename the file (e.g. wg0.conf)"
        ));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_=+.-".contains(*c)))
    {
        return Err(format!(
            "{file_name:?}: character {c:?} cannot be in an interface name (use a-z A-Z 0-9 _ = + . -)"
        ));
    }
    Ok(stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_config::ClientConfig;
    use crate::config::tests::sample_file;
    use crate::config::Config;

    const K1: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const K2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn a_full_file_with_every_key() {
        let text = format!(
            "# comment\n[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.250/32, fd00::2/64\n\
             Address=10.9.0.1\nDNS = 10.0.0.1, corp.example\nMTU = 1380\nListenPort = 51820\n\
             FwMark = 0x1234\nTable = off\nPostUp = echo up\nSaveConfig = true\n\n\
             [peer]  \npublickey = {K2}\nPresharedKey = {K1} # trailing comment\n\
             Endpoint = [2001:db8::1]:1194\nAllowedIPs = 10.0.0.0/24\nAllowedIPs = 192.168.50.0/24\n\
             PersistentKeepalive = 25\n"
        );
        let w = parse(&text).unwrap();
        let i = &w.interface;
        assert_eq!(i.addresses.len(), 3);
        assert_eq!(i.addresses[2].to_string(), "10.9.0.1/32");
        assert_eq!(
            (i.mtu, i.listen_port, i.fwmark, i.table),
            (Some(1380), Some(51820), 0x1234, Table::Off)
        );
        assert_eq!(i.hooks, vec![(Hook::PostUp, "echo up".to_string())]);
        assert_eq!(w.dns_servers(), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(w.dns_search(), vec!["corp.example"]);
        let p = &w.peers[0];
        assert_eq!(p.endpoint.as_deref(), Some("[2001:db8::1]:1194"));
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.persistent_keepalive, Some(25));
        let ep = "[2001:db8::1]:1194".parse().ok();
        let (dc, pcs) = w.device(51820, &[ep]);
        assert_eq!(dc.fwmark, 0x1234);
        assert_eq!(pcs[0].endpoint, ep);
        assert_eq!(pcs[0].allowed_ips, p.allowed_ips);
    }

    #[test]
    fn what_client_add_writes_parses_back() {
        let net = Config::try_from(sample_file()).unwrap();
        let c = ClientConfig::for_network(
            &net,
            "10.0.0.252".parse().unwrap(),
            PrivateKey::from_bytes([5; 32]),
            Some(PresharedKey::from_bytes([6; 32])),
            "198.51.100.7:1194".into(),
        );
        let w = parse(&c.render()).unwrap();
        let crate::client_config::ClientKey::Private(key) = &c.key else {
            panic!("a held key")
        };
        assert_eq!(w.interface.private_key, *key);
        assert_eq!(
            w.interface.addresses,
            vec!["10.0.0.252/32".parse().unwrap()]
        );
        assert_eq!(w.peers[0].public_key, net.private_key.public_key());
        assert_eq!(w.peers[0].endpoint.as_deref(), Some("198.51.100.7:1194"));
        assert_eq!(
            w.peers[0].allowed_ips,
            c.peers[0]
                .allowed_ips
                .iter()
                .map(|n| IpNetwork::V4(*n))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn rejections_name_the_line_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            ("", "no [Interface]"),
            ("PrivateKey = x", "before any [Interface]"),
            ("[Interface]\nAddress = 10.0.0.1/24", "has no PrivateKey"),
            (
                "[Interface]\nPrivateKey = <paste here>",
                "key kept on your device",
            ),
            ("[Interfaces]", "unknown section"),
            (
                "[Interface]\nPrivateKey = K1\nColor = blue",
                "unknown [Interface] key \"Color\"",
            ),
            (
                "[Interface]\nPrivateKey = K1\nAddress = 10.0.0.0/33",
                "line 3: Address",
            ),
            ("[Interface]\nPrivateKey = K1\nMTU = 70000", "MTU"),
            (
                "[Interface]\nPrivateKey = K1\n[Peer]\nAllowedIPs = 10.0.0.0/24",
                "line 3: [Peer] has no PublicKey",
            ),
            (
                "[Interface]\nPrivateKey = K1\n[Peer]\nPublicKey = K2\nEndpoint = host",
                "has no port",
            ),
            (
                "[Interface]\nPrivateKey = K1\n[Peer]\nPublicKey = K2\nEndpoint = https://vpn:443",
                "not a URL",
            ),
            (
                "[Interface]\nPrivateKey = K1\n[Peer]\nPublicKey = K2\nEndpoint = ::1:5",
                "[ADDRESS]:PORT",
            ),
            (
                "[Interface]\nPrivateKey = K1\n[Peer]\nPublicKey = K2\n[Peer]\nPublicKey = K2",
                "appears twice",
            ),
            (
                "[Interface]\nPrivateKey = K1\n[Peer]\nPublicKey = P1",
                "own public key",
            ),
            (
                "[Interface]\nPrivateKey = K1\nnonsense",
                "not `Key = Value`",
            ),
        ];
        let own = K1.parse::<PrivateKey>().unwrap().public_key().to_base64();
        for (text, want) in cases {
            let text = text.replace("K1", K1).replace("K2", K2).replace("P1", &own);
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.contains(want), "{text:?}: {e:?} lacks {want:?}");
            assert!(!e.contains(K1), "a secret leaked into {e:?}");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert_eq!(interface_name("wg0.conf").unwrap(), "wg0");
        assert_eq!(interface_name("web-alice.conf").unwrap(), "web-alice");
        assert!(interface_name("a-very-long-name-indeed.conf")
            .unwrap_err()
            .contains("15"));
        assert!(interface_name("my vpn.conf").unwrap_err().contains("' '"));
        assert!(interface_name(".conf").is_err());
    }
}
