//! `--tls-cert`/`--tls-key`: https and wss from chatd itself, Secure cookies and HSTS, and
//! certificate reload on SIGHUP (a failed reload keeps the old certificate). The certificates in
//! tests/data/tls are from a test CA (`gen.sh`), for localhost and 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cli::assert_clean_failure;
use crate::support::ws::WAIT;
use crate::support::{chatd, creds, http_on, Reply, Server};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

fn connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A verified TLS connection to the server, as "localhost".
async fn tls(addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// The certificate the server presented on a connection.
fn presented(s: &TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_file(fixture(pem))
        .unwrap()
        .to_vec()
}

async fn https(addr: SocketAddr, method: &str, path: &str, body: Option<String>) -> Reply {
    let host = format!("localhost:{}", addr.port());
    let origin = format!("https://{host}");
    let mut headers = Vec::new();
    if body.is_some() {
        headers = vec![
            ("content-type", "application/json"),
            ("origin", origin.as_str()),
        ];
    }
    http_on(
        tls(addr).await,
        &host,
        method,
        path,
        &headers,
        body.map(String::into_bytes),
    )
    .await
}

/// The status of a wss upgrade with these extra headers (101 when it succeeds).
async fn wss_status(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let mut req = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::client_async(req, tls(addr).await).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// An `Origin` is `scheme://host[:port]`: a page from `http://` the same host and port is
/// another origin than the https server, and may neither post nor open a WebSocket.
#[tokio::test]
async fn an_origin_with_the_other_scheme_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            fixture("server1.pem").to_str().unwrap(),
            "--tls-key",
            fixture("server1-key.pem").to_str().unwrap(),
        ],
    );
    let addr = srv.addr;
    let host = format!("localhost:{}", addr.port());
    let post = |origin: String| {
        let host = host.clone();
        async move {
            let headers = [
                ("content-type", "application/json"),
                ("origin", origin.as_str()),
            ];
            let body = creds("alice", "password-1").into_bytes();
            http_on(
                tls(addr).await,
                &host,
                "POST",
                "/api/register",
                &headers,
                Some(body),
            )
            .await
        }
    };
    let r = post(format!("http://{host}")).await;
    assert_eq!(
        (r.status, r.header("content-type").is_some()),
        (403, true),
        "{:?}",
        r.body
    );
    let r = post(format!("https://{host}")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let cookie = r.session_cookie();
    let http_origin = format!("http://{host}");
    let https_origin = format!("https://{host}");
    assert_eq!(
        wss_status(addr, &[("cookie", &cookie), ("origin", &http_origin)]).await,
        403
    );
    assert_eq!(
        wss_status(addr, &[("cookie", &cookie), ("origin", &https_origin)]).await,
        101
    );
}

#[tokio::test]
async fn https_and_wss_with_reload_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::copy(fixture("server1.pem"), &cert).unwrap();
    std::fs::copy(fixture("server1-key.pem"), &key).unwrap();
    let data = tmp.path().join("data");
    let srv = Server::start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(srv.log().contains("listening on https://"), "{}", srv.log());
    let addr = srv.addr;

    let r = https(addr, "GET", "/healthz", None).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("strict-transport-security"));
    let r = https(
        addr,
        "POST",
        "/api/register",
        Some(creds("alice", "password-1")),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let r = https(
        addr,
        "POST",
        "/api/register",
        Some(creds("bob", "password-1")),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let bob = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["user"]["id"]
        .as_u64()
        .unwrap();

    // wss: the same WebSocket protocol through the TLS stream.
    let mut req = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let stream = tls(addr).await;
    assert_eq!(presented(&stream), der_of("server1.pem"));
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    // Client wraps the plain-TCP socket type; drive this one by hand.
    let mut ws = ws;
    use futures_util::{SinkExt, StreamExt};
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("\"welcome\""));
    let send = json!({"type": "send", "client_id": "t1", "to": bob, "text": "over wss"});
    ws.send(send.to_string().into()).await.unwrap();
    let ack = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = ws.next().await {
            let v: serde_json::Value =
                serde_json::from_str(m.to_text().unwrap_or("")).unwrap_or_default();
            if v["type"] == "ack" || v["type"] == "error" {
                return v;
            }
        }
        panic!("connection ended")
    })
    .await
    .expect("no ack");
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1);

    // A long frame (over 4 KiB, written straight to the socket, past tungstenite's buffer)
    // arrives whole through TLS, and the frames after it still follow in order.
    let conv = ack["conversation"].as_u64().unwrap();
    let long: Vec<String> = (0..3).map(|i| format!("{i}").repeat(3000)).collect();
    for (i, text) in long.iter().enumerate() {
        let send = json!({"type": "send", "client_id": format!("l{i}"), "to": bob, "text": text});
        ws.send(send.to_string().into()).await.unwrap();
    }
    tokio::time::timeout(WAIT, async {
        let mut acks = 0;
        while let Some(Ok(m)) = ws.next().await {
            let v: serde_json::Value =
                serde_json::from_str(m.to_text().unwrap_or("")).unwrap_or_default();
            assert_ne!(v["type"], "error", "{v}");
            acks += usize::from(v["type"] == "ack");
            if acks == long.len() {
                return;
            }
        }
        panic!("connection ended")
    })
    .await
    .expect("acks of the long messages");
    let req = json!({"type": "history", "ref": 7, "conversation": conv, "limit": 10});
    ws.send(req.to_string().into()).await.unwrap();
    ws.send("ping".into()).await.unwrap();
    let (history, pong) = tokio::time::timeout(WAIT, async {
        let mut history = None;
        while let Some(Ok(m)) = ws.next().await {
            let t = m.to_text().unwrap_or("").to_string();
            if t == "pong" {
                return (history.expect("history came before pong"), t);
            }
            let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
            if v["type"] == "history" {
                assert!(t.len() > 9000, "{}", t.len());
                history = Some(v);
            }
        }
        panic!("connection ended")
    })
    .await
    .expect("history and pong");
    assert_eq!(pong, "pong");
    let texts = crate::support::ws::message_fields(&history, "text");
    assert_eq!(texts[0], "over wss");
    assert_eq!(&texts[1..], &long[..]);

    // Plain HTTP on the TLS port gets nowhere, and the server carries on.
    let plain = crate::support::http(addr, "GET", "/healthz", &[], None);
    let plain = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::task::spawn(plain).await
    })
    .await;
    assert!(!matches!(plain, Ok(Ok(ref r)) if r.status == 200));

    // A renewed certificate is picked up on SIGHUP, for new connections only.
    std::fs::copy(fixture("server2.pem"), &cert).unwrap();
    std::fs::copy(fixture("server2-key.pem"), &key).unwrap();
    srv.signal("HUP");
    srv.wait_log("TLS certificate reloaded");
    assert_eq!(presented(&tls(addr).await), der_of("server2.pem"));
    // The open WebSocket still works after the reload (text "ping" is answered with "pong").
    ws.send("ping".into()).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().is_ok_and(|t| t == "pong") {
                return;
            }
        }
        panic!("connection ended")
    })
    .await
    .expect("the open session survived the reload");

    // A broken renewal is refused; the server keeps the certificate it has.
    std::fs::write(&cert, "not a certificate").unwrap();
    srv.signal("HUP");
    srv.wait_log("TLS reload failed");
    assert_eq!(presented(&tls(addr).await), der_of("server2.pem"));
    assert_eq!(https(addr, "GET", "/healthz", None).await.status, 200);
}

#[test]
fn bad_tls_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = |cert: &Path, key: Option<&Path>| {
        let mut args = vec!["--port", "0", "--data-dir", data.to_str().unwrap()];
        args.extend(["--tls-cert", cert.to_str().unwrap()]);
        if let Some(k) = key {
            args.extend(["--tls-key", k.to_str().unwrap()]);
        }
        chatd(&args, None)
    };
    let (cert, key) = (fixture("server1.pem"), fixture("server1-key.pem"));
    let missing = tmp.path().join("nope.pem");
    assert_clean_failure(
        &start(&missing, Some(&key)),
        "cannot read the TLS certificate",
    );
    assert_clean_failure(
        &start(&cert, Some(&cert)),
        "cannot read the TLS private key",
    );
    let other = fixture("server2-key.pem");
    assert_clean_failure(&start(&cert, Some(&other)), "does not fit");
    let o = start(&cert, None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-key"));
}
