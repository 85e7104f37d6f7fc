use super::*;
use crate::config::tests::sample_file;
use crate::keys::{PresharedKey, PrivateKey};
use crate::uapi::PeerUpdate;
use crate::wg::{DeviceConfig, Role};

/// The sample network: pool .250-.254 of 10.0.0.0/24, alice .250, bob .251.
fn config(mode: Mode) -> Config {
    let mut f = sample_file();
    f.mode = mode;
    Config::try_from(f).unwrap()
}

fn key(b: u8) -> PublicKey {
    PrivateKey::from_bytes([b; 32]).public_key()
}

fn peer(name: &str, b: u8, last: u8) -> Peer {
    Peer {
        name: name.into(),
        public_key: key(b),
        preshared_key: None,
        address: Ipv4Addr::new(10, 0, 0, last),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn wg_set(peers: Vec<PeerUpdate>) -> SetRequest {
    SetRequest {
        peers,
        ..SetRequest::default()
    }
}

fn remove(k: PublicKey) -> PeerUpdate {
    PeerUpdate {
        remove: true,
        ..PeerUpdate::new(k)
    }
}

fn with_ips(k: PublicKey, replace: bool, ips: &[&str]) -> PeerUpdate {
    PeerUpdate {
        replace_allowed_ips: replace,
        allowed_ips: ips.iter().map(|s| net(s)).collect(),
        ..PeerUpdate::new(k)
    }
}

fn keys(r: &Reconciler) -> Vec<PublicKey> {
    r.peers().map(|p| p.config.public_key).collect()
}

fn sorted(mut v: Vec<PublicKey>) -> Vec<PublicKey> {
    v.sort();
    v
}

#[test]
fn boot_yields_every_peer_and_its_proxy_entry() {
    let c = config(Mode::ProxyArp);
    let (r, d) = Reconciler::new(&c, c.peers.clone());
    assert_eq!(d.upsert.len(), 2);
    assert!(d.remove.is_empty());
    assert_eq!(d.host.add_proxies, vec![ip("10.0.0.250"), ip("10.0.0.251")]);
    assert!(d.host.add_routes.is_empty());
    assert_eq!(r.pool_usage(), (2, 3));
    let alice = r.peer(&key(2)).unwrap();
    assert_eq!(alice.name.as_deref(), Some("alice"));
    assert_eq!(alice.address(r.pool()), Some(ip("10.0.0.250")));
    assert_eq!(
        alice.config.preshared_key,
        Some(PresharedKey::from_bytes([9; 32]))
    );
}

#[test]
fn host_entries_are_what_the_diffs_added_so_far() {
    let c = config(Mode::ProxyArp);
    let (mut r, boot) = Reconciler::new(&c, c.peers.clone());
    assert_eq!(r.host_entries(), boot.host);
    let d = r.control(&wg_set(vec![with_ips(
        key(9),
        false,
        &["10.0.0.252/32", "192.168.7.0/24"],
    )]));
    assert_eq!(d.host.add_routes.len(), 1);
    let all = r.host_entries();
    assert_eq!(
        all.add_proxies,
        vec![ip("10.0.0.250"), ip("10.0.0.251"), ip("10.0.0.252")]
    );
    assert_eq!(all.add_routes, d.host.add_routes);
    assert!(all.remove_proxies.is_empty() && all.remove_routes.is_empty());
}

#[test]
fn masquerade_has_no_proxy_entries() {
    let c = config(Mode::Masquerade);
    let (mut r, d) = Reconciler::new(&c, c.peers.clone());
    assert!(d.host.is_empty());
    let d = r.control(&wg_set(vec![with_ips(key(9), false, &["10.0.0.252/32"])]));
    assert!(d.host.is_empty(), "{d:?}");
    assert_eq!(r.pool_usage(), (3, 2));
}

#[test]
fn a_metadata_reading_changes_only_what_it_changed() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    // The same reading again changes nothing.
    assert!(r.metadata(c.peers.clone()).is_empty());
    // Bob revoked, carol added.
    let carol = peer("carol", 4, 252);
    let d = r.metadata(vec![c.peers[0].clone(), carol.clone()]);
    assert_eq!(d.remove, vec![key(3)]);
    assert_eq!(d.upsert, vec![carol.peer_config()]);
    assert_eq!(d.host.add_proxies, vec![ip("10.0.0.252")]);
    assert_eq!(d.host.remove_proxies, vec![ip("10.0.0.251")]);
    let revoked: Vec<_> = r.revoked().collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].name.as_deref(), Some("bob"));
    assert_eq!(revoked[0].address, Some(ip("10.0.0.251")));
    assert_eq!(revoked[0].by, Source::Metadata);
    // Bob added back: no longer revoked; carol now is.
    r.metadata(c.peers.clone());
    let revoked: Vec<_> = r.revoked().map(|v| v.public_key).collect();
    assert_eq!(revoked, vec![key(4)]);
    assert_eq!(sorted(keys(&r)), sorted(vec![key(2), key(3)]));
}

#[test]
fn a_peer_removed_through_the_control_socket_stays_removed_until_metadata_names_it_again() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    let d = r.control(&wg_set(vec![remove(key(2))]));
    assert_eq!(d.remove, vec![key(2)]);
    assert_eq!(d.host.remove_proxies, vec![ip("10.0.0.250")]);
    assert_eq!(r.revoked().next().unwrap().by, Source::Control);
    // Polls of an unchanged overlay do not bring alice back...
    for _ in 0..3 {
        assert!(r.metadata(c.peers.clone()).is_empty());
    }
    // ...nor does a change to another peer.
    let carol = peer("carol", 4, 252);
    let d = r.metadata(vec![c.peers[0].clone(), c.peers[1].clone(), carol]);
    assert_eq!(d.upsert.len(), 1);
    assert!(r.peer(&key(2)).is_none());
    // A metadata change that names alice again (revoked, then added back) does.
    r.metadata(vec![c.peers[1].clone()]);
    assert!(r.peer(&key(2)).is_none());
    let d = r.metadata(c.peers.clone());
    assert_eq!(d.upsert, vec![c.peers[0].peer_config()]);
    assert_eq!(d.host.add_proxies, vec![ip("10.0.0.250")]);
    assert!(r.peer(&key(2)).is_some());
}

#[test]
fn the_latest_change_to_a_peer_wins() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    // wg gives alice a site behind her: a route appears.
    let d = r.control(&wg_set(vec![with_ips(
        key(2),
        true,
        &["10.0.0.250/32", "192.168.77.0/24"],
    )]));
    assert_eq!(d.upsert.len(), 1);
    assert_eq!(d.host.add_routes, vec!["192.168.77.0/24".parse().unwrap()]);
    assert!(d.host.add_proxies.is_empty() && d.host.remove_proxies.is_empty());
    // The unchanged overlay keeps wg's version.
    assert!(r.metadata(c.peers.clone()).is_empty());
    // The overlay moves alice to .253: metadata's version replaces wg's whole.
    let mut moved = c.peers.clone();
    moved[0].address = ip("10.0.0.253");
    let d = r.metadata(moved.clone());
    assert_eq!(d.upsert, vec![moved[0].peer_config()]);
    assert_eq!(
        d.host.remove_routes,
        vec!["192.168.77.0/24".parse().unwrap()]
    );
    assert_eq!(d.host.add_proxies, vec![ip("10.0.0.253")]);
    assert_eq!(d.host.remove_proxies, vec![ip("10.0.0.250")]);
    // And wg again after that.
    let d = r.control(&wg_set(vec![PeerUpdate {
        persistent_keepalive: Some(25),
        ..PeerUpdate::new(key(2))
    }]));
    assert_eq!(d.upsert[0].persistent_keepalive, Some(25));
    assert_eq!(d.upsert[0].allowed_ips, vec![net("10.0.0.253/32")]);
}

#[test]
fn wg_semantics_update_only_replace_peers_and_own_key() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    // update_only on an unknown peer creates nothing; on a known one it updates.
    let d = r.control(&wg_set(vec![
        PeerUpdate {
            update_only: true,
            ..with_ips(key(9), false, &["10.0.0.254/32"])
        },
        PeerUpdate {
            update_only: true,
            ..with_ips(key(3), false, &["10.0.0.254/32"])
        },
    ]));
    assert!(r.peer(&key(9)).is_none());
    assert_eq!(
        r.peer(&key(3)).unwrap().config.allowed_ips,
        vec![net("10.0.0.251/32"), net("10.0.0.254/32")]
    );
    assert_eq!(d.host.add_proxies, vec![ip("10.0.0.254")]);
    // The device's own key is ignored, as wireguard-go ignores it.
    let own = c.private_key.public_key();
    assert!(r
        .control(&wg_set(vec![with_ips(own, false, &["10.0.0.252/32"])]))
        .is_empty());
    // replace_peers removes everyone not named after it.
    let d = r.control(&SetRequest {
        replace_peers: true,
        peers: vec![with_ips(key(2), true, &["10.0.0.250/32"])],
        ..SetRequest::default()
    });
    assert_eq!(d.remove, vec![key(3)]);
    // Alice was removed and added back without her preshared key (the section did
    // not give it): one update, her address kept.
    assert_eq!(d.upsert.len(), 1);
    assert_eq!(d.upsert[0].preshared_key, None);
    assert_eq!(keys(&r), vec![key(2)]);
    assert_eq!(
        d.host.remove_proxies,
        vec![ip("10.0.0.251"), ip("10.0.0.254")]
    );
}

#[test]
fn allowed_ips_move_between_peers_and_count_as_conflicts() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    // A wg-added peer takes bob's address.
    let d = r.control(&wg_set(vec![with_ips(key(9), false, &["10.0.0.251/32"])]));
    assert_eq!(
        d.conflicts,
        vec![Conflict {
            net: net("10.0.0.251/32"),
            from: key(3),
            to: key(9)
        }]
    );
    assert_eq!(
        sorted(d.upsert.iter().map(|p| p.public_key).collect()),
        sorted(vec![key(3), key(9)])
    );
    assert!(r.peer(&key(3)).unwrap().config.allowed_ips.is_empty());
    // Still proxied: another peer holds it.
    assert!(d.host.is_empty(), "{d:?}");
    assert_eq!(r.conflicts_total(), 1);
    assert_eq!(r.peer(&key(9)).unwrap().name, None);
}

#[test]
fn endpoints_are_one_off_and_peers_added_back_keep_their_name() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    let ep: SocketAddr = "203.0.113.7:5000".parse().unwrap();
    let d = r.control(&wg_set(vec![PeerUpdate {
        endpoint: Some(ep),
        ..PeerUpdate::new(key(2))
    }]));
    // Only the endpoint: the desired config is unchanged.
    assert!(d.upsert.is_empty());
    assert_eq!(d.endpoints, vec![(key(2), ep)]);
    assert!(r.peer(&key(2)).unwrap().config.endpoint.is_none());
    r.control(&wg_set(vec![remove(key(2))]));
    let d = r.control(&wg_set(vec![with_ips(key(2), false, &["10.0.0.250/32"])]));
    assert_eq!(d.upsert.len(), 1);
    assert_eq!(r.peer(&key(2)).unwrap().name.as_deref(), Some("alice"));
    assert_eq!(r.revoked().count(), 0);
    // An endpoint for a peer removed in the same request is dropped.
    let d = r.control(&wg_set(vec![
        PeerUpdate {
            endpoint: Some(ep),
            ..PeerUpdate::new(key(3))
        },
        remove(key(3)),
    ]));
    assert!(d.endpoints.is_empty());
}

#[test]
fn host_routes_only_outside_the_tenant_subnet() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, vec![]);
    let d = r.control(&wg_set(vec![with_ips(
        key(9),
        false,
        &[
            "10.0.0.10/32",  // a tenant VM's address: no host change
            "0.0.0.0/0",     // a default route: none either
            "fd00::/64",     // IPv6: off on the tunnel
            "10.0.0.248/29", // .248-.255: the pool part is proxied
            "172.16.0.0/12", // routed
        ],
    )]));
    assert_eq!(d.host.add_routes, vec!["172.16.0.0/12".parse().unwrap()]);
    assert_eq!(
        d.host.add_proxies,
        (250..=254)
            .map(|l| Ipv4Addr::new(10, 0, 0, l))
            .collect::<Vec<_>>()
    );
    let unrouted: Vec<_> = r
        .unrouted()
        .into_iter()
        .map(|(_, n)| n.to_string())
        .collect();
    assert_eq!(unrouted, vec!["10.0.0.10/32", "0.0.0.0/0", "fd00::/64"]);
    assert_eq!(r.pool_usage(), (5, 0));
}

#[test]
fn the_private_key_changing_to_a_peers_key_drops_that_peer() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, c.peers.clone());
    let d = r.set_own_key(key(3));
    assert_eq!(d.remove, vec![key(3)]);
    assert!(r.metadata(c.peers.clone()).is_empty());
}

#[test]
fn revoked_peers_are_bounded() {
    let c = config(Mode::ProxyArp);
    let (mut r, _) = Reconciler::new(&c, vec![]);
    for i in 0..(MAX_REVOKED + 10) {
        let k = PublicKey::from_bytes([
            (i % 250) as u8,
            (i / 250) as u8,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
        ]);
        r.control(&wg_set(vec![with_ips(k, false, &[])]));
        r.control(&wg_set(vec![remove(k)]));
    }
    assert_eq!(r.revoked().count(), MAX_REVOKED);
}

/// The diff applied to a real device leaves it with exactly the desired set, and
/// keeps sessions of untouched peers (the same `Peer` object).
#[test]
fn diffs_applied_to_a_device_track_the_desired_set() {
    let c = config(Mode::ProxyArp);
    let (mut r, d) = Reconciler::new(&c, c.peers.clone());
    let device = Device::new(
        DeviceConfig {
            role: Role::Client,
            ..c.device_config()
        },
        vec![],
        1,
    );
    let changes = d.apply_to(&device);
    assert_eq!(changes.added.len(), 2);
    let check = |r: &Reconciler| {
        let live: Vec<(PublicKey, Vec<IpNetwork>, Option<u16>)> = device
            .peers(std::time::SystemTime::now())
            .into_iter()
            .map(|p| {
                let mut ips = p.allowed_ips;
                ips.sort();
                (p.public_key, ips, p.persistent_keepalive)
            })
            .collect();
        let mut want: Vec<(PublicKey, Vec<IpNetwork>, Option<u16>)> = r
            .peers()
            .map(|p| {
                let mut ips = p.config.allowed_ips.clone();
                ips.sort();
                (p.config.public_key, ips, p.config.persistent_keepalive)
            })
            .collect();
        want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        assert_eq!(live, want);
    };
    check(&r);
    let changes = r
        .control(&wg_set(vec![
            with_ips(key(9), false, &["10.0.0.251/32", "192.168.9.0/24"]),
            PeerUpdate {
                persistent_keepalive: Some(15),
                ..PeerUpdate::new(key(2))
            },
        ]))
        .apply_to(&device);
    assert_eq!(changes.added, vec![key(9)]);
    assert!(changes.updated.contains(&key(2)), "{changes:?}");
    check(&r);
    let changes = r.control(&wg_set(vec![remove(key(2))])).apply_to(&device);
    assert_eq!(changes.removed, vec![key(2)]);
    check(&r);
    r.metadata(vec![c.peers[1].clone()]).apply_to(&device);
    check(&r);
}

#[test]
fn keyed_diff_names_added_removed_and_changed_keys() {
    let before: BTreeMap<u8, &str> = [(1, "a"), (2, "b"), (3, "c")].into_iter().collect();
    let after: BTreeMap<u8, &str> = [(2, "b"), (3, "C"), (4, "d")].into_iter().collect();
    let d = keyed_diff(&before, &after);
    assert_eq!(
        (d.added, d.removed, d.changed),
        (vec![&4], vec![&1], vec![&3])
    );
    let d = keyed_diff(&after, &after);
    assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
}
