//! `POST /api/files` (upload), `GET /files/<id>` (download). The routes only: bytes on disk
//! are `crate::files`' business, metadata and the access check the store's (`store::files`).
//!
//! Upload: the session (cookie or bearer) and `Content-Length` are checked, then the size
//! against `--max-upload-mb` and `--files-quota-mb`; over either the reply is 413 at once and
//! the connection closed, without reading the body. The body is streamed to disk frame by
//! frame (`BodyExt::frame`), never held whole; a body that ends short of `Content-Length`, or
//! stalls for `Limits::upload_stall`, leaves no file. The reply (201) comes after the file is
//! fsync'd and renamed and its record committed durably.
//!
//! Download: 404 for an unknown id, no right, or no session alike. `Range` (one range) and
//! `ETag`/`If-None-Match`; bytes streamed from the file on the blocking pool. Only PNG, JPEG,
//! GIF and WebP (decided from the bytes at upload) are inline; anything else is an attachment
//! with a sanitized name. Every file response has `nosniff` and a sandboxing CSP.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONNECTION, CONTENT_DISPOSITION, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RANGE,
};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::admin_api::Streamed;
use super::api::{current_user, unauthorized};
use super::reply::{self, Resp};
use crate::app::App;
use crate::model::{now_ms, parse_file_id, UserId};
use crate::store::files::FileRecord;
use crate::store::health::Problem;

/// What every file response says besides its type: no sniffing, no scripts, no subresources.
const FILE_CSP: &str = "sandbox; default-src 'none'";

/// `POST /api/files?name=<file name>`.
pub async fn upload(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let user = match current_user(&app, req.headers()).await {
        Ok(Some(u)) => u,
        Ok(None) => return closing(unauthorized()),
        Err(r) => return closing(r),
    };
    let Some(name) = query_param(req.uri().query().unwrap_or(""), "name") else {
        return closing(reply::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give the file name: POST /api/files?name=<percent-encoded name>",
        ));
    };
    let name = crate::files::sanitize_name(&name);
    let len = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    let (Some(len), false) = (len, chunked) else {
        return closing(reply::error(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "an upload needs a Content-Length header (no chunked bodies)",
        ));
    };
    let limits = &app.config.limits;
    if len > limits.max_upload_bytes {
        return closing(reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            &format!(
                "the file is {len} bytes; at most {} are allowed",
                limits.max_upload_bytes
            ),
        ));
    }
    // Writes refused (disk full or failing): say so before reading anything.
    if let Err(e) = app.store.write_health().map_or(Ok(()), |w| {
        Err(crate::store::StoreError::Unwritable(
            crate::store::health::Unwritable {
                problem: w.problem,
                detail: w.detail,
            },
        ))
    }) {
        return closing(reply::store_error(&e));
    }
    let Ok(_permit) = app.files.uploads.clone().try_acquire_owned() else {
        let mut r = reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many uploads at once; try again in a moment",
        );
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return closing(r);
    };
    if !app.files.reserve(len, limits.files_quota_bytes) {
        return closing(reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
            "the server's file storage is full (its quota); ask an admin",
        ));
    }
    let res = receive(&app, user.id, name, len, req.into_body()).await;
    app.files.release(len);
    match res {
        Ok(f) => reply::json(StatusCode::CREATED, &json!({ "file": f.attachment() })),
        Err(r) => closing(r),
    }
}

/// Streams the body to disk and records the file. Err is the reply.
async fn receive(
    app: &Arc<App>,
    uploader: UserId,
    name: String,
    len: u64,
    mut body: Incoming,
) -> Result<FileRecord, Resp> {
    let disk = |e: &std::io::Error| {
        tracing::warn!("upload by {uploader}: {e}");
        let (status, code, msg) = match Problem::of(e) {
            Problem::Full => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the server's disk is full; nothing was stored",
            ),
            Problem::Io => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_error",
                "the server could not write the file; nothing was stored",
            ),
        };
        reply::error(status, code, msg)
    };
    let mut upload = app.files.begin().map_err(|e| disk(&e))?;
    let stall = app.config.limits.upload_stall;
    let mut got = 0u64;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(None) => break,
            // The client went away (or sent a broken body): `upload` is dropped, no file.
            Ok(Some(Err(_))) | Err(_) => return Err(incomplete(got, len)),
        };
        if let Ok(data) = frame.into_data() {
            got += data.len() as u64;
            if got > len {
                return Err(incomplete(got, len));
            }
            if upload.write(data).await.is_err() {
                // The disk thread stopped: its error comes from `finish`.
                break;
            }
        }
    }
    if got != len {
        // The disk failed, or the body was short.
        return match upload.finish().await {
            Err(e) => Err(disk(&e)),
            Ok(_) => Err(incomplete(got, len)),
        };
    }
    let id = crate::files::new_id().map_err(|e| reply::internal(&e))?;
    let guard = app.files.placing.lock().await;
    let stored = upload.finish().await.map_err(|e| disk(&e))?;
    let rec = FileRecord {
        id,
        uploader,
        sha256: stored.sha256,
        size: stored.size,
        created_ms: now_ms(),
        attached: false,
        width: stored.dims.map(|d| d.0),
        height: stored.dims.map(|d| d.1),
        mime: stored.mime.to_string(),
        name,
    };
    let r2 = rec.clone();
    let res = app.db(move |s| s.add_file(&r2)).await;
    drop(guard);
    res.map_err(|e| reply::store_error(&e))?;
    Ok(rec)
}

fn incomplete(got: u64, len: u64) -> Resp {
    reply::error(
        StatusCode::BAD_REQUEST,
        "incomplete_upload",
        &format!("the body had {got} bytes; Content-Length said {len}; nothing was stored"),
    )
}

/// The reply closes the connection: the rest of a body that was not read must not be taken
/// for the next request.
fn closing(mut r: Resp) -> Resp {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// `GET|HEAD /files/<id>[?download=1]`: the file's bytes, or 404.
pub async fn download(app: Arc<App>, req: &Request<Incoming>) -> Result<Response<Streamed>, Resp> {
    let path = req.uri().path();
    let id = path
        .strip_prefix("/files/")
        .and_then(parse_file_id)
        .ok_or_else(not_found)?;
    let user = match current_user(&app, req.headers()).await {
        Ok(Some(u)) => u,
        Ok(None) => return Err(not_found()),
        Err(r) => return Err(r),
    };
    let rec = app
        .db(move |s| s.file_for(user.id, id))
        .await
        .map_err(|e| reply::store_error(&e))?
        .ok_or_else(not_found)?;
    let etag = format!("\"{}\"", &rec.sha_hex()[..32]);
    let headers = req.headers();
    let forced = req
        .uri()
        .query()
        .is_some_and(|q| query_param(q, "download").is_some());
    let inline = crate::files::inline_type(&rec.mime) && !forced;
    if headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let (_tx, rx) = mpsc::channel(1);
        let mut r = Response::new(Streamed::new(rx));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        file_headers(&mut r, &rec, &etag, inline);
        return Ok(r);
    }
    let size = rec.size;
    let range = headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (start, end, status) = match range {
        None | Some(RangeSpec::Ignore) => (0, size, StatusCode::OK),
        Some(RangeSpec::Range(a, b)) => (a, b, StatusCode::PARTIAL_CONTENT),
        Some(RangeSpec::Unsatisfiable) => {
            let mut r = reply::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                "the range is outside the file",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Err(r);
        }
    };
    let path = app.files.path_of(&rec.sha_hex());
    let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
        .await
        .map_err(|e| reply::internal(&e))?
        .map_err(|e| {
            tracing::error!("file {} is missing on disk: {e}", rec.sha_hex());
            reply::internal(&e)
        })?;
    let (tx, rx) = mpsc::channel(4);
    if req.method() != hyper::Method::HEAD {
        tokio::task::spawn_blocking(move || stream(file, start, end, tx));
    }
    let mut r = Response::new(Streamed::new(rx));
    *r.status_mut() = status;
    file_headers(&mut r, &rec, &etag, inline);
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(CONTENT_RANGE, v);
        }
    }
    Ok(r)
}

/// Reads `[start, end)` of the file in 64 KiB chunks into the body (blocking pool).
fn stream(file: std::fs::File, start: u64, end: u64, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 * 1024;
    let mut at = start;
    while at < end {
        let n = CHUNK.min(end - at) as usize;
        let mut buf = vec![0u8; n];
        let res = file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf));
        let failed = res.is_err();
        if tx.blocking_send(res).is_err() || failed {
            return;
        }
        at += n as u64;
    }
}

fn file_headers<B>(r: &mut Response<B>, rec: &FileRecord, etag: &str, inline: bool) {
    let h = r.headers_mut();
    let mime = if inline {
        rec.mime.as_str()
    } else {
        "application/octet-stream"
    };
    if let Ok(v) = HeaderValue::from_str(mime) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // A file id's bytes never change; only its owner's browser keeps it.
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if !inline {
        if let Ok(v) = HeaderValue::from_str(&content_disposition(&rec.name)) {
            h.insert(CONTENT_DISPOSITION, v);
        }
    }
}

/// Headers every file response ends with (after the page headers: this CSP replaces theirs).
pub fn finish_file_headers(h: &mut hyper::HeaderMap) {
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(FILE_CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{enc}")
}

fn not_found() -> Resp {
    reply::error(StatusCode::NOT_FOUND, "not_found", "no such file")
}

enum RangeSpec {
    /// Serve the whole file (several ranges, or a form we do not support).
    Ignore,
    Range(u64, u64),
    Unsatisfiable,
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range as `[start, end)`.
fn parse_range(v: &str, size: u64) -> RangeSpec {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => Some((a, b.saturating_add(1).min(size))),
        (Ok(a), Err(_)) if b.is_empty() => Some((a, size)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => Some((size.saturating_sub(n), size)),
        _ => return RangeSpec::Ignore,
    };
    match parsed {
        Some((a, b)) if a < size && a < b => RangeSpec::Range(a, b),
        _ => RangeSpec::Unsatisfiable,
    }
}

/// The percent-decoded value of `key` in a query string.
fn query_param(query: &str, key: &str) -> Option<String> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            let v = percent_decode(&v.replace('+', " "));
            return (!v.is_empty()).then_some(v);
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(matches!(
            parse_range("bytes=0-9", 100),
            RangeSpec::Range(0, 10)
        ));
        assert!(matches!(
            parse_range("bytes=90-", 100),
            RangeSpec::Range(90, 100)
        ));
        assert!(matches!(
            parse_range("bytes=-5", 100),
            RangeSpec::Range(95, 100)
        ));
        assert!(matches!(
            parse_range("bytes=100-", 100),
            RangeSpec::Unsatisfiable
        ));
        assert!(matches!(
            parse_range("bytes=0-1,5-6", 100),
            RangeSpec::Ignore
        ));
    }

    #[test]
    fn query_and_disposition() {
        assert_eq!(
            query_param("name=a%2Fb%00c&x=1", "name").as_deref(),
            Some("a/b\0c")
        );
        assert_eq!(query_param("name=", "name"), None);
        assert_eq!(
            content_disposition("я \"x\".svg"),
            "attachment; filename=\"_ _x_.svg\"; filename*=UTF-8''%D1%8F%20%22x%22.svg"
        );
    }
}
