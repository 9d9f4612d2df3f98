//! The logged-in user's own account: display name and avatar colour (shown to others in the
//! directory, members, conversation titles and a live `user_updated`), password change (other
//! sessions and tokens end, their sockets close 1008, this browser stays in) and "sign out
//! other devices"; all 401 when logged out.

use serde_json::{json, Value};

use crate::support::ws::{login, user, Client};
use crate::support::{creds, Server};

#[tokio::test]
async fn profile_endpoints_need_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    for (method, path, body) in [
        ("PATCH", "/api/me", Some(r#"{"color":"blue"}"#)),
        (
            "POST",
            "/api/me/password",
            Some(r#"{"current":"password-1","new":"password-2"}"#),
        ),
        ("POST", "/api/me/logout-others", None),
    ] {
        let r = srv.call(method, path, None, body).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        let r = srv
            .call(method, path, Some("chatd_session=00ff"), body)
            .await;
        assert_eq!(r.status, 401, "{path} with a bad cookie");
    }
    assert_eq!(srv.call("PUT", "/api/me", None, None).await.status, 405);
}

fn user_in(list: &Value, id: u64) -> &Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[tokio::test]
async fn a_display_name_and_colour_reach_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let me = srv
        .call("GET", "/api/me", Some(&alice.cookie), None)
        .await
        .json();
    assert_eq!(me["user"]["display_name"], Value::Null);
    let default_color = me["user"]["color"].as_str().unwrap().to_string();
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let ack = a.say(json!({"to": bob.id}), "hi", "hi bob").await;
    let conv = ack["conversation"].as_u64().unwrap();
    b.recv_type("message").await;

    let r = srv
        .call(
            "PATCH",
            "/api/me",
            Some(&alice.cookie),
            Some(r#"{"display_name":"  Alice Liddell ","color":"violet"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["user"],
        json!({"id": alice.id, "name": "alice", "display_name": "Alice Liddell",
               "color": "violet", "admin": true})
    );
    // Live, to bob (and to alice's own connection).
    let up = b.recv_type("user_updated").await;
    assert_eq!(
        up["user"],
        json!({"id": alice.id, "name": "alice", "display_name": "Alice Liddell", "color": "violet"})
    );
    assert_eq!(a.recv_type("user_updated").await["user"]["color"], "violet");
    // In bob's conversation list (the title), the directory and the members list.
    let list = b.request(json!({"type": "conversations"})).await;
    let c = &list["conversations"][0];
    assert_eq!(c["title"], "Alice Liddell");
    assert_eq!(c["peer"]["name"], "alice");
    assert_eq!(c["peer"]["display_name"], "Alice Liddell");
    assert_eq!(c["peer"]["color"], "violet");
    let dir_list = b.request(json!({"type": "users", "query": "ali"})).await;
    let entry = user_in(&dir_list["users"], alice.id);
    assert_eq!(entry["display_name"], "Alice Liddell");
    assert_eq!(entry["color"], "violet");
    let members = b
        .request(json!({"type": "members", "conversation": conv}))
        .await;
    assert_eq!(
        user_in(&members["members"], alice.id)["display_name"],
        "Alice Liddell"
    );
    // A new connection's welcome carries it too.
    let a2 = Client::connect(&srv, &alice).await;
    assert_eq!(a2.welcome["user"]["display_name"], "Alice Liddell");
    assert_eq!(a2.welcome["user"]["color"], "violet");

    // Only the colour: the name stays; null clears the name.
    let r = srv
        .call(
            "PATCH",
            "/api/me",
            Some(&alice.cookie),
            Some(r#"{"color":"teal"}"#),
        )
        .await;
    assert_eq!(r.json()["user"]["display_name"], "Alice Liddell");
    b.recv_type("user_updated").await;
    let r = srv
        .call(
            "PATCH",
            "/api/me",
            Some(&alice.cookie),
            Some(r#"{"display_name":null}"#),
        )
        .await;
    assert_eq!(r.json()["user"]["display_name"], Value::Null);
    assert_eq!(r.json()["user"]["color"], "teal");
    let up = b.recv_type("user_updated").await;
    assert!(up["user"].get("display_name").is_none(), "{up}");
    let list = b.request(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"][0]["title"], "alice");
    assert_ne!(default_color, "", "a default colour from the start");

    // Refusals.
    for (body, code) in [
        (r#"{"display_name":"   "}"#, "invalid_display_name"),
        (r#"{"display_name":"a\u0007b"}"#, "invalid_display_name"),
        (
            r#"{"display_name":"\u202egnp.exe"}"#,
            "invalid_display_name",
        ),
        (
            &format!(r#"{{"display_name":"{}"}}"#, "x".repeat(65)),
            "invalid_display_name",
        ),
        (r#"{"color":"mauve"}"#, "invalid_color"),
        (r#"{"color":7}"#, "bad_json"),
    ] {
        let r = srv
            .call("PATCH", "/api/me", Some(&alice.cookie), Some(body))
            .await;
        assert_eq!((r.status, r.error_code().as_str()), (400, code), "{body}");
    }
    // A flood of changes is throttled (each is a write and a frame to everyone).
    let mut limited = false;
    for i in 0..15 {
        let body = json!({"display_name": format!("A{i}")}).to_string();
        let r = srv
            .call("PATCH", "/api/me", Some(&alice.cookie), Some(&body))
            .await;
        if r.status == 429 {
            assert_eq!(r.error_code(), "rate_limited");
            limited = true;
            break;
        }
    }
    assert!(limited, "15 changes in a row were all accepted");
}

#[tokio::test]
async fn a_password_change_signs_out_every_other_session() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let here = user(&srv, "alice").await;
    let laptop = login(&srv, "alice", "password-1").await;
    let token = {
        let o = crate::support::chatd(
            &[
                "token",
                "create",
                "alice",
                "--data-dir",
                dir.path().to_str().unwrap(),
            ],
            None,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let bearer = format!("Bearer {token}");
    let mut here_ws = Client::connect_synced(&srv, &here).await;
    let mut laptop_ws = Client::connect_synced(&srv, &laptop).await;

    // Wrong current password: refused, nothing changes.
    let r = srv
        .call(
            "POST",
            "/api/me/password",
            Some(&here.cookie),
            Some(r#"{"current":"wrong-pass","new":"password-2"}"#),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "invalid_credentials")
    );
    let r = srv
        .call(
            "POST",
            "/api/me/password",
            Some(&here.cookie),
            Some(r#"{"current":"password-1","new":"short"}"#),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_password")
    );
    assert_eq!(
        srv.call("GET", "/api/me", Some(&laptop.cookie), None)
            .await
            .status,
        200
    );

    let r = srv
        .call(
            "POST",
            "/api/me/password",
            Some(&here.cookie),
            Some(r#"{"current":"password-1","new":"password-2"}"#),
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let fresh = r.session_cookie();
    assert_ne!(fresh, here.cookie);
    // The other device's socket closes with 1008; this browser's stays open and works.
    assert_eq!(laptop_ws.recv_close().await, 1008);
    let reply = here_ws.request(json!({"type": "conversations"})).await;
    assert_eq!(reply["type"], "conversations");
    // Old credentials no longer work; the new cookie and password do.
    for c in [&laptop.cookie, &here.cookie] {
        assert_eq!(srv.call("GET", "/api/me", Some(c), None).await.status, 401);
    }
    let r = srv.get("/api/me", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 401, "the bot token was revoked too");
    assert_eq!(
        srv.call("GET", "/api/me", Some(&fresh), None).await.status,
        200
    );
    let r = srv
        .post_json("/api/login", &creds("alice", "password-1"), &[])
        .await;
    assert_eq!(r.status, 401);
    login(&srv, "alice", "password-2").await;
    srv.wait_log("alice (web): changed their own password");
}

#[tokio::test]
async fn signing_out_other_devices_keeps_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let here = user(&srv, "alice").await;
    let phone = login(&srv, "alice", "password-1").await;
    let tablet = login(&srv, "alice", "password-1").await;
    let bob = user(&srv, "bob").await;
    let mut here_ws = Client::connect_synced(&srv, &here).await;
    let mut phone_ws = Client::connect_synced(&srv, &phone).await;
    let mut bob_ws = Client::connect_synced(&srv, &bob).await;
    let r = srv
        .call("POST", "/api/me/logout-others", Some(&here.cookie), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(phone_ws.recv_close().await, 1008);
    for c in [&phone.cookie, &tablet.cookie] {
        assert_eq!(srv.call("GET", "/api/me", Some(c), None).await.status, 401);
    }
    assert_eq!(
        srv.call("GET", "/api/me", Some(&here.cookie), None)
            .await
            .status,
        200
    );
    // This device and other users are untouched.
    here_ws
        .say(json!({"to": bob.id}), "still", "still here")
        .await;
    assert_eq!(bob_ws.recv_type("message").await["text"], "still here");
    srv.wait_log("alice (web): signed out their other devices: alice (id 1); 2 session(s) revoked, 1 connection(s) closed");
}
