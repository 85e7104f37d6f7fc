//! `cloudpipe client ...`: add, list, show, revoke.
//!
//! A client is a name and a key pair, and may be a client of several networks: one
//! record per network (its address and preshared key there), the same key in each,
//! and one wg-quick config, one tunnel, with a `[Peer]` per appliance. Active records
//! with the same name and public key are the same client.

use super::network::status_text;
use super::{count, open, publish, table};
use crate::cli::{ClientCmd, ConfigOutputs};
use crate::model::{ClientFile, Network, Status};
use crate::qr;
use crate::state::{self, Batch, StateDir};
use anyhow::{bail, Context, Result};
use cloudpipe_core::client_config::{self, ClientConfig, Membership};
use cloudpipe_core::config::{check_name, Config};
use cloudpipe_core::keys::{PresharedKey, PrivateKey, PublicKey};
use cloudpipe_core::wg_quick;
use std::path::{Path, PathBuf};

pub fn run(state: &StateDir, cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::Add {
            network,
            name,
            public_key,
            output,
            to,
        } => add(
            state,
            &network,
            &name,
            public_key.as_deref(),
            Outputs { file: output, to },
        ),
        ClientCmd::List { network } => list(state, &network),
        ClientCmd::Show {
            network,
            name,
            config,
            to,
        } => {
            let outputs = Outputs { file: None, to };
            let want_config = config || outputs.to.qr || outputs.to.qr_png.is_some();
            show(state, &network, &name, want_config.then_some(outputs))
        }
        ClientCmd::Revoke { network, name } => revoke(state, &network, &name),
    }
}

/// `web,db`: the networks named, each once, in order.
fn parse_networks(arg: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for n in arg.split(',').map(str::trim) {
        check_name(n).map_err(|r| anyhow::anyhow!("network name {n:?}: {r}"))?;
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    Ok(out)
}

/// Every network of the state directory, locked, in name order: every command that
/// holds several network locks takes them in that order, so none waits for another
/// in a cycle. `needed` must exist and be readable;
/// another that cannot be read is skipped with a warning.
fn open_all(state: &StateDir, needed: &[String]) -> Result<Vec<Network>> {
    let names = state.networks()?;
    for n in needed {
        if !names.contains(n) {
            open(state, n)?; // the usual "no network" error
        }
    }
    let mut nets = Vec::new();
    for name in names {
        match Network::open(state.network_dir(&name)) {
            Ok(net) => nets.push(net),
            Err(e) if needed.contains(&name) => return Err(e),
            Err(e) => eprintln!("warning: network {name} skipped: {e:#}"),
        }
    }
    Ok(nets)
}

/// The active records of client `name` with public key `key`, in network order.
fn records<'a>(nets: &'a [Network], name: &str, key: &str) -> Vec<(&'a Network, &'a ClientFile)> {
    nets.iter()
        .filter_map(|n| {
            n.clients
                .iter()
                .find(|c| c.name == name && c.public_key == key && c.status == Status::Active)
                .map(|c| (n, c))
        })
        .collect()
}

/// Names of the networks of these records: `web and db`, `a, b and c`.
fn names(records: &[(&Network, &ClientFile)]) -> String {
    let v: Vec<&str> = records.iter().map(|(n, _)| n.name()).collect();
    match v.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// The one config of a client whose active records are `records`.
fn tunnel(records: &[(&Network, &ClientFile)]) -> Result<ClientConfig> {
    let configs: Vec<Config> = records
        .iter()
        .map(|(n, _)| n.config())
        .collect::<Result<_>>()?;
    let members = records
        .iter()
        .zip(&configs)
        .map(|((n, c), config)| {
            Ok(Membership {
                network: config,
                address: c.address,
                preshared_key: Some(c.preshared_key()?),
                endpoint: endpoint(n)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (_, first) = records.first().context("a client in no network")?;
    Ok(ClientConfig::for_networks(first.key()?, &members)?)
}

fn add(
    state: &StateDir,
    networks: &str,
    name: &str,
    device_key: Option<&str>,
    outputs: Outputs,
) -> Result<()> {
    let targets = parse_networks(networks)?;
    outputs.check(&targets)?;
    check_name(name).map_err(|r| anyhow::anyhow!("client name {name:?}: {r}"))?;
    let device_key = device_key
        .map(|k| {
            k.trim().parse::<PublicKey>().map_err(|e| {
                anyhow::anyhow!(
                    "--public-key {k:?}: {e}; expected a WireGuard public key, 44 characters of \
                     base64 (what `wg pubkey` prints)"
                )
            })
        })
        .transpose()?;
    if device_key.is_some() && (outputs.to.qr || outputs.to.qr_png.is_some()) {
        bail!(
            "--qr and --qr-png carry a whole config, private key included, and this client's \
             key stays on its device: give the user the printed config (address and [Peer]) \
             to complete in the app that made the key"
        );
    }
    // Adds are serialised across networks: the same name added to two networks at
    // once must get one key.
    let _global = state.lock()?;
    let mut nets = open_all(state, &targets)?;
    let index = |t: &str| {
        nets.iter()
            .position(|n| n.name() == t)
            .expect("opened above")
    };
    let target = |t: &str| &nets[index(t)];
    for t in &targets {
        match target(t).clients.iter().find(|c| c.name == name) {
            Some(c) if c.status != Status::Active => bail!(
                "client {name:?} already exists in network {t:?} (revoked: a name is never \
                 reused, so its record stays; choose another name)"
            ),
            Some(_) => bail!("client {name:?} already exists in network {t:?}"),
            None => {}
        }
    }

    // The same client in other networks keeps its one key pair.
    let elsewhere: Vec<&ClientFile> = nets
        .iter()
        .flat_map(|n| n.clients.iter())
        .filter(|c| c.name == name && c.status == Status::Active)
        .collect();
    let mut keys: Vec<&str> = elsewhere.iter().map(|c| c.public_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let (public, private) = match (keys.as_slice(), device_key) {
        ([], Some(k)) => (k.to_base64(), None),
        ([], None) => {
            let k = PrivateKey::generate(&mut rand_core::OsRng);
            (k.public_key().to_base64(), Some(k.to_base64()))
        }
        ([k], Some(d)) if *k != d.to_base64() => bail!(
            "client {name:?} is a client of {} with another key: one client has one key pair \
             (choose another name for this key)",
            names(&records(&nets, name, k))
        ),
        ([k], _) => (k.to_string(), elsewhere[0].private_key.clone()),
        _ => bail!(
            "client {name:?} has different keys in {}: they are different clients; choose \
             another name",
            nets.iter()
                .filter(|n| n.clients.iter().any(|c| c.name == name))
                .map(|n| n.name())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    };
    if let Some((n, c)) = nets
        .iter()
        .flat_map(|n| n.clients.iter().map(move |c| (n, c)))
        .find(|(_, c)| c.public_key == public && c.name != name)
    {
        bail!(
            "that public key is client {:?}'s in network {:?}: a key belongs to one client",
            c.name,
            n.name()
        );
    }

    let mut new: Vec<(usize, ClientFile)> = Vec::new();
    for t in &targets {
        let net = target(t);
        let config = net.config()?;
        let address = config
            .pool
            .next_free(&net.used_addresses())
            .with_context(|| {
                format!(
                    "the pool {}-{} of network {t:?} is full ({}); revoke a client and publish, \
                     or create the network with more --clients",
                    config.pool.first(),
                    config.pool.last(),
                    count(config.pool.len() as usize, "address", "addresses")
                )
            })?;
        let client = ClientFile {
            name: name.to_string(),
            address,
            public_key: public.clone(),
            private_key: private.clone(),
            preshared_key: PresharedKey::generate(&mut rand_core::OsRng).to_base64(),
            status: Status::Active,
        };
        // Check the network with this client before keeping it.
        let mut peers = net.active_peers()?;
        peers.push(client.peer()?);
        net.config_with(&peers)?;
        new.push((index(t), client));
    }
    // The whole tunnel (networks it had and the new ones) is checked, and its QR
    // codes made, before anything is kept.
    let rendered = {
        let mut all = records(&nets, name, &public);
        all.extend(new.iter().map(|(i, c)| (&nets[*i], c)));
        all.sort_by(|a, b| a.0.name().cmp(b.0.name()));
        outputs.render(tunnel(&all)?.render())?
    };
    // Every network's new record and printed property keys, all kept or none (a
    // full disk changes nothing).
    let mut b = Batch::new();
    for (i, c) in &new {
        nets[*i].save_client(&mut b, c)?;
        nets[*i].clients.push(c.clone());
    }
    let mut hints = Vec::new();
    for (i, _) in &new {
        hints.extend(publish::hint(&nets[*i], &mut b)?);
    }
    b.commit()?;
    let all = records(&nets, name, &public);

    let first = &new[0].1;
    let again = format!("`cloudpipe client show {} {name} --config`", targets[0]);
    outputs.emit(&rendered).with_context(|| {
        format!(
            "client {name} was added with address {}; print its config again with {again}",
            first.address
        )
    })?;
    if new.len() == 1 {
        eprintln!("added client {name} with address {}", first.address);
    } else {
        let each: Vec<String> = new
            .iter()
            .map(|(i, c)| format!("{} ({})", nets[*i].name(), c.address))
            .collect();
        eprintln!("added client {name} to {}", each.join(", "));
    }
    if all.len() > new.len() {
        eprintln!(
            "{name} is a client of {} with one key: this config, one tunnel to all of them, \
             replaces the one {name} had",
            names(&all)
        );
    }
    if device_key.is_some() {
        eprintln!(
            "{name}'s private key stays on the device that made it: the config has a \
             placeholder for it (or enter its address and [Peer] in that device's WireGuard app)"
        );
    }
    if outputs.file.is_none() && !outputs.to.qr {
        let networks: Vec<&str> = all.iter().map(|(n, _)| n.name()).collect();
        eprintln!(
            "save the config as {}.conf: wg-quick and the WireGuard apps name the tunnel after the file",
            client_config::suggested_interface_name(&networks)
        );
    }
    hints.iter().for_each(|l| eprintln!("{l}"));
    Ok(())
}

fn list(state: &StateDir, network: &str) -> Result<()> {
    // Which networks each client is in needs them all (locked in name order).
    let nets = open_all(state, &[network.to_string()])?;
    let net = nets.iter().find(|n| n.name() == network).expect("opened");
    let rows: Vec<Vec<String>> = net
        .clients
        .iter()
        .map(|c| {
            let member: Vec<&str> = records(&nets, &c.name, &c.public_key)
                .iter()
                .map(|(n, _)| n.name())
                .collect();
            vec![
                c.name.clone(),
                c.address.to_string(),
                status_text(c.status).to_string(),
                if member.is_empty() {
                    "-".to_string()
                } else {
                    member.join(",")
                },
                c.public_key.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!(
            "no clients in network {network} yet: add one with `cloudpipe client add {network} NAME`"
        );
        return Ok(());
    }
    stdout(&table(
        &["NAME", "ADDRESS", "STATUS", "NETWORKS", "PUBLIC KEY"],
        &rows,
    )?)
}

fn show(state: &StateDir, network: &str, name: &str, config: Option<Outputs>) -> Result<()> {
    if let Some(outputs) = &config {
        outputs.check(&[network.to_string()])?;
    }
    check_name(network).map_err(|r| anyhow::anyhow!("network name {network:?}: {r}"))?;
    let nets = open_all(state, &[network.to_string()])?;
    let net = nets.iter().find(|n| n.name() == network).expect("opened");
    let c = net.client(name)?;
    let all = records(&nets, name, &c.public_key);
    match config {
        Some(outputs) => {
            if c.status != Status::Active {
                bail!("client {name:?} is revoked in network {network:?}");
            }
            outputs.emit(&outputs.render(tunnel(&all)?.render())?)
        }
        None => {
            println!("name:       {}", c.name);
            println!("address:    {}", c.address);
            println!("public key: {}", c.public_key);
            println!("status:     {}", status_text(c.status));
            println!("appliance:  {}", appliance_view(net, c)?);
            let each: Vec<String> = all
                .iter()
                .map(|(n, c)| format!("{} ({})", n.name(), c.address))
                .collect();
            println!(
                "networks:   {}",
                if each.is_empty() {
                    "none (revoked everywhere)".to_string()
                } else {
                    each.join(", ")
                }
            );
            if c.private_key.is_none() {
                println!("key:        made on the client's device (the CLI never had it)");
            }
            Ok(())
        }
    }
}

fn revoke(state: &StateDir, network: &str, name: &str) -> Result<()> {
    let mut net = open(state, network)?;
    let mut c = net.client(name)?.clone();
    if c.status != Status::Active {
        bail!("client {name:?} is already revoked");
    }
    // Once a payload was printed, an appliance may run with this client (from the
    // payload, or from a published add, confirmed or not): the address stays taken
    // until `publish --done` says the revocation reached it.
    let may_be_running = net.baseline()?.is_some();
    c.status = Status::Revoked {
        released: !may_be_running,
    };
    let mut b = Batch::new();
    net.save_client(&mut b, &c)?;
    if let Some(slot) = net.clients.iter_mut().find(|x| x.name == name) {
        *slot = c.clone();
    }
    let hint = publish::hint(&net, &mut b)?;
    b.commit()?;
    eprintln!("revoked client {name} in network {network}");
    hint.iter().for_each(|l| eprintln!("{l}"));
    drop(net);
    // The same client elsewhere is untouched. Each network is locked in turn, with
    // this one's lock released: a command never holds one lock while it waits for
    // another out of name order.
    let still: Vec<String> = state
        .networks()?
        .into_iter()
        .filter(|n| n != network)
        .filter(|n| {
            Network::open(state.network_dir(n)).is_ok_and(|o| {
                o.clients.iter().any(|x| {
                    x.name == name && x.public_key == c.public_key && x.status == Status::Active
                })
            })
        })
        .collect();
    if !still.is_empty() {
        eprintln!(
            "{name} stays a client of {}: that part of the tunnel keeps working; the config \
             without {network} is `cloudpipe client show {} {name} --config`",
            still.join(", "),
            still[0]
        );
    }
    Ok(())
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

/// A config with the QR codes asked for, made before anything is kept: a config too
/// long for a QR code is refused without adding the client.
struct Rendered {
    text: String,
    png: Option<Vec<u8>>,
    terminal: Option<(String, usize)>,
}

impl Outputs {
    /// Refuse, before anything changes, a config file name wg-quick cannot use, and
    /// to replace a file without --force.
    fn check(&self, networks: &[String]) -> Result<()> {
        if let Some(path) = &self.file {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let usable = name.ends_with(".conf") && wg_quick::interface_name(&name).is_ok();
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

    fn render(&self, text: String) -> Result<Rendered> {
        let png = self
            .to
            .qr_png
            .as_ref()
            .map(|_| qr::png(&text))
            .transpose()?;
        let terminal = if self.to.qr {
            Some((qr::terminal(&text)?, qr::terminal_width(&text)?))
        } else {
            None
        };
        Ok(Rendered {
            text,
            png,
            terminal,
        })
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if self.to.force {
            state::write_atomic(path, bytes, 0o600)
        } else {
            state::write_new(path, bytes, 0o600)
        }
    }

    /// Print or write the config (and its QR codes).
    fn emit(&self, r: &Rendered) -> Result<()> {
        if let (Some(path), Some(png)) = (&self.to.qr_png, &r.png) {
            self.write(path, png)?;
            eprintln!("wrote QR code to {}", path.display());
        }
        match &self.file {
            Some(path) => {
                self.write(path, r.text.as_bytes())?;
                eprintln!("wrote config to {} (mode 0600)", path.display());
            }
            // With --qr the code replaces the text on standard output; with --qr-png
            // the PNG is the config asked for, and the text (with its private key)
            // stays off the terminal.
            None if r.terminal.is_none() && self.to.qr_png.is_none() => stdout(&r.text)?,
            None => {}
        }
        if let Some((code, width)) = &r.terminal {
            if let Some(columns) = terminal_columns().filter(|c| c < width) {
                eprintln!(
                    "the QR code is {width} columns wide and this terminal {columns}: widen it \
                     (or zoom out) to scan it, or use --qr-png FILE"
                );
            }
            stdout(code)?;
        }
        Ok(())
    }
}

/// Columns of the terminal on standard output, if it is one.
fn terminal_columns() -> Option<usize> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let r = unsafe { nix::libc::ioctl(nix::libc::STDOUT_FILENO, nix::libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}
