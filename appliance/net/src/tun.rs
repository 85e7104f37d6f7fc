//! [`TunIo`] on tun-rs: a layer-3 TUN device (no packet-information header), with
//! `IFF_VNET_HDR` offloads when asked (the kernel hands up to 64 KiB TCP
//! super-packets, split here; TCP segments written are coalesced first, GRO-style),
//! and one queue per worker (`IFF_MULTI_QUEUE`; the kernel picks a queue per flow, so
//! one TCP flow stays in order).

use crate::io::{TunIo, TunPackets};
use crate::stop::{Stop, Wake};
use cloudpipe_core::wg::TunBatch;
use nix::poll::PollFlags;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;
use tun_rs::{GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Buffers one read may need: a 64 KiB TSO super-packet split at a small MSS
/// (tun-rs's batch size, as wireguard-go's).
const MAX_SPLIT: usize = IDEAL_BATCH_SIZE;
/// Packets one coalescing write may merge: the kernel's UDP_MAX_SEGMENTS on older
/// kernels (linux/udp.h), the bound of a USO packet it accepts from a TUN writer.
const MAX_COALESCE: usize = 64;
/// Buffers of a read batch: room for one worst-case split and more reads after it.
const READ_BUFFERS: usize = 2 * IDEAL_BATCH_SIZE;

/// The TUN transmit queue: the kernel's default of 500 packets is short for a
/// multi-gigabit burst (REFERENCE.md 5); 1000 is Ethernet's default.
pub const TX_QUEUE_LEN: u32 = 1000;

/// One queue of a TUN device.
pub struct TunQueue {
    dev: SyncDevice,
    offload: bool,
    /// Coalescing state for writes: the queue's two threads (decrypted packets, ICMP
    /// answers) may both write.
    gro: Mutex<GROTable>,
    /// Largest packet a read returns (the device's MTU, at least 1500).
    packet_len: usize,
}

impl std::fmt::Debug for TunQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunQueue")
            .field("fd", &self.dev.as_raw_fd())
            .field("offload", &self.offload)
            .finish()
    }
}

/// How to create the device.
#[derive(Debug, Clone)]
pub struct TunOptions {
    pub name: String,
    /// Queues (one per worker); more than one sets `IFF_MULTI_QUEUE`.
    pub queues: usize,
    /// `IFF_VNET_HDR` with TSO/USO offloads.
    pub offload: bool,
    /// The MTU the device will carry (bounds a read's packets); MTU itself is set
    /// by whoever configures the link.
    pub mtu: u16,
}

/// Create the TUN device and its queues. The device lives as long as its queues: a
/// crash leaves nothing behind.
pub fn create(opts: &TunOptions) -> io::Result<Vec<TunQueue>> {
    let queues = opts.queues.max(1);
    let first = tun_rs::DeviceBuilder::new()
        .name(&opts.name)
        .offload(opts.offload)
        .multi_queue(queues > 1)
        .tx_queue_len(TX_QUEUE_LEN)
        .build_sync()
        .map_err(|e| io::Error::new(e.kind(), format!("creating TUN device {}: {e}", opts.name)))?;
    let mut devs = Vec::with_capacity(queues);
    for _ in 1..queues {
        devs.push(first.try_clone()?);
    }
    devs.insert(0, first);
    let packet_len = usize::from(opts.mtu).max(1500) + 64;
    devs.into_iter()
        .map(|dev| {
            dev.set_nonblocking(true)?;
            let offload = dev.tcp_gso();
            Ok(TunQueue {
                dev,
                offload,
                gro: Mutex::new(GROTable::default()),
                packet_len,
            })
        })
        .collect()
}

impl TunQueue {
    /// Whether the kernel accepted the offloads.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Bring the link up (without netlink; for benchmarks and tests that own the
    /// device's namespace).
    pub fn set_up(&self) -> io::Result<()> {
        self.dev.enabled(true)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by `self.dev`, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.dev.as_raw_fd()) }
    }

    fn read(&self, p: &mut TunPackets) -> io::Result<usize> {
        if self.offload {
            // One read is one packet or one super-packet. Small packets (TCP ACKs
            // of a download) come one per read: keep reading while a worst-case
            // split still fits, so that a batch, and its GSO send, holds many.
            let mut n = 0;
            while p.bufs.len() - n >= MAX_SPLIT {
                let r =
                    self.dev
                        .recv_multiple(&mut p.original, &mut p.bufs[n..], &mut p.sizes[n..], 0);
                match r {
                    Ok(k) => n += k,
                    Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if n > 0 => {
                        // Deliver what was read; a persistent error shows on the
                        // next call.
                        tracing::debug!(error = %e, "TUN read");
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(n);
        }
        // One packet per read without offloads: drain what is queued, up to the batch.
        let mut n = 0;
        while n < p.bufs.len() {
            match self.dev.recv(&mut p.bufs[n]) {
                Ok(len) => {
                    p.sizes[n] = len;
                    n += 1;
                }
                Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

impl TunIo for TunQueue {
    fn recv(&self, p: &mut TunPackets, stop: &Stop) -> io::Result<bool> {
        p.count = 0;
        loop {
            match self.read(p) {
                Ok(n) => {
                    p.count = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stop.wait_fd(self.fd(), PollFlags::POLLIN, None)? == Wake::Stopped {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A packet tun-rs could not split (bad virtio header, a segment
                // larger than our buffers): that packet is lost, the queue goes on.
                Err(e) if e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "dropped a TUN packet");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&self, batch: &mut TunBatch) -> io::Result<usize> {
        if batch.is_empty() {
            // Most TUN-to-UDP batches write nothing here; they must not wait for the
            // coalescing state while the other thread writes.
            return Ok(0);
        }
        let mut refused = 0;
        if self.offload {
            let mut gro = self.gro.lock().unwrap_or_else(|e| e.into_inner());
            // tun-rs coalesces a UDP flow without bounding the segment count, and
            // the kernel refuses a USO packet of more than UDP_MAX_SEGMENTS (64 on
            // older kernels, 128 now) with EINVAL: hand it at most that many
            // packets at a time. (TCP runs stop at 64 KiB, about 46 segments.)
            for chunk in batch.buffers_mut().chunks_mut(MAX_COALESCE) {
                if let Err(e) = self.dev.send_multiple(&mut gro, chunk, VIRTIO_NET_HDR_LEN) {
                    if is_fatal(&e) {
                        return Err(e);
                    }
                    // A write the kernel refused (bad header, no route): lost, not
                    // fatal. tun-rs reports the last error of the chunk only.
                    tracing::debug!(error = %e, "TUN write");
                    refused += 1;
                }
            }
        } else {
            for b in batch.buffers_mut() {
                if let Err(e) = self.dev.send(b) {
                    if is_fatal(&e) {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "TUN write");
                    refused += 1;
                }
            }
        }
        Ok(refused)
    }

    fn headroom(&self) -> usize {
        if self.offload {
            VIRTIO_NET_HDR_LEN
        } else {
            0
        }
    }

    fn packets(&self) -> TunPackets {
        TunPackets::new(
            if self.offload { READ_BUFFERS } else { 64 },
            self.packet_len,
        )
    }

    fn max_packet(&self) -> usize {
        self.packet_len
    }

    fn batch(&self) -> TunBatch {
        // tun-rs coalesces a TCP run into its first buffer only if that buffer
        // already has room for the whole 64 KiB super-packet (and its header twice).
        let capacity = if self.offload {
            2 * VIRTIO_NET_HDR_LEN + 65_535
        } else {
            self.packet_len
        };
        TunBatch::with_capacity(self.headroom(), self.packet_len, capacity)
    }
}

/// The device is gone (deleted, or the fd is bad): nothing more can be done here.
/// (EIO is a device that is down: the packet is lost, as on any down link, and the
/// queue works again when it comes up.)
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADFD | libc::EBADF | libc::ENODEV)
    )
}
