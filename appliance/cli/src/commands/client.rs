//! `cloudpipe client ...`: add, list, show, revoke.

use super::network::status_text;
use super::{count, open, publish, table};
use crate::cli::{ClientCmd, ConfigOutputs};
use crate::model::{ClientFile, Network, Status};
use crate::qr;
use crate::state::{self, StateDir};
use anyhow::{bail, Context, Result};
use cloudpipe_core::client_config::{self, ClientConfig};
use cloudpipe_core::config::check_name;
use cloudpipe_core::keys::{PresharedKey, PrivateKey};
use std::path::{Path, PathBuf};

pub fn run(state: &StateDir, cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::Add {
            network,
            name,
            output,
            to,
        } => {
            let outputs = Outputs { file: output, to };
            outputs.check(&[network.as_str()])?;
            let mut net = open(state, &network)?;
            check_name(&name).map_err(|r| anyhow::anyhow!("client name {name:?}: {r}"))?;
            match net.clients.iter().find(|c| c.name == name) {
                Some(c) if c.status != Status::Active => bail!(
                    "client {name:?} already exists in network {network:?} (revoked: a name \
                     is never reused, so its record stays; choose another name)"
                ),
                Some(_) => bail!("client {name:?} already exists in network {network:?}"),
                None => {}
            }
            let endpoint = endpoint(&net)?;
            let config = net.config()?;
            let address = config.pool.next_free(&net.used_addresses()).with_context(|| {
                format!(
                    "the pool {}-{} of network {network:?} is full ({}); revoke a client and publish, or create the network with more --clients",
                    config.pool.first(),
                    config.pool.last(),
                    count(config.pool.len() as usize, "address", "addresses")
                )
            })?;
            let key = PrivateKey::generate(&mut rand_core::OsRng);
            let psk = PresharedKey::generate(&mut rand_core::OsRng);
            let client = ClientFile {
                name: name.clone(),
                address,
                public_key: key.public_key().to_base64(),
                private_key: key.to_base64(),
                preshared_key: psk.to_base64(),
                status: Status::Active,
            };
            // Check the network with this client before keeping it.
            let mut peers = net.active_peers()?;
            peers.push(client.peer()?);
            net.config_with(&peers)?;
            net.save_client(&client)?;
            let text =
                ClientConfig::for_network(&config, address, key, Some(psk), endpoint).render();
            net.clients.push(client);
            outputs.emit(&text).with_context(|| {
                format!(
                    "client {name} was added with address {address}; print its config again with \
                     `cloudpipe client show {network} {name} --config`"
                )
            })?;
            eprintln!("added client {name} with address {address}");
            if outputs.file.is_none() && !outputs.to.qr {
                eprintln!(
                    "save the config as {}.conf: wg-quick and the WireGuard apps name the tunnel after the file",
                    client_config::suggested_interface_name(&[network.as_str()])
                );
            }
            publish::hint(&net)
        }
        ClientCmd::List { network } => {
            let net = open(state, &network)?;
            let rows: Vec<Vec<String>> = net
                .clients
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.address.to_string(),
                        status_text(c.status).to_string(),
                        c.public_key.clone(),
                    ]
                })
                .collect();
            if rows.is_empty() {
                eprintln!(
                    "no clients in network {network} yet: add one with `cloudpipe client add {network} NAME`"
                );
            } else {
                stdout(&table(&["NAME", "ADDRESS", "STATUS", "PUBLIC KEY"], &rows)?)?;
            }
            Ok(())
        }
        ClientCmd::Show {
            network,
            name,
            config,
            to,
        } => {
            let outputs = Outputs { file: None, to };
            outputs.check(&[network.as_str()])?;
            let net = open(state, &network)?;
            let c = net.client(&name)?;
            if config || outputs.to.qr || outputs.to.qr_png.is_some() {
                if c.status != Status::Active {
                    bail!("client {name:?} is revoked");
                }
                let text = ClientConfig::for_network(
                    &net.config()?,
                    c.address,
                    c.private_key()?,
                    Some(c.preshared_key()?),
                    endpoint(&net)?,
                )
                .render();
                outputs.emit(&text)?;
            } else {
                println!("name:       {}", c.name);
                println!("address:    {}", c.address);
                println!("public key: {}", c.public_key);
                println!("status:     {}", status_text(c.status));
                println!("appliance:  {}", appliance_view(&net, c)?);
            }
            Ok(())
        }
        ClientCmd::Revoke { network, name } => {
            let mut net = open(state, &network)?;
            let mut c = net.client(&name)?.clone();
            if c.status != Status::Active {
                bail!("client {name:?} is already revoked");
            }
            // Once a payload was printed, an appliance may run with this client (from
            // the payload, or from a published add, confirmed or not): the address
            // stays taken until `publish --done` says the revocation reached it.
            let may_be_running = net.baseline()?.is_some();
            c.status = Status::Revoked {
                released: !may_be_running,
            };
            net.save_client(&c)?;
            if let Some(slot) = net.clients.iter_mut().find(|x| x.name == name) {
                *slot = c;
            }
            eprintln!("revoked client {name}");
            publish::hint(&net)
        }
    }
}

/// What the running appliance knows of a client, as far as the CLI can tell.
fn appliance_view(net: &Network, c: &ClientFile) -> Result<&'static str> {
    let Some(baseline) = net.baseline()? else {
        return Ok("no payload printed yet: the client goes into the payload");
    };
    let booted = baseline.public_keys.contains(&c.public_key);
    let published = net
        .published_properties()?
        .values()
        .any(|v| v.contains(&c.public_key));
    Ok(match (c.status, booted, published) {
        (Status::Active, true, _) => "in the payload it booted with",
        (Status::Active, false, true) => "added since boot, published",
        (Status::Active, false, false) => "added since boot, not yet published (cloudpipe publish)",
        (Status::Revoked { released: true }, _, _) => "does not know it",
        (Status::Revoked { released: false }, _, _) => {
            "revocation not yet published (cloudpipe publish)"
        }
    })
}

fn endpoint(net: &Network) -> Result<String> {
    net.file.endpoint.clone().with_context(|| {
        format!(
            "network {:?} has no endpoint for clients to connect to: set it with `cloudpipe network set-endpoint {} HOST[:PORT]` (the floating IP)",
            net.name(),
            net.name()
        )
    })
}

/// Write to standard output, reporting failure (a full disk) instead of panicking.
fn stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

/// Where a client config goes: standard output, a file, QR codes.
struct Outputs {
    file: Option<PathBuf>,
    to: ConfigOutputs,
}

impl Outputs {
    /// Refuse, before anything changes, a config file name wg-quick cannot use, and
    /// to replace a file without --force.
    fn check(&self, networks: &[&str]) -> Result<()> {
        if let Some(path) = &self.file {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let usable = name
                .strip_suffix(".conf")
                .is_some_and(client_config::is_interface_name);
            if !usable {
                let dir = path.parent().map(|d| d.join("")).unwrap_or_default();
                bail!(
                    "--output {}: wg-quick and the WireGuard apps name the tunnel after the \
                     file, so it must be NAME.conf with NAME 1-{} characters of A-Z a-z 0-9 \
                     _ = + . - (e.g. {}{}.conf)",
                    path.display(),
                    client_config::MAX_INTERFACE_NAME,
                    dir.display(),
                    client_config::suggested_interface_name(networks)
                );
            }
        }
        for path in [&self.file, &self.to.qr_png].into_iter().flatten() {
            if !self.to.force && path.symlink_metadata().is_ok() {
                return Err(state::exists_error(path));
            }
        }
        Ok(())
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if self.to.force {
            state::write_atomic(path, bytes, 0o600)
        } else {
            state::write_new(path, bytes, 0o600)
        }
    }

    /// Print or write the config (and its QR codes).
    fn emit(&self, text: &str) -> Result<()> {
        if let Some(path) = &self.to.qr_png {
            self.write(path, &qr::png(text)?)?;
            eprintln!("wrote QR code to {}", path.display());
        }
        match &self.file {
            Some(path) => {
                self.write(path, text.as_bytes())?;
                eprintln!("wrote config to {} (mode 0600)", path.display());
            }
            // With --qr the code replaces the text on standard output.
            None if !self.to.qr => stdout(text)?,
            None => {}
        }
        if self.to.qr {
            stdout(&qr::terminal(text)?)?;
        }
        Ok(())
    }
}
