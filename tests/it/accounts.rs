//! The account API end to end: register, log in, log out, who-am-I, sessions across restarts,
//! disabled accounts, rate limits, closed registration.

use crate::support::{chatd, creds, Server};

#[tokio::test]
async fn register_login_me_logout() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);

    let r = srv
        .post_json("/api/register", &creds("Alice", "password-1"), &[])
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.json()["user"]["name"], "Alice");
    assert_eq!(
        r.json()["user"]["admin"],
        true,
        "the first account is an admin"
    );
    let sc = r.header("set-cookie").unwrap().to_string();
    assert!(sc.contains("HttpOnly"), "{sc}");
    assert!(sc.contains("SameSite=Strict"), "{sc}");
    assert!(
        !sc.contains("Secure"),
        "plain http has no Secure flag: {sc}"
    );
    let alice = r.session_cookie();

    let me = srv.get("/api/me", &[("cookie", &alice)]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"]["name"], "Alice");

    let r = srv
        .post_json("/api/register", &creds("bob", "password-2"), &[])
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json()["user"]["admin"],
        false,
        "only the first is an admin"
    );

    // Duplicate names are refused whatever their case.
    let r = srv
        .post_json("/api/register", &creds("ALICE", "password-3"), &[])
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_code(), "name_taken");

    // Log in again (case-insensitive name), get a second, independent session.
    let r = srv
        .post_json("/api/login", &creds("alice", "password-1"), &[])
        .await;
    assert_eq!(r.status, 200);
    let alice2 = r.session_cookie();
    assert_ne!(alice, alice2);

    // Logout ends exactly that session and clears the cookie.
    let r = srv
        .post_json("/api/logout", "{}", &[("cookie", &alice)])
        .await;
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(srv.get("/api/me", &[("cookie", &alice)]).await.status, 401);
    assert_eq!(srv.get("/api/me", &[("cookie", &alice2)]).await.status, 200);

    // No cookie, a garbage cookie, or a well-formed unknown token: 401.
    assert_eq!(srv.get("/api/me", &[]).await.status, 401);
    assert_eq!(
        srv.get("/api/me", &[("cookie", "chatd_session=zzz")])
            .await
            .status,
        401
    );
    let fake = format!("chatd_session={}", "a".repeat(64));
    let r = srv.get("/api/me", &[("cookie", &fake)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthorized");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    srv.post_json("/api/register", &creds("carol", "password-1"), &[])
        .await;

    let wrong = srv
        .post_json("/api/login", &creds("carol", "password-X"), &[])
        .await;
    let unknown = srv
        .post_json("/api/login", &creds("nobody", "password-1"), &[])
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.body, unknown.body, "no user enumeration");
    assert!(wrong.header("set-cookie").is_none());
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    srv.post_json("/api/register", &creds("dave", "password-1"), &[])
        .await;
    for i in 0..5 {
        let r = srv
            .post_json("/api/login", &creds("dave", "nope-nope"), &[])
            .await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    // Now even the right password is refused for a while, with a Retry-After.
    let r = srv
        .post_json("/api/login", &creds("DAVE", "password-1"), &[])
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another account from the same address is still fine (the per-address budget is larger).
    srv.post_json("/api/register", &creds("erin", "password-1"), &[])
        .await;
    let r = srv
        .post_json("/api/login", &creds("erin", "password-1"), &[])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn session_survives_restart_even_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let r = srv
        .post_json("/api/register", &creds("frank", "password-1"), &[])
        .await;
    assert_eq!(r.status, 201);
    let cookie = r.session_cookie();
    // The 201 was sent after an fsync'd commit: a kill -9 right after must not lose the account
    // or the session.
    srv.kill();

    let mut srv = Server::start(dir.path(), &[]);
    let me = srv.get("/api/me", &[("cookie", &cookie)]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"]["name"], "frank");
    let r = srv
        .post_json("/api/login", &creds("frank", "password-1"), &[])
        .await;
    assert_eq!(r.status, 200);

    // A graceful stop exits 0 and logs it.
    let status = srv.terminate();
    assert!(status.success(), "{status:?}");
    assert!(srv.log().contains("shutting down"), "{}", srv.log());
}

#[tokio::test]
async fn disabled_user_is_locked_out_and_can_be_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    srv.post_json("/api/register", &creds("admin", "password-1"), &[])
        .await;
    let r = srv
        .post_json("/api/register", &creds("gina", "password-1"), &[])
        .await;
    let cookie = r.session_cookie();
    srv.terminate();

    let out = chatd(&["user", "disable", "gina", "--data-dir", d], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.get("/api/me", &[("cookie", &cookie)]).await.status, 401);
    let r = srv
        .post_json("/api/login", &creds("gina", "password-1"), &[])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "account_disabled");
    // A wrong password for a disabled account still gets the uniform answer.
    let r = srv
        .post_json("/api/login", &creds("gina", "password-2"), &[])
        .await;
    assert_eq!(r.status, 401);
    srv.terminate();

    let out = chatd(&["user", "enable", "gina", "--data-dir", d], None);
    assert!(out.status.success());
    let srv = Server::start(dir.path(), &[]);
    // The old session stays revoked; a fresh login works.
    assert_eq!(srv.get("/api/me", &[("cookie", &cookie)]).await.status, 401);
    let r = srv
        .post_json("/api/login", &creds("gina", "password-1"), &[])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn closed_registration_allows_only_the_first_account() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--registration", "closed"]);
    let r = srv
        .post_json("/api/register", &creds("root", "password-1"), &[])
        .await;
    assert_eq!(r.status, 201, "the very first account may always register");
    assert_eq!(r.json()["user"]["admin"], true);
    let r = srv
        .post_json("/api/register", &creds("mallory", "password-1"), &[])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "registration_closed");
}

#[tokio::test]
async fn bearer_token_is_accepted_like_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let r = srv
        .post_json("/api/register", &creds("henry", "password-1"), &[])
        .await;
    let token = r.session_cookie().split_once('=').unwrap().1.to_string();
    let auth = format!("Bearer {token}");
    let me = srv.get("/api/me", &[("authorization", &auth)]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"]["name"], "henry");
}
