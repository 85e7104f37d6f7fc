//! The TUN offload steps of the per-packet path: splitting a 64 KiB TSO
//! super-packet into segments (what a read does), and coalescing 46 decrypted
//! segments into one write (GRO) on a real TUN device. `cargo bench -p cloudpipe-net`.
//!
//! No root needed: the coalescing bench runs in a new user and network namespace
//! of its own (where it has CAP_NET_ADMIN) with a TUN device that exists only there.
//! Where user namespaces are disabled, that bench says so and is skipped.

use cloudpipe_core::wg::TunBatch;
use cloudpipe_net::tun::TunOptions;
use cloudpipe_net::TunIo;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tun_rs::{gso_split, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4};

const MSS: usize = 1380;
const SEGMENTS: usize = 46;

/// A TCP/IPv4 packet of `payload` bytes from 10.0.0.1:5201 to 10.0.0.2:40000 with
/// sequence number `seq`, ACK set, checksums valid.
fn tcp_packet(seq: u32, payload: usize) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let ip_sum = cloudpipe_core::packet::checksum(&p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..22].copy_from_slice(&5201u16.to_be_bytes());
    p[22..24].copy_from_slice(&40000u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10; // ACK
    p[34..36].copy_from_slice(&512u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    // TCP checksum over the pseudo-header and the segment.
    let mut pseudo = Vec::with_capacity(12 + total - 20);
    pseudo.extend_from_slice(&p[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[20..]);
    let sum = cloudpipe_core::packet::checksum(&pseudo);
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

fn split(c: &mut Criterion) {
    let sp = tcp_packet(1, MSS * SEGMENTS);
    let hdr = VirtioNetHdr {
        flags: 1, // NEEDS_CSUM
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut input = sp.clone();
    let mut bufs = vec![vec![0u8; 1500]; 128];
    let mut sizes = vec![0usize; 128];
    let mut g = c.benchmark_group("tun_offload");
    g.throughput(Throughput::Bytes((MSS * SEGMENTS) as u64));
    g.bench_function("gso_split_64k_into_46", |b| {
        b.iter(|| {
            input.copy_from_slice(&sp);
            let n = gso_split(&mut input, hdr, &mut bufs, &mut sizes, 0, false).unwrap();
            assert_eq!(n, SEGMENTS);
            n
        })
    });
    g.finish();
}

/// Enter a new user and network namespace (as uid 0 inside), for a TUN device
/// without privileges outside. Returns false where user namespaces are off.
fn private_namespace() -> bool {
    use nix::sched::{unshare, CloneFlags};
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return unshare(CloneFlags::CLONE_NEWNET).is_ok();
    }
    if unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).is_err() {
        return false;
    }
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).is_ok()
        && std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).is_ok()
}

fn coalesce(c: &mut Criterion) {
    if !private_namespace() {
        eprintln!("tun_offload/gro_write skipped: no user or network namespace here");
        return;
    }
    let queue = cloudpipe_net::tun::create(&TunOptions {
        name: "cpbench0".into(),
        queues: 1,
        offload: true,
        mtu: 1500,
    })
    .expect("TUN device in the private namespace")
    .pop()
    .unwrap();
    assert!(queue.offload(), "the kernel refused TUN offloads");
    queue.set_up().expect("link up");
    let segments: Vec<Vec<u8>> = (0..SEGMENTS)
        .map(|i| tcp_packet(1 + (i * MSS) as u32, MSS))
        .collect();
    let mut batch: TunBatch = queue.batch();
    let mut g = c.benchmark_group("tun_offload");
    g.throughput(Throughput::Bytes((MSS * SEGMENTS) as u64));
    g.bench_function("gro_write_46_segments", |b| {
        b.iter(|| {
            batch.clear();
            for s in &segments {
                batch.push(s);
            }
            queue.send(&mut batch).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, split, coalesce);
criterion_main!(benches);
