//! Faults in the lab (root only; see tests/README.md): the daemon killed mid
//! transfer and restarted as the shipped unit says systemd would; the metadata
//! service stalling, resetting, failing and serving a torn client list; the TUN
//! device deleted and the tenant NIC taken down and up under the daemon.

use cloudpipe_lab::metadata_server::Mode;
use cloudpipe_lab::mission::{iperf_client, iperf_report, iperf_server, ping, ping_all, Mission};
use cloudpipe_lab::unit::RestartPolicy;
use cloudpipe_lab::{proc_stats, wait_for};
use std::time::{Duration, Instant};

/// A client notices a lost session after WireGuard's keepalive and rekey timeouts
/// (10 s + 5 s) and handshakes again; the daemon's restart adds its RestartSec.
const RESUME_WITHIN: Duration = Duration::from_secs(60);
/// CPU time a daemon may use in a quiet window of [`QUIET`]: far below a spinning
/// thread's (which would use all of it).
const QUIET: Duration = Duration::from_secs(10);
const QUIET_CPU: Duration = Duration::from_millis(1500);

/// The tenant VM's address (Neutron's pick from the allocation pool).
fn vm(m: &Mission) -> String {
    m.lab.tenant_vm_ip().to_string()
}

/// Wait until `ns` pings `dst` through, or fail with the daemon's log.
fn until_ping(m: &Mission, ns: &str, dst: &str, within: Duration) {
    wait_for(within, &format!("{ns} reaches {dst}"), || {
        Ok(ping(&m.lab, ns, dst, None))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
}

/// Play systemd: a daemon that ended with `status` is started again after the
/// shipped unit's `RestartSec`, if its `Restart=` policy says so (else fail).
fn restart_as_the_unit_does(m: &mut Mission, status: std::process::ExitStatus) {
    let policy = RestartPolicy::shipped();
    assert!(
        policy.restarts(status),
        "{status:?}: the unit would not restart"
    );
    std::thread::sleep(policy.restart_sec);
    m.start_daemon();
}

/// The proxy neighbour entries on the appliance's tenant NIC.
fn proxies(m: &Mission) -> Vec<String> {
    let mut v: Vec<String> = m
        .lab
        .ip(&m.lab.cloudpipe(), "neigh show proxy")
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemon_killed_mid_transfer_is_restarted_and_the_client_resumes_by_itself() {
    let Some((mut m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    let booted = proxies(&m);
    iperf_server(&m.lab, 5301);
    let transfer = iperf_client(&m.lab, &outside, 5301, 50);
    std::thread::sleep(Duration::from_secs(4));
    let (rx_before, _) = alice.transfer();
    let d = m.daemon.as_mut().unwrap();
    d.signal(libc::SIGKILL);
    let exit = d.wait_exit(Duration::from_secs(10)).unwrap();
    let killed_at = Instant::now();
    // What a SIGKILL leaves behind: the proxy entries and the control socket (the
    // TUN device goes with the process's descriptors).
    assert_eq!(proxies(&m), booted, "proxy entries stay after SIGKILL");
    assert!(m.lab.control_socket().exists(), "the socket file stays");
    // systemd's part: the unit restarts a daemon that died of SIGKILL, RestartSec
    // later.
    restart_as_the_unit_does(&mut m, exit.status);
    // Its leftovers found, not duplicated.
    assert_eq!(proxies(&m), booted);
    // Alice does nothing: her transfer carries on once her client handshakes again
    // (the tenant VM's ACKs reach her again).
    wait_for(RESUME_WITHIN, "alice's transfer moving again", || {
        Ok(alice.transfer().0 > rx_before + 200_000)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    let resumed = killed_at.elapsed();
    let report = iperf_report(transfer.wait_with_output().unwrap());
    let intervals: Vec<f64> = report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap() / 1e6)
        .collect();
    eprintln!(
        "killed mid-transfer, restarted after {:?}; data moving again {resumed:?} after the kill; \
         iperf3 Mbit/s per second: {intervals:.0?}",
        RestartPolicy::shipped().restart_sec
    );
    let tail = &intervals[intervals.len().saturating_sub(3)..];
    assert!(
        tail.iter().all(|b| *b > 0.0),
        "the transfer did not resume: {intervals:?}"
    );
    assert!(ping_all(&m.lab, &outside, &vm(&m), 3));
}

#[test]
fn metadata_faults_keep_the_last_good_clients_and_are_logged() {
    let Some(mut m) = Mission::new(&[]) else {
        return;
    };
    let alice_conf = m.add_client("alice");
    m.boot();
    let outside = m.lab.outside();
    let _alice = m.connect(&outside, "alice", &alice_conf);
    // Carol comes through the instance properties (the list the polls read).
    m.add_client("carol");
    m.publish();
    let carol = "10.77.0.251 ";
    wait_for(Duration::from_secs(20), "carol's proxy entry", || {
        Ok(proxies(&m).iter().any(|p| p.starts_with(carol)))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    let good = proxies(&m);
    let meta_reads = |mode: Mode| {
        m.lab
            .metadata_requests()
            .iter()
            .filter(|(p, md)| p.ends_with("meta_data.json") && *md == mode)
            .count()
    };
    let warned = |m: &Mission| {
        m.log()
            .matches("cannot read metadata; keeping current peers")
            .count()
    };

    for mode in [
        Mode::Stall,
        Mode::Reset,
        Mode::Error,
        Mode::NotFound,
        Mode::Truncated,
        Mode::Torn,
        Mode::Endless,
        Mode::Trickle,
    ] {
        let warnings = warned(&m);
        let seen = meta_reads(mode);
        m.lab.set_meta_mode(mode).unwrap();
        wait_for(Duration::from_secs(30), "two polls in this mode", || {
            Ok(meta_reads(mode) >= seen + 2)
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", mode.as_str(), m.log()));
        assert_eq!(proxies(&m), good, "{}: the clients changed", mode.as_str());
        assert!(
            ping(&m.lab, &outside, &vm(&m), None),
            "{}: alice cut off",
            mode.as_str()
        );
        assert_eq!(
            warned(&m),
            warnings + 1,
            "{}: one warning per failure streak\n{}",
            mode.as_str(),
            m.log()
        );
        // Back to normal: one line says so.
        let back = m.log().matches("metadata service reachable again").count();
        m.lab.set_meta_mode(Mode::Normal).unwrap();
        wait_for(Duration::from_secs(20), "recovery logged", || {
            Ok(m.log().matches("metadata service reachable again").count() > back)
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", mode.as_str(), m.log()));
    }

    // The client list changes while the appliance polls: a reading of the
    // half-written new document is refused, the old list stays; the whole new one
    // applies.
    m.cli(&["client", "revoke", "lab", "carol"]);
    m.add_client("dave");
    m.lab.set_meta_mode(Mode::Torn).unwrap();
    let seen = meta_reads(Mode::Torn);
    m.publish();
    wait_for(Duration::from_secs(20), "torn readings", || {
        Ok(meta_reads(Mode::Torn) >= seen + 2)
    })
    .unwrap();
    assert_eq!(proxies(&m), good, "a torn list was applied");
    m.lab.set_meta_mode(Mode::Normal).unwrap();
    wait_for(Duration::from_secs(20), "the new list applied", || {
        let p = proxies(&m);
        Ok(!p.iter().any(|p| p.starts_with(carol))
            && p.iter().any(|p| p.starts_with("10.77.0.252 ")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    assert!(ping(&m.lab, &outside, &vm(&m), None));
}

/// CPU time `pid` uses over [`QUIET`].
fn cpu_over_quiet_window(pid: u32) -> Duration {
    let before = proc_stats(pid).unwrap().cpu;
    std::thread::sleep(QUIET);
    proc_stats(pid).unwrap().cpu - before
}

/// Whether `pid` is running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
}

#[test]
fn a_deleted_tun_device_is_created_again_and_sessions_carry_on() {
    let Some((mut m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    let c = m.lab.cloudpipe();
    let pid = m.daemon.as_ref().unwrap().pid();
    let handshake = alice.latest_handshake();
    m.lab.ip(&c, "link del cloudpipe0").unwrap();
    let t = Instant::now();
    until_ping(&m, &outside, &vm(&m), Duration::from_secs(10));
    eprintln!(
        "alice back {:?} after the TUN device was deleted",
        t.elapsed()
    );
    assert!(running(pid), "the daemon exited:\n{}", m.log());
    assert_eq!(
        alice.latest_handshake(),
        handshake,
        "alice had to handshake again"
    );
    assert!(m
        .lab
        .ip(&c, "link show cloudpipe0")
        .unwrap()
        .contains(",UP"));
    assert!(m
        .lab
        .ip(&c, "-4 route show dev cloudpipe0")
        .unwrap()
        .contains("10.77.0.250/31"));
    assert!(ping_all(&m.lab, &m.lab.tenant_vm(), "10.77.0.250", 3));
    let cpu = cpu_over_quiet_window(pid);
    eprintln!("{cpu:?} CPU in {QUIET:?} afterwards");
    assert!(
        cpu < QUIET_CPU,
        "the daemon spins: {cpu:?} CPU in {QUIET:?}"
    );

    // Deleted again and again: after a few times within a minute the daemon gives
    // up with a clear error, and systemd restarts it.
    let d = m.daemon.as_mut().unwrap();
    let exit = loop {
        let _ = m.lab.ip(&c, "link del cloudpipe0");
        if let Ok(exit) = d.wait_exit_within(Duration::from_secs(2)) {
            break exit;
        }
        assert!(
            t.elapsed() < Duration::from_secs(50),
            "the daemon never gave up"
        );
    };
    let log = d.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    eprintln!("then: exited with {:?}: {errors:?}", exit.status);
    assert_eq!(errors.len(), 1, "one clear error:\n{log}");
    assert!(
        errors[0].contains("cloudpipe0") && errors[0].contains("keeps being deleted"),
        "{}",
        errors[0]
    );
    restart_as_the_unit_does(&mut m, exit.status);
    until_ping(&m, &outside, &vm(&m), RESUME_WITHIN);
}

#[test]
fn the_tenant_nic_going_down_and_up_is_recovered_from() {
    let Some((m, _alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let outside = m.lab.outside();
    let c = m.lab.cloudpipe();
    let pid = m.daemon.as_ref().unwrap().pid();
    let booted = proxies(&m);
    let default = || {
        // Who added it (proto) does not matter: where it goes does.
        m.lab
            .ip(&c, "-4 route show default")
            .unwrap()
            .split(" proto")
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    let routes = default();
    m.lab.ip(&c, "link set eth0 down").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    m.lab.ip(&c, "link set eth0 up").unwrap();
    let t = Instant::now();
    until_ping(&m, &outside, &vm(&m), Duration::from_secs(20));
    until_ping(
        &m,
        &m.lab.tenant_vm(),
        "10.77.0.250",
        Duration::from_secs(20),
    );
    eprintln!("recovered {:?} after eth0 came back up", t.elapsed());
    assert_eq!(proxies(&m), booted);
    assert_eq!(default(), routes);
    let cpu = cpu_over_quiet_window(pid);
    eprintln!("{cpu:?} CPU in {QUIET:?} afterwards");
    assert!(
        cpu < QUIET_CPU,
        "the daemon spins: {cpu:?} CPU in {QUIET:?}"
    );

    // The TUN device set down (its routes go with it) comes back up, routed.
    m.lab.ip(&c, "link set cloudpipe0 down").unwrap();
    wait_for(Duration::from_secs(20), "alice through again", || {
        Ok(ping(&m.lab, &outside, &vm(&m), None)
            && ping(&m.lab, &m.lab.tenant_vm(), "10.77.0.250", None))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.log()));
    assert!(m
        .lab
        .ip(&c, "link show cloudpipe0")
        .unwrap()
        .contains(",UP"));
    assert!(running(pid), "the daemon exited:\n{}", m.log());
}
