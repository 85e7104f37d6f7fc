//! A metadata server like Neutron's metadata proxy, for the lab: plain HTTP/1.1 on
//! 169.254.169.254:80 in the router namespace, serving files from a directory that
//! tests rewrite at will, and misbehaving on request.
//!
//! Paths: `/openstack/latest/user_data` and `/latest/user-data` serve `DIR/user_data`,
//! `/openstack/latest/meta_data.json` serves `DIR/meta_data.json`,
//! `/openstack/latest/network_data.json` serves `DIR/network_data.json`; a missing
//! file or any other path is a 404, as on a real cloud. A request from an address
//! with a folder of its own (`DIR/10.78.0.2/`) is served from that folder: each
//! appliance of a lab with several networks gets its own instance's data. `DIR/mode`
//! (read per request) picks a misbehaviour for user-data requests, `DIR/meta_mode`
//! one for `meta_data.json`, see [`Mode`]. Every request is appended to
//! `DIR/requests` (`PATH MODE`, one line each), so that a test can wait for the
//! appliance to have met a misbehaviour.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How requests for a document are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the file.
    Normal,
    /// 404, whatever the directory holds.
    NotFound,
    /// 200 with a chunked body that never ends, as fast as it can be read.
    Endless,
    /// 200 announcing a large Content-Length, then one byte per 200 ms, forever.
    Trickle,
    /// 500 Internal Server Error.
    Error,
    /// Read the request, then answer nothing, holding the connection open (a hung
    /// metadata proxy) until the client gives up (at most [`STALL_LIMIT`]).
    Stall,
    /// Read the request, then reset the connection (TCP RST, no answer).
    Reset,
    /// 200 announcing the file's length, half the body, then the connection closes.
    Truncated,
    /// 200 with a complete response whose body is the first half of the file: a
    /// reader that raced a writer of the document (a client list changing in the
    /// middle of a poll).
    Torn,
}

/// The longest a stalled connection is held.
pub const STALL_LIMIT: Duration = Duration::from_secs(120);

impl Mode {
    pub const ALL: [Mode; 9] = [
        Mode::Normal,
        Mode::NotFound,
        Mode::Endless,
        Mode::Trickle,
        Mode::Error,
        Mode::Stall,
        Mode::Reset,
        Mode::Truncated,
        Mode::Torn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::NotFound => "404",
            Mode::Endless => "endless",
            Mode::Trickle => "trickle",
            Mode::Error => "500",
            Mode::Stall => "stall",
            Mode::Reset => "reset",
            Mode::Truncated => "truncated",
            Mode::Torn => "torn",
        }
    }

    /// The mode named `s`; anything else is [`Mode::Normal`].
    pub fn parse(s: &str) -> Mode {
        let s = s.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .unwrap_or(Mode::Normal)
    }
}

/// Serve forever (one thread per connection).
pub fn serve(dir: PathBuf, listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("metadata server on {listen} serving {}", dir.display());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let dir = dir.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &dir);
        });
    }
    Ok(())
}

fn mode_in(dir: &Path, file: &str) -> Mode {
    std::fs::read_to_string(dir.join(file))
        .map(|s| Mode::parse(&s))
        .unwrap_or(Mode::Normal)
}

fn handle(mut conn: TcpStream, root: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let own = root.join(conn.peer_addr()?.ip().to_string());
    let dir = if own.is_dir() { own.as_path() } else { root };
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (file, mode) = match path.as_str() {
        "/openstack/latest/user_data" | "/latest/user-data" => {
            (Some("user_data"), mode_in(dir, "mode"))
        }
        "/openstack/latest/meta_data.json" => (Some("meta_data.json"), mode_in(dir, "meta_mode")),
        "/openstack/latest/network_data.json" => (Some("network_data.json"), Mode::Normal),
        _ => (None, Mode::Normal),
    };
    log_request(root, &path, mode);
    let body = file.and_then(|f| std::fs::read(dir.join(f)).ok());
    match mode {
        Mode::Normal => match body {
            Some(body) => respond(&mut conn, "200 OK", &body),
            None => not_found(&mut conn),
        },
        Mode::NotFound => not_found(&mut conn),
        Mode::Error => respond(&mut conn, "500 Internal Server Error", b""),
        Mode::Endless => {
            conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let chunk = format!("1000\r\n{}\r\n", "A".repeat(0x1000));
            loop {
                conn.write_all(chunk.as_bytes())?;
            }
        }
        Mode::Trickle => {
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")?;
            loop {
                conn.write_all(b"A")?;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Mode::Stall => {
            // Until the client closes its side (a read returns 0) or the limit.
            let deadline = Instant::now() + STALL_LIMIT;
            conn.set_read_timeout(Some(Duration::from_millis(500)))?;
            while Instant::now() < deadline {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            Ok(())
        }
        Mode::Reset => {
            // SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::Linger, &linger)?;
            drop(conn);
            Ok(())
        }
        Mode::Truncated => match body {
            Some(body) => {
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )?;
                conn.write_all(&body[..body.len() / 2])?;
                conn.flush()
            }
            None => not_found(&mut conn),
        },
        Mode::Torn => match body {
            Some(body) => respond(&mut conn, "200 OK", &body[..body.len() / 2]),
            None => not_found(&mut conn),
        },
    }
}

fn not_found(conn: &mut TcpStream) -> std::io::Result<()> {
    respond(conn, "404 Not Found", b"404 Not Found\n")
}

fn log_request(dir: &Path, path: &str, mode: Mode) {
    let line = format!("{path} {}\n", mode.as_str());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("requests"))
    {
        // One write per line: O_APPEND keeps concurrent lines whole.
        let _ = f.write_all(line.as_bytes());
    }
}

/// Requests the server logged in `dir` (`PATH MODE` lines), in arrival order.
pub fn requests(dir: &Path) -> Vec<(String, Mode)> {
    std::fs::read_to_string(dir.join("requests"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (path, mode) = l.rsplit_once(' ')?;
            Some((path.to_string(), Mode::parse(mode)))
        })
        .collect()
}

fn respond(conn: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_unknown_is_normal() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.as_str()), m);
        }
        assert_eq!(Mode::parse("whatever"), Mode::Normal);
    }
}
