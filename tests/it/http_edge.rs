//! The HTTP edge: bad input gets a 4xx with a JSON error, assets are served with the right
//! headers and nothing outside them is reachable, security headers are on every response.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{creds, http, Server};

#[tokio::test]
async fn bad_inputs_get_clear_4xx_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/register", "{not json".into(), 400, "bad_json"),
        ("/api/register", r#"{"name":"x"}"#.into(), 400, "bad_json"),
        (
            "/api/register",
            r#"{"name":1,"password":"password-1"}"#.into(),
            400,
            "bad_json",
        ),
        (
            "/api/register",
            creds(&"n".repeat(33), "password-1"),
            400,
            "invalid_name",
        ),
        (
            "/api/register",
            creds("", "password-1"),
            400,
            "invalid_name",
        ),
        (
            "/api/register",
            creds("a b", "password-1"),
            400,
            "invalid_name",
        ),
        (
            "/api/register",
            creds("<img src=x>", "password-1"),
            400,
            "invalid_name",
        ),
        (
            "/api/register",
            creds("ok", "short"),
            400,
            "invalid_password",
        ),
        (
            "/api/register",
            creds("ok", &"p".repeat(1025)),
            400,
            "invalid_password",
        ),
        (
            "/api/login",
            creds(&"n".repeat(33), "password-1"),
            400,
            "invalid_name",
        ),
        ("/api/login", "[]".into(), 400, "bad_json"),
    ];
    for (path, body, status, code) in cases {
        let r = srv.post_json(path, &body, &[]).await;
        assert_eq!(r.status, status, "{path} {body}: {:?}", r.body);
        assert_eq!(r.error_code(), code, "{path} {body}");
        assert!(!r.json()["message"].as_str().unwrap().is_empty());
    }

    // Bodies over the limit: 413, whether or not the length is declared up front.
    let big = format!(r#"{{"name":"x","password":"{}"}}"#, "p".repeat(20_000));
    let r = srv.post_json("/api/register", &big, &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "body_too_large");

    // Not JSON at all.
    let r = http(
        srv.addr,
        "POST",
        "/api/login",
        &[("content-type", "text/plain")],
        Some(b"name=a".to_vec()),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = http(srv.addr, "POST", "/api/login", &[], None).await;
    assert_eq!(r.status, 415);

    // Wrong method, unknown endpoint.
    let r = srv.get("/api/login", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = srv.get("/api/nothing-here", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let r = http(srv.addr, "DELETE", "/", &[], None).await;
    assert_eq!(r.status, 405);

    // A cross-site POST is refused before it reaches the handler.
    let r = srv
        .post_json(
            "/api/register",
            &creds("ivan", "password-1"),
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "bad_origin");
    // The same request from our own origin works.
    let origin = format!("http://{}", srv.addr);
    let r = srv
        .post_json(
            "/api/register",
            &creds("ivan", "password-1"),
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(r.status, 201);

    // The server is still healthy after all of that.
    let r = srv.get("/healthz", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert!(r.json()["version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn assets_are_served_with_types_etags_and_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);

    let r = srv.get("/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&r.body).contains("<title>chatd</title>"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let etag = r.header("etag").unwrap().to_string();

    let r = srv.get("/", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(
        srv.get("/index.html", &[]).await.header("etag"),
        Some(etag.as_str())
    );

    let r = srv.get("/js/main.js", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        srv.get("/app.css", &[]).await.header("content-type"),
        Some("text/css; charset=utf-8")
    );

    let r = http(srv.addr, "HEAD", "/", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    assert_eq!(srv.get("/missing.js", &[]).await.status, 404);
    assert_eq!(
        srv.get("/healthz", &[]).await.header("x-frame-options"),
        Some("DENY")
    );
}

/// Path traversal attempts, sent as raw bytes so no client library normalises them first.
#[tokio::test]
async fn nothing_outside_the_embedded_assets_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    for path in [
        "/../Cargo.toml",
        "/..%2fCargo.toml",
        "/%2e%2e/Cargo.toml",
        "/assets/../Cargo.toml",
        "//etc/passwd",
        "/./index.html",
        "/src/main.rs",
        "/chatd.redb",
    ] {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        let status_line = text.lines().next().unwrap_or("");
        assert!(
            status_line.contains(" 404 ") || status_line.contains(" 400 "),
            "{path}: {status_line}"
        );
        assert!(
            !text.contains("[package]") && !text.contains("root:"),
            "{path} leaked"
        );
    }
}

/// A client that never finishes its request head is cut off, and a huge head is refused,
/// without affecting anyone else.
#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(huge.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
}

/// Started from a shell whose open-file soft limit is 256, the server raises its own (up to the
/// hard limit) and takes more connections than the shell's limit would allow.
#[tokio::test]
async fn the_server_raises_its_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -Sn 256 && exec \"$0\" \"$@\"",
        crate::support::BIN,
    ]);
    let srv = Server::start_command(cmd, dir.path(), &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(soft > 256, "{line}");
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
    }
    let r = http(srv.addr, "GET", "/healthz", &[], None).await;
    assert_eq!(r.status, 200, "with 300 connections held");
    drop(held);
}

/// serde's derive takes a struct given as a JSON array, field by position: `["alice",
/// "password-1"]` logged alice in. A body must be one JSON object, with no key twice and at
/// most 32 levels deep.
#[tokio::test]
async fn json_bodies_by_position_or_with_repeated_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let r = srv
        .post_json("/api/register", &creds("alice", "password-1"), &[])
        .await;
    assert_eq!(r.status, 201);
    let deep = format!(
        r#"{{"name":"alice","password":"password-1","x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let cases = [
        ("/api/login", r#"["alice","password-1"]"#.to_string()),
        ("/api/register", r#"["bob","password-1"]"#.to_string()),
        (
            "/api/login",
            r#"{"name":"mallory","name":"alice","password":"password-1"}"#.to_string(),
        ),
        (
            "/api/login",
            r#"{"name":"alice","password":"password-1","x":{"a":1,"a":2}}"#.to_string(),
        ),
        ("/api/login", deep),
    ];
    for (path, body) in cases {
        let r = srv.post_json(path, &body, &[]).await;
        assert_eq!(r.status, 400, "{path} {body}: {:?}", r.body);
        assert_eq!(r.error_code(), "bad_json", "{path} {body}");
        assert!(r.header("set-cookie").is_none(), "{path} {body}");
    }
    // Unknown fields are still ignored.
    let r = srv
        .post_json(
            "/api/login",
            r#"{"name":"alice","password":"password-1","remember":true}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// On a plain-http server an `Origin: https://host:port` passed (only the host was compared):
/// the scheme counts. With `--behind-proxy`, the scheme is the proxy's `X-Forwarded-Proto`.
#[tokio::test]
async fn an_origin_with_the_other_scheme_is_refused() {
    use crate::support::ws::{try_connect, user};
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let (http_o, https_o) = (
        format!("http://{}", srv.addr),
        format!("https://{}", srv.addr),
    );
    let r = srv
        .post_json(
            "/api/login",
            &creds("alice", "password-1"),
            &[("origin", &https_o)],
        )
        .await;
    assert_eq!((r.status, r.error_code()), (403, "bad_origin".to_string()));
    let r = srv
        .post_json(
            "/api/login",
            &creds("alice", "password-1"),
            &[("origin", &http_o)],
        )
        .await;
    assert_eq!(r.status, 200);
    let ws = |o: &str| [("cookie", alice.cookie.clone()), ("origin", o.to_string())];
    let connect = |h: [(&'static str, String); 2]| async move {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        try_connect(srv.addr, &h).await.err()
    };
    assert_eq!(connect(ws(&https_o)).await, Some(403));
    assert_eq!(connect(ws(&http_o)).await, None);
    drop(srv);

    // Behind a TLS-terminating proxy, the page's origin is https.
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--behind-proxy"]);
    let (http_o, https_o) = (
        format!("http://{}", srv.addr),
        format!("https://{}", srv.addr),
    );
    let proxied = |o: &str| {
        let o = o.to_string();
        let srv = &srv;
        async move {
            srv.post_json(
                "/api/register",
                &creds("bob", "password-1"),
                &[("origin", &o), ("x-forwarded-proto", "https")],
            )
            .await
            .status
        }
    };
    assert_eq!(proxied(&http_o).await, 403);
    assert_eq!(proxied(&https_o).await, 201);
}
