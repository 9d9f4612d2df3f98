//! The core messaging path with real WebSocket clients: auth at the door, direct messages with
//! durable acks delivered to every device, idempotent sends, history paging, resume after a
//! restart.

use serde_json::json;

use crate::support::ws::{try_connect, user, Client};
use crate::support::Server;

#[tokio::test]
async fn upgrade_requires_session_and_allowed_origin() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--allowed-origin", "http://friend.example:9000"],
    );
    let alice = user(&srv, "alice").await;
    assert_eq!(try_connect(srv.addr, &[]).await.err(), Some(401));
    let fake = format!("chatd_session={}", "b".repeat(64));
    assert_eq!(
        try_connect(srv.addr, &[("cookie", &fake)]).await.err(),
        Some(401)
    );
    let evil = [
        ("cookie", alice.cookie.as_str()),
        ("origin", "http://evil.example"),
    ];
    assert_eq!(try_connect(srv.addr, &evil).await.err(), Some(403));
    let own = format!("http://{}", srv.addr);
    assert!(
        try_connect(srv.addr, &[("cookie", &alice.cookie), ("origin", &own)])
            .await
            .is_ok()
    );
    let friend = [
        ("cookie", alice.cookie.as_str()),
        ("origin", "http://friend.example:9000"),
    ];
    assert!(try_connect(srv.addr, &friend).await.is_ok());
    // Plain HTTP GET on /ws is not an upgrade.
    assert_eq!(
        srv.get("/ws", &[("cookie", &alice.cookie)]).await.status,
        400
    );
}

#[tokio::test]
async fn direct_message_is_acked_and_delivered_to_every_device() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a1 = Client::connect_synced(&srv, &alice).await;
    let mut a2 = Client::connect_synced(&srv, &alice).await;
    let mut b1 = Client::connect_synced(&srv, &bob).await;
    assert_eq!(a1.welcome["protocol"], 1);
    assert_eq!(a1.welcome["user"]["name"], "alice");

    let ack = a1.say(json!({"to": bob.id}), "c-1", "hello bob").await;
    let conv = ack["conversation"].as_u64().unwrap();
    assert_eq!(ack["seq"], 1);
    assert!(ack["time"].as_u64().unwrap() > 0);

    let c = b1.recv_type("conversation").await;
    assert_eq!(c["conversation"]["id"], conv);
    assert_eq!(c["conversation"]["kind"], "direct");
    assert_eq!(c["conversation"]["peer"]["name"], "alice");
    let m = b1.recv_type("message").await;
    assert_eq!(m["text"], "hello bob");
    assert_eq!(m["sender"], alice.id);
    assert_eq!(m["sender_name"], "alice");
    assert_eq!(m["seq"], 1);
    // The sender's other tab gets it too.
    let m2 = a2.recv_type("message").await;
    assert_eq!(m2["client_id"], "c-1");

    // Reply into the conversation by id; the one direct conversation per pair is reused.
    let ack = b1
        .say(json!({"conversation": conv}), "b-1", "hi alice")
        .await;
    assert_eq!(ack["seq"], 2);
    let ack = b1.say(json!({"to": alice.id}), "b-2", "again").await;
    assert_eq!(ack["conversation"], conv);
    assert_eq!(ack["seq"], 3);
    assert_eq!(a1.recv_type("message").await["text"], "hi alice");
    assert_eq!(a1.recv_type("message").await["text"], "again");
}

#[tokio::test]
async fn same_client_id_never_makes_a_second_message() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let first = a.say(json!({"to": bob.id}), "same", "once").await;
    drop(a);
    // After a reconnect the client is unsure and sends again.
    let mut a = Client::connect_synced(&srv, &alice).await;
    let again = a.say(json!({"to": bob.id}), "same", "once").await;
    assert_eq!(first["seq"], again["seq"]);
    assert_eq!(first["time"], again["time"]);
    // The text is not compared: the same client_id with other text is the same message.
    let other = a.say(json!({"to": bob.id}), "same", "something else").await;
    assert_eq!(
        (&other["seq"], &other["time"]),
        (&first["seq"], &first["time"])
    );
    let mut b = Client::connect(&srv, &bob).await;
    b.send(json!({"type": "history", "conversation": first["conversation"]}))
        .await;
    let h = b.recv_type("history").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    assert_eq!(h["messages"][0]["text"], "once");
}

/// A `sync` cursor above a conversation's last message (e.g. kept across a restore by a client
/// that ignored the epoch) was accepted silently, and every new message up to that cursor was
/// never delivered to it. It gets `cursor_ahead` with the conversation's `last_seq`, and the
/// sync does not start.
#[tokio::test]
async fn a_sync_cursor_past_the_last_message_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut conv = 0;
    for i in 1..=3 {
        conv = a.say(json!({"to": bob.id}), &format!("m{i}"), "hi").await["conversation"]
            .as_u64()
            .unwrap();
    }
    let mut b = Client::connect(&srv, &bob).await;
    let e = b
        .request(json!({"type": "sync", "cursors": [{"conversation": conv, "seq": 5}]}))
        .await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "cursor_ahead", "{e}");
    assert_eq!(
        (&e["conversation"], &e["last_seq"]),
        (&json!(conv), &json!(3)),
        "{e}"
    );
    // Not synced: a new message is not delivered...
    a.say(json!({"conversation": conv}), "m4", "four").await;
    b.expect_no("message", std::time::Duration::from_millis(300))
        .await;
    // ...until a sync with a cursor the server has; then it is, once.
    let (synced, before) = b
        .request_collect(json!({"type": "sync", "cursors": [{"conversation": conv, "seq": 3}]}))
        .await;
    assert_eq!(synced["type"], "synced", "{synced}");
    let seqs: Vec<u64> = before
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4]);

    // A cursor past what the welcome said, but not past the conversation now (the client saw
    // the newer message elsewhere): accepted.
    let mut b2 = Client::connect(&srv, &bob).await;
    assert_eq!(b2.welcome["conversations"][0]["last_seq"], 4);
    a.say(json!({"conversation": conv}), "m5", "five").await;
    let (synced, before) = b2
        .request_collect(json!({"type": "sync", "cursors": [{"conversation": conv, "seq": 5}]}))
        .await;
    assert_eq!(synced["type"], "synced", "{synced} after {before:?}");
    assert!(before.iter().all(|f| f["type"] != "message"), "{before:?}");
}

#[tokio::test]
async fn history_pages_backwards_in_chronological_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut conv = 0;
    for i in 1..=25 {
        let ack = a
            .say(
                json!({"to": bob.id}),
                &format!("m{i}"),
                &format!("text {i}"),
            )
            .await;
        conv = ack["conversation"].as_u64().unwrap();
    }
    a.send(json!({"type": "history", "conversation": conv, "limit": 10, "ref": 7}))
        .await;
    let h = a.recv_type("history").await;
    assert_eq!(h["ref"], 7);
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (16..=25).collect::<Vec<_>>(),
        "the newest ten, oldest first"
    );
    assert_eq!(h["complete"], false);
    a.send(json!({"type": "history", "conversation": conv, "before": 6, "limit": 10}))
        .await;
    let h = a.recv_type("history").await;
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(h["complete"], true);
}

#[tokio::test]
async fn resume_after_restart_delivers_every_missed_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let ack = a.say(json!({"to": bob.id}), "x1", "before").await;
    let conv = ack["conversation"].as_u64().unwrap();
    assert_eq!(b.recv_type("message").await["seq"], 1);
    drop(b);
    for i in 2..=150 {
        a.say(
            json!({"conversation": conv}),
            &format!("x{i}"),
            &format!("n{i}"),
        )
        .await;
    }
    // Every ack above was sent after an fsync'd commit: kill -9 loses none of them.
    srv.kill();
    let srv = Server::start(dir.path(), &[]);
    let mut b = Client::connect(&srv, &bob).await;
    let list = b.welcome["conversations"].as_array().unwrap();
    assert_eq!(list[0]["unread"], 150, "{list:?}");
    b.send(json!({"type": "sync", "cursors": [{"conversation": conv, "seq": 1}], "ref": 1}))
        .await;
    let mut seqs = Vec::new();
    loop {
        let v = b.recv().await;
        match v["type"].as_str().unwrap() {
            "message" => seqs.push(v["seq"].as_u64().unwrap()),
            "synced" => {
                assert_eq!(v["ref"], 1);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(seqs, (2..=150).collect::<Vec<_>>());

    // The same catch-up with `batch`: a `messages` frame per page (100 + 49), same messages.
    let mut c = Client::connect(&srv, &bob).await;
    c.send(json!({"type": "sync", "cursors": [{"conversation": conv, "seq": 1}], "batch": true, "ref": 2}))
        .await;
    let (synced, frames) = c.recv_until("synced").await;
    assert_eq!(synced["ref"], 2);
    let mut items = Vec::new();
    for f in &frames {
        assert_eq!(f["type"], "messages", "{f}");
        assert_eq!(f["conversation"], conv);
        items.extend(f["messages"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(frames.len(), 2);
    let seqs: Vec<u64> = items.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (2..=150).collect::<Vec<_>>());
    assert_eq!(items[0]["text"], "n2");
    assert_eq!(items[0]["conversation"], conv);
    assert_eq!(items[0]["sender"], alice.id);
    assert!(items[0].get("type").is_none());
    // Live messages on a batch connection are still `message` frames.
    let mut a = Client::connect_synced(&srv, &alice).await;
    a.say(json!({"conversation": conv}), "x151", "live").await;
    let m = c.recv_type("message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["text"].as_str()),
        (Some(151), Some("live"))
    );
}

/// Long messages: a page of 100 maximal messages (16 KiB each, and worse once JSON escapes
/// them) is far bigger than one connection's write buffer. Catch-up (with and without `batch`)
/// and `history` must still deliver all of them, in frames a connection can take.
#[tokio::test]
async fn long_messages_catch_up_and_history_in_bounded_frames() {
    let dir = tempfile::tempdir().unwrap();
    // Messages of 16 Ki characters (the limit is a quarter of the byte limit).
    let srv = Server::start(dir.path(), &["--max-message-bytes", "65536"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    // Control characters are escaped as \u00XX: six bytes on the wire for each byte.
    let escaped: String = "\u{1}".repeat(16 * 1024);
    let plain: String = "y".repeat(16 * 1024);
    let ack = a.say(json!({"to": bob.id}), "l0", &escaped).await;
    let conv = ack["conversation"].as_u64().unwrap();
    for i in 1..120 {
        let text = if i % 2 == 0 { &escaped } else { &plain };
        a.say(json!({"conversation": conv}), &format!("l{i}"), text)
            .await;
    }
    for batch in [true, false] {
        let mut b = Client::connect(&srv, &bob).await;
        b.send(json!({"type": "sync", "batch": batch, "ref": 1}))
            .await;
        let (synced, frames) = b.recv_until("synced").await;
        assert_eq!(synced["ref"], 1);
        let mut seqs = Vec::new();
        for f in &frames {
            match f["type"].as_str() {
                Some("messages") => {
                    for m in f["messages"].as_array().unwrap() {
                        seqs.push(m["seq"].as_u64().unwrap());
                    }
                }
                Some("message") => seqs.push(f["seq"].as_u64().unwrap()),
                _ => {}
            }
        }
        assert_eq!(seqs, (1..=120).collect::<Vec<_>>(), "batch {batch}");
        // History pages back through all of them; a reply may hold fewer than `limit` when
        // the messages are long, and says whether older ones remain.
        let mut got = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let mut req = json!({"type": "history", "conversation": conv, "limit": 100});
            if let Some(s) = before {
                req["before"] = json!(s);
            }
            let h = b.request(req).await;
            assert_eq!(h["type"], "history", "{h}");
            let msgs = h["messages"].as_array().unwrap();
            assert!(!msgs.is_empty());
            for m in msgs.iter().rev() {
                got.push(m["seq"].as_u64().unwrap());
                let want = if m["seq"].as_u64().unwrap() % 2 == 1 {
                    &escaped
                } else {
                    &plain
                };
                assert_eq!(m["text"].as_str(), Some(want.as_str()));
            }
            if h["complete"] == true {
                break;
            }
            before = msgs[0]["seq"].as_u64();
        }
        assert_eq!(got, (1..=120).rev().collect::<Vec<_>>());
    }
}

/// At the largest configurable message size (1 MiB, so 256 Ki characters), a message whose
/// every character JSON escapes to six bytes (a ~1.5 MiB frame) still reaches its recipient,
/// live and by catch-up.
#[tokio::test]
async fn a_maximal_message_at_the_largest_configured_size_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-message-bytes", "1048576"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let text: String = "\u{1}".repeat(256 * 1024);
    a.say(json!({"to": bob.id}), "big", &text).await;
    let live = b.recv_type("message").await;
    assert_eq!(live["text"].as_str().map(str::len), Some(text.len()));
    let mut c = Client::connect(&srv, &bob).await;
    c.send(json!({"type": "sync", "batch": true, "ref": 1}))
        .await;
    let (_, frames) = c.recv_until("synced").await;
    let m = frames
        .iter()
        .find(|f| f["type"] == "messages")
        .expect("a messages frame");
    assert_eq!(m["messages"][0]["text"].as_str(), Some(text.as_str()));
}
