//! Arbitrary bytes as `meta_data.json`, then on the daemon's path: the instance
//! properties it holds into the metadata overlay, the overlay onto a fixed network.
//! Whoever can set instance properties (`openstack server set --property`) writes
//! the `meta` map; the metadata service or a config drive serves the document,
//! and the daemon reads it every poll for the instance's whole life.
//!
//! Checks, besides "never panics":
//! - properties read back: the map that was read, written as `{"meta": map}`,
//!   reads as the same map;
//! - an overlay from them either is refused or applies to peers that pass the
//!   network's own checks, none of them revoked.
#![no_main]

use cloudpipe_core::metadata::parse_meta;
use cloudpipe_core::overlay::Overlay;
use libfuzzer_sys::fuzz_target;

#[path = "fixture.rs"]
mod fixture;
use fixture::config;

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = parse_meta(data) else {
        return;
    };
    let doc = serde_json::json!({ "uuid": "u", "meta": meta });
    let back = parse_meta(doc.to_string().as_bytes()).expect("a written meta map reads");
    assert_eq!(back, meta);
    let Ok(overlay) = Overlay::from_properties(meta.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    else {
        return;
    };
    let config = config();
    if let Ok(peers) = overlay.apply(config) {
        config
            .check_peers(&peers)
            .expect("applied peers pass the config's checks");
        assert!(peers
            .iter()
            .all(|p| !overlay.revoked.contains(&p.public_key)));
    }
});
