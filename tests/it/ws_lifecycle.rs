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

/// Waits, without reading through the WebSocket (which would answer pings), until the server
/// has sent a close frame, by peeking at the socket's received bytes; returns the close code.
async fn peek_until_close(c: &Client, limit: Duration) -> Option<u16> {
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = c.ws.get_ref() else {
        panic!("a plain TCP connection")
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while tokio::time::Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_millis(20), tcp.peek(&mut buf))
            .await
            .map_or(0, |r| r.unwrap_or(0));
        // Server frames are unmasked; these are short (7-bit lengths).
        let mut at = 0;
        while at + 2 <= n {
            let (op, len) = (buf[at] & 0x0f, usize::from(buf[at + 1] & 0x7f));
            if op == 8 && at + 4 <= n {
                return Some(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
            }
            at += 2 + len;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The idle timeout was checked only at ping ticks: with `--ping-interval 5 --idle-timeout 6`
/// a silent client was closed 10 s after its last frame, not 6.
#[tokio::test]
async fn a_silent_client_is_closed_at_the_idle_timeout_not_the_next_ping() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--ping-interval", "5", "--idle-timeout", "6"]);
    let bob = user(&srv, "bob").await;
    let mut silent = Client::connect(&srv, &bob).await;
    silent.send(json!({"type": "sync", "ref": 1})).await;
    let last_frame = Instant::now();
    silent.recv_type("synced").await;
    let code = peek_until_close(&silent, Duration::from_secs(12)).await;
    let after = last_frame.elapsed();
    eprintln!("idle close {code:?} after {after:?}");
    assert_eq!(code, Some(1000), "no close frame within 12 s");
    assert!(
        after >= Duration::from_millis(5900) && after < Duration::from_millis(7000),
        "closed {after:?} after the last frame; the idle timeout is 6 s"
    );
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

/// A client that stops reading entirely while messages pile up used to be cut off by the 10-s
/// write timeout (~12 s in), without a close frame and without being counted, though the log
/// had said at ~4.6 s that it was being closed. Now, once its outbox overflows, its socket gets
/// `slow_close_grace` (2 s) to take the close frame; a client that reads nothing cannot, and is
/// dropped then; every such drop is counted and logged as what it was. A stalled catch-up (no
/// outbox involved) is dropped after the write timeout, and counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_promptly_counted_and_logged_truthfully() {
    const SENDERS: usize = 10;
    const PER_SENDER: usize = 200;
    const SIZE: usize = 8 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-message-bytes", "32768"]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let ack = a.say(json!({"to": bob.id}), "start", "start").await;
    let conv = ack["conversation"].as_u64().unwrap();
    a.close().await;

    // Bob syncs, then reads nothing at all.
    let mut stalled = connect_small_rcvbuf(&srv, &bob, 4096).await;
    stalled.send(json!({"type": "sync"})).await;
    stalled.recv_until("synced").await;

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(Client::connect(&srv, &alice).await);
    }
    let flood = tokio::spawn(flood_conversation(senders, conv, PER_SENDER, SIZE));
    // Watch for the overflow (the hub's line) and the drop (the counter).
    let started = Instant::now();
    let (mut overflow, mut dropped) = (None, None);
    while dropped.is_none() && started.elapsed() < Duration::from_secs(40) {
        if overflow.is_none() && srv.log().contains("outbox full") {
            overflow = Some(Instant::now());
        }
        if srv.metric("chatd_slow_client_disconnects_total").await >= 1.0 {
            dropped = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let overflow = overflow.expect("the outbox never overflowed");
    let dropped = dropped.expect("the stalled client was not counted as a slow client");
    let took = dropped.saturating_duration_since(overflow);
    eprintln!(
        "stalled client: outbox full after {:?}, dropped {took:?} later",
        overflow - started
    );
    assert!(
        took < Duration::from_millis(3500),
        "dropped {took:?} after the overflow"
    );
    assert_eq!(flood.await.unwrap().len(), SENDERS * PER_SENDER);

    // What the client sees (frames, then a close frame or the end) matches the log.
    let (code, frames) = read_to_end(&mut stalled).await;
    let log = srv.log();
    let line = log
        .lines()
        .find(|l| l.contains("slow client:"))
        .unwrap_or_else(|| panic!("no slow client line in the log:\n{log}"));
    assert!(line.contains("its outbox of 1024 frames filled"), "{line}");
    match code {
        Some(c) => {
            assert_eq!(c, 1008);
            assert!(line.contains("closed with 1008"), "got 1008 but: {line}");
        }
        None => assert!(
            line.contains("took no data for 2s: dropped without a close frame"),
            "got no close frame but: {line}"
        ),
    }
    eprintln!(
        "stalled client got {} frames, then {code:?}; {line}",
        frames.len()
    );

    // A catch-up to a client that reads nothing: nothing to overflow, the write stalls.
    let mut stalled = connect_small_rcvbuf(&srv, &bob, 4096).await;
    stalled.send(json!({"type": "sync"})).await;
    let t0 = Instant::now();
    while srv.metric("chatd_slow_client_disconnects_total").await < 2.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the stalled catch-up was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("stalled catch-up dropped after {:?}", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_secs(9), "{:?}", t0.elapsed());
    srv.wait_log(
        "it stopped reading; a write made no progress for 10s: dropped without a close frame",
    );
    drop(stalled);
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
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
