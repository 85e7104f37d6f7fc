//! `cloudpipe-lab demo`: the whole mission in the lab, narrated. The README's first
//! command (`scripts/demo`) runs it.

use crate::mission::{ping_all, Mission, NETWORK};
use std::process::Command;

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Show a CLI call and its output.
fn cli(m: &Mission, args: &[&str]) -> String {
    println!("$ cloudpipe {}", args.join(" "));
    let out = m.cli(args);
    print!("{out}");
    out
}

fn show_ping(ns: &str, who: &str, dst: &str) -> anyhow::Result<()> {
    println!("$ ping -c 3 {dst}    # from {who}");
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-c", "3", "-i", "0.3", dst,
        ])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(out.status.success(), "ping from {who} to {dst} failed");
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    step("a tenant network of a real Neutron (Keystone + Neutron on loopback), wired in network namespaces: router (gateway .1, metadata 169.254.169.254, a floating IP), a tenant VM, the cloudpipe VM, an outside user");
    let Some(mut m) = Mission::new(&["--route", "192.168.50.0/24"]) else {
        anyhow::bail!("the demo needs root");
    };
    let vm = m.lab.tenant_vm_ip().to_string();
    println!(
        "lab {} in {}; Neutron project {}, network {NETWORK} (MTU {}), floating IP {}, tenant VM {vm}",
        m.lab.id(),
        m.lab.dir().display(),
        m.lab.id(),
        m.lab.mtu(),
        m.lab.floating_ip()
    );

    step("the operator creates the network's cloudpipe and two clients");
    println!(
        "(network create {NETWORK} --cidr 10.77.0.0/24 --clients 5 --endpoint {} --mtu {} --route 192.168.50.0/24 ran above)",
        m.endpoint(),
        m.lab.mtu()
    );
    let alice = m.add_client("alice");
    println!("$ cloudpipe client add {NETWORK} alice     # a standard wg-quick config:");
    for line in alice.lines() {
        // The demo's throwaway keys, still: show the shape, not the secrets.
        if line.starts_with("PrivateKey") || line.starts_with("PresharedKey") {
            println!("{} = <secret>", line.split('=').next().unwrap_or("").trim());
        } else {
            println!("{line}");
        }
    }
    let bob = m.add_client("bob");
    println!("$ cloudpipe client add {NETWORK} bob       # (config not shown)");
    cli(&m, &["client", "list", NETWORK]);

    step("what the operator runs under Neutron, as a project member (the lab applied the same recipe, `--json`, through Neutron's API; the lab's port filter enforces what Neutron holds)");
    cli(&m, &["openstack", NETWORK]);

    step("the payload goes to the metadata server; cloudpiped boots in the cloudpipe VM");
    m.boot();
    println!("cloudpiped is READY: it took .2, created cloudpipe0, bound UDP 1194");
    let c = m.lab.cloudpipe();
    println!("$ ip -4 addr show dev eth0   # in the cloudpipe VM");
    print!("{}", m.lab.ip(&c, "-4 -br addr show dev eth0")?);
    println!("$ ip neigh show proxy        # proxy ARP for the clients");
    print!("{}", m.lab.ip(&c, "neigh show proxy")?);

    step("alice (outside) and bob (at home) bring up wireguard-go with their configs");
    let outside = m.lab.outside();
    let home = m.lab.add_external_host("home", "ext1", 100)?;
    let alice_wg = m.connect(&outside, "alice", &alice);
    let _bob_wg = m.connect(&home, "bob", &bob);

    step("the external users are neighbours on the tenant network");
    show_ping(&outside, "alice", &vm)?;
    show_ping(&m.lab.tenant_vm(), "the tenant VM", "10.77.0.250")?;
    show_ping(&m.lab.tenant_vm(), "the tenant VM", "10.77.0.251")?;

    step("tunnel details");
    cli(&m, &["network", "show", NETWORK]);
    println!("$ wg show    # alice's client");
    println!("{}", alice_wg.show());
    if let Some(d) = m.daemon.as_ref() {
        d.signal(nix::sys::signal::Signal::SIGUSR1 as i32);
        std::thread::sleep(std::time::Duration::from_millis(300));
        println!("cloudpiped's status (SIGUSR1):");
        for line in d.log().lines().filter(|l| l.contains("peer status")) {
            println!("  {line}");
        }
    }

    step("revoke alice: the operator publishes the change as instance properties");
    cli(&m, &["client", "revoke", NETWORK, "alice"]);
    m.publish();
    crate::wait_for(std::time::Duration::from_secs(15), "alice cut off", || {
        Ok(!ping_all(&m.lab, &outside, &vm, 1))
    })?;
    println!("alice can no longer reach the tenant VM; bob still can:");
    show_ping(&home, "bob", &vm)?;

    step("tearing the lab down");
    Ok(())
}
