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

#[test]
fn logins() {
    let out = bench(&["logins", "--concurrency", "6", "--settle", "0"]);
    for field in ["rss_idle_mb", "rss_peak_mb", "acked"] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
}
