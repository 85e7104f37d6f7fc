//! The allowed-IPs table: WireGuard's cryptokey routing table (whitepaper section
//! 2, "Cryptokey Routing"), a longest-prefix-match map from IP networks to peers.
//!
//! Outbound, the destination of a packet read from the TUN device picks the peer
//! that gets it; inbound, the source of a packet decrypted from a peer must map back
//! to that same peer. One network belongs to at most one peer: inserting a network
//! that is already present moves it to the new value, as `wg set ... allowed-ips`
//! does.
//!
//! A path-compressed binary trie per address family (the shape of wireguard-go's
//! `device/allowedips.go`, written anew): every node holds a prefix; a lookup walks
//! at most one node per distinct prefix length on its path and keeps the last node
//! with a value. Addresses are handled as 128-bit keys, IPv4 left-aligned.

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A longest-prefix-match table from networks to values `T` (peers).
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Option<Box<Node<T>>>,
    v6: Option<Box<Node<T>>>,
    len: usize,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: None,
            v6: None,
            len: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct Node<T> {
    /// The prefix's bits, left-aligned, host bits zero.
    bits: u128,
    /// Prefix length in bits (0..=32 for IPv4, 0..=128 for IPv6).
    cidr: u8,
    value: Option<T>,
    child: [Option<Box<Node<T>>>; 2],
}

fn mask(cidr: u8) -> u128 {
    match cidr {
        0 => 0,
        c => u128::MAX << (128 - u32::from(c)),
    }
}

/// Bit `i` (0 = most significant) of `key`.
fn bit(key: u128, i: u8) -> usize {
    debug_assert!(i < 128);
    ((key >> (127 - u32::from(i))) & 1) as usize
}

fn key_of(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn network_of(bits: u128, cidr: u8, v4: bool) -> IpNetwork {
    if v4 {
        let a = Ipv4Addr::from((bits >> 96) as u32);
        IpNetwork::V4(Ipv4Network::new(a, cidr).expect("cidr <= 32 by construction"))
    } else {
        IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(bits), cidr).expect("cidr <= 128"))
    }
}

impl<T> Node<T> {
    fn leaf(bits: u128, cidr: u8, value: T) -> Box<Self> {
        Box::new(Node {
            bits: bits & mask(cidr),
            cidr,
            value: Some(value),
            child: [None, None],
        })
    }
}

impl<T> AllowedIps<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of networks in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn root_mut(&mut self, v4: bool) -> &mut Option<Box<Node<T>>> {
        if v4 {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Map `net` (its host bits are ignored) to `value`; returns the value it held
    /// before, if any.
    pub fn insert(&mut self, net: IpNetwork, value: T) -> Option<T> {
        let (key, cidr, v4) = parts(net);
        let old = insert(self.root_mut(v4), key, cidr, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Remove `net` exactly (not networks inside it); returns its value.
    pub fn remove(&mut self, net: IpNetwork) -> Option<T> {
        let (key, cidr, v4) = parts(net);
        let old = remove(self.root_mut(v4), key, cidr);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Remove every network whose value matches `pred`; returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let n = remove_where(&mut self.v4, &mut pred) + remove_where(&mut self.v6, &mut pred);
        self.len -= n;
        n
    }

    /// The value of the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let (root, width) = match addr {
            IpAddr::V4(_) => (&self.v4, 32),
            IpAddr::V6(_) => (&self.v6, 128),
        };
        let key = key_of(addr);
        let mut node = root.as_deref();
        let mut best = None;
        while let Some(n) = node {
            if key & mask(n.cidr) != n.bits {
                break;
            }
            if n.value.is_some() {
                best = n.value.as_ref();
            }
            if n.cidr >= width {
                break;
            }
            node = n.child[bit(key, n.cidr)].as_deref();
        }
        best
    }

    /// The value of exactly `net`, if present.
    pub fn get(&self, net: IpNetwork) -> Option<&T> {
        let (key, cidr, v4) = parts(net);
        let mut node = if v4 { &self.v4 } else { &self.v6 }.as_deref();
        while let Some(n) = node {
            if n.cidr > cidr || key & mask(n.cidr) != n.bits {
                return None;
            }
            if n.cidr == cidr {
                return n.value.as_ref();
            }
            node = n.child[bit(key, n.cidr)].as_deref();
        }
        None
    }

    /// Every network and its value: IPv4 first, each family in address order with
    /// a prefix before the networks inside it.
    pub fn iter(&self) -> impl Iterator<Item = (IpNetwork, &T)> {
        let mut out = Vec::with_capacity(self.len);
        collect(self.v4.as_deref(), true, &mut out);
        collect(self.v6.as_deref(), false, &mut out);
        out.into_iter()
    }
}

fn parts(net: IpNetwork) -> (u128, u8, bool) {
    let v4 = net.is_ipv4();
    (key_of(net.ip()) & mask(net.prefix()), net.prefix(), v4)
}

fn insert<T>(slot: &mut Option<Box<Node<T>>>, key: u128, cidr: u8, value: T) -> Option<T> {
    let Some(node) = slot else {
        *slot = Some(Node::leaf(key, cidr, value));
        return None;
    };
    let common = ((node.bits ^ key).leading_zeros() as u8)
        .min(node.cidr)
        .min(cidr);
    if common == node.cidr && common == cidr {
        return node.value.replace(value);
    }
    if common == node.cidr {
        let b = bit(key, node.cidr);
        return insert(&mut node.child[b], key, cidr, value);
    }
    let old = slot.take().expect("matched Some above");
    let mut up = if common == cidr {
        // The new prefix contains the old node: it becomes the parent.
        Node::leaf(key, cidr, value)
    } else {
        // They diverge at bit `common`: a valueless branch node above both.
        let mut branch = Box::new(Node {
            bits: key & mask(common),
            cidr: common,
            value: None,
            child: [None, None],
        });
        branch.child[bit(key, common)] = Some(Node::leaf(key, cidr, value));
        branch
    };
    let b = bit(old.bits, common);
    up.child[b] = Some(old);
    *slot = Some(up);
    None
}

/// Drop a node that no longer holds a value and has fewer than two children.
fn prune<T>(slot: &mut Option<Box<Node<T>>>) {
    if let Some(node) = slot {
        if node.value.is_none() {
            match (node.child[0].is_some(), node.child[1].is_some()) {
                (true, true) => {}
                (true, false) => *slot = node.child[0].take(),
                (false, true) => *slot = node.child[1].take(),
                (false, false) => *slot = None,
            }
        }
    }
}

fn remove<T>(slot: &mut Option<Box<Node<T>>>, key: u128, cidr: u8) -> Option<T> {
    let node = slot.as_mut()?;
    if node.cidr > cidr || key & mask(node.cidr) != node.bits {
        return None;
    }
    let old = if node.cidr == cidr {
        node.value.take()
    } else {
        let b = bit(key, node.cidr);
        remove(&mut node.child[b], key, cidr)
    };
    prune(slot);
    old
}

fn remove_where<T>(slot: &mut Option<Box<Node<T>>>, pred: &mut impl FnMut(&T) -> bool) -> usize {
    let Some(node) = slot else { return 0 };
    let mut n = 0;
    if node.value.as_ref().is_some_and(&mut *pred) {
        node.value = None;
        n += 1;
    }
    for c in &mut node.child {
        n += remove_where(c, pred);
    }
    prune(slot);
    n
}

fn collect<'a, T>(node: Option<&'a Node<T>>, v4: bool, out: &mut Vec<(IpNetwork, &'a T)>) {
    let Some(n) = node else { return };
    if let Some(v) = &n.value {
        out.push((network_of(n.bits, n.cidr, v4), v));
    }
    collect(n.child[0].as_deref(), v4, out);
    collect(n.child[1].as_deref(), v4, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/8"), 'a');
        t.insert(net("10.1.0.0/16"), 'b');
        t.insert(net("10.1.2.3/32"), 'c');
        t.insert(net("0.0.0.0/0"), 'z');
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&'c'));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&'b'));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(&'a'));
        assert_eq!(t.lookup(ip("192.168.1.1")), Some(&'z'));
        assert_eq!(t.lookup(ip("::1")), None, "families are separate");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn host_bits_are_ignored_and_reinsert_moves() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.0.0.7/24"), 1), None);
        assert_eq!(t.get(net("10.0.0.0/24")), Some(&1));
        assert_eq!(t.insert(net("10.0.0.0/24"), 2), Some(1));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn remove_exact_and_prune() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/24"), 1);
        t.insert(net("10.0.0.128/25"), 2);
        assert_eq!(t.remove(net("10.0.0.0/25")), None);
        assert_eq!(t.remove(net("10.0.0.0/24")), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
        assert_eq!(t.lookup(ip("10.0.0.200")), Some(&2));
        assert_eq!(t.remove_where(|v| *v == 2), 1);
        assert!(t.is_empty());
        assert!(t.v4.is_none(), "no valueless nodes left behind");
    }

    #[test]
    fn ipv6_and_full_length_prefixes() {
        let mut t = AllowedIps::new();
        t.insert(net("fd00::/64"), 'a');
        t.insert(net("fd00::1/128"), 'b');
        t.insert(net("::/0"), 'z');
        t.insert(net("255.255.255.255/32"), 'm');
        assert_eq!(t.lookup(ip("fd00::1")), Some(&'b'));
        assert_eq!(t.lookup(ip("fd00::2")), Some(&'a'));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(&'z'));
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(&'m'));
        let all: Vec<_> = t.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        assert_eq!(all[0], ("255.255.255.255/32".to_string(), 'm'));
        assert_eq!(all.len(), 4);
    }

    /// A naive model: a list, searched for the longest containing prefix.
    #[derive(Default)]
    struct Naive(Vec<(IpNetwork, u8)>);
    impl Naive {
        fn insert(&mut self, n: IpNetwork, v: u8) {
            let n = normalize(n);
            self.0.retain(|(m, _)| *m != n);
            self.0.push((n, v));
        }
        fn remove(&mut self, n: IpNetwork) {
            let n = normalize(n);
            self.0.retain(|(m, _)| *m != n);
        }
        fn lookup(&self, a: IpAddr) -> Option<u8> {
            self.0
                .iter()
                .filter(|(n, _)| n.contains(a))
                .max_by_key(|(n, _)| n.prefix())
                .map(|(_, v)| *v)
        }
    }
    fn normalize(n: IpNetwork) -> IpNetwork {
        IpNetwork::new(n.network(), n.prefix()).unwrap()
    }

    fn arb_v4() -> impl Strategy<Value = IpNetwork> {
        // Few distinct high bits so that prefixes nest and collide often.
        (0u32..16, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, p)| {
            let a = (hi << 28) | (lo & 0x0300_00ff);
            IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(a), p).unwrap())
        })
    }
    fn arb_v6() -> impl Strategy<Value = IpNetwork> {
        (0u128..8, any::<u128>(), 0u8..=128).prop_map(|(hi, lo, p)| {
            let a = (hi << 125) | (lo & 0xff00_0000_0000_0000_0000_0000_0000_00ff);
            IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(a), p).unwrap())
        })
    }
    fn arb_net() -> impl Strategy<Value = IpNetwork> {
        prop_oneof![arb_v4(), arb_v6()]
    }

    /// The trie's own rules, which lookups alone would not notice breaking: every
    /// node's prefix has no host bits and extends its parent's by at least one bit
    /// (the child on the side of the parent's next bit), no node without a value has
    /// fewer than two children (`prune`), and `len` counts the values.
    fn assert_shape<T>(t: &AllowedIps<T>) {
        fn walk<T>(n: &Node<T>, width: u8, parent: Option<(u128, u8, usize)>) -> usize {
            assert!(n.cidr <= width, "/{} in a {width}-bit family", n.cidr);
            assert_eq!(n.bits & !mask(n.cidr), 0, "host bits in /{}", n.cidr);
            if let Some((bits, cidr, side)) = parent {
                assert!(n.cidr > cidr, "a child /{} under /{cidr}", n.cidr);
                assert_eq!(n.bits & mask(cidr), bits, "a child outside its parent");
                assert_eq!(bit(n.bits, cidr), side, "a child on the wrong side");
            }
            let children = n.child.iter().flatten().count();
            assert!(
                n.value.is_some() || children == 2,
                "a prunable node is left"
            );
            let mut values = usize::from(n.value.is_some());
            for (side, c) in n.child.iter().enumerate() {
                if let Some(c) = c {
                    values += walk(c, width, Some((n.bits, n.cidr, side)));
                }
            }
            values
        }
        let v4 = t.v4.as_deref().map_or(0, |n| walk(n, 32, None));
        let v6 = t.v6.as_deref().map_or(0, |n| walk(n, 128, None));
        assert_eq!(v4 + v6, t.len(), "len counts the values");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        // Random inserts and removes, then lookups of addresses in, at the edges of
        // and just outside the networks used, against the naive model
        // (wireguard-go's allowedips_rand_test idea); what each change returns, the
        // trie's shape after each, and the order `iter` promises.
        #[test]
        fn agrees_with_naive_model(
            ops in proptest::collection::vec((0u8..4, arb_net(), 0u8..8), 1..120),
            probes in proptest::collection::vec(arb_net(), 1..60),
        ) {
            let mut t = AllowedIps::new();
            let mut m = Naive::default();
            for (op, n, v) in &ops {
                let before = m.0.iter().find(|(k, _)| *k == normalize(*n)).map(|(_, x)| *x);
                match op {
                    0 => {
                        prop_assert_eq!(t.remove(*n), before);
                        m.remove(*n);
                    }
                    1 => {
                        let gone = m.0.iter().filter(|(_, x)| x == v).count();
                        prop_assert_eq!(t.remove_where(|x| x == v), gone);
                        m.0.retain(|(_, x)| x != v);
                    }
                    _ => {
                        prop_assert_eq!(t.insert(*n, *v), before);
                        m.insert(*n, *v);
                    }
                }
                prop_assert_eq!(t.len(), m.0.len());
                assert_shape(&t);
            }
            for p in ops.iter().map(|(_, n, _)| *n).chain(probes) {
                let edges = [p.ip(), p.network(), p.broadcast_or_last()];
                let outside = [step(p.network(), -1), step(p.broadcast_or_last(), 1)];
                for a in edges.into_iter().chain(outside.into_iter().flatten()) {
                    prop_assert_eq!(t.lookup(a).copied(), m.lookup(a), "lookup {}", a);
                }
                prop_assert_eq!(t.get(p).copied(), m.0.iter().find(|(n, _)| *n == normalize(p)).map(|(_, v)| *v));
            }
            // IPv4 first; in each family by address, a prefix before the networks
            // inside it.
            let listed: Vec<_> = t.iter().map(|(n, v)| (n, *v)).collect();
            let key = |n: &IpNetwork| (n.is_ipv6(), key_of(n.network()), n.prefix());
            let mut model = m.0.clone();
            model.sort_by_key(|(n, _)| key(n));
            prop_assert_eq!(listed, model);
        }
    }

    /// The address `d` (plus or minus one) away from `a`, if there is one.
    fn step(a: IpAddr, d: i8) -> Option<IpAddr> {
        match a {
            IpAddr::V4(v) => u32::from(v)
                .checked_add_signed(d.into())
                .map(|x| IpAddr::V4(x.into())),
            IpAddr::V6(v) => {
                let x = u128::from(v);
                let y = if d < 0 {
                    x.checked_sub(1)
                } else {
                    x.checked_add(1)
                };
                y.map(|y| IpAddr::V6(y.into()))
            }
        }
    }

    trait LastAddr {
        fn broadcast_or_last(&self) -> IpAddr;
    }
    impl LastAddr for IpNetwork {
        fn broadcast_or_last(&self) -> IpAddr {
            match self {
                IpNetwork::V4(n) => IpAddr::V4(n.broadcast()),
                IpNetwork::V6(n) => {
                    let last = u128::from(n.network()) | !mask(n.prefix());
                    IpAddr::V6(Ipv6Addr::from(last))
                }
            }
        }
    }
}
