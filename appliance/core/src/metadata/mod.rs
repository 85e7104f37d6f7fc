//! What the appliance reads from OpenStack about itself, as bytes in and values out:
//! the metadata service's paths and its HTTP responses ([`http`]), the config
//! drive's filesystem ([`config_drive`]: label probe, ISO 9660), `meta_data.json`,
//! whose `meta` map (instance properties) carries the overlay of added and revoked
//! clients ([`parse_meta`]), and `network_data.json`, which gives the tenant
//! network's MTU ([`link_mtu`]).
//!
//! All of it is untrusted input: a metadata service or a block device labelled
//! `config-2` can hold anything. Each reader here is bounded, never panics, and is
//! fuzzed (`appliance/core/fuzz`: `http_response`, `config_drive`, `meta_data`).
//! The daemon (`cloudpiped`) keeps only the I/O: the socket, the block device.
//!
//! Sources: OpenStack's metadata service and config drive ("Metadata service" and
//! "Config drives" in the Nova user documentation).

pub mod config_drive;
pub mod http;

use std::collections::BTreeMap;

/// Where user-data lives, OpenStack style first (issue order), then EC2 style.
pub const USER_DATA_PATHS: [&str; 2] = ["openstack/latest/user_data", "latest/user-data"];
/// The instance's metadata document, with the `meta` map of instance properties.
pub const META_DATA_PATH: &str = "openstack/latest/meta_data.json";
/// The instance's network configuration (links with their MTU).
pub const NETWORK_DATA_PATH: &str = "openstack/latest/network_data.json";
/// A `meta_data.json` is a few KiB; Nova's 128 properties of 255 characters fit in 64 KiB.
pub const MAX_META_DATA: usize = 256 * 1024;

/// The instance properties (`meta`) out of a `meta_data.json`. A document without
/// `meta` has no properties; non-string values are not properties Nova writes and
/// are reported as an error rather than guessed at. Errors name the document and,
/// where there is one, the key.
pub fn parse_meta(doc: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(doc).map_err(|e| format!("meta_data.json is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "meta_data.json is not a JSON object".to_string())?;
    let Some(meta) = obj.get("meta") else {
        return Ok(BTreeMap::new());
    };
    let meta = meta
        .as_object()
        .ok_or_else(|| "meta_data.json: meta is not an object".to_string())?;
    meta.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!(
                "meta_data.json: meta.{:?} is not a string",
                crate::uapi::truncate(k)
            )),
        })
        .collect()
}

/// The MTU `network_data.json` gives the link with MAC address `mac` (Nova writes
/// Neutron's network MTU there: `links[].mtu`, `links[].ethernet_mac_address`); with
/// no link of that MAC, the MTU of the only link. `None` when it says nothing.
pub fn link_mtu(doc: &[u8], mac: &str) -> Result<Option<u32>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(doc).map_err(|e| format!("network_data.json is not JSON: {e}"))?;
    let links = v["links"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mtu = |l: &serde_json::Value| l["mtu"].as_u64().and_then(|m| u32::try_from(m).ok());
    let ours = links.iter().find(|l| {
        l["ethernet_mac_address"]
            .as_str()
            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
    });
    Ok(match (ours, links) {
        (Some(l), _) => mtu(l),
        (None, [only]) => mtu(only),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_read() {
        let doc = br#"{"uuid":"u","meta":{"cloudpipe-add-0":"v1 x","owner":"ops"},"hostname":"h"}"#;
        let m = parse_meta(doc).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["owner"], "ops");
        assert!(parse_meta(br#"{"uuid":"u"}"#).unwrap().is_empty());
        assert!(parse_meta(b"[1]").is_err());
        assert!(parse_meta(b"nope").is_err());
        assert!(parse_meta(br#"{"meta":{"a":1}}"#).is_err());
    }

    #[test]
    fn the_links_mtu_is_found_by_mac() {
        let doc = br#"{"links":[
            {"id":"tap1","type":"ovs","mtu":1442,"ethernet_mac_address":"FA:16:3E:00:00:01"},
            {"id":"tap2","type":"ovs","mtu":9000,"ethernet_mac_address":"fa:16:3e:00:00:02"}],
            "networks":[],"services":[]}"#;
        assert_eq!(link_mtu(doc, "fa:16:3e:00:00:01"), Ok(Some(1442)));
        assert_eq!(link_mtu(doc, "fa:16:3e:00:00:09"), Ok(None));
        let one = br#"{"links":[{"id":"tap1","mtu":1450}]}"#;
        assert_eq!(link_mtu(one, "fa:16:3e:00:00:09"), Ok(Some(1450)));
        assert_eq!(
            link_mtu(br#"{"links":[{"id":"t","mtu":null}]}"#, "x"),
            Ok(None)
        );
        assert_eq!(link_mtu(b"{}", "x"), Ok(None));
        assert!(link_mtu(b"[", "x").is_err());
    }
}
