//! The client address pool: a contiguous range of IPv4 addresses inside the tenant
//! subnet, handed to clients one each.
//!
//! Nova reserved the top `cnt_vpn_clients` addresses below broadcast (a /24 with five
//! clients: .250-.254); [`Pool::nova_default`] computes the same range.

use ipnetwork::Ipv4Network;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pool {first}-{last} is empty: first is above last")]
    Empty { first: Ipv4Addr, last: Ipv4Addr },
    #[error("{addr} is outside the subnet {subnet}")]
    OutsideSubnet { addr: Ipv4Addr, subnet: Ipv4Network },
    #[error("{addr} is the subnet's {what} and cannot be handed to a client")]
    Reserved { addr: Ipv4Addr, what: &'static str },
    #[error("a pool holds at least 1 client (0 given)")]
    NoClients,
    #[error("{clients} clients do not fit below broadcast in {subnet} (at most {max})")]
    TooMany {
        clients: u32,
        subnet: Ipv4Network,
        max: u32,
    },
}

/// An inclusive range `first..=last` of client addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl Pool {
    /// A pool checked against the subnet: inside it, not its network or broadcast
    /// address, and not one of the `reserved` addresses (gateway, appliance).
    pub fn new(
        first: Ipv4Addr,
        last: Ipv4Addr,
        subnet: Ipv4Network,
        reserved: &[(Ipv4Addr, &'static str)],
    ) -> Result<Self, PoolError> {
        if u32::from(first) > u32::from(last) {
            return Err(PoolError::Empty { first, last });
        }
        for addr in [first, last] {
            if !subnet.contains(addr) {
                return Err(PoolError::OutsideSubnet { addr, subnet });
            }
        }
        let pool = Pool { first, last };
        let mut all = vec![
            (subnet.network(), "network address"),
            (subnet.broadcast(), "broadcast address"),
        ];
        all.extend_from_slice(reserved);
        for (addr, what) in all {
            if pool.contains(addr) {
                return Err(PoolError::Reserved { addr, what });
            }
        }
        Ok(pool)
    }

    /// Nova's rule: the top `clients` addresses below broadcast.
    pub fn nova_default(
        subnet: Ipv4Network,
        clients: u32,
        reserved: &[(Ipv4Addr, &'static str)],
    ) -> Result<Self, PoolError> {
        let broadcast = u32::from(subnet.broadcast());
        let network = u32::from(subnet.network());
        // Hosts above the network address, below broadcast, minus the reserved ones
        // at the bottom (gateway .1 and appliance .2 in the usual layout).
        let max = broadcast
            .saturating_sub(network)
            .saturating_sub(1 + reserved.len() as u32);
        if clients == 0 {
            return Err(PoolError::NoClients);
        }
        if clients > max {
            return Err(PoolError::TooMany {
                clients,
                subnet,
                max,
            });
        }
        Self::new(
            Ipv4Addr::from(broadcast - clients),
            Ipv4Addr::from(broadcast - 1),
            subnet,
            reserved,
        )
    }

    pub fn first(&self) -> Ipv4Addr {
        self.first
    }
    pub fn last(&self) -> Ipv4Addr {
        self.last
    }
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(addr))
    }
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }

    /// The lowest pool address not in `used`, or `None` when the pool is full.
    pub fn next_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.iter().find(|a| !used.contains(a))
    }

    /// The smallest set of CIDR blocks that covers exactly this range: what is routed
    /// through the TUN, listed in allowed-address-pairs, or masqueraded.
    pub fn cidrs(&self) -> Vec<Ipv4Network> {
        range_to_cidrs(self.first, self.last)
    }
}

/// Split `first..=last` into aligned CIDR blocks, largest first.
pub fn range_to_cidrs(first: Ipv4Addr, last: Ipv4Addr) -> Vec<Ipv4Network> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u64::from(u32::from(first)), u64::from(u32::from(last)));
    while lo <= hi {
        // Largest block aligned at `lo` that does not pass `hi`.
        let mut size = if lo == 0 {
            1u64 << 32
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let prefix = 32 - size.trailing_zeros() as u8;
        out.push(Ipv4Network::new(Ipv4Addr::from(lo as u32), prefix).expect("prefix <= 32"));
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }
    const RES: [(Ipv4Addr, &str); 2] = [
        (Ipv4Addr::new(10, 0, 0, 1), "gateway"),
        (Ipv4Addr::new(10, 0, 0, 2), "appliance address"),
    ];

    #[test]
    fn nova_rule_top_addresses_below_broadcast() {
        let p = Pool::nova_default(net("10.0.0.0/24"), 5, &RES).unwrap();
        assert_eq!(p.first(), Ipv4Addr::new(10, 0, 0, 250));
        assert_eq!(p.last(), Ipv4Addr::new(10, 0, 0, 254));
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn nova_rule_refuses_what_does_not_fit() {
        // /29: .0 net, .1 gw, .2 appliance, .3-.6 usable, .7 broadcast.
        assert!(Pool::nova_default(net("10.0.0.0/29"), 4, &RES).is_ok());
        assert_eq!(
            Pool::nova_default(net("10.0.0.0/29"), 5, &RES),
            Err(PoolError::TooMany {
                clients: 5,
                subnet: net("10.0.0.0/29"),
                max: 4
            })
        );
        assert_eq!(
            Pool::nova_default(net("10.0.0.0/24"), 0, &RES),
            Err(PoolError::NoClients)
        );
    }

    #[test]
    fn pool_rejects_reserved_and_outside() {
        let s = net("10.0.0.0/24");
        let a = |o| Ipv4Addr::new(10, 0, 0, o);
        assert!(matches!(
            Pool::new(a(1), a(9), s, &RES),
            Err(PoolError::Reserved {
                what: "gateway",
                ..
            })
        ));
        assert!(matches!(
            Pool::new(a(250), a(255), s, &RES),
            Err(PoolError::Reserved { .. })
        ));
        assert!(matches!(
            Pool::new(a(250), Ipv4Addr::new(10, 0, 1, 3), s, &RES),
            Err(PoolError::OutsideSubnet { .. })
        ));
        assert!(matches!(
            Pool::new(a(9), a(3), s, &RES),
            Err(PoolError::Empty { .. })
        ));
    }

    #[test]
    fn next_free_skips_used() {
        let p = Pool::nova_default(net("10.0.0.0/24"), 3, &RES).unwrap();
        let mut used = BTreeSet::new();
        used.insert(Ipv4Addr::new(10, 0, 0, 252));
        assert_eq!(p.next_free(&used), Some(Ipv4Addr::new(10, 0, 0, 253)));
        used.extend(p.iter());
        assert_eq!(p.next_free(&used), None);
    }

    #[test]
    fn cidrs_of_nova_pool() {
        let p = Pool::nova_default(net("10.0.0.0/24"), 5, &RES).unwrap();
        assert_eq!(
            p.cidrs(),
            vec![
                net("10.0.0.250/31"),
                net("10.0.0.252/31"),
                net("10.0.0.254/32")
            ]
        );
    }

    proptest! {
        // Against a naive reference: the blocks cover exactly the range, in order,
        // each aligned, and no two neighbours could be one block (so no shorter list
        // exists: Neutron allows 10 allowed address pairs per port).
        #[test]
        fn cidrs_cover_exactly(a in any::<u32>(), len in 0u32..5000) {
            let first = a;
            let last = a.saturating_add(len);
            let blocks = range_to_cidrs(Ipv4Addr::from(first), Ipv4Addr::from(last));
            let mut next = u64::from(first);
            for b in &blocks {
                prop_assert_eq!(u64::from(u32::from(b.network())), next);
                prop_assert_eq!(b.network(), b.ip());
                next += 1u64 << (32 - b.prefix());
            }
            prop_assert_eq!(next, u64::from(last) + 1);
            for w in blocks.windows(2) {
                let (x, y) = (w[0], w[1]);
                let size = 1u64 << (32 - x.prefix());
                let mergeable = x.prefix() == y.prefix()
                    && x.prefix() > 0
                    && u64::from(u32::from(x.network())) % (2 * size) == 0;
                prop_assert!(!mergeable, "{} and {} are one block", x, y);
            }
        }

        // Pool::new, nova_default, next_free and the accessors against naive
        // models that enumerate the subnet: a pool is valid when first <= last, both
        // are in the subnet, and no address in it is the network, broadcast or a
        // reserved address (errors in that order); Nova's pool is the top `clients`
        // addresses below broadcast; the next free address is the lowest unused one.
        // Reserved addresses are distinct hosts of the subnet (as the config's
        // checks leave gateway and appliance address).
        #[test]
        fn pools_agree_with_naive_models(
            base in any::<u32>(),
            prefix in 22u8..=32,
            first in 0u32..1100,
            len in 0u32..1100,
            clients in 0u32..1100,
            reserved_at in proptest::collection::btree_set(0u32..1100, 0..3),
            used in proptest::collection::btree_set(0u32..1100, 0..40),
        ) {
            let subnet = Ipv4Network::new(Ipv4Addr::from(base), prefix).unwrap();
            let (net, bcast) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
            let size = bcast - net + 1;
            let hosts: Vec<u32> = (net..=bcast).filter(|a| *a != net && *a != bcast).collect();
            let names = ["gateway", "appliance address", "third"];
            let reserved: Vec<(Ipv4Addr, &'static str)> = reserved_at
                .iter()
                .filter(|_| !hosts.is_empty())
                .map(|r| hosts[*r as usize % hosts.len()])
                .collect::<BTreeSet<u32>>()
                .into_iter()
                .zip(names)
                .map(|(a, n)| (Ipv4Addr::from(a), n))
                .collect();
            // Pool::new, with ends that may fall outside the subnet.
            let (f, l) = (net.wrapping_add(first % (size + 8)), net.wrapping_add((first + len) % (size + 8)));
            let naive_new = |f: u32, l: u32| -> Result<(u32, u32), PoolError> {
                let (fa, la) = (Ipv4Addr::from(f), Ipv4Addr::from(l));
                if f > l {
                    return Err(PoolError::Empty { first: fa, last: la });
                }
                for a in [fa, la] {
                    if !(net..=bcast).contains(&u32::from(a)) {
                        return Err(PoolError::OutsideSubnet { addr: a, subnet });
                    }
                }
                let special = [(net, "network address"), (bcast, "broadcast address")];
                for (a, what) in special.into_iter().chain(reserved.iter().map(|(a, w)| (u32::from(*a), *w))) {
                    if (f..=l).contains(&a) {
                        return Err(PoolError::Reserved { addr: Ipv4Addr::from(a), what });
                    }
                }
                Ok((f, l))
            };
            let got = Pool::new(Ipv4Addr::from(f), Ipv4Addr::from(l), subnet, &reserved);
            let want = naive_new(f, l);
            prop_assert_eq!(got.map(|p| (u32::from(p.first()), u32::from(p.last()))), want.clone());
            if let Ok(p) = Pool::new(Ipv4Addr::from(f), Ipv4Addr::from(l), subnet, &reserved) {
                let all: Vec<u32> = (f..=l).collect();
                prop_assert_eq!(p.len() as usize, all.len());
                prop_assert_eq!(p.iter().map(u32::from).collect::<Vec<_>>(), all.clone());
                for probe in [f.wrapping_sub(1), f, l, l.wrapping_add(1)] {
                    prop_assert_eq!(p.contains(Ipv4Addr::from(probe)), all.contains(&probe));
                }
                let used: BTreeSet<Ipv4Addr> = used.iter().map(|u| Ipv4Addr::from(f.wrapping_add(*u))).collect();
                let free = all.iter().map(|a| Ipv4Addr::from(*a)).find(|a| !used.contains(a));
                prop_assert_eq!(p.next_free(&used), free);
                let covered: Vec<u32> = p.cidrs().iter().flat_map(|c| {
                    let lo = u32::from(c.network());
                    (0..1u64 << (32 - c.prefix())).map(move |i| lo + i as u32)
                }).collect();
                prop_assert_eq!(covered, all);
            }
            // Nova's rule: the top `clients` hosts; too many when they would reach
            // below the hosts that are not reserved.
            let got = Pool::nova_default(subnet, clients, &reserved);
            let free_hosts = hosts.len() as u32 - reserved.len() as u32;
            if clients == 0 || clients > free_hosts {
                let too_many = matches!(got, Err(PoolError::TooMany { clients: c, max, .. }) if c == clients && max == free_hosts);
                prop_assert!(too_many, "{:?}", got);
            } else {
                let top = (bcast - clients, bcast - 1);
                let want = naive_new(top.0, top.1);
                prop_assert_eq!(got.map(|p| (u32::from(p.first()), u32::from(p.last()))), want);
            }
        }
    }
}
