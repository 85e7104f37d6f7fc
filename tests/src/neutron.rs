//! What Neutron's agents would build from its state, built by the lab instead: no
//! agent runs beside the lab's Neutron, so ports stay unbound and the lab takes each
//! port's state from the API and enforces it in its namespaces.
//!
//! The port filter ([`port_filter`]) runs in the `switch` namespace, which holds the
//! tenant bridges (Neutron's integration bridge; the router, the appliance and the
//! tenant VMs are each a port on it):
//! - `table bridge neutron`, stateless, per bridge port: a port's frames must come
//!   from its MAC, its ARP and IPv4 from its fixed IPs or allowed address pairs
//!   (RFC 5227 probes from 0.0.0.0 too), nothing else leaves it (IPv6 included); only
//!   ARP and IPv4 to its addresses (or broadcast) enter it. It also marks each
//!   bridged packet with the indexes of its ports (bits 0-7 in, 8-15 out).
//! - `table ip neutron`, stateful (br_netfilter hands bridged IPv4 to the IP hooks
//!   with conntrack; this kernel has no conntrack for the bridge family): established
//!   and related traffic passes, a new flow needs an egress rule of its source port's
//!   security groups and an ingress rule of its destination port's.
//!
//! Ports with `port_security_enabled` false get neither. Router interface ports are
//! not filtered, as in Neutron.

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// A Neutron port as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortState {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub mac: String,
    pub fixed_ips: Vec<Ipv4Addr>,
    /// Allowed address pairs: a CIDR and the MAC it may use (the port's when none).
    pub pairs: Vec<(Ipv4Network, String)>,
    pub port_security: bool,
    pub security_groups: Vec<String>,
    pub device_owner: String,
}

impl PortState {
    pub fn from_json(v: &Value) -> Result<PortState> {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let mac = s("mac_address");
        let fixed_ips = v["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["ip_address"].as_str()?.parse().ok())
            .collect();
        let pairs = v["allowed_address_pairs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let ip = p["ip_address"].as_str().unwrap_or_default();
                let net: Ipv4Network = ip
                    .parse()
                    .with_context(|| format!("allowed address pair {ip}"))?;
                let m = p["mac_address"].as_str().unwrap_or(&mac).to_string();
                Ok((net, m))
            })
            .collect::<Result<_>>()?;
        Ok(PortState {
            id: s("id"),
            name: s("name"),
            network_id: s("network_id"),
            fixed_ips,
            pairs,
            port_security: v["port_security_enabled"].as_bool().unwrap_or(true),
            security_groups: v["security_groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            device_owner: s("device_owner"),
            mac,
        })
    }

    /// The addresses the port may use: fixed IPs and allowed address pairs.
    pub fn addresses(&self) -> Vec<Ipv4Network> {
        let mut v: Vec<Ipv4Network> = self
            .fixed_ips
            .iter()
            .map(|a| Ipv4Network::new(*a, 32).expect("/32"))
            .collect();
        v.extend(self.pairs.iter().map(|(n, _)| *n));
        v
    }
}

/// A security group rule as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgRule {
    pub security_group_id: String,
    pub ingress: bool,
    pub ipv4: bool,
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<Ipv4Network>,
    pub remote_group_id: Option<String>,
}

impl SgRule {
    pub fn from_json(v: &Value) -> Result<SgRule> {
        let opt = |k: &str| v[k].as_str().map(str::to_string);
        let port = |k: &str| v[k].as_u64().map(|p| p as u16);
        let ipv4 = v["ethertype"].as_str() == Some("IPv4");
        Ok(SgRule {
            security_group_id: opt("security_group_id").context("rule without group")?,
            ingress: v["direction"].as_str() == Some("ingress"),
            ipv4,
            protocol: opt("protocol"),
            port_range_min: port("port_range_min"),
            port_range_max: port("port_range_max"),
            // IPv6 prefixes do not parse here; such rules are skipped anyway.
            remote_ip_prefix: if ipv4 {
                opt("remote_ip_prefix").and_then(|p| p.parse().ok())
            } else {
                None
            },
            remote_group_id: opt("remote_group_id"),
        })
    }
}

/// A bridge port in the switch namespace wired to a Neutron port.
#[derive(Debug, Clone)]
pub struct Wired {
    /// The bridge port's interface name in the switch namespace.
    pub ifname: String,
    pub port: PortState,
}

/// The nftables script for the switch namespace: the port filter of every wired port
/// (see the module docs). `ports` are all the project's ports (for rules naming a
/// remote group), `rules` all its security group rules. Replaces the previous tables.
pub fn port_filter(wired: &[Wired], ports: &[PortState], rules: &[SgRule]) -> String {
    let mut s = String::new();
    // Declare-then-delete makes the script work whether or not the tables exist.
    s.push_str("table bridge neutron {}\ndelete table bridge neutron\n");
    s.push_str("table ip neutron {}\ndelete table ip neutron\n");
    let filtered: Vec<(usize, &Wired)> = wired
        .iter()
        .filter(|w| w.port.port_security)
        .enumerate()
        .map(|(i, w)| (i + 1, w))
        .collect();
    assert!(filtered.len() < 256, "port indexes are 8 bits");

    s.push_str("table bridge neutron {\n");
    for (i, w) in &filtered {
        let _ = writeln!(
            s,
            "\tset p{i}_ips {{ type ipv4_addr; flags interval; elements = {{ {} }} }}",
            join(w.port.addresses().iter().map(|n| n.to_string()))
        );
        let macs: BTreeSet<&str> = std::iter::once(w.port.mac.as_str())
            .chain(w.port.pairs.iter().map(|(_, m)| m.as_str()))
            .collect();
        let _ = writeln!(
            s,
            "\tset p{i}_macs {{ type ether_addr; elements = {{ {} }} }}",
            join(macs.into_iter())
        );
    }
    // Before br_netfilter hands the packet to the IP hooks (priority -1).
    s.push_str("\tchain forward {\n\t\ttype filter hook forward priority -100; policy accept;\n\t\tmeta mark set 0\n");
    for (i, w) in &filtered {
        let _ = writeln!(s, "\t\tiifname \"{}\" jump from_p{i}", w.ifname);
        let _ = writeln!(s, "\t\toifname \"{}\" jump to_p{i}", w.ifname);
    }
    s.push_str("\t}\n");
    for (i, w) in &filtered {
        let _ = write!(
            s,
            "\tchain from_p{i} {{\n\
             \t\tcomment \"{name}: what may leave it\"\n\
             \t\tmeta mark set meta mark or {i:#x}\n\
             \t\tether saddr != @p{i}_macs counter drop\n\
             \t\tether type arp arp saddr ip 0.0.0.0 return\n\
             \t\tether type arp arp saddr ip @p{i}_ips return\n\
             \t\tether type ip ip saddr @p{i}_ips return\n\
             \t\tether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp dport 67 return\n\
             \t\tcounter drop\n\
             \t}}\n\
             \tchain to_p{i} {{\n\
             \t\tcomment \"{name}: what may enter it\"\n\
             \t\tmeta mark set meta mark or {out:#x}\n\
             \t\tether type arp return\n\
             \t\tether type ip ip daddr @p{i}_ips return\n\
             \t\tether type ip ip daddr 255.255.255.255 return\n\
             \t\tcounter drop\n\
             \t}}\n",
            name = w.port.name,
            out = i << 8,
        );
    }
    s.push_str("}\n");

    s.push_str("table ip neutron {\n");
    s.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tmeta mark & 0xffff == 0 accept\n\
         \t\tct state established,related accept\n\
         \t\tct state invalid counter drop\n",
    );
    for (i, _) in &filtered {
        let _ = writeln!(s, "\t\tmeta mark & 0xff == {i:#x} jump egress_p{i}");
        let _ = writeln!(
            s,
            "\t\tmeta mark & 0xff00 == {:#x} jump ingress_p{i}",
            i << 8
        );
    }
    s.push_str("\t}\n");
    for (i, w) in &filtered {
        for ingress in [false, true] {
            let dir = if ingress { "ingress" } else { "egress" };
            let _ = writeln!(s, "\tchain {dir}_p{i} {{");
            for r in rules.iter().filter(|r| {
                r.ipv4
                    && r.ingress == ingress
                    && w.port.security_groups.contains(&r.security_group_id)
            }) {
                if let Some(m) = rule_match(r, ports) {
                    let _ = writeln!(s, "\t\t{m}return");
                }
            }
            let _ = writeln!(s, "\t\tcounter drop\n\t}}");
        }
    }
    s.push_str("}\n");
    s
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The nftables match of one IPv4 rule (with a trailing space), or `None` when it
/// matches nothing (a remote group with no addresses).
fn rule_match(r: &SgRule, ports: &[PortState]) -> Option<String> {
    let mut m = String::new();
    let remote = if r.ingress { "saddr" } else { "daddr" };
    if let Some(p) = r.remote_ip_prefix {
        let _ = write!(m, "ip {remote} {p} ");
    } else if let Some(g) = &r.remote_group_id {
        let members: BTreeSet<String> = ports
            .iter()
            .filter(|p| p.security_groups.contains(g))
            .flat_map(|p| p.addresses())
            .map(|n| n.to_string())
            .collect();
        if members.is_empty() {
            return None;
        }
        let _ = write!(m, "ip {remote} {{ {} }} ", join(members.iter()));
    }
    let Some(proto) = r.protocol.as_deref().filter(|p| *p != "any") else {
        return Some(m);
    };
    let proto = match proto {
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        p => p,
    };
    let _ = write!(m, "ip protocol {proto} ");
    match (proto, r.port_range_min, r.port_range_max) {
        ("icmp", Some(t), code) => {
            let _ = write!(m, "icmp type {t} ");
            if let Some(c) = code {
                let _ = write!(m, "icmp code {c} ");
            }
        }
        ("tcp" | "udp" | "sctp" | "dccp" | "udplite", Some(a), b) => {
            let b = b.unwrap_or(a);
            if a == b {
                let _ = write!(m, "th dport {a} ");
            } else {
                let _ = write!(m, "th dport {a}-{b} ");
            }
        }
        _ => {}
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn port(name: &str, ip: &str, pairs: &[&str], sg: &str) -> PortState {
        PortState::from_json(&json!({
            "id": format!("id-{name}"), "name": name, "network_id": "n",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [{"subnet_id": "s", "ip_address": ip}],
            "allowed_address_pairs": pairs.iter().map(|p| json!({"ip_address": p})).collect::<Vec<_>>(),
            "port_security_enabled": true, "security_groups": [sg], "device_owner": "",
        }))
        .unwrap()
    }

    /// The body of chain `name` in a script.
    fn chain<'a>(script: &'a str, name: &str) -> &'a str {
        let body = script.split(&format!("chain {name} {{")).nth(1).unwrap();
        body.split("\n\t}").next().unwrap()
    }

    fn rule(v: Value) -> SgRule {
        SgRule::from_json(&v).unwrap()
    }

    #[test]
    fn a_port_may_send_only_from_its_addresses_and_the_groups_rules_are_stateful() {
        let app = port("cloudpipe-lab", "10.77.0.2", &["10.77.0.248/29"], "sg1");
        let vm = port("tenant-vm", "10.77.0.57", &[], "sg2");
        let rules = vec![
            rule(
                json!({"security_group_id": "sg1", "direction": "ingress", "ethertype": "IPv4",
                "protocol": "udp", "port_range_min": 1194, "port_range_max": 1194,
                "remote_ip_prefix": "0.0.0.0/0"}),
            ),
            rule(
                json!({"security_group_id": "sg1", "direction": "egress", "ethertype": "IPv4",
                "protocol": null, "remote_ip_prefix": null}),
            ),
            rule(json!({"security_group_id": "sg1", "direction": "egress", "ethertype": "IPv6"})),
            rule(
                json!({"security_group_id": "sg2", "direction": "ingress", "ethertype": "IPv4",
                "protocol": "icmp", "port_range_min": 8, "remote_group_id": "sg1"}),
            ),
        ];
        let wired = vec![
            Wired {
                ifname: "vcp0".into(),
                port: app.clone(),
            },
            Wired {
                ifname: "vtv0".into(),
                port: vm.clone(),
            },
        ];
        let s = port_filter(&wired, &[app, vm], &rules);
        assert!(s.contains("set p1_ips { type ipv4_addr; flags interval; elements = { 10.77.0.2/32, 10.77.0.248/29 } }"), "{s}");
        assert!(s.contains("iifname \"vcp0\" jump from_p1"), "{s}");
        assert!(s.contains("oifname \"vtv0\" jump to_p2"), "{s}");
        assert!(s.contains("ether type ip ip saddr @p1_ips return"), "{s}");
        assert!(s.contains("ct state established,related accept"), "{s}");
        // Port 1's ingress: UDP 1194 only; egress: anything (the IPv6 rule is not IPv4).
        let ingress1 = chain(&s, "ingress_p1");
        assert!(
            ingress1.contains("ip saddr 0.0.0.0/0 ip protocol udp th dport 1194 return"),
            "{ingress1}"
        );
        let egress1 = chain(&s, "egress_p1");
        assert_eq!(egress1.matches("return").count(), 1, "{egress1}");
        // The remote group is the appliance port's addresses, pairs included.
        let ingress2 = chain(&s, "ingress_p2");
        assert!(
            ingress2.contains(
                "ip saddr { 10.77.0.2/32, 10.77.0.248/29 } ip protocol icmp icmp type 8 return"
            ),
            "{ingress2}"
        );
        assert!(ingress2.trim_end().ends_with("counter drop"), "{ingress2}");
    }

    #[test]
    fn a_port_without_port_security_is_not_filtered() {
        let mut p = port("free", "10.77.0.9", &[], "sg1");
        p.port_security = false;
        let s = port_filter(
            &[Wired {
                ifname: "v9".into(),
                port: p.clone(),
            }],
            &[p],
            &[],
        );
        assert!(!s.contains("v9"), "{s}");
    }
}
