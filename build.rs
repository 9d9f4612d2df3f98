//! Build script. Two jobs:
//!
//! 1. Stamps the binary with the git commit it was built from (shown by `chatd --version`,
//!    `/healthz` and the web page). git runs without optional locks (`--no-optional-locks`,
//!    `GIT_OPTIONAL_LOCKS=0`): a plain `git status` refreshes and rewrites `.git/index` on a fresh
//!    clone, and since the script reruns when the index changes, the first build used to
//!    invalidate itself (the second `cargo build` compiled everything again). The files it
//!    watches are found through git (`--git-dir`, `--git-common-dir`), so a worktree, whose
//!    `.git` is a file, is watched too instead of "missing, always rebuild".
//! 2. Prepares the web client in `assets/` for embedding (`OUT_DIR/assets*`, embedded by
//!    `http::assets`): every text file is also compressed with gzip and brotli (best settings,
//!    pure-Rust compressors, so nothing is compressed at run time); in HTML files, `src`/`href`
//!    references to embedded files get `?v=<content hash>` so the browser may cache them for a
//!    year, and an import map is added that maps every JavaScript module to its hashed URL, so
//!    modules importing each other by relative path (`import … from './x.js'`) load hashed URLs
//!    too without any change to the JavaScript. The import map is inline; its SHA-256 goes into
//!    the Content-Security-Policy (`OUT_DIR/csp-script-hashes.txt`), so the policy stays strict
//!    (no 'unsafe-inline').

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    stamp_git_commit();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = prepare_assets(Path::new("assets"), &out) {
        panic!("cannot prepare the web client assets: {e}");
    }
    println!("cargo:rerun-if-changed=assets");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Runs git without taking optional locks (so it never rewrites `.git/index`); `None` when git
/// is missing, this is not a checkout, or the command fails.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
}

fn stamp_git_commit() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    let stamp = if dirty && commit != "unknown" {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=CHATD_GIT_COMMIT={stamp}");
    // Rerun when HEAD moves (checkout, commit) or the index changes (add, commit). Only files
    // that exist are named: cargo takes a missing one as changed on every build.
    let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--absolute-git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return;
    };
    let git_dir = PathBuf::from(git_dir);
    let common = {
        let p = PathBuf::from(common);
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        }
    };
    let mut watch = vec![git_dir.join("HEAD"), git_dir.join("index")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(common.join(branch));
    }
    watch.push(common.join("packed-refs"));
    for p in watch.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

/// Files worth compressing (by extension).
fn compressible(name: &str) -> bool {
    matches!(
        name.rsplit('.').next().unwrap_or(""),
        "html" | "js" | "mjs" | "css" | "svg" | "json" | "txt" | "webmanifest" | "xml"
    )
}

/// The content hash put into URLs: the first 16 hex digits of the SHA-256 of the file as
/// served. `http::assets` computes the same from the embedded file.
fn url_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if e.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            // Editor leftovers and dot files are not part of the client.
            let base = rel.rsplit('/').next().unwrap_or(&rel);
            if !base.starts_with('.') && !base.ends_with('~') {
                out.push(rel);
            }
        }
    }
    Ok(())
}

fn prepare_assets(src: &Path, out: &Path) -> std::io::Result<()> {
    let mut names = Vec::new();
    list_files(src, src, &mut names)?;
    let dirs = ["assets", "assets-gz", "assets-br"].map(|d| out.join(d));
    for d in &dirs {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    // Every file's bytes; HTML is rewritten below, once the hashes of the rest are known.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for name in &names {
        files.insert(name.clone(), std::fs::read(src.join(name))?);
    }
    let hashes: BTreeMap<String, String> = files
        .iter()
        .filter(|(n, _)| !n.ends_with(".html"))
        .map(|(n, b)| (n.clone(), url_hash(b)))
        .collect();
    let mut script_hashes = Vec::new();
    for (name, bytes) in files.iter_mut() {
        if name.ends_with(".html") {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let (html, inline) = rewrite_html(name, text, &hashes);
                *bytes = html.into_bytes();
                script_hashes.extend(inline);
            }
        }
    }
    for (name, bytes) in &files {
        write_file(&dirs[0].join(name), bytes)?;
        if compressible(name) {
            let gz = gzip(bytes)?;
            if gz.len() < bytes.len() {
                write_file(&dirs[1].join(name), &gz)?;
            }
            let br = brotli(bytes)?;
            if br.len() < bytes.len() {
                write_file(&dirs[2].join(name), &br)?;
            }
        }
    }
    script_hashes.sort();
    script_hashes.dedup();
    std::fs::write(out.join("csp-script-hashes.txt"), script_hashes.join(" "))?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes)
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

fn brotli(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin: 22,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &bytes[..], &mut out, &params)?;
    Ok(out)
}

/// The embedded file a reference in the HTML file `html_name` points at, if it is a local one:
/// `/x/y.js` or `x/y.js` (relative to the HTML file), without query or fragment.
fn local_target(html_name: &str, value: &str) -> Option<String> {
    if value.starts_with("//") || value.starts_with('#') || value.contains(':') {
        return None;
    }
    let path = value.split(['?', '#']).next()?;
    if path.is_empty() {
        return None;
    }
    Some(match path.strip_prefix('/') {
        Some(abs) => abs.to_string(),
        None => match html_name.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{path}"),
            None => path.to_string(),
        },
    })
}

/// Adds `?v=<hash>` to `src="…"` and `href="…"` values naming embedded files, and, if the page
/// loads module scripts, an import map sending every module to its hashed URL (placed before
/// the first script). Returns the HTML and the CSP sources of the inline scripts it added.
fn rewrite_html(
    name: &str,
    html: &str,
    hashes: &BTreeMap<String, String>,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(html.len() + 1024);
    let mut rest = html;
    while let Some(i) = find_attr(rest) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        // tail starts with `src="` or `href="`.
        let eq = tail.find('"').map_or(tail.len(), |q| q + 1);
        out.push_str(&tail[..eq]);
        let after = &tail[eq..];
        let end = after.find('"').unwrap_or(after.len());
        let value = &after[..end];
        out.push_str(value);
        let hash = local_target(name, value).and_then(|t| hashes.get(&t));
        if let (Some(h), false) = (hash, value.contains('?')) {
            let _ = write!(out, "?v={h}");
        }
        rest = &after[end..];
    }
    out.push_str(rest);

    let mut inline = Vec::new();
    if out.contains("type=\"module\"") {
        let mut imports = BTreeMap::new();
        for (file, h) in hashes {
            if file.ends_with(".js") || file.ends_with(".mjs") {
                imports.insert(format!("/{file}"), format!("/{file}?v={h}"));
            }
        }
        let mut map = String::from("{\"imports\":{");
        for (i, (k, v)) in imports.iter().enumerate() {
            if i > 0 {
                map.push(',');
            }
            let _ = write!(map, "\"{k}\":\"{v}\"");
        }
        map.push_str("}}");
        if let Some(at) = out.find("<script") {
            out.insert_str(
                at,
                &format!("<script type=\"importmap\">{map}</script>\n  "),
            );
            let digest = Sha256::digest(map.as_bytes());
            inline.push(format!("'sha256-{}'", base64(&digest)));
        }
    }
    (out, inline)
}

/// Where the next ` src="` or ` href="` attribute starts (at the attribute name).
fn find_attr(s: &str) -> Option<usize> {
    let a = s.find(" src=\"").map(|i| i + 1);
    let b = s.find(" href=\"").map(|i| i + 1);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Standard base64 with padding (for CSP hash sources).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}
