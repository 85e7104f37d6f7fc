//! `cloudpipe payload NETWORK` and `cloudpipe payload inspect FILE`.

use super::open;
use crate::cli::{PayloadArgs, PayloadCmd};
use crate::model::Status;
use crate::state::{self, StateDir};
use anyhow::{bail, Context, Result};
use cloudpipe_core::config::{Config, Peer};
use cloudpipe_core::payload::{self, Encoding, Payload, PayloadError, MAX_USER_DATA};
use std::io::{IsTerminal, Read, Write};

pub fn run(state: &StateDir, args: PayloadArgs) -> Result<()> {
    if let Some(PayloadCmd::Inspect { file }) = args.inspect {
        return inspect(&file);
    }
    let Some(network) = args.network else {
        bail!(
            "name a network (`cloudpipe payload NETWORK`) or use `cloudpipe payload inspect FILE`"
        );
    };
    let mut net = open(state, &network)?;
    let peers = net.active_peers()?;
    let config = net.config_with(&peers)?;
    let bytes = match payload::encode(&config, args.encoding) {
        Ok(b) => b,
        Err(PayloadError::TooLarge { len, max }) => {
            bail!(
                "the payload would be {len} bytes as Nova user-data, over Nova's {max}; about {} of the {} active clients fit: \
                 revoke clients or split them across networks",
                clients_that_fit(&config, &peers),
                peers.len()
            )
        }
        Err(e) => return Err(e.into()),
    };
    if args.encoding == Encoding::Zip && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("the zip encoding is binary: use --output FILE");
    }
    match &args.output {
        Some(path) => state::write_atomic(path, &bytes, 0o600)?,
        None => std::io::stdout().write_all(&bytes)?,
    }
    // The appliance booted from this payload knows exactly these clients; revoked
    // ones it does not know hold no address any more, and its properties start empty.
    net.set_baseline(&peers)?;
    net.set_published_properties(&Default::default())?;
    for c in net.clients.iter_mut() {
        if c.status == (Status::Revoked { released: false }) {
            c.status = Status::Revoked { released: true };
        }
    }
    for c in &net.clients {
        net.save_client(c)?;
    }
    eprintln!(
        "payload for {network}: {} clients, {} bytes as Nova user-data (limit {MAX_USER_DATA}); launching with it makes these clients the appliance's baseline",
        peers.len(),
        payload::nova_size(&config)
    );
    Ok(())
}

/// How many of `peers` fit in Nova's limit (the largest prefix that fits).
fn clients_that_fit(config: &Config, peers: &[Peer]) -> usize {
    let fits = |n: usize| {
        let c = Config {
            peers: peers[..n].to_vec(),
            ..config.clone()
        };
        payload::nova_size(&c) <= MAX_USER_DATA
    };
    let (mut lo, mut hi) = (0, peers.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn inspect(file: &std::path::Path) -> Result<()> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(payload::MAX_INPUT as u64 + 1)
            .read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("opening {}", file.display()))?
            .take(payload::MAX_INPUT as u64 + 1)
            .read_to_end(&mut bytes)?;
    }
    match payload::decode(&bytes) {
        Ok(Payload::Nova(n)) => {
            println!("a Nova (OpenVPN) cloudpipe payload");
            println!(
                "clients: {}",
                n.clients.map_or("unknown".into(), |c| c.to_string())
            );
            let routes: Vec<String> = n.routes.iter().map(|r| r.to_string()).collect();
            println!("routes:  {}", routes.join(", "));
            println!("{}", n.migration_hint());
            return Ok(());
        }
        Ok(Payload::Cloudpipe(_)) => {}
        Err(PayloadError::Config(e)) => eprintln!("the payload decodes but is not valid: {e}"),
        Err(e) => bail!("{}: {e}", file.display()),
    }
    let mut f = payload::decode_file(&bytes)??;
    f.private_key = "<redacted>".into();
    for p in &mut f.peers {
        if p.preshared_key.is_some() {
            p.preshared_key = Some("<redacted>".into());
        }
    }
    println!("{}", serde_json::to_string_pretty(&f)?);
    Ok(())
}
