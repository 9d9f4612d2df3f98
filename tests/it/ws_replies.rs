//! Replies (`send` with `reply_to`, issue 23) over real WebSocket clients: the reply carries
//! `reply_to` live, in `history`, in catch-up and after a restart; a `reply_to` that is not a
//! message of the same conversation (0, a future seq, another conversation's seq, a first
//! message that would create a direct conversation) is refused as `bad_frame` with the
//! `client_id`, and nothing is written; a non-member cannot reply.

use serde_json::{json, Value};

use crate::support::ws::{user, Client};
use crate::support::Server;

fn reply_to(m: &Value) -> Option<u64> {
    m.get("reply_to").and_then(Value::as_u64)
}

#[tokio::test]
async fn a_reply_carries_reply_to_live_in_history_in_catch_up_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;

    let ack = a.say(json!({"to": bob.id}), "q1", "lunch?").await;
    let conv = ack["conversation"].as_u64().unwrap();
    assert_eq!(ack["seq"], 1);
    b.send(
        json!({"type": "send", "client_id": "r1", "conversation": conv,
        "text": "yes", "reply_to": 1}),
    )
    .await;
    let ack = b.recv_type("ack").await;
    assert_eq!(
        (ack["client_id"].as_str(), ack["seq"].as_u64()),
        (Some("r1"), Some(2))
    );
    // alice gets her own message (seq 1) and then the reply, live.
    let live = loop {
        let m = a.recv_type("message").await;
        if m["seq"] == 2 {
            break m;
        }
    };
    assert_eq!(reply_to(&live), Some(1), "{live}");
    assert_eq!(live["text"], "yes");

    let check_history = |h: Value| {
        let msgs = h["messages"].as_array().unwrap().clone();
        let got: Vec<(u64, Option<u64>)> = msgs
            .iter()
            .map(|m| (m["seq"].as_u64().unwrap(), reply_to(m)))
            .collect();
        assert_eq!(got, [(1, None), (2, Some(1))], "{h}");
        // No key at all on a message that is not a reply.
        assert!(msgs[0].get("reply_to").is_none());
    };
    check_history(
        a.request(json!({"type": "history", "conversation": conv}))
            .await,
    );

    // Catch-up from cursor 0 on a new connection (one `message` frame each).
    let mut a2 = Client::connect(&srv, &alice).await;
    a2.send(json!({"type": "sync"})).await;
    let (_, before) = a2.recv_until("synced").await;
    let replayed: Vec<(u64, Option<u64>)> = before
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|m| (m["seq"].as_u64().unwrap(), reply_to(m)))
        .collect();
    assert_eq!(replayed, [(1, None), (2, Some(1))]);

    drop((a, a2, b));
    srv.terminate();
    let srv = Server::start(dir.path(), &[]);
    let mut a = Client::connect_synced(&srv, &alice).await;
    check_history(
        a.request(json!({"type": "history", "conversation": conv}))
            .await,
    );
}

#[tokio::test]
async fn a_reply_to_that_is_not_a_message_of_the_conversation_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let carol = user(&srv, "carol").await;
    let dave = user(&srv, "dave").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut d = Client::connect_synced(&srv, &dave).await;

    // A group with three messages and a direct conversation with one.
    let g = a
        .request(json!({"type": "create_group", "title": "g", "members": [carol.id]}))
        .await["conversation"]["id"]
        .as_u64()
        .unwrap();
    for i in 0..3 {
        a.say(json!({"conversation": g}), &format!("g{i}"), "x")
            .await;
    }
    let direct = a.say(json!({"to": bob.id}), "d0", "hi").await["conversation"]
        .as_u64()
        .unwrap();

    let refuse = |c: &'static str, target: Value, reply: u64| {
        let mut f = json!({"type": "send", "client_id": c, "text": "re", "reply_to": reply});
        for (k, v) in target.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    // 0, a future seq, and seq 3 (which exists in the group, not in the direct chat).
    for (cid, target, seq) in [
        ("z", json!({"conversation": direct}), 0),
        ("f", json!({"conversation": direct}), 2),
        ("o", json!({"conversation": direct}), 3),
        // The group's seq 1 is its "created" line, an event, not a message.
        ("s", json!({"conversation": g}), 1),
        // A first message to dave would create the direct conversation: nothing to answer.
        ("n", json!({"to": dave.id}), 1),
    ] {
        let e = a.request_err(refuse(cid, target, seq)).await;
        assert_eq!(e["code"], "bad_frame", "{e}");
        assert_eq!(e["client_id"], cid, "{e}");
    }
    // A member of neither conversation cannot reply into them.
    let e = d
        .request_err(refuse("x", json!({"conversation": g}), 1))
        .await;
    assert_eq!(e["code"], "not_found", "{e}");

    // Nothing was written: the direct chat still ends at seq 1, no conversation with dave.
    let h = a
        .request(json!({"type": "history", "conversation": direct}))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1, "{h}");
    let list = a.request(json!({"type": "conversations"})).await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 2, "{list}");
    // The group's own seq 3 can be answered (seq 1 is the "created" line, 2-4 the messages).
    a.send(refuse("ok", json!({"conversation": g}), 3)).await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        (ack["client_id"].as_str(), ack["seq"].as_u64()),
        (Some("ok"), Some(5))
    );
}
