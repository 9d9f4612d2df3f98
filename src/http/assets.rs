//! The web client, embedded in the binary with rust-embed (`debug-embed` is on, so debug builds
//! and tests serve exactly the bytes a release ships, not files read from disk at run time).
//! Serves `GET`/`HEAD` with a Content-Type from the extension, a strong ETag from the content
//! hash and `Cache-Control: no-cache` (always revalidate, 304 when unchanged).
//! SECURITY: names are looked up in the embedded table only; no path ever reaches the
//! filesystem, so `..` cannot escape, and anything not embedded is 404.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Response, StatusCode};
use rust_embed::RustEmbed;

use super::reply::{self, Resp};

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serves the embedded file for a request path, or a 404.
pub fn serve(path: &str, req_headers: &HeaderMap) -> Resp {
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    if name
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.is_empty())
    {
        return not_found();
    }
    let Some(file) = Assets::get(name) else {
        return not_found();
    };
    let hash = file.metadata.sha256_hash();
    let mut etag = String::with_capacity(34);
    etag.push('"');
    for b in &hash[..16] {
        etag.push_str(&format!("{b:02x}"));
    }
    etag.push('"');
    let matches = req_headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if matches {
        reply::empty(StatusCode::NOT_MODIFIED)
    } else {
        let body = match file.data {
            Cow::Borrowed(b) => Bytes::from_static(b),
            Cow::Owned(v) => Bytes::from(v),
        };
        Response::new(Full::new(body))
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    resp
}

fn not_found() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(b"404 not found\n")));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
