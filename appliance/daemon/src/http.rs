//! A small, bounded HTTP/1.1 GET client for the metadata service.
//!
//! Only what a link-local metadata server needs: plain `http://`, one request per
//! connection (`Connection: close`), `Content-Length`, chunked or read-to-close bodies.
//! Every fetch is bounded three ways: a per-request timeout covering connect, headers
//! and body (a body that never ends, fast or slow, is a failure), a cap on the body
//! size, and a cap on the header size. A 404 is its own error: for user-data it means
//! "this instance has no payload", which is not worth retrying.
//!
//! The response itself is read by cloudpipe-core's `metadata::http` (pure, fuzzed);
//! this module is the socket and the clock around it.
//!
//! Why not a crate: hyper/reqwest would bring TLS, pools and redirects we must not
//! use, and ~60 crates, for one GET to 169.254.169.254.

use cloudpipe_core::metadata::http::{self as response, parse_response, Parsed, ResponseError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

impl From<ResponseError> for HttpError {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::TooLarge(n) => HttpError::TooLarge(n),
            ResponseError::Malformed(m) => HttpError::Malformed(m.to_string()),
        }
    }
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
        match parse_response(&buf, eof, response::Limits::body(max_body))? {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    #[test]
    fn only_404_and_bad_urls_are_final() {
        assert!(!HttpError::NotFound.is_transient());
        assert!(!HttpError::BadUrl("x".into()).is_transient());
        assert!(HttpError::Status(503).is_transient());
        assert!(HttpError::from(ResponseError::Malformed("x")).is_transient());
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
