//! `cloudpipe client ...`: add, list, show, revoke.

use super::network::status_text;
use super::{open, publish};
use crate::cli::ClientCmd;
use crate::model::{ClientFile, Network, Status};
use crate::qr;
use crate::state::{self, Batch, StateDir};
use anyhow::{bail, Context, Result};
use cloudpipe_core::client_config::ClientConfig;
use cloudpipe_core::config::check_name;
use cloudpipe_core::keys::{PresharedKey, PrivateKey};

pub fn run(state: &StateDir, cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::Add {
            network,
            name,
            output,
            qr: want_qr,
            qr_png,
        } => {
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
                    "the pool {}-{} of network {network:?} is full ({} addresses); revoke a client and publish, or create the network with more --clients",
                    config.pool.first(),
                    config.pool.last(),
                    config.pool.len()
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
            let mut b = Batch::new();
            net.save_client(&mut b, &client)?;
            let text =
                ClientConfig::for_network(&config, address, key, Some(psk), endpoint).render();
            net.clients.push(client);
            let hint = publish::hint(&net, &mut b)?;
            b.commit()?;
            emit(&text, output.as_deref(), want_qr, qr_png.as_deref()).with_context(|| {
                format!(
                    "client {name} was added with address {address}; print its config again with \
                     `cloudpipe client show {network} {name} --config`"
                )
            })?;
            eprintln!("added client {name} with address {address}");
            hint.iter().for_each(|l| eprintln!("{l}"));
            Ok(())
        }
        ClientCmd::List { network } => {
            let net = open(state, &network)?;
            for c in &net.clients {
                println!(
                    "{}\t{}\t{}\t{}",
                    c.name,
                    c.address,
                    c.public_key,
                    status_text(c.status)
                );
            }
            Ok(())
        }
        ClientCmd::Show {
            network,
            name,
            config,
        } => {
            let net = open(state, &network)?;
            let c = net.client(&name)?;
            if config {
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
                stdout(&text)?;
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
            let mut b = Batch::new();
            net.save_client(&mut b, &c)?;
            if let Some(slot) = net.clients.iter_mut().find(|x| x.name == name) {
                *slot = c;
            }
            let hint = publish::hint(&net, &mut b)?;
            b.commit()?;
            eprintln!("revoked client {name}");
            hint.iter().for_each(|l| eprintln!("{l}"));
            Ok(())
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

/// Print or write a client config (and its QR codes).
fn emit(
    text: &str,
    output: Option<&std::path::Path>,
    want_qr: bool,
    qr_png: Option<&std::path::Path>,
) -> Result<()> {
    if let Some(path) = qr_png {
        qr::png(text, path)?;
        eprintln!("wrote QR code to {}", path.display());
    }
    match output {
        Some(path) => {
            state::write_atomic(path, text.as_bytes(), 0o600)?;
            eprintln!("wrote config to {} (mode 0600)", path.display());
        }
        // With --qr the code replaces the text on standard output.
        None if !want_qr => stdout(text)?,
        None => {}
    }
    if want_qr {
        stdout(&qr::terminal(text)?)?;
    }
    Ok(())
}
