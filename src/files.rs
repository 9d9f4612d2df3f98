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
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use crate::config::Limits;

/// The directory under the data directory.
pub const FILES_DIR: &str = "files";
const TMP_DIR: &str = "tmp";
/// Thumbnails, by the content hash of their image (`crate::thumbs`).
pub const THUMBS_DIR: &str = "thumbs";
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
    /// Held (shared) by a backup while it copies blobs, and (exclusively) by the sweep while
    /// it deletes: a backup never misses a blob its snapshot names.
    pub keep: Arc<tokio::sync::RwLock<()>>,
    /// Images decoded for a thumbnail at once (each may take `thumbs::MAX_PIXELS` × 4 bytes).
    decoding: Arc<Semaphore>,
}

impl Blobs {
    /// Opens (creates) `<data_dir>/files`, removes temporary files a crash left, and adds up
    /// the stored bytes. Blocking: runs once at start.
    pub fn open(data_dir: &Path, limits: &Limits) -> std::io::Result<Blobs> {
        let dir = data_dir.join(FILES_DIR);
        std::fs::create_dir_all(dir.join(TMP_DIR))?;
        std::fs::create_dir_all(dir.join(THUMBS_DIR))?;
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
            decoding: Arc::new(Semaphore::new(1)),
            keep: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// Where the blob with this content hash (64 hex characters) lives.
    pub fn path_of(&self, sha_hex: &str) -> PathBuf {
        self.dir.join(sha_hex)
    }

    /// Where the thumbnail of the image with this content hash lives (if it has one).
    pub fn thumb_path(&self, sha_hex: &str) -> PathBuf {
        self.dir.join(THUMBS_DIR).join(sha_hex)
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
    /// An image's width and height as shown (EXIF orientation applied).
    pub dims: Option<(u32, u32)>,
    /// A thumbnail is stored (`Blobs::thumb_path`).
    pub thumb: bool,
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

    /// Gives up on a body that did not arrive whole: the disk thread's error if it failed
    /// (the temporary file is removed either way).
    pub async fn abort(mut self) -> Option<std::io::Error> {
        self.tx = None;
        match self.task.take() {
            Some(t) => match t.await {
                Ok(Err(e)) => Some(e),
                _ => None,
            },
            None => None,
        }
    }

    /// Ends the body: waits for the fsync, sniffs the type and makes an image's thumbnail
    /// (`crate::thumbs`, on the blocking pool, one image at a time), then takes `placing`
    /// (held by the caller until the record is committed), renames the file to its hash (or
    /// drops it when that blob exists) and fsyncs the directory.
    pub async fn finish(
        mut self,
        placing: &tokio::sync::Mutex<()>,
    ) -> std::io::Result<(Stored, tokio::sync::MutexGuard<'_, ()>)> {
        self.tx = None;
        let task = self.task.take();
        let res = match task {
            Some(t) => t.await.map_err(std::io::Error::other)?,
            None => Err(std::io::Error::other("upload already finished")),
        };
        let (sha, size) = match res {
            Ok(w) => w,
            Err(e) => {
                // The writer removed its file.
                self.tmp = PathBuf::new();
                return Err(e);
            }
        };
        let blobs = self.blobs.clone();
        let tmp = self.tmp.clone();
        let head = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut head = Vec::with_capacity(SNIFF_BYTES.min(size as usize));
            File::open(&tmp)?
                .take(SNIFF_BYTES as u64)
                .read_to_end(&mut head)?;
            Ok(sniff(&head))
        })
        .await
        .map_err(std::io::Error::other)??;
        let (mime, sniffed) = head;
        let looked = if crate::thumbs::can_decode(mime) {
            let _slot = blobs
                .decoding
                .clone()
                .acquire_owned()
                .await
                .map_err(std::io::Error::other)?;
            let tmp = self.tmp.clone();
            let dest = blobs.thumb_path(&hex(&sha));
            let tmp_dir = blobs.dir.join(TMP_DIR);
            tokio::task::spawn_blocking(move || crate::thumbs::look(&tmp, mime, &dest, &tmp_dir))
                .await
                .map_err(std::io::Error::other)??
        } else {
            crate::thumbs::Looked::default()
        };
        let guard = placing.lock().await;
        let tmp = std::mem::take(&mut self.tmp);
        let placed = tokio::task::spawn_blocking(move || place(&blobs, &tmp, sha, size))
            .await
            .map_err(std::io::Error::other)?;
        placed?;
        Ok((
            Stored {
                sha256: sha,
                size,
                mime,
                dims: looked.dims.or(sniffed),
                thumb: looked.thumb,
            },
            guard,
        ))
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

fn place(blobs: &Blobs, tmp: &Path, sha: [u8; 32], size: u64) -> std::io::Result<()> {
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
    Ok(())
}

/// Removes the blob with this hash and its thumbnail (the GC, after its last record went).
/// Blocking.
pub fn remove_blob(blobs: &Blobs, sha_hex: &str) -> std::io::Result<()> {
    match std::fs::remove_file(blobs.thumb_path(sha_hex)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let p = blobs.path_of(sha_hex);
    let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    }
    blobs.used.fetch_sub(len, Ordering::Relaxed);
    Ok(())
}

/// Most records the sweep removes in one transaction.
const SWEEP_BATCH: usize = 1000;

/// How often the sweep runs: a quarter of the age limit, between a second and an hour.
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Runs `sweep` every `sweep_interval` until the task is aborted.
pub async fn sweep_periodically(app: Arc<crate::app::App>) {
    let ttl = app.config.limits.unattached_file_ttl;
    let mut tick = tokio::time::interval(sweep_interval(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} uploads never attached to a message"),
            Err(e) => tracing::warn!("the sweep of unattached uploads failed: {e}"),
        }
    }
}

/// Removes uploads never attached to a message and older than
/// `Limits::unattached_file_ttl`: first their records (durably), then the bytes of every
/// blob no record names any more (a blob shared with another upload stays), with its
/// thumbnail. A crash between the two leaves a blob without a record, which the next sweep
/// removes (never a record without its blob). Runs under `Blobs::placing` (no upload is
/// between placing its blob and committing its record) and `Blobs::keep` (no backup is
/// copying). Returns how many uploads went.
pub async fn sweep(app: &Arc<crate::app::App>) -> std::io::Result<usize> {
    let ttl = app.config.limits.unattached_file_ttl;
    let before = crate::model::now_ms().saturating_sub(ttl.as_millis() as u64);
    // `keep` first: waiting for a backup must not hold up uploads.
    let _keep = app.files.keep.write().await;
    let _placing = app.files.placing.lock().await;
    let swept = app
        .db(move |s| s.remove_unattached_files(before, SWEEP_BATCH))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let n = swept.removed.len();
    let blobs = app.files.clone();
    tokio::task::spawn_blocking(move || remove_unnamed(&blobs, &swept.in_use))
        .await
        .map_err(std::io::Error::other)??;
    Ok(n)
}

/// Removes every blob (and thumbnail) whose hash is not in `in_use`. Blocking; the caller
/// holds `placing`.
fn remove_unnamed(
    blobs: &Blobs,
    in_use: &std::collections::HashSet<[u8; 32]>,
) -> std::io::Result<()> {
    let named = |name: &str| -> Option<bool> {
        if name.len() != 64 {
            return None;
        }
        let mut sha = [0u8; 32];
        for (i, b) in sha.iter_mut().enumerate() {
            *b = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(in_use.contains(&sha))
    };
    for e in std::fs::read_dir(&blobs.dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if named(name) == Some(false) && e.file_type()?.is_file() {
            remove_blob(blobs, name)?;
        }
    }
    for e in std::fs::read_dir(blobs.dir.join(THUMBS_DIR))? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        // A thumbnail is written just before its blob is placed: only an old one without a
        // blob is left over (from a crash).
        let old = e
            .metadata()?
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if named(name) == Some(false) && old {
            std::fs::remove_file(e.path())?;
        }
    }
    File::open(&blobs.dir)?.sync_all()?;
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
