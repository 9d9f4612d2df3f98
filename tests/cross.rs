//! Smoke test of a prebuilt chatd binary, usually a cross-compiled one run under qemu-user:
//! it creates accounts with the CLI, serves, answers `/healthz`, logs in over HTTP, stores a
//! direct message over a WebSocket, and still has it after a restart.
//!
//! Skipped (with a note) unless `CHATD_CROSS_BIN` names the binary to test. Optional
//! `CHATD_CROSS_RUNNER` is the command that runs it, e.g. `qemu-aarch64-static`. packaging/check.sh
//! runs it for every binary in target/dist:
//!
//! ```sh
//! CHATD_CROSS_BIN=target/dist/chatd-aarch64-linux-musl CHATD_CROSS_RUNNER=qemu-aarch64-static \
//!     cargo test --locked --test cross -- --nocapture
//! ```
//!
//! Everything waits generously: under qemu the binary runs many times slower than natively, and
//! every argon2 password hash (account creation, login) can take seconds.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for the server to start, or for one reply or frame.
const WAIT: Duration = Duration::from_secs(120);

/// The binary under test and the runner in front of it (`qemu-aarch64-static`, or none).
struct Target {
    bin: PathBuf,
    runner: Vec<String>,
}

impl Target {
    fn from_env() -> Option<Target> {
        let bin = std::env::var_os("CHATD_CROSS_BIN").filter(|b| !b.is_empty())?;
        let runner = std::env::var("CHATD_CROSS_RUNNER")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Some(Target {
            bin: PathBuf::from(bin),
            runner,
        })
    }

    fn command(&self) -> Command {
        let mut c = match self.runner.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        // Only the flags given here count, not the environment of whoever runs the test.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CHATD_") {
                c.env_remove(k);
            }
        }
        c
    }

    fn describe(&self) -> String {
        if self.runner.is_empty() {
            self.bin.display().to_string()
        } else {
            format!("{} {}", self.runner.join(" "), self.bin.display())
        }
    }

    /// Runs a CLI command to completion, feeding `stdin`; returns stdout, panics on failure.
    fn run(&self, args: &[&str], stdin: &str) -> String {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.describe()));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "chatd {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// A running `chatd serve`; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(t: &Target, data_dir: &Path) -> Server {
        let mut child = t
            .command()
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .args(["--log-level", "info", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", t.describe()));
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let started = Instant::now();
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a
                .parse()
                .unwrap_or_else(|e| panic!("bad address {a:?} in the log: {e}")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chatd did not start; log:\n{}", log.lock().unwrap());
            }
        };
        println!("  listening on {addr} after {:.1} s", secs(started));
        Server { child, addr, log }
    }

    /// SIGTERM (a clean shutdown, as systemd does it); returns the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("chatd did not exit after SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn get(&self, path: &str) -> Reply {
        http(self.addr, "GET", path, &[], None).await
    }

    /// A JSON POST from the server's own page (POSTs must carry a same-origin `Origin`).
    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let origin = self.origin();
        let headers = [
            ("content-type", "application/json"),
            ("origin", origin.as_str()),
        ];
        http(
            self.addr,
            "POST",
            path,
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// Logs in; returns the user's id and the `chatd_session=...` cookie.
    async fn login(&self, name: &str, password: &str) -> (u64, String) {
        let started = Instant::now();
        let r = self
            .post_json("/api/login", &json!({"name": name, "password": password}))
            .await;
        assert_eq!(r.status, 200, "login {name}: {}", r.text());
        let id = r.json()["user"]["id"].as_u64().expect("user id");
        let cookie = r
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_string();
        println!("  {name} logged in (id {id}) in {:.1} s", secs(started));
        (id, cookie)
    }

    /// Opens `/ws` as a browser on the server's page would (cookie and Origin) and reads the
    /// `welcome`.
    async fn connect(&self, cookie: &str) -> Ws {
        let mut req = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("cookie", cookie.parse().expect("cookie header"));
        req.headers_mut()
            .insert("origin", self.origin().parse().expect("origin header"));
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("timed out opening the WebSocket")
            .expect("WebSocket upgrade");
        let mut ws = Ws { ws };
        let welcome = ws.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ws {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send frame");
    }

    /// The next JSON text frame (pings are answered by tungstenite and skipped).
    async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read error");
            match m {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame: {other:?}"),
            }
        }
    }

    /// The next frame of type `t`, skipping others (presence, conversation, ...); fails on an
    /// error frame.
    async fn recv_type(&mut self, t: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == t {
                return v;
            }
            assert_ne!(v["type"], "error", "expected {t}, got an error");
        }
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    tokio::time::timeout(WAIT, async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        let res = sender.send_request(req).await.expect("send request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no answer to {method} {path} within {WAIT:?}"))
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prebuilt_binary_serves_and_keeps_a_message() {
    let Some(t) = Target::from_env() else {
        println!(
            "skipped: set CHATD_CROSS_BIN to a chatd binary (and CHATD_CROSS_RUNNER to e.g. \
             qemu-aarch64-static) to run this test; packaging/check.sh does"
        );
        return;
    };
    let total = Instant::now();
    println!("testing {}", t.describe());
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 temp path");

    let version = t.run(&["--version"], "");
    println!("  {}", version.trim());
    assert!(version.starts_with("chatd "), "--version: {version:?}");

    let started = Instant::now();
    let add = |name: &'static str| {
        [
            "user",
            "add",
            name,
            "--password-stdin",
            "--data-dir",
            data_arg,
        ]
    };
    let out = t.run(&add("alice"), "alice-password-1\n");
    assert!(out.contains("created user alice"), "{out}");
    let out = t.run(&add("bob"), "bob-password-1\n");
    assert!(out.contains("created user bob"), "{out}");
    println!("  created alice and bob in {:.1} s", secs(started));

    // First run: health, log-in, one direct message from alice to bob, acknowledged.
    let mut srv = Server::start(&t, &data);
    let h = srv.get("/healthz").await;
    assert_eq!(h.status, 200, "/healthz: {}", h.text());
    assert_eq!(h.json()["status"], "ok", "/healthz: {}", h.text());

    let (alice_id, alice_cookie) = srv.login("alice", "alice-password-1").await;
    let (bob_id, bob_cookie) = srv.login("bob", "bob-password-1").await;
    assert_ne!(alice_id, bob_id);

    let text = format!("hello bob, from {}", t.describe());
    let mut alice = srv.connect(&alice_cookie).await;
    alice
        .send(json!({"type": "send", "client_id": "cross-1", "to": bob_id, "text": text}))
        .await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["client_id"], "cross-1", "{ack}");
    let conversation = ack["conversation"].as_u64().expect("conversation id");
    let seq = ack["seq"].as_u64().expect("seq");
    println!("  message stored: conversation {conversation}, seq {seq}");
    alice.close().await;

    let status = srv.terminate();
    assert!(
        status.success(),
        "chatd exited with {status} after SIGTERM; log:\n{}",
        srv.log()
    );
    drop(srv);

    // Second run on the same directory: bob's session survived, and the message is there.
    let mut srv = Server::start(&t, &data);
    let mut bob = srv.connect(&bob_cookie).await;
    bob.send(json!({"type": "history", "ref": 7, "conversation": conversation}))
        .await;
    let history = bob.recv_type("history").await;
    assert_eq!(history["ref"], 7, "{history}");
    let messages = history["messages"].as_array().expect("messages");
    let m = messages
        .iter()
        .find(|m| m["seq"] == seq)
        .unwrap_or_else(|| panic!("message {seq} missing after the restart: {history}"));
    assert_eq!(m["text"], text.as_str(), "{m}");
    assert_eq!(m["sender"], alice_id, "{m}");
    assert_eq!(m["sender_name"], "alice", "{m}");
    println!("  after the restart bob reads it: {:?}", m["text"]);
    bob.close().await;

    let status = srv.terminate();
    assert!(
        status.success(),
        "chatd exited with {status} after SIGTERM; log:\n{}",
        srv.log()
    );
    println!("passed in {:.1} s", secs(total));
}
