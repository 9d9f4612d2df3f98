//! The first hour with chatd (issue 21): what the page learns before anyone logs in
//! (`/api/server`), look-alike names refused (web and shell), a busy port leaving nothing on
//! disk, a start-up line with URLs a person can open (and no open-file-limit noise), the audit
//! trail of shell commands, and `--tls-self-signed`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::assert_clean_failure;
use crate::support::ws::user;
use crate::support::{chatd, creds, http_on, Server, BIN};

#[tokio::test]
async fn the_page_learns_the_first_run_and_the_registration_mode() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--registration", "closed"]);
    let r = srv.get("/api/server", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let info = r.json();
    assert!(info["version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));
    assert_eq!(info["first_run"], true);
    assert_eq!(info["registration"], "closed");
    assert_eq!(info["https"], false);
    assert_eq!(info["max_message_chars"], 4096);
    // The first account may register even so, and is the admin; then the first run is over.
    let alice = user(&srv, "alice").await;
    let me = srv.call("GET", "/api/me", Some(&alice.cookie), None).await;
    assert_eq!(me.json()["user"]["admin"], true);
    let info = srv.get("/api/server", &[]).await.json();
    assert_eq!(info["first_run"], false);
    let r = srv
        .post_json("/api/register", &creds("bob", "password-1"), &[])
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "registration_closed")
    );
    assert_eq!(
        srv.call("POST", "/api/server", None, None).await.status,
        405
    );
}

#[tokio::test]
async fn look_alike_names_are_refused_on_the_web_and_at_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let srv = Server::start(dir.path(), &[]);
    user(&srv, "alice").await;
    // Cyrillic а, Cyrillic і, digit one, capital I: all look like "alice".
    for fake in ["\u{430}lice", "al\u{456}ce", "a1ice", "aIice"] {
        let r = srv
            .post_json("/api/register", &creds(fake, "password-1"), &[])
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (409, "name_taken"),
            "{fake}"
        );
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains("looks like") && msg.contains("alice"), "{msg}");
    }
    // Different names are fine.
    user(&srv, "alicia").await;
    // At the shell, through the running server.
    let o = chatd(
        &[
            "user",
            "add",
            "\u{430}lic\u{435}",
            "--password-stdin",
            "--data-dir",
            &d,
        ],
        Some("password-1\n"),
    );
    assert_clean_failure(&o, "looks like the existing name \"alice\"");
    let r = srv
        .post_json("/api/login", &creds("\u{430}lic\u{435}", "password-1"), &[])
        .await;
    assert_eq!(r.status, 401, "the look-alike was not created");
}

/// Another program holds the port: chatd says so and creates nothing (before the fix the data
/// directory, the database and 2 MiB of log files were made first).
#[test]
fn a_busy_port_leaves_no_data_directory_behind() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh-data");
    let o = chatd(
        &[
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert_clean_failure(&o, "already in use");
    assert!(!data.exists(), "{} was created", data.display());
    // Into an existing, empty data directory: still nothing in it.
    std::fs::create_dir(&data).unwrap();
    let o = chatd(
        &[
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert_clean_failure(&o, "already in use");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

/// Runs chatd with `args` (through `sh -c "ulimit …; exec"` when `ulimit` is given) until its
/// start-up line, then stops it; returns the log.
fn startup_log(args: &[&str], ulimit: Option<u32>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = match ulimit {
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = cmd
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    // What follows the start-up line right away (the open-file note, if any).
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
    }
    let _ = child.wait();
    log
}

#[test]
fn the_start_up_line_says_which_urls_to_open() {
    let log = startup_log(&["--bind", "0.0.0.0"], None);
    let line = log
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("{log}"));
    // The bound address stays first and parseable, followed by a space.
    let at = line.find("listening on http://0.0.0.0:").expect(line)
        + "listening on http://0.0.0.0:".len();
    let port: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(line[at + port.len()..].starts_with(' '), "{line}");
    assert!(
        line.contains(&format!(
            "open http://localhost:{port} in a browser on this machine"
        )),
        "{line}"
    );
    // Every address other devices can reach is offered (and never 0.0.0.0 as a URL).
    for ip in chatd::netinfo::lan_addresses()
        .iter()
        .filter(|a| a.is_ipv4())
    {
        assert!(
            line.contains(&format!("http://{ip}:{port}")),
            "{ip} missing: {line}"
        );
    }
    assert!(!line.contains("open http://0.0.0.0"), "{line}");
    // Loopback only: localhost, nothing for other devices.
    let log = startup_log(&["--bind", "127.0.0.1"], None);
    assert!(log.contains("in a browser on this machine)"), "{log}");
    assert!(!log.contains("from other devices"), "{log}");
}

#[test]
fn the_open_file_limit_is_mentioned_only_when_it_matters() {
    // The default --max-connections (100,000) does not fit a limit of 512, but nobody asked
    // for it: no line at info level.
    let log = startup_log(&["--bind", "127.0.0.1"], Some(512));
    assert!(log.contains("listening on"), "{log}");
    assert!(!log.contains("open-file limit"), "{log}");
    // Asked for more than the limit allows: a warning that says what to do.
    let log = startup_log(
        &["--bind", "127.0.0.1", "--max-connections", "5000"],
        Some(512),
    );
    let line = log
        .lines()
        .find(|l| l.contains("open-file limit"))
        .unwrap_or_else(|| panic!("no open-file line in:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("--max-connections 5000"),
        "{line}"
    );
    assert!(line.contains("LimitNOFILE"), "{line}");
    // Asked for what fits: quiet.
    let log = startup_log(
        &["--bind", "127.0.0.1", "--max-connections", "100"],
        Some(512),
    );
    assert!(!log.contains("open-file limit"), "{log}");
    // At debug level the note is there for whoever looks.
    let log = startup_log(&["--bind", "127.0.0.1", "--log-level", "debug"], Some(512));
    assert!(
        log.contains("open-file limit allows about 256 connections"),
        "{log}"
    );
}

#[tokio::test]
async fn shell_commands_leave_an_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    // With no server running the command itself logs the line.
    let o = chatd(
        &[
            "user",
            "add",
            "alice",
            "--admin",
            "--password-stdin",
            "--data-dir",
            &d,
        ],
        Some("password-1\n"),
    );
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let me = me.trim();
    assert!(
        err.contains(" audit: ")
            && err.contains(&format!(
                "{me} (shell): created the account: alice (id 1); with admin rights"
            )),
        "{err}"
    );
    // Through a running server, the server's log names the shell user and the target.
    let srv = Server::start(dir.path(), &[]);
    let o = chatd(
        &["user", "add", "bob", "--password-stdin", "--data-dir", &d],
        Some("password-1\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (args, line) in [
        (
            vec!["user", "disable", "bob"],
            "(shell): disabled the account (its sessions and tokens are revoked): bob (id 2)",
        ),
        (
            vec!["user", "enable", "bob"],
            "(shell): enabled the account: bob (id 2)",
        ),
        (
            vec!["token", "create", "bob", "--label", "ci"],
            "(shell): created a bearer token: bob (id 2); label \"ci\"",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["--data-dir", &d]);
        let o = chatd(&a, None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        srv.wait_log(&format!("{me} {line}"));
    }
    srv.wait_log(&format!("{me} (shell): created the account: bob (id 2)"));
    // The token itself is not in the log.
    assert!(
        !srv.log().contains("admin command done"),
        "the old line is gone"
    );
}

fn client_trusting(ca_pem: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn tls_self_signed_makes_and_keeps_a_certificate_authority() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--tls-self-signed"]);
    let tls_dir = dir.path().join("tls");
    let ca_pem = std::fs::read(tls_dir.join("ca.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tls_dir.join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    }
    // The start-up lines: https URLs and the CA's fingerprint, which is the certificate's.
    let log = srv.log();
    assert!(log.contains("listening on https://127.0.0.1:"), "{log}");
    assert!(
        log.contains(&format!("open https://localhost:{}", srv.addr.port())),
        "{log}"
    );
    let der = CertificateDer::from_pem_slice(&ca_pem).unwrap();
    let fp = chatd::selfsigned::fingerprint(der.as_ref());
    assert_eq!(fp.len(), 32 * 3 - 1);
    srv.wait_log(&format!("SHA-256 fingerprint {fp}"));

    // A client that trusts the CA verifies the server as 127.0.0.1 and as localhost.
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(srv.addr).await.unwrap();
        let stream = client_trusting(&ca_pem)
            .connect(ServerName::try_from(name).unwrap().to_owned(), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS as {name}: {e}"));
        let host = format!("{name}:{}", srv.addr.port());
        let r = http_on(stream, &host, "GET", "/api/server", &[], None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["https"], true);
        assert!(r.header("strict-transport-security").is_some());
    }
    // Phones can download the CA from the server itself.
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let stream = client_trusting(&ca_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let r = http_on(stream, "localhost", "GET", "/ca.crt", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-x509-ca-cert"));
    assert_eq!(r.body.as_ref(), der.as_ref());

    // A restart keeps the CA (devices trust it once), with a fresh server certificate.
    srv.terminate();
    let srv = Server::start(dir.path(), &["--tls-self-signed"]);
    assert_eq!(std::fs::read(tls_dir.join("ca.pem")).unwrap(), ca_pem);
    srv.wait_log(&format!("SHA-256 fingerprint {fp}"));
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    client_trusting(&ca_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the kept CA still verifies");
    // A client that does not trust it refuses, and plain http gets nothing.
    let other = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.pem"),
    )
    .unwrap();
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    assert!(client_trusting(&other)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .is_err());
    // --tls-self-signed and --tls-cert exclude each other.
    let o = chatd(
        &[
            "serve",
            "--tls-self-signed",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "b.pem",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}
