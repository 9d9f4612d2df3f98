//! Response builders: one body type for every response, JSON bodies, and the JSON error shape
//! `{"error": "<code>", "message": "<text for people>"}` used by every API failure.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

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

/// A response with no body.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}
