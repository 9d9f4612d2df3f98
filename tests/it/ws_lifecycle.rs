//! Connection lifecycle and bounded resources with real WebSocket clients: heartbeat and idle
//! timeout, the application-level ping, the per-user connection limit, slow consumers being
//! disconnected (and resuming without loss), bearer tokens, and graceful shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::ws::{connect_small_rcvbuf, try_connect, user, Client, WAIT};
use crate::support::{chatd, Server};

/// Reads until the connection ends: `Some(code)` for a close frame, `None` if it ended without
/// one. Returns the JSON frames read before.
async fn read_to_end(c: &mut Client) -> (Option<u16>, Vec<Value>) {
    let mut frames = Vec::new();
    loop {
        let m = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("timed out: the connection is still open");
        match m {
            Some(Ok(Message::Text(t))) => {
                frames.push(serde_json::from_str(t.as_str()).expect("JSON"));
            }
            Some(Ok(Message::Close(f))) => {
                return (Some(f.map_or(1005, |f| u16::from(f.code))), frames)
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (None, frames),
        }
    }
}

#[tokio::test]
async fn heartbeat_keeps_readers_and_closes_silent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--ping-interval", "1", "--idle-timeout", "2"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    assert_eq!(a.welcome["limits"]["ping_interval_ms"], 1000);
    assert_eq!(a.welcome["limits"]["idle_timeout_ms"], 2000);
    // Bob's client is never polled: tungstenite answers pings only while it is being read.
    let mut silent = Client::connect(&srv, &bob).await;
    let silent_since = Instant::now();

    // Alice only reads (tungstenite answers each ping) for well past the idle timeout.
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(until, a.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Text(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("a reading client was disconnected: {other:?}"),
        }
    }
    assert!(pings >= 2, "server pinged {pings} times in 3.5 s");
    // Still connected and served; the text frame "ping" gets the text "pong".
    a.send_raw(Message::Text("ping".into())).await;
    loop {
        match tokio::time::timeout(WAIT, a.ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                assert_eq!(t.as_str(), "pong");
                break;
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected pong, got {other:?}"),
        }
    }
    let r = a.request(json!({"type": "conversations"})).await;
    assert_eq!(r["type"], "conversations");

    // The silent client was closed for idleness ("idle timeout", 1000) meanwhile.
    assert!(silent_since.elapsed() > Duration::from_secs(3));
    let (code, frames) = read_to_end(&mut silent).await;
    assert!(
        matches!(code, Some(1000) | None),
        "idle client closed with {code:?}"
    );
    assert!(frames.is_empty(), "{frames:?}");
    // Alice is unaffected.
    let r = a.request(json!({"type": "users"})).await;
    assert_eq!(r["type"], "users");
}

#[tokio::test]
async fn per_user_connection_limit_refuses_the_extra_upgrade_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-connections-per-user", "2"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut b = Client::connect_synced(&srv, &bob).await;
    // `connect` waits for welcome, sent after the session is registered.
    let mut a1 = Client::connect_synced(&srv, &alice).await;
    let a2 = Client::connect(&srv, &alice).await;
    let cookie = [("cookie", alice.cookie.as_str())];
    assert_eq!(try_connect(srv.addr, &cookie).await.err(), Some(429));
    assert_eq!(try_connect(srv.addr, &cookie).await.err(), Some(429));
    // Other users are not affected.
    let b2 = Client::connect(&srv, &bob).await;
    // Alice's open connections still work.
    a1.say(json!({"to": bob.id}), "a-1", "hi").await;
    assert_eq!(b.recv_type("message").await["text"], "hi");

    // Once both are closed (bob sees her go offline), she may connect twice again.
    a1.close().await;
    a2.close().await;
    let p = b.recv_type("presence").await;
    assert_eq!(
        p,
        json!({"type": "presence", "user": alice.id, "online": false})
    );
    let _a3 = Client::connect(&srv, &alice).await;
    let _a4 = Client::connect(&srv, &alice).await;
    assert_eq!(try_connect(srv.addr, &cookie).await.err(), Some(429));
    drop(b2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_connection_limit_holds_for_simultaneous_upgrades() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::MaybeTlsStream;
    // The race window is narrow and widest on a fresh server: try several.
    for round in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--max-connections-per-user", "2"]);
        let u = user(&srv, &format!("racer{round}")).await;
        // Open the TCP connections first, then send every upgrade request at once.
        let mut streams = Vec::new();
        for _ in 0..50 {
            streams.push(tokio::net::TcpStream::connect(srv.addr).await.unwrap());
        }
        let upgrades = streams.into_iter().map(|s| {
            let mut req = format!("ws://{}/ws", srv.addr)
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("cookie", u.cookie.parse().unwrap());
            tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(s))
        });
        let results = futures_util::future::join_all(upgrades).await;
        let mut open = Vec::new();
        let mut refused = 0;
        for r in results {
            match r {
                Ok((ws, _)) => open.push(Client::from_ws(ws).await),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status().as_u16(), 429);
                    refused += 1;
                }
                Err(e) => panic!("upgrade failed: {e}"),
            }
        }
        assert!(
            open.len() <= 2,
            "round {round}: {} connections open for one user with \
             --max-connections-per-user 2 ({refused} refused)",
            open.len()
        );
    }
}

/// Senders (alice's connections, never synced so they get only their acks) each send `n`
/// messages of `size` bytes into `conv`, pipelined (within the per-connection burst), then
/// wait for every ack. Returns the client_ids in ack order per sender.
async fn flood_conversation(senders: Vec<Client>, conv: u64, n: usize, size: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for (s, c) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // All senders are alice, so each also receives the others' messages: it keeps
            // reading while it sends (a sender that stopped reading would be a slow consumer
            // too, and rightly be disconnected).
            let welcome = c.welcome;
            let (mut sink, mut stream) = c.ws.split();
            let reader = tokio::spawn(async move {
                let mut acked = 0;
                while acked < n {
                    let m = tokio::time::timeout(WAIT, stream.next())
                        .await
                        .expect("timed out waiting for acks")
                        .expect("connection ended")
                        .expect("read error");
                    let Message::Text(t) = m else {
                        assert!(!m.is_close(), "sender {s} closed: {m:?}");
                        continue;
                    };
                    let f: Value = serde_json::from_str(t.as_str()).unwrap();
                    match f["type"].as_str().unwrap() {
                        "ack" => acked += 1,
                        "error" => panic!("sender {s}: {f}"),
                        _ => {}
                    }
                }
                stream
            });
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let cid = format!("s{s}-{i}");
                let head = format!("{cid} ");
                let text = format!("{head}{}", "z".repeat(size - head.len()));
                let f =
                    json!({"type": "send", "client_id": cid, "conversation": conv, "text": text});
                sink.feed(Message::Text(f.to_string().into()))
                    .await
                    .unwrap();
                ids.push(cid);
            }
            sink.flush().await.unwrap();
            let stream = reader.await.unwrap();
            let ws = sink.reunite(stream).unwrap();
            (ids, Client { ws, welcome })
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let (ids, c) = t.await.unwrap();
        all.extend(ids);
        c.close().await;
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_resumes_without_loss() {
    const SENDERS: usize = 14;
    const PER_SENDER: usize = 200; // the per-connection burst
    const SIZE: usize = 8 * 1024;
    let total = SENDERS * PER_SENDER;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Messages of SIZE characters need a byte limit of four times that.
    let srv = Server::start(dir.path(), &["--max-message-bytes", "32768"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let ack = a.say(json!({"to": bob.id}), "start", "start").await;
    let conv = ack["conversation"].as_u64().unwrap();
    a.close().await;

    // Bob syncs (gets seq 1) and then stops reading.
    let mut slow = connect_small_rcvbuf(&srv, &bob, 4096).await;
    slow.send(json!({"type": "sync"})).await;
    let (_, before) = slow.recv_until("synced").await;
    assert_eq!(before.iter().filter(|f| f["type"] == "message").count(), 1);

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(Client::connect(&srv, &alice).await);
    }
    let sent = flood_conversation(senders, conv, PER_SENDER, SIZE).await;
    assert_eq!(sent.len(), total);
    eprintln!(
        "slow consumer: {total} messages acked after {:?}",
        started.elapsed()
    );

    // Every message is durable and fanned out. Bob's connection must have been given up on:
    // reading it now yields a prefix of the conversation, then the close (1008) or the end.
    let (code, frames) = read_to_end(&mut slow).await;
    let first: Vec<&Value> = frames.iter().filter(|f| f["type"] == "message").collect();
    eprintln!(
        "slow consumer: old connection got {} messages, then {code:?}, after {:?}",
        first.len(),
        started.elapsed()
    );
    assert!(
        matches!(code, Some(1008) | None),
        "slow consumer closed with {code:?}"
    );
    for (i, m) in first.iter().enumerate() {
        assert_eq!(m["conversation"], conv);
        assert_eq!(m["seq"].as_u64().unwrap(), i as u64 + 2, "in order, no gap");
    }
    let have = first.last().map_or(1, |m| m["seq"].as_u64().unwrap());

    // Reconnect and resume from the last message received: the rest, each exactly once.
    let mut b = Client::connect(&srv, &bob).await;
    let w = &b.welcome["conversations"][0];
    assert_eq!(w["last_seq"].as_u64().unwrap(), total as u64 + 1);
    b.send(json!({"type": "sync", "ref": 1, "cursors": [{"conversation": conv, "seq": have}]}))
        .await;
    let (_, rest) = b.recv_until("synced").await;
    let rest: Vec<&Value> = rest.iter().filter(|f| f["type"] == "message").collect();
    let seqs: Vec<u64> = rest.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (have + 1..=total as u64 + 1).collect::<Vec<_>>());
    let mut ids = HashSet::new();
    for m in first.iter().chain(rest.iter()) {
        let cid = m["client_id"].as_str().unwrap().to_string();
        assert!(
            m["text"].as_str().unwrap().starts_with(&format!("{cid} ")),
            "text belongs to its message"
        );
        assert_eq!(m["text"].as_str().unwrap().len(), SIZE);
        assert!(ids.insert(cid), "delivered twice");
    }
    let sent: HashSet<String> = sent.into_iter().collect();
    assert_eq!(ids, sent, "every acked message delivered exactly once");
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
    eprintln!("slow consumer: done after {:?}", started.elapsed());
}

#[tokio::test]
async fn bearer_token_from_the_cli_authenticates_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    srv.terminate();
    let out = chatd(
        &[
            "token",
            "create",
            "alice",
            "--label",
            "bot",
            "--data-dir",
            d,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!token.is_empty() && !token.contains(char::is_whitespace));

    let srv = Server::start(dir.path(), &[]);
    let auth = format!("Bearer {token}");
    let ws = try_connect(srv.addr, &[("authorization", &auth)])
        .await
        .expect("bearer token refused");
    let mut bot = Client::from_ws(ws).await;
    assert_eq!(bot.welcome["user"]["id"], alice.id);
    assert_eq!(bot.welcome["user"]["name"], alice.name);
    bot.send(json!({"type": "sync"})).await;
    bot.recv_type("synced").await;
    // It acts as alice.
    let mut b = Client::connect_synced(&srv, &bob).await;
    bot.say(json!({"to": bob.id}), "bot-1", "beep").await;
    let m = b.recv_type("message").await;
    assert_eq!(
        (m["sender"].clone(), m["text"].clone()),
        (json!(alice.id), json!("beep"))
    );
    // A wrong or malformed token is refused at the door.
    let wrong = format!("Bearer {}", "0".repeat(token.len()));
    assert_eq!(
        try_connect(srv.addr, &[("authorization", &wrong)])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        try_connect(srv.addr, &[("authorization", &token)])
            .await
            .err(),
        Some(401),
        "the Bearer scheme is required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    a.say(json!({"to": bob.id}), "a-1", "hi").await;
    let b = Client::connect(&srv, &bob).await; // not even synced
    let readers: Vec<_> = [a, b]
        .into_iter()
        .map(|mut c| tokio::spawn(async move { read_to_end(&mut c).await.0 }))
        .collect();
    let t = Instant::now();
    let status = tokio::task::block_in_place(|| srv.terminate());
    let took = t.elapsed();
    assert!(status.success(), "exit status {status:?}");
    for r in readers {
        assert_eq!(r.await.unwrap(), Some(1001));
    }
    // Clients answered the close at once, so shutdown did not wait out its grace period.
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}
