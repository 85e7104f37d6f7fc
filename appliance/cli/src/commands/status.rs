//! `cloudpipe status`: the tunnel details of a running appliance.
//!
//! - On the appliance (no `--all`): from the daemon's control socket (the `wg`
//!   UAPI socket, extension `cloudpipe_status=1`), not from its files.
//! - On the tenant's side (`--all`, and `network show NET --live`): for every
//!   network of the state directory, the stored view (clients, their status here)
//!   merged with the live one each appliance serves over HTTP on its tenant address
//!   (`network create --status-port`), reachable from a tenant VM or through the
//!   tunnel. Networks whose appliance cannot be reached are named, with why.

use crate::cli::StatusArgs;
use crate::model::{ClientFile, Network, Status as StoredStatus};
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use cloudpipe_core::status::{ClientState, ClientStatus, Status};
use cloudpipe_core::uapi;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// One HTTP request to an appliance, connection included: a tenant VM's network
/// answers in milliseconds, and an unreachable appliance must not hold up the rest.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the daemon may take to answer on its control socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// A status document is a few hundred bytes per client; this is thousands.
const MAX_DOCUMENT: u64 = 4 << 20;

pub fn run(state: Option<&StateDir>, args: StatusArgs) -> Result<()> {
    match state {
        Some(state) => all(state, args.json),
        None => local(&args.socket, args.json),
    }
}

/// `cloudpipe status` on the appliance.
fn local(socket: &Path, json: bool) -> Result<()> {
    let status = from_socket(socket)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render_live(&status));
    }
    Ok(())
}

/// The status document from the daemon's control socket.
pub fn from_socket(socket: &Path) -> Result<Status> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach cloudpiped at {} (is it running? the socket is root's: run as root on the appliance, or give --socket)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    s.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    s.write_all(b"cloudpipe_status=1\n\n")
        .context("writing to the control socket")?;
    let mut answer = String::new();
    s.take(MAX_DOCUMENT)
        .read_to_string(&mut answer)
        .or_else(|e| {
            // The daemon keeps the connection open for more requests: a timeout
            // after a complete answer is the normal end.
            if answer.ends_with("\n\n") {
                Ok(0)
            } else {
                Err(e)
            }
        })
        .context("reading the control socket's answer")?;
    let doc = uapi::parse_status_answer(&answer).map_err(|e| {
        anyhow::anyhow!(
            "{} answered: {e} (a daemon older than this cloudpipe?)",
            socket.display()
        )
    })?;
    Status::from_json(doc.as_bytes()).map_err(anyhow::Error::msg)
}

/// The status document an appliance serves at `http://address:port/status`.
pub fn from_http(address: Ipv4Addr, port: u16) -> Result<Status> {
    let url = format!("http://{address}:{port}/status");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .call()
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_string()
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    Status::from_json(body.as_bytes()).map_err(|e| anyhow::anyhow!("{url}: {e}"))
}

/// One network as `status --all` reports it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub network: String,
    /// Where the live status was asked for (none: no status listener).
    pub url: Option<String>,
    pub reachable: bool,
    /// Why the live status is missing.
    pub error: Option<String>,
    /// The live status, as the appliance served it.
    pub live: Option<Status>,
    /// Stored and live clients, merged.
    pub clients: Vec<Client>,
}

/// A client, stored and live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    pub name: Option<String>,
    pub public_key: String,
    pub address: Option<Ipv4Addr>,
    /// `active` or `revoked` in the state directory; none for a peer the appliance
    /// has that the state directory does not know (added with `wg`).
    pub stored: Option<&'static str>,
    /// The appliance's view; none when it was not reachable or does not have it.
    pub state: Option<ClientState>,
    pub endpoint: Option<String>,
    pub latest_handshake: Option<u64>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    /// Where stored and live disagree, what to do.
    pub note: Option<String>,
}

/// Merge a network's stored clients with its appliance's live ones (`None`: not
/// reachable). Stored clients first, in their order; then live peers the state
/// directory does not know.
pub fn merge(stored: &[ClientFile], live: Option<&Status>) -> Vec<Client> {
    let find = |key: &str| live.and_then(|s| s.clients.iter().find(|c| c.public_key == key));
    let mut out: Vec<Client> = stored
        .iter()
        .map(|c| {
            let l = find(&c.public_key);
            let active = c.status == StoredStatus::Active;
            let note = match (live, l.map(|l| l.state), active) {
                (None, _, _) => None,
                (Some(_), None, true) => {
                    Some("not on the appliance: publish it (cloudpipe publish)".to_string())
                }
                (Some(_), Some(ClientState::Revoked), true) => {
                    Some("removed on the appliance (wg set ... remove)".to_string())
                }
                (Some(_), Some(s), false) if s != ClientState::Revoked => Some(
                    "revoked here but still on the appliance: publish the revocation".to_string(),
                ),
                _ => None,
            };
            let mut client = live_fields(l);
            client.name = Some(c.name.clone());
            client.public_key = c.public_key.clone();
            client.address = Some(c.address);
            client.stored = Some(if active { "active" } else { "revoked" });
            client.note = note;
            client
        })
        .collect();
    if let Some(s) = live {
        for l in &s.clients {
            if out.iter().any(|c| c.public_key == l.public_key) || l.state == ClientState::Revoked {
                continue;
            }
            let mut client = live_fields(Some(l));
            client.name = l.name.clone();
            client.public_key = l.public_key.clone();
            client.address = l.address;
            client.note =
                Some("not in the state directory (added on the appliance with wg)".into());
            out.push(client);
        }
    }
    out
}

fn live_fields(l: Option<&ClientStatus>) -> Client {
    Client {
        name: None,
        public_key: String::new(),
        address: None,
        stored: None,
        state: l.map(|l| l.state),
        endpoint: l.and_then(|l| l.endpoint.clone()),
        latest_handshake: l.and_then(|l| l.latest_handshake),
        rx_bytes: l.map(|l| l.rx_bytes),
        tx_bytes: l.map(|l| l.tx_bytes),
        note: None,
    }
}

/// What a report needs of a stored network, copied so that no lock is held while
/// the appliance is asked.
pub struct Stored {
    pub name: String,
    pub address: Ipv4Addr,
    pub status_port: Option<u16>,
    pub clients: Vec<ClientFile>,
}

impl From<&Network> for Stored {
    fn from(net: &Network) -> Stored {
        Stored {
            name: net.name().to_string(),
            address: net.file.address,
            status_port: net.file.status_port,
            clients: net.clients.clone(),
        }
    }
}

/// The stored network with its appliance's live status, if it can be had.
pub fn report(net: Stored) -> Report {
    let unreachable = |url: Option<String>, error: String| Report {
        clients: merge(&net.clients, None),
        network: net.name.clone(),
        url,
        reachable: false,
        error: Some(error),
        live: None,
    };
    let Some(port) = net.status_port else {
        return unreachable(
            None,
            "no status listener: the network was created without --status-port".into(),
        );
    };
    let url = format!("http://{}:{port}/status", net.address);
    match from_http(net.address, port) {
        Ok(s) if s.network == net.name => Report {
            clients: merge(&net.clients, Some(&s)),
            network: net.name,
            url: Some(url),
            reachable: true,
            error: None,
            live: Some(s),
        },
        Ok(s) => {
            let e = format!(
                "{url} answers for network {:?}, not {:?} (another network on the same addresses?)",
                s.network, net.name
            );
            unreachable(Some(url), e)
        }
        Err(e) => unreachable(Some(url), format!("{e:#}")),
    }
}

/// `cloudpipe status --all`.
fn all(state: &StateDir, json: bool) -> Result<()> {
    let names = state.networks()?;
    if names.is_empty() {
        bail!(
            "no networks in {}: create one with `cloudpipe network create`",
            state.root().display()
        );
    }
    let mut reports = Vec::new();
    for name in names {
        // Copied out and the network's lock released before the appliance is asked.
        let stored = Network::open(state.network_dir(&name)).map(|net| Stored::from(&net));
        match stored {
            Ok(stored) => reports.push(report(stored)),
            Err(e) => reports.push(Report {
                network: name,
                url: None,
                reachable: false,
                error: Some(format!("cannot read the stored network: {e:#}")),
                live: None,
                clients: Vec::new(),
            }),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", render_report(r));
    }
    let unreachable: Vec<&str> = reports
        .iter()
        .filter(|r| !r.reachable)
        .map(|r| r.network.as_str())
        .collect();
    if !unreachable.is_empty() {
        eprintln!(
            "cloudpipe: not reachable: {} (stored view shown)",
            unreachable.join(", ")
        );
    }
    Ok(())
}

/// The human form of a report (`status --all`, `network show --live`).
pub fn render_report(r: &Report) -> String {
    let mut out = String::new();
    match (&r.live, &r.error) {
        (Some(s), _) => {
            out.push_str(&format!(
                "network {}: live from {}\n",
                r.network,
                r.url.as_deref().unwrap_or("?")
            ));
            out.push_str(&header(s));
        }
        (None, Some(e)) => out.push_str(&format!(
            "network {}: NOT REACHABLE: {e}\n  (stored view only)\n",
            r.network
        )),
        (None, None) => out.push_str(&format!("network {}\n", r.network)),
    }
    let now = r.live.as_ref().map(|s| s.time);
    let rows: Vec<[String; 6]> = r
        .clients
        .iter()
        .map(|c| {
            let state = match (c.state, c.stored, &c.note) {
                (Some(s), _, Some(n)) => format!("{s}: {n}"),
                (Some(s), _, None) => s.as_str().to_string(),
                (None, _, Some(n)) => n.clone(),
                (None, Some(stored), None) if r.live.is_none() => format!("{stored} (stored)"),
                (None, _, None) => "not on the appliance".into(),
            };
            [
                c.name.clone().unwrap_or_else(|| short(&c.public_key)),
                c.address.map_or("-".into(), |a| a.to_string()),
                c.endpoint.clone().unwrap_or_else(|| "-".into()),
                handshake(c.latest_handshake, now),
                transfer(c.rx_bytes, c.tx_bytes),
                state,
            ]
        })
        .collect();
    out.push_str(&table(&rows));
    out
}

/// The human form of an appliance's own status (`cloudpipe status` on it).
pub fn render_live(s: &Status) -> String {
    let mut out = header(s);
    let rows: Vec<[String; 6]> = s
        .clients
        .iter()
        .map(|c| {
            [
                c.name.clone().unwrap_or_else(|| short(&c.public_key)),
                c.address.map_or("-".into(), |a| a.to_string()),
                c.endpoint.clone().unwrap_or_else(|| "-".into()),
                handshake(c.latest_handshake, Some(s.time)),
                if c.state == ClientState::Revoked {
                    "-".into()
                } else {
                    transfer(Some(c.rx_bytes), Some(c.tx_bytes))
                },
                c.state.as_str().into(),
            ]
        })
        .collect();
    out.push_str(&table(&rows));
    out
}

fn header(s: &Status) -> String {
    format!(
        "  network:     {} ({}, appliance {}, {})\n  endpoint:    {} (UDP {})\n  public key:  {}\n  tunnel MTU:  {}\n  pool:        {}-{}: {} used, {} free\n",
        s.network,
        s.subnet,
        s.address,
        s.mode,
        s.endpoint.as_deref().unwrap_or("(not in the payload)"),
        s.listen_port,
        s.public_key,
        s.mtu,
        s.pool.first,
        s.pool.last,
        s.pool.used,
        s.pool.free
    )
}

fn table(rows: &[[String; 6]]) -> String {
    if rows.is_empty() {
        return "  clients:     (none)\n".into();
    }
    let head = [
        "NAME",
        "ADDRESS",
        "ENDPOINT",
        "LATEST HANDSHAKE",
        "TRANSFER",
        "STATE",
    ]
    .map(String::from);
    let mut width = [0usize; 6];
    for r in std::iter::once(&head).chain(rows) {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(rows) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in r.iter().zip(width).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A key as `wg` users recognise it: its first 8 characters.
fn short(key: &str) -> String {
    format!("{}…", key.chars().take(8).collect::<String>())
}

/// "12 seconds ago", as `wg show` says it; relative to the appliance's clock.
pub fn handshake(latest: Option<u64>, now: Option<u64>) -> String {
    let (Some(t), Some(now)) = (latest, now) else {
        return "-".into();
    };
    let ago = now.saturating_sub(t);
    if ago == 0 {
        return "now".into();
    }
    let parts: Vec<String> = [
        ("day", ago / 86_400),
        ("hour", ago / 3_600 % 24),
        ("minute", ago / 60 % 60),
        ("second", ago % 60),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(unit, n)| format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
    .collect();
    format!("{} ago", parts.join(", "))
}

/// "1.21 MiB received, 3.45 KiB sent", as `wg show` says it.
pub fn transfer(rx: Option<u64>, tx: Option<u64>) -> String {
    match (rx, tx) {
        (Some(rx), Some(tx)) if rx > 0 || tx > 0 => {
            format!("{} received, {} sent", bytes(rx), bytes(tx))
        }
        (Some(_), Some(_)) => "none".into(),
        _ => "-".into(),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_and_transfers_read_like_wg_show() {
        assert_eq!(handshake(Some(100), Some(112)), "12 seconds ago");
        assert_eq!(handshake(Some(100), Some(100)), "now");
        assert_eq!(
            handshake(Some(0), Some(3_725)),
            "1 hour, 2 minutes, 5 seconds ago"
        );
        assert_eq!(
            handshake(Some(0), Some(2 * 86_400 + 60)),
            "2 days, 1 minute ago"
        );
        assert_eq!(handshake(None, Some(1)), "-");
        // A clock that stepped back: "now", not a huge number.
        assert_eq!(handshake(Some(200), Some(100)), "now");
        assert_eq!(
            transfer(Some(1_268_000), Some(3_533)),
            "1.21 MiB received, 3.45 KiB sent"
        );
        assert_eq!(transfer(Some(0), Some(0)), "none");
        assert_eq!(transfer(None, None), "-");
        assert_eq!(bytes(512), "512 B");
    }

    fn stored(name: &str, key: &str, last: u8, status: StoredStatus) -> ClientFile {
        ClientFile {
            name: name.into(),
            address: Ipv4Addr::new(10, 0, 0, last),
            public_key: key.into(),
            private_key: None,
            preshared_key: String::new(),
            status,
        }
    }

    fn live(name: Option<&str>, key: &str, state: ClientState) -> ClientStatus {
        ClientStatus {
            name: name.map(String::from),
            public_key: key.into(),
            address: None,
            allowed_ips: vec![],
            endpoint: Some("203.0.113.2:1".into()),
            latest_handshake: Some(90),
            rx_bytes: 10,
            tx_bytes: 20,
            state,
        }
    }

    #[test]
    fn stored_and_live_views_merge_and_say_where_they_disagree() {
        let revoked = StoredStatus::Revoked { released: false };
        let clients = vec![
            stored("alice", "A", 250, StoredStatus::Active),
            stored("bob", "B", 251, StoredStatus::Active),
            stored("carol", "C", 252, revoked),
            stored("dave", "D", 253, StoredStatus::Active),
        ];
        let status = Status {
            version: cloudpipe_core::status::STATUS_VERSION,
            time: 100,
            network: "n".into(),
            subnet: "10.0.0.0/24".into(),
            address: Ipv4Addr::new(10, 0, 0, 2),
            endpoint: None,
            listen_port: 1194,
            public_key: "S".into(),
            mtu: 1420,
            mode: "proxy-arp".into(),
            pool: cloudpipe_core::status::PoolStatus {
                first: Ipv4Addr::new(10, 0, 0, 250),
                last: Ipv4Addr::new(10, 0, 0, 254),
                used: 3,
                free: 2,
            },
            clients: vec![
                live(Some("alice"), "A", ClientState::Online),
                live(Some("carol"), "C", ClientState::Idle),
                live(None, "E", ClientState::NeverConnected),
                live(Some("dave"), "D", ClientState::Revoked),
            ],
        };
        let m = merge(&clients, Some(&status));
        let row = |k: &str| m.iter().find(|c| c.public_key == k).unwrap();
        assert_eq!(row("A").state, Some(ClientState::Online));
        assert_eq!(
            (row("A").rx_bytes, row("A").note.as_deref()),
            (Some(10), None)
        );
        assert!(row("B").note.as_deref().unwrap().contains("publish it"));
        assert!(row("C")
            .note
            .as_deref()
            .unwrap()
            .contains("publish the revocation"));
        assert!(row("D")
            .note
            .as_deref()
            .unwrap()
            .contains("removed on the appliance"));
        assert_eq!(row("E").stored, None);
        assert!(row("E")
            .note
            .as_deref()
            .unwrap()
            .contains("added on the appliance"));
        assert_eq!(m.len(), 5);
        // Unreachable: the stored view alone, no notes.
        let m = merge(&clients, None);
        assert!(m.iter().all(|c| c.state.is_none() && c.note.is_none()));
        let r = Report {
            network: "n".into(),
            url: Some("http://10.0.0.2:9100/status".into()),
            reachable: false,
            error: Some("connection refused".into()),
            live: None,
            clients: m,
        };
        let text = render_report(&r);
        assert!(text.contains("NOT REACHABLE: connection refused"), "{text}");
        assert!(
            text.contains("active (stored)") && text.contains("revoked (stored)"),
            "{text}"
        );
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            [
                "alice".to_string(),
                "10.0.0.250".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "never connected".into(),
            ],
            [
                "bob-laptop".to_string(),
                "10.0.0.251".into(),
                "203.0.113.2:1".into(),
                "now".into(),
                "none".into(),
                "online".into(),
            ],
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str| l.find("10.0.0.25").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[0].starts_with("  NAME"));
    }
}
