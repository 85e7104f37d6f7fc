//! The sans-IO core of cloudpipe.
//!
//! Everything here is pure logic over bytes and values: the boot payload format
//! ([`payload`], [`config`]), WireGuard keys ([`keys`]), the client address pool
//! ([`pool`]), client configs for stock WireGuard clients ([`client_config`]) and the
//! metadata overlay that adds and revokes clients on a running
//! appliance ([`overlay`]); what a network needs from Neutron ([`neutron`]: the
//! launch recipe, allowed address pairs, allocation pools); and the WireGuard data
//! path's logic: checked IP packet views ([`packet`]) and a role-neutral WireGuard
//! device ([`wg`]: peers, the allowed-IPs trie, routing per role, GSO-shaped output
//! queues, counters) that runs every peer's boringtun session. Around a running
//! appliance: the one owner of its peer set ([`reconcile`]: sources hand it changes,
//! it returns one diff for the device and the host), the `wg` userspace API codec
//! ([`uapi`]) and the live status document ([`status`]). What the appliance reads
//! about itself from OpenStack ([`metadata`]): HTTP responses of the metadata
//! service, the config drive's ISO 9660 filesystem, `meta_data.json` and
//! `network_data.json`.
//!
//! This crate does not open sockets, files or devices, nor read the clock: callers
//! pass bytes and `now` in and send what comes out. (boringtun's timers keep their
//! own monotonic clock, advanced by `wg::Device::update_timers`.) That keeps it fast
//! to test and fuzz, and lets the daemon (`cloudpiped`) and the CLI (`cloudpipe`)
//! share one definition of every format and one data path.
#![forbid(unsafe_code)]

pub mod arp;
pub mod client_config;
pub mod config;
pub mod keys;
pub mod metadata;
pub mod neutron;
pub mod overlay;
pub mod packet;
pub mod payload;
pub mod pool;
pub mod reconcile;
pub mod status;
pub mod uapi;
pub mod wg;
pub mod wg_quick;
