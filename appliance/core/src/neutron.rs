//! What a network's cloudpipe needs from Neutron, as data: the launch recipe.
//!
//! A [`Recipe`] holds every resource `cloudpipe openstack NETWORK` asks the operator to
//! create, in the shape of Neutron's API (field names as in its JSON): the subnet's
//! allocation pools with the appliance's and the clients' addresses taken out, the
//! security group and its rules, the appliance's port (fixed IP, allowed address
//! pairs), the floating IP and the server. The CLI prints it as `openstack` commands
//! or as JSON; the lab applies the JSON to its real Neutron.
//!
//! The rules come from how Neutron treats the appliance's port (REFERENCE.md section 3):
//! - port security drops a packet whose source is not the port's fixed IP or an
//!   allowed address pair, so in proxy-ARP mode the pairs must cover the client pool,
//!   and Neutron refuses more than [`MAX_ALLOWED_ADDRESS_PAIRS`] of them;
//! - security groups filter every packet *into* the port, also tenant VMs' packets to
//!   a client's pool address, so the tenant subnet needs a rule of its own;
//! - a subnet's default allocation pool is every host but the gateway, so the
//!   appliance's and clients' addresses must be taken out of it.

use crate::config::{Config, Mode};
use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Neutron's default `max_allowed_address_pair`: the 11th pair on a port is refused
/// with "exceeds the maximum 10" (neutron/conf/extensions/allowedaddresspairs.py).
pub const MAX_ALLOWED_ADDRESS_PAIRS: usize = 10;

/// The encoding `openstack server create --user-data FILE` needs: the client reads
/// FILE as text and base64-encodes it for Nova's API, so FILE must be the guest form.
pub const USER_DATA_ENCODING: &str = "guest";

/// A client pool that allowed address pairs cannot cover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverError {
    #[error(
        "the pool {first}-{last} needs {needed} allowed address pairs to leave the \
         gateway {gateway} out, more than Neutron's {max} per port \
         (max_allowed_address_pair); a smaller pool fits"
    )]
    TooManyPairs {
        first: Ipv4Addr,
        last: Ipv4Addr,
        gateway: Ipv4Addr,
        needed: usize,
        max: usize,
    },
    #[error("the pool {first}-{last} holds {avoided}, which no allowed address pair may cover")]
    Holds {
        first: Ipv4Addr,
        last: Ipv4Addr,
        avoided: Ipv4Addr,
    },
}

/// The fewest CIDR blocks that together cover `first..=last`, each inside `subnet` and
/// none holding an address of `avoid`; among covers with that few blocks, the one with
/// the fewest addresses beyond the range. Blocks are in address order.
///
/// Allowed address pairs may be supernets of the pool: the appliance answers ARP only
/// for its clients' addresses, and the recipe takes the whole cover out of the
/// subnet's allocation pool, so the extra addresses are never another port's.
pub fn cover(
    first: Ipv4Addr,
    last: Ipv4Addr,
    subnet: Ipv4Network,
    avoid: &[Ipv4Addr],
) -> Result<Vec<Ipv4Network>, CoverError> {
    let (lo, hi) = (u32::from(first), u32::from(last));
    if let Some(a) = avoid.iter().find(|a| (lo..=hi).contains(&u32::from(**a))) {
        return Err(CoverError::Holds {
            first,
            last,
            avoided: *a,
        });
    }
    let mut out = Vec::new();
    cover_in(subnet, lo, hi, avoid, &mut out);
    Ok(out)
}

/// Cover `lo..=hi` within the aligned `block`. A block without an avoided address is
/// covered by one CIDR (the smallest aligned block holding the part of the range in
/// it); one with an avoided address cannot be used whole, nor can any block holding
/// it, so its halves are covered separately. The range holds no avoided address, so
/// the recursion ends at the latest at /32 blocks outside it.
fn cover_in(block: Ipv4Network, lo: u32, hi: u32, avoid: &[Ipv4Addr], out: &mut Vec<Ipv4Network>) {
    let (start, end) = (u32::from(block.network()), u32::from(block.broadcast()));
    let (a, b) = (lo.max(start), hi.min(end));
    if a > b {
        return;
    }
    if !avoid.iter().any(|x| block.contains(*x)) {
        out.push(smallest_block(a, b));
        return;
    }
    let half = block.prefix() + 1;
    let left = Ipv4Network::new(block.network(), half).expect("prefix < 32 here");
    let right = Ipv4Network::new(Ipv4Addr::from(start + (1 << (32 - half))), half)
        .expect("prefix < 32 here");
    cover_in(left, lo, hi, avoid, out);
    cover_in(right, lo, hi, avoid, out);
}

/// The smallest aligned block holding `a..=b`.
fn smallest_block(a: u32, b: u32) -> Ipv4Network {
    let host_bits = 32 - (a ^ b).leading_zeros();
    let mask = if host_bits == 32 {
        0
    } else {
        u32::MAX << host_bits
    };
    Ipv4Network::new(Ipv4Addr::from(a & mask), (32 - host_bits) as u8).expect("prefix <= 32")
}

/// The allowed address pairs of the appliance's port: none in masquerade mode (clients
/// leave with the port's own address); in proxy-ARP mode the client pool, covered by
/// the fewest blocks that leave the gateway out, at most [`MAX_ALLOWED_ADDRESS_PAIRS`].
pub fn allowed_address_pairs(config: &Config) -> Result<Vec<Ipv4Network>, CoverError> {
    if config.mode == Mode::Masquerade {
        return Ok(Vec::new());
    }
    let blocks = cover(
        config.pool.first(),
        config.pool.last(),
        config.subnet,
        &[config.gateway],
    )?;
    if blocks.len() > MAX_ALLOWED_ADDRESS_PAIRS {
        return Err(CoverError::TooManyPairs {
            first: config.pool.first(),
            last: config.pool.last(),
            gateway: config.gateway,
            needed: blocks.len(),
            max: MAX_ALLOWED_ADDRESS_PAIRS,
        });
    }
    Ok(blocks)
}

/// What no other port may be given: the appliance's address and the client pool (as
/// the pairs cover it in proxy-ARP mode, exactly in masquerade mode, where no tenant
/// VM should hold an address the appliance routes into its tunnel either).
pub fn reserved(config: &Config) -> Result<Vec<Ipv4Network>, CoverError> {
    let mut v = vec![Ipv4Network::new(config.address, 32).expect("/32")];
    match config.mode {
        Mode::ProxyArp => v.extend(allowed_address_pairs(config)?),
        Mode::Masquerade => v.extend(config.pool.cidrs()),
    }
    v.sort_by_key(|n| u32::from(n.network()));
    Ok(v)
}

/// Neutron's default allocation pool for an IPv4 `subnet` (every host address but the
/// gateway) less the `reserved` blocks, as inclusive ranges in address order.
pub fn allocation_pools(
    subnet: Ipv4Network,
    gateway: Ipv4Addr,
    reserved: &[Ipv4Network],
) -> Vec<AllocationPool> {
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let taken =
        |a: u32| a == u32::from(gateway) || reserved.iter().any(|n| n.contains(Ipv4Addr::from(a)));
    let mut pools = Vec::new();
    let mut start: Option<u32> = None;
    for a in first..=last {
        match (taken(a), start) {
            (false, None) => start = Some(a),
            (true, Some(s)) => {
                pools.push(AllocationPool::new(s, a - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        pools.push(AllocationPool::new(s, last));
    }
    pools
}

/// One inclusive range of a subnet's `allocation_pools`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl AllocationPool {
    fn new(start: u32, end: u32) -> Self {
        AllocationPool {
            start: start.into(),
            end: end.into(),
        }
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(a))
    }
}

/// Everything `cloudpipe openstack NETWORK` launches, Neutron's field names throughout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The Neutron network (name or ID) of the tenant subnet.
    pub network: String,
    /// The tenant network's MTU the clients' configs are made for (their `MTU =` is
    /// this less WireGuard's overhead); `openstack network show -c mtu` must agree.
    pub mtu: u16,
    pub subnet: Subnet,
    pub security_group: SecurityGroup,
    pub port: Port,
    pub floating_ip: FloatingIp,
    pub server: Server,
}

/// The tenant subnet, picked by its range, and the allocation pools it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    pub cidr: Ipv4Network,
    pub gateway_ip: Ipv4Addr,
    /// Neutron's default pools less [`Subnet::reserved`]: what `openstack subnet set
    /// --no-allocation-pool --allocation-pool ...` sets.
    pub allocation_pools: Vec<AllocationPool>,
    /// The appliance's address and the client pool: never to be given to another port.
    pub reserved: Vec<Ipv4Network>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    pub name: String,
    pub description: String,
    /// Ingress rules; Neutron adds its default egress rules (all IPv4 and IPv6) itself.
    pub rules: Vec<SecurityGroupRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    /// `ingress`.
    pub direction: String,
    /// `IPv4`.
    pub ethertype: String,
    /// `udp`, `icmp`, ...; `None` for any protocol.
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Ipv4Network,
    /// Why the rule is there.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub fixed_ips: Vec<FixedIp>,
    pub allowed_address_pairs: Vec<AddressPair>,
    /// Security group names.
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedIp {
    pub ip_address: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPair {
    pub ip_address: Ipv4Network,
}

/// The public address. Neutron's default policy lets a project member allocate a
/// floating IP, not choose its address (`--floating-ip-address` is admin-only): with
/// an address, the recipe reuses the one the project holds; without, it allocates one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIp {
    /// The external network it comes from.
    pub floating_network: String,
    /// The address the project already holds (the network's endpoint), or `None`.
    pub floating_ip_address: Option<Ipv4Addr>,
    /// The port it is attached to.
    pub port: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    pub image: String,
    pub flavor: String,
    pub port: String,
    /// The file given to `--user-data`.
    pub user_data: String,
    /// The payload encoding that file holds ([`USER_DATA_ENCODING`]).
    pub user_data_encoding: String,
}

/// The names and choices a recipe needs beyond the network's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeOptions {
    /// The Neutron network (name or ID).
    pub network: String,
    /// The external network floating IPs come from.
    pub external_network: String,
    pub image: String,
    pub flavor: String,
    /// The tenant network's MTU the network was made for.
    pub mtu: u16,
    /// The endpoint's address when it is one (a floating IP the project holds).
    pub floating_ip: Option<Ipv4Addr>,
}

impl Recipe {
    /// The recipe for `config`. Resource names derive from the network's name:
    /// security group, port and server are all `cloudpipe-NAME`.
    pub fn new(config: &Config, o: &RecipeOptions) -> Result<Recipe, CoverError> {
        let name = format!("cloudpipe-{}", config.network);
        let any = Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0");
        let rule = |protocol: Option<&str>, port: Option<u16>, from: Ipv4Network, why: String| {
            SecurityGroupRule {
                direction: "ingress".into(),
                ethertype: "IPv4".into(),
                protocol: protocol.map(str::to_string),
                port_range_min: port,
                port_range_max: port,
                remote_ip_prefix: from,
                description: why,
            }
        };
        let mut rules = vec![
            rule(
                Some("udp"),
                Some(config.listen_port),
                any,
                format!("WireGuard on UDP {} from anywhere", config.listen_port),
            ),
            rule(
                Some("icmp"),
                None,
                any,
                "ICMP from anywhere: ping and path MTU discovery".into(),
            ),
        ];
        // Named on its own, though the tenant subnet's rule below covers it: the group
        // says why the port is open, and to whom only.
        if let Some(p) = config.status_port {
            rules.push(rule(
                Some("tcp"),
                Some(p),
                config.subnet,
                format!("live status and metrics on TCP {p}, for the tenant subnet only"),
            ));
        }
        match config.mode {
            Mode::ProxyArp => {
                rules.push(rule(
                    None,
                    None,
                    config.subnet,
                    format!(
                        "the tenant subnet reaches clients: their pool addresses {}-{} arrive at this port",
                        config.pool.first(),
                        config.pool.last()
                    ),
                ));
                // Hosts behind the pushed routes may open connections to clients too.
                // A default route is left out: it would open every port to the world.
                for r in config.routes.iter().filter(|r| r.prefix() > 0) {
                    rules.push(rule(
                        None,
                        None,
                        *r,
                        format!("the pushed route {r} reaches clients"),
                    ));
                }
            }
            Mode::Masquerade => rules.push(rule(
                None,
                None,
                config.subnet,
                "the tenant subnet reaches the appliance, which clients leave through".into(),
            )),
        }
        let reserved = reserved(config)?;
        Ok(Recipe {
            network: o.network.clone(),
            mtu: o.mtu,
            subnet: Subnet {
                cidr: config.subnet,
                gateway_ip: config.gateway,
                allocation_pools: allocation_pools(config.subnet, config.gateway, &reserved),
                reserved,
            },
            security_group: SecurityGroup {
                name: name.clone(),
                description: format!("cloudpipe of network {}", config.network),
                rules,
            },
            port: Port {
                name: name.clone(),
                fixed_ips: vec![FixedIp {
                    ip_address: config.address,
                }],
                allowed_address_pairs: allowed_address_pairs(config)?
                    .into_iter()
                    .map(|ip_address| AddressPair { ip_address })
                    .collect(),
                security_groups: vec![name.clone()],
            },
            floating_ip: FloatingIp {
                floating_network: o.external_network.clone(),
                floating_ip_address: o.floating_ip,
                port: name.clone(),
            },
            server: Server {
                name: name.clone(),
                image: o.image.clone(),
                flavor: o.flavor.clone(),
                port: name.clone(),
                user_data: format!("{name}.user-data"),
                user_data_encoding: USER_DATA_ENCODING.into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, PoolFile};
    use crate::keys::PrivateKey;
    use crate::pool::Pool;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn config(cidr: &str, clients: u32, mode: Mode) -> Config {
        let subnet = net(cidr);
        let host = |n: u32| Ipv4Addr::from(u32::from(subnet.network()) + n);
        let pool = Pool::nova_default(
            subnet,
            clients,
            &[(host(1), "gateway"), (host(2), "appliance")],
        )
        .unwrap();
        Config::try_from(ConfigFile {
            pool: Some(PoolFile {
                first: pool.first(),
                last: pool.last(),
            }),
            mode,
            routes: vec!["192.168.50.0/24".into()],
            ..ConfigFile::new("n", cidr, &PrivateKey::from_bytes([1; 32]))
        })
        .unwrap()
    }

    fn options() -> RecipeOptions {
        RecipeOptions {
            network: "n".into(),
            external_network: "public".into(),
            image: "cloudpipe".into(),
            flavor: "m1.small".into(),
            mtu: 1450,
            floating_ip: None,
        }
    }

    #[test]
    fn nova_pools_need_one_or_two_pairs() {
        // 5 clients, .250-.254: one /29 (.248 and .249 are reserved with it).
        let c = config("10.0.0.0/24", 5, Mode::ProxyArp);
        assert_eq!(
            allowed_address_pairs(&c).unwrap(),
            vec![net("10.0.0.248/29")]
        );
        // 126 clients, .129-.254: exactly 12 blocks, or the /25 as one pair.
        let c = config("10.0.0.0/24", 126, Mode::ProxyArp);
        assert_eq!(c.pool.cidrs().len(), 12);
        assert_eq!(
            allowed_address_pairs(&c).unwrap(),
            vec![net("10.0.0.128/25")]
        );
        // 251 clients, .4-.254: the /24 holds the gateway; its halves are split
        // until the gateway's /31 is left out.
        let c = config("10.0.0.0/24", 251, Mode::ProxyArp);
        let pairs = allowed_address_pairs(&c).unwrap();
        assert!(!pairs.iter().any(|p| p.contains(c.gateway)), "{pairs:?}");
        assert_eq!(
            pairs,
            vec![
                net("10.0.0.4/30"),
                net("10.0.0.8/29"),
                net("10.0.0.16/28"),
                net("10.0.0.32/27"),
                net("10.0.0.64/26"),
                net("10.0.0.128/25")
            ]
        );
    }

    #[test]
    fn masquerade_needs_no_pairs_but_reserves_the_pool() {
        let c = config("10.0.0.0/24", 5, Mode::Masquerade);
        assert!(allowed_address_pairs(&c).unwrap().is_empty());
        assert_eq!(
            reserved(&c).unwrap(),
            vec![
                net("10.0.0.2/32"),
                net("10.0.0.250/31"),
                net("10.0.0.252/31"),
                net("10.0.0.254/32")
            ]
        );
    }

    #[test]
    fn a_pool_that_needs_more_than_ten_pairs_is_refused_with_the_reason() {
        // A /16 whose pool starts right above the appliance: the gateway at .0.1
        // forbids every block holding it, so the pool's bottom needs one block per bit.
        let mut f = ConfigFile::new("n", "10.0.0.0/16", &PrivateKey::from_bytes([1; 32]));
        f.pool = Some(PoolFile {
            first: ip("10.0.0.3"),
            last: ip("10.0.255.254"),
        });
        let c = Config::try_from(f).unwrap();
        let e = allowed_address_pairs(&c).unwrap_err();
        assert!(
            matches!(
                e,
                CoverError::TooManyPairs {
                    needed: 15,
                    max: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("max_allowed_address_pair"), "{e}");
    }

    #[test]
    fn allocation_pools_leave_out_gateway_appliance_and_clients() {
        let c = config("10.0.0.0/24", 5, Mode::ProxyArp);
        let r = Recipe::new(&c, &options()).unwrap();
        assert_eq!(
            r.subnet.allocation_pools,
            vec![AllocationPool {
                start: ip("10.0.0.3"),
                end: ip("10.0.0.247")
            }]
        );
        // A gateway and appliance elsewhere split the pools.
        let pools = allocation_pools(
            net("10.0.0.0/24"),
            ip("10.0.0.100"),
            &[net("10.0.0.50/32"), net("10.0.0.248/29")],
        );
        let pairs: Vec<(Ipv4Addr, Ipv4Addr)> = pools.iter().map(|p| (p.start, p.end)).collect();
        assert_eq!(
            pairs,
            vec![
                (ip("10.0.0.1"), ip("10.0.0.49")),
                (ip("10.0.0.51"), ip("10.0.0.99")),
                (ip("10.0.0.101"), ip("10.0.0.247"))
            ]
        );
    }

    #[test]
    fn the_security_group_admits_the_tenant_subnet_and_pushed_routes() {
        let r = Recipe::new(&config("10.0.0.0/24", 5, Mode::ProxyArp), &options()).unwrap();
        let rules: Vec<(Option<&str>, Option<u16>, String)> = r
            .security_group
            .rules
            .iter()
            .map(|x| {
                (
                    x.protocol.as_deref(),
                    x.port_range_min,
                    x.remote_ip_prefix.to_string(),
                )
            })
            .collect();
        assert_eq!(
            rules,
            vec![
                (Some("udp"), Some(1194), "0.0.0.0/0".to_string()),
                (Some("icmp"), None, "0.0.0.0/0".to_string()),
                (None, None, "10.0.0.0/24".to_string()),
                (None, None, "192.168.50.0/24".to_string()),
            ]
        );
        assert!(r
            .security_group
            .rules
            .iter()
            .all(|x| x.direction == "ingress"));
        assert_eq!(r.port.security_groups, vec![r.security_group.name.clone()]);
        assert_eq!(
            r.port.fixed_ips,
            vec![FixedIp {
                ip_address: ip("10.0.0.2")
            }]
        );
        assert_eq!(r.server.user_data_encoding, "guest");
        // JSON round trip, Neutron's field names.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["port"]["allowed_address_pairs"][0]["ip_address"],
            "10.0.0.248/29"
        );
        assert_eq!(json["subnet"]["allocation_pools"][0]["start"], "10.0.0.3");
        assert_eq!(serde_json::from_value::<Recipe>(json).unwrap(), r);
    }

    /// The fewest aligned blocks inside `subnet`, none holding `gw`, that cover
    /// `lo..=hi`, by dynamic programming over the first uncovered address: some block
    /// must hold it, and after the best such block the rest is the same problem.
    fn naive_fewest(lo: u32, hi: u32, subnet: Ipv4Network, gw: u32) -> usize {
        let (start, end) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
        let mut best = vec![0usize; (hi - lo + 2) as usize];
        for i in (lo..=hi).rev() {
            let mut m = usize::MAX;
            for bits in 0..=(32 - subnet.prefix() as u32) {
                let b0 = i & !((1u64 << bits) - 1) as u32;
                let b1 = b0 + ((1u64 << bits) - 1) as u32;
                if b0 < start || b1 > end || (b0..=b1).contains(&gw) {
                    continue;
                }
                let rest = if b1 >= hi {
                    0
                } else {
                    best[(b1 + 1 - lo) as usize]
                };
                m = m.min(rest + 1);
            }
            best[(i - lo) as usize] = m;
        }
        best[0]
    }

    proptest! {
        // Against a naive reference: every pool address is covered, no block holds
        // the gateway or leaves the subnet, and no cover with fewer blocks exists
        // (checked by brute force: the blocks are aligned, so for one or two blocks
        // every candidate can be tried).
        #[test]
        fn covers_are_complete_minimal_and_leave_out_the_gateway(
            prefix in 22u8..=29, gw_off in 1u32..6, first_off in 0u32..1024, len in 0u32..1024,
        ) {
            let subnet = Ipv4Network::new(ip("10.1.0.0"), prefix).unwrap();
            let size = 1u32 << (32 - prefix);
            let base = u32::from(subnet.network());
            let gw = base + gw_off.min(size - 2);
            let lo = (base + 1 + first_off % (size - 2)).max(gw + 1);
            prop_assume!(lo < base + size - 1);
            let hi = (lo + len).min(base + size - 2);
            let blocks = cover(lo.into(), hi.into(), subnet, &[gw.into()]).unwrap();
            for a in lo..=hi {
                prop_assert!(blocks.iter().any(|b| b.contains(a.into())), "{a} uncovered");
            }
            for b in &blocks {
                prop_assert!(!b.contains(gw.into()));
                prop_assert!(subnet.contains(b.network()) && subnet.contains(b.broadcast()));
            }
            prop_assert_eq!(blocks.len(), naive_fewest(lo, hi, subnet, gw));
        }
    }
}
