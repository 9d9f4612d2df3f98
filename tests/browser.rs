//! End-to-end tests of the web client in headless Chromium: runs `node --test tests/browser/`
//! (JavaScript tests driving Chromium with playwright-core) against the chatd binary cargo just
//! built. Installs the test's npm dependencies from its lockfile (`npm ci`) when they are
//! missing.
//!
//! Needs Chromium (`apt-get install chromium`) and Node.js 20 or newer with npm. Without them
//! the test prints why and passes, so `cargo test` works on a machine without a browser; with
//! `CHATD_REQUIRE_BROWSER=1` (CI) it fails instead. `CHROMIUM_PATH` overrides
//! `/usr/bin/chromium`; `CHATD_SCREENSHOTS=1` also refreshes `docs/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// Major version of the `node` on PATH, or None when there is none.
fn node_major() -> Option<u32> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Why the browser tests cannot run here, if they cannot.
fn missing_tool(chromium: &Path) -> Option<String> {
    if !chromium.exists() {
        return Some(format!(
            "chromium not installed ({} not found; apt-get install chromium)",
            chromium.display()
        ));
    }
    match node_major() {
        None => Some("node not installed (Node.js 20 or newer is needed)".into()),
        Some(v) if v < 20 => Some(format!(
            "node {v} is too old (Node.js 20 or newer is needed)"
        )),
        Some(_) => None,
    }
}

fn show(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn web_client_in_headless_chromium() {
    let required = std::env::var("CHATD_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests").join("browser");
    let chromium = std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));

    if let Some(why) = missing_tool(&chromium) {
        if required {
            panic!("browser tests required (CHATD_REQUIRE_BROWSER=1) but {why}");
        }
        eprintln!("skipped: {why}; set CHATD_REQUIRE_BROWSER=1 to make this a failure");
        return;
    }

    if !dir.join("node_modules").join("playwright-core").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("run npm (is npm installed?)");
        assert!(out.status.success(), "npm ci failed\n{}", show(&out));
    }

    let started = Instant::now();
    let out = Command::new("node")
        .args(["--test", "tests/browser/"])
        .current_dir(root)
        .env("CHATD_BIN", env!("CARGO_BIN_EXE_chatd"))
        .env("CHROMIUM_PATH", &chromium)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser tests failed ({:.0} s)\n{}",
        started.elapsed().as_secs_f64(),
        show(&out)
    );
    // The runner's summary ("# tests 10", "# pass 10", ...) for the log.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("# ") && !l.starts_with("# Subtest"))
    {
        println!("{line}");
    }
    println!(
        "browser tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
