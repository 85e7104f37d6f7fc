//! A network as the CLI stores it, and what is derived from it: the checked
//! configuration the payload carries, the addresses in use, the instance properties
//! that publish client changes to a running appliance.

use crate::state::{self, Batch, Lock};
use anyhow::{Context, Result};
use cloudpipe_core::client_config::ClientKey;
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
    /// The tunnel MTU: clients' `MTU =` and the appliance's ceiling.
    pub mtu: u16,
    /// The tenant network's MTU the tunnel MTU was derived from (`network create
    /// --mtu`); absent in networks created before it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_mtu: Option<u16>,
    pub listen_port: u16,
    /// `host:port` clients connect to (the floating IP).
    pub endpoint: Option<String>,
    /// TCP port of the appliance's status and metrics listener (none: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u16>,
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
    /// Kept so `client show --config` can print the config again (file mode 0600);
    /// none when the key was made on the user's device (`client add --public-key`).
    /// The same for every network the client is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
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
    /// The client's key: held here, or only the public half of one on its device.
    pub fn key(&self) -> Result<ClientKey> {
        Ok(match &self.private_key {
            Some(k) => ClientKey::Private(k.parse().context("client private key")?),
            None => ClientKey::OnDevice(self.public_key.parse().context("client public key")?),
        })
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
        endpoint: f.endpoint.clone(),
        status_port: f.status_port,
        private_key: server_key.to_base64(),
        peers: peers.iter().map(PeerFile::from).collect(),
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

    /// Stage `c`'s file in `b` (see [`Batch`]: written with the batch's other files
    /// or not at all).
    pub fn save_client(&self, b: &mut Batch, c: &ClientFile) -> Result<()> {
        let dir = self.dir.join("clients");
        state::create_dir(&dir)?;
        b.write_json(&dir.join(format!("{}.json", c.name)), c, 0o600)
    }

    pub fn baseline(&self) -> Result<Option<Baseline>> {
        state::read_json_opt(&self.dir.join("baseline.json"))
    }

    pub fn set_baseline(&self, b: &mut Batch, peers: &[Peer]) -> Result<()> {
        let baseline = Baseline {
            public_keys: peers.iter().map(|p| p.public_key.to_base64()).collect(),
        };
        b.write_json(&self.dir.join("baseline.json"), &baseline, 0o600)
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

    pub fn set_published_properties(
        &self,
        b: &mut Batch,
        props: &BTreeMap<String, String>,
    ) -> Result<()> {
        b.write_json(&self.dir.join("published.json"), props, 0o600)
    }

    /// Property keys whose `set` commands were printed since the last `publish
    /// --done` (the operator may have run them without confirming).
    pub fn printed_keys(&self) -> Result<BTreeSet<String>> {
        Ok(state::read_json_opt(&self.dir.join("printed.json"))?.unwrap_or_default())
    }

    pub fn set_printed_keys(&self, b: &mut Batch, keys: &BTreeSet<String>) -> Result<()> {
        b.write_json(&self.dir.join("printed.json"), keys, 0o600)
    }

    pub fn server_public_key(&self) -> PublicKey {
        self.server_key.public_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudpipe_core::overlay::Overlay;

    struct Temp(PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key(b: u8) -> PrivateKey {
        PrivateKey::from_bytes([b; 32])
    }

    fn client(b: u8, name: &str, last: u8, status: Status) -> ClientFile {
        ClientFile {
            name: name.into(),
            address: Ipv4Addr::new(10, 0, 0, last),
            public_key: key(b).public_key().to_base64(),
            private_key: Some(key(b).to_base64()),
            preshared_key: PresharedKey::from_bytes([b; 32]).to_base64(),
            status,
        }
    }

    /// A stored network with clients a (.250, active), b (.251, revoked, address
    /// held) and c (.252, revoked, released).
    fn network(tag: &str) -> (Temp, Network) {
        let root = std::env::temp_dir().join(format!("cp-model-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("n");
        state::create_dir(&root).unwrap();
        let file = NetworkFile {
            name: "n".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            address: Ipv4Addr::new(10, 0, 0, 2),
            pool: PoolFile {
                first: Ipv4Addr::new(10, 0, 0, 250),
                last: Ipv4Addr::new(10, 0, 0, 254),
            },
            routes: vec![],
            dns: vec![],
            mode: Mode::ProxyArp,
            client_to_client: false,
            mtu: 1420,
            tenant_mtu: None,
            listen_port: 1194,
            endpoint: None,
            status_port: None,
        };
        state::create_dir_atomic(&dir, |d| {
            state::write_atomic(&server_key_path(d), key(1).to_base64().as_bytes(), 0o600)?;
            state::write_json(&d.join("network.json"), &file, 0o600)
        })
        .unwrap();
        let net = Network::open(dir.clone()).unwrap();
        let mut b = Batch::new();
        for c in [
            client(2, "a", 250, Status::Active),
            client(3, "b", 251, Status::Revoked { released: false }),
            client(4, "c", 252, Status::Revoked { released: true }),
        ] {
            net.save_client(&mut b, &c).unwrap();
        }
        b.commit().unwrap();
        drop(net);
        let net = Network::open(dir).unwrap();
        (Temp(root), net)
    }

    #[test]
    fn loads_what_was_saved_in_address_order() {
        let (_t, net) = network("load");
        let names: Vec<_> = net.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(net.server_public_key(), key(1).public_key());
        assert_eq!(
            net.client("b").unwrap().address,
            Ipv4Addr::new(10, 0, 0, 251)
        );
        assert!(net
            .client("z")
            .unwrap_err()
            .to_string()
            .contains("no client"));
    }

    #[test]
    fn held_addresses_are_in_use_and_only_active_clients_are_peers() {
        let (_t, net) = network("used");
        let used: Vec<_> = net.used_addresses().into_iter().collect();
        assert_eq!(
            used,
            [Ipv4Addr::new(10, 0, 0, 250), Ipv4Addr::new(10, 0, 0, 251)]
        );
        let config = net.config().unwrap();
        assert_eq!(config.peers.len(), 1);
        assert_eq!(config.peers[0].name, "a");
        assert_eq!(
            config.pool.next_free(&net.used_addresses()),
            Some(Ipv4Addr::new(10, 0, 0, 252))
        );
    }

    #[test]
    fn desired_properties_are_the_overlay_since_the_baseline() {
        let (_t, net) = network("props");
        assert!(net.desired_properties().unwrap().is_empty(), "no baseline");
        // Booted with a and b; b is revoked since, d added since.
        let booted = vec![
            net.client("a").unwrap().peer().unwrap(),
            net.client("b").unwrap().peer().unwrap(),
        ];
        let mut b = Batch::new();
        net.set_baseline(&mut b, &booted).unwrap();
        net.save_client(&mut b, &client(5, "d", 253, Status::Active))
            .unwrap();
        b.commit().unwrap();
        let dir = net.dir.clone();
        drop(net);
        let net = Network::open(dir).unwrap();
        let props = net.desired_properties().unwrap();
        let back =
            Overlay::from_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(
            back.added
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["d"]
        );
        assert_eq!(
            back.revoked.into_iter().collect::<Vec<_>>(),
            [key(3).public_key()]
        );
    }

    #[test]
    fn secrets_are_stored_0600() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, net) = network("modes");
        for f in ["server.key", "network.json", "clients/a.json"] {
            let m = std::fs::metadata(net.dir.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, 0o600, "{f}");
        }
    }
}
