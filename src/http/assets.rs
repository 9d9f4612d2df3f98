//! The web client, embedded in the binary with rust-embed (`debug-embed` is on, so debug builds
//! and tests serve exactly the bytes a release ships, not files read from disk at run time).
//! `build.rs` prepares `assets/` into `OUT_DIR`: each text file as is and compressed with gzip
//! and brotli (so nothing is compressed at run time), and the HTML with `?v=<content hash>` on
//! its references to embedded files plus an import map giving every JavaScript module its
//! hashed URL.
//!
//! Serves `GET`/`HEAD` with a Content-Type from the extension, the encoding the client prefers
//! among those it accepts (`Accept-Encoding`: brotli, then gzip, else identity; always
//! `Vary: Accept-Encoding`), a strong ETag per representation (304 when unchanged), and:
//! `Cache-Control: public, max-age=31536000, immutable` when the URL carries the file's current
//! content hash (`?v=`, which changes whenever the file does), `no-cache` otherwise (index.html
//! and unhashed URLs: always revalidated).
//! SECURITY: names are looked up in the embedded table only; no path ever reaches the
//! filesystem, so `..` cannot escape, and anything not embedded is 404.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY,
};
use hyper::{Response, StatusCode, Uri};
use rust_embed::RustEmbed;

use super::reply::{self, Resp};

/// The files as served without content encoding.
#[derive(RustEmbed)]
#[folder = "$OUT_DIR/assets/"]
struct Assets;

/// gzip-compressed copies (only of files that compress).
#[derive(RustEmbed)]
#[folder = "$OUT_DIR/assets-gz/"]
struct AssetsGz;

/// brotli-compressed copies (only of files that compress).
#[derive(RustEmbed)]
#[folder = "$OUT_DIR/assets-br/"]
struct AssetsBr;

/// The CSP sources of the inline scripts `build.rs` added (the import map's hash).
pub const SCRIPT_HASHES: &str = include_str!(concat!(env!("OUT_DIR"), "/csp-script-hashes.txt"));

/// `Cache-Control` of a URL that names the content it returns.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

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
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// A content coding the server has a copy in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Br,
    Gzip,
    Identity,
}

/// Whether the request's `Accept-Encoding` accepts `coding` (`*` counts; `q=0` refuses).
fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    let mut star = None;
    for item in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

/// The content hash `build.rs` puts into URLs for a file (first 16 hex digits of its SHA-256).
fn url_hash(sha256: &[u8; 32]) -> String {
    let mut s = String::with_capacity(16);
    for b in &sha256[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The `v` parameter of a query string.
fn version_param(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("v="))
}

/// Serves the embedded file for a request URI, or a 404.
pub fn serve(uri: &Uri, req_headers: &HeaderMap) -> Resp {
    let name = match uri.path().trim_start_matches('/') {
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
    let immutable = version_param(uri.query()) == Some(url_hash(&hash).as_str());
    let (coding, data) = if let Some(f) = AssetsBr::get(name).filter(|_| accepts(req_headers, "br"))
    {
        (Coding::Br, f.data)
    } else if let Some(f) = AssetsGz::get(name).filter(|_| accepts(req_headers, "gzip")) {
        (Coding::Gzip, f.data)
    } else {
        (Coding::Identity, file.data)
    };
    let mut etag = String::with_capacity(40);
    etag.push('"');
    for b in &hash[..16] {
        let _ = write!(etag, "{b:02x}");
    }
    etag.push_str(match coding {
        Coding::Br => "-br",
        Coding::Gzip => "-gz",
        Coding::Identity => "",
    });
    etag.push('"');
    // If-None-Match compares weakly: a proxy may have turned our ETag into W/"…".
    let matches = req_headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
            })
        });
    let mut resp = if matches {
        reply::empty(StatusCode::NOT_MODIFIED)
    } else {
        let body = match data {
            Cow::Borrowed(b) => Bytes::from_static(b),
            Cow::Owned(v) => Bytes::from(v),
        };
        Response::new(Full::new(body))
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if immutable { IMMUTABLE } else { "no-cache" }),
    );
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    match coding {
        Coding::Br => {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        }
        Coding::Gzip => {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Coding::Identity => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts(&ae("gzip, deflate, br, zstd"), "br"));
        assert!(accepts(&ae("gzip, deflate, br"), "gzip"));
        assert!(!accepts(&ae("gzip"), "br"));
        assert!(!accepts(&ae("br;q=0, gzip"), "br"));
        assert!(accepts(&ae("*"), "br"));
        assert!(!accepts(&ae("*;q=0"), "gzip"));
        assert!(accepts(&ae("GZIP;q=0.5"), "gzip"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
    }

    #[test]
    fn every_module_in_the_import_map_is_embedded_under_its_hash() {
        let index = Assets::get("index.html").expect("index.html");
        let html = std::str::from_utf8(&index.data).expect("utf-8");
        let start = html
            .find("<script type=\"importmap\">")
            .expect("import map")
            + 25;
        let end = start + html[start..].find("</script>").expect("end");
        let map: serde_json::Value = serde_json::from_str(&html[start..end]).expect("json");
        let imports = map["imports"].as_object().expect("imports");
        assert!(imports.len() >= 2, "{imports:?}");
        for (k, v) in imports {
            let name = k.trim_start_matches('/');
            let file = Assets::get(name).expect("embedded");
            let want = format!("{k}?v={}", url_hash(&file.metadata.sha256_hash()));
            assert_eq!(v.as_str(), Some(want.as_str()));
        }
        // The policy allows exactly this inline script.
        use sha2_check::digest_b64;
        assert_eq!(
            SCRIPT_HASHES,
            format!("'sha256-{}'", digest_b64(&html[start..end]))
        );
    }

    /// SHA-256 in base64 via ring (a dependency already), to check build.rs's CSP source.
    mod sha2_check {
        pub fn digest_b64(s: &str) -> String {
            let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for c in d.as_ref().chunks(3) {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                out.push(T[(n >> 18) as usize & 63] as char);
                out.push(T[(n >> 12) as usize & 63] as char);
                out.push(if c.len() > 1 {
                    T[(n >> 6) as usize & 63] as char
                } else {
                    '='
                });
                out.push(if c.len() > 2 {
                    T[n as usize & 63] as char
                } else {
                    '='
                });
            }
            out
        }
    }
}
