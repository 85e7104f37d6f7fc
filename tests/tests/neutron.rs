//! The launch recipe against the lab's real Neutron, as a project member: what Neutron
//! accepts, refuses and hands out (root only; `scripts/openstack-lab start` first).

use cloudpipe_core::config::{Config, ConfigFile, PoolFile};
use cloudpipe_core::neutron::Recipe;
use cloudpipe_core::pool::Pool;
use cloudpipe_lab::mission::{cloudpipe, ping};
use cloudpipe_lab::openstack::{str_at, ApiError};
use cloudpipe_lab::{Lab, LabOptions, NetworkOptions, DEFAULT_MTU, SUBNET};
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::Path;

fn lab(dhcp: bool) -> Option<Lab> {
    if cloudpipe_lab::skip_unless_root() {
        return None;
    }
    Some(
        Lab::new(LabOptions {
            dhcp,
            launch: None,
            ..LabOptions::default()
        })
        .expect("building the lab"),
    )
}

/// `cloudpipe openstack NETWORK --json`, parsed.
fn recipe(state: &Path, network: &str) -> Recipe {
    let json = cloudpipe(state, &["openstack", network, "--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn api_error(e: &anyhow::Error) -> &ApiError {
    e.downcast_ref::<ApiError>()
        .unwrap_or_else(|| panic!("not an API error: {e:#}"))
}

/// 126 clients: exactly, the pool takes 12 CIDR blocks, and Neutron refuses the 11th
/// allowed address pair on a port (max_allowed_address_pair, 10 by default). The
/// recipe's pairs fit, and the lab's port filter lets the appliance send from the
/// first and the last pool address.
#[test]
fn allowed_address_pairs_fit_in_neutrons_ten() {
    let Some(lab) = lab(true) else { return };
    let state = lab.dir().join("state");
    let mtu = lab.mtu().to_string();
    cloudpipe(
        &state,
        &[
            "network",
            "create",
            "lab",
            "--cidr",
            SUBNET,
            "--clients",
            "126",
            "--mtu",
            &mtu,
        ],
    );
    let r = recipe(&state, "lab");
    let net = lab.network(0);
    let member = &lab.tenant().member;

    // What the recipe asked for before: the pool's exact blocks.
    let pool = Pool::nova_default(
        SUBNET.parse().unwrap(),
        126,
        &[
            (cloudpipe_lab::GATEWAY, "gateway"),
            (cloudpipe_lab::APPLIANCE, "appliance"),
        ],
    )
    .unwrap();
    let exact: Vec<_> = pool
        .cidrs()
        .iter()
        .map(|c| json!({"ip_address": c.to_string()}))
        .collect();
    assert_eq!(exact.len(), 12);
    let e = member
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net.network_id, "name": "exact-blocks",
                   "allowed_address_pairs": exact}}),
        )
        .unwrap_err();
    let e = api_error(&e);
    assert_eq!(e.status, 400, "{e}");
    assert!(e.body.contains("exceeds the maximum 10"), "{e}");

    // The recipe's, through the whole launch.
    assert!(r.port.allowed_address_pairs.len() <= 10, "{r:?}");
    lab.launch(&r).unwrap();
    let port = member
        .get(&format!(
            "/v2.0/ports?network_id={}&name={}",
            net.network_id, r.port.name
        ))
        .unwrap();
    let pairs = port["ports"][0]["allowed_address_pairs"]
        .as_array()
        .unwrap();
    assert_eq!(pairs.len(), r.port.allowed_address_pairs.len(), "{port}");
    let vm = lab.tenant_vm_ip().to_string();
    for from in [pool.first(), pool.last()] {
        lab.ip(&lab.cloudpipe(), &format!("addr add {from}/32 dev eth0"))
            .unwrap();
        assert!(
            ping(&lab, &lab.cloudpipe(), &vm, Some(&from.to_string())),
            "the port filter dropped the appliance's packets from {from}"
        );
    }
    // An address outside the pairs is still dropped.
    lab.ip(&lab.cloudpipe(), "addr add 10.77.0.99/32 dev eth0")
        .unwrap();
    assert!(!ping(&lab, &lab.cloudpipe(), &vm, Some("10.77.0.99")));
}

/// Neutron's default allocation pool holds every host but the gateway; the recipe
/// takes the appliance's address and the clients' out of it, so however many ports
/// are made afterwards (here: until Neutron has no address left), none gets one of
/// them. On a second tenant network behind the lab's router, a /27.
#[test]
fn neutron_never_gives_the_appliances_or_a_clients_address_to_another_port() {
    let Some(lab) = lab(false) else { return };
    let cidr = "10.78.0.0/27";
    let i = lab
        .add_network(&NetworkOptions {
            name: "small".into(),
            cidr: cidr.parse().unwrap(),
            mtu: DEFAULT_MTU,
            dhcp: true,
        })
        .unwrap();
    let config = Config::try_from(ConfigFile {
        pool: Some(PoolFile {
            first: "10.78.0.26".parse().unwrap(),
            last: "10.78.0.30".parse().unwrap(),
        }),
        ..ConfigFile::new(
            "small",
            cidr,
            &cloudpipe_core::keys::PrivateKey::from_bytes([7; 32]),
        )
    })
    .unwrap();
    let r = lab.recipe_on(i, &config, None).unwrap();
    lab.launch_on(i, &r).unwrap();
    let net = lab.network(i);
    let member = &lab.tenant().member;
    let mut given: Vec<Ipv4Addr> = vec![net.tenant_vm_ip.unwrap()];
    for n in 0.. {
        match member.post(
            "/v2.0/ports",
            json!({"port": {"network_id": net.network_id, "name": format!("vm{n}")}}),
        ) {
            Ok(p) => given.push(
                str_at(&p, "/port/fixed_ips/0/ip_address")
                    .unwrap()
                    .parse()
                    .unwrap(),
            ),
            Err(e) => {
                let e = api_error(&e);
                assert_eq!(e.status, 409, "{e}");
                assert!(e.body.contains("IpAddressGenerationFailure"), "{e}");
                break;
            }
        }
        assert!(n < 64, "Neutron never ran out of addresses");
    }
    for a in &given {
        assert!(
            !r.subnet.reserved.iter().any(|n| n.contains(*a)),
            "Neutron gave {a}, reserved by {:?}",
            r.subnet.reserved
        );
    }
    let pools: u32 = r
        .subnet
        .allocation_pools
        .iter()
        .map(|p| u32::from(p.end) - u32::from(p.start) + 1)
        .sum();
    assert_eq!(
        given.len() as u32,
        pools,
        "every pool address was given once"
    );
}

/// Neutron's DHCP port often holds .2 already. The recipe's check lists the port
/// holding the appliance's address, as the member, with python-openstackclient; the
/// recipe as it stands is refused by Neutron; the way out the recipe names
/// (`--address`) is taken by Neutron.
#[test]
fn the_recipe_finds_a_dhcp_port_on_the_appliances_address_and_names_the_way_out() {
    let Some(lab) = lab(true) else { return };
    let net = lab.network(0);
    // What a DHCP agent does when the subnet is made: a port on the second host.
    lab.admin()
        .post(
            "/v2.0/ports",
            json!({"port": {"network_id": net.network_id, "name": "dhcp",
                   "project_id": lab.tenant().member.project_id,
                   "device_owner": "network:dhcp",
                   "fixed_ips": [{"subnet_id": net.subnet_id, "ip_address": "10.77.0.2"}]}}),
        )
        .unwrap();
    let state = lab.dir().join("state");
    let endpoint = lab.floating_ip().to_string();
    let mtu = lab.mtu().to_string();
    let create = |extra: &[&str]| {
        let mut a = vec![
            "network",
            "create",
            "lab",
            "--cidr",
            SUBNET,
            "--endpoint",
            &endpoint,
            "--mtu",
            &mtu,
        ];
        a.extend_from_slice(extra);
        cloudpipe(&state, &a);
    };
    create(&[]);
    let text = cloudpipe(&state, &["openstack", "lab"]);
    let check = text
        .lines()
        .find(|l| l.starts_with("openstack port list"))
        .unwrap_or_else(|| panic!("no check for the port holding .2:\n{text}"));
    assert!(text.contains("--address"), "{text}");
    // As printed, by the shell, as the member.
    let bin = lab
        .tenant()
        .member
        .state
        .openstack
        .parent()
        .unwrap()
        .to_owned();
    let out = std::process::Command::new("bash")
        .args(["-c", check])
        .envs(lab.tenant().openstack_env())
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains("network:dhcp"),
        "{check}:\n{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let e = lab.launch(&recipe(&state, "lab")).unwrap_err();
    let e = api_error(&e);
    assert_eq!(e.status, 409, "{e}");
    assert!(e.body.contains("10.77.0.2"), "{e}");

    cloudpipe(&state, &["network", "delete", "lab", "--yes"]);
    create(&["--address", "10.77.0.3"]);
    let r = recipe(&state, "lab");
    assert_eq!(r.port.fixed_ips[0].ip_address.to_string(), "10.77.0.3");
    lab.launch(&r).unwrap();
    let port = lab
        .tenant()
        .member
        .get(&format!(
            "/v2.0/ports?network_id={}&name={}",
            net.network_id, r.port.name
        ))
        .unwrap();
    assert_eq!(
        str_at(&port, "/ports/0/fixed_ips/0/ip_address").unwrap(),
        "10.77.0.3"
    );
}
