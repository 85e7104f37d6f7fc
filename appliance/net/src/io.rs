//! The batch interfaces between the workers and the two sides of a tunnel.
//!
//! Both are blocking and stop-aware: `recv` waits until packets arrive or the
//! [`Stop`] is raised (then it returns `Ok(false)`), and fills a batch. Each queue
//! of a multi-queue device or `SO_REUSEPORT` group is one value, shared (`Arc`) by
//! the two threads that read one side and write the other.

use crate::stop::Stop;
use cloudpipe_core::wg::{Transmits, TunBatch};
use std::io;
use std::net::SocketAddr;

/// Datagrams received in one batch, possibly several per buffer (GRO).
#[derive(Debug)]
pub struct UdpBatch {
    pub(crate) bufs: Vec<Box<[u8]>>,
    /// Per filled buffer: source, bytes, and segment stride (GRO).
    pub(crate) metas: Vec<(SocketAddr, usize, usize)>,
}

impl UdpBatch {
    /// Room for `buffers` receives of up to `buffer_len` bytes each (64 KiB when the
    /// socket coalesces with GRO).
    pub fn new(buffers: usize, buffer_len: usize) -> Self {
        Self {
            bufs: (0..buffers)
                .map(|_| vec![0u8; buffer_len].into_boxed_slice())
                .collect(),
            metas: Vec::with_capacity(buffers),
        }
    }

    /// Every datagram of the batch with its source, GRO segments split.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.metas
            .iter()
            .zip(&self.bufs)
            .flat_map(|(&(src, len, stride), buf)| {
                buf[..len]
                    .chunks(if stride == 0 { len.max(1) } else { stride })
                    .map(move |d| (src, d))
            })
    }

    pub fn clear(&mut self) {
        self.metas.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Add a datagram by copy (the in-memory double).
    pub(crate) fn push(&mut self, src: SocketAddr, data: &[u8]) -> bool {
        let i = self.metas.len();
        match self.bufs.get_mut(i) {
            Some(b) if b.len() >= data.len() => {
                b[..data.len()].copy_from_slice(data);
                self.metas.push((src, data.len(), data.len()));
                true
            }
            _ => false,
        }
    }
}

/// Packets read from a TUN device in one batch.
#[derive(Debug)]
pub struct TunPackets {
    /// Where a (possibly TSO) read lands, virtio header first.
    pub(crate) original: Vec<u8>,
    pub(crate) bufs: Vec<Vec<u8>>,
    pub(crate) sizes: Vec<usize>,
    pub(crate) count: usize,
}

impl TunPackets {
    /// Room for `packets` packets of up to `packet_len` bytes each.
    pub fn new(packets: usize, packet_len: usize) -> Self {
        Self {
            original: vec![0u8; 65_535 + 64],
            bufs: vec![vec![0u8; packet_len]; packets],
            sizes: vec![0; packets],
            count: 0,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.count]
            .iter()
            .zip(&self.sizes)
            .map(|(b, &n)| &b[..n])
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn push(&mut self, packet: &[u8]) -> bool {
        match self.bufs.get_mut(self.count) {
            Some(b) if b.len() >= packet.len() => {
                b[..packet.len()].copy_from_slice(packet);
                self.sizes[self.count] = packet.len();
                self.count += 1;
                true
            }
            _ => false,
        }
    }
}

/// One queue of the UDP side.
pub trait UdpIo: Send + Sync + 'static {
    /// Wait for datagrams and receive a batch into `batch` (cleared first).
    /// `Ok(false)`: `stop` was raised.
    fn recv(&self, batch: &mut UdpBatch, stop: &Stop) -> io::Result<bool>;
    /// Send every run of `tx`; a datagram that cannot be sent is lost, as the
    /// network would lose it. Errors only when the socket itself is unusable.
    fn send(&self, tx: &Transmits, stop: &Stop) -> io::Result<()>;
    /// Datagrams one send may carry (1: no GSO).
    fn max_segments(&self) -> usize;
    /// A [`UdpBatch`] sized for this queue.
    fn batch(&self) -> UdpBatch;
}

/// One queue of the TUN side.
pub trait TunIo: Send + Sync + 'static {
    /// Wait for packets and read a batch into `packets`. `Ok(false)`: stopped.
    fn recv(&self, packets: &mut TunPackets, stop: &Stop) -> io::Result<bool>;
    /// Write every packet of `batch` (coalescing where the device allows); returns
    /// how many writes the kernel refused (those packets are lost). Errors only
    /// when the device itself is unusable.
    fn send(&self, batch: &mut TunBatch) -> io::Result<usize>;
    /// Bytes to leave in front of each packet written ([`TunBatch`] headroom).
    fn headroom(&self) -> usize;
    /// A [`TunPackets`] sized for this queue.
    fn packets(&self) -> TunPackets;
    /// Largest packet a read returns or a write should carry (bytes).
    fn max_packet(&self) -> usize;
    /// A [`TunBatch`] for writes to this queue: headroom, and room in each buffer
    /// for what the queue coalesces into it.
    fn batch(&self) -> TunBatch {
        TunBatch::new(self.headroom(), self.max_packet())
    }
}

impl<T: UdpIo> UdpIo for std::sync::Arc<T> {
    fn recv(&self, batch: &mut UdpBatch, stop: &Stop) -> io::Result<bool> {
        (**self).recv(batch, stop)
    }
    fn send(&self, tx: &Transmits, stop: &Stop) -> io::Result<()> {
        (**self).send(tx, stop)
    }
    fn max_segments(&self) -> usize {
        (**self).max_segments()
    }
    fn batch(&self) -> UdpBatch {
        (**self).batch()
    }
}

impl<T: TunIo> TunIo for std::sync::Arc<T> {
    fn recv(&self, packets: &mut TunPackets, stop: &Stop) -> io::Result<bool> {
        (**self).recv(packets, stop)
    }
    fn send(&self, batch: &mut TunBatch) -> io::Result<usize> {
        (**self).send(batch)
    }
    fn headroom(&self) -> usize {
        (**self).headroom()
    }
    fn packets(&self) -> TunPackets {
        (**self).packets()
    }
    fn max_packet(&self) -> usize {
        (**self).max_packet()
    }
    fn batch(&self) -> TunBatch {
        (**self).batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_buffers_split_by_stride() {
        let mut b = UdpBatch::new(2, 100);
        let src: SocketAddr = "192.0.2.1:1".parse().unwrap();
        b.bufs[0][..25].fill(7);
        b.metas.push((src, 25, 10));
        assert!(b.push(src, b"xyz"));
        let d: Vec<_> = b.datagrams().map(|(_, d)| d.len()).collect();
        assert_eq!(d, vec![10, 10, 5, 3]);
        assert!(!b.push(src, b"no room"), "two buffers only");
        let mut p = TunPackets::new(1, 4);
        assert!(!p.push(b"too long"));
        assert!(p.push(b"ok"));
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![&b"ok"[..]]);
    }
}
