//! WireGuard's cross-platform userspace API: the `get=1` / `set=1` text protocol
//! that `wg` (wireguard-tools) speaks over `/var/run/wireguard/<interface>.sock`
//! (<https://www.wireguard.com/xplatform/>; wireguard-go's `device/uapi.go` and
//! wireguard-tools' `ipc-uapi.h` are the implementations it is checked against).
//!
//! This module is the codec only: [`frame`] finds where a request ends in a byte
//! stream, [`parse_request`] turns it into a [`Request`], [`write_get`] and
//! [`write_errno`] print the answers. Applying a `set` is the caller's business
//! (the daemon hands it to its reconciler, see [`crate::reconcile`]).
//!
//! The protocol, briefly: a request is an operation line (`get=1` or `set=1`),
//! then for `set` one `key=value` line per change, and ends with an empty line.
//! Keys are 64 hexadecimal digits; the all-zero key means "none". Device keys
//! (`private_key`, `listen_port`, `fwmark`, `replace_peers`) come first; each
//! `public_key=` line starts a peer, whose keys (`remove`, `update_only`,
//! `preshared_key`, `endpoint`, `persistent_keepalive_interval`,
//! `replace_allowed_ips`, `allowed_ip`, `protocol_version`) follow it. The answer
//! ends with `errno=N` and an empty line: 0 on success, else a negated Linux errno
//! (as wireguard-go writes it; `wg` prints the error's text).
//!
//! One extension: `cloudpipe_status=1` (then the empty line) asks the appliance for
//! its status document (`cloudpipe status` sends it). Stock `wg` never sends it.

use crate::keys::{key_from_hex, PresharedKey, PrivateKey, PublicKey, KEY_LEN};
use crate::wg::PeerInfo;
use ipnetwork::IpNetwork;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

/// The largest request accepted, in bytes. A `set` costs about 300 bytes per peer
/// (`wg syncconf` sends every peer): 8 MiB holds the 10,000 peers the data path is
/// sized for with room to spare, and bounds what a client of the (root-only)
/// socket can make the daemon buffer.
pub const MAX_REQUEST_LEN: usize = 8 << 20;

/// Linux errno values the protocol reports (negated on the wire).
pub mod errno {
    /// The request could not be read or the answer written.
    pub const EIO: i32 = 5;
    /// A key, value or operation that is not valid.
    pub const EINVAL: i32 = 22;
    /// A line without `=`, or a request that is not text.
    pub const EPROTO: i32 = 71;
    /// A request longer than [`super::MAX_REQUEST_LEN`].
    pub const EMSGSIZE: i32 = 90;
    /// A valid change this implementation cannot make (as wireguard-go answers a
    /// listen port it cannot bind with EADDRINUSE, the appliance answers a change
    /// of its payload-given port with it).
    pub const EADDRINUSE: i32 = 98;
}

/// A request the protocol refuses: the errno to answer with and, for the log,
/// why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UapiError {
    /// A positive Linux errno ([`errno`]).
    pub errno: i32,
    pub message: String,
}

impl UapiError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        UapiError {
            errno,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(errno::EINVAL, message)
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get=1`: the device and every peer.
    Get,
    /// `set=1`: changes, in the order given.
    Set(SetRequest),
    /// `cloudpipe_status=1`: the appliance's status document (an extension).
    Status,
}

/// The changes of one `set=1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `private_key=`: `Some(None)` is the all-zero key (remove the key).
    pub private_key: Option<Option<PrivateKey>>,
    pub listen_port: Option<u16>,
    /// `fwmark=`: 0 removes the mark.
    pub fwmark: Option<u32>,
    /// `replace_peers=true`: remove every peer before the peers below apply.
    pub replace_peers: bool,
    /// One entry per `public_key=` line, in order (a key may appear twice).
    pub peers: Vec<PeerUpdate>,
}

/// The changes to one peer, from its `public_key=` line to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: PublicKey,
    /// `remove=true`: remove the peer. The section's other lines then change
    /// nothing: they are checked and dropped (the other fields stay empty).
    pub remove: bool,
    /// `update_only=true`: change the peer only if it exists.
    pub update_only: bool,
    /// `preshared_key=`: `Some(None)` is the all-zero key (no preshared key).
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=` in seconds; 0 turns it off.
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips=true`: the peer's allowed IPs become exactly
    /// [`PeerUpdate::allowed_ips`] (allowed IPs listed before the flag were
    /// removed by it, so they are not kept).
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines, host bits cleared, in order.
    pub allowed_ips: Vec<IpNetwork>,
}

impl PeerUpdate {
    pub fn new(public_key: PublicKey) -> Self {
        PeerUpdate {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// Where the first request in `buf` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The first request is `buf[..n]` (its closing empty line included).
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// More than [`MAX_REQUEST_LEN`] bytes and no end: refuse and close.
    TooLong,
}

/// Find the end of the first request: the first empty line (`\n\n`, or a `\n`
/// at the very start).
pub fn frame(buf: &[u8]) -> Frame {
    frame_after(buf, 0)
}

/// [`frame`] for a buffer whose first `scanned` bytes were already searched
/// without an end: only what was appended is searched, so that a request read in
/// many pieces costs linear time, not quadratic.
pub fn frame_after(buf: &[u8], scanned: usize) -> Frame {
    let end = if buf.first() == Some(&b'\n') {
        Some(1)
    } else {
        // One byte back: the end may straddle the old and the new bytes.
        let from = scanned.saturating_sub(1).min(buf.len());
        buf[from..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| from + i + 2)
    };
    match end {
        Some(n) if n <= MAX_REQUEST_LEN => Frame::Complete(n),
        Some(_) => Frame::TooLong,
        None if buf.len() >= MAX_REQUEST_LEN => Frame::TooLong,
        None => Frame::Incomplete,
    }
}

/// Parse one framed request (as [`frame`] delimits it; the closing empty line may
/// be included or not).
///
/// Errors: [`errno::EPROTO`] for bytes that are not text or a line without `=`;
/// [`errno::EINVAL`] for an unknown operation, key or value, a device key after
/// the first peer, or a peer key before it.
pub fn parse_request(bytes: &[u8]) -> Result<Request, UapiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| UapiError::new(errno::EPROTO, "the request is not UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = text.split('\n');
    let op = lines.next().unwrap_or_default();
    let rest: Vec<&str> = lines.collect();
    match op {
        "get=1" | "cloudpipe_status=1" => {
            if let Some(extra) = rest.first() {
                return Err(UapiError::invalid(format!(
                    "{op} takes no arguments, got {:?}",
                    truncate(extra)
                )));
            }
            Ok(if op == "get=1" {
                Request::Get
            } else {
                Request::Status
            })
        }
        "set=1" => parse_set(&rest).map(Request::Set),
        "" => Err(UapiError::invalid("empty request: expected get=1 or set=1")),
        other => Err(UapiError::invalid(format!(
            "unknown operation {:?}: expected get=1 or set=1",
            truncate(other)
        ))),
    }
}

fn parse_set(lines: &[&str]) -> Result<SetRequest, UapiError> {
    let mut set = SetRequest::default();
    for line in lines {
        if line.is_empty() {
            return Err(UapiError::new(
                errno::EPROTO,
                "an empty line inside a set request",
            ));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(UapiError::new(
                errno::EPROTO,
                format!("line {:?} is not key=value", truncate(line)),
            ));
        };
        if key == "public_key" {
            set.peers
                .push(PeerUpdate::new(PublicKey::from_bytes(hex_key(key, value)?)));
            continue;
        }
        match set.peers.last_mut() {
            None => device_line(&mut set, key, value)?,
            Some(peer) => peer_line(peer, key, value)?,
        }
    }
    Ok(set)
}

fn device_line(set: &mut SetRequest, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            let k = hex_key(key, value)?;
            set.private_key = Some((k != [0; KEY_LEN]).then(|| PrivateKey::from_bytes(k)));
        }
        "listen_port" => set.listen_port = Some(number(key, value)?),
        "fwmark" => set.fwmark = Some(number(key, value)?),
        "replace_peers" => set.replace_peers = flag(key, value)?,
        _ if PEER_KEYS.contains(&key) => {
            return Err(UapiError::invalid(format!(
                "{key} before any public_key line"
            )))
        }
        _ => {
            return Err(UapiError::invalid(format!(
                "unknown device key {:?}",
                truncate(key)
            )))
        }
    }
    Ok(())
}

const PEER_KEYS: [&str; 8] = [
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
];

fn peer_line(peer: &mut PeerUpdate, key: &str, value: &str) -> Result<(), UapiError> {
    // Every value is checked, even after `remove` (wireguard-go parses before it
    // looks at the peer), but nothing after `remove` is kept.
    let keep = !peer.remove;
    match key {
        "remove" => {
            flag(key, value)?;
            // What came before in the section dies with the peer. (wireguard-go
            // would first move allowed IPs listed before `remove` away from other
            // peers; here they stay where they were.)
            *peer = PeerUpdate {
                remove: true,
                ..PeerUpdate::new(peer.public_key)
            };
        }
        "update_only" => {
            let f = flag(key, value)?;
            peer.update_only |= keep && f;
        }
        "preshared_key" => {
            let k = hex_key(key, value)?;
            if keep {
                peer.preshared_key = Some((k != [0; KEY_LEN]).then(|| PresharedKey::from_bytes(k)));
            }
        }
        "endpoint" => {
            let ep = endpoint(value)?;
            if keep {
                peer.endpoint = Some(ep);
            }
        }
        "persistent_keepalive_interval" => {
            let s = number(key, value)?;
            if keep {
                peer.persistent_keepalive = Some(s);
            }
        }
        "replace_allowed_ips" => {
            if flag(key, value)? && keep {
                peer.replace_allowed_ips = true;
                peer.allowed_ips.clear();
            }
        }
        "allowed_ip" => {
            let net = allowed_ip(value)?;
            if keep {
                peer.allowed_ips.push(net);
            }
        }
        "protocol_version" => {
            if value != "1" {
                return Err(UapiError::invalid(format!(
                    "protocol_version {:?}: only 1 exists",
                    truncate(value)
                )));
            }
        }
        "private_key" | "listen_port" | "fwmark" | "replace_peers" => {
            return Err(UapiError::invalid(format!(
                "device key {key} after a public_key line"
            )))
        }
        _ => {
            return Err(UapiError::invalid(format!(
                "unknown peer key {:?}",
                truncate(key)
            )))
        }
    }
    Ok(())
}

fn hex_key(key: &str, value: &str) -> Result<[u8; KEY_LEN], UapiError> {
    key_from_hex(value)
        .map_err(|_| UapiError::invalid(format!("{key}: expected 64 hexadecimal digits")))
}

/// A decimal number as wireguard-go reads it (`strconv.ParseUint`: digits only).
fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UapiError::invalid(format!(
            "{key} {:?} is not a decimal number",
            truncate(value)
        )));
    }
    value
        .parse()
        .map_err(|_| UapiError::invalid(format!("{key} {:?} is out of range", truncate(value))))
}

/// `true` is the only value a flag takes (wireguard-go refuses anything else).
fn flag(key: &str, value: &str) -> Result<bool, UapiError> {
    if value == "true" {
        Ok(true)
    } else {
        Err(UapiError::invalid(format!(
            "{key} {:?}: the only value is true",
            truncate(value)
        )))
    }
}

/// `a.b.c.d:port` or `[v6]:port`, numeric (wg resolves names before sending).
fn endpoint(value: &str) -> Result<SocketAddr, UapiError> {
    value.parse().map_err(|_| {
        UapiError::invalid(format!(
            "endpoint {:?} is not ADDRESS:PORT or [ADDRESS]:PORT",
            truncate(value)
        ))
    })
}

/// `address/prefix` (the prefix is required); host bits are cleared, as the
/// kernel and wireguard-go store it.
fn allowed_ip(value: &str) -> Result<IpNetwork, UapiError> {
    let bad = || {
        UapiError::invalid(format!(
            "allowed_ip {:?} is not ADDRESS/PREFIX",
            truncate(value)
        ))
    };
    let (addr, prefix) = value.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = number("allowed_ip prefix", prefix).map_err(|_| bad())?;
    let net = IpNetwork::new(addr, prefix).map_err(|_| bad())?;
    IpNetwork::new(net.network(), prefix).map_err(|_| bad())
}

/// At most 64 characters of untrusted text, for error messages and logs.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The device part of a `get` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub private_key: PrivateKey,
    pub listen_port: u16,
    /// 0: no mark (then not printed).
    pub fwmark: u32,
}

/// Append the answer to `get=1` to `out`: the device, every peer, `errno=0` and
/// the closing empty line. Handshake times are Unix time (seconds and
/// nanoseconds; 0 for never), so `wg show` prints "12 seconds ago".
pub fn write_get(out: &mut String, device: &DeviceInfo, peers: &[PeerInfo]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "private_key={}", device.private_key.to_hex());
    let _ = writeln!(out, "listen_port={}", device.listen_port);
    if device.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", device.fwmark);
    }
    for p in peers {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        let psk = p
            .preshared_key
            .as_ref()
            .map_or_else(|| "0".repeat(2 * KEY_LEN), PresharedKey::to_hex);
        let _ = writeln!(out, "preshared_key={psk}");
        out.push_str("protocol_version=1\n");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let since = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", since.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive.unwrap_or(0)
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    write_errno(out, 0);
}

/// Append `req` as a `set=1` request (what `wg set` would send for it), closing
/// empty line included. [`parse_request`] reads it back as `req`.
pub fn write_set(out: &mut String, req: &SetRequest) {
    let zero = || "0".repeat(2 * KEY_LEN);
    out.push_str("set=1\n");
    if let Some(k) = &req.private_key {
        let hex = k.as_ref().map_or_else(zero, PrivateKey::to_hex);
        let _ = writeln!(out, "private_key={hex}");
    }
    if let Some(p) = req.listen_port {
        let _ = writeln!(out, "listen_port={p}");
    }
    if let Some(m) = req.fwmark {
        let _ = writeln!(out, "fwmark={m}");
    }
    if req.replace_peers {
        out.push_str("replace_peers=true\n");
    }
    for p in &req.peers {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        if p.remove {
            out.push_str("remove=true\n");
            continue;
        }
        if p.update_only {
            out.push_str("update_only=true\n");
        }
        if let Some(k) = &p.preshared_key {
            let hex = k.as_ref().map_or_else(zero, PresharedKey::to_hex);
            let _ = writeln!(out, "preshared_key={hex}");
        }
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        if let Some(s) = p.persistent_keepalive {
            let _ = writeln!(out, "persistent_keepalive_interval={s}");
        }
        if p.replace_allowed_ips {
            out.push_str("replace_allowed_ips=true\n");
        }
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push('\n');
}

/// Append the answer to `cloudpipe_status=1`: `status=` and the document (JSON on
/// one line), then `errno=0`.
pub fn write_status(out: &mut String, json: &str) {
    debug_assert!(!json.contains('\n'), "one line");
    let _ = writeln!(out, "status={}", json.replace('\n', " "));
    write_errno(out, 0);
}

/// Read the answer to `cloudpipe_status=1` (what [`write_status`] or
/// [`write_errno`] wrote): the document, or the error the daemon answered.
pub fn parse_status_answer(answer: &str) -> Result<String, UapiError> {
    let mut doc = None;
    for line in answer.lines() {
        if let Some(json) = line.strip_prefix("status=") {
            doc = Some(json.to_string());
        } else if let Some(n) = line.strip_prefix("errno=") {
            let n: i32 = n
                .parse()
                .map_err(|_| UapiError::new(errno::EPROTO, format!("bad errno line {line:?}")))?;
            if n != 0 {
                return Err(UapiError::new(
                    n.abs(),
                    format!("the daemon answered errno {}", n.abs()),
                ));
            }
            return doc
                .ok_or_else(|| UapiError::new(errno::EPROTO, "the answer has no status line"));
        }
    }
    Err(UapiError::new(
        errno::EPROTO,
        "the answer ended without errno=",
    ))
}

/// Append `errno=N` and the closing empty line: `N` is 0 or the negated errno,
/// as wireguard-go writes it (`wg` turns it back into the error's text).
pub fn write_errno(out: &mut String, errno: i32) {
    let _ = write!(out, "errno={}\n\n", -errno.abs());
}

#[cfg(test)]
mod tests;
