//! @mentions, mute and group rename (issue 23) over real WebSocket clients: mentions are
//! stored as member ids (a non-member's is dropped, the text keeps "@name") and counted per
//! user after the read position (`mentions` in summaries), edits move them; `mute` is kept per
//! user and conversation, acked, and every device of the user gets the updated `conversation`;
//! `rename_group` (owner only) appends a `system` line and every member gets the new title.

use serde_json::{json, Value};

use crate::support::ws::{user, Client};
use crate::support::Server;

fn conv_of(list: &Value, id: u64) -> &Value {
    list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no conversation {id} in {list}"))
}

#[tokio::test]
async fn mentions_are_member_ids_counted_after_the_read_position_and_follow_edits() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let eve = user(&srv, "eve").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let g = a
        .request(json!({"type": "create_group", "title": "g", "members": [bob.id, carol.id]}))
        .await["conversation"]["id"]
        .as_u64()
        .unwrap();
    // Bob, alice herself, eve (not a member) and a repeat: only bob is kept.
    a.send(json!({"type": "send", "client_id": "m1", "conversation": g,
        "text": "@bob @alice @eve look", "mentions": [bob.id, alice.id, eve.id, bob.id]}))
        .await;
    assert_eq!(a.recv_type("ack").await["seq"], 2);
    let live = loop {
        let m = b.recv_type("message").await;
        if m["seq"] == 2 {
            break m;
        }
    };
    assert_eq!(live["mentions"], json!([bob.id]), "{live}");
    assert_eq!(
        live["text"], "@bob @alice @eve look",
        "the text is kept as written"
    );
    a.say(json!({"conversation": g}), "m2", "no mention").await;

    let list = b.request(json!({"type": "conversations"})).await;
    let c = conv_of(&list, g);
    assert_eq!(
        (&c["unread"], &c["mentions"]),
        (&json!(2), &json!(1)),
        "{c}"
    );
    // Carol was not mentioned.
    let mut c1 = Client::connect_synced(&srv, &carol).await;
    let list = c1.request(json!({"type": "conversations"})).await;
    assert_eq!(conv_of(&list, g)["mentions"], 0);

    // An edit that mentions carol instead moves the mention.
    a.request(
        json!({"type": "edit", "conversation": g, "seq": 2, "text": "@carol look",
        "mentions": [carol.id]}),
    )
    .await;
    let list = b.request(json!({"type": "conversations"})).await;
    assert_eq!(conv_of(&list, g)["mentions"], 0);
    let list = c1.request(json!({"type": "conversations"})).await;
    assert_eq!(conv_of(&list, g)["mentions"], 1);
    let h = c1
        .request(json!({"type": "history", "conversation": g}))
        .await;
    assert_eq!(h["messages"][1]["mentions"], json!([carol.id]), "{h}");

    // Reading past it clears the count; a deleted message's mention is gone too.
    a.send(json!({"type": "send", "client_id": "m3", "conversation": g,
        "text": "@carol again", "mentions": [carol.id]}))
        .await;
    let seq = a.recv_type("ack").await["seq"].as_u64().unwrap();
    c1.send(json!({"type": "read", "conversation": g, "seq": seq - 1}))
        .await;
    c1.writer_barrier().await;
    let list = c1.request(json!({"type": "conversations"})).await;
    assert_eq!(conv_of(&list, g)["mentions"], 1, "{list}");
    a.request(json!({"type": "delete", "conversation": g, "seq": seq}))
        .await;
    let list = c1.request(json!({"type": "conversations"})).await;
    assert_eq!(conv_of(&list, g)["mentions"], 0, "{list}");

    // Kept across a restart.
    drop((a, b, c1));
    srv.terminate();
    let srv = Server::start(dir.path(), &[]);
    let mut b = Client::connect_synced(&srv, &bob).await;
    let h = b
        .request(json!({"type": "history", "conversation": g}))
        .await;
    assert_eq!(h["messages"][1]["mentions"], json!([carol.id]), "{h}");
    assert_eq!(h["messages"][1]["edited"], true, "{h}");
}

#[tokio::test]
async fn mute_is_per_user_acked_and_shown_on_every_device_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let outsider = user(&srv, "outsider").await;
    let mut a1 = Client::connect_synced(&srv, &alice).await;
    let mut a2 = Client::connect_synced(&srv, &alice).await;
    let conv = a1.say(json!({"to": bob.id}), "x", "hi").await["conversation"]
        .as_u64()
        .unwrap();
    let (ack, before) = a1
        .request_collect(json!({"type": "mute", "conversation": conv, "muted": true}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["conversation"], conv);
    assert!(
        ack.get("seq").is_none() && ack.get("time").is_none(),
        "{ack}"
    );
    // Both of alice's devices get the conversation with muted: true.
    let f = match before.iter().find(|f| f["type"] == "conversation") {
        Some(f) => f.clone(),
        None => a1.recv_type("conversation").await,
    };
    assert_eq!(f["conversation"]["muted"], true, "{f}");
    // (a2 first hears of the new direct conversation, unmuted, then of the mute.)
    let f = a2.recv_type("conversation").await;
    assert_eq!(f["conversation"]["muted"], false);
    let f = a2.recv_type("conversation").await;
    assert_eq!(
        (&f["conversation"]["id"], &f["conversation"]["muted"]),
        (&json!(conv), &json!(true))
    );
    // Bob's view is his own.
    let mut b = Client::connect_synced(&srv, &bob).await;
    assert_eq!(b.welcome["conversations"][0]["muted"], false);
    // Not a member: not_found.
    let mut o = Client::connect_synced(&srv, &outsider).await;
    let e = o
        .request(json!({"type": "mute", "conversation": conv, "muted": true}))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    // A muted conversation still counts unread (the client greys it).
    b.say(json!({"conversation": conv}), "y", "ping").await;
    drop((a1, a2, b, o));
    srv.terminate();
    let srv = Server::start(dir.path(), &[]);
    let mut a = Client::connect_synced(&srv, &alice).await;
    let c = &a.welcome["conversations"][0];
    assert_eq!(
        (&c["muted"], &c["unread"]),
        (&json!(true), &json!(1)),
        "{c}"
    );
    a.request(json!({"type": "mute", "conversation": conv, "muted": false}))
        .await;
    let list = a.request(json!({"type": "conversations"})).await;
    assert_eq!(conv_of(&list, conv)["muted"], false);
}

#[tokio::test]
async fn the_owner_renames_a_group_with_a_system_line_and_everyone_sees_the_title() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let g = a
        .request(json!({"type": "create_group", "title": "old", "members": [bob.id]}))
        .await["conversation"]["id"]
        .as_u64()
        .unwrap();
    let dm = a.say(json!({"to": bob.id}), "d", "hi").await["conversation"]
        .as_u64()
        .unwrap();
    // Not the owner; not a group; a bad title.
    let e = b
        .request(json!({"type": "rename_group", "conversation": g, "title": "mine"}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = a
        .request(json!({"type": "rename_group", "conversation": dm, "title": "x"}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    for title in ["", "   ", &"t".repeat(65)] {
        let e = a
            .request(json!({"type": "rename_group", "conversation": g, "title": title}))
            .await;
        assert_eq!(e["code"], "bad_frame", "{e}");
    }

    let ack = a
        .request(json!({"type": "rename_group", "conversation": g, "title": "  new name ", "client_id": "rn"}))
        .await;
    assert_eq!(
        (&ack["type"], &ack["seq"], &ack["client_id"]),
        (&json!("ack"), &json!(2), &json!("rn")),
        "{ack}"
    );
    let line = loop {
        let m = b.recv_type("message").await;
        if m["conversation"] == g && m["seq"] == 2 {
            break m;
        }
    };
    assert_eq!(line["kind"], "system");
    assert_eq!(line["sender"], alice.id);
    assert_eq!(
        line["system"],
        json!({"action": "renamed", "title": "new name"}),
        "{line}"
    );
    let f = b.recv_type("conversation").await;
    assert_eq!(
        (&f["conversation"]["id"], &f["conversation"]["title"]),
        (&json!(g), &json!("new name"))
    );
    // Leaving adds a "left" line the others see.
    let r = b.request(json!({"type": "leave", "conversation": g})).await;
    assert_eq!(r["type"], "removed", "{r}");
    let h = a
        .request(json!({"type": "history", "conversation": g}))
        .await;
    let actions: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["system"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "renamed", "left"], "{h}");
    assert_eq!(h["messages"][2]["sender"], bob.id);
    // The list's preview ignores system lines; unread does too.
    let list = a.request(json!({"type": "conversations"})).await;
    let c = conv_of(&list, g);
    assert_eq!(
        (&c["title"], &c["unread"], &c["last_seq"]),
        (&json!("new name"), &json!(0), &json!(3))
    );
    assert!(c.get("last_message").is_none(), "{c}");
}
