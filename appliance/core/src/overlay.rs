//! The metadata overlay: clients added and revoked on a running appliance.
//!
//! User-data cannot change after boot, but instance properties can
//! (`openstack server set --property k=v` changes `meta` in
//! `/openstack/latest/meta_data.json`). The CLI publishes the difference between the
//! booted payload and the network's current clients as properties; the daemon polls
//! them and applies [`Overlay::apply`] to the payload's peers.
//!
//! Properties (format v1, docs/payload.md), each value at most 255 characters:
//! - `cloudpipe-add-N`    = `v1 NAME PUBLIC_KEY PRESHARED_KEY|- ADDRESS` (one client);
//! - `cloudpipe-revoke-N` = `v1 PUBLIC_KEY [PUBLIC_KEY ...]` (up to five keys).
//!
//! Properties without the `cloudpipe-` prefix belong to someone else and are ignored.

use crate::config::{check_name, Config, ConfigError, Peer};
use crate::keys::PublicKey;
use std::collections::{BTreeMap, BTreeSet};

pub const KEY_PREFIX: &str = "cloudpipe-";
const ADD_PREFIX: &str = "cloudpipe-add-";
const REVOKE_PREFIX: &str = "cloudpipe-revoke-";
const VERSION_TAG: &str = "v1";
/// Nova's limit on a property value.
pub const MAX_VALUE_LEN: usize = 255;
/// Nova's default quota of metadata items per instance.
pub const MAX_ITEMS: usize = 128;
/// Keys per revoke property: "v1" + 5 x (1 + 44) = 227 characters.
const KEYS_PER_REVOKE: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    #[error("metadata property {key}: {reason}")]
    Malformed { key: String, reason: String },
    #[error("the overlay needs {0} metadata items, more than Nova's {MAX_ITEMS}: rebuild the payload and relaunch")]
    TooManyItems(usize),
}

/// Clients added since the payload was built, and payload clients revoked since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    pub added: Vec<Peer>,
    pub revoked: BTreeSet<PublicKey>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.revoked.is_empty()
    }

    /// The properties that publish this overlay.
    pub fn to_properties(&self) -> Result<BTreeMap<String, String>, OverlayError> {
        let mut out = BTreeMap::new();
        for (i, p) in self.added.iter().enumerate() {
            let psk = p
                .preshared_key
                .as_ref()
                .map_or("-".to_string(), |k| k.to_base64());
            let value = format!(
                "{VERSION_TAG} {} {} {psk} {}",
                p.name, p.public_key, p.address
            );
            debug_assert!(value.len() <= MAX_VALUE_LEN);
            out.insert(format!("{ADD_PREFIX}{i}"), value);
        }
        let keys: Vec<_> = self.revoked.iter().collect();
        for (i, chunk) in keys.chunks(KEYS_PER_REVOKE).enumerate() {
            let mut value = VERSION_TAG.to_string();
            for k in chunk {
                value.push(' ');
                value.push_str(&k.to_base64());
            }
            out.insert(format!("{REVOKE_PREFIX}{i}"), value);
        }
        if out.len() > MAX_ITEMS {
            return Err(OverlayError::TooManyItems(out.len()));
        }
        Ok(out)
    }

    /// Read the overlay out of an instance's `meta` map. Any malformed cloudpipe
    /// property rejects the whole overlay, so the appliance keeps its last good peers.
    pub fn from_properties<'a>(
        meta: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, OverlayError> {
        let mut overlay = Overlay::default();
        for (key, value) in meta {
            if !key.starts_with(KEY_PREFIX) {
                continue;
            }
            let bad = |reason: &str| OverlayError::Malformed {
                key: key.to_string(),
                reason: reason.to_string(),
            };
            if value.len() > MAX_VALUE_LEN {
                return Err(bad("value longer than 255 characters"));
            }
            let mut words = value.split_ascii_whitespace();
            if words.next() != Some(VERSION_TAG) {
                return Err(bad("value does not start with the format tag v1"));
            }
            if key.starts_with(ADD_PREFIX) {
                let fields: Vec<&str> = words.collect();
                let [name, public_key, psk, address] = fields[..] else {
                    return Err(bad("expected v1 NAME PUBLIC_KEY PRESHARED_KEY|- ADDRESS"));
                };
                check_name(name).map_err(|r| bad(&format!("name: {r}")))?;
                overlay.added.push(Peer {
                    name: name.to_string(),
                    public_key: public_key
                        .parse()
                        .map_err(|e| bad(&format!("public key: {e}")))?,
                    preshared_key: match psk {
                        "-" => None,
                        k => Some(k.parse().map_err(|e| bad(&format!("preshared key: {e}")))?),
                    },
                    address: address
                        .parse()
                        .map_err(|_| bad("address is not an IPv4 address"))?,
                });
            } else if key.starts_with(REVOKE_PREFIX) {
                let mut any = false;
                for k in words {
                    overlay
                        .revoked
                        .insert(k.parse().map_err(|e| bad(&format!("public key: {e}")))?);
                    any = true;
                }
                if !any {
                    return Err(bad("no public keys listed"));
                }
            } else {
                return Err(bad("unknown cloudpipe property"));
            }
        }
        Ok(overlay)
    }

    /// The peers to run with: the payload's, minus revoked, plus added (a key both
    /// added and revoked stays revoked). Checked like the payload's own peers.
    pub fn apply(&self, config: &Config) -> Result<Vec<Peer>, ConfigError> {
        let mut peers: Vec<Peer> = config
            .peers
            .iter()
            .chain(self.added.iter())
            .filter(|p| !self.revoked.contains(&p.public_key))
            .cloned()
            .collect();
        // An added peer that repeats a payload peer exactly is not a conflict.
        let mut seen = BTreeSet::new();
        peers.retain(|p| seen.insert((p.public_key, p.name.clone(), p.address)));
        config.check_peers(&peers).map_err(|mut e| {
            e.field = format!("metadata overlay {}", e.field);
            e
        })?;
        Ok(peers)
    }

    /// The overlay that takes a payload with `booted` peers to the `current` ones
    /// (by public key; a peer kept under its key is not republished).
    pub fn between(booted: &[Peer], current: &[Peer]) -> Self {
        let by_key = |peers: &[Peer]| -> BTreeMap<PublicKey, ()> {
            peers.iter().map(|p| (p.public_key, ())).collect()
        };
        let (then, now) = (by_key(booted), by_key(current));
        let d = crate::reconcile::keyed_diff(&then, &now);
        Overlay {
            added: current
                .iter()
                .filter(|p| d.added.contains(&&p.public_key))
                .cloned()
                .collect(),
            revoked: d.removed.into_iter().copied().collect(),
        }
    }
}

/// What to run to move an instance's properties from `old` to `new`: properties to
/// set (changed or new) and cloudpipe properties to unset.
pub fn property_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let set = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let unset = old
        .keys()
        .filter(|k| k.starts_with(KEY_PREFIX) && !new.contains_key(*k))
        .cloned()
        .collect();
    (set, unset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_file;
    use crate::keys::{PresharedKey, PrivateKey};

    fn config() -> Config {
        Config::try_from(sample_file()).unwrap()
    }
    fn peer(b: u8, name: &str, last: u8) -> Peer {
        Peer {
            name: name.into(),
            public_key: PrivateKey::from_bytes([b; 32]).public_key(),
            preshared_key: Some(PresharedKey::from_bytes([b; 32])),
            address: std::net::Ipv4Addr::new(10, 0, 0, last),
        }
    }

    #[test]
    fn round_trip_within_nova_limits() {
        let c = config();
        let mut current = vec![c.peers[1].clone()];
        current.push(peer(40, "carol-with-a-long-name-32-chars-", 252));
        let o = Overlay::between(&c.peers, &current);
        assert_eq!(o.added.len(), 1);
        assert_eq!(o.revoked.len(), 1);
        let props = o.to_properties().unwrap();
        assert!(props.values().all(|v| v.len() <= MAX_VALUE_LEN));
        let back =
            Overlay::from_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        assert_eq!(back, o);
        let peers = back.apply(&c).unwrap();
        assert_eq!(peers, current);
    }

    #[test]
    fn many_revocations_pack_five_per_item() {
        let revoked: BTreeSet<_> = (0..12u8)
            .map(|b| PrivateKey::from_bytes([b + 50; 32]).public_key())
            .collect();
        let props = Overlay {
            added: vec![],
            revoked,
        }
        .to_properties()
        .unwrap();
        assert_eq!(props.len(), 3);
        assert!(props.values().all(|v| v.len() <= MAX_VALUE_LEN));
    }

    #[test]
    fn foreign_properties_are_ignored_and_bad_ones_reject_all() {
        let o = Overlay::from_properties([("owner", "ops"), ("hostname", "x")]).unwrap();
        assert!(o.is_empty());
        for (k, v) in [
            ("cloudpipe-add-0", "v1 a b"),
            ("cloudpipe-add-0", "v2 a k - 10.0.0.250"),
            ("cloudpipe-revoke-0", "v1"),
            ("cloudpipe-revoke-0", "v1 notakey"),
            ("cloudpipe-frob", "v1"),
        ] {
            assert!(Overlay::from_properties([(k, v)]).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn apply_checks_pool_and_conflicts() {
        let c = config();
        let mut o = Overlay::default();
        o.added.push(peer(41, "dave", 7));
        let e = o.apply(&c).unwrap_err();
        assert!(e.field.contains("address"), "{e}");
        let mut o = Overlay::default();
        o.added.push(peer(41, "dave", 250)); // alice's address
        assert!(o.apply(&c).is_err());
    }

    #[test]
    fn property_changes_set_and_unset() {
        let old: BTreeMap<_, _> = [
            ("cloudpipe-add-0", "a"),
            ("cloudpipe-add-1", "b"),
            ("other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let new: BTreeMap<_, _> = [("cloudpipe-add-0", "a2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (set, unset) = property_changes(&old, &new);
        assert_eq!(set, vec![("cloudpipe-add-0".to_string(), "a2".to_string())]);
        assert_eq!(unset, vec!["cloudpipe-add-1".to_string()]);
    }
}
