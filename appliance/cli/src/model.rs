//! A network as the CLI stores it, and what is derived from it: the checked
//! configuration the payload carries, the addresses in use, the instance properties
//! that publish client changes to a running appliance.

use crate::state::{self, Lock};
use anyhow::{Context, Result};
use cloudpipe_core::config::{Config, ConfigFile, Mode, Peer, PeerFile, PoolFile, FORMAT_VERSION};
use cloudpipe_core::keys::{PresharedKey, PrivateKey, PublicKey};
use cloudpipe_core::overlay::Overlay;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `network.json`: everything but the server's private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub name: String,
    pub cidr: String,
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
    pub pool: PoolFile,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub mode: Mode,
    pub client_to_client: bool,
    pub mtu: u16,
    pub listen_port: u16,
    /// `host:port` clients connect to (the floating IP).
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Active,
    /// Revoked; the address returns to the pool once the revocation is published.
    Revoked {
        released: bool,
    },
}

/// `clients/NAME.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub name: String,
    pub address: Ipv4Addr,
    pub public_key: String,
    /// Kept so `client show --config` can print the config again (file mode 0600).
    pub private_key: String,
    pub preshared_key: String,
    pub status: Status,
}

impl ClientFile {
    pub fn peer(&self) -> Result<Peer> {
        Ok(Peer {
            name: self.name.clone(),
            public_key: self.public_key.parse().context("client public key")?,
            preshared_key: Some(self.preshared_key.parse().context("client preshared key")?),
            address: self.address,
        })
    }
    pub fn private_key(&self) -> Result<PrivateKey> {
        self.private_key.parse().context("client private key")
    }
    pub fn preshared_key(&self) -> Result<PresharedKey> {
        self.preshared_key.parse().context("client preshared key")
    }
    pub fn holds_address(&self) -> bool {
        !matches!(self.status, Status::Revoked { released: true })
    }
}

/// `baseline.json`: the clients the appliance booted with.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub public_keys: BTreeSet<String>,
}

pub struct Network {
    pub dir: PathBuf,
    pub file: NetworkFile,
    pub server_key: PrivateKey,
    pub clients: Vec<ClientFile>,
    _lock: Lock,
}

/// The payload's configuration for a stored network with `peers`, checked.
pub fn build_config(f: &NetworkFile, server_key: &PrivateKey, peers: &[Peer]) -> Result<Config> {
    let file = ConfigFile {
        version: FORMAT_VERSION,
        network: f.name.clone(),
        cidr: f.cidr.clone(),
        gateway: Some(f.gateway),
        address: Some(f.address),
        interface: None,
        mtu: Some(f.mtu),
        tenant_mtu: None,
        listen_port: Some(f.listen_port),
        pool: Some(f.pool),
        routes: f.routes.clone(),
        dns: f.dns.clone(),
        mode: f.mode,
        client_to_client: f.client_to_client,
        private_key: server_key.to_base64(),
        peers: peers
            .iter()
            .map(|p| PeerFile {
                name: p.name.clone(),
                public_key: p.public_key.to_base64(),
                preshared_key: p.preshared_key.as_ref().map(|k| k.to_base64()),
                address: p.address,
            })
            .collect(),
    };
    Ok(Config::try_from(file)?)
}

pub fn server_key_path(dir: &Path) -> PathBuf {
    dir.join("server.key")
}

impl Network {
    /// Lock and load a network.
    pub fn open(dir: PathBuf) -> Result<Self> {
        let lock = state::lock_network(&dir)?;
        Self::load(dir, lock)
    }

    pub fn load(dir: PathBuf, lock: Lock) -> Result<Self> {
        let file: NetworkFile = state::read_json(&dir.join("network.json"))?;
        let key_text =
            std::fs::read_to_string(server_key_path(&dir)).context("reading server.key")?;
        let server_key = key_text.trim().parse().context("server.key")?;
        let mut clients = Vec::new();
        let cdir = dir.join("clients");
        if cdir.exists() {
            for e in std::fs::read_dir(&cdir)? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "json") {
                    clients.push(state::read_json::<ClientFile>(&p)?);
                }
            }
        }
        clients.sort_by_key(|c| u32::from(c.address));
        Ok(Network {
            dir,
            file,
            server_key,
            clients,
            _lock: lock,
        })
    }

    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// The checked configuration with the given peers.
    pub fn config_with(&self, peers: &[Peer]) -> Result<Config> {
        build_config(&self.file, &self.server_key, peers)
    }

    pub fn active_peers(&self) -> Result<Vec<Peer>> {
        self.clients
            .iter()
            .filter(|c| c.status == Status::Active)
            .map(ClientFile::peer)
            .collect()
    }

    /// The configuration the payload carries: the network with its active clients.
    pub fn config(&self) -> Result<Config> {
        self.config_with(&self.active_peers()?)
    }

    pub fn used_addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.clients
            .iter()
            .filter(|c| c.holds_address())
            .map(|c| c.address)
            .collect()
    }

    pub fn client(&self, name: &str) -> Result<&ClientFile> {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("no client {name:?} in network {:?}", self.name()))
    }

    pub fn save_client(&self, c: &ClientFile) -> Result<()> {
        let dir = self.dir.join("clients");
        state::create_dir(&dir)?;
        state::write_json(&dir.join(format!("{}.json", c.name)), c, 0o600)
    }

    pub fn baseline(&self) -> Result<Option<Baseline>> {
        state::read_json_opt(&self.dir.join("baseline.json"))
    }

    pub fn set_baseline(&self, peers: &[Peer]) -> Result<()> {
        let b = Baseline {
            public_keys: peers.iter().map(|p| p.public_key.to_base64()).collect(),
        };
        state::write_json(&self.dir.join("baseline.json"), &b, 0o600)
    }

    /// The properties that take the booted appliance to the current clients; empty
    /// when no payload was printed yet.
    pub fn desired_properties(&self) -> Result<BTreeMap<String, String>> {
        let Some(baseline) = self.baseline()? else {
            return Ok(BTreeMap::new());
        };
        let booted: Vec<Peer> = self
            .clients
            .iter()
            .filter(|c| baseline.public_keys.contains(&c.public_key))
            .map(ClientFile::peer)
            .collect::<Result<_>>()?;
        Ok(Overlay::between(&booted, &self.active_peers()?).to_properties()?)
    }

    pub fn published_properties(&self) -> Result<BTreeMap<String, String>> {
        Ok(state::read_json_opt(&self.dir.join("published.json"))?.unwrap_or_default())
    }

    pub fn set_published_properties(&self, props: &BTreeMap<String, String>) -> Result<()> {
        state::write_json(&self.dir.join("published.json"), props, 0o600)
    }

    /// Property keys whose `set` commands were printed since the last `publish
    /// --done` (the operator may have run them without confirming).
    pub fn printed_keys(&self) -> Result<BTreeSet<String>> {
        Ok(state::read_json_opt(&self.dir.join("printed.json"))?.unwrap_or_default())
    }

    pub fn set_printed_keys(&self, keys: &BTreeSet<String>) -> Result<()> {
        state::write_json(&self.dir.join("printed.json"), keys, 0o600)
    }

    pub fn server_public_key(&self) -> PublicKey {
        self.server_key.public_key()
    }
}
