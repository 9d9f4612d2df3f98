//! HTTP: the one routing table and the steps every request and response goes through.
//!
//! `handle` reads top to bottom: check the Origin of state-changing requests, route by
//! `(method, path)` to `api` (JSON account endpoints) or `assets` (the embedded web client),
//! then add the security headers to whatever comes back. Only this module (and `server`, which
//! runs hyper) uses hyper types. Handlers reach the database only through `App::db`.

pub mod admin_api;
pub mod api;
pub mod assets;
pub mod files;
pub mod me_api;
pub mod reply;
pub mod ws;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, HOST, ORIGIN};
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::app::App;
use crate::config::Config;
use reply::Resp;

// SECURITY: no inline script or style, no eval, no plugins, no framing, connections only to us.
// The one inline script allowed is the import map build.rs adds to index.html, by its hash
// (`assets::SCRIPT_HASHES`, the same file).
const CSP: &str = concat!(
    "default-src 'self'; script-src 'self' ",
    include_str!(concat!(env!("OUT_DIR"), "/csp-script-hashes.txt")),
    "; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
);

/// The body of every response: a whole buffer, or a stream (the backup download).
pub type AnyBody = http_body_util::Either<reply::Body, admin_api::Streamed>;

/// Entry point for every HTTP request (what `server` runs): the backup download streams its
/// body; everything else is `handle`'s buffered reply.
pub async fn serve(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<hyper::Response<AnyBody>, Infallible> {
    use http_body_util::Either;
    if req.method() == Method::GET && req.uri().path() == "/api/admin/backup" {
        let mut resp = match admin_api::backup(app.clone(), req.headers()).await {
            Ok(r) => r.map(Either::Right),
            Err(r) => r.map(Either::Left),
        };
        finish_headers(&app, resp.headers_mut());
        tracing::debug!(%peer, status = resp.status().as_u16(), "backup download");
        return Ok(resp);
    }
    if matches!(*req.method(), Method::GET | Method::HEAD)
        && req.uri().path().starts_with("/files/")
    {
        let mut resp = match files::download(app.clone(), &req).await {
            Ok(r) => r.map(Either::Right),
            Err(r) => r.map(Either::Left),
        };
        finish_headers(&app, resp.headers_mut());
        files::finish_file_headers(resp.headers_mut());
        return Ok(resp);
    }
    let resp = handle(app, peer, req).await?;
    Ok(resp.map(Either::Left))
}

/// Entry point for every HTTP request with a buffered reply.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let client = Client::of(&app.config, peer, req.headers());
    let app2 = app.clone();
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut resp = if changes && !same_origin(req.headers(), client.https) {
        // SECURITY: browsers send Origin on cross-site POSTs (and PUT, PATCH, DELETE); refuse
        // them outright.
        reply::error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "cross-origin requests are not allowed",
        )
    } else {
        route(app, client, req).await
    };
    finish_headers(&app2, resp.headers_mut());
    tracing::debug!(client = %client.ip, %peer, %method, status = resp.status().as_u16(), "request");
    Ok(resp)
}

/// Who sent a request, as far as the server can tell.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    /// The client's address: the TCP peer, or with `--behind-proxy` the address the proxy
    /// reports. Used for rate limits, logs and the loopback check of /metrics.
    pub ip: IpAddr,
    /// The client reached us over https (our TLS, or the proxy's per X-Forwarded-Proto): cookies
    /// get `Secure`.
    pub https: bool,
}

impl Client {
    pub fn of(config: &Config, peer: SocketAddr, headers: &HeaderMap) -> Client {
        let mut c = Client {
            ip: peer.ip(),
            https: config.tls.is_some(),
        };
        if config.behind_proxy {
            // SECURITY: only trusted with --behind-proxy; anyone could send these headers.
            if let Some(ip) = forwarded_ip(headers) {
                c.ip = ip;
            }
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok());
            if proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https")) {
                c.https = true;
            }
        }
        c
    }
}

/// The client address a reverse proxy reports: `X-Real-IP`, else the last `X-Forwarded-For`
/// entry (the one the nearest proxy appended; earlier ones are whatever the client claimed).
fn forwarded_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let parse = |s: &str| {
        let s = s.trim();
        s.parse::<IpAddr>()
            .ok()
            .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
    };
    if let Some(v) = headers.get("x-real-ip").and_then(|v| v.to_str().ok()) {
        if let Some(ip) = parse(v) {
            return Some(ip);
        }
    }
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()?;
    parse(last)
}

async fn route(app: Arc<App>, client: Client, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let ip = client.ip;
    match (req.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/healthz") => healthz(&app).await,
        // SECURITY: operational counters are for the machine's own monitoring only, unless the
        // admin opened them with --metrics-public.
        (&Method::GET, "/metrics") if ip.is_loopback() || app.config.metrics_public => {
            metrics(&app).await
        }
        (&Method::POST, "/api/register") => api::register(app, req, client).await,
        (&Method::POST, "/api/login") => api::login(app, req, client).await,
        (&Method::POST, "/api/logout") => api::logout(app, req, client).await,
        (&Method::GET, "/api/me") => api::me(app, req).await,
        (&Method::PATCH, "/api/me") => me_api::update_profile(app, req).await,
        (&Method::POST, "/api/me/password") => me_api::change_password(app, req, client).await,
        (&Method::POST, "/api/me/logout-others") => me_api::logout_others(app, req).await,
        (&Method::GET, "/api/server") => api::server_info(app, client).await,
        (&Method::POST, "/api/files") => files::upload(app, req).await,
        (&Method::GET, "/ws") => ws::upgrade(app, req, client).await,
        (&Method::GET | &Method::HEAD, "/ca.crt") if app.config.ca_der.is_some() => ca_cert(&app),
        (_, p) if p.starts_with("/api/admin/") => admin_api::route(app, req).await,
        (_, "/ws" | "/api/server") => method_not_allowed("GET"),
        (_, "/api/register" | "/api/login" | "/api/logout") => method_not_allowed("POST"),
        (_, "/api/me/password" | "/api/me/logout-others") => method_not_allowed("POST"),
        (_, "/api/me") => method_not_allowed("GET, PATCH"),
        (_, "/api/files") => method_not_allowed("POST"),
        (_, p) if p.starts_with("/api/") => {
            reply::error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
        }
        (&Method::GET | &Method::HEAD, _) => assets::serve(req.uri(), req.headers()),
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

/// `GET /ca.crt` with `--tls-self-signed`: the certificate authority to install on a device
/// (DER; phones offer to install it when downloaded).
fn ca_cert(app: &App) -> Resp {
    let der = app.config.ca_der.clone().unwrap_or_default();
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(der)));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-x509-ca-cert"),
    );
    h.insert(
        hyper::header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"chatd-ca.crt\""),
    );
    r
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    /// Why the server is not ok: `database_unreadable`, `storage_full`, `storage_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// While writes are refused: since when (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    since_ms: Option<u64>,
    version: &'static str,
    /// Damaged records met since the start (only when there were any).
    #[serde(skip_serializing_if = "Option::is_none")]
    damaged_records: Option<u64>,
}

impl Health {
    fn new(status: &'static str) -> Health {
        Health {
            status,
            reason: None,
            message: None,
            since_ms: None,
            version: crate::VERSION,
            damaged_records: None,
        }
    }
}

/// `GET /healthz`: 200 `ok` when the database answers a read and takes writes; 503 otherwise:
/// `database unavailable` when a read fails, `degraded` (reads work) while writes are refused,
/// with the reason. Damaged records met since the start make it 200 `degraded` with reason
/// `damaged_records` (chat goes on; an admin should run `chatd check`).
async fn healthz(app: &Arc<App>) -> Resp {
    let mut h = Health::new("ok");
    let damaged = crate::store::damage::seen();
    h.damaged_records = (damaged > 0).then_some(damaged);
    let mut status = StatusCode::OK;
    if let Err(e) = app.db(|s| s.user_count()).await {
        tracing::error!("health check failed: {e}");
        h.status = "database unavailable";
        h.reason = Some("database_unreadable");
        h.message = Some(e.to_string());
        status = StatusCode::SERVICE_UNAVAILABLE;
    } else if let Some(w) = app.store.write_health() {
        h.status = "degraded";
        h.reason = Some(w.problem.code());
        h.message = Some(format!(
            "writes are refused: {}{}",
            w.detail,
            match w.needs_bytes {
                0 => String::new(),
                n => format!("; it needs at least {} KiB free", n.div_ceil(1024)),
            }
        ));
        h.since_ms = Some(w.since_ms);
        status = StatusCode::SERVICE_UNAVAILABLE;
    } else if damaged > 0 {
        h.status = "degraded";
        h.reason = Some("damaged_records");
        h.message = Some(format!(
            "{damaged} damaged database records were met (shown as unreadable messages); run `chatd check`"
        ));
    }
    reply::json(status, &h)
}

/// Every request while the server is still opening its database (after a crash, recovery can
/// take a moment): `/healthz` answers 503 `{"status":"starting"}`, everything else 503
/// `starting` with `Retry-After: 1`. The connection is closed after the reply.
pub async fn handle_starting(req: Request<Incoming>) -> Result<Resp, Infallible> {
    let mut resp = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            reply::json(StatusCode::SERVICE_UNAVAILABLE, &Health::new("starting"))
        }
        _ => reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the server is starting; try again in a moment",
        ),
    };
    resp.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    security_headers(resp.headers_mut());
    Ok(resp)
}

/// `GET /metrics` (loopback only unless `--metrics-public`): Prometheus text format.
async fn metrics(app: &Arc<App>) -> Resp {
    let db_path = app.config.data_dir.join(crate::store::DB_FILE);
    let counts = app.db(|s| Ok((s.user_count()?, s.message_count()?))).await;
    if let Err(e) = &counts {
        tracing::warn!("metrics: cannot read the database: {e}");
    }
    let counts = counts.ok();
    let snapshot = crate::metrics::Snapshot {
        sessions: app.hub.session_count() as u64,
        users_online: app.hub.users_online() as u64,
        users: counts.map(|c| c.0),
        messages_in_store: counts.map(|c| c.1),
        db_bytes: std::fs::metadata(db_path).ok().map(|m| m.len()),
        uptime: app.started.elapsed(),
        storage_refusing: app.store.write_health().map(|w| w.problem.code()),
        storage_stops: app.store.write_health_counts().0,
        storage_refused: app.store.write_health_counts().1,
        damaged_records: crate::store::damage::seen(),
    };
    let mut body = app.metrics.render(&snapshot);
    app.search
        .render_metrics(&mut body, snapshot.messages_in_store);
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// True when the request has no Origin header (not a browser cross-site request) or its Origin
/// is this server's own: the scheme the client used (`https` when it came over TLS, ours or,
/// with `--behind-proxy`, the proxy's per `X-Forwarded-Proto`: see `Client::https`) and the
/// host the request was sent to. A page served over http is another origin than the same host
/// over https, and may not act for it.
pub fn same_origin(headers: &HeaderMap, https: bool) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    let scheme = if https { "https://" } else { "http://" };
    let authority = origin
        .get(..scheme.len())
        .filter(|s| s.eq_ignore_ascii_case(scheme))
        .and_then(|_| origin.get(scheme.len()..));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The headers every response gets: the security headers, and HSTS when chatd itself serves
/// TLS (behind a proxy, HSTS is the proxy's business).
fn finish_headers(app: &App, h: &mut HeaderMap) {
    security_headers(h);
    if app.config.tls.is_some() {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
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
        assert!(same_origin(&h, false));
        h.insert(HOST, HeaderValue::from_static("chat.lan:8080"));
        assert!(same_origin(&h, false));
        h.insert(ORIGIN, HeaderValue::from_static("http://chat.lan:8080"));
        assert!(same_origin(&h, false));
        assert!(!same_origin(&h, true), "http page, https server");
        h.insert(ORIGIN, HeaderValue::from_static("HTTPS://Chat.lan:8080"));
        assert!(same_origin(&h, true));
        assert!(!same_origin(&h, false), "https page, http server");
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h, false));
        for o in [
            "null",
            "ws://chat.lan:8080",
            "chat.lan:8080",
            "http://",
            "é",
        ] {
            h.insert(
                ORIGIN,
                HeaderValue::from_str(o).unwrap_or(HeaderValue::from_static("x")),
            );
            assert!(!same_origin(&h, false), "{o}");
            assert!(!same_origin(&h, true), "{o}");
        }
    }
}
