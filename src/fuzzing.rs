//! Entry points of the fuzz targets in `fuzz/` (libFuzzer through cargo-fuzz; see
//! docs/RELIABILITY.md): each takes arbitrary bytes, drives one path that hostile input reaches
//! in the real code, and panics only on a bug (a panic inside, or a property below failing).
//! Not used by the server. It lives in the library so the targets reach crate-private parts,
//! and is always compiled so a change that breaks a target shows at once; the unit tests below
//! run every input saved in `fuzz/regressions/` through it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::proto::{self, ErrorCode};

/// A client's text frame: decoding (`strict_json` and serde) and validation.
pub fn client_frame(data: &[u8]) {
    // tungstenite closes the connection (1007) on a text frame that is not UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = serde_json::from_str::<serde_json::Value>(text).ok();
    match proto::decode(text) {
        Ok(envelope) => {
            assert!(
                value.as_ref().is_some_and(|v| v.is_object()),
                "decoded a frame that is not one JSON object: {text:?}"
            );
            if let Err(bad) = envelope.frame.check(1, 4 * 1024, 16 * 1024, 100) {
                let cid = envelope.frame.client_id().map(str::to_string);
                let reply =
                    proto::ServerFrame::error(envelope.reference, cid, bad.code, bad.message);
                assert!(serde_json::to_string(&reply).is_ok());
            }
        }
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    ErrorCode::BadJson | ErrorCode::UnknownType | ErrorCode::BadFrame
                ),
                "{e:?}"
            );
            // What serde_json reads as an object is never bad_json, and what it cannot read
            // is (or has a repeated key or is too deep: bad_frame).
            match &value {
                Some(v) if v.is_object() => assert_ne!(e.code, ErrorCode::BadJson, "{text:?}"),
                Some(_) => assert_eq!(e.code, ErrorCode::BadJson, "{text:?}"),
                None => {}
            }
            let reply = proto::ServerFrame::error(e.reference, e.client_id, e.code, e.message);
            assert!(serde_json::to_string(&reply).is_ok());
        }
    }
}

/// A stored record through the store's decoders (see `store::fuzz::record`).
pub fn store_record(data: &[u8]) {
    crate::store::fuzz::record(data);
}

/// Arbitrary bytes after valid write-ahead log records (see `store::fuzz::wal`).
pub fn wal_tail(data: &[u8]) {
    crate::store::fuzz::wal(data);
}

/// One server for every HTTP input: a runtime and an `App` on a fresh data directory.
struct Harness {
    rt: tokio::runtime::Runtime,
    app: Arc<crate::app::App>,
    listener: tokio::net::TcpListener,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("chatd-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz data directory");
        let cli = crate::cli::Cli::try_parse_from(["chatd"]).expect("default flags");
        let config = crate::config::Config::from_args(&cli.serve, dir.clone()).expect("config");
        let store = crate::store::Store::open(&dir).expect("store");
        let auth = crate::auth::Auth::new(&config.limits).expect("auth");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (app, listener) = rt.block_on(async {
            let (app, _writer) = crate::app::App::new(config, store, auth).expect("app");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("listen");
            (app, listener)
        });
        Harness { rt, app, listener }
    })
}

/// Raw bytes as one HTTP/1.1 connection to the server (hyper's parser, then `http::handle`:
/// client address and origin checks, routing, the handlers' header and body checks), from a
/// loopback peer. Whatever comes back is HTTP, and nothing panics.
pub fn http_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness();
    let app = h.app.clone();
    h.rt.block_on(async move {
        // Loopback TCP, as in production. (Over tokio's in-memory duplex pipe, pipelined
        // requests whose replies overfill a pipe under ~70 KB left hyper waiting forever;
        // the same bytes over TCP complete: see docs/RELIABILITY.md.)
        let addr = h.listener.local_addr().expect("address");
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), h.listener.accept());
        let (mut client, (server, peer)) = (client.expect("connect"), accepted.expect("accept"));
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let conn = tokio::spawn(crate::server::serve_connection(server, peer, app, stop));
        client.write_all(data).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut out = Vec::new();
        // The request is all there and its end is signalled: the server answers and closes at
        // once (argon2 takes milliseconds), so a connection still open after 15 s is a hang.
        let read =
            tokio::time::timeout(Duration::from_secs(15), client.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection was still open after 15 s");
        // (An HTTP/1.0 request gets an HTTP/1.0 response.)
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
        drop(client);
        match tokio::time::timeout(Duration::from_secs(15), conn).await {
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            _ => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input kept in `fuzz/regressions/<target>/` (crashes found, and inputs worth
    /// keeping) goes through its target again.
    fn replay(target: &str, f: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(entry.path()).expect("read a regression input");
            f(&bytes);
            n += 1;
        }
        n
    }

    #[test]
    fn client_frame_regressions() {
        for text in [
            "",
            "{",
            "[]",
            r#"{"type":1}"#,
            r#"{"type":"send","ref":1,"ref":2}"#,
        ] {
            super::client_frame(text.as_bytes());
        }
        replay("client_frame", super::client_frame);
    }

    #[test]
    fn store_record_regressions() {
        for data in [
            &b""[..],
            b"\x00\x01",
            b"\x03\x01\xff\xff\xff\xff",
            b"\x04\x07\x01",
        ] {
            super::store_record(data);
        }
        replay("store_record", super::store_record);
    }

    #[test]
    fn wal_tail_regressions() {
        for data in [&b""[..], b"CWL2\x40\x00\x00\x00garbage", &[0u8; 64]] {
            super::wal_tail(data);
        }
        replay("wal_tail", super::wal_tail);
    }

    #[test]
    fn http_request_regressions() {
        for data in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
            b"\x00\xff garbage",
        ] {
            super::http_request(data);
        }
        replay("http_request", super::http_request);
    }
}
