//! WireGuard (whitepaper: Donenfeld, "WireGuard: Next Generation Kernel Network
//! Tunnel", NDSS 2017) as a sans-IO device for either role: the appliance that
//! serves a tenant network's clients, or a client.
//!
//! - [`device`]: the device, its configuration ([`DeviceConfig`], [`PeerConfig`]),
//!   edits, and the per-thread [`Worker`] that moves packets;
//! - [`allowed_ips`]: cryptokey routing's longest-prefix table;
//! - [`policy`]: routing decisions per [`Role`];
//! - [`transmit`]: output queues shaped for GSO (UDP) and GRO (TUN);
//! - [`stats`]: drop reasons and counters.
//!
//! boringtun's `noise` module does the protocol itself (handshake, sessions,
//! timers, cookies); everything around it is here.

pub mod allowed_ips;
pub mod device;
pub mod policy;
pub mod stats;
pub mod transmit;

#[cfg(test)]
mod tests;

pub use device::{
    Device, DeviceConfig, DeviceError, Edit, PeerChanges, PeerConfig, PeerInfo, Worker,
};
pub use policy::{Role, ServerPolicy};
pub use stats::{DropReason, Stats};
pub use transmit::{Transmit, Transmits, TunBatch};
