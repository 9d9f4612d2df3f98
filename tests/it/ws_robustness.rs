//! Bad input from real WebSocket clients: malformed or invalid frames get error frames and the
//! connection stays usable; protocol violations (binary, invalid UTF-8, oversized frames,
//! floods) close only the offending connection with the documented code, while other users'
//! connections and the server carry on.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::support::ws::{message_fields, user, Client, TestUser, WAIT};
use crate::support::Server;

/// Sends a raw text frame and returns the next JSON frame (the error it caused).
async fn raw_reply(c: &mut Client, text: &str) -> Value {
    c.send_raw(Message::Text(text.to_string().into())).await;
    c.recv().await
}

/// Proves the server and other users are unaffected: `/healthz` answers, and a message from
/// `from` reaches `to`, who then answers a request.
async fn others_still_work(
    srv: &Server,
    from: &mut Client,
    to: &mut Client,
    bob: &TestUser,
    n: u32,
) {
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
    let cid = format!("check-{n}");
    let ack = from.say(json!({"to": bob.id}), &cid, "still alive?").await;
    let m = loop {
        let m = to.recv_type("message").await;
        if m["client_id"] == cid {
            break m;
        }
    };
    assert_eq!(m["seq"], ack["seq"]);
    let r = to.request(json!({"type": "conversations"})).await;
    assert_eq!(r["type"], "conversations");
}

#[tokio::test]
async fn malformed_and_invalid_frames_get_errors_and_the_connection_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-message-bytes", "100"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    assert_eq!(a.welcome["limits"]["max_message_bytes"], 100);
    assert_eq!(a.welcome["limits"]["max_message_chars"], 25);
    let ack = a.say(json!({"to": bob.id}), "ok-1", "first").await;
    let conv = ack["conversation"].as_u64().unwrap();

    // Not JSON, or not an object: bad_json, no ref to echo.
    for text in ["{oops", "[1,2]", "42", "\"send\"", ""] {
        let e = raw_reply(&mut a, text).await;
        assert_eq!(e["type"], "error", "{text:?}: {e}");
        assert_eq!(e["code"], "bad_json", "{text:?}: {e}");
        assert!(e.get("ref").is_none(), "{e}");
        // Still open: a request right after succeeds.
        let r = a.request(json!({"type": "conversations"})).await;
        assert_eq!(r["type"], "conversations", "after {text:?}: {r}");
    }

    // Unknown or missing type.
    let e = raw_reply(&mut a, r#"{"type":"nope","ref":3}"#).await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("unknown_type"), &json!(3)),
        "{e}"
    );
    let e = raw_reply(&mut a, r#"{"ref":4,"conversation":1}"#).await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("unknown_type"), &json!(4)),
        "{e}"
    );
    let e = raw_reply(&mut a, r#"{"type":7,"ref":5}"#).await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("unknown_type"), &json!(5)),
        "{e}"
    );

    // Missing fields and wrong types: bad_frame with ref (and client_id for sends).
    let cases = [
        (json!({"type": "history", "ref": 10}), None),
        (
            json!({"type": "read", "conversation": "x", "seq": 1, "ref": 11}),
            None,
        ),
        (
            json!({"type": "read", "conversation": conv, "seq": -1, "ref": 12}),
            None,
        ),
        (
            json!({"type": "members", "conversation": 1.5, "ref": 13}),
            None,
        ),
        (json!({"type": "sync", "cursors": "all", "ref": 14}), None),
        (
            json!({"type": "create_group", "title": "t", "members": ["bob"], "ref": 15}),
            None,
        ),
        (
            json!({"type": "send", "ref": 16, "client_id": "c16", "to": bob.id}),
            Some("c16"),
        ),
        (
            json!({"type": "send", "ref": 17, "client_id": "c17", "to": bob.id, "text": 5}),
            Some("c17"),
        ),
        (
            json!({"type": "send", "ref": 18, "to": bob.id, "text": "no client id"}),
            None,
        ),
        // Both targets, or neither.
        (
            json!({"type": "send", "ref": 19, "client_id": "c19", "conversation": conv, "to": bob.id, "text": "hi"}),
            Some("c19"),
        ),
        (
            json!({"type": "send", "ref": 20, "client_id": "c20", "text": "hi"}),
            Some("c20"),
        ),
        // client_id length, `to` yourself, history/users limits.
        (
            json!({"type": "send", "ref": 21, "client_id": "", "to": bob.id, "text": "hi"}),
            Some(""),
        ),
        (
            json!({"type": "send", "ref": 22, "client_id": "c".repeat(65), "to": bob.id, "text": "hi"}),
            None,
        ),
        (
            json!({"type": "send", "ref": 23, "client_id": "c23", "to": alice.id, "text": "me"}),
            Some("c23"),
        ),
        (
            json!({"type": "history", "ref": 24, "conversation": conv, "limit": 0}),
            None,
        ),
        (
            json!({"type": "history", "ref": 25, "conversation": conv, "limit": 101}),
            None,
        ),
    ];
    for (frame, cid) in cases {
        a.send(frame.clone()).await;
        let e = a.recv().await;
        assert_eq!(e["type"], "error", "{frame}: {e}");
        assert_eq!(e["code"], "bad_frame", "{frame}: {e}");
        assert_eq!(e["ref"], frame["ref"], "{frame}: {e}");
        if let Some(cid) = cid {
            assert_eq!(e["client_id"], cid, "{frame}: {e}");
        }
    }

    // Empty and whitespace-only text.
    for (i, text) in ["", " ", " \n\t\u{3000} "].iter().enumerate() {
        let cid = format!("empty-{i}");
        let e = a
            .request_err(
                json!({"type": "send", "client_id": cid, "conversation": conv, "text": text}),
            )
            .await;
        assert_eq!(e["code"], "empty_text", "{text:?}: {e}");
        assert_eq!(e["client_id"], cid);
    }
    // Length is in characters, a quarter of --max-message-bytes: 25 pass, whatever their
    // bytes (25 four-byte emoji are the byte limit), 26 do not, and the refusal says so.
    let e = a
        .request_err(json!({"type": "send", "client_id": "long-1", "conversation": conv, "text": "x".repeat(26)}))
        .await;
    assert_eq!(e["code"], "text_too_long", "{e}");
    assert_eq!(e["client_id"], "long-1");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("at most 25 are allowed"),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("26 characters"),
        "{e}"
    );
    let e = a
        .request_err(json!({"type": "send", "client_id": "long-2", "conversation": conv, "text": "€".repeat(26)}))
        .await;
    assert_eq!(e["code"], "text_too_long", "{e}");
    let ack = a
        .say(json!({"conversation": conv}), "max", &"y".repeat(25))
        .await;
    assert_eq!(ack["seq"], 2);
    let ack = a
        .say(json!({"conversation": conv}), "max-emoji", &"😀".repeat(25))
        .await;
    assert_eq!(ack["seq"], 3);
    // Unknown recipient.
    let e = a
        .request_err(json!({"type": "send", "client_id": "ghost", "to": 4242, "text": "hello?"}))
        .await;
    assert_eq!(e["code"], "user_not_found", "{e}");
    assert_eq!(e["client_id"], "ghost");

    // None of the refused sends stored anything: bob has exactly the good messages.
    let h = b
        .request(json!({"type": "history", "conversation": conv}))
        .await;
    let got = message_fields(&h, "client_id");
    assert_eq!(got, vec!["ok-1", "max", "max-emoji"]);
    // A rejected client_id was not burnt: it can still be used.
    let ack = a
        .say(json!({"conversation": conv}), "c19", "now valid")
        .await;
    assert_eq!(ack["seq"], 4);
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

/// A server, alice with a victim connection, another alice connection and bob, all synced and
/// sharing a direct conversation.
async fn setup(srv: &Server) -> (Client, Client, Client, TestUser) {
    let alice = user(srv, "alice").await;
    let bob = user(srv, "bob").await;
    let mut victim = Client::connect_synced(srv, &alice).await;
    let mut a = Client::connect_synced(srv, &alice).await;
    let mut b = Client::connect_synced(srv, &bob).await;
    a.say(json!({"to": bob.id}), "setup", "hi").await;
    b.recv_type("message").await;
    // The victim (alice's other device) hears of it too; drain that.
    victim.recv_type("message").await;
    (victim, a, b, bob)
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let (mut victim, mut a, mut b, bob) = setup(&srv).await;
    victim
        .send_raw(Message::Binary(vec![1u8, 2, 3].into()))
        .await;
    assert_eq!(victim.recv_close().await, 1003);
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let (mut victim, mut a, mut b, bob) = setup(&srv).await;
    // A text frame whose payload is not UTF-8 (tungstenite's Message::Text cannot hold it).
    let payload: Vec<u8> = b"{\"type\":\"conversations\",\"x\":\"\xff\xfe\"}".to_vec();
    let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    victim.send_raw(Message::Frame(frame)).await;
    assert_eq!(victim.recv_close().await, 1007);
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

#[tokio::test]
async fn frame_larger_than_max_frame_bytes_closes_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-message-bytes", "100"]);
    let (mut victim, mut a, mut b, bob) = setup(&srv).await;
    let max = victim.welcome["limits"]["max_frame_bytes"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(max, 6 * 100 + 4096);
    // A frame of exactly max_frame_bytes is read (and its text refused politely)...
    let pad = |n: usize| {
        let head = r#"{"type":"send","client_id":"big","conversation":1,"text":""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", "x".repeat(n - head.len() - tail.len()))
    };
    let e = raw_reply(&mut victim, &pad(max)).await;
    assert_eq!(e["code"], "text_too_long", "{e}");
    let r = victim.request(json!({"type": "conversations"})).await;
    assert_eq!(r["type"], "conversations");
    // ...one byte more closes the connection.
    victim.send_raw(Message::Text(pad(max + 1).into())).await;
    assert_eq!(victim.recv_close().await, 1009);
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

#[tokio::test]
async fn flood_gets_rate_limited_then_closed_with_1008() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let (victim, mut a, mut b, bob) = setup(&srv).await;
    // Cheap frames answered at once (bad_frame), sent without reading: the first 200 (the
    // burst) are processed, then rate_limited errors, then the close after 50 in a row. The
    // writer half keeps sending (up to a bound) in case refills interleave.
    let (mut tx, mut rx) = victim.ws.split();
    let writer = tokio::spawn(async move {
        let mut sent = 0u32;
        for i in 0..2000u32 {
            let f = json!({"type": "users", "limit": 0, "ref": i}).to_string();
            if tx.feed(Message::Text(f.into())).await.is_err() {
                break;
            }
            sent += 1;
            if i % 50 == 49 && tx.flush().await.is_err() {
                break;
            }
        }
        let _ = tx.flush().await;
        (sent, tx)
    });
    let mut answered = 0u32;
    let mut limited = 0u32;
    let code = loop {
        let m = tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("timed out: the flood was never closed")
            .expect("connection ended without a close frame")
            .expect("read error before the close frame");
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["type"], "error", "{v}");
                match v["code"].as_str().unwrap() {
                    "bad_frame" => answered += 1,
                    "rate_limited" => limited += 1,
                    other => panic!("unexpected error {other}: {v}"),
                }
            }
            Message::Close(Some(f)) => break u16::from(f.code),
            Message::Close(None) => break 1005,
            _ => {}
        }
    };
    assert_eq!(code, 1008);
    // The burst (200, less the sync) is served before anything is refused.
    assert!(answered >= 199, "{answered} frames served");
    assert!(limited >= 1, "no rate_limited error before the close");
    let (sent, _tx) = writer.await.unwrap();
    assert!(sent >= answered + limited, "{sent} sent");
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

#[tokio::test]
async fn rate_limited_send_names_the_refused_request() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let ack = a.say(json!({"to": bob.id}), "first", "first").await;
    let conv = ack["conversation"].as_u64().unwrap();
    // More sends than the burst, fewer over it than the flood limit (50 in a row).
    const N: u64 = 230;
    for i in 0..N {
        let f = json!({"type": "send", "ref": i, "client_id": format!("r{i}"), "conversation": conv, "text": "x"});
        a.ws.feed(Message::Text(f.to_string().into()))
            .await
            .unwrap();
    }
    a.ws.flush().await.unwrap();
    let mut acked = std::collections::BTreeSet::new();
    let mut limited = Vec::new();
    while (acked.len() + limited.len()) < N as usize {
        let f = a.recv().await;
        match (f["type"].as_str().unwrap(), f["code"].as_str()) {
            ("ack", _) => {
                assert_eq!(
                    f["ref"].as_u64().map(|r| format!("r{r}")),
                    f["client_id"].as_str().map(String::from)
                );
                acked.insert(f["client_id"].as_str().unwrap().to_string());
            }
            ("error", Some("rate_limited")) => limited.push(f),
            _ => panic!("unexpected {f}"),
        }
    }
    assert!(!limited.is_empty(), "nothing was rate limited");
    eprintln!(
        "{} acked, {} rate limited; first: {}",
        acked.len(),
        limited.len(),
        limited[0]
    );
    // The protocol: an error carries the failed request's `ref`, and `client_id` when it was a
    // send, so the client knows which sends to retry.
    for e in &limited {
        let cid = e["client_id"]
            .as_str()
            .unwrap_or_else(|| panic!("rate_limited error without client_id: {e}"));
        assert_eq!(
            e["ref"].as_u64().map(|r| format!("r{r}")).as_deref(),
            Some(cid),
            "{e}"
        );
        assert!(!acked.contains(cid), "{cid} both acked and refused");
    }
}

#[tokio::test]
async fn application_pings_count_against_the_frame_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let (victim, mut a, mut b, bob) = setup(&srv).await;
    // 1000 frames is five bursts; any other frame type gets rate_limited and then closed.
    let (mut tx, mut rx) = victim.ws.split();
    let writer = tokio::spawn(async move {
        for _ in 0..1000 {
            if tx.feed(Message::Text("ping".into())).await.is_err() {
                break;
            }
        }
        let _ = tx.flush().await;
        tx
    });
    let mut pongs = 0;
    let outcome = loop {
        let m = tokio::time::timeout(WAIT, rx.next()).await;
        match m {
            Err(_) => break format!("nothing more after {pongs} pongs"),
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "pong" => {
                pongs += 1;
                if pongs == 1000 {
                    break "every ping was answered".to_string();
                }
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["code"] == "rate_limited" {
                    break "rate_limited".to_string();
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => break format!("closed {f:?}"),
            Ok(other) => break format!("{other:?}"),
        }
    };
    let _ = writer.await;
    assert!(
        outcome == "rate_limited" || outcome.starts_with("closed"),
        "a flood of 1000 pings was not limited: {outcome}"
    );
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

/// serde matches an enum variant by its index as well as by its name: `{"type":1,...}` was
/// executed as a `send` (the second frame type) and stored, `{"type":5}` returned the
/// conversation list. Anything that is not a frame's name is `unknown_type`, and a cursor given
/// as an array (by position) is `bad_frame`; nothing is executed.
#[tokio::test]
async fn a_frame_named_by_position_is_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let ack = a.say(json!({"to": bob.id}), "real", "real").await;
    let conv = ack["conversation"].as_u64().unwrap();
    b.recv_type("message").await;

    for i in 0..=13u64 {
        let f = json!({"type": i, "ref": 100 + i, "client_id": format!("pos-{i}"), "to": bob.id,
            "conversation": conv, "seq": 1, "user": bob.id, "title": "by position",
            "members": [bob.id], "text": "sent by position"});
        let e = raw_reply(&mut a, &f.to_string()).await;
        assert_eq!(e["type"], "error", "type {i}: {e}");
        assert_eq!(e["code"], "unknown_type", "type {i}: {e}");
        assert_eq!(e["ref"], 100 + i, "{e}");
    }
    for t in [
        json!(true),
        json!(null),
        json!(["send"]),
        json!({"send": {}}),
        json!("Send"),
    ] {
        let f = json!({"type": t, "ref": 7, "client_id": "x", "to": bob.id, "text": "hi"});
        let e = raw_reply(&mut a, &f.to_string()).await;
        assert_eq!(
            (&e["code"], &e["ref"]),
            (&json!("unknown_type"), &json!(7)),
            "{f}: {e}"
        );
    }
    // A cursor by position: [conversation, seq].
    let e = raw_reply(
        &mut a,
        &json!({"type": "sync", "ref": 8, "cursors": [[conv, 0]]}).to_string(),
    )
    .await;
    assert_eq!(
        (&e["code"], &e["ref"]),
        (&json!("bad_frame"), &json!(8)),
        "{e}"
    );

    // Nothing was executed: bob got no message, no group was made, history has one message.
    b.expect_no("message", std::time::Duration::from_millis(300))
        .await;
    let h = b
        .request(json!({"type": "history", "conversation": conv}))
        .await;
    assert_eq!(message_fields(&h, "client_id"), vec!["real"]);
    let l = b.request(json!({"type": "conversations"})).await;
    assert_eq!(l["conversations"].as_array().unwrap().len(), 1, "{l}");
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}

/// A frame that is not valid JSON still names its request when its `ref` (and `client_id`)
/// came before the fault; a key given twice, at any depth, or nesting deeper than 32 levels
/// makes the frame `bad_frame` and nothing of it is executed.
#[tokio::test]
async fn broken_frames_name_their_request_and_repeated_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    let ack = a.say(json!({"to": bob.id}), "real", "real").await;
    let conv = ack["conversation"].as_u64().unwrap();
    b.recv_type("message").await;

    let cases = [
        (
            r#"{"type":"conversations","ref":60,}"#.to_string(),
            "bad_json",
            Some(60),
            None,
        ),
        (
            r#"{"ref":61,"type":"sync"} and more"#.to_string(),
            "bad_json",
            Some(61),
            None,
        ),
        (
            format!(
                r#"{{"type":"send","ref":62,"client_id":"c62","to":{},"text":"no end"#,
                bob.id
            ),
            "bad_json",
            Some(62),
            Some("c62"),
        ),
        (
            r#"{"oops":1,"ref":63}"#.replace(":1,", ":1;"),
            "bad_json",
            None,
            None,
        ),
        (
            format!(
                r#"{{"type":"send","ref":64,"client_id":"c64","conversation":{conv},"text":"one","text":"two"}}"#
            ),
            "bad_frame",
            Some(64),
            Some("c64"),
        ),
        (
            format!(
                r#"{{"type":"send","ref":65,"client_id":"c65","conversation":{conv},"text":"hi","x":1,"x":2}}"#
            ),
            "bad_frame",
            Some(65),
            Some("c65"),
        ),
        (
            format!(
                r#"{{"type":"sync","ref":66,"cursors":[{{"conversation":{conv},"conversation":{conv},"seq":0}}]}}"#
            ),
            "bad_frame",
            Some(66),
            None,
        ),
        (
            format!(
                r#"{{"type":"send","client_id":"c67","ref":67,"ref":68,"conversation":{conv},"text":"hi"}}"#
            ),
            "bad_frame",
            None,
            Some("c67"),
        ),
        (
            format!(
                r#"{{"type":"send","ref":69,"client_id":"c69","conversation":{conv},"text":"hi","x":{}{}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            ),
            "bad_frame",
            Some(69),
            Some("c69"),
        ),
    ];
    for (text, code, r, cid) in cases {
        let e = raw_reply(&mut a, &text).await;
        assert_eq!(e["type"], "error", "{text}: {e}");
        assert_eq!(e["code"], code, "{text}: {e}");
        assert_eq!(e["ref"].as_u64(), r, "{text}: {e}");
        assert_eq!(e["client_id"].as_str(), cid, "{text}: {e}");
    }
    // None of the sends was stored.
    let h = b
        .request(json!({"type": "history", "conversation": conv}))
        .await;
    assert_eq!(message_fields(&h, "client_id"), vec!["real"]);
    others_still_work(&srv, &mut a, &mut b, &bob, 1).await;
}
