//! Edits, deletions and reactions (issue 23) over real WebSocket clients: each is a seq event
//! acked to its author and fanned out to every member live; `history` serves the folded state
//! and skips the events; `sync` replays every seq, events included, exactly once, with text
//! messages in their current state; it all survives a restart. Then who may do what, and bad
//! input, each answered with the documented error and nothing written.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::ws::{user, Client, TestUser};
use crate::support::Server;

/// Sends an event frame with a fresh ref and returns its ack (panics on an error).
async fn act(c: &mut Client, frame: Value) -> Value {
    let r = c.request(frame.clone()).await;
    assert_eq!(r["type"], "ack", "{frame} → {r}");
    r
}

/// The next `message` frame of `conv` with `seq`, skipping others.
async fn message_at(c: &mut Client, conv: u64, seq: u64) -> Value {
    loop {
        let m = c.recv_type("message").await;
        if m["conversation"] == conv && m["seq"] == seq {
            return m;
        }
    }
}

fn history_by_seq(h: &Value) -> Vec<(u64, String)> {
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A direct conversation of alice and bob with alice's "one", "two", "three" (seqs 1-3).
async fn chat(srv: &Server) -> (TestUser, TestUser, u64) {
    let alice = user(srv, "alice").await;
    let bob = user(srv, "bob").await;
    let mut a = Client::connect_synced(srv, &alice).await;
    let conv = a.say(json!({"to": bob.id}), "a1", "one").await["conversation"]
        .as_u64()
        .unwrap();
    a.say(json!({"conversation": conv}), "a2", "two").await;
    a.say(json!({"conversation": conv}), "a3", "three").await;
    (alice, bob, conv)
}

#[tokio::test]
async fn edit_delete_and_react_are_seq_events_live_folded_in_history_and_kept_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let (alice, bob, conv) = chat(&srv).await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;

    // Edit: acked with the event's seq (and the frame's client_id), seen live by bob.
    let ack = act(
        &mut a,
        json!({"type": "edit", "conversation": conv, "seq": 2, "text": "two, fixed", "client_id": "e-1"}),
    )
    .await;
    assert_eq!(
        (ack["seq"].as_u64(), ack["client_id"].as_str()),
        (Some(4), Some("e-1"))
    );
    assert_eq!(ack["conversation"], conv);
    assert!(ack["time"].as_u64().is_some());
    let m = message_at(&mut b, conv, 4).await;
    assert_eq!(
        m["client_id"], "e-1",
        "an event carries its request's client_id: {m}"
    );
    assert_eq!(
        (&m["kind"], &m["target"], &m["text"], &m["sender"]),
        (
            &json!("edit"),
            &json!(2),
            &json!("two, fixed"),
            &json!(alice.id)
        ),
        "{m}"
    );

    // A reaction from bob, then from alice with the same emoji, then bob takes his back.
    let r1 = act(
        &mut b,
        json!({"type": "react", "conversation": conv, "seq": 1, "emoji": "👍"}),
    )
    .await;
    assert_eq!(r1["seq"], 5);
    assert!(
        r1.get("client_id").is_none(),
        "no client_id given, none echoed: {r1}"
    );
    let m = message_at(&mut a, conv, 5).await;
    assert_eq!(
        (
            &m["kind"],
            &m["target"],
            &m["emoji"],
            &m["added"],
            &m["sender"]
        ),
        (
            &json!("reaction"),
            &json!(1),
            &json!("👍"),
            &json!(true),
            &json!(bob.id)
        ),
        "{m}"
    );
    act(
        &mut a,
        json!({"type": "react", "conversation": conv, "seq": 1, "emoji": "👍"}),
    )
    .await;
    act(
        &mut a,
        json!({"type": "react", "conversation": conv, "seq": 1, "emoji": "🎉"}),
    )
    .await;
    act(
        &mut b,
        json!({"type": "react", "conversation": conv, "seq": 1, "emoji": "👍"}),
    )
    .await;
    let m = message_at(&mut a, conv, 8).await;
    assert_eq!(
        (&m["emoji"], &m["added"]),
        (&json!("👍"), &json!(false)),
        "{m}"
    );

    // Delete: alice takes "three" back.
    let ack = act(
        &mut a,
        json!({"type": "delete", "conversation": conv, "seq": 3}),
    )
    .await;
    assert_eq!(ack["seq"], 9);
    let m = message_at(&mut b, conv, 9).await;
    assert_eq!(
        (&m["kind"], &m["target"], &m["text"]),
        (&json!("delete"), &json!(3), &json!("")),
        "{m}"
    );

    let check = |h: Value| {
        // Only the text messages, folded: events are omitted.
        assert_eq!(
            history_by_seq(&h),
            [(1, "text".into()), (2, "text".into()), (3, "text".into())],
            "{h}"
        );
        let ms = h["messages"].as_array().unwrap();
        assert_eq!(ms[0]["text"], "one");
        assert_eq!(
            ms[0]["reactions"],
            json!([{"emoji": "👍", "users": [alice.id]}, {"emoji": "🎉", "users": [alice.id]}]),
            "ordered by first reaction; bob's is gone: {h}"
        );
        assert!(ms[0].get("edited").is_none() && ms[0].get("deleted").is_none());
        assert_eq!(
            (&ms[1]["text"], &ms[1]["edited"]),
            (&json!("two, fixed"), &json!(true))
        );
        assert_eq!(
            (&ms[2]["text"], &ms[2]["deleted"]),
            (&json!(""), &json!(true))
        );
        assert!(ms[2].get("reactions").is_none() && ms[2].get("mentions").is_none());
        assert_eq!(h["complete"], true);
    };
    check(
        b.request(json!({"type": "history", "conversation": conv}))
            .await,
    );

    // The list: last_seq counts every seq, but unread and the preview only text messages.
    let list = b.request(json!({"type": "conversations"})).await;
    let c = &list["conversations"][0];
    assert_eq!(c["last_seq"], 9, "{c}");
    assert_eq!(c["last_message"]["seq"], 3, "{c}");
    assert_eq!(c["last_message"]["deleted"], true, "{c}");
    assert_eq!(c["last_message"]["text"], "", "{c}");

    // A page that ends on events still advances: `before` 9 gives the three messages.
    let h = b
        .request(json!({"type": "history", "conversation": conv, "before": 9, "limit": 2}))
        .await;
    assert_eq!(
        history_by_seq(&h).iter().map(|x| x.0).collect::<Vec<_>>(),
        [2, 3],
        "{h}"
    );

    drop((a, b));
    srv.terminate();
    let srv = Server::start(dir.path(), &[]);
    let mut b = Client::connect_synced(&srv, &bob).await;
    check(
        b.request(json!({"type": "history", "conversation": conv}))
            .await,
    );
}

/// The resume rule: a client offline while a message is edited, another deleted and a
/// reaction added sees, after `sync` from its cursor, each event exactly once and in order,
/// and from cursor 0 every text message in its final state.
#[tokio::test]
async fn a_client_offline_during_an_edit_a_delete_and_a_reaction_sees_the_final_state_after_sync_once(
) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let (alice, bob, conv) = chat(&srv).await;
    // Bob has seen seqs 1-3, then goes offline.
    let mut b = Client::connect_synced(&srv, &bob).await;
    drop(b);
    let mut a = Client::connect_synced(&srv, &alice).await;
    act(
        &mut a,
        json!({"type": "edit", "conversation": conv, "seq": 1, "text": "ONE"}),
    )
    .await;
    act(
        &mut a,
        json!({"type": "delete", "conversation": conv, "seq": 2}),
    )
    .await;
    act(
        &mut a,
        json!({"type": "react", "conversation": conv, "seq": 3, "emoji": "❤️"}),
    )
    .await;
    act(
        &mut a,
        json!({"type": "edit", "conversation": conv, "seq": 1, "text": "ONE!"}),
    )
    .await;

    for batch in [false, true] {
        b = Client::connect(&srv, &bob).await;
        b.send(
            json!({"type": "sync", "batch": batch, "cursors": [{"conversation": conv, "seq": 3}]}),
        )
        .await;
        let (_, before) = b.recv_until("synced").await;
        let items: Vec<Value> = before
            .iter()
            .flat_map(|f| match f["type"].as_str() {
                Some("message") => vec![f.clone()],
                Some("messages") => f["messages"].as_array().unwrap().clone(),
                _ => vec![],
            })
            .collect();
        let got: Vec<(u64, &str, u64)> = items
            .iter()
            .map(|m| {
                (
                    m["seq"].as_u64().unwrap(),
                    m["kind"].as_str().unwrap(),
                    m["target"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (4, "edit", 1),
                (5, "delete", 2),
                (6, "reaction", 3),
                (7, "edit", 1)
            ],
            "batch {batch}: every event once, in order"
        );
        // Both edit events are served with the message's current text (the old one is gone).
        assert_eq!(
            (&items[0]["text"], &items[3]["text"]),
            (&json!("ONE!"), &json!("ONE!"))
        );
        assert_eq!(
            (&items[2]["emoji"], &items[2]["added"]),
            (&json!("❤️"), &json!(true))
        );
        // Nothing more arrives: no duplicate live copy.
        b.expect_no("message", Duration::from_millis(300)).await;
    }

    // From scratch: the three messages in their current state, then the four events.
    let mut b = Client::connect(&srv, &bob).await;
    b.send(json!({"type": "sync"})).await;
    let (_, before) = b.recv_until("synced").await;
    let ms: Vec<&Value> = before.iter().filter(|f| f["type"] == "message").collect();
    assert_eq!(ms.len(), 7);
    assert_eq!(
        (&ms[0]["text"], &ms[0]["edited"]),
        (&json!("ONE!"), &json!(true))
    );
    assert_eq!(
        (&ms[1]["text"], &ms[1]["deleted"]),
        (&json!(""), &json!(true))
    );
    assert_eq!(
        ms[2]["reactions"],
        json!([{"emoji": "❤️", "users": [alice.id]}])
    );
    // The unread count is the text messages only: bob read nothing, last_seq is 7, and the
    // three messages are unread (the deleted one too: it was sent), the four events are not.
    let list = b.request(json!({"type": "conversations"})).await;
    let c = &list["conversations"][0];
    assert_eq!(
        (&c["last_seq"], &c["unread"]),
        (&json!(7), &json!(3)),
        "{list}"
    );
    // Reading up to the last seq (an event) is accepted and clears it.
    b.send(json!({"type": "read", "conversation": conv, "seq": 7}))
        .await;
    b.writer_barrier().await;
    let list = b.request(json!({"type": "conversations"})).await;
    let c = &list["conversations"][0];
    assert_eq!(
        (&c["read_seq"], &c["unread"]),
        (&json!(7), &json!(0)),
        "{list}"
    );
}

#[tokio::test]
async fn who_may_edit_delete_and_react_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    // The first account is the server admin.
    let root = user(&srv, "root").await;
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let mut r = Client::connect_synced(&srv, &root).await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let mut c = Client::connect_synced(&srv, &carol).await;
    // A direct chat alice-bob (seq 1 alice's, 2 bob's) and a group of alice (owner), bob,
    // carol and root (seq 1 created, 2 bob's, 3 carol's, 4 carol's, 5 bob's).
    let d = a.say(json!({"to": bob.id}), "d1", "hi").await["conversation"]
        .as_u64()
        .unwrap();
    b.say(json!({"conversation": d}), "d2", "hello").await;
    let g = a
        .request(
            json!({"type": "create_group", "title": "g", "members": [bob.id, carol.id, root.id]}),
        )
        .await["conversation"]["id"]
        .as_u64()
        .unwrap();
    b.say(json!({"conversation": g}), "g2", "bob's").await;
    c.say(json!({"conversation": g}), "g3", "carol's").await;
    c.say(json!({"conversation": g}), "g4", "carol's too").await;
    b.say(json!({"conversation": g}), "g5", "bob's again").await;

    let err = |code: &'static str| {
        move |e: Value| {
            assert_eq!(e["type"], "error", "{e}");
            assert_eq!(e["code"], code, "{e}");
            e
        }
    };
    // Someone else's message: no edit, anywhere; no delete in a direct chat.
    let e = err("forbidden")(
        a.request(
            json!({"type": "edit", "conversation": d, "seq": 2, "text": "x", "client_id": "ed"}),
        )
        .await,
    );
    assert_eq!(
        e["client_id"], "ed",
        "the frame's client_id is echoed in errors"
    );
    err("forbidden")(
        a.request(json!({"type": "edit", "conversation": g, "seq": 2, "text": "x"}))
            .await,
    );
    err("forbidden")(
        a.request(json!({"type": "delete", "conversation": d, "seq": 2}))
            .await,
    );
    // Even root, an admin, only in groups.
    err("not_found")(
        r.request(json!({"type": "delete", "conversation": d, "seq": 2}))
            .await,
    );
    err("forbidden")(
        c.request(json!({"type": "delete", "conversation": g, "seq": 2}))
            .await,
    );
    // In a group the owner and an admin may delete anyone's message.
    assert_eq!(
        act(
            &mut a,
            json!({"type": "delete", "conversation": g, "seq": 2})
        )
        .await["seq"],
        6
    );
    assert_eq!(
        act(
            &mut r,
            json!({"type": "delete", "conversation": g, "seq": 3})
        )
        .await["seq"],
        7
    );
    // A deleted message: no edit, no reaction, no second delete.
    for f in [
        json!({"type": "edit", "conversation": g, "seq": 2, "text": "back"}),
        json!({"type": "react", "conversation": g, "seq": 3, "emoji": "👍"}),
        json!({"type": "delete", "conversation": g, "seq": 2}),
    ] {
        let e = err("forbidden")(b.request(f).await);
        assert_eq!(e["message"], "message deleted", "{e}");
    }
    // A seq that does not exist, or that is an event (the created line, a delete event).
    for seq in [0, 99, 1, 6] {
        let e = err("not_found")(
            b.request(json!({"type": "react", "conversation": g, "seq": seq, "emoji": "👍"}))
                .await,
        );
        let msg = e["message"].as_str().unwrap().to_string();
        if seq == 1 || seq == 6 {
            assert!(msg.contains("event"), "{e}");
        } else {
            assert_eq!(msg, "no message with this seq", "{e}");
        }
        err("not_found")(
            b.request(json!({"type": "edit", "conversation": g, "seq": seq, "text": "x"}))
                .await,
        );
    }
    // Text rules as for send.
    err("empty_text")(
        b.request(json!({"type": "edit", "conversation": g, "seq": 5, "text": "  "}))
            .await,
    );
    err("text_too_long")(
        b.request(json!({"type": "edit", "conversation": g, "seq": 5, "text": "x".repeat(5000)}))
            .await,
    );
    // Not one emoji.
    for emoji in [
        "",
        "a",
        "ab",
        "👍👍",
        " 👍",
        "1",
        "\u{7}",
        &"👍🏽".repeat(5),
        "👨‍👩‍👧‍👦‍👨‍👩‍👧",
    ] {
        let e = err("bad_frame")(
            b.request(json!({"type": "react", "conversation": g, "seq": 5, "emoji": emoji}))
                .await,
        );
        assert!(
            e["message"].as_str().unwrap().contains("emoji"),
            "{emoji:?}: {e}"
        );
    }
    // One emoji, however many code points: a skin tone, a family, a flag, a keycap.
    for emoji in ["👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "❤️"] {
        act(
            &mut b,
            json!({"type": "react", "conversation": g, "seq": 5, "emoji": emoji}),
        )
        .await;
    }
    // A removed member can do none of it: the group is not found for them.
    let removed = a
        .request(json!({"type": "remove_member", "conversation": g, "user": carol.id}))
        .await;
    assert_eq!(removed["type"], "conversation", "{removed}");
    c.recv_type("removed").await;
    for f in [
        json!({"type": "edit", "conversation": g, "seq": 4, "text": "mine"}),
        json!({"type": "delete", "conversation": g, "seq": 4}),
        json!({"type": "react", "conversation": g, "seq": 5, "emoji": "👍"}),
        json!({"type": "mute", "conversation": g, "muted": true}),
        json!({"type": "rename_group", "conversation": g, "title": "mine"}),
    ] {
        let e = c.request(f.clone()).await;
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("error"), &json!("not_found")),
            "{f}: {e}"
        );
    }
    // Nothing of the refused requests was written: the group's messages are as they were.
    let h = b
        .request(json!({"type": "history", "conversation": g}))
        .await;
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["", "", "", "carol's too", "bob's again", ""], "{h}");
    let reactions = &h["messages"][4]["reactions"];
    assert_eq!(reactions.as_array().unwrap().len(), 5, "{h}");
}
