//! Status and metrics over HTTP on the appliance's tenant address, when the
//! payload sets `status_port`: for tenant users who do not log in to the
//! appliance (`cloudpipe status --all` from a tenant VM or through the tunnel)
//! and for Prometheus.
//!
//! - `GET /status`: the status document (JSON, [`cloudpipe_core::status`]). A
//!   request from a tunnel client (its source is one of a peer's allowed IPs)
//!   sees no endpoint but its own: other users' public addresses are theirs.
//! - `GET /metrics`: Prometheus text format ([`super::metrics`]).
//!
//! Only the tenant subnet and tunnel clients are answered (403 otherwise), as the
//! recipe's security group rule allows the tenant subnet only.

use super::{metrics, Shared};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// A client gets this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it does (keep-alive included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Bind the listener (at boot, before privileges are dropped: the port may be
/// below 1024).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("binding the status listener on TCP {addr}: {e}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Accept and serve connections until the task is dropped.
pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "status listener");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "status listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, peer.ip(), &shared)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                tracing::debug!(error = %e, %peer, "status listener: connection");
            }
            drop(permit);
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The answer to one request from `from`.
fn respond(req: &Request<Incoming>, from: IpAddr, shared: &Shared) -> Response<Full<Bytes>> {
    let view = shared.view();
    let tunnel_client = view.peer_for(from).map(|p| p.public_key);
    let in_subnet = matches!(from, IpAddr::V4(v4) if view.subnet.contains(v4));
    if tunnel_client.is_none() && !in_subnet {
        return reply(
            StatusCode::FORBIDDEN,
            TEXT,
            format!(
                "only the tenant subnet {} and tunnel clients may read this\n",
                view.subnet
            ),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/status" => {
            let mut status = shared.status();
            if let Some(own) = tunnel_client {
                status.redact_endpoints(Some(&own.to_base64()));
            }
            match serde_json::to_string_pretty(&status) {
                Ok(mut json) => {
                    json.push('\n');
                    reply(StatusCode::OK, "application/json", json)
                }
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
            }
        }
        "/metrics" => reply(StatusCode::OK, metrics::CONTENT_TYPE, metrics::render(shared)),
        "/" => reply(
            StatusCode::OK,
            TEXT,
            format!(
                "cloudpipe appliance of network {}\n/status  live status (JSON)\n/metrics Prometheus metrics\n",
                view.network
            ),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /status or /metrics\n".into(),
        ),
    }
}
