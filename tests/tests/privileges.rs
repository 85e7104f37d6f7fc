//! Least privilege, read from /proc and the file system while the daemon serves:
//! after set-up `cloudpiped` is not root, holds CAP_NET_ADMIN only (every thread,
//! every set), has no_new_privs, and its control socket, the CLI's state directory
//! and the keys in it are for their owner only.
//!
//! Two ways in: started as root (the lab's `--user`, as by hand), and started as the
//! systemd unit starts it (its User=, AmbientCapabilities=, CapabilityBoundingSet=,
//! NoNewPrivileges= applied with setpriv).

use cloudpipe_lab::mission::{ping, Mission, NETWORK};
use cloudpipe_lab::privileges::{
    make_runtime_directory, mode_and_owner, setpriv_as_unit, threads, unit_caps, CAP_NET_ADMIN,
    CAP_NET_BIND_SERVICE, CAP_NET_RAW,
};
use cloudpipe_lab::DAEMON_UID;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const READY_WITHIN: Duration = Duration::from_secs(20);
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// Every thread of `pid`: uid and gid `DAEMON_UID` (real, effective, saved, fs), no
/// supplementary groups, CAP_NET_ADMIN alone in the effective and permitted sets,
/// empty inheritable and ambient sets, `bounding` as the bounding set, no_new_privs.
/// The number of threads (the data path's workers are there too).
fn assert_unprivileged(pid: u32, bounding: u64) -> usize {
    let ts = threads(pid).expect("reading /proc");
    let net_admin = 1u64 << CAP_NET_ADMIN;
    for t in &ts {
        assert_eq!(t.uid, vec![DAEMON_UID; 4], "thread {}: {t:?}", t.tid);
        assert_eq!(t.gid, vec![DAEMON_UID; 4], "thread {}: {t:?}", t.tid);
        assert!(t.groups.is_empty(), "thread {}: {t:?}", t.tid);
        assert_eq!(
            (t.cap_eff, t.cap_prm),
            (net_admin, net_admin),
            "thread {}: {t:?}",
            t.tid
        );
        assert_eq!((t.cap_inh, t.cap_amb), (0, 0), "thread {}: {t:?}", t.tid);
        assert_eq!(t.cap_bnd, bounding, "thread {}: {t:?}", t.tid);
        assert!(t.no_new_privs, "thread {}: {t:?}", t.tid);
    }
    ts.len()
}

/// Started as root, the daemon becomes the lab's user after set-up and keeps
/// CAP_NET_ADMIN alone, bounding set included; a client connects and reaches the
/// tenant VM afterwards (run-time netlink work done without root); the control
/// socket is 0600 and the user's; the CLI's state is 0700/0600.
#[test]
fn started_as_root_it_serves_as_a_plain_user_with_cap_net_admin_only() {
    let Some((mut m, _alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let pid = m.daemon.as_ref().expect("booted").pid();
    let n = assert_unprivileged(pid, 1 << CAP_NET_ADMIN);
    assert!(n > 2, "the workers' threads were checked too ({n} threads)");
    assert!(
        ping(
            &m.lab,
            &m.lab.outside(),
            &m.lab.tenant_vm_ip().to_string(),
            None
        ),
        "alice reaches the tenant VM through an unprivileged daemon"
    );
    // A client added while serving: its proxy neighbour entry is netlink work.
    let bob = m.add_client("bob");
    m.publish();
    let bob_ip = bob
        .lines()
        .find_map(|l| l.strip_prefix("Address = "))
        .and_then(|a| a.split('/').next())
        .expect("the client config has an Address")
        .to_string();
    cloudpipe_lab::wait_for(Duration::from_secs(10), "bob's proxy entry", || {
        let neigh = m
            .lab
            .output(&m.lab.cloudpipe(), &["ip", "neigh", "show", "proxy"])?;
        Ok(String::from_utf8_lossy(&neigh.stdout).contains(&bob_ip))
    })
    .unwrap();

    let sock = m.lab.control_socket();
    assert_eq!(mode_and_owner(&sock).unwrap(), (0o600, DAEMON_UID));
    let (_, dir_owner) = mode_and_owner(&m.lab.control_dir()).unwrap();
    assert_eq!(
        dir_owner, DAEMON_UID,
        "the daemon made the directory and owns it"
    );
    let net = m.state.join(NETWORK);
    for (path, mode) in [
        (net.clone(), 0o700),
        (net.join("server.key"), 0o600),
        (net.join("network.json"), 0o600),
        (net.join("clients"), 0o700),
        (net.join("clients/alice.json"), 0o600),
        (net.join("clients/bob.json"), 0o600),
    ] {
        let (got, _) = mode_and_owner(&path).unwrap();
        assert_eq!(got, mode, "{}: {got:o}", path.display());
    }

    let mut d = m.daemon.take().unwrap();
    let exit = d.stop(EXIT_WITHIN).unwrap();
    assert!(exit.status.success(), "{}", d.log());
    assert!(
        !sock.exists(),
        "the socket is removed at stop, without root"
    );
    assert!(
        d.log().contains(&format!("uid={DAEMON_UID}")),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("WARN"), "{}", d.log());
}

/// As the unit starts it: never root; CAP_NET_BIND_SERVICE (for a status_port below
/// 1024) and CAP_NET_RAW (ARP probes) are used at set-up and gone afterwards; the
/// bounding set stays the unit's (lowering it needs CAP_SETPCAP, which the unit
/// does not give).
#[test]
fn under_the_units_limits_it_sheds_what_set_up_needed() {
    // The recipe opens the status port to the tenant subnet in Neutron.
    let Some(m) = Mission::new(&["--status-port", "80"]) else {
        return;
    };
    let wrapper = setpriv_as_unit();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    make_runtime_directory(&m.lab).unwrap();
    let bounding = unit_caps("CapabilityBoundingSet");
    assert_eq!(
        bounding,
        (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW) | (1 << CAP_NET_BIND_SERVICE),
        "the unit's bounding set"
    );
    assert_eq!(unit_caps("AmbientCapabilities"), bounding);
    let payload = m.cli(&["payload", NETWORK, "--encoding", "guest"]);
    m.lab.set_user_data(payload.as_bytes()).unwrap();
    m.publish();
    let mut d = m.lab.start_daemon_with(&wrapper, &[]).unwrap();
    d.wait_ready(READY_WITHIN).unwrap();
    assert_unprivileged(d.pid(), bounding);
    // Port 80 was bound with CAP_NET_BIND_SERVICE at set-up and serves without it.
    let url = format!("http://{}/status", cloudpipe_lab::APPLIANCE);
    let out = m
        .lab
        .output(
            &m.lab.tenant_vm(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    assert_eq!(
        mode_and_owner(&m.lab.control_socket()).unwrap(),
        (0o600, DAEMON_UID)
    );
    let exit = d.stop(EXIT_WITHIN).unwrap();
    assert!(exit.status.success(), "{}", d.log());
    assert!(!m.lab.control_socket().exists());
    assert!(!d.log().contains("WARN"), "{}", d.log());
}

/// A vfat config drive needs CAP_SYS_ADMIN to mount, which the unit does not grant:
/// the daemon says so, names the way out (an ISO 9660 drive, Nova's default) and
/// exits, instead of failing with a bare EPERM (and the kernel never parses the
/// image).
#[test]
fn under_the_units_limits_a_vfat_config_drive_is_refused_by_name() {
    let Some(m) = Mission::new(&[]) else {
        return;
    };
    let payload = m.cli(&["payload", NETWORK, "--encoding", "guest"]);
    let dir = m.lab.dir();
    let image = dir.join("config-2.vfat");
    let user_data = dir.join("user_data");
    std::fs::write(&user_data, payload.as_bytes()).unwrap();
    cloudpipe_lab::run(
        std::process::Command::new("mkfs.vfat")
            .args(["-C", "-n", "CONFIG-2"])
            .arg(&image)
            .arg("1024"),
    )
    .expect("mkfs.vfat (package dosfstools)");
    for d in ["::openstack", "::openstack/latest"] {
        cloudpipe_lab::run(
            std::process::Command::new("mmd")
                .arg("-i")
                .arg(&image)
                .arg(d),
        )
        .expect("mmd (package mtools)");
    }
    cloudpipe_lab::run(
        std::process::Command::new("mcopy")
            .arg("-i")
            .arg(&image)
            .arg(&user_data)
            .arg("::openstack/latest/user_data"),
    )
    .expect("mcopy (package mtools)");
    // Readable by the daemon's user, as the udev rule makes a real drive.
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
    let wrapper = setpriv_as_unit();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    make_runtime_directory(&m.lab).unwrap();
    let image_arg = image.to_string_lossy().into_owned();
    let mut d = m
        .lab
        .start_daemon_with(&wrapper, &["--config-drive", &image_arg])
        .unwrap();
    let exit = d.wait_exit(EXIT_WITHIN).unwrap();
    assert!(!exit.status.success(), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("needs CAP_SYS_ADMIN") && log.contains("ISO 9660"),
        "{log}"
    );
}
