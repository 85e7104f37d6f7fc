//! `cloudpipe openstack NETWORK`: the commands an operator runs to launch the
//! network's cloudpipe under Neutron (Nova's cloudpipe did this itself: a security
//! group for UDP 1194 and ICMP, the .2 address, a public address forwarded to it).

use super::{open, server_name, sh};
use crate::cli::OpenstackArgs;
use crate::state::StateDir;
use anyhow::Result;
use cloudpipe_core::config::Mode;

pub fn run(state: &StateDir, args: OpenstackArgs) -> Result<()> {
    let net = open(state, &args.network)?;
    let config = net.config()?;
    let name = net.name();
    let server = server_name(name);
    let sg = format!("cloudpipe-{name}");
    let port = format!("cloudpipe-{name}");
    let neutron_net = args.network_id.clone().unwrap_or_else(|| name.to_string());
    let user_data = format!("cloudpipe-{name}.user-data");
    println!(
        "# Launch the cloudpipe of network {name} ({}), appliance {}.",
        config.subnet, config.address
    );
    println!("# 1. The payload: `--user-data FILE` base64-encodes FILE itself, so write the guest encoding.");
    println!("cloudpipe payload {name} --encoding guest --output {user_data}");
    println!(
        "# 2. Security group: WireGuard on UDP {} and all ICMP, from anywhere.",
        config.listen_port
    );
    println!("openstack security group create {sg}");
    println!(
        "openstack security group rule create --ingress --protocol udp --dst-port {} {sg}",
        config.listen_port
    );
    println!("openstack security group rule create --ingress --protocol icmp {sg}");
    if let Some(port) = config.status_port {
        println!(
            "#    Live status and metrics (TCP {port}) for the tenant subnet only; tunnel clients reach it inside the appliance."
        );
        println!(
            "openstack security group rule create --ingress --protocol tcp --dst-port {port} --remote-ip {} {sg}",
            config.subnet
        );
    }
    println!("# 3. The appliance's port, with the fixed address {} (Neutron's DHCP port may hold it: check first).", config.address);
    let mut port_cmd = format!(
        "openstack port create --network {} --fixed-ip subnet=$(openstack subnet list --network {} --subnet-range {} -f value -c ID),ip-address={} --security-group {sg}",
        sh(&neutron_net),
        sh(&neutron_net),
        config.subnet,
        config.address
    );
    match config.mode {
        Mode::ProxyArp => {
            println!("#    Proxy ARP: clients appear with pool addresses, so port security must allow the pool.");
            for cidr in config.pool.cidrs() {
                port_cmd.push_str(&format!(" --allowed-address ip-address={cidr}"));
            }
        }
        Mode::Masquerade => println!("#    Masquerade: clients leave with the appliance's address; no allowed-address-pairs needed."),
    }
    println!("{port_cmd} {port}");
    // An endpoint that is already an address asks for that floating IP.
    let endpoint_ip = net
        .file
        .endpoint
        .as_deref()
        .and_then(|e| e.rsplit_once(':'))
        .and_then(|(host, _)| host.parse::<std::net::Ipv4Addr>().ok());
    println!("# 4. The public address clients connect to.");
    match endpoint_ip {
        Some(ip) => println!(
            "openstack floating ip create {} --floating-ip-address {ip} --port {port}",
            sh(&args.external_network)
        ),
        None => println!(
            "openstack floating ip create {} --port {port}",
            sh(&args.external_network)
        ),
    }
    println!("# 5. The appliance VM.");
    println!(
        "openstack server create --image {} --flavor {} --port {port} --user-data {user_data} --wait {server}",
        sh(&args.image),
        sh(&args.flavor)
    );
    match &net.file.endpoint {
        Some(e) if endpoint_ip.is_some() => {
            println!("# Clients connect to {e}, the floating IP of step 4.")
        }
        Some(e) => {
            println!("# Clients connect to {e}: point that name at the floating IP of step 4.")
        }
        None => {
            println!("# 6. Tell clients where to connect (the floating IP from step 4):");
            println!(
                "cloudpipe network set-endpoint {name} FLOATING_IP:{}",
                config.listen_port
            );
        }
    }
    Ok(())
}
