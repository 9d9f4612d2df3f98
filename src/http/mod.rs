//! HTTP: the one routing table and the steps every request and response goes through.
//!
//! `handle` reads top to bottom: check the Origin of state-changing requests, route by
//! `(method, path)` to `api` (JSON account endpoints) or `assets` (the embedded web client),
//! then add the security headers to whatever comes back. Only this module (and `server`, which
//! runs hyper) uses hyper types. Handlers reach the database only through `App::db`.

pub mod api;
pub mod assets;
pub mod reply;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, HOST, ORIGIN};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::app::App;
use reply::Resp;

// SECURITY: no inline script or style, no eval, no plugins, no framing, connections only to us.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Entry point for every HTTP request.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let mut resp = if method == Method::POST && !same_origin(req.headers()) {
        // SECURITY: browsers send Origin on cross-site POSTs; refuse them outright.
        reply::error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "cross-origin requests are not allowed",
        )
    } else {
        route(app, peer, req).await
    };
    security_headers(resp.headers_mut());
    tracing::debug!(%peer, %method, status = resp.status().as_u16(), "request");
    Ok(resp)
}

async fn route(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let ip = peer.ip();
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/healthz") => healthz(&app).await,
        // SECURITY: operational counters are for the machine's own monitoring only.
        (&Method::GET, "/metrics") if ip.is_loopback() => metrics(&app),
        (&Method::POST, "/api/register") => api::register(app, req, ip).await,
        (&Method::POST, "/api/login") => api::login(app, req, ip).await,
        (&Method::POST, "/api/logout") => api::logout(app, req).await,
        (&Method::GET, "/api/me") => api::me(app, req).await,
        (&Method::GET, "/ws") => ws::upgrade(app, req).await,
        (_, "/ws") => method_not_allowed("GET"),
        (_, "/api/register" | "/api/login" | "/api/logout") => method_not_allowed("POST"),
        (_, "/api/me") => method_not_allowed("GET"),
        (_, p) if p.starts_with("/api/") => {
            reply::error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
        }
        (&Method::GET | &Method::HEAD, p) => assets::serve(p, req.headers()),
        _ => method_not_allowed("GET, HEAD"),
    }
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

/// `GET /healthz`: 200 when the database answers a read, 503 otherwise.
async fn healthz(app: &Arc<App>) -> Resp {
    match app.db(|s| s.user_count()).await {
        Ok(_) => reply::json(
            StatusCode::OK,
            &Health {
                status: "ok",
                version: crate::VERSION,
            },
        ),
        Err(e) => {
            tracing::error!("health check failed: {e}");
            reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Health {
                    status: "database unavailable",
                    version: crate::VERSION,
                },
            )
        }
    }
}

/// `GET /metrics` (loopback only): Prometheus text format.
fn metrics(app: &Arc<App>) -> Resp {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let w = &app.writer_stats;
    let mut out = String::with_capacity(1024);
    let mut put = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    put(
        "chatd_writer_commits_total",
        "counter",
        "Write transactions committed (fsync'd) by the message writer.",
        w.commits.load(Relaxed),
    );
    put(
        "chatd_writer_ops_total",
        "counter",
        "Operations applied by the message writer (sends, reads, membership changes).",
        w.ops.load(Relaxed),
    );
    put(
        "chatd_messages_stored_total",
        "counter",
        "New messages stored.",
        w.messages.load(Relaxed),
    );
    put(
        "chatd_websocket_sessions",
        "gauge",
        "Open WebSocket sessions.",
        app.hub.session_count() as u64,
    );
    put(
        "chatd_users_online",
        "gauge",
        "Users with at least one open session.",
        app.hub.users_online() as u64,
    );
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(out)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// True when the request has no Origin header (not a browser cross-site request) or its Origin
/// names the host the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn security_headers(h: &mut HeaderMap) {
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_check() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(HOST, HeaderValue::from_static("chat.lan:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://chat.lan:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }
}
