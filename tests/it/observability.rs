//! What an operator sees: `/metrics` in Prometheus text format (loopback only unless opened),
//! JSON logs, and client addresses taken from a reverse proxy with `--behind-proxy`.

use serde_json::json;

use crate::support::ws::{user, Client};
use crate::support::{creds, Server};

/// Parses the exposition: every sample line is `name[{labels}] value`, every metric has HELP and
/// TYPE. Returns (name with labels, value) pairs.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP chatd_") || line.starts_with("# TYPE chatd_"),
                "{line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let base = name.split('{').next().unwrap();
        assert!(
            base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        let family = base
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {family} "))
                || text.contains(&format!("# TYPE {base} ")),
            "no TYPE for {base}"
        );
        out.push((
            name.to_string(),
            value.parse().unwrap_or_else(|_| panic!("{line}")),
        ));
    }
    out
}

fn value(s: &[(String, f64)], name: &str) -> f64 {
    s.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

#[tokio::test]
async fn metrics_count_connections_messages_and_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(tmp.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    for i in 0..3 {
        a.say(json!({"to": bob.id}), &format!("m{i}"), "hello")
            .await;
        b.recv_type("message").await;
    }
    // Counters are bumped after the frames are handed over, so the last delivery can reach
    // the client a moment before it is counted.
    let mut tries = 0;
    let (r, text, s) = loop {
        let r = srv.get("/metrics", &[]).await;
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let s = samples(&text);
        tries += 1;
        if value(&s, "chatd_messages_delivered_total") >= 3.0 || tries == 50 {
            break (r, text, s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(value(&s, "chatd_messages_stored_total"), 3.0, "{text}");
    assert_eq!(value(&s, "chatd_messages_delivered_total"), 3.0, "{text}");
    assert_eq!(value(&s, "chatd_messages_in_store"), 3.0);
    assert_eq!(value(&s, "chatd_users"), 2.0);
    assert_eq!(value(&s, "chatd_users_online"), 2.0);
    assert_eq!(value(&s, "chatd_websocket_sessions"), 2.0);
    assert_eq!(value(&s, "chatd_websocket_upgrades_total"), 2.0);
    // This request's own connection (upgraded WebSockets are counted as sessions instead).
    assert!(value(&s, "chatd_http_connections") >= 1.0, "{text}");
    assert!(value(&s, "chatd_database_bytes") > 0.0);
    let commits = value(&s, "chatd_writer_commits_total");
    assert!(commits >= 3.0);
    assert_eq!(value(&s, "chatd_commit_duration_seconds_count"), commits);
    assert_eq!(
        value(&s, "chatd_commit_duration_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert_eq!(value(&s, "chatd_commit_batch_ops_count"), commits);
    assert!(value(&s, "chatd_commit_duration_seconds_sum") > 0.0);
    assert!(text.contains("chatd_build_info{version=\""));
    // Buckets are cumulative.
    let buckets: Vec<f64> = s
        .iter()
        .filter(|(n, _)| n.starts_with("chatd_commit_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");

    drop(a);
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = String::from_utf8(srv.get("/metrics", &[]).await.body.to_vec()).unwrap();
        if value(&samples(&text), "chatd_websocket_sessions") == 0.0 {
            assert_eq!(value(&samples(&text), "chatd_users_online"), 0.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn behind_proxy_uses_the_forwarded_address_and_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(tmp.path(), &["--behind-proxy"]);
    // /metrics is for the machine itself: a proxied outside client is not loopback.
    assert_eq!(
        srv.get("/metrics", &[("x-real-ip", "203.0.113.5")])
            .await
            .status,
        404
    );
    assert_eq!(
        srv.get(
            "/metrics",
            &[("x-forwarded-for", "127.0.0.1, 198.51.100.7")]
        )
        .await
        .status,
        404,
        "the last X-Forwarded-For hop counts, not what the client claimed"
    );
    assert_eq!(srv.get("/metrics", &[]).await.status, 200);

    // Registrations are limited per forwarded address (10 per minute), not per proxy.
    for i in 0..10 {
        let r = srv
            .post_json(
                "/api/register",
                &creds(&format!("u{i}"), "password-1"),
                &[("x-real-ip", "10.0.0.1")],
            )
            .await;
        assert_eq!(r.status, 201, "{i}");
    }
    let r = srv
        .post_json(
            "/api/register",
            &creds("u10", "password-1"),
            &[("x-real-ip", "10.0.0.1")],
        )
        .await;
    assert_eq!(r.status, 429);
    let r = srv
        .post_json(
            "/api/register",
            &creds("u11", "password-1"),
            &[("x-real-ip", "10.0.0.2"), ("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(
        r.header("set-cookie").unwrap().contains("; Secure"),
        "https at the proxy"
    );
    drop(srv);

    // Without the flag the headers mean nothing: the limit is per TCP peer.
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(tmp.path(), &[]);
    assert_eq!(
        srv.get("/metrics", &[("x-real-ip", "203.0.113.5")])
            .await
            .status,
        200
    );
    for i in 0..10 {
        let ip = format!("10.0.1.{i}");
        let r = srv
            .post_json(
                "/api/register",
                &creds(&format!("v{i}"), "password-1"),
                &[("x-real-ip", &ip), ("x-forwarded-proto", "https")],
            )
            .await;
        assert_eq!(r.status, 201);
        assert!(!r.header("set-cookie").unwrap().contains("Secure"));
    }
    let r = srv
        .post_json(
            "/api/register",
            &creds("v10", "password-1"),
            &[("x-real-ip", "10.9.9.9")],
        )
        .await;
    assert_eq!(r.status, 429);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path(), &["--log-format", "json"]);
    let r = srv
        .post_json("/api/login", &creds("nobody", "password-1"), &[])
        .await;
    assert_eq!(r.status, 401);
    srv.wait_log("failed login");
    assert!(srv.terminate().success());
    let log = srv.log();
    let mut seen_listen = false;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("listening on http://")
        {
            seen_listen = true;
            assert!(v["version"].is_string(), "fields are flattened: {line}");
        }
        if v["message"] == "failed login" {
            assert_eq!(v["name"], "nobody", "{line}");
        }
    }
    assert!(seen_listen, "{log}");
    assert!(log.contains("\"stopped\""), "{log}");
}
