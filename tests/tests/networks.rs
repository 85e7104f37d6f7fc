//! One user in several networks (the blueprint's use case 2), in the lab (root only):
//! two tenant networks of Neutron behind one router, an appliance in each launched
//! from the recipe `cloudpipe openstack --json` prints, and one user whose one
//! wg-quick file (`cloudpipe client add lab,db alice`) brings up one interface, with
//! Debian's own `wg-quick` (wireguard-go underneath), that reaches a VM in each.

use cloudpipe_lab::mission::{cloudpipe, ping, CONNECT_WITHIN, READY_WITHIN};
use cloudpipe_lab::{wait_for, Lab, LabOptions, NetworkOptions, DEFAULT_MTU, SUBNET, WG_PORT};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Instance properties are polled every second in the lab; a wide margin.
const REVOKED_WITHIN: Duration = Duration::from_secs(15);

/// `wg-quick up` in a namespace; `wg-quick down` when dropped (its wireguard-go,
/// started by wg-quick in the lab's namespace, goes with the lab anyway).
struct WgQuick {
    ns: String,
    conf: PathBuf,
}

impl WgQuick {
    fn up(lab: &Lab, ns: &str, conf: PathBuf) -> WgQuick {
        let out = lab
            .output(ns, &["wg-quick", "up", conf.to_str().unwrap()])
            .unwrap();
        assert!(
            out.status.success(),
            "wg-quick up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        WgQuick {
            ns: ns.to_string(),
            conf,
        }
    }
}

impl Drop for WgQuick {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "wg-quick", "down"])
            .arg(&self.conf)
            .output();
    }
}

/// Launch network `index` in Neutron from the recipe the CLI prints for `name`.
fn launch(lab: &Lab, state: &Path, index: usize, name: &str) {
    let json = cloudpipe(state, &["openstack", name, "--json"]);
    let recipe = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    lab.launch_on(index, &recipe)
        .unwrap_or_else(|e| panic!("launching {name}: {e:#}\n{json}"));
}

#[test]
fn one_user_one_wg_quick_file_reaches_a_vm_in_each_network() {
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    let lab = Lab::new(LabOptions {
        dhcp: true,
        metadata: true,
        launch: None,
        ..LabOptions::default()
    })
    .unwrap();
    let k = lab
        .add_network(&NetworkOptions {
            name: "db".into(),
            cidr: "10.78.0.0/24".parse().unwrap(),
            mtu: DEFAULT_MTU,
            dhcp: true,
        })
        .unwrap();
    let state = lab.dir().join("state");
    let cli = |args: &[&str]| cloudpipe(&state, args);
    let mtu = lab.mtu().to_string();
    // The first network also pushes a route: its address must come first. Its
    // endpoint is the floating IP the project holds; db's is allocated at launch.
    let endpoint = format!("{}:{WG_PORT}", lab.floating_ip());
    cli(&[
        "network",
        "create",
        "lab",
        "--cidr",
        SUBNET,
        "--mtu",
        &mtu,
        "--endpoint",
        &endpoint,
        "--route",
        "192.168.50.0/24",
    ]);
    cli(&[
        "network",
        "create",
        "db",
        "--cidr",
        "10.78.0.0/24",
        "--mtu",
        &mtu,
    ]);
    launch(&lab, &state, 0, "lab");
    launch(&lab, &state, k, "db");
    let db_endpoint = format!("{}:{WG_PORT}", lab.floating_ip_on(k).unwrap());
    cli(&["network", "set-endpoint", "db", &db_endpoint]);
    let conf = cli(&["client", "add", "lab,db", "alice"]);
    assert_eq!(conf.matches("[Peer]").count(), 2, "{conf}");

    let mut daemons = Vec::new();
    for (i, name) in [(0, "lab"), (k, "db")] {
        let payload = cli(&["payload", name, "--encoding", "guest"]);
        lab.set_user_data_on(i, payload.as_bytes()).unwrap();
        lab.set_meta_on(i, []).unwrap();
        let mut d = lab.start_daemon_on(i, &[]).unwrap();
        d.wait_ready(READY_WITHIN).unwrap();
        daemons.push(d);
    }
    let log = || {
        daemons
            .iter()
            .map(|d| d.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };

    // One wg-quick file, named as the CLI suggests: a valid interface name, unique
    // on the machine (wireguard-go's UAPI sockets are shared by all namespaces).
    let iface = format!("{}m", lab.id());
    let path = lab.dir().join(format!("{iface}.conf"));
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
        .unwrap();
    let outside = lab.outside();
    let _tunnel = WgQuick::up(&lab, &outside, path);
    let peers = lab
        .exec(&outside, &["wg", "show", &iface, "peers"])
        .unwrap();
    assert_eq!(
        peers.lines().count(),
        2,
        "one interface, two peers: {peers}"
    );

    let vms: Vec<(String, String)> = [0, k]
        .iter()
        .map(|&i| {
            let n = lab.network(i);
            (n.tenant_vm, n.tenant_vm_ip.unwrap().to_string())
        })
        .collect();
    for (_, vm) in &vms {
        wait_for(CONNECT_WITHIN, &format!("alice reaches {vm}"), || {
            Ok(ping(&lab, &outside, vm, None))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    }
    // Each tenant VM reaches alice at her address in its own network: her traffic
    // to each network left with that network's address.
    for ((ns, _), alice) in vms.iter().zip(["10.77.0.250", "10.78.0.250"]) {
        assert!(
            ping(&lab, ns, alice, None),
            "{ns} does not reach alice at {alice}\n{}",
            log()
        );
    }
    let list = cli(&["client", "list", "db"]);
    assert!(list.contains(" db,lab "), "{list}");

    // Revoked in db, alice keeps lab.
    cli(&["client", "revoke", "db", "alice"]);
    let props: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&cli(&["publish", "db", "--json"])).unwrap();
    lab.set_meta_on(
        k,
        props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
    )
    .unwrap();
    wait_for(REVOKED_WITHIN, "alice cut off from db", || {
        Ok(!ping(&lab, &outside, &vms[1].1, None))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    assert!(
        ping(&lab, &outside, &vms[0].1, None),
        "alice lost lab too\n{}",
        log()
    );
    assert!(cli(&["client", "list", "lab"]).contains(" lab "));
}
