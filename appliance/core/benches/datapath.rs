//! The per-packet path without I/O: allowed-IPs lookups, a batch of packets
//! encrypted by a client-role device and decrypted by a server-role device, and the
//! GSO grouping of the encrypted batch. `cargo bench -p cloudpipe-core`.

use cloudpipe_core::keys::{PresharedKey, PrivateKey};
use cloudpipe_core::packet::udp_packet;
use cloudpipe_core::wg::allowed_ips::AllowedIps;
use cloudpipe_core::wg::{
    Device, DeviceConfig, PeerConfig, Role, ServerPolicy, Transmits, TunBatch, Worker,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Packets per batch: what one TSO super-packet of 64 KiB splits into at MSS 1380.
const BATCH: usize = 46;
const INNER: usize = 1420;

fn allowed_ips(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowed_ips_lookup");
    for peers in [10u32, 1_000, 10_000] {
        let mut t = AllowedIps::new();
        for i in 0..peers {
            let a = Ipv4Addr::from(0x0a00_0000 | i);
            t.insert(
                IpNetwork::V4(ipnetwork::Ipv4Network::new(a, 32).unwrap()),
                i,
            );
        }
        t.insert("10.0.0.0/8".parse().unwrap(), u32::MAX);
        let probes: Vec<IpAddr> = (0..1024u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i * 7919 % (peers * 2)))))
            .collect();
        g.throughput(Throughput::Elements(probes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(peers), &probes, |b, probes| {
            b.iter(|| probes.iter().filter_map(|a| t.lookup(*a)).count())
        });
    }
    g.finish();
}

struct Pair {
    client: Worker,
    server: Worker,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
}

fn pair() -> Pair {
    let (skey, ckey) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let psk = PresharedKey::from_bytes([9; 32]);
    let server_addr: SocketAddr = "203.0.113.10:1194".parse().unwrap();
    let client_addr: SocketAddr = "198.51.100.2:40000".parse().unwrap();
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
            endpoint: Some(server_addr),
            ..PeerConfig::new(skey.public_key(), vec!["10.0.0.0/24".parse().unwrap()])
        }],
        2,
    ));
    let mut p = Pair {
        client: client.worker(),
        server: server.worker(),
        server_addr,
        client_addr,
    };
    // Handshake: the first packet starts it, the response completes it.
    let now = Instant::now();
    let (mut net, mut tun) = (Transmits::new(4096, 64), TunBatch::new(10, 2048));
    let first = udp_packet([10, 0, 0, 250].into(), [10, 0, 0, 10].into(), b"hs");
    p.client.handle_tun_packet(now, &first, &mut net, &mut tun);
    for _ in 0..3 {
        let out: Vec<(SocketAddr, Vec<u8>)> =
            net.iter().map(|t| (t.dest, t.contents.to_vec())).collect();
        net.clear();
        for (dest, d) in out {
            if dest == p.server_addr {
                p.server
                    .handle_datagram(now, p.client_addr, &d, &mut net, &mut tun);
            } else {
                p.client
                    .handle_datagram(now, p.server_addr, &d, &mut net, &mut tun);
            }
        }
    }
    assert_eq!(
        tun.len(),
        1,
        "handshake completed and the first packet arrived"
    );
    p
}

fn encrypt_decrypt(c: &mut Criterion) {
    let mut p = pair();
    let packets: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            udp_packet(
                [10, 0, 0, 250].into(),
                [10, 0, 0, 10].into(),
                &vec![i as u8; INNER - 28],
            )
        })
        .collect();
    let (mut net, mut tun) = (Transmits::new(BATCH * 1600, 64), TunBatch::new(10, 2048));
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes((BATCH * INNER) as u64));
    g.bench_function("encapsulate_46x1420", |b| {
        b.iter(|| {
            net.clear();
            let now = Instant::now();
            for pkt in &packets {
                p.client.handle_tun_packet(now, pkt, &mut net, &mut tun);
            }
            net.datagrams()
        })
    });
    // Each iteration decrypts a batch encrypted just before it, outside the timing
    // (a replayed batch would be dropped at the replay check, and measure nothing).
    let mut enc = Transmits::new(BATCH * 1600, 64);
    let mut scratch = TunBatch::new(10, 2048);
    let mut encrypted = Vec::new();
    g.bench_function("decapsulate_46x1420", |b| {
        b.iter_batched_ref(
            || {
                enc.clear();
                let now = Instant::now();
                for pkt in &packets {
                    p.client.handle_tun_packet(now, pkt, &mut enc, &mut scratch);
                }
                // Every datagram of every GSO run (46 x 1452 bytes is two runs).
                encrypted.clear();
                for t in enc.iter() {
                    let seg = t.segment_size.unwrap_or(t.contents.len());
                    encrypted.extend(t.contents.chunks(seg).map(<[u8]>::to_vec));
                }
                encrypted.clone()
            },
            |datagrams| {
                tun.clear();
                let now = Instant::now();
                for d in datagrams.iter() {
                    p.server
                        .handle_datagram(now, p.client_addr, d, &mut net, &mut tun);
                }
                assert_eq!(tun.len(), BATCH, "every packet decrypted and delivered");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn gso_grouping(c: &mut Criterion) {
    let dest: SocketAddr = "203.0.113.10:1194".parse().unwrap();
    let datagram = vec![7u8; 1452];
    let mut q = Transmits::new(64 * 1500, 64);
    let mut g = c.benchmark_group("transmits");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("group_46_datagrams", |b| {
        b.iter(|| {
            q.clear();
            for _ in 0..BATCH {
                q.push(dest, &datagram);
            }
            q.runs().len()
        })
    });
    g.finish();
}

criterion_group!(benches, allowed_ips, encrypt_decrypt, gso_grouping);
criterion_main!(benches);
