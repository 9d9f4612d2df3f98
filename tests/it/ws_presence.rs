//! Ephemeral state over real WebSocket clients: presence (first device on, last device off,
//! only to contacts), typing indicators (to the other members' devices, throttled per
//! connection), and the user directory.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::ws::{next_ref, types, user, Client, NO_SUCH_CONVERSATION};
use crate::support::{chatd, Server};

#[tokio::test]
async fn presence_follows_the_first_and_last_device() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    // Alice and bob share a conversation; carol shares none with bob.
    let ack = a.say(json!({"to": bob.id}), "a1", "hi").await;
    let conv = ack["conversation"].as_u64().unwrap();
    let mut c = Client::connect_synced(&srv, &carol).await;

    let b1 = Client::connect(&srv, &bob).await;
    let p = a.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": bob.id, "online": true})
    );
    let s = a.request(json!({"type": "conversations"})).await;
    assert_eq!(s["conversations"][0]["peer"]["online"], true);

    // A second device, then closing one of the two: bob stays online, nothing is announced.
    let b2 = Client::connect(&srv, &bob).await;
    b1.close().await;
    a.expect_no("presence", Duration::from_millis(1500)).await;
    let m = a
        .request(json!({"type": "members", "conversation": conv}))
        .await;
    let bob_entry = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == bob.id)
        .unwrap()
        .clone();
    assert_eq!(bob_entry["online"], true, "{m}");

    // The last device goes: offline.
    b2.close().await;
    let p = a.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": bob.id, "online": false})
    );
    let s = a.request(json!({"type": "conversations"})).await;
    assert_eq!(s["conversations"][0]["peer"]["online"], false);
    // Carol is not a contact of bob: she heard none of it.
    c.expect_no("presence", Duration::from_millis(300)).await;

    // Coming back is announced again.
    let _b3 = Client::connect(&srv, &bob).await;
    let p = a.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": bob.id, "online": true})
    );
}

#[tokio::test]
async fn typing_reaches_the_other_members_devices_and_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a1 = Client::connect_synced(&srv, &alice).await;
    let mut a2 = Client::connect_synced(&srv, &alice).await;
    let mut b1 = Client::connect_synced(&srv, &bob).await;
    let mut b2 = Client::connect_synced(&srv, &bob).await;
    let mut c = Client::connect_synced(&srv, &carol).await;
    let ack = a1.say(json!({"to": bob.id}), "a1", "hi").await;
    let conv = ack["conversation"].as_u64().unwrap();
    for x in [&mut a2, &mut b1, &mut b2] {
        assert_eq!(x.recv_type("message").await["seq"], 1);
    }

    a1.send(json!({"type": "typing", "conversation": conv}))
        .await;
    let expect =
        json!({"type": "typing", "conversation": conv, "user": alice.id, "name": alice.name});
    for x in [&mut b1, &mut b2] {
        assert_eq!(x.recv_type("typing").await, expect);
    }
    // Within 2 s from the same connection: dropped silently (no error either). The message
    // sent right after is queued behind a forwarded typing, so anything before it would show.
    a1.send(json!({"type": "typing", "conversation": conv}))
        .await;
    let ack = a1.say(json!({"conversation": conv}), "a2", "typed").await;
    assert_eq!(ack["seq"], 2);
    for x in [&mut b1, &mut b2] {
        let (m, before) = x.recv_until("message").await;
        assert_eq!(m["seq"], 2);
        assert!(
            before.iter().all(|f| f["type"] != "typing"),
            "throttled typing was forwarded: {before:?}"
        );
    }
    // The typer's own other device never sees her typing.
    let (m, before) = a2.recv_until("message").await;
    assert_eq!(m["seq"], 2);
    assert!(
        before.iter().all(|f| f["type"] != "typing"),
        "{:?}",
        types(&before)
    );

    // The throttle is per connection: alice's other device may signal at once.
    a2.send(json!({"type": "typing", "conversation": conv}))
        .await;
    assert_eq!(b1.recv_type("typing").await, expect);
    assert_eq!(b2.recv_type("typing").await, expect);
    a1.expect_no("typing", Duration::from_millis(300)).await;

    // Bob typing reaches alice's devices with his name.
    b1.send(json!({"type": "typing", "conversation": conv}))
        .await;
    let from_bob =
        json!({"type": "typing", "conversation": conv, "user": bob.id, "name": bob.name});
    assert_eq!(a1.recv_type("typing").await, from_bob);
    assert_eq!(a2.recv_type("typing").await, from_bob);

    // Not a member: not_found, and nothing reaches the members.
    let e = c
        .request_err(json!({"type": "typing", "conversation": conv}))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    let e2 = c
        .request_err(json!({"type": "typing", "conversation": NO_SUCH_CONVERSATION}))
        .await;
    assert_eq!((&e["code"], &e["message"]), (&e2["code"], &e2["message"]));
    a1.say(json!({"conversation": conv}), "a3", "still here")
        .await;
    let (_, before) = b1.recv_until("message").await;
    assert!(before.iter().all(|f| f["type"] != "typing"), "{before:?}");

    // After the interval, the first connection may signal again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    a1.send(json!({"type": "typing", "conversation": conv}))
        .await;
    assert_eq!(b1.recv_type("typing").await, expect);
}

#[tokio::test]
async fn typing_to_a_foreign_conversation_is_refused_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let conv = a.say(json!({"to": bob.id}), "a1", "hi").await["conversation"]
        .as_u64()
        .unwrap();
    let mut c = Client::connect_synced(&srv, &carol).await;
    for target in [conv, NO_SUCH_CONVERSATION] {
        for attempt in 1..=2 {
            let r = next_ref();
            c.send(json!({"type": "typing", "conversation": target, "ref": r}))
                .await;
            // A request with a reply right after: the typing's answer, if any, comes first.
            let (_, before) = c.request_collect(json!({"type": "conversations"})).await;
            let e = before.iter().find(|f| f["ref"] == r);
            assert!(
                e.is_some_and(|e| e["code"] == "not_found"),
                "typing attempt {attempt} on {target}: got {before:?}"
            );
        }
    }
}

/// The directory entries of a `users` reply as (name, online), checking each has exactly
/// id, name and online.
fn entries(reply: &Value) -> Vec<(String, bool)> {
    assert_eq!(reply["type"], "users", "{reply}");
    reply["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let mut keys: Vec<&str> = u.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            keys.sort();
            // (`display_name` too, once a user has set one.)
            assert_eq!(keys, vec!["color", "id", "name", "online"], "{u}");
            assert!(u["id"].as_u64().is_some());
            (
                u["name"].as_str().unwrap().to_string(),
                u["online"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn named(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, o)| (n.to_string(), *o)).collect()
}

#[tokio::test]
async fn directory_filters_case_insensitively_and_hides_disabled_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    user(&srv, "ALIson").await;
    user(&srv, "Malik").await;
    user(&srv, "bob").await;
    user(&srv, "alibaba").await;

    let mut a = Client::connect_synced(&srv, &alice).await;
    let r = a.request(json!({"type": "users", "query": "ALI"})).await;
    assert_eq!(
        entries(&r),
        named(&[
            ("alibaba", false),
            ("alice", true),
            ("ALIson", false),
            ("Malik", false)
        ]),
        "substring, any case, sorted by name"
    );
    let r = a.request(json!({"type": "users"})).await;
    assert_eq!(entries(&r).len(), 5, "empty query lists everyone");
    let r = a
        .request(json!({"type": "users", "query": "ali", "limit": 2}))
        .await;
    assert_eq!(entries(&r), named(&[("alibaba", false), ("alice", true)]));
    let r = a.request(json!({"type": "users", "query": "zzz"})).await;
    assert_eq!(entries(&r), vec![]);
    for bad in [
        json!({"type": "users", "limit": 0}),
        json!({"type": "users", "limit": 101}),
        json!({"type": "users", "query": "q".repeat(33)}),
        json!({"type": "users", "query": 5}),
    ] {
        let e = a.request_err(bad.clone()).await;
        assert_eq!(e["code"], "bad_frame", "{bad}: {e}");
    }
    a.close().await;

    // Disable alibaba (the CLI needs the server stopped), restart.
    srv.terminate();
    let out = chatd(&["user", "disable", "alibaba", "--data-dir", d], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = Server::start(dir.path(), &[]);
    let mut a = Client::connect_synced(&srv, &alice).await;
    let r = a.request(json!({"type": "users", "query": "ali"})).await;
    assert_eq!(
        entries(&r),
        named(&[("alice", true), ("ALIson", false), ("Malik", false)])
    );
    let r = a.request(json!({"type": "users"})).await;
    assert!(entries(&r).iter().all(|(n, _)| n != "alibaba"), "{r}");
}

/// What the others see of a disabled user, and what writing to one does (PROTOCOL.md,
/// "Disabled accounts"): the user goes offline at once, leaves the directory, stays in
/// conversations and member lists with their messages; a `send` with `to` them, or a group
/// or a new group naming them, is `user_not_found`; a `send` into an existing conversation with
/// them is stored (they read it if they are enabled again).
#[tokio::test]
async fn a_disabled_user_goes_offline_leaves_the_directory_and_keeps_their_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let direct = a.say(json!({"to": bob.id}), "d1", "hi bob").await["conversation"]
        .as_u64()
        .unwrap();
    let g = a
        .request(json!({"type": "create_group", "title": "g", "members": [bob.id]}))
        .await;
    let group = g["conversation"]["id"].as_u64().unwrap();
    b.say(json!({"conversation": group}), "b1", "from bob")
        .await;

    // Disabled while the server runs: his connection is closed, alice sees him go offline.
    let out = chatd(&["user", "disable", "bob", "--data-dir", d], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b.recv_close().await, 1008);
    loop {
        let p = a.recv_type("presence").await;
        if p["user"] == bob.id && p["online"] == false {
            break;
        }
    }
    let r = a.request(json!({"type": "users", "query": "bo"})).await;
    assert_eq!(r["users"], json!([]), "{r}");
    // Still in the conversation list, the member list and the history.
    let l = a.request(json!({"type": "conversations"})).await;
    let ids: Vec<u64> = l["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&direct) && ids.contains(&group), "{l}");
    let m = a
        .request(json!({"type": "members", "conversation": group}))
        .await;
    let bob_m = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == bob.id)
        .cloned();
    assert_eq!(
        bob_m.map(|x| x["online"].clone()),
        Some(json!(false)),
        "{m}"
    );
    let h = a
        .request(json!({"type": "history", "conversation": group}))
        .await;
    let first_text = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "text")
        .cloned()
        .unwrap_or_default();
    assert_eq!(first_text["sender_name"], "bob", "{h}");
    // Writing to him.
    let e = a
        .request_err(json!({"type": "send", "client_id": "d2", "to": bob.id, "text": "hello?"}))
        .await;
    assert_eq!(e["code"], "user_not_found", "{e}");
    let ack = a
        .say(json!({"conversation": direct}), "d3", "for later")
        .await;
    assert_eq!(ack["seq"], 2);
    let f = json!({"type": "create_group", "title": "h", "members": [bob.id, carol.id]});
    let e = a.request_err(f.clone()).await;
    assert_eq!(e["code"], "user_not_found", "{f}: {e}");
    // Naming him where he already is a member changes nothing, as for anyone.
    let r = a
        .request(json!({"type": "add_members", "conversation": group, "members": [bob.id]}))
        .await;
    assert_eq!(r["conversation"]["member_count"], 2, "{r}");
    // Enabled again, he logs in and finds the message.
    let out = chatd(&["user", "enable", "bob", "--data-dir", d], None);
    assert!(out.status.success());
    let bob = crate::support::ws::login(&srv, "bob", "password-1").await;
    let mut b = Client::connect(&srv, &bob).await;
    let h = b
        .request(json!({"type": "history", "conversation": direct}))
        .await;
    assert_eq!(h["messages"][1]["text"], "for later");
}
