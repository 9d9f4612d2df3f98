//! `cargo build` twice on a fresh clone compiles nothing the second time (issue 21, defect 3).
//!
//! Running cargo itself here would compile chatd once more (minutes on a small machine), so the
//! test runs the build script cargo already compiled for this test run (the real one, from
//! `target/<profile>/build/chatd-*/build-script-build`) in a fresh `git clone` of this
//! repository, and applies cargo's own freshness rule to what it printed: the script reruns, and
//! the crate is rebuilt, when a path named by `cargo:rerun-if-changed` is missing or was
//! modified after the script started. Before the fix the script ran a plain `git status`, which
//! rewrites `.git/index` on a fresh clone while watching that very file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The newest compiled build script of this package.
fn build_script() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/it-… (or target/<triple>/<profile>/deps/…); host build scripts live
    // in target/<profile>/build.
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let mut dirs = vec![profile_dir.join("build")];
    if let (Some(triple_dir), Some(profile)) = (profile_dir.parent(), profile_dir.file_name()) {
        if let Some(target) = triple_dir.parent() {
            dirs.push(target.join(profile).join("build"));
        }
    }
    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let script = e.path().join("build-script-build");
            if name.starts_with("chatd-") && script.is_file() {
                let t = std::fs::metadata(&script).and_then(|m| m.modified());
                found.push((t.expect("mtime"), script));
            }
        }
    }
    found.sort();
    found
        .pop()
        .expect("no compiled build script of chatd found")
        .1
}

/// The newest modification time under `path` (a file, or a directory scanned whole, as cargo
/// does); `None` if it does not exist.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path).ok()?.flatten() {
            if let Some(t) = newest_mtime(&e.path()) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

#[test]
fn the_build_script_leaves_a_fresh_clone_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inside = Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(root)
        .output();
    if !inside.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: {} is not a git checkout", root.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    let st = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(root)
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(st.success(), "git clone failed");
    let index = clone.join(".git").join("index");
    let index_before = (
        std::fs::read(&index).expect("index"),
        newest_mtime(&index).expect("index mtime"),
    );

    // cargo writes `invoked.timestamp` just before running the script and compares against its
    // modification time.
    let stamp = tmp.path().join("invoked.timestamp");
    std::fs::write(&stamp, b"").unwrap();
    let started = newest_mtime(&stamp).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = Command::new(build_script())
        .current_dir(&clone)
        .env("OUT_DIR", &out_dir)
        .env("CARGO_MANIFEST_DIR", &clone)
        .output()
        .expect("run the build script");
    assert!(
        out.status.success(),
        "build script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let watched: Vec<PathBuf> = stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("cargo:rerun-if-changed=")
                .or_else(|| l.strip_prefix("cargo::rerun-if-changed="))
        })
        .map(|p| clone.join(p))
        .collect();
    assert!(
        watched.iter().any(|p| p.ends_with(".git/HEAD")),
        "the commit stamp follows HEAD: {stdout}"
    );
    assert!(watched.iter().any(|p| p.ends_with("assets")), "{stdout}");
    for p in &watched {
        let t = newest_mtime(p).unwrap_or_else(|| {
            panic!(
                "{} is watched but missing: cargo would rebuild every time",
                p.display()
            )
        });
        assert!(
            t <= started,
            "{} changed while the build script ran: the next cargo build would compile everything again",
            p.display()
        );
    }
    assert_eq!(
        (
            std::fs::read(&index).unwrap(),
            newest_mtime(&index).unwrap()
        ),
        index_before,
        ".git/index was rewritten"
    );
    // The stamp names the clone's commit.
    assert!(
        stdout.contains("cargo:rustc-env=CHATD_GIT_COMMIT=") && !stdout.contains("=unknown"),
        "{stdout}"
    );
}
