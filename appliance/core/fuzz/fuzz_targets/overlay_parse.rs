//! Arbitrary instance properties into the metadata overlay parser: anyone who can
//! run `openstack server set --property` on the appliance writes them, and the
//! daemon polls them for the whole life of the instance.
//!
//! Input: `key=value` lines (see [`properties`]).
//!
//! Checks, besides "never panics":
//! - an accepted overlay publishes (`to_properties`) to values within Nova's limits
//!   that parse back to the same clients and revocations;
//! - applying it to a fixed, valid config either fails with a field name or yields
//!   peers that pass the config's own checks.
#![no_main]

use cloudpipe_core::overlay::{Overlay, OverlayError, MAX_ITEMS, MAX_VALUE_LEN};
use libfuzzer_sys::fuzz_target;

#[path = "fixture.rs"]
mod fixture;
use fixture::config;

/// The input is a readable property list, one `key=value` per line (split at the
/// first `=`), so that seeds and crash files can be written and read by hand.
/// Bytes that are not UTF-8 become U+FFFD, as they would in JSON from Nova.
fn properties(data: &[u8]) -> Vec<(String, String)> {
    data.split(|&b| b == b'\n')
        .map(|line| {
            let line = String::from_utf8_lossy(line);
            match line.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (line.to_string(), String::new()),
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let props = properties(data);
    let pairs = props.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let Ok(overlay) = Overlay::from_properties(pairs) else {
        return;
    };
    match overlay.to_properties() {
        Ok(published) => {
            assert!(published.len() <= MAX_ITEMS);
            for (k, v) in &published {
                assert!(v.len() <= MAX_VALUE_LEN, "{k} = {v:?} is too long");
            }
            let back =
                Overlay::from_properties(published.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .expect("published properties parse");
            assert_eq!(back.revoked, overlay.revoked);
            // Published keys sort as strings (cloudpipe-add-10 before -add-2), so
            // compare the added clients as a multiset.
            let key = |p: &cloudpipe_core::config::Peer| {
                (
                    p.public_key,
                    p.name.clone(),
                    p.address,
                    p.preshared_key.as_ref().map(|k| *k.as_bytes()),
                )
            };
            let mut a: Vec<_> = back.added.iter().map(key).collect();
            let mut b: Vec<_> = overlay.added.iter().map(key).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
        Err(OverlayError::TooManyItems(n)) => assert!(n > MAX_ITEMS),
        Err(e) => panic!("to_properties failed with {e}"),
    }
    let config = config();
    if let Ok(peers) = overlay.apply(config) {
        config
            .check_peers(&peers)
            .expect("applied peers pass the config's checks");
        for p in &peers {
            assert!(
                !overlay.revoked.contains(&p.public_key),
                "a revoked key survived"
            );
        }
    }
});
