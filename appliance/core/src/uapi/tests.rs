use super::*;
use crate::keys::key_to_hex;
use std::time::{Duration, SystemTime};

fn hex(b: u8) -> String {
    key_to_hex(&[b; 32])
}

fn pk(b: u8) -> PublicKey {
    PublicKey::from_bytes([b; 32])
}

fn set(body: &str) -> Result<SetRequest, UapiError> {
    match parse_request(format!("set=1\n{body}\n").as_bytes())? {
        Request::Set(s) => Ok(s),
        other => panic!("parsed as {other:?}"),
    }
}

/// The `get` answer of a device with key `[1; 32]` on port 1194.
fn get_answer(fwmark: u32, peers: &[PeerInfo]) -> String {
    let mut out = String::new();
    let device = DeviceInfo {
        private_key: PrivateKey::from_bytes([1; 32]),
        listen_port: 1194,
        fwmark,
    };
    write_get(&mut out, &device, peers);
    out
}

fn errno_of(r: Result<impl std::fmt::Debug, UapiError>) -> i32 {
    r.expect_err("should be refused").errno
}

#[test]
fn frames_end_at_the_first_empty_line() {
    assert_eq!(frame(b"get=1\n\n"), Frame::Complete(7));
    assert_eq!(frame(b"get=1\n\nget=1\n\n"), Frame::Complete(7));
    assert_eq!(frame(b"get=1\n"), Frame::Incomplete);
    assert_eq!(frame(b""), Frame::Incomplete);
    assert_eq!(frame(b"\nget=1"), Frame::Complete(1));
    let s = format!("set=1\npublic_key={}\nallowed_ip=10.0.0.1/32\n\n", hex(1));
    assert_eq!(frame(s.as_bytes()), Frame::Complete(s.len()));
    assert_eq!(frame(&vec![b'a'; MAX_REQUEST_LEN]), Frame::TooLong);
    let mut long = vec![b'a'; MAX_REQUEST_LEN];
    long.extend_from_slice(b"\n\n");
    assert_eq!(frame(&long), Frame::TooLong);
}

#[test]
fn operations() {
    assert_eq!(parse_request(b"get=1\n\n"), Ok(Request::Get));
    assert_eq!(parse_request(b"get=1\n"), Ok(Request::Get));
    assert_eq!(
        parse_request(b"cloudpipe_status=1\n\n"),
        Ok(Request::Status)
    );
    assert_eq!(
        parse_request(b"set=1\n\n"),
        Ok(Request::Set(SetRequest::default()))
    );
    for bad in [
        &b"get=2\n\n"[..],
        b"set=2\n\n",
        b"GET=1\n\n",
        b"\n",
        b"get=1\nx=y\n\n",
        b"delete=1\n\n",
    ] {
        assert_eq!(
            errno_of(parse_request(bad)),
            errno::EINVAL,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        errno_of(parse_request(b"set=1\n\xff\xfe\n\n")),
        errno::EPROTO
    );
}

#[test]
fn device_keys() {
    let s = set(&format!(
        "private_key={}\nlisten_port=51820\nfwmark=4660\nreplace_peers=true",
        hex(7)
    ))
    .unwrap();
    assert_eq!(s.private_key, Some(Some(PrivateKey::from_bytes([7; 32]))));
    assert_eq!(s.listen_port, Some(51820));
    assert_eq!(s.fwmark, Some(4660));
    assert!(s.replace_peers);
    assert!(s.peers.is_empty());
    // The all-zero key removes the key.
    let s = set(&format!("private_key={}", hex(0))).unwrap();
    assert_eq!(s.private_key, Some(None));
}

#[test]
fn peer_keys_every_one() {
    let s = set(&format!(
        "public_key={}\nupdate_only=true\npreshared_key={}\nendpoint=203.0.113.2:51820\n\
         persistent_keepalive_interval=25\nallowed_ip=10.0.0.9/24\nreplace_allowed_ips=true\n\
         allowed_ip=10.0.0.250/32\nallowed_ip=fd00::1/64\nprotocol_version=1\n\
         public_key={}\nendpoint=[2001:db8::1]:1194\npreshared_key={}\n\
         public_key={}\nremove=true\nallowed_ip=10.0.0.1/32",
        hex(1),
        hex(9),
        hex(2),
        hex(0),
        hex(3)
    ))
    .unwrap();
    assert_eq!(s.peers.len(), 3);
    let a = &s.peers[0];
    assert_eq!(a.public_key, pk(1));
    assert!(a.update_only && !a.remove);
    assert_eq!(
        a.preshared_key,
        Some(Some(PresharedKey::from_bytes([9; 32])))
    );
    assert_eq!(a.endpoint, Some("203.0.113.2:51820".parse().unwrap()));
    assert_eq!(a.persistent_keepalive, Some(25));
    // replace_allowed_ips drops what came before it; host bits are cleared.
    assert!(a.replace_allowed_ips);
    assert_eq!(
        a.allowed_ips,
        vec![
            "10.0.0.250/32".parse::<IpNetwork>().unwrap(),
            "fd00::/64".parse().unwrap()
        ]
    );
    let b = &s.peers[1];
    assert_eq!(b.endpoint, Some("[2001:db8::1]:1194".parse().unwrap()));
    assert_eq!(b.preshared_key, Some(None));
    // Lines after remove are checked but change nothing.
    let c = &s.peers[2];
    assert!(c.remove && c.allowed_ips.is_empty());
}

#[test]
fn malformed_values_name_the_problem() {
    let k = hex(1);
    for (body, what) in [
        ("listen_port=65536".to_string(), "listen_port"),
        ("listen_port=-1".into(), "listen_port"),
        ("listen_port=+5".into(), "listen_port"),
        ("listen_port=".into(), "listen_port"),
        ("fwmark=0x10".into(), "fwmark"),
        ("fwmark=4294967296".into(), "fwmark"),
        ("private_key=abc".into(), "private_key"),
        (format!("private_key={}", &k[..63]), "private_key"),
        ("replace_peers=false".into(), "replace_peers"),
        ("replace_peers=1".into(), "replace_peers"),
        (format!("public_key={k}x"), "public_key"),
        ("public_key=".into(), "public_key"),
        (format!("public_key={k}\nremove=yes"), "remove"),
        (format!("public_key={k}\nupdate_only=false"), "update_only"),
        (format!("public_key={k}\npreshared_key=zz"), "preshared_key"),
        (
            format!("public_key={k}\nendpoint=host.example:1194"),
            "endpoint",
        ),
        (format!("public_key={k}\nendpoint=10.0.0.1"), "endpoint"),
        (format!("public_key={k}\nendpoint=[::1]"), "endpoint"),
        (
            format!("public_key={k}\npersistent_keepalive_interval=65536"),
            "persistent_keepalive_interval",
        ),
        (
            format!("public_key={k}\nreplace_allowed_ips=no"),
            "replace_allowed_ips",
        ),
        (format!("public_key={k}\nallowed_ip=10.0.0.1"), "allowed_ip"),
        (
            format!("public_key={k}\nallowed_ip=10.0.0.1/33"),
            "allowed_ip",
        ),
        (
            format!("public_key={k}\nallowed_ip=fd00::/129"),
            "allowed_ip",
        ),
        (format!("public_key={k}\nallowed_ip=10.0.0/8"), "allowed_ip"),
        (
            format!("public_key={k}\nallowed_ip=10.0.0.1/x"),
            "allowed_ip",
        ),
        (
            format!("public_key={k}\nallowed_ip=-10.0.0.1/32"),
            "allowed_ip",
        ),
        (
            format!("public_key={k}\nprotocol_version=2"),
            "protocol_version",
        ),
        (format!("public_key={k}\nlisten_port=1"), "listen_port"),
        (format!("public_key={k}\nfrobnicate=1"), "frobnicate"),
        ("allowed_ip=10.0.0.1/32".into(), "allowed_ip"),
        ("frobnicate=1".into(), "frobnicate"),
    ] {
        let e = set(&body).expect_err(&body);
        assert_eq!(e.errno, errno::EINVAL, "{body}: {e}");
        assert!(e.message.contains(what), "{body}: {e}");
    }
    // Lines that are not key=value are a protocol error.
    for body in [
        "listen_port",
        "public_key",
        &format!("public_key={k}\nremove"),
    ] {
        assert_eq!(errno_of(set(body)), errno::EPROTO, "{body}");
    }
    assert_eq!(
        errno_of(parse_request(b"set=1\nlisten_port=1\n\nfwmark=1\n\n")),
        errno::EPROTO
    );
}

#[test]
fn error_messages_quote_at_most_64_characters() {
    let e = set(&format!("{}=1", "k".repeat(10_000))).unwrap_err();
    assert!(e.message.len() < 150, "{}", e.message);
    let e = set(&format!("{}=1", "é".repeat(100))).unwrap_err();
    assert!(e.message.contains(&"é".repeat(64)) && !e.message.contains(&"é".repeat(65)));
}

#[test]
fn get_answer_has_every_field_wg_reads() {
    let now = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let peers = vec![
        PeerInfo {
            public_key: pk(2),
            preshared_key: Some(PresharedKey::from_bytes([9; 32])),
            endpoint: Some("203.0.113.2:40000".parse().unwrap()),
            persistent_keepalive: Some(25),
            allowed_ips: vec![
                "10.0.0.250/32".parse().unwrap(),
                "fd00::/64".parse().unwrap(),
            ],
            last_handshake: Some(now),
            rx_bytes: 1000,
            tx_bytes: 2000,
        },
        PeerInfo {
            public_key: pk(3),
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: vec![],
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        },
    ];
    let out = get_answer(0, &peers);
    let expected = format!(
        "private_key={}\nlisten_port=1194\n\
         public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=203.0.113.2:40000\n\
         last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
         tx_bytes=2000\nrx_bytes=1000\npersistent_keepalive_interval=25\n\
         allowed_ip=10.0.0.250/32\nallowed_ip=fd00::/64\n\
         public_key={}\npreshared_key={}\nprotocol_version=1\n\
         last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
         tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
         errno=0\n\n",
        hex(1),
        hex(2),
        hex(9),
        hex(3),
        hex(0)
    );
    assert_eq!(out, expected);
    let out = get_answer(51820, &[]);
    assert!(out.contains("\nfwmark=51820\n"), "{out}");
}

#[test]
fn errno_lines_are_negated_as_wireguard_go_writes_them() {
    let mut out = String::new();
    write_errno(&mut out, errno::EINVAL);
    assert_eq!(out, "errno=-22\n\n");
    out.clear();
    write_errno(&mut out, 0);
    assert_eq!(out, "errno=0\n\n");
}

#[test]
fn a_get_answer_parses_back_as_a_frame() {
    // What the daemon writes is framed the way wg reads it: one empty line, last.
    let out = get_answer(0, &[]);
    assert_eq!(frame(out.as_bytes()), Frame::Complete(out.len()));
}

#[test]
fn a_set_request_prints_and_parses_back() {
    let req = SetRequest {
        private_key: Some(None),
        listen_port: Some(1194),
        fwmark: Some(7),
        replace_peers: true,
        peers: vec![
            PeerUpdate {
                update_only: true,
                preshared_key: Some(Some(PresharedKey::from_bytes([4; 32]))),
                endpoint: Some("[fd00::1]:51820".parse().unwrap()),
                persistent_keepalive: Some(0),
                replace_allowed_ips: true,
                allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
                ..PeerUpdate::new(pk(5))
            },
            PeerUpdate {
                remove: true,
                ..PeerUpdate::new(pk(6))
            },
        ],
    };
    let mut out = String::new();
    write_set(&mut out, &req);
    assert_eq!(frame(out.as_bytes()), Frame::Complete(out.len()));
    assert_eq!(parse_request(out.as_bytes()), Ok(Request::Set(req)));
}

#[test]
fn status_answers() {
    let mut out = String::new();
    write_status(&mut out, r#"{"version":1}"#);
    assert_eq!(out, "status={\"version\":1}\nerrno=0\n\n");
    assert_eq!(parse_status_answer(&out).unwrap(), r#"{"version":1}"#);
    assert_eq!(parse_status_answer("errno=-22\n\n").unwrap_err().errno, 22);
    assert_eq!(
        parse_status_answer("errno=0\n\n").unwrap_err().errno,
        errno::EPROTO
    );
    assert_eq!(
        parse_status_answer("status=x\n").unwrap_err().errno,
        errno::EPROTO
    );
}

#[test]
fn framing_after_a_scanned_prefix_finds_an_end_that_straddles_it() {
    let buf = b"get=1\n\nset=1\n";
    assert_eq!(frame_after(buf, 6), Frame::Complete(7));
    assert_eq!(frame_after(&buf[..6], 0), Frame::Incomplete);
    let mut grown = b"set=1\nlisten_port=1\n".to_vec();
    assert_eq!(frame_after(&grown, 0), Frame::Incomplete);
    let scanned = grown.len();
    grown.push(b'\n');
    assert_eq!(frame_after(&grown, scanned), Frame::Complete(grown.len()));
}
