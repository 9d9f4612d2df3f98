//! The account API end to end: register, log in, log out, who-am-I, sessions across restarts,
//! disabled accounts, rate limits, closed registration.

use crate::support::{chatd, creds, post_json_from, Server};

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

/// After 5 wrong passwords from anyone, the right password got 429 for a minute: anyone who
/// knew a name could keep its owner out with one request a minute. Failures now count per
/// (account, address), per address and, much more loosely, per account; a browser that logged
/// in before (device cookie) has its own budget. The attacker stays throttled throughout.
#[tokio::test]
async fn an_attacker_cannot_lock_the_owner_out_and_stays_throttled() {
    use std::net::Ipv4Addr;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let owner = Ipv4Addr::new(127, 0, 0, 1);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let login = |from: Ipv4Addr, password: &'static str, cookie: Option<String>| {
        let addr = srv.addr;
        async move {
            let h: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
            post_json_from(from, addr, "/api/login", &creds("dave", password), &h).await
        }
    };
    let r = srv
        .post_json("/api/register", &creds("dave", "password-1"), &[])
        .await;
    assert_eq!(r.status, 201);
    let registered = r;

    // One attacker: 5 failures, then throttled, even with the right password.
    for i in 0..5 {
        assert_eq!(
            login(attacker, "nope-nope", None).await.status,
            401,
            "attempt {i}"
        );
    }
    for _ in 0..3 {
        let r = login(attacker, "nope-nope", None).await;
        assert_eq!(
            (r.status, r.error_code()),
            (429, "rate_limited".to_string())
        );
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    assert_eq!(login(attacker, "password-1", None).await.status, 429);
    // The owner, from their own address and a browser that never logged in: fine.
    let r = login(owner, "password-1", None).await;
    assert_eq!(r.status, 200, "the owner was locked out: {:?}", r.body);
    assert_eq!(login(attacker, "password-1", None).await.status, 429);

    // Registering (and every login) gave the browser a device cookie for this account.
    let device = registered.cookie("chatd_device").expect("a device cookie");
    let sc: Vec<&str> = registered
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let dc = sc.iter().find(|c| c.starts_with("chatd_device=")).unwrap();
    assert!(
        dc.contains("Path=/api/login") && dc.contains("HttpOnly"),
        "{dc}"
    );
    assert!(dc.contains("SameSite=Strict"), "{dc}");

    // Many addresses together drain the account's budget for unknown browsers...
    let mut failures = 5;
    'spray: for last in 3..=60u8 {
        let from = Ipv4Addr::new(127, 0, 0, last);
        for _ in 0..5 {
            let r = login(from, "nope-nope", None).await;
            if r.status == 429 {
                break 'spray;
            }
            assert_eq!(r.status, 401);
            failures += 1;
        }
    }
    assert!(
        (30..=45).contains(&failures),
        "{failures} failures before the account's limit"
    );
    let fresh = Ipv4Addr::new(127, 0, 0, 99);
    assert_eq!(login(fresh, "password-1", None).await.status, 429);
    assert_eq!(login(fresh, "nope-nope", None).await.status, 429);
    // ...but not for the owner's browser that logged in before, from any address.
    let r = login(fresh, "password-1", Some(device.clone())).await;
    assert_eq!(
        r.status, 200,
        "the owner's browser was locked out: {:?}",
        r.body
    );
    // A device cookie is no pass for guessing: 10 failures, then that browser waits too.
    let mut refused = 0;
    for _ in 0..12 {
        match login(attacker, "nope-nope", Some(device.clone()))
            .await
            .status
        {
            401 => {}
            429 => refused += 1,
            s => panic!("{s}"),
        }
    }
    assert_eq!(refused, 2);
    // A forged or foreign device cookie is no cookie.
    let forged = format!("{}0", &device[..device.len() - 1]);
    let forged = if forged == device {
        format!("{}1", &device[..device.len() - 1])
    } else {
        forged
    };
    assert_eq!(login(owner, "password-1", Some(forged)).await.status, 429);
    // Another account from the attacker's address is fine while the address has budget.
    srv.post_json("/api/register", &creds("erin", "password-1"), &[])
        .await;
    let r = post_json_from(
        attacker,
        srv.addr,
        "/api/login",
        &creds("erin", "password-1"),
        &[],
    )
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
