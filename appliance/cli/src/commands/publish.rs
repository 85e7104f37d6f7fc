//! `cloudpipe publish`: client changes reach a running appliance as instance
//! properties (user-data cannot change after boot).

use super::{open, server_name, sh};
use crate::cli::PublishArgs;
use crate::model::{Network, Status};
use crate::state::StateDir;
use anyhow::Result;
use cloudpipe_core::overlay::property_changes;

pub fn run(state: &StateDir, args: PublishArgs) -> Result<()> {
    let mut net = open(state, &args.network)?;
    let desired = net.desired_properties()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&desired)?);
        return Ok(());
    }
    if args.done {
        net.set_published_properties(&desired)?;
        let mut released = 0;
        for c in net.clients.iter_mut() {
            if c.status == (Status::Revoked { released: false }) {
                c.status = Status::Revoked { released: true };
                released += 1;
            }
        }
        for c in &net.clients {
            net.save_client(c)?;
        }
        eprintln!("recorded as published; {released} revoked address(es) returned to the pool");
        return Ok(());
    }
    let commands = commands(&net)?;
    if commands.is_empty() {
        eprintln!("nothing to publish: the instance's properties are up to date");
    }
    for c in commands {
        println!("{c}");
    }
    Ok(())
}

/// The `openstack server set/unset` commands that bring the instance's properties
/// from what was last published to what the clients now are.
pub fn commands(net: &Network) -> Result<Vec<String>> {
    let (set, unset) = property_changes(&net.published_properties()?, &net.desired_properties()?);
    let server = server_name(net.name());
    let mut out = Vec::new();
    if !set.is_empty() {
        let props: Vec<String> = set
            .iter()
            .map(|(k, v)| format!("--property {}", sh(&format!("{k}={v}"))))
            .collect();
        out.push(format!("openstack server set {} {server}", props.join(" ")));
    }
    if !unset.is_empty() {
        let props: Vec<String> = unset
            .iter()
            .map(|k| format!("--property {}", sh(k)))
            .collect();
        out.push(format!(
            "openstack server unset {} {server}",
            props.join(" ")
        ));
    }
    Ok(out)
}

/// After a client change: tell the operator how to publish it, if an appliance may
/// be running (a payload was printed).
pub fn hint(net: &Network) -> Result<()> {
    if net.baseline()?.is_none() {
        return Ok(());
    }
    let cmds = commands(net)?;
    if !cmds.is_empty() {
        eprintln!(
            "publish this change to the running appliance, then run `cloudpipe publish {} --done`:",
            net.name()
        );
        for c in cmds {
            eprintln!("  {c}");
        }
    }
    Ok(())
}
