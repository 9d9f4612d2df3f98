//! Small runs of every chatd-bench scenario, so the load generator itself cannot rot. These
//! check that the tool works and that nothing is lost or duplicated (chatd-bench exits non-zero
//! on any loss, duplicate or error); the figures are for docs/BENCHMARKS.md, not for tests.

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chatd-bench"))
        .arg("--chatd")
        .arg(env!("CARGO_BIN_EXE_chatd"))
        .args(args)
        .output()
        .expect("run chatd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chatd-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("== {} (", args[0])), "{stdout}");
    stdout.into_owned()
}

#[test]
fn idle() {
    bench(&["idle", "--conns", "200", "--hold", "1"]);
}

#[test]
fn direct() {
    bench(&["direct", "--users", "40", "--rate", "200", "--secs", "2"]);
}

#[test]
fn rooms() {
    bench(&[
        "rooms", "--groups", "5", "--size", "10", "--rate", "100", "--secs", "2",
    ]);
}

#[test]
fn broadcast() {
    bench(&[
        "broadcast",
        "--members",
        "50",
        "--senders",
        "2",
        "--secs",
        "2",
    ]);
}

#[test]
fn ack() {
    let out = bench(&["ack", "--count", "50"]);
    // Both disk floors are measured: appending, and over blocks the file already has.
    for field in ["fsync_p50_ms", "fsync_overwrite_p50_ms", "ack_p50_ms"] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
}

#[test]
fn storm() {
    bench(&["storm", "--conns", "200"]);
}

#[test]
fn catchup() {
    bench(&[
        "catchup",
        "--clients",
        "50",
        "--missed",
        "100",
        "--rooms-groups",
        "3",
        "--rooms-rate",
        "60",
        "--rooms-secs",
        "1",
    ]);
}

/// CI's short crash soak: the server killed with SIGKILL at random moments (some while it is
/// still opening the database) under acked load with resends; every acked message must be in
/// the database exactly once at its seq (chatd-bench exits non-zero otherwise).
#[test]
fn crashloop() {
    let out = bench(&["crashloop", "--cycles", "8", "--max-run-ms", "400"]);
    assert!(out.contains("acked"), "{out}");
}

#[test]
fn restart() {
    let out = bench(&[
        "restart",
        "--messages",
        "2000",
        "--cycles",
        "2",
        "--load-secs",
        "1",
        "--senders",
        "4",
    ]);
    assert!(out.contains("chat_back_p50_ms"), "{out}");
}

#[test]
fn dbsize() {
    let out = bench(&[
        "dbsize",
        "--messages",
        "2000",
        "--every",
        "1000",
        "--senders",
        "8",
    ]);
    assert!(out.contains("bytes_per_message_stopped"), "{out}");
}

#[test]
fn logins() {
    let out = bench(&["logins", "--concurrency", "6", "--settle", "0"]);
    for field in ["rss_idle_mb", "rss_peak_mb", "acked"] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
}

#[test]
fn files() {
    let out = bench(&["files", "--mib", "2", "--concurrent", "3"]);
    for field in [
        "upload_mib_per_s",
        "download_mib_per_s",
        "thumb_12mp_ms",
        "rss_rise_mib",
    ] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
}
