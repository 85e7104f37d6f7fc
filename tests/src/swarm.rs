//! Many WireGuard clients in one process, on the project's own core: each member is
//! a client-role [`cloudpipe_core::wg::Device`] whose one peer is the appliance,
//! with its own UDP socket (so the appliance sees each at its own endpoint), made
//! from the wg-quick config `cloudpipe client add` printed. No TUN device: the
//! swarm writes the IP packets a client would send (ICMP echo requests) straight
//! into the device and reads the decrypted answers out of it.
//!
//! Used by the load tests (1,000 clients handshaking and pinging at once) and by
//! `cloudpipe-lab flood` for the session whose data packets it replays.

use cloudpipe_core::packet::checksum;
use cloudpipe_core::wg::{Device, Transmits, TunBatch, Worker};
use cloudpipe_core::wg_quick;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// boringtun wants its timers run every 100-250 ms.
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Largest datagram or packet handled (the tunnel MTU is far below).
const PACKET: usize = 2048;
/// ICMP protocol number and echo types (RFC 792).
const PROTO_ICMP: u8 = 1;
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// One client of the swarm.
pub struct Member {
    pub name: String,
    /// The client's pool address (its config's `Address`).
    pub address: Ipv4Addr,
    /// Where the appliance is reached (the config's `Endpoint`).
    pub endpoint: SocketAddr,
    device: Arc<Device>,
    worker: Worker,
    socket: UdpSocket,
    /// When the first echo reply arrived.
    answered: Option<Instant>,
}

impl Member {
    /// A client from its wg-quick config, sending from `socket` (bound where the
    /// client lives, e.g. with [`crate::netns::run_in`]).
    pub fn from_config(name: &str, config: &str, socket: UdpSocket) -> anyhow::Result<Member> {
        let conf = wg_quick::parse(config).map_err(|e| anyhow::anyhow!("{name}'s config: {e}"))?;
        let address = conf
            .interface
            .addresses
            .iter()
            .find_map(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => Some(v4),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("{name}'s config has no IPv4 Address"))?;
        let peer = conf
            .peers
            .first()
            .ok_or_else(|| anyhow::anyhow!("{name}'s config has no [Peer]"))?;
        let endpoint: SocketAddr = peer
            .endpoint
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{name}'s config has no Endpoint"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}'s Endpoint: {e}"))?;
        socket.set_nonblocking(true)?;
        let port = socket.local_addr()?.port();
        let (config, peers) = conf.device(port, &[Some(endpoint)]);
        let device = Arc::new(Device::new(config, peers, rand_u32()));
        let worker = device.worker();
        Ok(Member {
            name: name.to_string(),
            address,
            endpoint,
            device,
            worker,
            socket,
            answered: None,
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Whether an echo reply has come back.
    pub fn answered(&self) -> bool {
        self.answered.is_some()
    }
}

/// What [`Swarm::ping_all`] saw.
#[derive(Debug, Clone, Default)]
pub struct PingReport {
    /// Members with at least one echo reply.
    pub answered: usize,
    /// Names of those without.
    pub silent: Vec<String>,
    /// Time from the start to each member's first reply, sorted.
    pub times: Vec<Duration>,
    /// Echo requests written into the devices (first tries and retries).
    pub requests: usize,
}

impl PingReport {
    /// The `q`-quantile (0..=1) of the reply times.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.times.len();
        (n > 0).then(|| self.times[((n - 1) as f64 * q).round() as usize])
    }
}

/// Clients driven together by one thread.
pub struct Swarm {
    members: Vec<Member>,
    net: Transmits,
    tun: TunBatch,
    buf: Vec<u8>,
    last_timers: Instant,
}

impl Swarm {
    pub fn new(members: Vec<Member>) -> Swarm {
        Swarm {
            members,
            // One datagram per run: plain sendto, no GSO.
            net: Transmits::new(64 * 1024, 1),
            tun: TunBatch::new(0, PACKET),
            buf: vec![0; 65_536],
            last_timers: Instant::now(),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Write `packet` into member `i`'s device as if read from its TUN device; the
    /// datagrams that result (a handshake initiation while no session is up, else
    /// the sealed packet) are sent and returned.
    pub fn send_packet(&mut self, i: usize, packet: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let m = &mut self.members[i];
        m.worker
            .handle_tun_packet(Instant::now(), packet, &mut self.net, &mut self.tun);
        self.tun.clear();
        flush(&m.socket, &mut self.net)
    }

    /// Like [`Swarm::send_packet`], but the datagrams are only returned, not sent.
    pub fn seal_packet(&mut self, i: usize, packet: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let m = &mut self.members[i];
        m.worker
            .handle_tun_packet(Instant::now(), packet, &mut self.net, &mut self.tun);
        self.tun.clear();
        let sealed = self.net.iter().map(|t| t.contents.to_vec()).collect();
        self.net.clear();
        Ok(sealed)
    }

    /// Receive whatever arrives within `wait` on every member's socket, run it
    /// through the member's device and send its answers; run the timers when due.
    /// Returns the decrypted packets, with their member's index.
    pub fn pump(&mut self, wait: Duration) -> io::Result<Vec<(usize, Vec<u8>)>> {
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = self
                .members
                .iter()
                .map(|m| PollFd::new(m.socket.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter()
                .enumerate()
                .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect()
        };
        let mut out = Vec::new();
        for i in ready {
            let m = &mut self.members[i];
            loop {
                let (n, src) = match m.socket.recv_from(&mut self.buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error for an earlier send: nothing to read.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e),
                };
                let now = Instant::now();
                m.worker
                    .handle_datagram(now, src, &self.buf[..n], &mut self.net, &mut self.tun);
                for p in self.tun.iter() {
                    if m.answered.is_none() && is_echo_reply_to(p, m.address) {
                        m.answered = Some(now);
                    }
                    out.push((i, p.to_vec()));
                }
                self.tun.clear();
                flush(&m.socket, &mut self.net)?;
            }
        }
        if self.last_timers.elapsed() >= TIMER_TICK {
            self.timers()?;
        }
        Ok(out)
    }

    /// Run every member's timers (handshake retransmits, keepalives) now.
    pub fn timers(&mut self) -> io::Result<()> {
        let now = Instant::now();
        self.last_timers = now;
        for m in &self.members {
            m.device.update_timers(now, &mut self.net);
            m.device.reset_rate_limits();
            flush(&m.socket, &mut self.net)?;
        }
        Ok(())
    }

    /// Every member pings `dst` (one echo request at once, and again every `retry`
    /// until answered) until all are answered or `within` has passed. Requests go
    /// out `spread` apart at the start, as clients started one after another.
    /// Earlier answers do not count.
    pub fn ping_all(
        &mut self,
        dst: Ipv4Addr,
        within: Duration,
        retry: Duration,
        spread: Duration,
    ) -> io::Result<PingReport> {
        let start = Instant::now();
        let deadline = start + within;
        let n = self.members.len();
        for m in &mut self.members {
            m.answered = None;
        }
        let mut next: Vec<Instant> = (0..n).map(|i| start + spread * i as u32).collect();
        let mut seq = vec![0u16; n];
        let mut requests = 0;
        while Instant::now() < deadline && self.members.iter().any(|m| !m.answered()) {
            let now = Instant::now();
            for i in 0..n {
                if self.members[i].answered() || next[i] > now {
                    continue;
                }
                seq[i] = seq[i].wrapping_add(1);
                let echo = echo_request(self.members[i].address, dst, i as u16, seq[i]);
                self.send_packet(i, &echo)?;
                requests += 1;
                next[i] = now + retry;
            }
            self.pump(Duration::from_millis(10))?;
        }
        let mut times: Vec<Duration> = self
            .members
            .iter()
            .filter_map(|m| m.answered.map(|t| t.saturating_duration_since(start)))
            .collect();
        times.sort();
        Ok(PingReport {
            answered: times.len(),
            silent: self
                .members
                .iter()
                .filter(|m| !m.answered())
                .map(|m| m.name.clone())
                .collect(),
            times,
            requests,
        })
    }
}

/// Send every datagram of `net` from `socket` and clear it; the datagrams are
/// returned. A full socket buffer loses the datagram, as a network would.
fn flush(socket: &UdpSocket, net: &mut Transmits) -> io::Result<Vec<Vec<u8>>> {
    let mut sent = Vec::new();
    for t in net.iter() {
        match socket.send_to(t.contents, t.dest) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e),
        }
        sent.push(t.contents.to_vec());
    }
    net.clear();
    Ok(sent)
}

/// An IPv4 ICMP echo request from `src` to `dst` (RFC 792) with 32 bytes of data.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let total = 20 + 8 + 32;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = PROTO_ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let s = checksum(&p[..20]);
    p[10..12].copy_from_slice(&s.to_be_bytes());
    let icmp = &mut p[20..];
    icmp[0] = ECHO_REQUEST;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in icmp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let s = checksum(icmp);
    icmp[2..4].copy_from_slice(&s.to_be_bytes());
    p
}

/// Whether `p` is an IPv4 ICMP echo reply addressed to `to`.
pub fn is_echo_reply_to(p: &[u8], to: Ipv4Addr) -> bool {
    p.len() >= 28
        && p[0] >> 4 == 4
        && p[9] == PROTO_ICMP
        && p[16..20] == to.octets()
        && p.get(usize::from(p[0] & 0x0f) * 4) == Some(&ECHO_REPLY)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_is_well_formed() {
        let src = Ipv4Addr::new(10, 77, 4, 1);
        let dst = Ipv4Addr::new(10, 77, 0, 10);
        let p = echo_request(src, dst, 7, 1);
        assert_eq!(checksum(&p[..20]), 0, "IP header checksum");
        assert_eq!(checksum(&p[20..]), 0, "ICMP checksum");
        // The reply a host would send: addresses swapped, type 0.
        let mut reply = p.clone();
        reply[12..16].copy_from_slice(&dst.octets());
        reply[16..20].copy_from_slice(&src.octets());
        reply[20] = ECHO_REPLY;
        assert!(is_echo_reply_to(&reply, src));
        assert!(!is_echo_reply_to(&p, src), "a request is not a reply");
        assert!(!is_echo_reply_to(&reply, dst));
    }
}
