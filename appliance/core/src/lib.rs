//! The sans-IO core of cloudpipe.
//!
//! Everything here is pure logic over bytes and values: the boot payload format
//! ([`payload`], [`config`]), WireGuard keys ([`keys`]), the client address pool
//! ([`pool`]), client configs for stock WireGuard clients ([`client_config`]) and the
//! metadata overlay that adds and revokes clients on a running
//! appliance ([`overlay`]); and the WireGuard data path's logic: checked IP packet
//! views ([`packet`]), the peer table ([`peer_table`]), cryptokey routing decisions
//! ([`routing`]) and the device that runs every peer's boringtun session
//! ([`device`]).
//!
//! This crate does not open sockets, files or devices: callers pass bytes in and
//! send what comes out. (The one clock is inside boringtun's timers, advanced by
//! `Device::update_timers`.) That keeps it fast to test and fuzz, and lets the daemon
//! (`cloudpiped`) and the CLI (`cloudpipe`) share one definition of every format.
#![forbid(unsafe_code)]

pub mod client_config;
pub mod config;
pub mod device;
pub mod keys;
pub mod overlay;
pub mod packet;
pub mod payload;
pub mod peer_table;
pub mod pool;
pub mod routing;
