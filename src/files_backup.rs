//! The uploaded files in backups: `chatd backup --out FILE` writes the database to `FILE` and
//! every file its snapshot names to the directory `FILE.files/` beside it (`<sha256 hex>`, and
//! thumbnails under `thumbs/`); `chatd restore FILE` copies them back into `<data>/files/`
//! before it puts the database in place.
//!
//! Consistency: the snapshot is taken first (one read transaction), then the files it names
//! are copied. A file named by a committed record is always on disk (its bytes are placed
//! before the record commits), and nothing removes one while a backup copies (the running
//! server holds `files::Blobs::keep` until the backup client closes its control connection),
//! so every file the backed-up database names is in the backup. Each copy is checked against
//! its content hash, fsync'd, and the directory appears under its final name only complete
//! (`FILE.files.partial` renamed). Blocking std I/O: these run in the CLI process.
//! Calls nothing but the file system; `admin` calls this.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::files::{FILES_DIR, THUMBS_DIR};

/// The directory beside the backup `file` that holds its files.
pub fn files_dir_of(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".files");
    file.with_file_name(name)
}

fn hex(sha: &[u8; 32]) -> String {
    sha.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `from` to the new file `to` (fsync'd) and returns the SHA-256 of what was copied.
fn copy_hashing(from: &Path, to: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut src = File::open(from)?;
    let mut dst = File::options().write(true).create_new(true).open(to)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        len += n as u64;
    }
    dst.sync_all()?;
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ctx.finish().as_ref());
    Ok((sha, len))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a copy moved.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// Writes the files named by `hashes` from `<data_dir>/files` into the new directory `dest`
/// (thumbnails too, when there are any), each checked against its hash and fsync'd. Removes
/// `dest` on failure.
pub fn copy_out(data_dir: &Path, hashes: &[[u8; 32]], dest: &Path) -> Result<Copied, String> {
    let res = copy_out_inner(data_dir, hashes, dest);
    if res.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    res
}

fn copy_out_inner(data_dir: &Path, hashes: &[[u8; 32]], dest: &Path) -> Result<Copied, String> {
    let src = data_dir.join(FILES_DIR);
    let thumbs = dest.join(THUMBS_DIR);
    std::fs::create_dir(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    std::fs::create_dir(&thumbs).map_err(|e| format!("cannot create {}: {e}", thumbs.display()))?;
    let mut done = Copied::default();
    for sha in hashes {
        let name = hex(sha);
        let from = src.join(&name);
        let (got, len) = copy_hashing(&from, &dest.join(&name))
            .map_err(|e| format!("cannot copy the uploaded file {}: {e}", from.display()))?;
        if got != *sha {
            return Err(format!(
                "the uploaded file {} is damaged (its content no longer matches its name); `chatd check` tells more",
                from.display()
            ));
        }
        done.files += 1;
        done.bytes += len;
        let thumb = src.join(THUMBS_DIR).join(&name);
        if thumb.exists() {
            copy_hashing(&thumb, &thumbs.join(&name))
                .map_err(|e| format!("cannot copy the thumbnail {}: {e}", thumb.display()))?;
        }
    }
    let io = |e: std::io::Error| format!("cannot write {}: {e}", dest.display());
    sync_dir(&thumbs).map_err(io)?;
    sync_dir(dest).map_err(io)?;
    Ok(done)
}

/// Puts the files named by `hashes` from the backup's directory `from` into
/// `<data_dir>/files` (those already there are kept as they are: same name, same bytes),
/// each through a temporary file, checked against its hash, fsync'd and renamed. Fails, before
/// anything else is changed, when the backup lacks a file the database names.
pub fn copy_in(from: &Path, data_dir: &Path, hashes: &[[u8; 32]]) -> Result<Copied, String> {
    let dir = data_dir.join(FILES_DIR);
    let tmp = dir.join("tmp");
    let thumbs = dir.join(THUMBS_DIR);
    let missing: Vec<String> = hashes
        .iter()
        .map(hex)
        .filter(|n| !dir.join(n).exists() && !from.join(n).exists())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the backup's database names {} uploaded files that are neither in {} nor in {} (the first: {}); restore the backup together with its .files directory",
            missing.len(),
            from.display(),
            dir.display(),
            missing[0]
        ));
    }
    for d in [&dir, &tmp, &thumbs] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut done = Copied::default();
    for (i, sha) in hashes.iter().enumerate() {
        let name = hex(sha);
        let dest = dir.join(&name);
        if !dest.exists() {
            let part = tmp.join(format!("restore-{}-{i}", std::process::id()));
            let _ = std::fs::remove_file(&part);
            let copied = copy_hashing(&from.join(&name), &part);
            let (got, len) = match copied {
                Ok(x) => x,
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(format!("cannot copy {}: {e}", from.join(&name).display()));
                }
            };
            if got != *sha {
                let _ = std::fs::remove_file(&part);
                return Err(format!(
                    "{} in the backup is damaged (its content does not match its name)",
                    from.join(&name).display()
                ));
            }
            std::fs::rename(&part, &dest)
                .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
            done.files += 1;
            done.bytes += len;
        }
        let thumb = thumbs.join(&name);
        let saved = from.join(THUMBS_DIR).join(&name);
        if !thumb.exists() && saved.exists() {
            let part = tmp.join(format!("restore-{}-{i}.thumb", std::process::id()));
            let _ = std::fs::remove_file(&part);
            copy_hashing(&saved, &part)
                .and_then(|_| std::fs::rename(&part, &thumb))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&part);
                    format!("cannot copy {}: {e}", saved.display())
                })?;
        }
    }
    let io = |e: std::io::Error| format!("cannot write {}: {e}", dir.display());
    sync_dir(&thumbs).map_err(io)?;
    sync_dir(&dir).map_err(io)?;
    Ok(done)
}
