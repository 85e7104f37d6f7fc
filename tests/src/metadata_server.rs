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
//! (read per request) picks a misbehaviour for user-data requests, see [`Mode`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How user-data requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the files.
    Normal,
    /// 404 for user-data, whatever the directory holds.
    NotFound,
    /// 200 with a chunked body that never ends, as fast as it can be read.
    Endless,
    /// 200 announcing a large Content-Length, then one byte per 200 ms, forever.
    Trickle,
    /// 500 Internal Server Error.
    Error,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::NotFound => "404",
            Mode::Endless => "endless",
            Mode::Trickle => "trickle",
            Mode::Error => "500",
        }
    }
    pub fn parse(s: &str) -> Mode {
        match s.trim() {
            "404" => Mode::NotFound,
            "endless" => Mode::Endless,
            "trickle" => Mode::Trickle,
            "500" => Mode::Error,
            _ => Mode::Normal,
        }
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

fn handle(mut conn: TcpStream, dir: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let own = dir.join(conn.peer_addr()?.ip().to_string());
    let dir = if own.is_dir() { own.as_path() } else { dir };
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
    let mode = std::fs::read_to_string(dir.join("mode"))
        .map(|s| Mode::parse(&s))
        .unwrap_or(Mode::Normal);
    let file = match path.as_str() {
        "/openstack/latest/user_data" | "/latest/user-data" => match mode {
            Mode::Normal => Some("user_data"),
            Mode::NotFound => None,
            Mode::Error => {
                return respond(&mut conn, "500 Internal Server Error", b"");
            }
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
        },
        "/openstack/latest/meta_data.json" => Some("meta_data.json"),
        "/openstack/latest/network_data.json" => Some("network_data.json"),
        _ => None,
    };
    match file.and_then(|f| std::fs::read(dir.join(f)).ok()) {
        Some(body) => respond(&mut conn, "200 OK", &body),
        None => respond(&mut conn, "404 Not Found", b"404 Not Found\n"),
    }
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
