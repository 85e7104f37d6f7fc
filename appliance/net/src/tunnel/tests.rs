//! The workers over the in-memory doubles: a server-role and a client-role tunnel,
//! each with two queues, talking through an in-memory network.

use super::*;
use crate::io::TunPackets;
use crate::memory::{MemoryUdp, Network, TunPipe};
use crate::stop::Stop;
use cloudpipe_core::keys::{PresharedKey, PrivateKey};
use cloudpipe_core::packet::udp_packet;
use cloudpipe_core::wg::{DeviceConfig, DropReason, PeerConfig, Role, ServerPolicy};
use std::net::{Ipv4Addr, SocketAddr};

const SERVER: &str = "203.0.113.10:1194";
const CLIENT: &str = "198.51.100.2:40000";

struct Pair {
    net: Network,
    server: Tunnel,
    client: Tunnel,
    server_tun: Arc<TunPipe>,
    client_tun: Arc<TunPipe>,
}

fn pair(queues: usize) -> Pair {
    let (skey, ckey) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let psk = PresharedKey::from_bytes([9; 32]);
    let server = Arc::new(Device::new(
        DeviceConfig {
            private_key: skey.clone(),
            listen_port: 1194,
            fwmark: 0,
            role: Role::Server(ServerPolicy {
                destinations: vec!["10.0.0.0/24".parse().unwrap()],
                client_to_client: false,
            }),
        },
        vec![PeerConfig {
            preshared_key: Some(psk.clone()),
            ..PeerConfig::new(ckey.public_key(), vec!["10.0.0.250/32".parse().unwrap()])
        }],
        1,
    ));
    let client = Arc::new(Device::new(
        DeviceConfig {
            private_key: ckey,
            listen_port: 0,
            fwmark: 0,
            role: Role::Client,
        },
        vec![PeerConfig {
            preshared_key: Some(psk),
            endpoint: Some(SERVER.parse().unwrap()),
            ..PeerConfig::new(skey.public_key(), vec!["10.0.0.0/24".parse().unwrap()])
        }],
        2,
    ));
    let net = Network::new();
    // Every queue of a group shares the address (SO_REUSEPORT).
    let bind = |a: &str| -> Vec<MemoryUdp> {
        (0..queues)
            .map(|_| net.bind(a.parse().unwrap(), 64))
            .collect()
    };
    let (server_tun, client_tun) = (TunPipe::with_queues(queues), TunPipe::with_queues(queues));
    let s = Tunnel::start(server, bind(SERVER), server_tun.queues()).unwrap();
    let c = Tunnel::start(client, bind(CLIENT), client_tun.queues()).unwrap();
    assert_eq!(s.threads(), 2 * queues + 1);
    Pair {
        net,
        server: s,
        client: c,
        server_tun,
        client_tun,
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn packets_cross_both_ways_over_one_and_two_queues() {
    for queues in [1, 2] {
        let p = pair(queues);
        let up = udp_packet(
            Ipv4Addr::new(10, 0, 0, 250),
            Ipv4Addr::new(10, 0, 0, 10),
            b"up",
        );
        p.client_tun.inject(&up);
        assert_eq!(
            p.server_tun.recv_one(WAIT).as_deref(),
            Some(&up[..]),
            "queues={queues}"
        );
        let down = udp_packet(
            Ipv4Addr::new(10, 0, 0, 10),
            Ipv4Addr::new(10, 0, 0, 250),
            b"down",
        );
        p.server_tun.inject(&down);
        assert_eq!(p.client_tun.recv_one(WAIT).as_deref(), Some(&down[..]));
        // A burst stays whole and in order through one flow.
        for i in 0..200u16 {
            p.client_tun.inject(&udp_packet(
                Ipv4Addr::new(10, 0, 0, 250),
                Ipv4Addr::new(10, 0, 0, 10),
                &i.to_be_bytes(),
            ));
        }
        for i in 0..200u16 {
            let got = p.server_tun.recv_one(WAIT).expect("burst packet");
            assert_eq!(got[28..], i.to_be_bytes());
        }
        let s = p.server.device().stats();
        assert_eq!(s.to_tun, 201);
        assert_eq!(s.handshake_responses, 1);
        assert!(p.server.stop().is_none());
        assert!(p.client.stop().is_none());
    }
}

#[test]
fn hostile_datagrams_are_counted_and_do_not_disturb_the_flow() {
    let p = pair(1);
    let up = udp_packet(
        Ipv4Addr::new(10, 0, 0, 250),
        Ipv4Addr::new(10, 0, 0, 10),
        b"x",
    );
    p.client_tun.inject(&up);
    assert!(p.server_tun.recv_one(WAIT).is_some());
    let attacker: SocketAddr = "192.0.2.66:6666".parse().unwrap();
    for i in 0..100u8 {
        p.net.inject(
            attacker,
            SERVER.parse().unwrap(),
            &[4, 0, 0, 0, i, i, i, i, 1, 2, 3],
        );
    }
    p.client_tun.inject(&up);
    assert!(p.server_tun.recv_one(WAIT).is_some());
    let s = p.server.device().stats();
    assert_eq!(
        s.drops(DropReason::UnknownIndex) + s.drops(DropReason::Malformed),
        100
    );
}

/// A TUN side whose device vanished.
struct Broken;
impl TunIo for Broken {
    fn recv(&self, _: &mut TunPackets, _: &Stop) -> io::Result<bool> {
        Err(io::Error::from_raw_os_error(libc::EBADFD))
    }
    fn send(&self, _: &mut TunBatch) -> io::Result<usize> {
        Ok(0)
    }
    fn headroom(&self) -> usize {
        0
    }
    fn packets(&self) -> TunPackets {
        TunPackets::new(1, 64)
    }
    fn max_packet(&self) -> usize {
        64
    }
}

#[test]
fn a_failing_side_stops_the_tunnel_with_its_reason() {
    let dev = Arc::new(Device::new(
        DeviceConfig {
            private_key: PrivateKey::from_bytes([1; 32]),
            listen_port: 0,
            fwmark: 0,
            role: Role::Client,
        },
        vec![],
        0,
    ));
    let net = Network::new();
    let t = Tunnel::start(
        dev,
        vec![net.bind(CLIENT.parse().unwrap(), 1)],
        vec![Broken],
    )
    .unwrap();
    match t.wait() {
        Some(TunnelError::Tun(msg)) => {
            assert!(msg.contains("File descriptor in bad state"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert!(t.stop().is_some());
}
