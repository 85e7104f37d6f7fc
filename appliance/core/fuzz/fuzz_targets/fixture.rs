//! The network both fuzz targets that need one use: a /24 with two clients in the
//! pool .250-.254. Fake keys: 32 bytes of 0x01 (server), 0x02 and 0x03.

use cloudpipe_core::config::{Config, ConfigFile};
use std::sync::OnceLock;

const CONFIG_JSON: &str = r#"{
  "version": 1,
  "network": "fuzz",
  "cidr": "10.0.0.0/24",
  "pool": { "first": "10.0.0.250", "last": "10.0.0.254" },
  "private_key": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
  "peers": [
    { "name": "alice", "public_key": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=", "address": "10.0.0.250" },
    { "name": "bob", "public_key": "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=", "address": "10.0.0.251" }
  ]
}"#;

pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let file: ConfigFile = serde_json::from_str(CONFIG_JSON).expect("the fuzz config parses");
        Config::try_from(file).expect("the fuzz config is valid")
    })
}
