//! One module per command group; this one dispatches.

mod client;
mod network;
mod openstack;
mod payload;
mod publish;

use crate::cli::{Cli, Command};
use crate::model::Network;
use crate::state::StateDir;
use anyhow::Result;

pub fn run(cli: Cli) -> Result<()> {
    let state = StateDir::open(cli.state_dir)?;
    match cli.command {
        Command::Network(cmd) => network::run(&state, cmd),
        Command::Client(cmd) => client::run(&state, cmd),
        Command::Payload(args) => payload::run(&state, args),
        Command::Publish(args) => publish::run(&state, args),
        Command::Openstack(args) => openstack::run(&state, args),
    }
}

/// Lock and load a network by name.
fn open(state: &StateDir, name: &str) -> Result<Network> {
    cloudpipe_core::config::check_name(name)
        .map_err(|r| anyhow::anyhow!("network name {name:?}: {r}"))?;
    Network::open(state.network_dir(name))
}

/// The server name the `openstack` command gives the appliance.
fn server_name(network: &str) -> String {
    format!("cloudpipe-{network}")
}

/// Shell-quote a word for printed commands.
fn sh(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
