//! The tunnel in the lab, with stock clients: an external user runs wireguard-go
//! with the config `cloudpipe client add` printed, through the floating IP, and is a
//! neighbour on the tenant network (root only; see tests/README.md).
//!
//! Every network is made with the real CLI, booted from the payload the CLI built,
//! served by the lab's metadata server; clients change through the instance
//! properties `cloudpipe publish --json` prints.

use cloudpipe_lab::mission::{
    count_from, iperf_client, iperf_report, iperf_server, ping, ping_all, spy_on, wg_keypair,
    with_private_key, Mission, NETWORK,
};
use cloudpipe_lab::wait_for;
use std::time::{Duration, Instant};

/// A restarted appliance: the client notices the lost session after WireGuard's
/// keepalive + rekey timeouts (10 s + 5 s) and handshakes again.
const RECONNECT_WITHIN: Duration = Duration::from_secs(45);
/// Poll interval the lab daemon runs with (1 s) plus a generous margin.
const REVOKED_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn stock_client_reaches_tenant_vm_both_ways_and_moves_200_mb() {
    let Some((m, alice, conf)) = Mission::with_alice(&[]) else {
        return;
    };
    assert!(
        conf.contains(&format!("Endpoint = {}\n", m.endpoint())),
        "{conf}"
    );
    let outside = m.lab.outside();
    let addr = "10.77.0.250";
    assert!(conf.contains(&format!("Address = {addr}/32")), "{conf}");

    // Both ways: the tenant VM reaches the client at its pool address, unchanged.
    assert!(ping_all(&m.lab, &outside, &vm(&m), 5));
    assert!(ping_all(&m.lab, &m.lab.tenant_vm(), addr, 5), "{}", m.log());
    // The tenant VM learned the client as a neighbour on its own subnet.
    let neigh = m
        .lab
        .ip(&m.lab.tenant_vm(), "neigh show 10.77.0.250")
        .unwrap();
    assert!(neigh.contains("lladdr"), "{neigh}");

    // A pool address nobody holds is routed into the tunnel too: the appliance
    // answers for it with ICMP host unreachable instead of letting it time out.
    let o = m
        .lab
        .output(
            &m.lab.cloudpipe(),
            &["ping", "-n", "-c", "1", "-W", "2", "10.77.0.253"],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && text.contains("Destination Host Unreachable"),
        "{text}"
    );

    iperf_server(&m.lab, 5201);
    let out = m
        .lab
        .output(
            &outside,
            &["iperf3", "-c", &vm(&m), "-p", "5201", "-n", "200M", "-J"],
        )
        .unwrap();
    let report = iperf_report(out);
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    // -n 200M sends 200 MiB; the server's count may stop a little short of it.
    assert!(sent >= 200 * 1024 * 1024, "sent {sent} bytes");
    assert!(received >= 200_000_000, "received {received} bytes");
    let (rx, tx) = alice.transfer();
    assert!(
        tx > 200 * 1024 * 1024 && rx > 0,
        "wg transfer rx={rx} tx={tx}"
    );
}

#[test]
fn two_clients_and_client_to_client_policy() {
    for c2c in [false, true] {
        let extra: &[&str] = if c2c { &["--client-to-client"] } else { &[] };
        let Some((m, _alice, _bob, other)) = Mission::with_alice_and_bob(extra) else {
            return;
        };
        let outside = m.lab.outside();
        assert!(ping_all(&m.lab, &other, &vm(&m), 3));
        assert!(ping_all(&m.lab, &m.lab.tenant_vm(), "10.77.0.251", 3));
        let reached = ping_all(&m.lab, &outside, "10.77.0.251", 3);
        assert_eq!(
            reached,
            c2c,
            "client-to-client {c2c}: alice reached bob = {reached}\n{}",
            m.log()
        );
    }
}

#[test]
fn spoofed_source_reaches_nothing() {
    let Some((m, alice, _bob, _)) = Mission::with_alice_and_bob(&["--client-to-client"]) else {
        return;
    };
    let outside = m.lab.outside();
    spy_on(&m.lab, &["10.77.0.250", "10.77.0.251", "10.77.0.99"]);
    // Alice sends through her own tunnel from an address outside the pool, then
    // from bob's address.
    let add = |fake: &str| {
        m.lab
            .ip(
                &outside,
                &format!("addr add {fake}/32 dev {}", alice.iface()),
            )
            .unwrap()
    };
    add("10.77.0.99");
    assert!(!ping(&m.lab, &outside, &vm(&m), Some("10.77.0.99")));
    assert!(
        !ping(&m.lab, &outside, "10.77.0.251", Some("10.77.0.99")),
        "reached bob"
    );
    add("10.77.0.251");
    assert!(!ping(&m.lab, &outside, &vm(&m), Some("10.77.0.251")));
    assert!(
        ping(&m.lab, &outside, &vm(&m), Some("10.77.0.250")),
        "own address still works"
    );
    assert_eq!(count_from(&m.lab, "10.77.0.99"), 0);
    assert_eq!(
        count_from(&m.lab, "10.77.0.251"),
        0,
        "bob never pinged; alice posing as bob did"
    );
    assert!(count_from(&m.lab, "10.77.0.250") >= 1);
}

#[test]
fn revocation_through_metadata_leaves_other_sessions_alone() {
    let Some((m, _alice, _bob, other)) = Mission::with_alice_and_bob(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
    assert!(proxies.contains("10.77.0.250"), "{proxies}");

    // Bob transfers for 8 s while alice is revoked.
    iperf_server(&m.lab, 5202);
    let bob_transfer = iperf_client(&m.lab, &other, 5202, 8);
    std::thread::sleep(Duration::from_secs(1));
    m.cli(&["client", "revoke", "lab", "alice"]);
    let revoked_at = Instant::now();
    m.publish();
    wait_for(REVOKED_WITHIN, "alice cut off", || {
        Ok(!ping(&m.lab, &outside, &vm(&m), None))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    eprintln!("alice cut off {:?} after publishing", revoked_at.elapsed());
    let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
    assert!(
        !proxies.contains("10.77.0.250"),
        "revoked client's proxy entry stays: {proxies}"
    );

    let report = iperf_report(bob_transfer.wait_with_output().unwrap());
    let intervals = report["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 7, "{} intervals", intervals.len());
    for (i, iv) in intervals.iter().enumerate() {
        let bps = iv["sum"]["bits_per_second"].as_f64().unwrap();
        assert!(bps > 0.0, "bob's transfer stalled in second {i}");
    }
    assert!(ping_all(&m.lab, &other, &vm(&m), 3), "bob still connected");
    assert!(!ping(&m.lab, &outside, &vm(&m), None), "alice stays out");
}

#[test]
fn clients_reconnect_by_themselves_after_a_restart() {
    let Some((mut m, _alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    let exit = m
        .daemon
        .as_mut()
        .unwrap()
        .stop(Duration::from_secs(20))
        .unwrap();
    assert!(exit.status.success(), "{:?}", exit.status);
    assert!(!ping(&m.lab, &outside, &vm(&m), None));
    m.start_daemon();
    let t = Instant::now();
    wait_for(RECONNECT_WITHIN, "alice back after the restart", || {
        Ok(ping(&m.lab, &outside, &vm(&m), None))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    eprintln!("reconnected {:?} after the restart", t.elapsed());
}

#[test]
fn roaming_client_keeps_its_transfer() {
    let Some((m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    iperf_server(&m.lab, 5203);
    let transfer = iperf_client(&m.lab, &outside, 5203, 6);
    std::thread::sleep(Duration::from_secs(2));
    // NAT rebinding, as the server sees it: the client's source port changes.
    alice.set_listen_port(51999).unwrap();
    let report = iperf_report(transfer.wait_with_output().unwrap());
    assert!(report["end"]["sum_received"]["bytes"].as_u64().unwrap() > 0);
    let d = m.daemon.as_ref().unwrap();
    d.signal(libc_sigusr1());
    wait_for(
        Duration::from_secs(5),
        "status shows the new endpoint",
        || Ok(d.log().contains("203.0.113.2:51999")),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log()));
}

#[test]
fn masquerade_mode_reaches_the_tenant_as_the_appliance() {
    let Some((m, _alice, _)) = Mission::with_alice(&["--mode", "masquerade"]) else {
        return;
    };
    spy_on(&m.lab, &["10.77.0.2", "10.77.0.250"]);
    let outside = m.lab.outside();
    assert!(ping_all(&m.lab, &outside, &vm(&m), 3));
    assert!(count_from(&m.lab, "10.77.0.2") >= 3);
    assert_eq!(count_from(&m.lab, "10.77.0.250"), 0);
}

/// In proxy-ARP mode a tenant VM's connection to a client's pool address arrives at
/// the appliance's port, where the security group judges it: the recipe's admits the
/// tenant subnet. (The old group admitted UDP 1194 and ICMP only: tenant VMs could
/// ping clients but not connect to them.) TCP both ways.
#[test]
fn tenant_vms_open_tcp_connections_to_clients_and_back() {
    let Some((m, _alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let lab = &m.lab;
    // A server on alice's machine, on her pool address; the tenant VM connects.
    #[allow(clippy::zombie_processes)] // the lab tracks the PID, kills and reaps it
    lab.spawn_with(
        &lab.outside(),
        &["iperf3", "-s", "-1", "-B", "10.77.0.250", "-p", "5301"],
        |c| {
            c.stdout(std::process::Stdio::null());
        },
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "iperf3 on alice's side", || {
        Ok(lab
            .exec(&lab.outside(), &["ss", "-Htln", "sport = :5301"])?
            .contains("5301"))
    })
    .unwrap();
    let out = lab
        .output(
            &lab.tenant_vm(),
            &[
                "iperf3",
                "-c",
                "10.77.0.250",
                "-p",
                "5301",
                "-n",
                "5M",
                "-J",
                "--connect-timeout",
                "5000",
            ],
        )
        .unwrap();
    let report = iperf_report(out);
    let sent = report["end"]["sum_sent"]["bytes"].as_u64();
    assert!(
        sent.is_some_and(|b| b >= 5 << 20),
        "the tenant VM could not connect to alice: {report}"
    );
    // And alice to a server on the tenant VM.
    iperf_server(lab, 5302);
    let report = iperf_report(
        lab.output(
            &lab.outside(),
            &["iperf3", "-c", &vm(&m), "-p", "5302", "-n", "5M", "-J"],
        )
        .unwrap(),
    );
    assert!(report["end"]["sum_sent"]["bytes"].as_u64().unwrap() >= 5 << 20);
}

/// The tenant VM's address: Neutron's pick from the allocation pool.
fn vm(m: &Mission) -> String {
    m.lab.tenant_vm_ip().to_string()
}

/// A key made by `wg genkey` on the user's side: the CLI registered only its public
/// half and printed a config with a placeholder; with the key put in, the user's
/// stock client connects and is a neighbour like any other.
#[test]
fn a_key_made_on_the_device_connects() {
    let Some(mut m) = Mission::new(&[]) else {
        return;
    };
    let (private, public) = wg_keypair();
    let conf = m.cli(&["client", "add", NETWORK, "dave", "--public-key", &public]);
    assert!(!conf.contains(&private));
    m.boot();
    let dave = m.connect(&m.lab.outside(), "dave", &with_private_key(&conf, &private));
    assert!(
        ping_all(&m.lab, &m.lab.tenant_vm(), "10.77.0.250", 3),
        "{}",
        m.log()
    );
    let own = m
        .lab
        .exec(
            &m.lab.outside(),
            &["wg", "show", dave.iface(), "public-key"],
        )
        .unwrap();
    assert_eq!(own.trim(), public);
}

fn libc_sigusr1() -> i32 {
    nix::sys::signal::Signal::SIGUSR1 as i32
}
