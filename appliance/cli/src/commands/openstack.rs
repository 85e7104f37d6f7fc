//! `cloudpipe openstack NETWORK`: the commands an operator runs, as a project
//! member under Neutron's default policy, to launch the network's cloudpipe (Nova's
//! cloudpipe did this itself: a security group for UDP 1194 and ICMP, the .2 address,
//! a public address forwarded to it). `--json` prints the same recipe as data
//! (cloudpipe_core::neutron::Recipe); both come from one `Recipe`.

use super::{open, server_name, sh};
use crate::cli::OpenstackArgs;
use crate::state::StateDir;
use anyhow::Result;
use cloudpipe_core::config::{Mode, WIREGUARD_OVERHEAD};
use cloudpipe_core::neutron::{
    Recipe, RecipeOptions, SecurityGroupRule, MAX_ALLOWED_ADDRESS_PAIRS,
};
use std::net::Ipv4Addr;

pub fn run(state: &StateDir, args: OpenstackArgs) -> Result<()> {
    let net = open(state, &args.network)?;
    let config = net.config()?;
    let name = net.name();
    // An endpoint that is already an address is a floating IP the project holds.
    let endpoint_ip = net
        .file
        .endpoint
        .as_deref()
        .and_then(|e| e.rsplit_once(':'))
        .and_then(|(host, _)| host.parse::<Ipv4Addr>().ok());
    let recipe = Recipe::new(
        &config,
        &RecipeOptions {
            network: args.network_id.clone().unwrap_or_else(|| name.to_string()),
            external_network: args.external_network.clone(),
            image: args.image.clone(),
            flavor: args.flavor.clone(),
            mtu: net
                .file
                .tenant_mtu
                .unwrap_or(net.file.mtu + WIREGUARD_OVERHEAD),
            floating_ip: endpoint_ip,
        },
    )?;
    debug_assert_eq!(recipe.server.name, server_name(name));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&recipe)?);
        return Ok(());
    }
    print_commands(&recipe, name, &config, net.file.endpoint.as_deref());
    Ok(())
}

fn rule_command(r: &SecurityGroupRule, sg: &str) -> String {
    let mut c = format!(
        "openstack security group rule create --{} --ethertype {} --protocol {}",
        r.direction,
        r.ethertype,
        r.protocol.as_deref().unwrap_or("any")
    );
    match (r.port_range_min, r.port_range_max) {
        (Some(a), Some(b)) if a == b => c.push_str(&format!(" --dst-port {a}")),
        (Some(a), Some(b)) => c.push_str(&format!(" --dst-port {a}:{b}")),
        _ => {}
    }
    c.push_str(&format!(
        " --remote-ip {} --description {} {sg}",
        r.remote_ip_prefix,
        sh(&r.description)
    ));
    c
}

fn print_commands(
    r: &Recipe,
    name: &str,
    config: &cloudpipe_core::config::Config,
    endpoint: Option<&str>,
) {
    let neutron_net = sh(&r.network);
    let subnet = format!(
        "$(openstack subnet list --network {neutron_net} --subnet-range {} -f value -c ID)",
        r.subnet.cidr
    );
    let address = r.port.fixed_ips[0].ip_address;
    let (sg, port) = (&r.security_group.name, &r.port.name);
    println!(
        "# Launch the cloudpipe of network {name} ({}), appliance {address}, as a member of the project.",
        r.subnet.cidr
    );
    println!("# 1. The payload: `openstack server create --user-data FILE` sends FILE base64-encoded (older clients read it");
    println!("#    as text first, which a zip breaks): write the guest encoding, text the appliance decodes.");
    println!(
        "cloudpipe payload {name} --encoding {} --output {}",
        r.server.user_data_encoding, r.server.user_data
    );
    println!(
        "# 2. Checks. The tenant network's MTU must be {} (clients' configs say MTU = {}); if not, recreate the",
        r.mtu, config.mtu
    );
    println!("#    network with `cloudpipe network create {name} ... --mtu VALUE` and give clients new configs:");
    println!("openstack network show {neutron_net} -c mtu -f value");
    println!("#    {address} must be free: this lists the port holding it (Neutron's DHCP port often takes .2).");
    println!("#    If one is listed, give the appliance a free address: `cloudpipe network create {name} ... --address FREE_IP`.");
    println!("openstack port list --network {neutron_net} --fixed-ip ip-address={address} --long -c ID -c 'Device Owner'");
    let reserved: Vec<String> = r.subnet.reserved.iter().map(|n| n.to_string()).collect();
    println!(
        "# 3. Keep Neutron from giving {} (the appliance and the client pool) to other ports:",
        reserved.join(", ")
    );
    println!("#    the subnet's allocation pools become Neutron's default less those (if you had changed them, keep your own");
    println!("#    pools less those addresses). On a shared subnet you cannot change, hold each address with a port instead:");
    println!("#    openstack port create --network {neutron_net} --fixed-ip ip-address=ADDRESS --no-security-group cloudpipe-{name}-hold-ADDRESS");
    let pools: Vec<String> = r
        .subnet
        .allocation_pools
        .iter()
        .map(|p| format!("--allocation-pool start={},end={}", p.start, p.end))
        .collect();
    println!(
        "openstack subnet set --no-allocation-pool {} {subnet}",
        pools.join(" ")
    );
    println!("# 4. Security group: WireGuard and ICMP from anywhere, and the networks whose hosts reach clients or the appliance.");
    println!(
        "openstack security group create --description {} {sg}",
        sh(&r.security_group.description)
    );
    for rule in &r.security_group.rules {
        println!("{}", rule_command(rule, sg));
    }
    println!("# 5. The appliance's port, with the fixed address {address}.");
    let mut port_cmd = format!(
        "openstack port create --network {neutron_net} --fixed-ip subnet={subnet},ip-address={address}"
    );
    for g in &r.port.security_groups {
        port_cmd.push_str(&format!(" --security-group {}", sh(g)));
    }
    match config.mode {
        Mode::ProxyArp => {
            println!(
                "#    Proxy ARP: clients appear with pool addresses, so port security must allow the pool: {} of Neutron's",
                r.port.allowed_address_pairs.len()
            );
            println!("#    {MAX_ALLOWED_ADDRESS_PAIRS} allowed address pairs per port (they may cover a little more than the pool; step 3 reserves it too).");
            for p in &r.port.allowed_address_pairs {
                port_cmd.push_str(&format!(" --allowed-address ip-address={}", p.ip_address));
            }
        }
        Mode::Masquerade => println!("#    Masquerade: clients leave with the appliance's address; no allowed address pairs needed."),
    }
    println!("{port_cmd} {port}");
    let ext = sh(&r.floating_ip.floating_network);
    println!("# 6. The public address clients connect to. A member may not choose a floating IP's address (Neutron's default");
    println!(
        "#    policy): allocate one, or reuse one the project holds, and attach it to the port."
    );
    match r.floating_ip.floating_ip_address {
        Some(ip) => {
            println!("#    The endpoint {ip} is one the project holds (`openstack floating ip list`); if it is not,");
            println!("#    allocate one with `openstack floating ip create {ext}` and `cloudpipe network set-endpoint {name}` it.");
            println!("openstack floating ip set --port {port} {ip}");
        }
        None => {
            println!(
                "FLOATING_IP=$(openstack floating ip create {ext} -f value -c floating_ip_address)"
            );
            println!("openstack floating ip set --port {port} \"$FLOATING_IP\"");
            match endpoint {
                Some(e) => {
                    println!("#    Clients connect to {e}: point that name at $FLOATING_IP.")
                }
                None => println!(
                    "cloudpipe network set-endpoint {name} \"$FLOATING_IP:{}\"",
                    config.listen_port
                ),
            }
        }
    }
    println!("# 7. The appliance VM.");
    println!(
        "openstack server create --image {} --flavor {} --port {} --user-data {} --wait {}",
        sh(&r.server.image),
        sh(&r.server.flavor),
        r.server.port,
        r.server.user_data,
        r.server.name
    );
}
