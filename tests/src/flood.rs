//! `cloudpipe-lab flood`: a load generator for the appliance's UDP port, bounded in
//! count and time, sending only to the address it is given (in the lab, the floating
//! IP between the lab's namespaces).
//!
//! Kinds of traffic ([`Kind`]):
//! - `initiation`: WireGuard handshake initiations made with boringtun (the core's
//!   crypto) for random static keys, with a valid MAC1 for the appliance's public
//!   key, so they pass the first check and reach the rate limiter (whitepaper
//!   5.4.4, 5.4.7); distinct messages, sent round-robin from many source addresses;
//! - `garbage`: random bytes of random lengths (not WireGuard at all);
//! - `unknown-index`, `replay`, `bad-mac`: data messages from a real session (a
//!   configured client's config, brought up with [`crate::swarm`]): a sealed packet
//!   with a receiver index nobody holds, an accepted packet sent again and again,
//!   and a sealed packet with one bit of its tag flipped. After the flood the
//!   session is checked: it must still carry a ping.
//!
//! The report (JSON on standard output) says what was sent, how fast, and whether
//! the session survived.

use crate::swarm::{echo_request, Member, Swarm};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use cloudpipe_core::keys::PublicKey;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Distinct messages prepared before sending (then sent round-robin).
const DISTINCT: usize = 1024;
/// Hard limits whatever the flags say: a flood is bounded in time and count.
pub const MAX_SECONDS: f64 = 120.0;
pub const MAX_SOURCES: usize = 4096;
/// How long the session may take to come up, and to answer afterwards.
const SESSION_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Initiation,
    Garbage,
    UnknownIndex,
    Replay,
    BadMac,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Initiation,
        Kind::Garbage,
        Kind::UnknownIndex,
        Kind::Replay,
        Kind::BadMac,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Initiation => "initiation",
            Kind::Garbage => "garbage",
            Kind::UnknownIndex => "unknown-index",
            Kind::Replay => "replay",
            Kind::BadMac => "bad-mac",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the kind needs a session (a client config).
    pub fn needs_session(self) -> bool {
        matches!(self, Kind::UnknownIndex | Kind::Replay | Kind::BadMac)
    }
}

/// What to send, where, how fast, for how long.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    pub target: SocketAddr,
    /// The appliance's public key (`initiation`).
    pub server_key: Option<PublicKey>,
    /// A configured client's wg-quick config, and an address to ping through the
    /// tunnel (the session kinds).
    pub client_config: Option<String>,
    pub ping: Option<Ipv4Addr>,
    /// Source addresses (local to the namespace the flood runs in); empty: one
    /// socket on the wildcard address.
    pub sources: Vec<Ipv4Addr>,
    /// Datagrams per second; 0: as fast as the machine goes.
    pub rate: u64,
    pub duration: Duration,
}

/// What a flood did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub sent: u64,
    /// Sends the kernel refused (a full socket buffer, ...): not on the wire.
    pub send_errors: u64,
    pub seconds: f64,
    /// Time the paced flood fell behind and skipped (stopped, or starved of CPU).
    pub paused_seconds: f64,
    /// Datagrams per second achieved while sending (pauses not counted).
    pub rate: f64,
    pub sources: usize,
    pub distinct: usize,
    /// The session kinds: whether the session still carried a ping afterwards.
    pub session_ok: Option<bool>,
}

impl Report {
    pub fn to_json(&self, kind: Kind) -> serde_json::Value {
        serde_json::json!({
            "kind": kind.as_str(),
            "sent": self.sent,
            "send_errors": self.send_errors,
            "seconds": self.seconds,
            "paused_seconds": self.paused_seconds,
            "rate": self.rate,
            "sources": self.sources,
            "distinct": self.distinct,
            "session_ok": self.session_ok,
        })
    }
}

/// Parse `FIRST+COUNT` (consecutive IPv4 addresses) or a comma-separated list.
pub fn parse_sources(s: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let list = match s.split_once('+') {
        Some((first, count)) => {
            let first: Ipv4Addr = first.parse()?;
            let count: u32 = count.parse()?;
            (0..count)
                .map(|i| Ipv4Addr::from(u32::from(first) + i))
                .collect()
        }
        None => s
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|a| a.parse())
            .collect::<Result<Vec<_>, _>>()?,
    };
    anyhow::ensure!(
        list.len() <= MAX_SOURCES,
        "at most {MAX_SOURCES} source addresses"
    );
    Ok(list)
}

/// Run a flood.
pub fn run(o: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        o.duration.as_secs_f64() <= MAX_SECONDS,
        "a flood lasts at most {MAX_SECONDS} s"
    );
    let sockets = bind_sources(&o.sources)?;
    let mut session = None;
    let messages = match o.kind {
        Kind::Initiation => {
            let key = o
                .server_key
                .ok_or_else(|| anyhow::anyhow!("initiation needs --server-key"))?;
            initiations(&key, DISTINCT)
        }
        Kind::Garbage => garbage(DISTINCT),
        Kind::UnknownIndex | Kind::Replay | Kind::BadMac => {
            let (swarm, dst) = open_session(o)?;
            let (swarm, messages) = session_messages(swarm, dst, o.kind)?;
            session = Some((swarm, dst));
            messages
        }
    };
    let mut report = send(&sockets, o.target, &messages, o.rate, o.duration);
    report.sources = sockets.len();
    report.distinct = messages.len();
    if let Some((mut swarm, dst)) = session {
        // The session must have come through: a fresh ping is answered.
        let r = swarm.ping_all(dst, SESSION_WITHIN, Duration::from_secs(1), Duration::ZERO)?;
        report.session_ok = Some(r.answered == 1);
    }
    Ok(report)
}

fn bind_sources(sources: &[Ipv4Addr]) -> anyhow::Result<Vec<UdpSocket>> {
    let addrs: Vec<Ipv4Addr> = if sources.is_empty() {
        vec![Ipv4Addr::UNSPECIFIED]
    } else {
        sources.to_vec()
    };
    addrs
        .iter()
        .map(|a| {
            let s = UdpSocket::bind((*a, 0))
                .map_err(|e| anyhow::anyhow!("binding a UDP socket on {a}: {e}"))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect()
}

/// `n` distinct handshake initiations to `server` (valid MAC1, no MAC2), from
/// random static keys (a few messages per key).
pub fn initiations(server: &PublicKey, n: usize) -> Vec<Vec<u8>> {
    const PER_KEY: usize = 16;
    let server = x25519::PublicKey::from(*server.as_bytes());
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 256];
    let mut index = 0u32;
    while out.len() < n {
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        let mut tunn = Tunn::new(
            x25519::StaticSecret::from(secret),
            server,
            None,
            None,
            index,
            None,
        );
        index += 1;
        for _ in 0..PER_KEY.min(n - out.len()) {
            if let TunnResult::WriteToNetwork(p) = tunn.format_handshake_initiation(&mut buf, true)
            {
                out.push(p.to_vec());
            }
        }
    }
    out
}

/// `n` datagrams of random bytes, 1 to 1,400 long.
pub fn garbage(n: usize) -> Vec<Vec<u8>> {
    let mut lens = vec![0u8; 2 * n];
    fill_random(&mut lens);
    (0..n)
        .map(|i| {
            let len = 1 + usize::from(u16::from_le_bytes([lens[2 * i], lens[2 * i + 1]])) % 1400;
            let mut d = vec![0u8; len];
            fill_random(&mut d);
            d
        })
        .collect()
}

/// Bring up the configured client's session: a ping through it is answered.
fn open_session(o: &Options) -> anyhow::Result<(Swarm, Ipv4Addr)> {
    let config = o
        .client_config
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("{} needs --client-config", o.kind.as_str()))?;
    let dst = o
        .ping
        .ok_or_else(|| anyhow::anyhow!("{} needs --ping ADDRESS", o.kind.as_str()))?;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let mut swarm = Swarm::new(vec![Member::from_config("session", config, socket)?]);
    let r = swarm.ping_all(dst, SESSION_WITHIN, Duration::from_secs(1), Duration::ZERO)?;
    anyhow::ensure!(
        r.answered == 1,
        "the session did not come up: no answer from {dst} within {SESSION_WITHIN:?}"
    );
    Ok((swarm, dst))
}

/// The data messages to flood with, from the session: see the module documentation.
fn session_messages(
    mut swarm: Swarm,
    dst: Ipv4Addr,
    kind: Kind,
) -> anyhow::Result<(Swarm, Vec<Vec<u8>>)> {
    let me = swarm.members()[0].address;
    let seal = |swarm: &mut Swarm, seq: u16, send: bool| -> anyhow::Result<Vec<u8>> {
        let echo = echo_request(me, dst, 0x5eed, seq);
        let sent = if send {
            swarm.send_packet(0, &echo)?
        } else {
            swarm.seal_packet(0, &echo)?
        };
        sent.into_iter()
            .find(|d| d.first() == Some(&4))
            .ok_or_else(|| anyhow::anyhow!("the session sealed no data message"))
    };
    let messages = match kind {
        Kind::Replay => {
            // Sent once (and answered: the appliance took it), then replayed.
            let d = seal(&mut swarm, 1, true)?;
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                swarm.pump(Duration::from_millis(50))?;
            }
            vec![d]
        }
        Kind::BadMac => {
            let mut d = seal(&mut swarm, 2, false)?;
            let last = d.len() - 1;
            d[last] ^= 0x01;
            vec![d]
        }
        Kind::UnknownIndex => {
            let d = seal(&mut swarm, 3, false)?;
            let real = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
            let mut idx = [0u8; 4 * DISTINCT];
            fill_random(&mut idx);
            idx.chunks(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .filter(|i| i >> 8 != real >> 8)
                .map(|i| {
                    let mut m = d.clone();
                    m[4..8].copy_from_slice(&i.to_le_bytes());
                    m
                })
                .collect()
        }
        Kind::Initiation | Kind::Garbage => unreachable!("not a session kind"),
    };
    Ok((swarm, messages))
}

/// Set by SIGTERM or SIGINT: the flood stops early and still reports.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Make SIGTERM and SIGINT end the flood early (with its report).
pub fn stop_on_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// Send `messages` round-robin from `sockets` to `target` at `rate` per second (0:
/// as fast as possible) for `duration`, or until SIGTERM/SIGINT (see
/// [`stop_on_signals`]).
fn send(
    sockets: &[UdpSocket],
    target: SocketAddr,
    messages: &[Vec<u8>],
    rate: u64,
    duration: Duration,
) -> Report {
    let start = Instant::now();
    let (mut sent, mut errors, mut i) = (0u64, 0u64, 0usize);
    // Paced sends never catch up in a burst more than 10 ms worth: what fell further
    // behind (the process was stopped, or starved of CPU) is skipped, not rushed.
    let max_burst = (rate / 100).max(64);
    let mut skipped = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || STOP.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let done = sent + errors;
        let due = if rate == 0 {
            done + 256
        } else {
            (elapsed.as_secs_f64() * rate as f64) as u64 - skipped
        };
        if done >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let mut owed = due - done;
        if rate > 0 && owed > max_burst {
            skipped += owed - max_burst;
            owed = max_burst;
        }
        for _ in 0..owed {
            let s = &sockets[i % sockets.len()];
            match s.send_to(&messages[i % messages.len()], target) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    errors += 1;
                    std::thread::yield_now();
                }
                Err(_) => errors += 1,
            }
            i += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let paused = if rate == 0 {
        0.0
    } else {
        skipped as f64 / rate as f64
    };
    Report {
        sent,
        send_errors: errors,
        seconds,
        paused_seconds: paused,
        rate: sent as f64 / (seconds - paused).max(1e-3),
        ..Report::default()
    }
}

fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::handshake::parse_handshake_anon;
    use boringtun::noise::rate_limiter::RateLimiter;
    use boringtun::noise::Packet;

    #[test]
    fn initiations_are_distinct_and_pass_the_mac1_check() {
        let server = x25519::StaticSecret::from([9u8; 32]);
        let public = x25519::PublicKey::from(&server);
        let msgs = initiations(&PublicKey::from_bytes(public.to_bytes()), 40);
        assert_eq!(msgs.len(), 40);
        let mut sorted = msgs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 40, "distinct messages");
        // A limiter with no room left: a message with a valid MAC1 gets a cookie
        // reply; a bad MAC1 is refused before that.
        let limiter = RateLimiter::new(&public, 0);
        let mut reply = [0u8; 64];
        for m in &msgs {
            match limiter.verify_packet(Some([198, 18, 0, 1].into()), m, &mut reply) {
                Err(TunnResult::WriteToNetwork(c)) => assert_eq!(c.len(), 64),
                _ => panic!("no cookie reply"),
            }
            let Ok(Packet::HandshakeInit(init)) = Tunn::parse_incoming_packet(m) else {
                panic!("not an initiation");
            };
            assert!(parse_handshake_anon(&server, &public, &init).is_ok());
        }
        let mut bad = msgs[0].clone();
        bad[120] ^= 1;
        assert!(matches!(
            limiter.verify_packet(None, &bad, &mut reply),
            Err(TunnResult::Err(_))
        ));
    }

    #[test]
    fn sources_and_kinds_parse() {
        assert_eq!(
            parse_sources("198.18.0.254+3").unwrap(),
            vec![
                Ipv4Addr::new(198, 18, 0, 254),
                Ipv4Addr::new(198, 18, 0, 255),
                Ipv4Addr::new(198, 18, 1, 0)
            ]
        );
        assert_eq!(parse_sources("10.0.0.1,10.0.0.2").unwrap().len(), 2);
        assert!(parse_sources("198.18.0.1+100000").is_err());
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        let g = garbage(50);
        assert!(g.iter().all(|d| (1..=1400).contains(&d.len())));
    }

    #[test]
    fn a_paced_send_keeps_its_rate_and_bound() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = bind_sources(&[Ipv4Addr::LOCALHOST]).unwrap();
        let r = send(
            &tx,
            rx.local_addr().unwrap(),
            &garbage(4),
            2000,
            Duration::from_millis(300),
        );
        assert!(r.seconds < 1.0, "{r:?}");
        // 600 due; a loaded machine may fall behind, never run ahead.
        assert!(r.sent + r.send_errors <= 601, "{r:?}");
        assert!(r.sent > 0);
    }
}
