//! `cloudpipe payload NETWORK` and `cloudpipe payload inspect FILE`.

use super::{count, open, read_payload, release_revoked};
use crate::cli::{PayloadArgs, PayloadCmd};
use crate::state::{Batch, StateDir};
use anyhow::{bail, Context, Result};
use cloudpipe_core::config::{Config, ConfigFile, Peer};
use cloudpipe_core::payload::{self, Encoding, Payload, PayloadError, MAX_USER_DATA};
use std::io::{IsTerminal, Write};

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
    // The appliance booted from this payload knows exactly these clients; revoked
    // ones it does not know hold no address any more, and its properties start empty.
    // Recorded with the payload's file, or once the payload is out on standard
    // output: all of it or nothing.
    let mut b = Batch::new();
    if let Some(path) = &args.output {
        b.write(path, &bytes, 0o600)?;
    }
    net.set_baseline(&mut b, &peers)?;
    net.set_published_properties(&mut b, &Default::default())?;
    net.set_printed_keys(&mut b, &Default::default())?;
    for i in release_revoked(&mut net) {
        net.save_client(&mut b, &net.clients[i])?;
    }
    if args.output.is_none() {
        // Flushed here, so that a payload that did not get out is not recorded.
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .context("writing the payload to standard output")?;
    }
    b.commit()?;
    eprintln!(
        "payload for {network}: {}, {} bytes as Nova user-data (limit {MAX_USER_DATA}); launching with it makes these clients the appliance's baseline",
        count(peers.len(), "client", "clients"),
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

pub fn inspect(file: &std::path::Path) -> Result<()> {
    let bytes = read_payload(file)?;
    let valid = match payload::decode(&bytes) {
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
        Ok(Payload::Cloudpipe(config)) => Ok(config),
        Err(PayloadError::Config(e)) => Err(e),
        Err(e) => bail!("{}: {e}", file.display()),
    };
    let mut f = payload::decode_file(&bytes)??;
    redact(&mut f);
    println!("{}", serde_json::to_string_pretty(&f)?);
    match valid {
        Ok(config) => {
            println!(
                "valid: yes ({}; server public key {})",
                count(config.peers.len(), "client", "clients"),
                config.private_key.public_key()
            );
            Ok(())
        }
        Err(e) => {
            println!("valid: no ({e})");
            bail!("the payload decodes but is not valid: {e}")
        }
    }
}

/// Replace every secret of a config file by `<redacted>`.
fn redact(f: &mut ConfigFile) {
    const REDACTED: &str = "<redacted>";
    f.private_key = REDACTED.into();
    for p in &mut f.peers {
        if p.preshared_key.is_some() {
            p.preshared_key = Some(REDACTED.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudpipe_core::config::{PeerFile, PoolFile};
    use cloudpipe_core::keys::{PresharedKey, PrivateKey};

    fn config(clients: u32) -> Config {
        let subnet = "10.0.0.0/16";
        let key = |i: u32| {
            let mut b = [7u8; 32];
            b[1..5].copy_from_slice(&i.to_le_bytes()); // byte 0 is clamped
            PrivateKey::from_bytes(b)
        };
        let file = ConfigFile {
            pool: Some(PoolFile {
                first: "10.0.1.0".parse().unwrap(),
                last: "10.0.255.254".parse().unwrap(),
            }),
            peers: (0..clients)
                .map(|i| PeerFile {
                    name: format!("c{i}"),
                    public_key: key(i).public_key().to_base64(),
                    preshared_key: Some(
                        PresharedKey::from_bytes(*key(i + 1_000_000).public_key().as_bytes())
                            .to_base64(),
                    ),
                    address: std::net::Ipv4Addr::from(u32::from_be_bytes([10, 0, 1, 0]) + i),
                })
                .collect(),
            ..ConfigFile::new("n", subnet, &key(u32::MAX))
        };
        Config::try_from(file).unwrap()
    }

    #[test]
    fn clients_that_fit_is_the_largest_prefix_under_novas_limit() {
        let c = config(700);
        let n = clients_that_fit(&c, &c.peers);
        assert!(n > 0 && n < 700, "{n}");
        let with = |k: usize| Config {
            peers: c.peers[..k].to_vec(),
            ..c.clone()
        };
        assert!(payload::nova_size(&with(n)) <= MAX_USER_DATA);
        assert!(payload::nova_size(&with(n + 1)) > MAX_USER_DATA);
        let small = config(3);
        assert_eq!(clients_that_fit(&small, &small.peers), 3);
    }

    #[test]
    fn redaction_leaves_no_secret() {
        let c = config(2);
        let mut f = c.to_file();
        redact(&mut f);
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains(&c.private_key.to_base64()));
        for p in &c.peers {
            let psk = p.preshared_key.as_ref().unwrap().to_base64();
            assert!(!text.contains(&psk));
            assert!(text.contains(&p.public_key.to_base64()), "public keys stay");
        }
    }
}
