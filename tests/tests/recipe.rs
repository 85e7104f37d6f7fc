//! `cloudpipe openstack NETWORK` applied exactly as printed, by the shell, with
//! python-openstackclient as a project *member*: Neutron's validation, quotas and
//! default policy judge every command. Then the appliance boots on the port the
//! recipe made and a client connects through the floating IP it attached (root only;
//! `scripts/openstack-lab start` first).
//!
//! No Nova runs here: `openstack server create` is played by the lab. A shim before
//! the real client takes the `--user-data` file and the `--port`, as Nova would hand
//! them to the instance (the metadata server serves the file, the appliance namespace
//! is wired to the port); every other command goes to python-openstackclient.

use cloudpipe_core::neutron::Recipe;
use cloudpipe_lab::mission::{cloudpipe, iperf_report, ping_all, CONNECT_WITHIN, NETWORK};
use cloudpipe_lab::openstack::str_at;
use cloudpipe_lab::wg_client::WgClient;
use cloudpipe_lab::{bin_path, wait_for, Lab, LabOptions, SUBNET};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the lab's Nova shim took from `openstack server create`.
struct Server {
    port: String,
    user_data: Vec<u8>,
}

/// Boot the appliance on the port the recipe made, add alice to the running
/// appliance (published as printed) and wait until she reaches the tenant VM
/// through the floating IP. The daemon and her client live as long as the pair.
fn boot_and_connect_alice(
    lab: &Lab,
    state: &Path,
    server: &Server,
) -> (cloudpipe_lab::daemon::Daemon, WgClient) {
    lab.attach_appliance(0, &server.port).unwrap();
    lab.set_user_data(&server.user_data).unwrap();
    let mut d = lab.start_daemon(&[]).unwrap();
    d.wait_ready(Duration::from_secs(30)).unwrap();
    let conf = cloudpipe(state, &["client", "add", NETWORK, "alice"]);
    publish_as_printed(lab, state);
    let alice = WgClient::up(
        &lab.outside(),
        &format!("{}a", lab.id()),
        &conf,
        &lab.dir().join("clients"),
    )
    .unwrap();
    let vm = lab.tenant_vm_ip().to_string();
    wait_for(CONNECT_WITHIN, "alice reaches the tenant VM", || {
        Ok(ping_all(lab, &lab.outside(), &vm, 1))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", alice.show(), d.log()));
    (d, alice)
}

/// Run `recipe` (the printed text) with `bash -e`, as the lab's member.
fn apply_as_printed(lab: &Lab, state: &Path, recipe: &str) -> Server {
    run_as_printed(lab, state, recipe);
    let nova = lab.dir().join("operator/nova");
    Server {
        port: std::fs::read_to_string(nova.join("port")).expect("server create ran"),
        user_data: std::fs::read(nova.join("user_data")).unwrap(),
    }
}

/// `cloudpipe publish NETWORK`'s commands, run as printed; the instance properties
/// they set become the lab's meta_data.json.
fn publish_as_printed(lab: &Lab, state: &Path) {
    let text = cloudpipe(state, &["publish", NETWORK]);
    run_as_printed(lab, state, &text);
    let log = std::fs::read_to_string(lab.dir().join("operator/nova/properties")).unwrap();
    let mut meta = std::collections::BTreeMap::new();
    for line in log.lines() {
        match line.split_once('\t') {
            Some(("set", kv)) => {
                let (k, v) = kv.split_once('=').unwrap();
                meta.insert(k.to_string(), v.to_string());
            }
            Some(("unset", k)) => {
                meta.remove(k);
            }
            _ => panic!("{line}"),
        }
    }
    lab.set_meta(meta.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap();
    cloudpipe(state, &["publish", NETWORK, "--done"]);
}

/// Run printed commands with `bash -e` in the operator's folder, as the lab's member.
fn run_as_printed(lab: &Lab, state: &Path, recipe: &str) {
    let dir = lab.dir().join("operator");
    let nova = dir.join("nova");
    let shim_dir = dir.join("bin");
    std::fs::create_dir_all(&nova).unwrap();
    std::fs::create_dir_all(&shim_dir).unwrap();
    let real = &lab.tenant().member.state.openstack;
    let shim = format!(
        r#"#!/bin/sh
# The lab plays Nova: server create hands the user-data and the port to the instance;
# server set/unset --property change its metadata (meta_data.json's meta).
if [ "$1" = server ] && [ "$2" = set -o "$2" = unset ]; then
  op=$2
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      --property) printf '%s\t%s\n' "$op" "$2" >> "{nova}/properties"; shift 2 ;;
      *) shift ;;
    esac
  done
  exit 0
fi
if [ "$1" = server ] && [ "$2" = create ]; then
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      --user-data) cp "$2" "{nova}/user_data"; shift 2 ;;
      --port) printf %s "$2" > "{nova}/port"; shift 2 ;;
      --image|--flavor) shift 2 ;;
      --wait) shift ;;
      *) printf %s "$1" > "{nova}/name"; shift ;;
    esac
  done
  exit 0
fi
exec "{real}" "$@"
"#,
        nova = nova.display(),
        real = real.display()
    );
    let shim_path = shim_dir.join("openstack");
    std::fs::write(&shim_path, shim).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.join("recipe.sh");
    std::fs::write(&script, recipe).unwrap();
    let cli_dir: PathBuf = bin_path("cloudpipe").unwrap().parent().unwrap().into();
    let out = std::process::Command::new("bash")
        .arg("-e")
        .arg(&script)
        .current_dir(&dir)
        .envs(lab.tenant().openstack_env())
        .env("CLOUDPIPE_STATE_DIR", state)
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                shim_dir.display(),
                cli_dir.display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "failed as printed:\n{recipe}\n--- stderr:\n{stderr}"
    );
}

/// What Neutron holds matches the JSON form of the same recipe: the security group's
/// ingress rules, the port's fixed IP and pairs, the subnet's pools, the floating IP
/// on the port.
fn neutron_holds(lab: &Lab, r: &Recipe) -> std::net::Ipv4Addr {
    let m = &lab.tenant().member;
    let net = lab.network(0);
    let groups = m
        .get(&format!(
            "/v2.0/security-groups?name={}",
            r.security_group.name
        ))
        .unwrap();
    let rules: BTreeSet<String> = groups["security_groups"][0]["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["direction"] == "ingress")
        .map(|x| {
            format!(
                "{} {} {} {}",
                x["protocol"], x["port_range_min"], x["port_range_max"], x["remote_ip_prefix"]
            )
        })
        .collect();
    let want: BTreeSet<String> = r
        .security_group
        .rules
        .iter()
        .map(|x| {
            let v = serde_json::to_value(x).unwrap();
            format!(
                "{} {} {} {}",
                v["protocol"], v["port_range_min"], v["port_range_max"], v["remote_ip_prefix"]
            )
        })
        .collect();
    assert_eq!(rules, want, "the group's ingress rules");
    let port = m
        .get(&format!(
            "/v2.0/ports?network_id={}&name={}",
            net.network_id, r.port.name
        ))
        .unwrap();
    let port = &port["ports"][0];
    assert_eq!(
        port["fixed_ips"][0]["ip_address"],
        r.port.fixed_ips[0].ip_address.to_string()
    );
    let pairs: BTreeSet<String> = port["allowed_address_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip_address"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = r
        .port
        .allowed_address_pairs
        .iter()
        .map(|p| p.ip_address.to_string())
        .collect();
    assert_eq!(pairs, want, "the port's allowed address pairs");
    let subnet = m.get(&format!("/v2.0/subnets/{}", net.subnet_id)).unwrap();
    assert_eq!(
        subnet["subnet"]["allocation_pools"],
        serde_json::to_value(&r.subnet.allocation_pools).unwrap()
    );
    let fips = m
        .get(&format!(
            "/v2.0/floatingips?port_id={}",
            port["id"].as_str().unwrap()
        ))
        .unwrap();
    str_at(&fips, "/floatingips/0/floating_ip_address")
        .expect("a floating IP on the appliance's port")
        .parse()
        .unwrap()
}

/// The whole launch as a new user would do it under Neutron's defaults: no endpoint
/// yet (the recipe allocates the floating IP, attaches it, and sets the endpoint),
/// proxy ARP. Then alice connects through that floating IP, and TCP goes both ways
/// between her and the tenant VM.
#[test]
fn the_printed_recipe_launches_as_a_member_allocating_the_floating_ip() {
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
    let state = lab.dir().join("state");
    let mtu = lab.mtu().to_string();
    cloudpipe(
        &state,
        &[
            "network", "create", NETWORK, "--cidr", SUBNET, "--mtu", &mtu,
        ],
    );
    let text = cloudpipe(&state, &["openstack", NETWORK]);
    let r: Recipe =
        serde_json::from_str(&cloudpipe(&state, &["openstack", NETWORK, "--json"])).unwrap();
    let t = std::time::Instant::now();
    let server = apply_as_printed(&lab, &state, &text);
    eprintln!("the printed recipe ran in {:?}", t.elapsed());
    assert_eq!(server.port, r.port.name);
    let fip = neutron_holds(&lab, &r);
    // The recipe told the CLI where clients connect.
    let show = cloudpipe(&state, &["network", "show", NETWORK]);
    assert!(
        show.contains(&format!("endpoint:         {fip}:1194")),
        "{show}"
    );

    let (_d, _alice) = boot_and_connect_alice(&lab, &state, &server);
    // The tenant VM reaches alice: ping, and a TCP connection to her pool address.
    assert!(ping_all(&lab, &lab.tenant_vm(), "10.77.0.250", 3));
    #[allow(clippy::zombie_processes)] // the lab tracks the PID, kills and reaps it
    lab.spawn_with(
        &lab.outside(),
        &["iperf3", "-s", "-1", "-B", "10.77.0.250", "-p", "5311"],
        |c| {
            c.stdout(std::process::Stdio::null());
        },
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "iperf3 on alice's side", || {
        Ok(lab
            .exec(&lab.outside(), &["ss", "-Htln", "sport = :5311"])?
            .contains("5311"))
    })
    .unwrap();
    let report = iperf_report(
        lab.output(
            &lab.tenant_vm(),
            &[
                "iperf3",
                "-c",
                "10.77.0.250",
                "-p",
                "5311",
                "-n",
                "2M",
                "-J",
            ],
        )
        .unwrap(),
    );
    assert!(
        report["end"]["sum_sent"]["bytes"]
            .as_u64()
            .is_some_and(|b| b >= 2 << 20),
        "{report}"
    );
}

/// The endpoint is a floating IP the project already holds (allocated earlier, as a
/// member may): the recipe attaches it by address, without the admin-only
/// `--floating-ip-address`. Masquerade mode: no pairs, the pool still reserved.
#[test]
fn the_printed_recipe_reuses_a_floating_ip_the_project_holds() {
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
    let state = lab.dir().join("state");
    let mtu = lab.mtu().to_string();
    let held = lab.floating_ip().to_string();
    cloudpipe(
        &state,
        &[
            "network",
            "create",
            NETWORK,
            "--cidr",
            SUBNET,
            "--mtu",
            &mtu,
            "--endpoint",
            &held,
            "--mode",
            "masquerade",
        ],
    );
    let text = cloudpipe(&state, &["openstack", NETWORK]);
    assert!(!text.contains("--floating-ip-address"), "{text}");
    let r: Recipe =
        serde_json::from_str(&cloudpipe(&state, &["openstack", NETWORK, "--json"])).unwrap();
    let server = apply_as_printed(&lab, &state, &text);
    assert_eq!(neutron_holds(&lab, &r).to_string(), held);
    assert!(r.port.allowed_address_pairs.is_empty());

    let (_d, _alice) = boot_and_connect_alice(&lab, &state, &server);
}
