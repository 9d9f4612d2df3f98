//! The admin JSON API (`/api/admin/...`): refused to strangers (401) and non-admins (403);
//! users (list with last seen, create, disable/enable, reset password, admin flag with the
//! last-admin guard), invites (one-time, N uses, expired, used up, deleted, while registration
//! is closed), the registration setting, status and the backup download; every action in the
//! audit log.

use serde_json::{json, Value};

use crate::support::ws::{login, user, Client, TestUser};
use crate::support::{creds, Server};

const PW: &str = "password-1";

/// `(method, path, body)` of every admin endpoint.
fn endpoints(id: u64) -> Vec<(&'static str, String, Option<String>)> {
    vec![
        ("GET", "/api/admin/users".into(), None),
        (
            "POST",
            "/api/admin/users".into(),
            Some(json!({"name": "zed"}).to_string()),
        ),
        ("POST", format!("/api/admin/users/{id}/disable"), None),
        ("POST", format!("/api/admin/users/{id}/enable"), None),
        ("POST", format!("/api/admin/users/{id}/password"), None),
        (
            "POST",
            format!("/api/admin/users/{id}/admin"),
            Some(json!({"admin": true}).to_string()),
        ),
        ("GET", "/api/admin/invites".into(), None),
        ("POST", "/api/admin/invites".into(), Some("{}".into())),
        ("DELETE", "/api/admin/invites/abc".into(), None),
        ("GET", "/api/admin/settings".into(), None),
        (
            "PUT",
            "/api/admin/settings".into(),
            Some(json!({"registration": "open"}).to_string()),
        ),
        ("GET", "/api/admin/status".into(), None),
        ("GET", "/api/admin/backup".into(), None),
    ]
}

#[tokio::test]
async fn admin_endpoints_refuse_strangers_and_non_admins() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    for (method, path, body) in endpoints(alice.id) {
        let r = srv.call(method, &path, None, body.as_deref()).await;
        assert_eq!(r.status, 401, "{method} {path} logged out");
        assert_eq!(r.error_code(), "unauthorized");
        let r = srv
            .call(method, &path, Some(&bob.cookie), body.as_deref())
            .await;
        assert_eq!(r.status, 403, "{method} {path} as a non-admin");
        assert_eq!(r.error_code(), "forbidden");
    }
    // Nothing happened: alice is still the only admin and enabled, no invite, no "zed".
    let r = srv
        .call("GET", "/api/admin/users", Some(&alice.cookie), None)
        .await;
    assert_eq!(r.status, 200);
    let users = r.json()["users"].as_array().unwrap().clone();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["admin"], true);
    assert_eq!(users[0]["disabled"], false);
    assert_eq!(users[1]["admin"], false);
    let r = srv
        .call("GET", "/api/admin/invites", Some(&alice.cookie), None)
        .await;
    assert_eq!(r.json()["invites"], json!([]));
    assert!(!srv.log().contains(" audit: "), "{}", srv.log());
    // A cross-site page cannot drive the API with the admin's cookie.
    let r = crate::support::http(
        srv.addr,
        "PUT",
        "/api/admin/settings",
        &[
            ("cookie", &alice.cookie),
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        Some(br#"{"registration":"open"}"#.to_vec()),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "bad_origin");
}

fn find<'a>(users: &'a Value, name: &str) -> &'a Value {
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {users}"))
}

#[tokio::test]
async fn admins_manage_users_and_every_action_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let admin = Some(alice.cookie.as_str());

    // Create with a generated password (shown once) and with a given one.
    let r = srv
        .call("POST", "/api/admin/users", admin, Some(r#"{"name":"bob"}"#))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let j = r.json();
    let pw = j["password"].as_str().unwrap().to_string();
    assert_eq!(pw.len(), 19);
    assert_eq!(j["user"]["name"], "bob");
    assert_eq!(j["user"]["admin"], false);
    assert_eq!(j["user"]["last_seen"], Value::Null);
    let bob_id = j["user"]["id"].as_u64().unwrap();
    let bob = login(&srv, "bob", &pw).await;
    let r = srv
        .call(
            "POST",
            "/api/admin/users",
            admin,
            Some(r#"{"name":"carol","password":"carol-pass-1","admin":true}"#),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.json().get("password").is_none(), "given, so not echoed");
    assert_eq!(r.json()["user"]["admin"], true);
    login(&srv, "carol", "carol-pass-1").await;
    for (body, status, code) in [
        (r#"{"name":"BOB"}"#, 409, "name_taken"),
        (r#"{"name":"b\u043eb"}"#, 409, "name_taken"),
        (r#"{"name":"b o b"}"#, 400, "invalid_name"),
        (
            r#"{"name":"dave","password":"short"}"#,
            400,
            "invalid_password",
        ),
    ] {
        let r = srv
            .call("POST", "/api/admin/users", admin, Some(body))
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{body}"
        );
    }

    // Last seen: null until connected, now while online, the disconnect time after.
    let mut b = Client::connect_synced(&srv, &bob).await;
    let users = srv
        .call("GET", "/api/admin/users", admin, None)
        .await
        .json();
    let seen = find(&users, "bob");
    assert_eq!(seen["online"], true);
    let now = crate::support::ws::now_ms();
    assert!(seen["last_seen"].as_u64().unwrap() + 5_000 > now, "{seen}");
    assert!(find(&users, "carol")["last_seen"].is_null());
    assert!(find(&users, "alice")["created"].as_u64().unwrap() <= now);

    // Disable: bob's socket closes (1008), he cannot log in; enable: he can again.
    let r = srv
        .call(
            "POST",
            &format!("/api/admin/users/{bob_id}/disable"),
            admin,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["user"]["disabled"], true);
    assert_eq!(b.recv_close().await, 1008);
    let r = srv.post_json("/api/login", &creds("bob", &pw), &[]).await;
    assert_eq!(r.error_code(), "account_disabled");
    // The session ends once the close handshake is done; the list follows.
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let users = loop {
        let users = srv
            .call("GET", "/api/admin/users", admin, None)
            .await
            .json();
        if find(&users, "bob")["online"] == false || std::time::Instant::now() > deadline {
            break users;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let seen = find(&users, "bob");
    assert_eq!(seen["online"], false);
    assert!(seen["last_seen"].as_u64().unwrap() + 5_000 > now, "{seen}");
    let r = srv
        .call(
            "POST",
            &format!("/api/admin/users/{bob_id}/enable"),
            admin,
            None,
        )
        .await;
    assert_eq!(r.json()["user"]["disabled"], false);
    let bob = login(&srv, "bob", &pw).await;

    // Reset the password: a new one-time password, the old one and bob's sessions end.
    let mut b = Client::connect_synced(&srv, &bob).await;
    let r = srv
        .call(
            "POST",
            &format!("/api/admin/users/{bob_id}/password"),
            admin,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let new_pw = r.json()["password"].as_str().unwrap().to_string();
    assert_ne!(new_pw, pw);
    assert_eq!(b.recv_close().await, 1008);
    assert_eq!(
        srv.call("GET", "/api/me", Some(&bob.cookie), None)
            .await
            .status,
        401
    );
    assert_eq!(
        srv.post_json("/api/login", &creds("bob", &pw), &[])
            .await
            .status,
        401
    );
    let bob = login(&srv, "bob", &new_pw).await;

    // Admin flag: grant, and bob can use the admin API; revoke.
    let path = format!("/api/admin/users/{bob_id}/admin");
    let r = srv
        .call("POST", &path, admin, Some(r#"{"admin":true}"#))
        .await;
    assert_eq!(r.json()["user"]["admin"], true);
    let r = srv
        .call("GET", "/api/admin/status", Some(&bob.cookie), None)
        .await;
    assert_eq!(r.status, 200);
    let r = srv
        .call("POST", &path, admin, Some(r#"{"admin":false}"#))
        .await;
    assert_eq!(r.json()["user"]["admin"], false);
    assert_eq!(
        srv.call("GET", "/api/admin/status", Some(&bob.cookie), None)
            .await
            .status,
        403
    );
    // Unknown users and actions.
    for p in [
        "/api/admin/users/999/disable",
        "/api/admin/users/x/enable",
        "/api/admin/users/2/fly",
    ] {
        assert_eq!(srv.call("POST", p, admin, None).await.status, 404, "{p}");
    }

    // The last admin cannot remove their own rights or disable themselves.
    let carol_id = find(
        &srv.call("GET", "/api/admin/users", admin, None)
            .await
            .json(),
        "carol",
    )["id"]
        .as_u64()
        .unwrap();
    let r = srv
        .call(
            "POST",
            &format!("/api/admin/users/{carol_id}/admin"),
            admin,
            Some(r#"{"admin":false}"#),
        )
        .await;
    assert_eq!(r.status, 200, "carol is not the last admin");
    let me = format!("/api/admin/users/{}/admin", alice.id);
    let r = srv
        .call("POST", &me, admin, Some(r#"{"admin":false}"#))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "last_admin"));
    let r = srv
        .call(
            "POST",
            &format!("/api/admin/users/{}/disable", alice.id),
            admin,
            None,
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "last_admin"));

    // The audit trail names who did what to whom, from the web.
    for line in [
        "alice (web): created the account: bob (id 2)",
        "alice (web): created the account: carol (id 3); with admin rights",
        "alice (web): disabled the account (its sessions and tokens are revoked): bob (id 2)",
        "alice (web): enabled the account: bob (id 2)",
        "alice (web): set a new password (all sessions and tokens revoked): bob (id 2)",
        "alice (web): granted admin rights: bob (id 2)",
        "alice (web): revoked admin rights: bob (id 2)",
        "alice (web): revoked admin rights: carol (id 3)",
    ] {
        // (The log is read by another thread: wait for the line.)
        srv.wait_log(line);
        let log = srv.log();
        let found = log
            .lines()
            .any(|l| l.contains(" audit: ") && l.contains(line));
        assert!(found, "no audit line {line:?} in:\n{log}");
    }
    let log = srv.log();
    assert!(
        !log.contains(&pw) && !log.contains(&new_pw),
        "passwords stay out of the log"
    );
}

async fn register_with(srv: &Server, name: &str, invite: Option<&str>) -> (u16, String) {
    let mut body = json!({"name": name, "password": PW});
    if let Some(code) = invite {
        body["invite"] = json!(code);
    }
    let r = srv.post_json("/api/register", &body.to_string(), &[]).await;
    let code = if r.status == 201 {
        String::new()
    } else {
        r.error_code()
    };
    (r.status, code)
}

async fn invite(srv: &Server, admin: &TestUser, body: Value) -> Value {
    let r = srv
        .call(
            "POST",
            "/api/admin/invites",
            Some(&admin.cookie),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.json()["invite"].clone()
}

#[tokio::test]
async fn invites_admit_people_while_registration_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let admin = Some(alice.cookie.as_str());
    // Close registration at run time; the page learns it from /api/server.
    let r = srv
        .call(
            "PUT",
            "/api/admin/settings",
            admin,
            Some(r#"{"registration":"closed"}"#),
        )
        .await;
    assert_eq!(r.json(), json!({"registration": "closed"}));
    assert_eq!(
        srv.get("/api/server", &[]).await.json()["registration"],
        "closed"
    );
    assert_eq!(
        register_with(&srv, "bob", None).await,
        (403, "registration_closed".into())
    );

    // One-time: works once, then it is used up.
    let one = invite(&srv, &alice, json!({})).await;
    let code = one["code"].as_str().unwrap().to_string();
    assert!(code.len() >= 22, "{code}");
    assert!(code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(one["url"], format!("/#invite={code}"));
    assert_eq!(one["uses_left"], 1);
    let week = 168 * 3_600_000;
    let expires = one["expires"].as_u64().unwrap();
    assert!(expires.abs_diff(crate::support::ws::now_ms() + week) < 60_000);
    assert_eq!(register_with(&srv, "bob", Some(&code)).await.0, 201);
    assert_eq!(
        register_with(&srv, "carol", Some(&code)).await,
        (400, "invalid_invite".into())
    );

    // N uses, listed with what is left; then used up.
    let three = invite(&srv, &alice, json!({"uses": 3, "expires_hours": 2})).await;
    let code3 = three["code"].as_str().unwrap().to_string();
    for name in ["carol", "dave"] {
        assert_eq!(register_with(&srv, name, Some(&code3)).await.0, 201);
    }
    let list = srv
        .call("GET", "/api/admin/invites", admin, None)
        .await
        .json();
    let listed = list["invites"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "the used-up one is gone: {list}");
    assert_eq!(listed[0]["code"], code3.as_str());
    assert_eq!(listed[0]["uses_left"], 1);
    assert_eq!(listed[0]["created_by"], alice.id);
    assert_eq!(register_with(&srv, "erin", Some(&code3)).await.0, 201);
    assert_eq!(
        register_with(&srv, "frank", Some(&code3)).await,
        (400, "invalid_invite".into())
    );
    // Unknown, and deleted.
    assert_eq!(
        register_with(&srv, "frank", Some("no-such-code-at-all-xx")).await,
        (400, "invalid_invite".into())
    );
    let gone = invite(&srv, &alice, json!({"uses": 5})).await;
    let gone = gone["code"].as_str().unwrap().to_string();
    let path = format!("/api/admin/invites/{gone}");
    assert_eq!(srv.call("DELETE", &path, admin, None).await.status, 204);
    assert_eq!(srv.call("DELETE", &path, admin, None).await.status, 404);
    assert_eq!(
        register_with(&srv, "frank", Some(&gone)).await,
        (400, "invalid_invite".into())
    );
    // Bad parameters.
    for body in [
        json!({"uses": 0}),
        json!({"uses": 1001}),
        json!({"expires_hours": 0}),
        json!({"expires_hours": 721}),
    ] {
        let r = srv
            .call("POST", "/api/admin/invites", admin, Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 400, "{body}");
    }
    // An invite still looks fine but went past its expiry while the server was stopped: the
    // store holds it as the admin made it, only older.
    let left = invite(&srv, &alice, json!({"uses": 2})).await;
    let left = left["code"].as_str().unwrap().to_string();
    srv.terminate();
    {
        let store = chatd::store::Store::open(dir.path()).unwrap();
        let mut i = store
            .invites(0)
            .unwrap()
            .into_iter()
            .find(|i| i.code == left)
            .unwrap();
        i.expires_ms = 1_000;
        store.create_invite(&i, 0).unwrap();
    }
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(
        register_with(&srv, "gina", Some(&left)).await,
        (400, "invalid_invite".into())
    );
    // The stored setting outlived the restart (and wins over the default --registration open).
    assert_eq!(register_with(&srv, "gina", None).await.0, 403);
}

#[tokio::test]
async fn settings_status_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--registration", "closed"]);
    let alice = user(&srv, "alice").await;
    let admin = Some(alice.cookie.as_str());
    // The flag decides until an admin sets the mode.
    let r = srv.call("GET", "/api/admin/settings", admin, None).await;
    assert_eq!(r.json(), json!({"registration": "closed"}));
    let r = srv
        .call(
            "PUT",
            "/api/admin/settings",
            admin,
            Some(r#"{"registration":"open"}"#),
        )
        .await;
    assert_eq!(r.json(), json!({"registration": "open"}));
    let r = srv
        .call(
            "PUT",
            "/api/admin/settings",
            admin,
            Some(r#"{"registration":"ajar"}"#),
        )
        .await;
    assert_eq!(r.status, 400);
    let bob = user(&srv, "bob").await;
    srv.wait_log("alice (web): opened registration to anyone who reaches the server");

    let mut a = Client::connect_synced(&srv, &alice).await;
    for i in 0..5 {
        a.say(json!({"to": bob.id}), &format!("m{i}"), "hello")
            .await;
    }
    let r = srv.call("GET", "/api/admin/status", admin, None).await;
    let s = r.json();
    assert_eq!(r.status, 200);
    assert!(s["version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));
    assert_eq!(s["users"], 2);
    assert_eq!(s["messages"], 5);
    assert_eq!(s["connections"], 1);
    assert_eq!(s["users_online"], 1);
    assert!(s["uptime_secs"].as_u64().is_some());
    assert!(s["database_bytes"].as_u64().unwrap() > 0);
    assert!(s["disk_free_bytes"].as_u64().unwrap() > 0);
    let data_dir = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(s["data_dir"], data_dir.display().to_string());

    // The backup: a consistent database, as `chatd backup` writes, named with the time.
    let r = srv.call("GET", "/api/admin/backup", admin, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let disposition = r.header("content-disposition").unwrap().to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"chatd-backup-")
            && disposition.ends_with(".redb\""),
        "{disposition}"
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(
        r.header("content-security-policy").is_some(),
        "security headers"
    );
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("download.redb");
    std::fs::write(&file, &r.body).unwrap();
    let summary = chatd::store::backup::inspect(&file).unwrap();
    assert_eq!((summary.users, summary.messages), (2, 5));
    srv.wait_log("alice (web): downloaded a backup");
    // Nothing left behind in the data directory.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(leftovers.is_empty());
}

/// Last-seen times are kept in memory while the server runs and written at shutdown (and every
/// minute), so the admin list still has them after a restart.
#[tokio::test]
async fn last_seen_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let before = crate::support::ws::now_ms();
    let b = Client::connect_synced(&srv, &bob).await;
    b.close().await;
    srv.terminate();
    let srv = Server::start(dir.path(), &[]);
    let users = srv
        .call("GET", "/api/admin/users", Some(&alice.cookie), None)
        .await
        .json();
    let seen = find(&users, "bob")["last_seen"]
        .as_u64()
        .expect("bob was seen");
    assert!(
        seen >= before && seen <= crate::support::ws::now_ms(),
        "{seen}"
    );
    assert!(
        find(&users, "alice")["last_seen"].is_null(),
        "alice never connected"
    );
}
