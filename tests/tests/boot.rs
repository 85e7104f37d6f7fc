//! Boot tests of `cloudpiped` in the network lab (root only; real kernel objects).
//!
//! Run `cargo build -p cloudpiped -p cloudpipe-lab` first (scripts/test does), then
//! `cargo test -p cloudpipe-lab -- --test-threads=2`.

use cloudpipe_core::config::Mode;
use cloudpipe_lab::metadata_server::Mode as MdMode;
use cloudpipe_lab::{payloads, privileges, wait_for, Lab, LabOptions};
use std::io::Write;
use std::time::Duration;

/// Generous upper bound for anything "within seconds" on a loaded 2-core machine.
const READY_WITHIN: Duration = Duration::from_secs(20);
const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// A daemon that refuses a payload peaks near 7 MiB; one that inflated the 96 MiB
/// zip bomb would not stay below this. (wait4's figure for a vfork+exec child also
/// counts the test process's own peak, which these tests keep small.)
const MAX_RSS_KIB: i64 = 32 * 1024;

macro_rules! lab_or_skip {
    ($opts:expr) => {{
        if cloudpipe_lab::skip_unless_root() {
            return;
        }
        Lab::new($opts).expect("building the lab")
    }};
}

/// The network state of the appliance namespace that a test compares.
#[derive(Debug, PartialEq, Eq)]
struct NetState {
    eth0_v4: Vec<String>,
    routes: Vec<String>,
    proxies: Vec<String>,
    tun: bool,
    nft_cloudpipe: bool,
}

fn net_state(lab: &Lab) -> NetState {
    let c = lab.cloudpipe();
    let lines = |s: String| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    };
    let eth0_v4 = lines(lab.ip(&c, "-4 -o addr show dev eth0").unwrap())
        .into_iter()
        .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string())
        .collect();
    NetState {
        eth0_v4,
        routes: lines(lab.ip(&c, "-4 route show table main").unwrap()),
        proxies: lines(lab.ip(&c, "neigh show proxy").unwrap()),
        tun: lab.ip(&c, "link show cloudpipe0").is_ok(),
        nft_cloudpipe: lab
            .exec(&c, &["nft", "list", "table", "ip", "cloudpipe"])
            .is_ok(),
    }
}

fn udp_bound(lab: &Lab) -> bool {
    lab.exec(&lab.cloudpipe(), &["ss", "-Huln", "sport = :1194"])
        .map(|s| s.contains(":1194"))
        .unwrap_or(false)
}

fn assert_booted(lab: &Lab, mode: Mode) -> NetState {
    let s = net_state(lab);
    assert_eq!(s.eth0_v4, vec!["10.77.0.2/24".to_string()], "{s:?}");
    assert_eq!(
        s.routes
            .iter()
            .filter(|r| r.starts_with("default via 10.77.0.1 dev eth0"))
            .count(),
        1,
        "{s:?}"
    );
    assert!(s.tun, "{s:?}");
    assert!(
        s.routes
            .iter()
            .any(|r| r.starts_with("10.77.0.240/29 dev cloudpipe0")),
        "{s:?}"
    );
    // The tenant network's MTU less WireGuard's 80 bytes.
    let mtu = lab.ip(&lab.cloudpipe(), "link show cloudpipe0").unwrap();
    let want = format!("mtu {} ", lab.mtu() - 80);
    assert!(mtu.contains(&want) && mtu.contains(",UP"), "{want}: {mtu}");
    assert!(udp_bound(lab));
    match mode {
        Mode::ProxyArp => {
            assert_eq!(
                s.proxies,
                vec!["10.77.0.240 dev eth0 proxy", "10.77.0.241 dev eth0 proxy"],
                "{s:?}"
            );
            assert!(!s.nft_cloudpipe);
        }
        Mode::Masquerade => {
            assert!(s.proxies.is_empty(), "{s:?}");
            assert!(s.nft_cloudpipe);
        }
    }
    s
}

fn assert_cleaned(lab: &Lab) {
    let s = net_state(lab);
    assert!(!s.tun, "TUN left behind: {s:?}");
    assert!(s.proxies.is_empty(), "proxy entries left behind: {s:?}");
    assert!(!s.nft_cloudpipe, "NAT table left behind");
    assert_eq!(
        s.eth0_v4,
        vec!["10.77.0.2/24".to_string()],
        "tenant address must stay: {s:?}"
    );
    assert!(!s.routes.iter().any(|r| r.contains("cloudpipe0")), "{s:?}");
}

#[test]
fn boots_from_metadata_and_follows_instance_properties() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: true,
        metadata: true,
        ..LabOptions::default()
    });
    let config = payloads::config(Mode::ProxyArp);
    lab.set_user_data(&payloads::guest(&config)).unwrap();
    let mut d = lab.start_daemon(&[]).unwrap();
    let took = d.wait_ready(READY_WITHIN).unwrap();
    eprintln!("READY=1 after {took:?}");
    assert!(d.notifications().iter().any(|m| m.contains("STATUS=")));
    assert_booted(&lab, Mode::ProxyArp);
    assert!(d.log().contains("no address conflicts"), "{}", d.log());

    // After setup only CAP_NET_ADMIN (bit 12) is left, on every thread, in every set.
    for task in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
            let line = status.lines().find(|l| l.starts_with(set)).unwrap();
            let v = u64::from_str_radix(line[set.len()..].trim(), 16).unwrap();
            assert_eq!(v & !(1 << 12), 0, "{line}");
        }
    }

    // The tenant VM resolves a client address to the appliance (proxy ARP).
    let mac = lab.ip(&lab.cloudpipe(), "link show eth0").unwrap();
    let mac = mac
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let t = lab.tenant_vm();
    wait_for(
        Duration::from_secs(10),
        "the tenant VM's ARP entry for a client",
        || {
            let _ = lab.output(&t, &["ping", "-c", "1", "-W", "1", "10.77.0.240"]);
            Ok(lab.ip(&t, "neigh show 10.77.0.240")?.contains(&mac))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: appliance MAC {mac}"));

    // Revoke bob, add carol through instance properties: no restart.
    let carol = payloads::peer("carol", 4, 242);
    let add = format!("v1 carol {} - {}", carol.public_key, carol.address);
    let revoke = format!("v1 {}", payloads::key(3).public_key());
    lab.set_meta([
        ("cloudpipe-add-0", add.as_str()),
        ("cloudpipe-revoke-0", revoke.as_str()),
        ("owner", "ops"),
    ])
    .unwrap();
    let c = lab.cloudpipe();
    wait_for(
        Duration::from_secs(20),
        "proxy entries for alice and carol",
        || {
            let p = lab.ip(&c, "neigh show proxy")?;
            Ok(p.contains("10.77.0.240 ")
                && p.contains("10.77.0.242 ")
                && !p.contains("10.77.0.241 "))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));

    // A bad overlay is one log line and the last good peers stay.
    lab.set_meta([("cloudpipe-add-0", "v1 broken")]).unwrap();
    wait_for(Duration::from_secs(20), "overlay rejection logged", || {
        Ok(d.log().contains("metadata overlay rejected"))
    })
    .unwrap();
    let p = lab.ip(&c, "neigh show proxy").unwrap();
    assert!(
        p.contains("10.77.0.242 ") && !p.contains("10.77.0.241 "),
        "{p}"
    );

    // SIGUSR1: one status line per peer in the log.
    d.signal(libc::SIGUSR1);
    wait_for(Duration::from_secs(10), "peer status lines", || {
        let log = d.log();
        Ok(log.contains("peer status peer=alice") && log.contains("peer status peer=carol"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));

    // SIGHUP re-reads at once.
    lab.set_meta([]).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(20),
        "payload peers back after SIGHUP",
        || {
            let p = lab.ip(&c, "neigh show proxy")?;
            Ok(p.contains("10.77.0.241 ") && !p.contains("10.77.0.242 "))
        },
    )
    .unwrap();

    let exit = d.stop(EXIT_WITHIN).unwrap();
    assert!(exit.status.success(), "{exit:?}\n{}", d.log());
    assert_cleaned(&lab);
    let log = d.log();
    let config = payloads::config(Mode::ProxyArp);
    assert!(
        !log.contains(&config.private_key.to_base64()),
        "a private key was logged"
    );
    for p in &config.peers {
        if let Some(k) = &p.preshared_key {
            assert!(!log.contains(&k.to_base64()), "a preshared key was logged");
        }
    }
}

#[test]
fn waits_for_a_metadata_server_that_comes_up_late() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: true,
        metadata: false,
        ..LabOptions::default()
    });
    lab.set_user_data(&payloads::guest(&payloads::config(Mode::ProxyArp)))
        .unwrap();
    let mut d = lab.start_daemon(&["--boot-timeout", "60"]).unwrap();
    // The server is 10 s late (setup, not an assertion: the daemon must be waiting).
    std::thread::sleep(Duration::from_secs(10));
    assert!(d.notifications().iter().all(|m| !m.contains("READY=1")));
    lab.start_metadata().unwrap();
    let took = d.wait_ready(READY_WITHIN).unwrap();
    eprintln!("READY=1 {took:?} after start, metadata server up after 10 s");
    assert!(d.log().contains("metadata service not ready"));
    assert_booted(&lab, Mode::ProxyArp);
    assert!(d.stop(EXIT_WITHIN).unwrap().status.success());
}

fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opt = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        z.start_file(*name, opt).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// A zip whose one member inflates to `mib` MiB of spaces, written in 1 MiB steps so
/// the test itself stays small (its peak RSS is part of what wait4 reports).
fn zip_bomb(mib: usize) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opt = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .large_file(false);
    z.start_file("cloudpipe.json", opt).unwrap();
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..mib {
        z.write_all(&chunk).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn guest_of(zip: &[u8]) -> Vec<u8> {
    cloudpipe_core::payload::encode_zip(zip, cloudpipe_core::payload::Encoding::Guest).unwrap()
}

#[test]
fn bad_payloads_are_refused_in_bounded_time_and_memory_leaving_the_vm_untouched() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: true,
        metadata: true,
        ..LabOptions::default()
    });
    let before = net_state(&lab);
    let good = payloads::guest(&payloads::config(Mode::ProxyArp));
    let slip_target = std::env::temp_dir().join(format!("cloudpipe-slip-{}", lab.id()));
    let slip_name = format!("../../../../../../..{}", slip_target.display());
    let mut bad_mtu = payloads::config_file(Mode::ProxyArp);
    bad_mtu.mtu = Some(100);
    let bad_mtu = zip_of(&[("cloudpipe.json", &serde_json::to_vec(&bad_mtu).unwrap())]);
    // Inflates to 96 MiB: a daemon that inflated it would blow the memory bound.
    let bomb = zip_bomb(96);
    let slip = zip_of(&[(slip_name.as_str(), b"owned"), ("cloudpipe.json", b"{}")]);

    // (case, user_data or None for 404, server mode, exit status, log must contain, time bound)
    type Case<'a> = (&'a str, Option<Vec<u8>>, MdMode, i32, &'a str, u64);
    let cases: Vec<Case> = vec![
        ("404", None, MdMode::Normal, 3, "no payload", 10),
        (
            "garbage",
            Some(b"#!/bin/sh\necho not a payload\n".to_vec()),
            MdMode::Normal,
            2,
            "field=user_data",
            10,
        ),
        (
            "truncated base64",
            Some(good[..good.len() / 2 + 3].to_vec()),
            MdMode::Normal,
            2,
            "payload rejected",
            10,
        ),
        (
            "zip bomb",
            // Raw: Nova's user-data limit would refuse its base64 form.
            Some(bomb),
            MdMode::Normal,
            2,
            "inflates beyond",
            10,
        ),
        (
            "zip slip",
            Some(guest_of(&slip)),
            MdMode::Normal,
            2,
            "unexpected member",
            10,
        ),
        (
            "bad field",
            Some(guest_of(&bad_mtu)),
            MdMode::Normal,
            2,
            "field=cloudpipe.json.mtu",
            10,
        ),
        (
            // Some tools gzip user-data: the reason is named, not "Invalid symbol 31".
            "gzip",
            Some(gzip(&good)),
            MdMode::Normal,
            2,
            "gzip-compressed",
            10,
        ),
        (
            "endless body",
            Some(good.clone()),
            MdMode::Endless,
            4,
            "body larger than",
            20,
        ),
        (
            "server error",
            Some(good.clone()),
            MdMode::Error,
            4,
            "HTTP status 500",
            20,
        ),
        (
            "trickling body",
            Some(good.clone()),
            MdMode::Trickle,
            4,
            "no complete response",
            20,
        ),
    ];
    for (name, data, mode, code, needle, bound) in cases {
        match &data {
            Some(d) => lab.set_user_data(d).unwrap(),
            None => lab.remove_user_data().unwrap(),
        }
        lab.set_metadata_mode(mode).unwrap();
        let mut d = lab
            .start_daemon(&["--boot-timeout", "6", "--request-timeout", "2"])
            .unwrap();
        let exit = d.wait_exit(EXIT_WITHIN).unwrap();
        let log = d.log();
        eprintln!("{name}: {exit:?}");
        assert_eq!(exit.status.code(), Some(code), "{name}: {log}");
        assert!(
            log.contains(needle),
            "{name}: expected {needle:?} in:\n{log}"
        );
        assert!(
            exit.elapsed < Duration::from_secs(bound),
            "{name}: took {:?}",
            exit.elapsed
        );
        assert!(
            exit.max_rss_kib < MAX_RSS_KIB,
            "{name}: peak RSS {} KiB",
            exit.max_rss_kib
        );
        assert!(
            !d.notifications().iter().any(|m| m.contains("READY=1")),
            "{name}"
        );
        assert_eq!(net_state(&lab), before, "{name}: the VM's network changed");
        assert!(
            !slip_target.exists(),
            "{name}: zip slip wrote {}",
            slip_target.display()
        );
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{name}: one clear error line expected:\n{log}"
        );
    }
}

#[test]
fn restarts_find_their_leftovers_and_sigterm_cleans_up() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: true,
        metadata: true,
        ..LabOptions::default()
    });
    lab.set_user_data(&payloads::guest(&payloads::config(Mode::ProxyArp)))
        .unwrap();
    // First run dies hard: its proxy entries stay behind (its TUN goes with its fd).
    let mut d = lab.start_daemon(&[]).unwrap();
    d.wait_ready(READY_WITHIN).unwrap();
    let first = assert_booted(&lab, Mode::ProxyArp);
    d.signal(libc::SIGKILL);
    d.wait_exit(EXIT_WITHIN).unwrap();
    // Second and third runs: same state, nothing duplicated; SIGTERM cleans.
    for run in 2..=3 {
        let mut d = lab.start_daemon(&[]).unwrap();
        d.wait_ready(READY_WITHIN)
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(assert_booted(&lab, Mode::ProxyArp), first, "run {run}");
        let exit = d.stop(EXIT_WITHIN).unwrap();
        assert!(exit.status.success(), "run {run}: {}", d.log());
        assert_cleaned(&lab);
    }
}

#[test]
fn payload_file_needs_no_address_and_masquerade_is_cleaned_up() {
    // No DHCP: the daemon assigns .2/24 and the default route itself.
    let lab = lab_or_skip!(LabOptions {
        dhcp: false,
        metadata: false,
        launch: Some(Mode::Masquerade),
        ..LabOptions::default()
    });
    let path = lab.dir().join("payload.zip");
    std::fs::write(&path, payloads::zip(&payloads::config(Mode::Masquerade))).unwrap();
    let p = path.to_str().unwrap();
    for run in 0..2 {
        let mut d = lab
            .start_daemon(&["--payload", p, "--poll-interval", "0"])
            .unwrap();
        d.wait_ready(READY_WITHIN).unwrap();
        assert_booted(&lab, Mode::Masquerade);
        let rules = lab
            .exec(
                &lab.cloudpipe(),
                &["nft", "list", "table", "ip", "cloudpipe"],
            )
            .unwrap();
        assert_eq!(rules.matches("snat to 10.77.0.2").count(), 1, "{rules}");
        // The gateway is reachable with the address the daemon gave itself.
        lab.exec(
            &lab.cloudpipe(),
            &["ping", "-c", "1", "-W", "2", "10.77.0.1"],
        )
        .unwrap();
        if run == 0 {
            // SIGHUP re-reads the payload: a change is reported, not applied.
            let mut changed = payloads::config(Mode::Masquerade);
            changed.mtu = 1400;
            std::fs::write(&path, payloads::zip(&changed)).unwrap();
            d.signal(libc::SIGHUP);
            wait_for(Duration::from_secs(10), "payload change reported", || {
                Ok(d.log().contains("the payload changed"))
            })
            .unwrap();
            std::fs::write(&path, payloads::zip(&payloads::config(Mode::Masquerade))).unwrap();
        }
        assert!(d.stop(EXIT_WITHIN).unwrap().status.success(), "{}", d.log());
        assert_cleaned(&lab);
    }
}

/// Detaches a loop device when dropped.
struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

/// Also: nothing configured the NIC, so it keeps 1500 and cannot tell the network's
/// MTU (a Geneve network, 1442); the drive's network_data.json does, and the tunnel
/// gets 1442 - 80 although the payload allows 1420.
#[test]
fn config_drive_boots_without_a_metadata_server() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: false,
        metadata: false,
        mtu: 1442,
        ..LabOptions::default()
    });
    let tree = lab.dir().join("config-drive");
    let latest = tree.join("openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    let mut config = payloads::config_file(Mode::ProxyArp);
    config.mtu = None;
    let config = cloudpipe_core::config::Config::try_from(config).unwrap();
    std::fs::write(latest.join("user_data"), payloads::guest(&config)).unwrap();
    std::fs::write(
        latest.join("network_data.json"),
        lab.network_data().unwrap(),
    )
    .unwrap();
    std::fs::write(
        latest.join("meta_data.json"),
        br#"{"uuid":"x","meta":{"owner":"ops"}}"#,
    )
    .unwrap();
    let iso = lab.dir().join("config-2.iso");
    cloudpipe_lab::run(
        std::process::Command::new("genisoimage")
            .args(["-quiet", "-J", "-r", "-V", "config-2", "-o"])
            .arg(&iso)
            .arg(&tree),
    )
    .expect("genisoimage (package genisoimage) builds the config drive");
    // A real block device labelled config-2, found by the daemon's label probe.
    let dev = cloudpipe_lab::run(
        std::process::Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(&iso),
    )
    .map(|s| s.trim().to_string());
    let (_loop, arg) = match dev {
        Ok(dev) => (Some(Loop(dev)), "auto".to_string()),
        // No loop devices here: give the image itself.
        Err(e) => {
            eprintln!("no loop device ({e}); passing the image path");
            (None, iso.to_string_lossy().into_owned())
        }
    };
    // Nothing configured the NIC: it is even down; the daemon brings it up.
    lab.ip(&lab.cloudpipe(), "link set eth0 down").unwrap();
    let mut d = lab
        .start_daemon(&["--config-drive", &arg, "--poll-interval", "0"])
        .unwrap();
    d.wait_ready(READY_WITHIN).unwrap();
    assert!(d.log().contains("config drive"), "{}", d.log());
    let nic = lab.ip(&lab.cloudpipe(), "link show eth0").unwrap();
    assert!(nic.contains("mtu 1500 "), "the NIC was left alone: {nic}");
    assert!(
        d.log()
            .contains("tunnel_mtu=1362 link_mtu=1442 from=network_data.json"),
        "{}",
        d.log()
    );
    assert_booted(&lab, Mode::ProxyArp);
    assert!(d.stop(EXIT_WITHIN).unwrap().status.success());
    assert_cleaned(&lab);
}

/// The systemd unit's limits (User=, AmbientCapabilities=, CapabilityBoundingSet=,
/// NoNewPrivileges=yes and its RuntimeDirectory=, read from
/// configs/cloudpiped.service), applied with setpriv: boot, masquerade and cleanup
/// all work inside them, without root at any time.
#[test]
fn runs_within_the_units_capability_bounding_set() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: true,
        metadata: true,
        launch: Some(Mode::Masquerade),
        ..LabOptions::default()
    });
    let wrapper = privileges::setpriv_as_unit();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    privileges::make_runtime_directory(&lab).unwrap();
    lab.set_meta([]).unwrap();
    lab.set_user_data(&payloads::guest(&payloads::config(Mode::Masquerade)))
        .unwrap();
    // The lab's --user names the user the daemon already is: nothing to switch.
    let mut d = lab.start_daemon_with(&wrapper, &[]).unwrap();
    d.wait_ready(READY_WITHIN).unwrap();
    assert_booted(&lab, Mode::Masquerade);
    let exit = d.stop(EXIT_WITHIN).unwrap();
    assert!(exit.status.success(), "{}", d.log());
    assert!(!d.log().contains("WARN"), "{}", d.log());
    assert_cleaned(&lab);
}

/// The tunnel fits the tenant network: at MTU 1500 (flat or VLAN), 1450 (ML2/OVS
/// VXLAN) and 1442 (OVN Geneve), a client made for that network (`network create
/// --mtu`) sends and receives the largest packets its config allows, both ways,
/// with DF set and none lost, and full-size TCP both ways, and nothing anywhere in the
/// lab is fragmented. (With the old fixed 1420, a 1392-byte ping from the client lost
/// its first packet to "need to frag (mtu 1450)" and TCP was split in two.)
#[test]
fn the_tunnel_mtu_follows_the_tenant_network_at_1500_1450_and_1442() {
    use cloudpipe_lab::mission::{fragmentation, iperf_report, iperf_server, ping_df, Mission};
    for mtu in [1500u16, 1450, 1442] {
        let Some((m, alice, conf)) = Mission::with_alice_options(
            LabOptions {
                dhcp: true,
                metadata: true,
                mtu,
                launch: None,
                ..LabOptions::default()
            },
            &[],
        ) else {
            return;
        };
        let lab = &m.lab;
        assert_eq!(lab.mtu(), mtu, "Neutron's network MTU");
        let tunnel = mtu - 80;
        let client_mtu: u16 = conf
            .lines()
            .find_map(|l| l.strip_prefix("MTU = "))
            .unwrap_or_else(|| panic!("{mtu}: no MTU in the client's config:\n{conf}"))
            .parse()
            .unwrap();
        assert_eq!(client_mtu, tunnel, "{mtu}: {conf}");
        let tun = lab.ip(&lab.cloudpipe(), "link show cloudpipe0").unwrap();
        assert!(
            tun.contains(&format!("mtu {tunnel} ")),
            "{mtu}: {tun}\n{}",
            m.log()
        );
        assert!(
            m.log()
                .contains(&format!("tunnel_mtu={tunnel} link_mtu={mtu}")),
            "{}",
            m.log()
        );

        let namespaces = [
            lab.outside(),
            lab.router(),
            lab.switch(),
            lab.cloudpipe(),
            lab.tenant_vm(),
        ];
        let frags = || -> u64 { namespaces.iter().map(|ns| fragmentation(lab, ns)).sum() };
        let before = frags();
        let vm = lab.tenant_vm_ip().to_string();
        // The largest ICMP echo the client's interface sends unfragmented, each way.
        let largest = client_mtu - 28;
        let (got, out) = ping_df(lab, &lab.outside(), &vm, largest, 5);
        assert_eq!(
            got,
            5,
            "{mtu}: client to tenant VM at {largest} bytes:\n{out}\n{}",
            alice.show()
        );
        let (got, out) = ping_df(lab, &lab.tenant_vm(), "10.77.0.250", largest, 5);
        assert_eq!(
            got, 5,
            "{mtu}: tenant VM to client at {largest} bytes:\n{out}"
        );
        // One byte more does not leave the client: its MTU is the limit.
        let (got, out) = ping_df(lab, &lab.outside(), &vm, largest + 1, 1);
        assert_eq!(got, 0, "{mtu}: {out}");
        // Full-size TCP both ways.
        for reverse in [false, true] {
            // A port per direction: the first server may still be on its way out.
            let port = if reverse { 5202 } else { 5201 };
            iperf_server(lab, port);
            let p = port.to_string();
            let mut args = vec!["iperf3", "-c", &vm, "-p", &p, "-n", "40M", "-J"];
            if reverse {
                args.push("-R");
            }
            let report = iperf_report(lab.output(&lab.outside(), &args).unwrap());
            let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
            let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
            // The receiver's count stops at its last interval report: most of it.
            assert!(
                sent >= 40 << 20 && received >= 30 << 20,
                "{mtu} reverse={reverse}: {sent} bytes sent, {received} received"
            );
        }
        assert_eq!(
            frags() - before,
            0,
            "{mtu}: packets were fragmented in the lab"
        );
        drop(alice);
    }
}

/// A port holding a client's address (Neutron gave it out before the recipe narrowed
/// the allocation pool, or someone asked for it) answers ARP for it beside the
/// appliance's proxy: the appliance probes its own and every pool address at boot and
/// names the conflict, the address and the other host's MAC. (Before, a tenant VM on
/// .250 got two ARP replies and the daemon said nothing.)
#[test]
fn an_address_another_port_holds_is_found_at_boot_and_named() {
    let lab = lab_or_skip!(LabOptions {
        dhcp: true,
        metadata: true,
        ..LabOptions::default()
    });
    // bob's address in the lab payload; Neutron lets the network's owner ask for it.
    let (squatter, ip) = lab
        .add_vm(0, "squatter", Some("10.77.0.241".parse().unwrap()))
        .unwrap();
    assert_eq!(ip.to_string(), "10.77.0.241");
    let link = lab.ip(&squatter, "link show eth0").unwrap();
    let mac = link
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    lab.set_user_data(&payloads::guest(&payloads::config(Mode::ProxyArp)))
        .unwrap();
    let mut d = lab.start_daemon(&[]).unwrap();
    d.wait_ready(READY_WITHIN).unwrap();
    let log = d.log();
    let conflicts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("address conflict"))
        .collect();
    assert_eq!(
        conflicts.len(),
        1,
        "one conflict, the others are free:\n{log}"
    );
    assert!(
        conflicts[0].contains("ERROR")
            && conflicts[0].contains("address=10.77.0.241")
            && conflicts[0].contains(&format!("holder={mac}"))
            && conflicts[0].contains("allocation pool"),
        "{}",
        conflicts[0]
    );
    assert!(
        d.notifications()
            .iter()
            .any(|m| m.contains("READY=1") && m.contains("1 address conflicts")),
        "{:?}",
        d.notifications()
    );
    assert!(d.stop(EXIT_WITHIN).unwrap().status.success());
}
