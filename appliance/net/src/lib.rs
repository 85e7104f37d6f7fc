//! cloudpipe's I/O library: what the daemon (`cloudpiped`) and the CLI's client mode
//! (`cloudpipe up`) share to move WireGuard packets between a TUN device and UDP.
//!
//! - [`io`]: the batch interfaces, [`UdpIo`] (receive a batch of datagrams with
//!   their sources; send a GSO-shaped batch) and [`TunIo`] (read a batch of packets;
//!   write a batch), in the manner of wireguard-go's `conn.Bind` and `tun.Device`;
//! - [`udp`]: [`UdpIo`] on quinn-udp: GSO, GRO and `recvmmsg`, one socket per queue
//!   in an `SO_REUSEPORT` group;
//! - [`tun`]: [`TunIo`] on tun-rs: `IFF_VNET_HDR` offloads (TSO super-packets split
//!   on read, TCP segments coalesced on write) and one queue per worker
//!   (`IFF_MULTI_QUEUE`);
//! - [`memory`]: in-memory doubles of both, so the workers are tested without root
//!   (wireguard-go's `bindtest`/`tuntest`);
//! - [`tunnel`]: the workers (two threads per queue: UDP to TUN and TUN to UDP) and
//!   the timer thread around one shared [`cloudpipe_core::wg::Device`].
//!
//! - [`netconf`]: links, addresses, routes and proxy neighbour entries over
//!   rtnetlink, for the appliance's boot and the client mode alike.

pub mod io;
pub mod memory;
pub mod netconf;
pub mod stop;
pub mod tun;
pub mod tunnel;
pub mod udp;

pub use io::{TunIo, TunPackets, UdpBatch, UdpIo};
pub use stop::Stop;
pub use tunnel::{Tunnel, TunnelError};
