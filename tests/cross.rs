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
//! Under qemu the binary runs many times slower than natively, and every argon2 password hash
//! (account creation, login) can take seconds; HTTP requests have no deadline here, frames the
//! shared client's.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::json;

// The integration tests' server handle, HTTP helper and WebSocket client, shared.
#[allow(dead_code)]
#[path = "it/support/mod.rs"]
mod support;

use support::ws::{login, Client};
use support::Server;

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
    let mut srv = Server::start_command(t.command(), &data, &[]);
    let h = srv.get("/healthz", &[]).await;
    assert_eq!(h.status, 200, "/healthz: {:?}", h.body);
    assert_eq!(h.json()["status"], "ok", "/healthz: {:?}", h.body);

    let alice = login(&srv, "alice", "alice-password-1").await;
    let bob = login(&srv, "bob", "bob-password-1").await;
    assert_ne!(alice.id, bob.id);

    let text = format!("hello bob, from {}", t.describe());
    let mut a = Client::connect(&srv, &alice).await;
    let ack = a.say(json!({"to": bob.id}), "cross-1", &text).await;
    let conversation = ack["conversation"].as_u64().expect("conversation id");
    let seq = ack["seq"].as_u64().expect("seq");
    println!("  message stored: conversation {conversation}, seq {seq}");
    a.close().await;

    let status = srv.terminate();
    assert!(
        status.success(),
        "chatd exited with {status} after SIGTERM; log:\n{}",
        srv.log()
    );
    drop(srv);

    // Second run on the same directory: bob's session survived, and the message is there.
    let mut srv = Server::start_command(t.command(), &data, &[]);
    let mut b = Client::connect(&srv, &bob).await;
    let history = b
        .request(json!({"type": "history", "conversation": conversation}))
        .await;
    assert_eq!(history["type"], "history", "{history}");
    let messages = history["messages"].as_array().expect("messages");
    let m = messages
        .iter()
        .find(|m| m["seq"] == seq)
        .unwrap_or_else(|| panic!("message {seq} missing after the restart: {history}"));
    assert_eq!(m["text"], text.as_str(), "{m}");
    assert_eq!(m["sender"], alice.id, "{m}");
    assert_eq!(m["sender_name"], "alice", "{m}");
    println!("  after the restart bob reads it: {:?}", m["text"]);
    b.close().await;

    let status = srv.terminate();
    assert!(
        status.success(),
        "chatd exited with {status} after SIGTERM; log:\n{}",
        srv.log()
    );
    println!("passed in {:.1} s", secs(total));
}
