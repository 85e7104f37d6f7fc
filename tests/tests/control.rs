//! The control surfaces of a running appliance in the lab (root only): stock `wg`
//! from wireguard-tools against the daemon's control socket, with wireguard-go
//! clients connected; malformed requests; stopping on SIGTERM and SIGINT.
//!
//! `wg` runs in the appliance namespace with the lab's control directory mounted
//! over /run/wireguard (`Lab::wg`), so it finds `cloudpipe0.sock` where it looks.

use cloudpipe_lab::mission::{iperf_report, iperf_server, ping, ping_all, Mission};
use cloudpipe_lab::{wait_for, Lab};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Poll interval of the lab daemon (1 s) plus a generous margin.
const APPLIED_WITHIN: Duration = Duration::from_secs(10);
/// What the issue asks of SIGTERM and SIGINT.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// One peer line of `wg show all dump`.
#[derive(Debug, Clone)]
struct DumpPeer {
    public_key: String,
    preshared_key: String,
    endpoint: String,
    allowed_ips: String,
    latest_handshake: u64,
    rx: u64,
    tx: u64,
    keepalive: String,
}

/// `wg show all dump`: the interface line's fields and the peers.
fn dump(lab: &Lab) -> (Vec<String>, Vec<DumpPeer>) {
    let text = lab.wg_ok(&["show", "all", "dump"]);
    let mut lines = text.lines();
    let iface: Vec<String> = lines
        .next()
        .expect("an interface line")
        .split('\t')
        .map(String::from)
        .collect();
    assert_eq!(iface.len(), 5, "interface line {iface:?}");
    let peers = lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 9, "peer line {l:?}");
            assert_eq!(f[0], "cloudpipe0");
            DumpPeer {
                public_key: f[1].into(),
                preshared_key: f[2].into(),
                endpoint: f[3].into(),
                allowed_ips: f[4].into(),
                latest_handshake: f[5].parse().expect("handshake time"),
                rx: f[6].parse().expect("rx bytes"),
                tx: f[7].parse().expect("tx bytes"),
                keepalive: f[8].into(),
            }
        })
        .collect();
    (iface, peers)
}

fn peer<'a>(peers: &'a [DumpPeer], key: &str) -> &'a DumpPeer {
    peers
        .iter()
        .find(|p| p.public_key == key)
        .unwrap_or_else(|| panic!("no peer {key} in {peers:?}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn wg_show_agrees_with_the_clients_own_view_and_counts_traffic() {
    let Some((m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let (iface, peers) = dump(&m.lab);
    assert_eq!(iface[0], "cloudpipe0");
    // The interface: private key, public key (the one in alice's config), port, no mark.
    let server_key = m
        .lab
        .output(&m.lab.outside(), &["wg", "show", alice.iface(), "peers"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap();
    assert_eq!(iface[2], server_key);
    assert_eq!(iface[1].len(), 44, "a base64 private key");
    assert_eq!((iface[3].as_str(), iface[4].as_str()), ("1194", "off"));
    assert_eq!(peers.len(), 1, "{peers:?}");
    let a = peer(&peers, &alice.public_key());
    assert_eq!(a.allowed_ips, "10.77.0.250/32");
    assert_ne!(
        a.preshared_key, "(none)",
        "the CLI gives every client a preshared key"
    );
    assert_eq!(a.keepalive, "off");
    // The server sees alice where she sends from (the router does DNAT, not SNAT).
    assert_eq!(
        a.endpoint,
        format!("203.0.113.2:{}", alice.listen_port().unwrap())
    );
    // Handshake: Unix time within the last minute, the same handshake the client saw.
    let t = now();
    assert!(
        a.latest_handshake <= t && t - a.latest_handshake < 60,
        "handshake at {} (now {t})",
        a.latest_handshake
    );
    let theirs = alice.latest_handshake().expect("alice handshook");
    assert!(
        a.latest_handshake.abs_diff(theirs) <= 5,
        "server {} client {theirs}",
        a.latest_handshake
    );
    let human = m.lab.wg_ok(&["show", "cloudpipe0"]);
    // "Now" or "N seconds ago", never "55 years ago".
    let line = human
        .lines()
        .find(|l| l.contains("latest handshake: "))
        .unwrap_or_else(|| panic!("{human}"));
    assert!(
        line.ends_with("Now") || line.ends_with("seconds ago") || line.ends_with("second ago"),
        "{human}"
    );

    // Counters rise with an iperf3 run from alice to the tenant VM.
    let (client_rx0, client_tx0) = alice.transfer();
    iperf_server(&m.lab, 5301);
    let out = m
        .lab
        .output(
            &m.lab.outside(),
            &[
                "iperf3",
                "-c",
                &m.lab.tenant_vm_ip().to_string(),
                "-p",
                "5301",
                "-n",
                "20M",
                "-J",
            ],
        )
        .unwrap();
    // What reached the tenant VM came through the appliance from alice.
    let received = iperf_report(out)["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap();
    assert!(received > 10_000_000, "iperf3 moved {received} bytes");
    let (_, peers) = dump(&m.lab);
    let b = peer(&peers, &alice.public_key());
    let (client_rx, client_tx) = alice.transfer();
    assert!(
        b.rx >= a.rx + received,
        "server rx {} -> {} after {received} bytes arrived",
        a.rx,
        b.rx
    );
    assert!(b.tx > a.tx, "server tx {} -> {}", a.tx, b.tx);
    // What the server received, the client sent (the client counts WireGuard's
    // overhead too, so it is the larger).
    assert!(
        client_tx - client_tx0 >= b.rx - a.rx,
        "client tx {client_tx0} -> {client_tx}, server rx {} -> {}",
        a.rx,
        b.rx
    );
    assert!(client_rx > client_rx0);
}

#[test]
fn wg_set_remove_cuts_one_client_off_until_the_metadata_names_it_again() {
    let Some((m, alice, _bob, home)) = Mission::with_alice_and_bob(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    let key = alice.public_key();
    m.lab.wg_ok(&["set", "cloudpipe0", "peer", &key, "remove"]);
    assert!(
        !ping(&m.lab, &outside, &m.lab.tenant_vm_ip().to_string(), None),
        "alice still reaches the tenant VM"
    );
    assert!(
        ping_all(&m.lab, &home, &m.lab.tenant_vm_ip().to_string(), 3),
        "bob lost his session"
    );
    let (_, peers) = dump(&m.lab);
    assert!(peers.iter().all(|p| p.public_key != key), "{peers:?}");
    let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
    assert!(!proxies.contains("10.77.0.250 "), "{proxies}");

    // Polls of the unchanged instance properties (every second) and a SIGHUP do
    // not bring her back.
    std::thread::sleep(Duration::from_secs(3));
    let d = m.daemon.as_ref().unwrap();
    d.signal(libc::SIGHUP);
    wait_for(APPLIED_WITHIN, "the SIGHUP reading", || {
        Ok(d.log().contains("trigger=SIGHUP"))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ping(&m.lab, &outside, &m.lab.tenant_vm_ip().to_string(), None),
        "alice came back:\n{}",
        m.log()
    );
    let (_, peers) = dump(&m.lab);
    assert!(peers.iter().all(|p| p.public_key != key));

    // A metadata change that names her again does: revoked, then un-revoked.
    m.lab
        .set_meta([("cloudpipe-revoke-0", format!("v1 {key}").as_str())])
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!ping(
        &m.lab,
        &outside,
        &m.lab.tenant_vm_ip().to_string(),
        None
    ));
    m.publish();
    wait_for(Duration::from_secs(30), "alice back", || {
        Ok(ping(
            &m.lab,
            &outside,
            &m.lab.tenant_vm_ip().to_string(),
            None,
        ))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    assert!(ping_all(
        &m.lab,
        &home,
        &m.lab.tenant_vm_ip().to_string(),
        3
    ));
}

#[test]
fn wg_syncconf_changes_allowed_ips_without_a_restart() {
    let Some((m, alice, bob, home)) = Mission::with_alice_and_bob(&[]) else {
        return;
    };
    let pid = m.daemon.as_ref().unwrap().pid();
    let (_, before) = dump(&m.lab);
    let bob_handshake = peer(&before, &bob.public_key()).latest_handshake;

    // showconf, give alice a network behind her, syncconf it back.
    let conf = m.lab.wg_ok(&["showconf", "cloudpipe0"]);
    let key = alice.public_key();
    let mut edited = String::new();
    let mut in_alice = false;
    for line in conf.lines() {
        if line.starts_with("PublicKey") {
            in_alice = line.contains(&key);
        }
        if in_alice && line.starts_with("AllowedIPs") {
            edited.push_str("AllowedIPs = 10.77.0.250/32, 192.168.77.0/24\n");
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    assert_ne!(edited, conf, "alice's section was found:\n{conf}");
    let path = m.lab.dir().join("synced.conf");
    std::fs::write(&path, &edited).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    m.lab
        .wg_ok(&["syncconf", "cloudpipe0", path.to_str().unwrap()]);

    let allowed = m.lab.wg_ok(&["show", "cloudpipe0", "allowed-ips"]);
    assert!(
        allowed.lines().any(|l| l.starts_with(&key)
            && l.contains("192.168.77.0/24")
            && l.contains("10.77.0.250/32")),
        "{allowed}"
    );
    let routes = m.lab.ip(&m.lab.cloudpipe(), "-4 route show").unwrap();
    assert!(
        routes.contains("192.168.77.0/24 dev cloudpipe0"),
        "{routes}"
    );

    // The network behind alice is reachable from the tenant VM through the tunnel.
    // Its packets leave the appliance's port with their own sources: under Neutron's
    // port security the port must allow them (an allowed address pair), as the
    // operator sets it with `openstack port set --allowed-address`.
    m.lab
        .allow_address_pair(0, "192.168.77.0/24".parse().unwrap())
        .unwrap();
    alice.add_address("192.168.77.1/24").unwrap();
    m.lab
        .ip(
            &m.lab.tenant_vm(),
            "route add 192.168.77.0/24 via 10.77.0.2",
        )
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the tenant VM reaches 192.168.77.1",
        || Ok(ping(&m.lab, &m.lab.tenant_vm(), "192.168.77.1", None)),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));

    // Same process, bob's session untouched and still carrying traffic.
    assert_eq!(m.daemon.as_ref().unwrap().pid(), pid);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let (_, after) = dump(&m.lab);
    assert_eq!(
        peer(&after, &bob.public_key()).latest_handshake,
        bob_handshake
    );
    assert!(ping_all(
        &m.lab,
        &home,
        &m.lab.tenant_vm_ip().to_string(),
        3
    ));

    // Back to the original: the route goes.
    let orig = m.lab.dir().join("orig.conf");
    std::fs::write(&orig, &conf).unwrap();
    m.lab
        .wg_ok(&["syncconf", "cloudpipe0", orig.to_str().unwrap()]);
    let routes = m.lab.ip(&m.lab.cloudpipe(), "-4 route show").unwrap();
    assert!(!routes.contains("192.168.77.0/24"), "{routes}");
}

/// Send `request` on a fresh connection and read the answer until the daemon
/// closes or an empty line ends it.
fn raw(lab: &Lab, request: &[u8]) -> String {
    let mut s =
        UnixStream::connect(lab.control_socket()).expect("connecting to the control socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The daemon may answer and close before all of an oversized request is in.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(b"\n\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_requests_get_an_errno_and_the_daemon_keeps_running() {
    let Some((m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let sock = m.lab.control_socket();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    // A client that connects and says nothing does not block anyone.
    let _idle = UnixStream::connect(&sock).unwrap();
    let key = alice.public_key();
    let hex = key
        .parse::<cloudpipe_core::keys::PublicKey>()
        .unwrap()
        .to_hex();
    for (request, errno) in [
        (b"hello\n\n".to_vec(), "-22"),
        (b"get=2\n\n".to_vec(), "-22"),
        (b"get=1\nextra=1\n\n".to_vec(), "-22"),
        (b"set=1\nlisten_port=banana\n\n".to_vec(), "-22"),
        (b"set=1\nno equals sign\n\n".to_vec(), "-71"),
        (b"set=1\n\xff\xfe\xfd\n\n".to_vec(), "-71"),
        (
            format!("set=1\npublic_key={hex}\nallowed_ip=300.1.1.1/32\n\n").into_bytes(),
            "-22",
        ),
        (
            format!("set=1\npublic_key={hex}\nendpoint=nowhere\n\n").into_bytes(),
            "-22",
        ),
        (b"set=1\npublic_key=abc\n\n".to_vec(), "-22"),
        (b"set=1\nlisten_port=5555\n\n".to_vec(), "-98"),
        (
            vec![b'x'; cloudpipe_core::uapi::MAX_REQUEST_LEN + (1 << 20)],
            "-90",
        ),
    ] {
        let answer = raw(&m.lab, &request);
        assert_eq!(
            answer,
            format!("errno={errno}\n\n"),
            "request {:?}",
            String::from_utf8_lossy(&request[..request.len().min(80)])
        );
    }
    // Stock wg reports the refusal in words and nothing changed.
    let out = m
        .lab
        .wg(&["set", "cloudpipe0", "listen-port", "5555"])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Address already in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (iface, peers) = dump(&m.lab);
    assert_eq!(iface[3], "1194");
    assert_eq!(peers.len(), 1);
    // Two requests on one connection, and a set that only ends at EOF.
    let two = raw(&m.lab, b"get=1\n\nget=1\n\n");
    assert!(
        two.starts_with("private_key=") && two.ends_with("errno=0\n\n"),
        "{two}"
    );
    {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(
            format!("set=1\npublic_key={hex}\npersistent_keepalive_interval=25\n").as_bytes(),
        )
        .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "errno=0\n\n");
    }
    let (_, peers) = dump(&m.lab);
    assert_eq!(peer(&peers, &key).keepalive, "25");
    // Still serving: the daemon runs, alice still reaches the tenant VM.
    assert!(ping_all(
        &m.lab,
        &m.lab.outside(),
        &m.lab.tenant_vm_ip().to_string(),
        3
    ));
    let log = m.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("request refused"), "{log}");
}

#[test]
fn sigterm_and_sigint_stop_within_two_seconds_and_remove_what_they_made() {
    let Some((mut m, _alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // A metadata read that hangs (the server trickles) is under way.
        m.lab
            .set_metadata_mode(cloudpipe_lab::metadata_server::Mode::Trickle)
            .unwrap();
        let d = m.daemon.as_mut().unwrap();
        d.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        d.signal(sig);
        let exit = d.wait_exit(Duration::from_secs(20)).unwrap();
        let took = t.elapsed();
        eprintln!("signal {sig}: stopped in {took:?}");
        assert!(exit.status.success(), "{exit:?}\n{}", m.log());
        assert!(
            took < STOP_WITHIN,
            "signal {sig}: stopped in {took:?}\n{}",
            m.log()
        );
        assert!(
            !m.lab.control_socket().exists(),
            "control socket left behind"
        );
        assert!(
            m.lab
                .ip(&m.lab.cloudpipe(), "link show cloudpipe0")
                .is_err(),
            "TUN left behind"
        );
        let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
        assert!(proxies.trim().is_empty(), "{proxies}");
        m.lab
            .set_metadata_mode(cloudpipe_lab::metadata_server::Mode::Normal)
            .unwrap();
        m.start_daemon();
    }
}

#[test]
fn a_restart_rebuilds_the_peer_set_from_the_payload_and_the_metadata() {
    let Some((mut m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let alice_key = alice.public_key();
    // Changes through wg last as long as the process, like a kernel interface's.
    let stranger = cloudpipe_core::keys::PrivateKey::from_bytes([77; 32])
        .public_key()
        .to_base64();
    m.lab
        .wg_ok(&["set", "cloudpipe0", "peer", &alice_key, "remove"]);
    m.lab.wg_ok(&[
        "set",
        "cloudpipe0",
        "peer",
        &stranger,
        "allowed-ips",
        "10.77.0.253/32",
    ]);
    let (_, peers) = dump(&m.lab);
    let keys: Vec<&str> = peers.iter().map(|p| p.public_key.as_str()).collect();
    assert_eq!(keys, vec![stranger.as_str()]);
    let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
    assert!(
        proxies.contains("10.77.0.253 ") && !proxies.contains("10.77.0.250 "),
        "{proxies}"
    );
    let exit = m
        .daemon
        .as_mut()
        .unwrap()
        .stop(Duration::from_secs(20))
        .unwrap();
    assert!(exit.status.success());
    m.start_daemon();
    let (_, peers) = dump(&m.lab);
    let keys: Vec<&str> = peers.iter().map(|p| p.public_key.as_str()).collect();
    assert_eq!(
        keys,
        vec![alice_key.as_str()],
        "payload and metadata, nothing else"
    );
    let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
    assert!(
        proxies.contains("10.77.0.250 ") && !proxies.contains("10.77.0.253 "),
        "{proxies}"
    );
    wait_for(
        Duration::from_secs(45),
        "alice back after the restart",
        || {
            Ok(ping(
                &m.lab,
                &m.lab.outside(),
                &m.lab.tenant_vm_ip().to_string(),
                None,
            ))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
}
