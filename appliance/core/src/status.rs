//! The live status of a running appliance: the document `cloudpiped` serves (over
//! the control socket and, when the payload sets `status_port`, as JSON over HTTP
//! on the tenant address) and `cloudpipe status` / `network show --live` read.
//!
//! JSON, version [`STATUS_VERSION`]. Times are Unix seconds, byte counts are
//! bytes of inner packets (as `wg show` counts them). A reader must ignore fields
//! it does not know, so later versions may add some.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The status document format this build writes and reads.
pub const STATUS_VERSION: u32 = 1;

/// A client whose latest handshake is younger than this is online. 180 s is
/// WireGuard's Reject-After-Time (whitepaper 6.1): a session older than that is
/// dead, and a client that still talks has handshaken again well before (every
/// 120 s, Rekey-After-Time).
pub const ONLINE_WITHIN: Duration = Duration::from_secs(180);

/// The appliance and its clients at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    /// When this was taken (Unix seconds, the appliance's clock).
    pub time: u64,
    /// The tenant network's name (the payload's `network`).
    pub network: String,
    /// The tenant subnet, `a.b.c.d/n`.
    pub subnet: String,
    /// The appliance's tenant address.
    pub address: Ipv4Addr,
    /// Where clients connect (`HOST:PORT`), when the payload says.
    pub endpoint: Option<String>,
    /// The UDP port WireGuard listens on.
    pub listen_port: u16,
    /// The appliance's WireGuard public key (base64).
    pub public_key: String,
    /// Tunnel MTU.
    pub mtu: u16,
    /// `proxy-arp` or `masquerade`.
    pub mode: String,
    pub pool: PoolStatus,
    /// Every peer the appliance has, then the ones removed while it runs.
    pub clients: Vec<ClientStatus>,
}

/// The client address pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// Pool addresses a peer holds.
    pub used: u32,
    pub free: u32,
}

/// One client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// The client's name; none for a peer added with `wg` under a new key.
    pub name: Option<String>,
    /// Its WireGuard public key (base64).
    pub public_key: String,
    /// Its pool address.
    pub address: Option<Ipv4Addr>,
    /// Every allowed IP, `a.b.c.d/n`.
    pub allowed_ips: Vec<String>,
    /// Where its packets come from (`ADDRESS:PORT`). Left out for a reader that
    /// is itself another tunnel client ([`Status::redact_endpoints`]).
    pub endpoint: Option<String>,
    /// Latest completed handshake (Unix seconds), none if never.
    pub latest_handshake: Option<u64>,
    /// Bytes received from and sent to the client.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub state: ClientState,
}

/// A client's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientState {
    /// Handshake within [`ONLINE_WITHIN`].
    Online,
    /// Connected before, not within [`ONLINE_WITHIN`].
    Idle,
    /// No handshake since the appliance started.
    NeverConnected,
    /// Removed while the appliance runs (revoked through the instance
    /// properties, or removed with `wg`).
    Revoked,
}

impl ClientState {
    /// The state of a present peer whose latest handshake was at `latest` (Unix
    /// seconds), seen at `now`.
    pub fn of(latest: Option<u64>, now: u64) -> ClientState {
        match latest {
            None => ClientState::NeverConnected,
            Some(t) if now.saturating_sub(t) < ONLINE_WITHIN.as_secs() => ClientState::Online,
            Some(_) => ClientState::Idle,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Online => "online",
            ClientState::Idle => "idle",
            ClientState::NeverConnected => "never connected",
            ClientState::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    /// Hide every client's endpoint but `own_key`'s: what a tunnel client may see
    /// (other users' public addresses are theirs).
    pub fn redact_endpoints(&mut self, own_key: Option<&str>) {
        for c in &mut self.clients {
            if Some(c.public_key.as_str()) != own_key {
                c.endpoint = None;
            }
        }
    }

    /// Parse a status document, refusing another version with a clear message.
    pub fn from_json(bytes: &[u8]) -> Result<Status, String> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a cloudpipe status document: {e}"))?;
        if v.version != STATUS_VERSION {
            return Err(format!(
                "status document version {} (this cloudpipe reads {STATUS_VERSION}): use matching versions of cloudpipe and the appliance image",
                v.version
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("status document: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        let client = |name: &str, key: &str, ep: &str| ClientStatus {
            name: Some(name.into()),
            public_key: key.into(),
            address: Some(Ipv4Addr::new(10, 0, 0, 250)),
            allowed_ips: vec!["10.0.0.250/32".into()],
            endpoint: Some(ep.into()),
            latest_handshake: Some(100),
            rx_bytes: 1,
            tx_bytes: 2,
            state: ClientState::Online,
        };
        Status {
            version: STATUS_VERSION,
            time: 110,
            network: "n".into(),
            subnet: "10.0.0.0/24".into(),
            address: Ipv4Addr::new(10, 0, 0, 2),
            endpoint: Some("203.0.113.10:1194".into()),
            listen_port: 1194,
            public_key: "k".into(),
            mtu: 1420,
            mode: "proxy-arp".into(),
            pool: PoolStatus {
                first: Ipv4Addr::new(10, 0, 0, 250),
                last: Ipv4Addr::new(10, 0, 0, 254),
                used: 2,
                free: 3,
            },
            clients: vec![
                client("alice", "A", "203.0.113.2:1"),
                client("bob", "B", "198.51.100.2:2"),
            ],
        }
    }

    #[test]
    fn states_follow_the_latest_handshake() {
        assert_eq!(ClientState::of(None, 1000), ClientState::NeverConnected);
        assert_eq!(ClientState::of(Some(1000), 1000), ClientState::Online);
        assert_eq!(ClientState::of(Some(821), 1000), ClientState::Online);
        assert_eq!(ClientState::of(Some(820), 1000), ClientState::Idle);
        // A handshake "in the future" (clock step) is online, not a panic.
        assert_eq!(ClientState::of(Some(2000), 1000), ClientState::Online);
        assert_eq!(
            serde_json::to_string(&ClientState::NeverConnected).unwrap(),
            "\"never-connected\""
        );
    }

    #[test]
    fn tunnel_clients_see_only_their_own_endpoint() {
        let mut s = sample();
        s.redact_endpoints(Some("A"));
        assert_eq!(s.clients[0].endpoint.as_deref(), Some("203.0.113.2:1"));
        assert_eq!(s.clients[1].endpoint, None);
        let mut s = sample();
        s.redact_endpoints(None);
        assert!(s.clients.iter().all(|c| c.endpoint.is_none()));
    }

    #[test]
    fn json_round_trip_and_version_check() {
        let s = sample();
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(Status::from_json(text.as_bytes()).unwrap(), s);
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["version"] = 2.into();
        let e = Status::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        // Unknown fields from a later minor addition are ignored.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["uptime"] = 5.into();
        assert_eq!(Status::from_json(v.to_string().as_bytes()).unwrap(), s);
        assert!(Status::from_json(b"<html>").is_err());
    }
}
