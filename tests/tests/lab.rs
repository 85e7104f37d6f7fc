//! The lab itself: topology, reachability and teardown (root only).

use cloudpipe_lab::{payloads, Lab, LabOptions, NetworkOptions, Role};

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

/// Two tenant networks behind the one router (as a tenant with several networks
/// has), each with its own appliance launched from its own recipe (its own floating
/// IP, allocated), booted from its own user-data (the metadata server answers each
/// appliance by its address) on its own MTU, and its own tenant VM: a client of each
/// reaches its own network.
#[test]
fn two_tenant_networks_behind_one_router_each_with_its_appliance() {
    use cloudpipe_core::client_config::ClientConfig;
    use cloudpipe_core::config::{Config, ConfigFile, Mode, PoolFile};
    use cloudpipe_lab::mission::{ping_all, CONNECT_WITHIN};
    use cloudpipe_lab::wg_client::WgClient;
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    let lab = Lab::new(LabOptions {
        dhcp: true,
        metadata: true,
        ..LabOptions::default()
    })
    .unwrap();
    let second = lab
        .add_network(&NetworkOptions {
            name: "lab2".into(),
            cidr: "10.78.0.0/24".parse().unwrap(),
            mtu: 1442,
            dhcp: true,
        })
        .unwrap();
    let first = payloads::config(Mode::ProxyArp);
    let other = Config::try_from(ConfigFile {
        pool: Some(PoolFile {
            first: "10.78.0.240".parse().unwrap(),
            last: "10.78.0.254".parse().unwrap(),
        }),
        mtu: cloudpipe_core::config::tunnel_mtu(1442),
        peers: vec![cloudpipe_core::config::PeerFile {
            address: "10.78.0.240".parse().unwrap(),
            ..payloads::peer("carol", 4, 240)
        }],
        ..ConfigFile::new("lab2", "10.78.0.0/24", &payloads::key(11))
    })
    .unwrap();
    lab.launch_on(second, &lab.recipe_on(second, &other, None).unwrap())
        .unwrap();
    lab.set_user_data(&payloads::guest(&first)).unwrap();
    lab.set_user_data_on(second, &payloads::guest(&other))
        .unwrap();
    let mut daemons = [
        lab.start_daemon(&[]).unwrap(),
        lab.start_daemon_on(second, &[]).unwrap(),
    ];
    for d in &mut daemons {
        d.wait_ready(std::time::Duration::from_secs(20)).unwrap();
    }
    assert!(
        daemons[1].log().contains("network=lab2"),
        "{}",
        daemons[1].log()
    );
    let tun = lab
        .ip(&lab.network(second).cloudpipe, "link show cloudpipe0")
        .unwrap();
    assert!(tun.contains("mtu 1362 "), "{tun}");

    let clients = [
        (&first, 0usize, "10.77.0.240", 2u8, "a"),
        (&other, second, "10.78.0.240", 4, "c"),
    ];
    let mut up = Vec::new();
    for (config, index, address, key, tag) in clients {
        let endpoint = format!("{}:1194", lab.floating_ip_on(index).unwrap());
        let conf = ClientConfig::for_network(
            config,
            address.parse().unwrap(),
            payloads::key(key),
            Some(cloudpipe_core::keys::PresharedKey::from_bytes(
                [key.wrapping_add(100); 32],
            )),
            endpoint,
        )
        .render();
        let c = WgClient::up(
            &lab.outside(),
            &format!("{}{tag}", lab.id()),
            &conf,
            &lab.dir().join("clients"),
        )
        .unwrap();
        let vm = lab.network(index).tenant_vm_ip.unwrap().to_string();
        cloudpipe_lab::wait_for(CONNECT_WITHIN, "the client reaches its tenant VM", || {
            Ok(ping_all(&lab, &lab.outside(), &vm, 1))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", c.show(), daemons[index.min(1)].log()));
        up.push(c);
    }
}
