//! Arbitrary bytes into the `wg` UAPI codec and, when they parse as a `set`, into
//! the reconciler and a WireGuard device: anyone with access to the control socket
//! (root on the appliance) writes them, and the daemon must answer with an errno
//! and keep running whatever they are.
//!
//! Checks, besides "never panics":
//! - framing never claims more bytes than it was given, nor more than the limit;
//! - an accepted `set` prints (`write_set`) to a request that parses back to it;
//! - applied to the reconciler of a fixed network and its diff to a device, the
//!   device ends with exactly the reconciler's desired peers and allowed IPs.
//!
//! Seeds (committed, appliance/core/fuzz/seeds/uapi_parse/) are requests stock
//! `wg` sent: show, set, remove, syncconf, setconf.
#![no_main]

use cloudpipe_core::reconcile::Reconciler;
use cloudpipe_core::uapi::{frame, parse_request, write_set, Frame, Request, MAX_REQUEST_LEN};
use cloudpipe_core::wg::{Device, DeviceConfig, Role};
use libfuzzer_sys::fuzz_target;
use std::time::SystemTime;

#[path = "fixture.rs"]
mod fixture;
use fixture::config;

fuzz_target!(|data: &[u8]| {
    match frame(data) {
        Frame::Complete(n) => assert!(n <= data.len() && n <= MAX_REQUEST_LEN),
        Frame::Incomplete => assert!(data.len() < MAX_REQUEST_LEN),
        Frame::TooLong => {}
    }
    let Ok(req) = parse_request(data) else {
        return;
    };
    let Request::Set(set) = &req else {
        return;
    };
    let mut printed = String::new();
    write_set(&mut printed, set);
    assert_eq!(
        parse_request(printed.as_bytes()).as_ref(),
        Ok(&req),
        "printed as {printed:?}"
    );

    let config = config();
    let (mut reconciler, boot) = Reconciler::new(config, config.peers.clone());
    let device = Device::new(
        DeviceConfig {
            role: Role::Client,
            ..config.device_config()
        },
        Vec::new(),
        7,
    );
    boot.apply_to(&device);
    reconciler.control(set).apply_to(&device);
    let live: Vec<_> = device
        .peers(SystemTime::UNIX_EPOCH)
        .into_iter()
        .map(|p| {
            let mut ips = p.allowed_ips;
            ips.sort();
            (p.public_key, ips)
        })
        .collect();
    let mut want: Vec<_> = reconciler
        .peers()
        .map(|p| {
            let mut ips = p.config.allowed_ips.clone();
            ips.sort();
            (p.config.public_key, ips)
        })
        .collect();
    want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(live, want);
});
