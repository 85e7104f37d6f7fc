//! ARP for IPv4 over Ethernet (RFC 826) as the appliance's duplicate address
//! detection uses it (RFC 5227): the probe it broadcasts, and what a frame received
//! on the tenant network says about the addresses it probed. Frames from the
//! tenant network are untrusted: [`conflict_in`] reads any bytes without panicking
//! (fuzzed: `arp_frame`). The packet socket is cloudpiped's (`dad`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// EtherType of ARP (the packet socket's protocol too).
pub const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const FRAME_LEN: usize = 42;

/// Another host holding one of our addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub address: Ipv4Addr,
    /// The other host's MAC address.
    pub mac: [u8; 6],
}

impl Conflict {
    pub fn mac_string(&self) -> String {
        mac_string(&self.mac)
    }
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An ARP probe for `target` from `mac`: broadcast, sender address 0.0.0.0.
pub fn probe_frame(mac: [u8; 6], target: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    // Sender protocol address 0.0.0.0, target hardware address zero (left as is).
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// What a received frame says about `probed` addresses, for a host with `ours` MAC: a
/// reply or a request from another MAC whose sender address is one of them (it holds
/// it), or another host's probe for one (it is claiming it too, RFC 5227 2.1.1).
pub fn conflict_in(frame: &[u8], ours: [u8; 6], probed: &BTreeSet<Ipv4Addr>) -> Option<Conflict> {
    if frame.len() < FRAME_LEN
        || frame[12..14] != ETH_P_ARP.to_be_bytes()
        || frame[14..16] != 1u16.to_be_bytes()
        || frame[16..18] != ETH_P_IP.to_be_bytes()
        || frame[18] != 6
        || frame[19] != 4
    {
        return None;
    }
    let op = u16::from_be_bytes([frame[20], frame[21]]);
    let sha: [u8; 6] = frame[22..28].try_into().ok()?;
    let spa = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[28..32]).ok()?);
    let tpa = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[38..42]).ok()?);
    if sha == ours || !(op == ARP_REPLY || op == ARP_REQUEST) {
        return None;
    }
    let address = if probed.contains(&spa) {
        spa
    } else if spa.is_unspecified() && op == ARP_REQUEST && probed.contains(&tpa) {
        tpa
    } else {
        return None;
    };
    Some(Conflict { address, mac: sha })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 2];
    const THEIRS: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 9];

    fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = probe_frame(sha, Ipv4Addr::from(tpa)).to_vec();
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f[28..32].copy_from_slice(&spa);
        f
    }

    fn probed() -> BTreeSet<Ipv4Addr> {
        ["10.0.0.2", "10.0.0.250", "10.0.0.251"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_probe_is_an_rfc_5227_arp_request_from_zero() {
        let f = probe_frame(OURS, "10.0.0.250".parse().unwrap());
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &OURS);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &OURS);
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "sender address 0.0.0.0");
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 250]);
    }

    #[test]
    fn answers_and_rival_probes_are_conflicts_our_own_frames_are_not() {
        let p = probed();
        // Another host replies for .250.
        let reply = arp(ARP_REPLY, THEIRS, [10, 0, 0, 250], [0, 0, 0, 0]);
        assert_eq!(
            conflict_in(&reply, OURS, &p),
            Some(Conflict {
                address: "10.0.0.250".parse().unwrap(),
                mac: THEIRS
            })
        );
        // Another host asks for something while using .2 as its address.
        let req = arp(ARP_REQUEST, THEIRS, [10, 0, 0, 2], [10, 0, 0, 1]);
        assert_eq!(
            conflict_in(&req, OURS, &p).map(|c| c.address),
            Some("10.0.0.2".parse().unwrap())
        );
        // Another host probes for .251 at the same time.
        let rival = probe_frame(THEIRS, "10.0.0.251".parse().unwrap());
        assert_eq!(
            conflict_in(&rival, OURS, &p).map(|c| c.address),
            Some("10.0.0.251".parse().unwrap())
        );
        // Our own probe, seen going out, and traffic about other addresses.
        assert_eq!(
            conflict_in(&probe_frame(OURS, "10.0.0.250".parse().unwrap()), OURS, &p),
            None
        );
        assert_eq!(
            conflict_in(&arp(ARP_REPLY, THEIRS, [10, 0, 0, 9], [0; 4]), OURS, &p),
            None
        );
        assert_eq!(conflict_in(&reply[..30], OURS, &p), None, "short frame");
        let mut ipv4 = reply.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(conflict_in(&ipv4, OURS, &p), None, "not ARP");
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(parse_mac("fa:16:3e:00:00:09\n"), Some(THEIRS));
        assert_eq!(mac_string(&THEIRS), "fa:16:3e:00:00:09");
        assert_eq!(parse_mac("fa:16:3e:00:00"), None);
        assert_eq!(parse_mac("fa:16:3e:00:00:09:01"), None);
        assert_eq!(parse_mac("zz:16:3e:00:00:09"), None);
    }
}
