//! Arbitrary bytes as `network_data.json`, whose `links[].mtu` gives the tunnel its
//! MTU at boot: the metadata service or a config drive serves it.
//!
//! Input: one byte choosing the NIC's MAC address (one of a few, in either case, or
//! one no link has), then the document.
//!
//! Checks, besides "never panics": the answer is a naive reading of the document:
//! the MTU of the link with that MAC (case-insensitive), else of the only link,
//! else none; an MTU that is not a 32-bit unsigned number counts as none.
#![no_main]

use cloudpipe_core::metadata::link_mtu;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MACS: [&str; 4] = [
    "fa:16:3e:00:00:01",
    "FA:16:3E:00:00:01",
    "fa:16:3e:00:00:02",
    "x",
];

fuzz_target!(|data: &[u8]| {
    let [pick, doc @ ..] = data else {
        return;
    };
    let mac = MACS[usize::from(*pick) % MACS.len()];
    let got = link_mtu(doc, mac);
    let Ok(v) = serde_json::from_slice::<Value>(doc) else {
        assert!(got.is_err(), "not JSON, yet read");
        return;
    };
    let links: Vec<Value> = match v.get("links") {
        Some(Value::Array(l)) => l.clone(),
        _ => Vec::new(),
    };
    let mtu = |l: &Value| match l.get("mtu") {
        Some(Value::Number(n)) => n.as_u64().and_then(|m| u32::try_from(m).ok()),
        _ => None,
    };
    let ours = links.iter().find(|l| match l.get("ethernet_mac_address") {
        Some(Value::String(m)) => m.to_ascii_lowercase() == mac.to_ascii_lowercase(),
        _ => false,
    });
    let want = match (ours, links.as_slice()) {
        (Some(l), _) => mtu(l),
        (None, [only]) => mtu(only),
        _ => None,
    };
    assert_eq!(got, Ok(want));
});
