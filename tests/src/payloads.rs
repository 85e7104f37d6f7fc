//! Payloads for lab tests: a valid configuration for the lab's subnet, and the bad
//! payloads the boot tests feed the daemon.

use cloudpipe_core::config::{Config, ConfigFile, Mode, PeerFile, PoolFile};
use cloudpipe_core::keys::{PresharedKey, PrivateKey};
use cloudpipe_core::payload::{self, Encoding};

/// Pool of the lab configuration: 10.77.0.240 - 10.77.0.254.
pub const POOL_FIRST: [u8; 4] = [10, 77, 0, 240];
pub const POOL_LAST: [u8; 4] = [10, 77, 0, 254];

/// A deterministic key from a byte (test keys only).
pub fn key(b: u8) -> PrivateKey {
    PrivateKey::from_bytes([b; 32])
}

/// The appliance's key in [`config`].
pub fn server_key() -> PrivateKey {
    key(1)
}

/// A peer of the lab network: key `key(b)`, address 10.77.0.`last`.
pub fn peer(name: &str, b: u8, last: u8) -> PeerFile {
    PeerFile {
        name: name.into(),
        public_key: key(b).public_key().to_base64(),
        preshared_key: Some(PresharedKey::from_bytes([b.wrapping_add(100); 32]).to_base64()),
        address: [10, 77, 0, last].into(),
    }
}

/// The lab network's configuration file: 10.77.0.0/24, pool .240-.254, peers alice
/// (.240, key 2) and bob (.241, key 3), tunnel MTU for the default tenant network
/// (1450 - 80), as `network create` writes it.
pub fn config_file(mode: Mode) -> ConfigFile {
    ConfigFile {
        pool: Some(PoolFile {
            first: POOL_FIRST.into(),
            last: POOL_LAST.into(),
        }),
        mtu: cloudpipe_core::config::tunnel_mtu(crate::DEFAULT_MTU),
        mode,
        peers: vec![peer("alice", 2, 240), peer("bob", 3, 241)],
        ..ConfigFile::new("lab", crate::SUBNET, &server_key())
    }
}

pub fn config(mode: Mode) -> Config {
    Config::try_from(config_file(mode)).expect("the lab config is valid")
}

/// User-data as the metadata service serves it (base64 of the zip, wrapped).
pub fn guest(config: &Config) -> Vec<u8> {
    payload::encode(config, Encoding::Guest).expect("fits Nova's limit")
}

/// The raw zip (config drive, `--payload`).
pub fn zip(config: &Config) -> Vec<u8> {
    payload::build_zip(config)
}
