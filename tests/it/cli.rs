//! The command line: admin commands on a stopped server, clear one-line errors (never a panic)
//! for the usual ways a start can fail.

use std::process::Output;

use crate::support::{chatd, creds, Server};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
}

#[test]
fn version_names_the_commit() {
    let o = chatd(&["--version"], None);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("chatd {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("commit"), "{out}");
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let o = chatd(&["serve", "--help"], None);
    let help = String::from_utf8_lossy(&o.stdout);
    for env in [
        "CHATD_PORT",
        "CHATD_BIND",
        "CHATD_DATA_DIR",
        "CHATD_REGISTRATION",
        "CHATD_LOG_LEVEL",
        "CHATD_MAX_CONNECTIONS",
        "CHATD_SESSION_DAYS",
        "CHATD_TLS_CERT",
        "CHATD_TLS_KEY",
        "CHATD_BEHIND_PROXY",
        "CHATD_METRICS_PUBLIC",
        "CHATD_LOG_FORMAT",
        "CHATD_CACHE_MB",
        "CHATD_NEW_DATABASE",
        "CHATD_DISCARD_DAMAGED_LOG",
    ] {
        assert!(help.contains(env), "{env} missing from --help:\n{help}");
    }
    let o = chatd(&["user", "--help"], None);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Works while the server runs"));
}

#[tokio::test]
async fn user_commands_manage_accounts_the_server_then_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();

    let o = chatd(&["user", "list", "--data-dir", d], None);
    assert_clean_failure(&o, "no chatd database");

    let o = chatd(
        &["user", "add", "root", "--password-stdin", "--data-dir", d],
        Some("rootpass-1\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("created user root (id 1, admin)"));
    let o = chatd(
        &["user", "add", "kim", "--password-stdin", "--data-dir", d],
        Some("kimpass-1\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chatd(
        &["user", "add", "KIM", "--password-stdin", "--data-dir", d],
        Some("kimpass-1\n"),
    );
    assert_clean_failure(&o, "already exists");
    let o = chatd(
        &[
            "user",
            "add",
            "bad name",
            "--password-stdin",
            "--data-dir",
            d,
        ],
        Some("kimpass-1\n"),
    );
    assert_clean_failure(&o, "invalid name");
    let o = chatd(
        &["user", "add", "lee", "--password-stdin", "--data-dir", d],
        Some("short\n"),
    );
    assert_clean_failure(&o, "invalid password");
    // Without --password-stdin and without a terminal, it says what to do instead of hanging.
    let o = chatd(&["user", "add", "lee", "--data-dir", d], None);
    assert_clean_failure(&o, "--password-stdin");

    let o = chatd(&["user", "list", "--data-dir", d], None);
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(list.contains("root") && list.contains("admin"), "{list}");
    assert!(list.contains("kim") && list.contains("active"), "{list}");

    let o = chatd(
        &["user", "passwd", "kim", "--password-stdin", "--data-dir", d],
        Some("kimpass-2\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chatd(&["user", "disable", "nobody", "--data-dir", d], None);
    assert_clean_failure(&o, "no user named");

    let srv = Server::start(std::path::Path::new(d), &[]);
    let r = srv
        .post_json("/api/login", &creds("kim", "kimpass-1"), &[])
        .await;
    assert_eq!(r.status, 401, "old password no longer works");
    let r = srv
        .post_json("/api/login", &creds("kim", "kimpass-2"), &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["user"]["admin"], false);

    // While the server runs, admin commands go through its control socket.
    let o = chatd(&["user", "list", "--data-dir", d], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("kim"));
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);
    // Without the control socket (an older chatd, say) they refuse clearly instead of hanging.
    std::fs::remove_file(std::path::Path::new(d).join("chatd.sock")).unwrap();
    let o = chatd(&["user", "list", "--data-dir", d], None);
    assert_clean_failure(&o, "in use by another chatd process");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = chatd(
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert_clean_failure(&o, "already in use");
}

#[test]
fn unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("data");
    let o = chatd(
        &["--port", "0", "--data-dir", under_file.to_str().unwrap()],
        None,
    );
    assert_clean_failure(&o, "cannot create data directory");
}

#[test]
fn corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chatd.redb"), vec![0xA5u8; 16384]).unwrap();
    let o = chatd(
        &["--port", "0", "--data-dir", dir.path().to_str().unwrap()],
        None,
    );
    assert_clean_failure(&o, "damaged or not a chatd database");
    let o = chatd(
        &["user", "list", "--data-dir", dir.path().to_str().unwrap()],
        None,
    );
    assert_clean_failure(&o, "damaged or not a chatd database");
}

#[test]
fn bad_flag_values_are_rejected() {
    let o = chatd(&["--registration", "maybe"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("possible values: open, closed"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let bad = [
        ("--log-level", "loud!", "invalid --log-level"),
        ("--log-level", "inf", "invalid --log-level"),
        ("--log-level", "chatd=verbose", "invalid --log-level"),
        (
            "--cache-mb",
            "2",
            "--cache-mb must be between 4 and 1048576",
        ),
    ];
    for (flag, value, want) in bad {
        let o = chatd(
            &[
                flag,
                value,
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--data-dir",
                d,
            ],
            None,
        );
        assert_clean_failure(&o, want);
    }
}

/// The page cache size in use is in the start-up line: the one given, or one sized from the
/// machine's memory (an eighth of it, 32 MiB to 1 GiB).
#[tokio::test]
async fn the_page_cache_is_sized_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--cache-mb", "48"]);
    srv.wait_log("cache_mb=48");
    drop(srv);
    let srv = Server::start(dir.path(), &[]);
    srv.wait_log("cache_mb=");
    let log = srv.log();
    let mb: u64 = log
        .split("cache_mb=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cache_mb in {log}"));
    assert!((32..=1024).contains(&mb), "{mb}");
}
