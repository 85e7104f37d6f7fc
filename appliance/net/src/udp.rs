//! [`UdpIo`] on quinn-udp: one socket per queue, GSO for sends (`UDP_SEGMENT`),
//! GRO and `recvmmsg` for receives, and quinn-udp's fallbacks where the kernel or
//! the path refuses them.

use crate::io::{UdpBatch, UdpIo};
use crate::stop::{Stop, Wake};
use cloudpipe_core::wg::Transmits;
use nix::poll::PollFlags;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

/// Receives per `recvmmsg`: each buffer holds up to 64 datagrams with GRO.
pub const RX_BUFFERS: usize = 8;
/// A GRO buffer: 64 segments of up to ~1 KiB or fewer larger ones; the kernel caps
/// one coalesced receive at 64 KiB.
pub const RX_BUFFER_LEN: usize = 65_536;
/// Socket buffers: a burst from the other side must not overflow the kernel's
/// default (~200 KiB) while the worker is busy; wireguard-go asks for 7 MiB.
pub const SOCKET_BUFFER: usize = 7 << 20;
/// How long a send waits for room in a full socket buffer before the datagram is
/// dropped (as a congested network would).
const SEND_WAIT: Duration = Duration::from_millis(100);

/// One UDP socket of a queue group.
#[derive(Debug)]
pub struct UdpQueue {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
}

/// Open `queues` sockets on `addr`: one `SO_REUSEPORT` group when more than one (the
/// kernel then spreads senders over them by flow hash, so one peer's datagrams stay
/// on one queue and in order). Port 0 picks one port for the whole group. `fwmark`
/// (non-zero) marks every datagram sent (`SO_MARK`, needs CAP_NET_ADMIN).
pub fn open(addr: SocketAddr, queues: usize, fwmark: u32) -> io::Result<Vec<UdpQueue>> {
    let mut out = Vec::with_capacity(queues.max(1));
    let mut bind_addr = addr;
    for _ in 0..queues.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if queues > 1 {
            s.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        if fwmark != 0 {
            s.set_mark(fwmark)?;
        }
        grow_buffers(&s);
        s.bind(&bind_addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {bind_addr}: {e}")))?;
        let socket: std::net::UdpSocket = s.into();
        // Every later socket of the group takes the port the first one got.
        bind_addr = socket.local_addr()?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        out.push(UdpQueue { socket, state });
    }
    Ok(out)
}

/// Raise the buffers past `net.core.{r,w}mem_max` (CAP_NET_ADMIN), or as far as the
/// limit allows without it.
fn grow_buffers(s: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
}

impl UdpQueue {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Set the firewall mark of every datagram sent from now on (`SO_MARK`, needs
    /// CAP_NET_ADMIN; 0 removes it): the UAPI's `fwmark`.
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.socket).set_mark(mark)
    }

    /// Another handle on the same socket (a duplicated descriptor), for settings
    /// such as [`UdpQueue::set_mark`] after the tunnel took the queue.
    pub fn try_clone(&self) -> io::Result<UdpQueue> {
        let socket = self.socket.try_clone()?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        Ok(UdpQueue { socket, state })
    }

    /// Coalesced receives per buffer (1: no GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn send_one(&self, t: &quinn_udp::Transmit<'_>, stop: &Stop) -> io::Result<()> {
        loop {
            match self.state.try_send(UdpSockRef::from(&self.socket), t) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match stop.wait_fd(self.socket.as_fd(), PollFlags::POLLOUT, Some(SEND_WAIT))? {
                        Wake::Ready => continue,
                        Wake::Stopped | Wake::TimedOut => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl UdpIo for UdpQueue {
    fn recv(&self, batch: &mut UdpBatch, stop: &Stop) -> io::Result<bool> {
        batch.clear();
        let n = batch.bufs.len().min(RX_BUFFERS);
        let mut metas = [RecvMeta::default(); RX_BUFFERS];
        loop {
            let r = {
                let mut bufs = batch.bufs.iter_mut();
                let mut iovs: [IoSliceMut<'_>; RX_BUFFERS] = std::array::from_fn(|_| {
                    IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))
                });
                self.state.recv(
                    UdpSockRef::from(&self.socket),
                    &mut iovs[..n],
                    &mut metas[..n],
                )
            };
            match r {
                Ok(got) => {
                    for m in &metas[..got] {
                        let src = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
                        batch.metas.push((src, m.len, m.stride));
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stop.wait_fd(self.socket.as_fd(), PollFlags::POLLIN, None)? == Wake::Stopped
                    {
                        return Ok(false);
                    }
                }
                // An ICMP error for an earlier send (port unreachable, ...): the
                // socket is fine, the peer is just not there.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&self, tx: &Transmits, stop: &Stop) -> io::Result<()> {
        for t in tx.iter() {
            let transmit = quinn_udp::Transmit {
                destination: t.dest,
                ecn: None,
                contents: t.contents,
                segment_size: t.segment_size,
                src_ip: None,
            };
            match self.send_one(&transmit, stop) {
                Ok(()) => {}
                Err(e) if t.segment_size.is_some() && self.state.max_gso_segments() == 1 => {
                    // GSO was refused (and is now off): send this run one by one.
                    tracing::debug!(error = %e, "UDP GSO refused; sending segments one by one");
                    let seg = t.segment_size.unwrap_or(t.contents.len());
                    for c in t.contents.chunks(seg) {
                        let single = quinn_udp::Transmit {
                            contents: c,
                            segment_size: None,
                            ..transmit.clone()
                        };
                        if let Err(e) = self.send_one(&single, stop) {
                            tracing::trace!(error = %e, dest = %t.dest, "UDP send");
                        }
                    }
                }
                // No route to a roaming peer, a firewall's refusal: that datagram
                // is lost, the queue goes on.
                Err(e) => tracing::trace!(error = %e, dest = %t.dest, "UDP send"),
            }
        }
        Ok(())
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn batch(&self) -> UdpBatch {
        let len = if self.state.gro_segments() > 1 {
            RX_BUFFER_LEN
        } else {
            // Without GRO one datagram per buffer; the largest UDP payload.
            65_535
        };
        UdpBatch::new(RX_BUFFERS, len)
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EINTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::Arc;

    fn lo(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn gso_burst_arrives_as_separate_datagrams_on_loopback() {
        let rx = open(lo(0), 1, 0).unwrap().pop().unwrap();
        let tx = open(lo(0), 1, 0).unwrap().pop().unwrap();
        let dest = rx.local_addr().unwrap();
        let stop = Stop::new().unwrap();
        let mut q = Transmits::new(4096, tx.max_segments());
        for i in 0..10u8 {
            q.push(dest, &[i; 1200]);
        }
        q.push(dest, &[99; 300]);
        assert_eq!(
            q.iter().count(),
            if tx.max_segments() >= 11 {
                1
            } else {
                q.iter().count()
            }
        );
        tx.send(&q, &stop).unwrap();
        let mut got = Vec::new();
        let mut batch = rx.batch();
        while got.len() < 11 {
            assert!(rx.recv(&mut batch, &stop).unwrap());
            got.extend(batch.datagrams().map(|(src, d)| (src, d.to_vec())));
        }
        let src = tx.local_addr().unwrap();
        assert!(got.iter().all(|(s, _)| *s == src));
        let sizes: Vec<_> = got.iter().map(|(_, d)| (d.len(), d[0])).collect();
        let mut want: Vec<_> = (0..10u8).map(|i| (1200, i)).collect();
        want.push((300, 99));
        assert_eq!(sizes, want);
    }

    #[test]
    fn reuse_port_group_shares_one_port_and_stop_ends_a_receive() {
        let group = open(lo(0), 2, 0).unwrap();
        assert_eq!(
            group[0].local_addr().unwrap(),
            group[1].local_addr().unwrap()
        );
        let stop = Arc::new(Stop::new().unwrap());
        let q = Arc::new(group.into_iter().next().unwrap());
        let (s, qq) = (stop.clone(), q.clone());
        let t = std::thread::spawn(move || qq.recv(&mut qq.batch(), &s).unwrap());
        std::thread::sleep(Duration::from_millis(30));
        stop.raise();
        assert!(!t.join().unwrap(), "stopped, not a datagram");
    }
}
