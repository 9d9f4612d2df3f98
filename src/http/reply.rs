//! Response builders: one body type for every response, JSON bodies, and the JSON error shape
//! `{"error": "<code>", "message": "<text for people>"}` used by every API failure.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::store::health::Problem;
use crate::store::StoreError;

/// The body type of every response the server sends.
pub type Body = Full<Bytes>;
pub type Resp = Response<Body>;

/// A JSON response. API responses are never cached.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            *r.status_mut() = status;
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!("cannot serialize a response: {e}");
            empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// A JSON error: a stable machine-readable `code` and a message for people.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(
        status,
        &ErrorBody {
            error: code,
            message,
        },
    )
}

/// 500 with a generic message; the cause is logged here, once, not sent to the client.
pub fn internal(cause: &dyn std::fmt::Display) -> Resp {
    tracing::error!("internal error: {cause}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error",
    )
}

/// A failed store call: while the store refuses writes (its disk is full or failing; the store
/// logged that once), 507 `storage_full` or 503 `storage_error` with `Retry-After`; any other
/// failure is `internal`.
pub fn store_error(e: &StoreError) -> Resp {
    match e {
        StoreError::Unwritable(u) => {
            let (status, code) = match u.problem {
                Problem::Full => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
                Problem::Io => (StatusCode::SERVICE_UNAVAILABLE, "storage_error"),
            };
            let mut r = error(status, code, u.client_message());
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            r
        }
        e => internal(e),
    }
}

/// What `Retry-After` says while writes are refused.
pub const RETRY_AFTER_SECS: u64 = 5;

/// A response with no body.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}
