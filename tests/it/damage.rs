//! Damaged data directories, end to end (issue 20): the real server on a data directory whose
//! files were damaged between two runs. A damaged message reaches clients as a marker at its
//! seq, the catch-up ends with `synced`, and `/healthz` and `/metrics` say so; a directory
//! whose database or log is missing or damaged refuses to start with one clear line, until the
//! operator chooses (`--new-database`, `--discard-damaged-log`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::ws::{login, user, Client};
use crate::support::{chatd, Server, BIN};

/// Every offset of `needle` in `hay`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Runs `chatd serve` on `dir` with `extra` flags, expecting it to exit (refusing to start)
/// within 20 s; returns its standard error.
fn refused(dir: &Path, extra: &[&str]) -> String {
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!status.success(), "exited 0: {err}");
            assert_eq!(status.code(), Some(1), "one clear error, no panic: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chatd started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alice sends `n` messages to bob ("text <i>") on a fresh server, which is then stopped
/// cleanly. Returns the conversation id.
async fn conversation_of(dir: &Path, n: u64) -> u64 {
    let mut srv = Server::start(dir, &[]);
    let _alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let alice = login(&srv, "alice", "password-1").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let mut conv = 0;
    for i in 1..=n {
        let target = if i == 1 {
            json!({ "to": bob.id })
        } else {
            json!({ "conversation": conv })
        };
        let ack = a
            .say(target, &format!("c{i}"), &format!("text {i:04}"))
            .await;
        conv = ack["conversation"].as_u64().unwrap();
    }
    a.close().await;
    assert!(srv.terminate().success());
    conv
}

/// Defects 5 and 6 as a client sees them: a stored text changed inside chatd.redb. The catch-up
/// replays a marker at its seq (`unreadable: true`, nothing else) and the rest around it, ends
/// with `synced`; `history` shows the marker too; `/healthz` is `degraded` and `/metrics`
/// counts it.
#[tokio::test]
async fn a_damaged_message_is_a_marker_and_health_says_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let conv = conversation_of(dir.path(), 30).await;
    let db = dir.path().join("chatd.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    let hits = find_all(&bytes, b"text 0017");
    assert!(!hits.is_empty());
    for i in hits {
        bytes[i + 5] = b'9';
    }
    std::fs::write(&db, &bytes).unwrap();

    let srv = Server::start(dir.path(), &[]);
    let health = srv.get("/healthz", &[]).await;
    assert_eq!(health.json()["status"], "ok", "nothing read yet");
    let bob = login(&srv, "bob", "password-1").await;
    for batch in [false, true] {
        let mut b = Client::connect(&srv, &bob).await;
        b.send(json!({"type": "sync", "batch": batch})).await;
        let (_, frames) = b.recv_until("synced").await;
        let messages: Vec<Value> = frames
            .iter()
            .flat_map(|f| match f["type"].as_str() {
                Some("message") => vec![f.clone()],
                Some("messages") => f["messages"].as_array().unwrap().clone(),
                _ => vec![],
            })
            .collect();
        let seqs: Vec<u64> = messages
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "batch {batch}");
        for m in &messages {
            if m["seq"] == 17 {
                assert_eq!(m["unreadable"], true, "{m}");
                assert_eq!(
                    (m["text"].as_str(), m["sender"].as_u64()),
                    (Some(""), Some(0))
                );
            } else {
                assert!(m.get("unreadable").is_none(), "{m}");
                assert_eq!(m["text"], format!("text {:04}", m["seq"].as_u64().unwrap()));
                assert_eq!(
                    m["sender_name"], "alice",
                    "looked up, not stored per message"
                );
            }
        }
        let h = b
            .request(json!({"type": "history", "conversation": conv, "limit": 20}))
            .await;
        let marker = &h["messages"][6];
        assert_eq!(
            (marker["seq"].as_u64(), &marker["unreadable"]),
            (Some(17), &json!(true))
        );
        b.close().await;
    }
    let health = srv.get("/healthz", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "degraded");
    assert!(health.json()["damaged_records"].as_u64().unwrap() >= 1);
    let metrics = String::from_utf8_lossy(&srv.get("/metrics", &[]).await.body).into_owned();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("chatd_store_damaged_records_total "))
        .expect("the counter");
    assert_ne!(line, "chatd_store_damaged_records_total 0");
    srv.wait_log("damaged record in the database: messages");
}

/// Defect 4 end to end: an emptied database refuses to start (exit 1, one line naming `chatd
/// restore` and `--new-database`), also for admin commands; `--new-database` starts over.
#[tokio::test]
async fn an_emptied_database_refuses_to_start_until_the_operator_decides() {
    let dir = tempfile::tempdir().unwrap();
    conversation_of(dir.path(), 3).await;
    std::fs::write(dir.path().join("chatd.redb"), b"").unwrap();
    let err = refused(dir.path(), &[]);
    assert!(
        err.contains("chatd restore") && err.contains("--new-database") && err.contains("empty"),
        "{err}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(errors[0].starts_with("chatd: error: ") && !err.contains("panicked"));
    let dirs = dir.path().to_str().unwrap();
    let o = chatd(&["user", "list", "--data-dir", dirs], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--new-database"));
    let srv = Server::start(dir.path(), &["--new-database"]);
    let r = srv
        .post_json(
            "/api/register",
            &crate::support::creds("carol", "password-1"),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "a new, empty database");
    assert_eq!(r.json()["user"]["id"], 1);
}

/// Defect 2 end to end: a damaged log record with intact ones after it (a crash image: the
/// server killed with unapplied batches, one record's payload byte flipped) refuses to start,
/// naming `--discard-damaged-log`; with the flag it starts without them.
#[tokio::test]
async fn a_damaged_log_refuses_to_start_until_the_operator_decides() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let _ = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let alice = login(&srv, "alice", "password-1").await;
    let mut a = Client::connect_synced(&srv, &alice).await;
    let ack = a.say(json!({"to": bob.id}), "c0", "first").await;
    let conv = ack["conversation"].as_u64().unwrap();
    // The records of acknowledged batches, in the log as a crash leaves it (copied while the
    // server runs: checkpoints empty the log twice a second, so copy right after the acks).
    let copy = tempfile::tempdir().unwrap();
    let mut found = None;
    for attempt in 0..50 {
        for i in 0..6 {
            a.say(
                json!({ "conversation": conv }),
                &format!("c{attempt}-{i}"),
                "x",
            )
            .await;
        }
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            if f.file_type().unwrap().is_file()
                && name.starts_with("chatd.")
                && name != "chatd.sock"
            {
                std::fs::copy(f.path(), copy.path().join(&name)).unwrap();
            }
        }
        for log in ["chatd.wal", "chatd.wal2"] {
            let bytes = std::fs::read(copy.path().join(log)).unwrap();
            if find_all(&bytes, b"CWL2").len() >= 4 {
                found = Some((log, bytes));
            }
        }
        if found.is_some() {
            break;
        }
    }
    srv.kill();
    let (log, mut bytes) = found.expect("a log with several records");
    // The second record's payload: its header starts at the second "CWL2".
    let second = find_all(&bytes, b"CWL2")[1];
    bytes[second + 24 + 10] ^= 0x40;
    std::fs::write(copy.path().join(log), &bytes).unwrap();
    let err = refused(copy.path(), &[]);
    assert!(
        err.contains("damaged record") && err.contains("--discard-damaged-log"),
        "{err}"
    );
    let srv = Server::start(copy.path(), &["--discard-damaged-log"]);
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
    srv.wait_log("--discard-damaged-log: starting without");
}

/// While the store opens, the server already answers: `/healthz` with 503 `starting`. (The
/// open is held up for real: the log file is a FIFO, so reading it waits for a writer.)
#[tokio::test]
async fn health_says_starting_until_the_store_is_open() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("chatd.wal");
    let hold = dir.path().join("fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&wal)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::hard_link(&wal, &hold).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "info",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("a line").unwrap();
        if let Some(i) = line.find("starting on http://") {
            let a = line[i + 19..].split(": ").next().unwrap();
            break a.parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let r = crate::support::http(addr, "GET", "/healthz", &[], None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "starting");
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = crate::support::http(addr, "GET", "/api/me", &[], None).await;
    assert_eq!((r.status, r.error_code().as_str()), (503, "starting"));
    // Let the open go on: an ordinary (empty) log file in place, and the FIFO's reader gets
    // an end of file.
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    std::fs::rename(dir.path().join("empty"), &wal).unwrap();
    drop(std::fs::OpenOptions::new().write(true).open(&hold).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = crate::support::http(addr, "GET", "/healthz", &[], None).await;
        if r.status == 200 {
            assert_eq!(r.json()["status"], "ok");
            break;
        }
        assert_eq!(r.json()["status"], "starting");
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
