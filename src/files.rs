//! Uploaded files on disk: `<data-dir>/files/<sha256 hex>`, content-addressed, so the same
//! bytes uploaded twice are stored once; plus what the server decides about a file from its
//! first bytes (its type, an image's size) and from its name (sanitized for display only).
//!
//! An upload's body is written as it arrives (`Upload`): chunks go through a small bounded
//! channel to a blocking-pool thread that writes them to `files/tmp/<random>` and hashes them
//! (SHA-256, `ring`), so neither the disk nor the hash runs on an async worker and memory per
//! upload is a few chunks. When the body is complete the file is fsync'd, renamed to its hash
//! and the directory fsync'd; only then is the metadata committed (`store::files`) and the
//! upload answered. A body that ends early, an I/O error or a dropped `Upload` removes the
//! temporary file; temporary files left by a crash are removed at start. Nothing but the
//! upload path and the GC (`collect`) writes here; the HTTP routes (`http::files`) call this
//! and the store, and never name a path themselves.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use crate::config::Limits;

/// The directory under the data directory.
pub const FILES_DIR: &str = "files";
const TMP_DIR: &str = "tmp";
/// Chunks of an upload waiting for the disk thread (each at most what one socket read gave).
const CHUNKS_AHEAD: usize = 2;
/// How much of a file's start is read to decide its type and an image's size.
const SNIFF_BYTES: usize = 64 * 1024;

/// The file store on disk.
pub struct Blobs {
    dir: PathBuf,
    /// Bytes of all blobs on disk (for `--files-quota-mb`).
    used: AtomicU64,
    /// Bytes announced by uploads in progress (counted against the quota until they end).
    reserved: AtomicU64,
    /// One permit per upload in progress (`Limits::concurrent_uploads`).
    pub uploads: Arc<Semaphore>,
    /// Held while a blob is placed and its record committed, and while the GC checks and
    /// deletes blobs: a blob is never deleted between an upload finding it and recording it.
    pub placing: tokio::sync::Mutex<()>,
}

impl Blobs {
    /// Opens (creates) `<data_dir>/files`, removes temporary files a crash left, and adds up
    /// the stored bytes. Blocking: runs once at start.
    pub fn open(data_dir: &Path, limits: &Limits) -> std::io::Result<Blobs> {
        let dir = data_dir.join(FILES_DIR);
        std::fs::create_dir_all(dir.join(TMP_DIR))?;
        for e in std::fs::read_dir(dir.join(TMP_DIR))? {
            let e = e?;
            // A partial upload of a crashed server: never acknowledged.
            let _ = std::fs::remove_file(e.path());
        }
        let mut used = 0;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_file() {
                used += m.len();
            }
        }
        Ok(Blobs {
            dir,
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(0),
            uploads: Arc::new(Semaphore::new(limits.concurrent_uploads)),
            placing: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the blob with this content hash (64 hex characters) lives.
    pub fn path_of(&self, sha_hex: &str) -> PathBuf {
        self.dir.join(sha_hex)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reserves `len` bytes against `quota` for an upload; false when they do not fit.
    pub fn reserve(&self, len: u64, quota: Option<u64>) -> bool {
        let Some(quota) = quota else {
            self.reserved.fetch_add(len, Ordering::Relaxed);
            return true;
        };
        let mut cur = self.reserved.load(Ordering::Relaxed);
        loop {
            let total = self.used.load(Ordering::Relaxed) + cur + len;
            if total > quota {
                return false;
            }
            match self.reserved.compare_exchange(
                cur,
                cur + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    pub fn release(&self, len: u64) {
        self.reserved.fetch_sub(len, Ordering::Relaxed);
    }

    /// Starts an upload: a temporary file and the thread that writes it.
    pub fn begin(self: &Arc<Self>) -> std::io::Result<Upload> {
        let mut rnd = [0u8; 16];
        getrandom::fill(&mut rnd).map_err(|e| std::io::Error::other(e.to_string()))?;
        let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = self.dir.join(TMP_DIR).join(name);
        let file = File::options().write(true).create_new(true).open(&tmp)?;
        let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_AHEAD);
        let path = tmp.clone();
        let task = tokio::task::spawn_blocking(move || write_all(file, &path, rx));
        Ok(Upload {
            tx: Some(tx),
            task: Some(task),
            tmp,
            blobs: self.clone(),
        })
    }
}

/// The blocking side of an upload: writes and hashes each chunk as it arrives; on the end of
/// the channel fsyncs. Returns the hash and length.
fn write_all(
    mut file: File,
    path: &Path,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<([u8; 32], u64)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        ctx.update(&chunk);
        if let Err(e) = file.write_all(&chunk) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        len += chunk.len() as u64;
    }
    if let Err(e) = file.sync_all() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ctx.finish().as_ref());
    Ok((sha, len))
}

/// What the disk thread wrote: the SHA-256 and the length.
type Written = ([u8; 32], u64);

/// An upload in progress. Dropped before `finish`, it removes its temporary file.
pub struct Upload {
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<Written>>>,
    tmp: PathBuf,
    blobs: Arc<Blobs>,
}

/// A finished upload, placed under its hash.
#[derive(Debug)]
pub struct Stored {
    pub sha256: [u8; 32],
    pub size: u64,
    pub mime: &'static str,
    pub dims: Option<(u32, u32)>,
}

impl Upload {
    /// Hands one chunk to the disk thread (waits while it is behind). Err: the disk failed
    /// (the error comes from `finish`).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Ends the body: waits for the fsync, renames the file to its hash (or drops it when that
    /// blob exists), fsyncs the directory and sniffs the type. The caller holds
    /// `Blobs::placing` until the record is committed.
    pub async fn finish(mut self) -> std::io::Result<Stored> {
        self.tx = None;
        let task = self.task.take();
        let res = match task {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Err(std::io::Error::other("upload already finished")),
        };
        let (sha, size) = res?;
        let tmp = std::mem::take(&mut self.tmp);
        let blobs = self.blobs.clone();
        let placed = tokio::task::spawn_blocking(move || place(&blobs, &tmp, sha, size))
            .await
            .map_err(std::io::Error::other)?;
        placed
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.tmp.as_os_str().is_empty() {
            return;
        }
        // Not finished: the client went away or the body was refused. Stop the writer first
        // (it ends when the channel closes), then remove the file off the async threads.
        self.tx = None;
        let tmp = std::mem::take(&mut self.tmp);
        let task = self.task.take();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(t) = task {
                    let _ = t.await;
                }
                let _ = tokio::fs::remove_file(&tmp).await;
            });
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn place(blobs: &Blobs, tmp: &Path, sha: [u8; 32], size: u64) -> std::io::Result<Stored> {
    let (mime, dims) = {
        let mut head = Vec::with_capacity(SNIFF_BYTES.min(size as usize));
        File::open(tmp)?
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut head)?;
        sniff(&head)
    };
    let dest = blobs.path_of(&hex(&sha));
    if dest.exists() {
        // The same bytes are stored already.
        std::fs::remove_file(tmp)?;
    } else {
        if let Err(e) = std::fs::rename(tmp, &dest) {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        File::open(&blobs.dir)?.sync_all()?;
        blobs.used.fetch_add(size, Ordering::Relaxed);
    }
    Ok(Stored {
        sha256: sha,
        size,
        mime,
        dims,
    })
}

/// Removes the blob with this hash (the GC, after its last record went). Blocking.
pub fn remove_blob(blobs: &Blobs, sha_hex: &str) -> std::io::Result<()> {
    let p = blobs.path_of(sha_hex);
    let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    std::fs::remove_file(&p)?;
    blobs.used.fetch_sub(len, Ordering::Relaxed);
    Ok(())
}

/// Types served inline (images the browser shows); everything else is an attachment.
pub fn inline_type(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// The type of a file from its first bytes (never the client's claim), and an image's size
/// when its header says it.
pub fn sniff(b: &[u8]) -> (&'static str, Option<(u32, u32)>) {
    let u16be = |i: usize| {
        b.get(i..i + 2)
            .map(|s| u32::from(u16::from_be_bytes([s[0], s[1]])))
    };
    let u16le = |i: usize| {
        b.get(i..i + 2)
            .map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])))
    };
    let u32be = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u24le = |i: usize| {
        b.get(i..i + 3)
            .map(|s| u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
    };
    let both = |w: Option<u32>, h: Option<u32>| w.zip(h).filter(|(w, h)| *w > 0 && *h > 0);
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return ("image/png", both(u32be(16), u32be(20)));
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return ("image/gif", both(u16le(6), u16le(8)));
    }
    if b.len() >= 16 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        let dims = match &b[12..16] {
            b"VP8 " => both(u16le(26).map(|v| v & 0x3fff), u16le(28).map(|v| v & 0x3fff)),
            b"VP8L" => b.get(21..25).and_then(|s| {
                let w = 1 + (u32::from(s[0]) | (u32::from(s[1]) & 0x3f) << 8);
                let h = 1
                    + (u32::from(s[1]) >> 6 | u32::from(s[2]) << 2 | (u32::from(s[3]) & 0xf) << 10);
                both(Some(w), Some(h))
            }),
            b"VP8X" => both(u24le(24).map(|v| v + 1), u24le(27).map(|v| v + 1)),
            _ => None,
        };
        return ("image/webp", dims);
    }
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        // Walk the markers to the frame header (SOFn) for the size.
        let mut i = 2;
        let mut dims = None;
        while i + 4 <= b.len() && b[i] == 0xff {
            let m = b[i + 1];
            if m == 0xff {
                i += 1;
                continue;
            }
            let Some(len) = u16be(i + 2) else { break };
            if matches!(m, 0xc0..=0xcf) && !matches!(m, 0xc4 | 0xc8 | 0xcc) {
                dims = both(u16be(i + 7), u16be(i + 5));
                break;
            }
            i += 2 + len as usize;
        }
        return ("image/jpeg", dims);
    }
    if b.starts_with(b"%PDF-") {
        return ("application/pdf", None);
    }
    if b.starts_with(b"PK\x03\x04") {
        return ("application/zip", None);
    }
    ("application/octet-stream", None)
}

/// Longest stored file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// A file name as stored and shown: no path separators (`/` and `\` become `_`), no control
/// characters (NUL included), no bidirectional overrides or marks (a name must read as it is),
/// no leading dots, trimmed, at most `MAX_NAME_BYTES`; "file" when nothing is left. Never used
/// as a path: blobs are named by their hash.
pub fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(
                    c,
                    '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}'
                        | '\u{2066}'..='\u{2069}' | '\u{feff}'
                )
        })
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    s = s.trim().trim_start_matches('.').trim().to_string();
    if s.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    if s.is_empty() {
        "file".to_string()
    } else {
        s
    }
}

/// Checks the `attachments` of a `send` frame: ids in the documented form, none twice.
pub fn check_ids(ids: &[String]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        let Some(n) = crate::model::parse_file_id(id) else {
            return Err(format!("attachments: {id:?} is not a file id"));
        };
        if !seen.insert(n) {
            return Err("attachments: a file id is given twice".to_string());
        }
    }
    Ok(())
}

/// The file ids of a `send` frame (already `check_ids`'d), at most `max_attachments`.
pub fn send_ids(ids: &[String], limits: &Limits) -> Result<Vec<u128>, String> {
    if ids.len() > limits.max_attachments {
        return Err(format!(
            "attachments: at most {} files per message",
            limits.max_attachments
        ));
    }
    check_ids(ids)?;
    Ok(ids
        .iter()
        .filter_map(|s| crate::model::parse_file_id(s))
        .collect())
}

/// A new random file id (128 bits).
pub fn new_id() -> std::io::Result<u128> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u128::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize_name("a\\b\0c\u{1}d"), "a_bcd");
        assert_eq!(sanitize_name("evil\u{202e}gpj.exe"), "evilgpj.exe");
        assert_eq!(sanitize_name("\n\t"), "file");
        assert_eq!(sanitize_name("照片.png"), "照片.png");
        assert!(sanitize_name(&"é".repeat(300)).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn types_come_from_the_bytes() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(sniff(&png), ("image/png", Some((100_000, 7))));
        assert_eq!(
            sniff(b"GIF89a\x02\x00\x03\x00"),
            ("image/gif", Some((2, 3)))
        );
        assert_eq!(sniff(b"<svg xmlns=...>").0, "application/octet-stream");
        assert_eq!(sniff(b"<html>").0, "application/octet-stream");
        let jpeg = [
            0xff, 0xd8, 0xff, 0xe0, 0, 4, 0, 0, 0xff, 0xc0, 0, 11, 8, 0, 20, 0, 30, 3,
        ];
        assert_eq!(sniff(&jpeg), ("image/jpeg", Some((30, 20))));
        assert_eq!(sniff(&[]).0, "application/octet-stream");
    }
}
