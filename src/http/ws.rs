//! The WebSocket upgrade at `GET /ws`: checks the request is a WebSocket handshake, the Origin is
//! ours or allowed and the server under its connection total; `session::open` then checks the
//! credential and the per-user limit, registers the session and reads its welcome in one store
//! job; then it answers 101 and hands the upgraded socket, wrapped with an explicit
//! `WebSocketConfig`, to `session::run` (or, if the upgrade fails, `session::abandon`). Every refusal happens before the upgrade, as a
//! plain HTTP status with a JSON error.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::api::{request_token, unauthorized};
use super::reply::{self, Resp};
use crate::app::App;
use crate::auth;
use crate::config::Limits;
use crate::session::{self, Open};

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// SECURITY: a browser page from another site must not open a socket with our cookie
/// (cross-site WebSocket hijacking). No Origin (non-browser clients) is fine.
pub fn origin_allowed(headers: &HeaderMap, https: bool, allowed: &[String]) -> bool {
    if super::same_origin(headers, https) {
        return true;
    }
    headers
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
}

/// tungstenite's limits, all set on purpose (its defaults are 128 KiB buffers per connection,
/// 64 MiB messages and an unlimited write buffer).
pub fn ws_config(l: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(l.ws_read_buffer)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(l.ws_max_write_buffer)
        .max_message_size(Some(l.max_frame_bytes))
        .max_frame_size(Some(l.max_frame_bytes))
        .accept_unmasked_frames(false)
}

/// `GET /ws`.
pub async fn upgrade(app: Arc<App>, mut req: Request<Incoming>, client: super::Client) -> Resp {
    let headers = req.headers();
    if !has_token(headers, CONNECTION, "upgrade") || !has_token(headers, UPGRADE, "websocket") {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "this endpoint speaks WebSocket only",
        );
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut r = reply::error(
            StatusCode::UPGRADE_REQUIRED,
            "bad_websocket_version",
            "WebSocket version 13 is required",
        );
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = headers
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "not_websocket",
            "missing Sec-WebSocket-Key",
        );
    };
    if !origin_allowed(headers, client.https, &app.config.allowed_origins) {
        return reply::error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "WebSocket connections from this origin are not allowed",
        );
    }
    let Some(hash) = request_token(headers).and_then(auth::token_hash) else {
        return unauthorized();
    };
    let Ok(permit) = app.sessions.clone().try_acquire_owned() else {
        return reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full",
            "the server has too many connections; try again later",
        );
    };
    // One store-reader job: the session lookup, the per-user limit, the hub registration and
    // the welcome read.
    let opened = match session::open(&app, hash).await {
        Ok(Open::Ready(o)) => o,
        Ok(Open::NoSession) => return unauthorized(),
        Ok(Open::TooMany) => {
            return reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "this account has too many open connections; close a tab or device",
            )
        }
        Err(e) => return reply::internal(&e),
    };
    let config = ws_config(&app.config.limits);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                app.metrics
                    .ws_upgrades
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                session::run(ws, app, opened, permit).await;
            }
            Err(e) => {
                tracing::debug!("upgrade failed: {e}");
                session::abandon(&app, *opened);
            }
        }
    });
    let mut resp = reply::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}
