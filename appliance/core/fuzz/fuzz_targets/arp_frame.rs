//! Arbitrary bytes as a frame the appliance's packet socket receives on the tenant
//! network while it probes for address conflicts at boot (RFC 5227): any host or VM
//! on the tenant network can send it.
//!
//! Checks, besides "never panics":
//! - a conflict is only ever about a probed address, and never our own MAC;
//! - it agrees with a naive reading of RFC 826/5227 at the fixed offsets: an
//!   Ethernet ARP request or reply for IPv4 from another MAC whose sender address
//!   was probed, or another host's probe (sender 0.0.0.0) for a probed target.
#![no_main]

use cloudpipe_core::arp::{conflict_in, Conflict};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const OURS: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 2];

fuzz_target!(|frame: &[u8]| {
    let probed: BTreeSet<Ipv4Addr> = [[10, 0, 0, 2], [10, 0, 0, 250], [10, 0, 0, 251]]
        .into_iter()
        .map(Ipv4Addr::from)
        .collect();
    let got = conflict_in(frame, OURS, &probed);
    assert_eq!(got, naive(frame, &probed), "{frame:02x?}");
    if let Some(c) = got {
        assert!(probed.contains(&c.address));
        assert_ne!(c.mac, OURS);
    }
});

fn naive(f: &[u8], probed: &BTreeSet<Ipv4Addr>) -> Option<Conflict> {
    if f.len() < 42 {
        return None;
    }
    let is = |at: usize, want: &[u8]| &f[at..at + want.len()] == want;
    let arp_for_ipv4_over_ethernet =
        is(12, &[0x08, 0x06]) && is(14, &[0, 1]) && is(16, &[0x08, 0x00]) && is(18, &[6, 4]);
    let (request, reply) = (is(20, &[0, 1]), is(20, &[0, 2]));
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    if !arp_for_ipv4_over_ethernet || !(request || reply) || mac == OURS {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    let (sender, target) = (ip(28), ip(38));
    let address = if probed.contains(&sender) {
        sender
    } else if request && sender == Ipv4Addr::UNSPECIFIED && probed.contains(&target) {
        target
    } else {
        return None;
    };
    Some(Conflict { address, mac })
}
