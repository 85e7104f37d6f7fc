//! The sans-IO core of cloudpipe.
//!
//! Everything here is pure logic over bytes and values: the boot payload format
//! ([`payload`], [`config`]), WireGuard keys ([`keys`]), the client address pool
//! ([`pool`]) and the metadata overlay
//! that adds and revokes clients on a running appliance ([`overlay`]).
//!
//! This crate does not open sockets, files or devices and reads no clock: callers
//! pass bytes and time in. That keeps it fast to test and fuzz, and lets the daemon
//! (`cloudpiped`) and the CLI (`cloudpipe`) share one definition of every format.
#![forbid(unsafe_code)]

pub mod config;
pub mod keys;
pub mod overlay;
pub mod payload;
pub mod pool;
