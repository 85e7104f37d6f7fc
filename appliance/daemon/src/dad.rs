//! Duplicate address detection on the tenant network, at boot: an ARP probe (RFC 5227
//! section 2.1.1: sender address 0.0.0.0, so no host's ARP cache changes) for the
//! appliance's address and for every client pool address. A host that answers for
//! one, or probes for it itself, holds it too: Neutron's DHCP port on `.2`, or a VM
//! that Neutron gave a client's address because the subnet's allocation pool still
//! held it. Two hosts answering ARP for one address break both, silently; the daemon
//! says so by name instead.
//!
//! Needs CAP_NET_RAW (a packet socket) while booting, like the rest of setup's
//! capabilities; the count of conflicts found stays readable ([`conflicts`]).

pub use cloudpipe_core::arp::{conflict_in, mac_string, parse_mac, probe_frame, Conflict};
use cloudpipe_core::arp::{BROADCAST, ETH_P_ARP};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Conflicts found since the daemon started (for the metrics endpoint to come).
static CONFLICTS: AtomicU64 = AtomicU64::new(0);

/// The number of address conflicts found since start.
pub fn conflicts() -> u64 {
    CONFLICTS.load(Ordering::Relaxed)
}

/// Probes sent per address: a second against a lost frame.
pub const PROBES: u32 = 2;
/// Between the rounds of probes. RFC 5227 spaces a claiming host's probes 1-2 s apart;
/// here a holder is only being found, and a host on the same segment answers within
/// milliseconds.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long answers are awaited after the first round, in all.
pub const LISTEN: Duration = Duration::from_secs(1);
/// Pools larger than this are probed in part (a /16 pool would be 65k frames).
pub const MAX_PROBED: usize = 4096;

/// Probe `addresses` (at most [`MAX_PROBED`]) on interface `ifindex`, whose MAC is
/// `mac`, and return the conflicts found within [`LISTEN`], one per address. Counted
/// in [`conflicts`]. Blocking.
pub fn probe(ifindex: u32, mac: [u8; 6], addresses: &[Ipv4Addr]) -> std::io::Result<Vec<Conflict>> {
    let probed: BTreeSet<Ipv4Addr> = addresses.iter().copied().take(MAX_PROBED).collect();
    let sock = PacketSocket::open(ifindex)?;
    let start = Instant::now();
    let mut found: Vec<Conflict> = Vec::new();
    let mut buf = [0u8; 128];
    for round in 0..PROBES {
        for a in &probed {
            sock.send_broadcast(&probe_frame(mac, *a))?;
        }
        let until = if round + 1 == PROBES {
            start + LISTEN
        } else {
            Instant::now() + PROBE_INTERVAL
        };
        while let Some(n) = sock.recv_until(&mut buf, until)? {
            if let Some(c) = conflict_in(&buf[..n], mac, &probed) {
                if !found.iter().any(|f| f.address == c.address) {
                    found.push(c);
                }
            }
        }
    }
    CONFLICTS.fetch_add(found.len() as u64, Ordering::Relaxed);
    found.sort_by_key(|c| c.address);
    Ok(found)
}

/// The MAC address of interface `ifname` (from sysfs).
pub fn mac_of(ifname: &str) -> std::io::Result<[u8; 6]> {
    let path = format!("/sys/class/net/{ifname}/address");
    let text = std::fs::read_to_string(&path)?;
    parse_mac(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path}: not a MAC address: {text:?}"),
        )
    })
}

/// Probe the appliance's address and the client pool on the tenant interface and log
/// each conflict by name, with the way out. Never fails the boot: the appliance
/// still serves every address nobody else holds.
pub fn check_tenant(
    ifname: &str,
    ifindex: u32,
    mac: Option<[u8; 6]>,
    config: &cloudpipe_core::config::Config,
) {
    let Some(mac) = mac else {
        tracing::warn!(interface = %ifname, "no MAC address: address conflicts not probed");
        return;
    };
    let mut addresses = vec![config.address];
    addresses.extend(config.pool.iter().take(MAX_PROBED - 1));
    if config.pool.len() as usize >= MAX_PROBED {
        tracing::info!(
            probed = MAX_PROBED,
            pool = config.pool.len(),
            "a large pool: probing its first addresses only"
        );
    }
    // Blocking, on the boot runtime's one thread (about a second, nothing else runs
    // then): no pool thread may be left behind, since capabilities are dropped only
    // while the process has a single thread.
    let found = match probe(ifindex, mac, &addresses) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(interface = %ifname, error = %e, "cannot probe for address conflicts (ARP needs CAP_NET_RAW at boot)");
            return;
        }
    };
    for c in &found {
        let (what, fix) = if c.address == config.address {
            (
                "the appliance's address",
                format!(
                    "another port holds it (Neutron's DHCP port often takes .2): `openstack port list --fixed-ip ip-address={}`; \
                     give the appliance a free one (`cloudpipe network create ... --address`)",
                    c.address
                ),
            )
        } else {
            (
                "a client pool address",
                "Neutron gave it to another port: narrow the subnet's allocation pool (`cloudpipe openstack NETWORK`, step 3) and move that port".to_string(),
            )
        };
        tracing::error!(interface = %ifname, address = %c.address, holder = %c.mac_string(), "address conflict: another host on the tenant network holds {what} {}: {fix}", c.address);
    }
    if found.is_empty() {
        tracing::info!(interface = %ifname, probed = config.pool.len().min(MAX_PROBED as u32 - 1) + 1, "no address conflicts: nobody else answers for the appliance's or the clients' addresses");
    }
}

/// A raw `AF_PACKET` socket bound to one interface, ARP only.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifindex: u32) -> std::io::Result<Self> {
        let ifindex = i32::try_from(ifindex).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = PacketSocket { fd, ifindex };
        let addr = sock.address(None);
        // SAFETY: addr is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn address(&self, dest: Option<[u8; 6]>) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = ETH_P_ARP.to_be();
        a.sll_ifindex = self.ifindex;
        if let Some(d) = dest {
            a.sll_halen = 6;
            a.sll_addr[..6].copy_from_slice(&d);
        }
        a
    }

    fn send_broadcast(&self, frame: &[u8]) -> std::io::Result<()> {
        let to = self.address(Some(BROADCAST));
        // SAFETY: frame and to are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame, or `None` once `until` has passed.
    fn recv_until(&self, buf: &mut [u8], until: Instant) -> std::io::Result<Option<usize>> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                return Ok(None);
            }
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(e);
            }
        }
    }
}
