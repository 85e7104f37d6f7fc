//! The lab itself: topology, reachability and teardown (root only).

use cloudpipe_lab::{Lab, LabOptions, Role};

fn namespaces() -> String {
    cloudpipe_lab::run(std::process::Command::new("ip").args(["netns", "list"])).unwrap()
}

#[test]
fn topology_reachability_and_teardown_even_on_panic() {
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    let lab = Lab::new(LabOptions {
        dhcp: true,
        metadata: true,
        ..LabOptions::default()
    })
    .unwrap();
    let names: Vec<String> = Role::ALL.iter().map(|r| lab.ns(*r)).collect();
    for n in &names {
        assert!(n.starts_with(lab.id()), "{n}");
        assert!(namespaces().contains(n.as_str()), "{n} missing");
    }
    // Tenant VM and appliance reach their gateway; the outside reaches the floating
    // IP's router; the appliance reaches the metadata server.
    lab.exec(
        &lab.tenant_vm(),
        &["ping", "-c", "1", "-W", "2", "10.77.0.2"],
    )
    .unwrap();
    lab.exec(
        &lab.outside(),
        &["ping", "-c", "1", "-W", "2", &lab.floating_ip().to_string()],
    )
    .unwrap();
    lab.set_meta([("owner", "ops")]).unwrap();
    let c = lab.cloudpipe();
    let out = lab.output(&c, &["ss", "-Htn"]).unwrap();
    assert!(out.status.success());
    lab.exec(&lab.router(), &["nft", "list", "table", "ip", "lab"])
        .unwrap();
    // Left running on purpose: the lab must kill it.
    #[allow(clippy::zombie_processes)]
    let pid = lab.spawn(&c, &["sleep", "600"]).unwrap().id();

    // A panicking test still tears down: processes by PID, then namespaces.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        panic!("test failure inside a lab");
    }));
    assert!(r.is_err());
    let list = namespaces();
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} left behind");
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "spawned process {pid} still running"
    );
}

#[test]
fn floating_ip_forwards_udp_1194_to_the_appliance() {
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    use std::time::Duration;
    let lab = Lab::new(LabOptions {
        dhcp: true,
        metadata: false,
        ..LabOptions::default()
    })
    .unwrap();
    let server = lab
        .udp_socket(Role::Cloudpipe, "0.0.0.0:1194".parse().unwrap())
        .unwrap();
    let client = lab
        .udp_socket(Role::Outside, "0.0.0.0:0".parse().unwrap())
        .unwrap();
    for s in [&server, &client] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let fip = std::net::SocketAddr::from((lab.floating_ip(), 1194));
    client.send_to(b"hello", fip).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    // DNAT only: the appliance sees the real client address.
    assert_eq!(from.ip().to_string(), "203.0.113.2");
    server.send_to(b"back", from).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"back");
    assert_eq!(from, fip);
}
