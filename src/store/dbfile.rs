//! The redb file backend: redb's own `FileBackend`, except that a checkpoint's page writes and
//! its `fdatasync` can be taken off the message writer's thread.
//!
//! Why: a checkpoint (the durable redb commit that lets the write-ahead log be emptied) writes
//! every page changed since the previous one and then waits for `fdatasync`. The wait was most
//! of the checkpoint's 60–150 ms; once it was deferred, the thousands of scattered 4 KiB
//! `pwrite`s (one per changed page, 15–20 ms with 2,000 active conversations) were what held the
//! writer. Here the store asks for the next commit's syncs to be deferred (`defer_next_syncs`:
//! two, since durable commits are two-phase for redb's quick repair); until that commit's last
//! `sync_data`, its writes are only copied into memory (`held`, a memcpy per page instead of a
//! syscall), in one segment per sync, redb's commit returns, and the checkpoint thread's
//! `sync_deferred` later writes each segment to the file in offset order and calls `fdatasync`
//! after it (the order the commit's own syncs stood for: pages and new slot, then the header
//! that makes it the primary). Reads see held bytes over the file's, so redb reads what it
//! wrote.
//!
//! Safety: until that sync has completed, the file is in the state of a commit interrupted
//! before its fsync (any subset of its writes on disk, here possibly none), which redb recovers
//! from on its own (the new header's checksums fail and it uses the previous commit, whose pages
//! the new commit did not overwrite). What could break that is a later write over the previous
//! commit's pages, or a shrink of the file, before the sync: so every `write` (but the deferred
//! commit's own), `set_len` and undeferred `sync_data` first completes a pending sync (held
//! writes, then `fdatasync`), holding the lock that `sync_deferred` holds. Non-durable commits write nothing to the file
//! (their pages stay in redb's write buffer), so they do not wait. The log that covers the
//! deferred commit is kept until `sync_deferred` has returned `Ok` (see `Store`). Only `store`
//! uses this.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Cloned handles share one file: redb owns one, the store keeps one to defer and complete
/// syncs.
#[derive(Clone, Debug)]
pub struct DbFile(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    inner: FileBackend,
    /// True while a deferred sync is owed. Held while syncing and writing.
    pending: Mutex<bool>,
    /// How many of the next `sync_data` calls are deferred (a two-phase commit makes two).
    defer_next: AtomicU32,
    /// Writes of the deferred commit not yet on the file, in segments: each deferred sync ends
    /// one (its writes must be on the disk before any of the next segment's). Changed only
    /// under `pending`; readers take its read lock across their file read.
    held: RwLock<Vec<Held>>,
    /// `held` is not empty (lets reads skip its lock).
    holding: AtomicBool,
}

impl DbFile {
    pub fn new(file: File) -> io::Result<DbFile> {
        Ok(DbFile(Arc::new(Shared {
            inner: FileBackend::new(file).map_err(io::Error::other)?,
            pending: Mutex::new(false),
            defer_next: AtomicU32::new(0),
            held: RwLock::new(vec![Held::default()]),
            holding: AtomicBool::new(false),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        // The flag stays meaningful after a panic elsewhere (it is only set after a write).
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `syncs` `sync_data` calls (those of a durable commit: one, or two for a
    /// two-phase commit) only record that a sync is owed, and where (see `held`).
    pub fn defer_next_syncs(&self, syncs: u32) {
        self.0.defer_next.store(syncs, Ordering::Release);
    }

    /// Withdraws a `defer_next_sync` that no commit used (the commit failed before its sync).
    /// Whatever that commit wrote goes to the file now, as it would have without deferring.
    pub fn cancel_defer(&self) -> io::Result<()> {
        let pending = self.lock();
        if self.0.defer_next.swap(0, Ordering::AcqRel) > 0 && !*pending {
            self.write_held(false)?;
            self.clear_held();
        }
        Ok(())
    }

    /// Completes an owed sync. `Ok(true)` if one was owed and is done, `Ok(false)` if none was
    /// owed (an earlier write or sync completed it).
    pub fn sync_deferred(&self) -> io::Result<bool> {
        let mut pending = self.lock();
        if !*pending {
            return Ok(false);
        }
        self.settle(&mut pending)?;
        Ok(true)
    }

    /// Writes held bytes to the file, then syncs, if a sync is owed. Called with `pending`
    /// locked. On error everything stays held and owed.
    fn settle(&self, pending: &mut bool) -> io::Result<()> {
        if *pending {
            self.write_held(true)?;
            self.0.inner.sync_data()?;
            self.clear_held();
            *pending = false;
        }
        Ok(())
    }

    fn held(&self) -> std::sync::RwLockReadGuard<'_, Vec<Held>> {
        self.0.held.read().unwrap_or_else(|p| p.into_inner())
    }

    fn held_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Held>> {
        self.0.held.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every held range to the file, segment by segment in offset order, with an
    /// `fdatasync` between segments when `ordered` (what the commit's deferred syncs stood
    /// for); they stay held (readers keep seeing them) until `clear_held`.
    fn write_held(&self, ordered: bool) -> io::Result<()> {
        if !self.0.holding.load(Ordering::Acquire) {
            return Ok(());
        }
        let held = self.held();
        let last = held.iter().rposition(|h| !h.ranges.is_empty()).unwrap_or(0);
        for (i, segment) in held.iter().enumerate() {
            for (offset, range) in &segment.ranges {
                self.0.inner.write(*offset, segment.bytes(*range))?;
            }
            if ordered && i < last && !segment.ranges.is_empty() {
                self.0.inner.sync_data()?;
            }
        }
        Ok(())
    }

    fn clear_held(&self) {
        if self.0.holding.load(Ordering::Acquire) {
            let mut held = self.held_mut();
            held.truncate(1);
            held[0].clear();
            self.0.holding.store(false, Ordering::Release);
        }
    }

    /// Keeps a write in memory (in the current segment), replacing whatever held bytes of it
    /// it overlaps.
    fn hold(&self, offset: u64, data: &[u8]) {
        let mut held = self.held_mut();
        if held.is_empty() {
            held.push(Held::default());
        }
        let n = held.len() - 1;
        held[n].insert(offset, data);
        self.0.holding.store(true, Ordering::Release);
    }

    /// Reads the file, with held bytes laid over it (later segments over earlier ones).
    fn read_through(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let held = self.held();
        let end = offset + out.len() as u64;
        let hits: Vec<_> = held.iter().map(|h| h.overlapping(offset, end)).collect();
        let covered = hits
            .iter()
            .flatten()
            .any(|(o, r)| *o <= offset && *o + r.1 as u64 >= end);
        if !covered {
            self.0.inner.read(offset, out)?;
        }
        for (segment, hit) in held.iter().zip(hits) {
            for (o, r) in hit {
                let d = segment.bytes(r);
                let from = o.max(offset);
                let to = (o + d.len() as u64).min(end);
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&d[(from - o) as usize..(to - o) as usize]);
            }
        }
        Ok(())
    }
}

/// Held writes: their bytes appended to one buffer (kept between checkpoints, so copying a
/// checkpoint's pages in does not fault in fresh memory each time), and the file ranges they
/// cover, which never overlap.
#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    /// File offset → (start in `buf`, length).
    ranges: BTreeMap<u64, (usize, usize)>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} ranges)", self.ranges.len())
    }
}

impl Held {
    /// Above this, the buffer is freed when emptied rather than kept for the next checkpoint.
    const KEEP: usize = 64 << 20;

    fn bytes(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.buf[start..start + len]
    }

    /// Held ranges that overlap `offset..end`, highest first.
    fn overlapping(&self, offset: u64, end: u64) -> Vec<(u64, (usize, usize))> {
        // Ranges never overlap, so going down from `end` their ends decrease too.
        self.ranges
            .range(..end)
            .rev()
            .take_while(|(o, r)| **o + r.1 as u64 > offset)
            .map(|(o, r)| (*o, *r))
            .collect()
    }

    fn insert(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            // Would split a range at `offset` and then take the right part's key.
            return;
        }
        let end = offset + data.len() as u64;
        for (o, (start, len)) in self.overlapping(offset, end) {
            self.ranges.remove(&o);
            if o < offset {
                self.ranges.insert(o, (start, (offset - o) as usize));
            }
            let o_end = o + len as u64;
            if o_end > end {
                let cut = (end - o) as usize;
                self.ranges.insert(end, (start + cut, len - cut));
            }
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.ranges.insert(offset, (start, data.len()));
    }

    fn clear(&mut self) {
        self.ranges.clear();
        self.buf.clear();
        if self.buf.capacity() > Self::KEEP {
            self.buf = Vec::new();
        }
    }
}

impl StorageBackend for DbFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        if self.0.holding.load(Ordering::Acquire) {
            return self.read_through(offset, out);
        }
        self.0.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut pending = self.lock();
        self.settle(&mut pending)?;
        self.0.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut pending = self.lock();
        let deferred = self
            .0
            .defer_next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if deferred.is_ok() {
            *pending = true;
            // What is written from here on must reach the disk after what was written so far.
            self.held_mut().push(Held::default());
            return Ok(());
        }
        // Held bytes without an owed sync cannot exist here (`cancel_defer` writes them), but
        // if they did, this sync must cover them.
        *pending = true;
        self.settle(&mut pending)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut pending = self.lock();
        if self.0.defer_next.load(Ordering::Acquire) > 0 {
            // Inside a deferred commit (also after its first deferred sync: the segments keep
            // the order its syncs stood for).
            self.hold(offset, data);
            return Ok(());
        }
        self.settle(&mut pending)?;
        self.0.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        let mut pending = self.lock();
        let settled = self.settle(&mut pending);
        let closed = self.0.inner.close();
        settled.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
impl DbFile {
    /// Puts held bytes on the file without syncing: the state a crash during `sync_deferred`
    /// can leave.
    pub fn write_held_unsynced(&self) -> io::Result<()> {
        let _pending = self.lock();
        self.write_held(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir) -> DbFile {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("db"))
            .unwrap();
        DbFile::new(f).unwrap()
    }

    fn read(f: &DbFile, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        f.read(offset, &mut out).unwrap();
        out
    }

    fn on_disk(dir: &tempfile::TempDir) -> Vec<u8> {
        std::fs::read(dir.path().join("db")).unwrap()
    }

    /// A deferred commit's writes (overlapping each other in every way) are read back at once,
    /// reach the file only with the deferred sync, and a later write settles them first.
    #[test]
    fn deferred_writes_are_read_back_and_written_with_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir);
        f.set_len(64).unwrap();
        f.write(0, &[1; 64]).unwrap();
        let mut model = vec![1u8; 64];
        f.defer_next_syncs(1);
        for (offset, len, byte) in [
            (8, 16, 2),  // inside
            (4, 8, 3),   // over the start of the previous one
            (20, 8, 4),  // over its end
            (10, 4, 5),  // splits one in two
            (30, 10, 6), // alone
            (28, 14, 7), // covers one whole
            (33, 0, 9),  // empty, inside one: changes nothing
        ] {
            f.write(offset, &vec![byte; len]).unwrap();
            model[offset as usize..offset as usize + len].fill(byte);
        }
        assert_eq!(on_disk(&dir), vec![1; 64], "nothing written yet");
        for (offset, len) in [(0, 64), (5, 1), (9, 20), (28, 14), (29, 3), (40, 24)] {
            assert_eq!(
                read(&f, offset, len),
                model[offset as usize..offset as usize + len],
                "read {offset}+{len}"
            );
        }
        f.sync_data().unwrap(); // the commit's sync: deferred
        assert_eq!(on_disk(&dir), vec![1; 64]);
        assert_eq!(read(&f, 0, 64), model);
        assert!(f.sync_deferred().unwrap());
        assert_eq!(on_disk(&dir), model);
        assert!(!f.sync_deferred().unwrap(), "nothing owed any more");
        assert_eq!(read(&f, 0, 64), model);

        // Deferred again; the next ordinary write completes the owed sync before it.
        f.defer_next_syncs(1);
        f.write(0, &[8; 4]).unwrap();
        f.sync_data().unwrap();
        model[..4].fill(8);
        f.write(60, &[9; 4]).unwrap();
        model[60..].fill(9);
        assert_eq!(on_disk(&dir), model);
        assert!(!f.sync_deferred().unwrap());
    }

    /// A two-phase commit deferred whole: its writes before the first sync and after it are
    /// read back laid over each other, reach the file only with `sync_deferred`, in that order
    /// (the second segment over the first), and the crash state in between is the first
    /// segment alone.
    #[test]
    fn both_syncs_of_a_two_phase_commit_are_deferred_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir);
        f.set_len(32).unwrap();
        f.defer_next_syncs(2);
        f.write(0, &[1; 16]).unwrap(); // the commit's pages and the header's new slot
        f.sync_data().unwrap();
        f.write(8, &[2; 4]).unwrap(); // the header's primary bit
        f.sync_data().unwrap();
        let mut want = vec![0u8; 32];
        want[..16].fill(1);
        want[8..12].fill(2);
        assert_eq!(read(&f, 0, 32), want);
        assert_eq!(on_disk(&dir), vec![0; 32], "nothing on the file yet");
        assert_eq!(
            f.0.held.read().unwrap().len(),
            3,
            "two segments and an empty one"
        );
        // A later write is not held: it settles the owed syncs first.
        assert!(f.sync_deferred().unwrap());
        assert_eq!(on_disk(&dir), want);
        f.write(30, &[3; 2]).unwrap();
        want[30..].fill(3);
        assert_eq!(on_disk(&dir), want);
        assert_eq!(read(&f, 0, 32), want);
    }

    /// A deferred commit that fails before its sync: what it wrote goes to the file, as it would
    /// have without deferring, and nothing stays held.
    #[test]
    fn a_cancelled_deferral_writes_what_was_held() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir);
        f.set_len(16).unwrap();
        f.defer_next_syncs(1);
        f.write(4, &[5; 4]).unwrap();
        assert_eq!(on_disk(&dir), vec![0; 16]);
        f.cancel_defer().unwrap();
        let mut want = vec![0u8; 16];
        want[4..8].fill(5);
        assert_eq!(on_disk(&dir), want);
        assert!(!f.0.holding.load(Ordering::Acquire));
        f.write(0, &[1; 2]).unwrap();
        want[..2].fill(1);
        assert_eq!(on_disk(&dir), want, "later writes go straight to the file");
    }
}
