//! In-memory doubles of [`UdpIo`] and [`TunIo`]: the workers and the tunnel are
//! tested with them without root, sockets or devices (wireguard-go's `bindtest` and
//! `tuntest` play the same part).
//!
//! [`Network`] is a switch of UDP endpoints by address; [`TunPipe`] is a TUN device
//! whose other end the test holds. Both spread traffic over their queues by flow,
//! as the kernel does (`SO_REUSEPORT` by source, multi-queue TUN by flow hash), so
//! one flow stays on one queue and in order.

use crate::io::{TunIo, TunPackets, UdpBatch, UdpIo};
use crate::stop::Stop;
use cloudpipe_core::wg::{Transmits, TunBatch};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often a blocked receive looks at its stop signal.
const POLL: Duration = Duration::from_millis(10);

/// A FIFO that a receiver can wait on.
#[derive(Debug)]
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Condvar,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        }
    }
}

impl<T> Queue<T> {
    fn push(&self, item: T) {
        self.items.lock().unwrap().push_back(item);
        self.ready.notify_all();
    }

    /// Take up to `max` items, waiting (stop-aware) for at least one.
    fn take(&self, max: usize, stop: &Stop, mut each: impl FnMut(T) -> bool) -> bool {
        let mut items = self.items.lock().unwrap();
        loop {
            if stop.is_raised() {
                return false;
            }
            if !items.is_empty() {
                let mut n = 0;
                while n < max {
                    let Some(item) = items.pop_front() else { break };
                    if !each(item) {
                        break;
                    }
                    n += 1;
                }
                return true;
            }
            items = self.ready.wait_timeout(items, POLL).unwrap().0;
        }
    }

    fn wait_for(&self, timeout: Duration) -> Option<T> {
        let deadline = std::time::Instant::now() + timeout;
        let mut items = self.items.lock().unwrap();
        loop {
            if let Some(x) = items.pop_front() {
                return Some(x);
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            items = self.ready.wait_timeout(items, left).unwrap().0;
        }
    }
}

/// Datagrams waiting at one endpoint, with their sources.
type Inbox = Arc<Queue<(SocketAddr, Vec<u8>)>>;

/// A switch of in-memory UDP endpoints: a datagram sent to an address goes to the
/// endpoint bound there, or nowhere.
#[derive(Debug, Default, Clone)]
pub struct Network {
    endpoints: Arc<Mutex<HashMap<SocketAddr, Vec<Inbox>>>>,
}

fn flow_hash(h: impl std::hash::Hash) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(h) as usize
}

impl Network {
    pub fn new() -> Self {
        Self::default()
    }

    /// An endpoint at `addr` that sends up to `max_segments` datagrams per send.
    /// Binding an address again adds a queue to its group (`SO_REUSEPORT`).
    pub fn bind(&self, addr: SocketAddr, max_segments: usize) -> MemoryUdp {
        let queue = Arc::new(Queue::default());
        self.endpoints
            .lock()
            .unwrap()
            .entry(addr)
            .or_default()
            .push(queue.clone());
        MemoryUdp {
            addr,
            network: self.clone(),
            queue,
            max_segments,
        }
    }

    /// Send a datagram as if from `from` (a test playing a host).
    pub fn inject(&self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        if let Some(group) = self.endpoints.lock().unwrap().get(&to) {
            group[flow_hash(from) % group.len()].push((from, datagram.to_vec()));
        }
    }
}

/// One in-memory UDP endpoint.
#[derive(Debug)]
pub struct MemoryUdp {
    addr: SocketAddr,
    network: Network,
    queue: Inbox,
    max_segments: usize,
}

impl MemoryUdp {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Wait up to `timeout` for one datagram (a test reading as a host).
    pub fn recv_one(&self, timeout: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        self.queue.wait_for(timeout)
    }
}

impl UdpIo for MemoryUdp {
    fn recv(&self, batch: &mut UdpBatch, stop: &Stop) -> io::Result<bool> {
        batch.clear();
        let room = batch.bufs.len();
        Ok(self.queue.take(room, stop, |(src, d)| batch.push(src, &d)))
    }

    fn send(&self, tx: &Transmits, _stop: &Stop) -> io::Result<()> {
        for t in tx.iter() {
            let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
            assert!(
                t.contents.len().div_ceil(seg) <= self.max_segments,
                "a run longer than the endpoint's GSO limit"
            );
            for d in t.contents.chunks(seg) {
                self.network.inject(self.addr, t.dest, d);
            }
        }
        Ok(())
    }

    fn max_segments(&self) -> usize {
        self.max_segments
    }

    fn batch(&self) -> UdpBatch {
        UdpBatch::new(32, 65_535)
    }
}

/// A TUN device in memory: the tunnel reads what the test [`TunPipe::inject`]s and
/// the test [`TunPipe::recv_one`]s what the tunnel writes.
#[derive(Debug, Default)]
pub struct TunPipe {
    to_tunnel: Vec<Queue<Vec<u8>>>,
    from_tunnel: Queue<Vec<u8>>,
}

/// One queue of a [`TunPipe`].
#[derive(Debug)]
pub struct TunPipeQueue {
    pipe: Arc<TunPipe>,
    index: usize,
}

impl TunPipe {
    /// A device with one queue.
    pub fn new() -> Arc<Self> {
        Self::with_queues(1)
    }

    /// A device with `n` queues; take them with [`TunPipe::queues`].
    pub fn with_queues(n: usize) -> Arc<Self> {
        Arc::new(Self {
            to_tunnel: (0..n.max(1)).map(|_| Queue::default()).collect(),
            from_tunnel: Queue::default(),
        })
    }

    /// The queues, for [`crate::Tunnel::start`].
    pub fn queues(self: &Arc<Self>) -> Vec<TunPipeQueue> {
        (0..self.to_tunnel.len())
            .map(|index| TunPipeQueue {
                pipe: self.clone(),
                index,
            })
            .collect()
    }

    /// A packet the "kernel" routes into the tunnel, on its flow's queue (by IP
    /// addresses).
    pub fn inject(&self, packet: &[u8]) {
        let flow = packet.get(12..20).unwrap_or_default();
        self.to_tunnel[flow_hash(flow) % self.to_tunnel.len()].push(packet.to_vec());
    }

    /// Wait up to `timeout` for a packet the tunnel wrote.
    pub fn recv_one(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.from_tunnel.wait_for(timeout)
    }
}

impl TunIo for TunPipeQueue {
    fn recv(&self, packets: &mut TunPackets, stop: &Stop) -> io::Result<bool> {
        packets.count = 0;
        let room = packets.bufs.len();
        Ok(self.pipe.to_tunnel[self.index].take(room, stop, |p| packets.push(&p)))
    }

    fn send(&self, batch: &mut TunBatch) -> io::Result<usize> {
        for p in batch.iter() {
            self.pipe.from_tunnel.push(p.to_vec());
        }
        Ok(0)
    }

    fn headroom(&self) -> usize {
        // As with offloads on: the workers must leave room for a virtio header.
        10
    }

    fn packets(&self) -> TunPackets {
        TunPackets::new(32, 2048)
    }

    fn max_packet(&self) -> usize {
        2048
    }
}
