//! Output queues of the device, shaped for batched I/O.
//!
//! [`Transmits`] holds the UDP datagrams of one batch in one contiguous buffer,
//! grouped into runs that a UDP socket can send with generic segmentation offload
//! (Linux `UDP_SEGMENT`, quinn's `Transmit { segment_size }`): one destination per
//! run, every segment `segment_size` bytes but the last, which may be shorter.
//! [`TunBatch`] holds the IP packets for the TUN device, each in its own buffer with
//! headroom in front (for a `virtio_net_hdr`), so that the TUN side can coalesce
//! TCP segments before writing (GRO), as wireguard-go's `tun/offload_linux.go` does.
//!
//! Both keep their buffers across batches: once grown, a batch allocates nothing.

use std::net::SocketAddr;

/// Largest UDP payload that one GSO send may carry in total: an IPv4 datagram's
/// total length is 16 bits, minus room for the IP and UDP headers.
pub const MAX_GSO_BYTES: usize = 65_000;

/// One run of equal-size datagrams to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub dest: SocketAddr,
    /// Offset of the run's first byte in the queue's buffer.
    pub start: usize,
    /// Total bytes of the run.
    pub len: usize,
    /// Size of every segment but the last (which may be shorter).
    pub segment_size: usize,
    /// Number of datagrams in the run.
    pub segments: usize,
    /// A shorter last segment was added: the run takes no more.
    closed: bool,
}

/// A datagram or a GSO batch of them, ready for `sendmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub dest: SocketAddr,
    pub contents: &'a [u8],
    /// `Some(size)` when `contents` holds several datagrams of `size` bytes (the last
    /// may be shorter); `None` for a single datagram.
    pub segment_size: Option<usize>,
}

/// The UDP datagrams of one batch, grouped for GSO.
#[derive(Debug)]
pub struct Transmits {
    buf: Vec<u8>,
    used: usize,
    runs: Vec<Run>,
    max_segments: usize,
}

impl Transmits {
    /// A queue with `capacity` bytes to start with (it grows when a batch needs
    /// more) that puts at most `max_segments` datagrams in one run; 1 turns
    /// grouping off (a socket without GSO).
    pub fn new(capacity: usize, max_segments: usize) -> Self {
        Self {
            buf: vec![0; capacity],
            used: 0,
            runs: Vec::new(),
            max_segments: max_segments.max(1),
        }
    }

    /// Change the run limit (the socket learned that GSO is unavailable).
    pub fn set_max_segments(&mut self, max_segments: usize) {
        self.max_segments = max_segments.max(1);
    }

    /// Append a datagram to `dest`: `write` gets at least `reserve` bytes and returns
    /// the length it wrote at the start, or `None` to add nothing.
    pub fn push_with(
        &mut self,
        dest: SocketAddr,
        reserve: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        if self.buf.len() - self.used < reserve {
            // A batch larger than planned (packets queued during a handshake):
            // grow once; later batches reuse the room.
            let want = (self.used + reserve).max(self.buf.len() * 2);
            self.buf.resize(want, 0);
        }
        let n = write(&mut self.buf[self.used..])?;
        debug_assert!(n <= self.buf.len() - self.used);
        self.commit(dest, n);
        Some(n)
    }

    /// Append a copy of `datagram`.
    pub fn push(&mut self, dest: SocketAddr, datagram: &[u8]) {
        self.push_with(dest, datagram.len(), |b| {
            b[..datagram.len()].copy_from_slice(datagram);
            Some(datagram.len())
        });
    }

    fn commit(&mut self, dest: SocketAddr, n: usize) {
        let start = self.used;
        self.used += n;
        if let Some(run) = self.runs.last_mut() {
            let fits = run.dest == dest
                && !run.closed
                && run.segments < self.max_segments
                && run.len + n <= MAX_GSO_BYTES
                && n <= run.segment_size
                && n > 0;
            if fits {
                run.len += n;
                run.segments += 1;
                run.closed = n < run.segment_size;
                return;
            }
        }
        self.runs.push(Run {
            dest,
            start,
            len: n,
            segment_size: n,
            segments: 1,
            closed: n == 0,
        });
    }

    /// The runs, in the order their datagrams were added.
    pub fn iter(&self) -> impl Iterator<Item = Transmit<'_>> {
        self.runs.iter().map(|r| Transmit {
            dest: r.dest,
            contents: &self.buf[r.start..r.start + r.len],
            segment_size: (r.segments > 1).then_some(r.segment_size),
        })
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Number of datagrams queued.
    pub fn datagrams(&self) -> usize {
        self.runs.iter().map(|r| r.segments).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn clear(&mut self) {
        self.runs.clear();
        self.used = 0;
    }
}

/// IP packets for the TUN device, each in its own buffer after `headroom` bytes.
#[derive(Debug)]
pub struct TunBatch {
    bufs: Vec<Vec<u8>>,
    count: usize,
    headroom: usize,
    slot_len: usize,
    capacity: usize,
}

impl TunBatch {
    /// Packets of up to `slot_len` bytes, each buffer with `headroom` bytes in front
    /// (`VIRTIO_NET_HDR_LEN` when the TUN device has offloads on, else 0).
    pub fn new(headroom: usize, slot_len: usize) -> Self {
        Self::with_capacity(headroom, slot_len, headroom + slot_len)
    }

    /// Like [`TunBatch::new`], with every buffer allocated for `capacity` bytes: a
    /// writer that coalesces TCP segments into the first one of a run (GRO, up to
    /// 64 KiB) needs the room there, and will not grow a buffer itself. Pages are
    /// only touched as they are written.
    pub fn with_capacity(headroom: usize, slot_len: usize, capacity: usize) -> Self {
        Self {
            bufs: Vec::new(),
            count: 0,
            headroom,
            slot_len,
            capacity: capacity.max(headroom + slot_len),
        }
    }

    /// Room for the next packet: `slot_len` bytes. Call [`TunBatch::commit`] to keep
    /// what was written there; otherwise the next call returns the same room.
    pub fn slot(&mut self) -> &mut [u8] {
        if self.bufs.len() == self.count {
            self.bufs.push(Vec::with_capacity(self.capacity));
        }
        let b = &mut self.bufs[self.count];
        b.resize(self.headroom + self.slot_len, 0);
        &mut b[self.headroom..]
    }

    /// Keep the first `len` bytes of the slot as the next packet.
    pub fn commit(&mut self, len: usize) {
        debug_assert!(len <= self.slot_len);
        self.bufs[self.count].truncate(self.headroom + len);
        self.count += 1;
    }

    /// Append a copy of `packet`.
    pub fn push(&mut self, packet: &[u8]) {
        let n = packet.len().min(self.slot_len);
        self.slot()[..n].copy_from_slice(&packet[..n]);
        self.commit(n);
    }

    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// The packets' buffers, headroom included, for the TUN writer (which may grow
    /// them when it coalesces).
    pub fn buffers_mut(&mut self) -> &mut [Vec<u8>] {
        &mut self.bufs[..self.count]
    }

    /// The packets, without headroom.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.count].iter().map(|b| &b[self.headroom..])
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn clear(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn shape(t: &Transmits) -> Vec<(u16, usize, Option<usize>)> {
        t.iter()
            .map(|x| (x.dest.port(), x.contents.len(), x.segment_size))
            .collect()
    }

    #[test]
    fn equal_sizes_to_one_destination_make_one_run() {
        let mut t = Transmits::new(64, 64);
        for _ in 0..3 {
            t.push(addr(1), &[1; 100]);
        }
        t.push(addr(1), &[2; 40]); // shorter last segment closes the run
        t.push(addr(1), &[3; 40]);
        t.push(addr(2), &[4; 40]);
        t.push(addr(1), &[5; 120]); // larger: a new run
        assert_eq!(
            shape(&t),
            vec![
                (1, 340, Some(100)),
                (1, 40, None),
                (2, 40, None),
                (1, 120, None)
            ]
        );
        assert_eq!(t.datagrams(), 7);
        let first = t.iter().next().unwrap();
        assert!(first.contents[..300].iter().all(|&b| b == 1));
        assert!(first.contents[300..].iter().all(|&b| b == 2));
    }

    #[test]
    fn limits_on_segments_and_bytes() {
        let mut t = Transmits::new(16, 4);
        for _ in 0..10 {
            t.push(addr(1), &[0; 10]);
        }
        assert_eq!(
            shape(&t),
            vec![(1, 40, Some(10)), (1, 40, Some(10)), (1, 20, Some(10))]
        );
        let mut t = Transmits::new(16, 128);
        for _ in 0..50 {
            t.push(addr(1), &[0; 1452]);
        }
        let runs: Vec<_> = t.runs().iter().map(|r| r.segments).collect();
        assert_eq!(runs, vec![44, 6], "a run stays under {MAX_GSO_BYTES} bytes");
        t.clear();
        assert!(t.is_empty());
        t.set_max_segments(1);
        t.push(addr(1), &[0; 8]);
        t.push(addr(1), &[0; 8]);
        assert_eq!(shape(&t), vec![(1, 8, None), (1, 8, None)]);
    }

    #[test]
    fn a_write_that_declines_adds_nothing() {
        let mut t = Transmits::new(8, 8);
        assert_eq!(t.push_with(addr(1), 200, |_| None), None);
        assert!(t.is_empty());
        assert_eq!(
            t.push_with(addr(1), 200, |b| Some(b.len().min(150))),
            Some(150)
        );
        assert_eq!(t.datagrams(), 1);
    }

    #[test]
    fn tun_batch_reuses_slots_with_headroom() {
        let mut b = TunBatch::new(10, 64);
        b.slot()[..3].copy_from_slice(b"abc");
        b.commit(3);
        b.slot()[0] = b'x'; // written but not committed: not a packet
        b.push(b"defg");
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![&b"abc"[..], &b"defg"[..]]
        );
        assert_eq!(b.buffers_mut()[0].len(), 13);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.slot().len(), 64);
        let mut c = TunBatch::with_capacity(10, 64, 65_555);
        c.push(b"x");
        assert!(
            c.buffers_mut()[0].capacity() >= 65_555,
            "room to coalesce into"
        );
    }
}
