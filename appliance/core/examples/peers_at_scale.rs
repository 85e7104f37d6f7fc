//! How a device with many configured peers starts and what it costs in memory:
//! `cargo run --release -p cloudpipe-core --example peers_at_scale [N]` (default
//! 10,000) prints the time to build the device, the resident memory it adds (from
//! /proc/self/status) and the time of one timer pass over every peer.

use cloudpipe_core::keys::PrivateKey;
use cloudpipe_core::wg::{Device, DeviceConfig, PeerConfig, Role, ServerPolicy, Transmits};
use ipnetwork::{IpNetwork, Ipv4Network};
use std::net::Ipv4Addr;
use std::time::Instant;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    // Keys made up front: key generation is the operator's cost, not the device's.
    let peers: Vec<PeerConfig> = (0..n)
        .map(|i| {
            let mut k = [7u8; 32];
            // Bytes 1-4: byte 0 loses its low bits to X25519 clamping.
            k[1..5].copy_from_slice(&i.to_le_bytes());
            let addr = Ipv4Addr::from(0x0a40_0000 + i + 1);
            PeerConfig::new(
                PrivateKey::from_bytes(k).public_key(),
                vec![IpNetwork::V4(Ipv4Network::new(addr, 32).unwrap())],
            )
        })
        .collect();
    let before = rss_kib();
    let t0 = Instant::now();
    let device = Device::new(
        DeviceConfig {
            private_key: PrivateKey::from_bytes([1; 32]),
            listen_port: 1194,
            fwmark: 0,
            role: Role::Server(ServerPolicy {
                destinations: vec!["10.64.0.0/16".parse().unwrap()],
                client_to_client: false,
            }),
        },
        peers,
        42,
    );
    let built = t0.elapsed();
    let after = rss_kib();
    let mut out = Transmits::new(64 * 1024, 1);
    let t1 = Instant::now();
    device.update_timers(Instant::now(), &mut out);
    let tick = t1.elapsed();
    println!(
        "{n} peers: device built in {:.3} s, resident memory +{:.1} MiB ({:.2} KiB per peer), one timer pass {:.2} ms",
        built.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / f64::from(n.max(1)),
        tick.as_secs_f64() * 1e3
    );
    assert_eq!(device.peer_count(), n as usize);
}
