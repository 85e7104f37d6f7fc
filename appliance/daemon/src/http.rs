//! A small, bounded HTTP/1.1 GET client for the metadata service.
//!
//! Only what a link-local metadata server needs: plain `http://`, one request per
//! connection (`Connection: close`), `Content-Length`, chunked or read-to-close bodies.
//! Every fetch is bounded three ways: a per-request timeout covering connect, headers
//! and body (a body that never ends, fast or slow, is a failure), a cap on the body
//! size, and a cap on the header size. A 404 is its own error: for user-data it means
//! "this instance has no payload", which is not worth retrying.
//!
//! Why not a crate: hyper/reqwest would bring TLS, pools and redirects we must not
//! use, and ~60 crates, for one GET to 169.254.169.254.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response headers larger than this are not from a metadata server.
pub const MAX_HEADER: usize = 16 * 1024;
/// Read granularity.
const READ_CHUNK: usize = 8 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole request: connect, send, headers and body.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_body: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("not found (HTTP 404)")]
    NotFound,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("bad URL {0:?}: only http://HOST[:PORT]/PATH is supported")]
    BadUrl(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl HttpError {
    /// Worth another try later (server not up yet, overloaded, or misbehaving once).
    pub fn is_transient(&self) -> bool {
        !matches!(self, HttpError::NotFound | HttpError::BadUrl(_))
    }
}

/// `http://host[:port]/path`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadUrl(s.to_string());
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 80,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || path.contains(['\r', '\n', ' ']) {
            return Err(bad());
        }
        Ok(Url {
            host,
            port,
            path: path.to_string(),
        })
    }

    /// This URL with `path` appended (no double slash).
    pub fn join(&self, path: &str) -> Url {
        let mut u = self.clone();
        u.path = format!(
            "{}/{}",
            self.path.trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        u
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// GET `url`; the body of a 200, or why not.
pub async fn get(url: &Url, limits: Limits) -> Result<Vec<u8>, HttpError> {
    match tokio::time::timeout(limits.timeout, get_unbounded_time(url, limits.max_body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout(limits.timeout)),
    }
}

async fn get_unbounded_time(url: &Url, max_body: usize) -> Result<Vec<u8>, HttpError> {
    let addr: SocketAddr = match url.host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, url.port),
        Err(_) => tokio::net::lookup_host((url.host.as_str(), url.port))
            .await?
            .next()
            .ok_or_else(|| HttpError::BadUrl(url.to_string()))?,
    };
    let mut stream = TcpStream::connect(addr).await?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cloudpiped\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = stream.read(&mut chunk).await?;
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&buf, eof, max_body)? {
            Parsed::Complete { status: 200, body } => return Ok(body),
            Parsed::Complete { status: 404, .. } => return Err(HttpError::NotFound),
            Parsed::Complete { status, .. } => return Err(HttpError::Status(status)),
            Parsed::Incomplete if eof => {
                return Err(HttpError::Malformed(
                    "connection closed mid-response".into(),
                ))
            }
            Parsed::Incomplete => {}
        }
    }
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Incomplete,
    Complete { status: u16, body: Vec<u8> },
}

/// Parse a whole response from `buf` (everything received so far; `eof` when the
/// peer has closed). Pure, so every framing case is unit tested.
pub fn parse_response(buf: &[u8], eof: bool, max_body: usize) -> Result<Parsed, HttpError> {
    let malformed = |m: &str| HttpError::Malformed(m.to_string());
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEADER {
            return Err(malformed("headers too large"));
        }
        return Ok(Parsed::Incomplete);
    };
    if head_end > MAX_HEADER {
        return Err(malformed("headers too large"));
    }
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| malformed("headers are not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("bad status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed("header line without ':'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| malformed("bad Content-Length"))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(malformed("unsupported Transfer-Encoding"));
            }
        }
    }
    let body = &buf[head_end + 4..];
    if status != 200 {
        // Not interested in error bodies: the status says it all.
        return Ok(Parsed::Complete {
            status,
            body: Vec::new(),
        });
    }
    if chunked {
        return parse_chunked(body, max_body);
    }
    if let Some(n) = content_length {
        if n > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        if body.len() >= n {
            return Ok(Parsed::Complete {
                status,
                body: body[..n].to_vec(),
            });
        }
        return Ok(Parsed::Incomplete);
    }
    if body.len() > max_body {
        return Err(HttpError::TooLarge(max_body));
    }
    if eof {
        Ok(Parsed::Complete {
            status,
            body: body.to_vec(),
        })
    } else {
        Ok(Parsed::Incomplete)
    }
}

fn parse_chunked(mut rest: &[u8], max_body: usize) -> Result<Parsed, HttpError> {
    let malformed = |m: &str| HttpError::Malformed(m.to_string());
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            if rest.len() > 1024 {
                return Err(malformed("chunk size line too long"));
            }
            return Ok(Parsed::Incomplete);
        };
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| malformed("chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| malformed("bad chunk size"))?;
        if size > max_body || body.len() + size > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        let data = &rest[line_end + 2..];
        if size == 0 {
            // Trailers are ignored; the body is complete once the final CRLF arrives.
            return if find(data, b"\r\n").is_some() {
                Ok(Parsed::Complete { status: 200, body })
            } else {
                Ok(Parsed::Incomplete)
            };
        }
        if data.len() < size + 2 {
            return Ok(Parsed::Incomplete);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(malformed("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn complete(b: &[u8]) -> Vec<u8> {
        match parse_response(b, false, MAX).unwrap() {
            Parsed::Complete { status: 200, body } => body,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://169.254.169.254").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("169.254.169.254", 80, "/")
        );
        let u = Url::parse("http://10.0.0.1:8080/base/").unwrap();
        assert_eq!(
            u.join("/openstack/latest/user_data").path,
            "/base/openstack/latest/user_data"
        );
        assert_eq!(u.to_string(), "http://10.0.0.1:8080/base/");
        let u = Url::parse("http://[fe80::a9fe:a9fe]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::a9fe:a9fe", 80));
        for bad in [
            "https://x/",
            "http://",
            "http://h:port/",
            "http://h/a b",
            "ftp://h",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_length_framing() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        assert_eq!(complete(r), b"hello");
        let partial = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel";
        assert_eq!(
            parse_response(partial, false, MAX).unwrap(),
            Parsed::Incomplete
        );
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n";
        assert!(matches!(
            parse_response(big, false, MAX),
            Err(HttpError::TooLarge(_))
        ));
    }

    #[test]
    fn chunked_framing() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(complete(r), b"abcde");
        let cut = &r[..r.len() - 2];
        assert_eq!(parse_response(cut, false, MAX).unwrap(), Parsed::Incomplete);
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            parse_response(bad, false, MAX),
            Err(HttpError::Malformed(_))
        ));
        // A stream of chunks that never ends trips the size cap.
        let mut endless = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..200 {
            endless.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
        }
        assert!(matches!(
            parse_response(&endless, false, MAX),
            Err(HttpError::TooLarge(_))
        ));
    }

    #[test]
    fn read_to_close_framing() {
        let r = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody";
        assert_eq!(parse_response(r, false, MAX).unwrap(), Parsed::Incomplete);
        assert_eq!(
            parse_response(r, true, MAX).unwrap(),
            Parsed::Complete {
                status: 200,
                body: b"body".to_vec()
            }
        );
        let mut endless = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        endless.resize(endless.len() + MAX + 1, b'A');
        assert!(matches!(
            parse_response(&endless, false, MAX),
            Err(HttpError::TooLarge(_))
        ));
    }

    #[test]
    fn statuses_and_garbage() {
        let r = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n";
        assert!(matches!(
            parse_response(r, false, MAX).unwrap(),
            Parsed::Complete { status: 404, .. }
        ));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false, MAX).is_err());
        assert!(parse_response(&[b'x'; MAX_HEADER + 10], false, MAX).is_err());
        assert!(!HttpError::NotFound.is_transient());
        assert!(HttpError::Status(503).is_transient());
    }

    /// Serve one canned response on loopback, optionally then stalling forever.
    async fn serve_once(response: &'static [u8], stall: bool) -> Url {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(response).await;
            if stall {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
        Url::parse(&format!(
            "http://127.0.0.1:{port}/openstack/latest/user_data"
        ))
        .unwrap()
    }

    const LIMITS: Limits = Limits {
        timeout: Duration::from_millis(500),
        max_body: MAX,
    };

    #[tokio::test]
    async fn real_socket_ok_404_and_stall() {
        let u = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            true,
        )
        .await;
        assert_eq!(get(&u, LIMITS).await.unwrap(), b"ok");
        let u = serve_once(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .await;
        assert!(matches!(get(&u, LIMITS).await, Err(HttpError::NotFound)));
        let u = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).await;
        assert!(matches!(get(&u, LIMITS).await, Err(HttpError::Timeout(_))));
        let u = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false).await;
        assert!(matches!(
            get(&u, LIMITS).await,
            Err(HttpError::Malformed(_))
        ));
        // Nothing listening: a transient error, not a 404.
        let u = Url::parse("http://127.0.0.1:1/x").unwrap();
        assert!(get(&u, LIMITS).await.unwrap_err().is_transient());
    }
}
