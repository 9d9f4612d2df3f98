//! Operations on the real binary: `chatd backup` of a running server under write load,
//! `chatd restore`, and opening a database written by an older chatd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::cli::assert_clean_failure;
use crate::support::ws::{login, user, Client};
use crate::support::{chatd, creds, Server};

/// Every message of a conversation, oldest first, by paging `history` back from the newest.
pub(crate) async fn all_messages(c: &mut Client, conv: u64) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut req = json!({"type": "history", "conversation": conv, "limit": 100});
        if let Some(b) = before {
            req["before"] = json!(b);
        }
        let page = c.request(req).await;
        assert_eq!(page["type"], "history", "{page}");
        let msgs = page["messages"].as_array().unwrap().clone();
        if let Some(first) = msgs.first() {
            before = first["seq"].as_u64();
        }
        let done = page["complete"] == true || msgs.is_empty();
        let mut merged = msgs;
        merged.extend(out);
        out = merged;
        if done {
            return out;
        }
    }
}

#[tokio::test]
async fn backup_under_load_restores_every_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap().to_string();
    let srv = Server::start(&data, &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut sender = Client::connect_synced(&srv, &alice).await;
    let epoch = sender.welcome["epoch"].clone();

    // Alice keeps sending, one message at a time, and records every ack.
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let bob_id = bob.id;
        tokio::spawn(async move {
            let mut conv = 0;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("load-{i}");
                let ack = sender
                    .say(json!({"to": bob_id}), &id, &format!("message {i}"))
                    .await;
                conv = ack["conversation"].as_u64().unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((id, ack["seq"].as_u64().unwrap()));
                i += 1;
            }
            conv
        })
    };
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Everything acknowledged before the backup begins must be in it.
    let before: Vec<(String, u64)> = acked.lock().unwrap().clone();
    let out = tmp.path().join("backup.redb");
    let out_s = out.to_str().unwrap().to_string();
    let o = {
        let (d, f) = (data_s.clone(), out_s.clone());
        tokio::task::spawn_blocking(move || chatd(&["backup", "--data-dir", &d, "--out", &f], None))
            .await
            .unwrap()
    };
    let during = acked.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    let conv = load.await.unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("the running server"), "{stdout}");
    assert!(out.exists());
    assert!(!tmp.path().join("backup.redb.partial").exists());
    // No temporary snapshot is left in the data directory.
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".backup"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(during > before.len(), "sending went on during the backup");

    // The same file again is refused; restore refuses while the server runs.
    assert_clean_failure(
        &chatd(&["backup", "--data-dir", &data_s, "--out", &out_s], None),
        "already exists",
    );
    assert_clean_failure(
        &chatd(&["restore", "--data-dir", &data_s, &out_s], None),
        "server is running",
    );
    drop(srv);

    // Restore into a fresh directory and check every message acknowledged before the backup.
    let restored = tmp.path().join("restored");
    let restored_s = restored.to_str().unwrap();
    let o = chatd(&["restore", "--data-dir", restored_s, &out_s], None);
    assert!(
        o.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let srv = Server::start(&restored, &[]);
    let alice = login(&srv, "alice", "password-1").await;
    let mut c = Client::connect_synced(&srv, &alice).await;
    assert_ne!(
        c.welcome["epoch"], epoch,
        "a restore gives the database a new epoch"
    );
    let msgs = all_messages(&mut c, conv).await;
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let expect: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expect, "no gaps");
    for (id, seq) in &before {
        let m = &msgs[(*seq - 1) as usize];
        assert_eq!(m["client_id"], id.as_str(), "message {seq} after restore");
    }
    // The restored server takes new messages after the restored ones.
    let ack = c
        .say(json!({"to": bob.id}), "after-restore", "hello again")
        .await;
    assert_eq!(ack["seq"].as_u64().unwrap(), seqs.len() as u64 + 1);
}

#[tokio::test]
async fn stopped_server_backup_and_restore_over_existing_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let out = tmp.path().join("nightly.redb");
    let out_s = out.to_str().unwrap();
    assert_clean_failure(
        &chatd(&["backup", "--data-dir", data_s, "--out", out_s], None),
        "no chatd database",
    );
    // A snapshot left behind by a server that died while taking it is cleaned up on start.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(".backup-1-0.redb"), b"partial").unwrap();
    let mut srv = Server::start(&data, &[]);
    assert!(!data.join(".backup-1-0.redb").exists());
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let mut c = Client::connect_synced(&srv, &alice).await;
    let ack = c.say(json!({"to": bob.id}), "k1", "kept").await;
    let conv = ack["conversation"].as_u64().unwrap();
    assert!(srv.terminate().success());
    assert!(
        !data.join("chatd.sock").exists(),
        "the control socket is removed on exit"
    );

    let o = chatd(&["backup", "--data-dir", data_s, "--out", out_s], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("no server running") && stdout.contains("2 users"),
        "{stdout}"
    );

    // More happens after the backup; restoring goes back to the backup's state.
    let srv = Server::start(&data, &[]);
    let alice = login(&srv, "alice", "password-1").await;
    let mut c = Client::connect_synced(&srv, &alice).await;
    c.say(json!({"to": bob.id}), "k2", "lost by the restore")
        .await;
    drop(srv);
    let o = chatd(&["restore", "--data-dir", data_s, out_s], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("was kept as"));
    let kept: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("chatd.redb.before-restore-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    let srv = Server::start(&data, &[]);
    let alice = login(&srv, "alice", "password-1").await;
    let mut c = Client::connect_synced(&srv, &alice).await;
    let msgs = all_messages(&mut c, conv).await;
    let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["kept"]);

    // Garbage is refused, and the database stays as it was.
    let junk = tmp.path().join("junk.redb");
    std::fs::write(&junk, vec![1u8; 8192]).unwrap();
    drop(srv);
    assert_clean_failure(
        &chatd(
            &["restore", "--data-dir", data_s, junk.to_str().unwrap()],
            None,
        ),
        "cannot restore",
    );
    let srv = Server::start(&data, &[]);
    login(&srv, "alice", "password-1").await;
}

/// A data directory written by the schema-1 chatd (tests/data/chatd-schema1) is upgraded in
/// place on start, and everything in it works: logins, history, unread, new messages.
#[tokio::test]
async fn database_from_an_older_chatd_is_upgraded_on_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chatd-schema1/chatd.redb"
    );
    std::fs::copy(fixture, data.join("chatd.redb")).unwrap();
    let srv = Server::start(&data, &[]);
    assert!(
        srv.log().contains("upgrading the database schema"),
        "{}",
        srv.log()
    );
    let bob = login(&srv, "bob", "fixture-password-1").await;
    let mut c = Client::connect_synced(&srv, &bob).await;
    let convs = c.request(json!({"type": "conversations"})).await;
    let list = convs["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{convs}");
    let direct = list.iter().find(|c| c["kind"] == "direct").unwrap();
    assert_eq!(direct["unread"], 1, "{direct}");
    let conv = direct["id"].as_u64().unwrap();
    let msgs = all_messages(&mut c, conv).await;
    let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["hello bob", "hi alice", "schema one <b>was</b> here"]
    );
    let ack = c
        .say(json!({"conversation": conv}), "new-1", "after upgrade")
        .await;
    assert_eq!(ack["seq"], 4);
}

/// An acknowledged send: (conversation, seq, client_id).
pub(crate) type Acked = (u64, u64, String);

/// Reads back every conversation an ack names: each has seqs 1..=n with no gap or duplicate,
/// and every acknowledged message is at the seq its ack named. Returns how many are stored.
pub(crate) async fn assert_acked_at_their_seqs(c: &mut Client, acked: &[Acked]) -> usize {
    let mut convs: Vec<u64> = acked.iter().map(|a| a.0).collect();
    convs.sort();
    convs.dedup();
    let mut stored = std::collections::HashMap::new();
    for conv in convs {
        let msgs = all_messages(c, conv).await;
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=msgs.len() as u64).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        for m in msgs {
            stored.insert(
                (conv, m["seq"].as_u64().unwrap()),
                m["client_id"].as_str().unwrap().to_string(),
            );
        }
    }
    for (conv, seq, id) in acked {
        assert_eq!(
            stored.get(&(*conv, *seq)),
            Some(id),
            "acknowledged {id} as {conv}/{seq}"
        );
    }
    stored.len()
}

/// Four users each send `n` direct messages to `to` without waiting (pipelined) and read the
/// acks apart, until the connection ends. Each task returns its acks and the close code.
async fn pipelined_senders(
    srv: &Server,
    to: u64,
    n: usize,
    tag: &'static str,
) -> Vec<tokio::task::JoinHandle<(Vec<Acked>, Option<u16>)>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut tasks = Vec::new();
    for s in 0..4 {
        let u = user(srv, &format!("{tag}{s}")).await;
        let c = Client::connect_synced(srv, &u).await;
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = c.ws.split();
            let writer = tokio::spawn(async move {
                for i in 0..n {
                    let f = json!({"type": "send", "client_id": format!("{tag}{s}-{i}"), "to": to, "text": format!("{s}/{i}")});
                    if tx.send(Message::Text(f.to_string().into())).await.is_err() {
                        break;
                    }
                }
                tx
            });
            let mut acked = Vec::new();
            let mut close = None;
            while let Some(Ok(m)) = rx.next().await {
                match m {
                    Message::Text(t) => {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        if v["type"] == "ack" {
                            acked.push((
                                v["conversation"].as_u64().unwrap(),
                                v["seq"].as_u64().unwrap(),
                                v["client_id"].as_str().unwrap().to_string(),
                            ));
                        }
                    }
                    Message::Close(c) => {
                        close = c.map(|c| u16::from(c.code));
                        break;
                    }
                    _ => {}
                }
            }
            let _ = writer.await;
            (acked, close)
        }));
    }
    tasks
}

/// SIGTERM while messages are in flight: the server finishes the commits it accepted, closes
/// sessions with 1001, exits promptly, and every message it acknowledged is there after restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut srv = Server::start(&data, &[]);
    let bob = user(&srv, "bob").await;
    // Pipelined: 150 sends each without waiting (within the frame burst).
    let tasks = pipelined_senders(&srv, bob.id, 150, "sender").await;
    // Let some acks flow, then stop the server mid-stream.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let t = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| srv.terminate());
    let took = t.elapsed();
    assert!(status.success(), "{status:?}\n{}", srv.log());
    assert!(
        took < std::time::Duration::from_secs(6),
        "shutdown took {took:?}"
    );
    let mut acked = Vec::new();
    for t in tasks {
        let (a, close) = t.await.unwrap();
        if let Some(code) = close {
            assert_eq!(code, 1001);
        }
        acked.extend(a);
    }
    assert!(!acked.is_empty());

    let srv = Server::start(&data, &[]);
    let bob = login(&srv, "bob", "password-1").await;
    let mut c = Client::connect_synced(&srv, &bob).await;
    let mut stored = std::collections::HashSet::new();
    let mut convs: Vec<u64> = acked.iter().map(|a| a.0).collect();
    convs.sort();
    convs.dedup();
    for conv in convs {
        for m in all_messages(&mut c, conv).await {
            stored.insert(m["client_id"].as_str().unwrap().to_string());
        }
    }
    for (_, _, id) in &acked {
        assert!(
            stored.contains(id),
            "acknowledged {id} is missing after restart"
        );
    }
    eprintln!(
        "{} acknowledged before shutdown, {} stored",
        acked.len(),
        stored.len()
    );
}

/// kill -9 while messages are in flight. Acks are sent once a batch is in the write-ahead log
/// (fsync'd); redb has it only in memory until the next checkpoint. After the restart every
/// acknowledged message is there with exactly the seq its ack named, and seqs have no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_keeps_every_acknowledged_message_at_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Enough sends (and a frame rate limit high enough for them) to still be mid-stream when
    // the kill comes.
    let mut srv = Server::start(&data, &["--max-frames-per-second", "100000"]);
    let bob = user(&srv, "bob").await;
    let tasks = pipelined_senders(&srv, bob.id, 2000, "killed").await;
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    srv.kill();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap().0);
    }
    assert!(!acked.is_empty());

    let srv = Server::start(&data, &["--max-frames-per-second", "100000"]);
    let bob = login(&srv, "bob", "password-1").await;
    let mut c = Client::connect_synced(&srv, &bob).await;
    let total = assert_acked_at_their_seqs(&mut c, &acked).await;
    eprintln!(
        "kill -9: {} acknowledged, {total} stored; {}",
        acked.len(),
        if srv.log().contains("recovered logged batches") {
            "the restart replayed the log"
        } else {
            "everything was checkpointed before the kill"
        }
    );
}

/// kill -9 after the write-ahead log's files have been reused: the load runs until at least
/// three checkpoints have passed (the first file retired, refilled over its old records, the
/// second one too), then the server is killed; three times on the same data directory, so
/// each start recovers from reused files. Every acknowledged message of every round is there
/// at its seq, with no gap and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_log_files_were_reused_keeps_every_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--max-frames-per-second", "100000"];
    let checkpoints = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("chatd_checkpoint_duration_seconds_count "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let mut acked = Vec::new();
    let mut bob_id = 0;
    for (round, tag) in ["ra", "rb", "rc"].into_iter().enumerate() {
        let mut srv = Server::start(&data, &flags);
        let bob = if round == 0 {
            user(&srv, "bob").await
        } else {
            login(&srv, "bob", "password-1").await
        };
        bob_id = bob.id;
        let tasks = pipelined_senders(&srv, bob.id, 50_000, tag).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = String::from_utf8(srv.get("/metrics", &[]).await.body.to_vec()).unwrap();
            if checkpoints(&text) >= 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: fewer than 3 checkpoints in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        srv.kill();
        let before = acked.len();
        for t in tasks {
            acked.extend(t.await.unwrap().0);
        }
        assert!(
            acked.len() > before,
            "round {round}: something was acknowledged"
        );
    }
    let srv = Server::start(&data, &flags);
    let bob = login(&srv, "bob", "password-1").await;
    assert_eq!(bob.id, bob_id);
    let mut c = Client::connect_synced(&srv, &bob).await;
    let stored = assert_acked_at_their_seqs(&mut c, &acked).await;
    eprintln!(
        "kill -9 after reuse: {} acknowledged over 3 rounds, {stored} stored",
        acked.len()
    );
}

/// `chatd user ...` and `chatd token create` while the server runs: applied by the server
/// through its control socket; signing a user out closes their open connections at once.
#[tokio::test]
async fn user_commands_work_while_the_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let srv = Server::start(&data, &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut a = args.to_vec();
        a.extend(["--data-dir", d]);
        chatd(&a, stdin)
    };

    let o = run(
        &["user", "add", "carol", "--password-stdin"],
        Some("carol-pass-1\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("created user carol"));
    login(&srv, "carol", "carol-pass-1").await;
    assert_clean_failure(
        &run(
            &["user", "add", "CAROL", "--password-stdin"],
            Some("carol-pass-2\n"),
        ),
        "already exists",
    );
    let list = run(&["user", "list"], None);
    assert!(String::from_utf8_lossy(&list.stdout).contains("carol"));

    // Disabling alice closes her open session and her cookie stops working.
    let mut a = Client::connect_synced(&srv, &alice).await;
    let o = run(&["user", "disable", "alice"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(a.recv_close().await, 1008);
    let me = srv.get("/api/me", &[("cookie", &alice.cookie)]).await;
    assert_eq!(me.status, 401);
    let r = srv
        .post_json("/api/login", &creds("alice", "password-1"), &[])
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(run(&["user", "enable", "alice"], None).status.success());
    login(&srv, "alice", "password-1").await;

    // A new password signs bob out everywhere.
    let mut b = Client::connect_synced(&srv, &bob).await;
    let o = run(
        &["user", "passwd", "bob", "--password-stdin"],
        Some("bob-new-pass-1\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(b.recv_close().await, 1008);
    assert_eq!(
        srv.get("/api/me", &[("cookie", &bob.cookie)]).await.status,
        401
    );
    let bob = login(&srv, "bob", "bob-new-pass-1").await;

    // A token made while the server runs works at once.
    let o = run(&["token", "create", "carol", "--label", "bot"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let auth = format!("Bearer {token}");
    let ws = crate::support::ws::try_connect(srv.addr, &[("authorization", &auth)])
        .await
        .expect("token accepted");
    let mut c = Client::from_ws(ws).await;
    c.send(json!({"type": "sync"})).await;
    c.recv_type("synced").await;
    let ack = c
        .say(json!({"to": bob.id}), "bot-1", "made by a token")
        .await;
    assert_eq!(ack["seq"], 1);
    assert_clean_failure(&run(&["user", "disable", "nobody"], None), "no user named");
}
