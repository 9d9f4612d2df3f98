//! The redb file backend: redb's own `FileBackend`, except that a checkpoint's page writes and
//! its `fdatasync` can be taken off the message writer's thread, and that a write or fsync the
//! disk refuses never reaches redb as an error.
//!
//! Why deferring: a checkpoint (the durable redb commit that lets the write-ahead log be
//! emptied) writes every page changed since the previous one and then waits for `fdatasync`.
//! The wait was most of the checkpoint's 60–150 ms; once it was deferred, the thousands of
//! scattered 4 KiB `pwrite`s (one per changed page, 15–20 ms with 2,000 active conversations)
//! were what held the writer. Here the store asks for the next sync to be deferred
//! (`defer_next_syncs`: two, since durable commits are two-phase for redb's quick repair);
//! until that commit's last `sync_data`, its writes are only copied into memory (a memcpy per
//! page instead of a syscall), one group per sync, redb's commit returns, and the checkpoint
//! thread's `sync_deferred` later writes each group to the file in offset order and calls
//! `fdatasync` after it (the order the commit's own syncs stood for: pages and new slot, then
//! the header that makes it the primary). Reads see held bytes over the file's, so redb reads
//! what it wrote.
//!
//! Why absorbing failures: redb latches the first I/O error of its backend and then refuses
//! every later operation, reads included, until the database is closed and reopened (and
//! reopening needs a repair that writes). A full disk would then stop reads too and need a
//! restart. So this layer keeps everything written since the last successful `fdatasync`
//! (`owed`: what redb has not had confirmed on disk, in order, with the syncs between) and,
//! when a write or an fsync fails, keeps it all, reports `Ok` to redb, and remembers the
//! failure. The store asks `failure()` after every durable commit and does not acknowledge one
//! made while a failure is remembered (and stops taking writes, see `health`). `sync_deferred`
//! later rewrites everything owed, group by group with an `fdatasync` after each, exactly as
//! redb issued it: a failed fsync may have lost any write since the previous good one (Linux
//! marks the pages clean; a retried fsync succeeds without writing them), so nothing owed is
//! trusted to be on disk until a rewrite and fsync after the failure succeeded. Memory: the
//! bytes written between two fsyncs (a checkpoint's pages; while writes are refused, the
//! commits that were in flight when the failure came).
//!
//! Safety: until a sync has completed, the file is in the state of a commit interrupted before
//! its fsync (any subset of its writes on disk, here possibly none), which redb recovers from on
//! its own (the new header's checksums fail and it uses the previous commit, whose pages the new
//! commit did not overwrite). What could break that is a later write over the previous commit's
//! pages, or a shrink of the file, before the sync: so every `write` (but the deferred commit's
//! own), shrinking `set_len` and undeferred `sync_data` first completes a pending deferred sync, and while one is owed after a
//! failure they only add to `owed` (a shrink is skipped: the file stays longer, which redb
//! ignores). Non-durable commits write nothing to the file (their pages stay in redb's write
//! buffer), so they do not wait. The log that covers the deferred commit is kept until
//! `sync_deferred` has returned `Ok` (see `Store`). Only `store` uses this.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{BackendError, StorageBackend};

use super::fault;

/// Cloned handles share one file: redb owns one, the store keeps one to defer and complete
/// syncs.
#[derive(Clone, Debug)]
pub struct DbFile(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    inner: fault::Backend,
    /// Serializes everything that writes, resizes or syncs the file, or changes `owed`.
    ops: Mutex<Ops>,
    /// What is not confirmed on disk. Changed only under `ops`; readers take its read lock
    /// across their file read.
    owed: RwLock<Owed>,
    /// `owed` holds bytes the file may lack (lets reads skip its lock otherwise).
    holding: AtomicBool,
    /// How many of the next `sync_data` calls are deferred (a two-phase commit makes two).
    defer_next: AtomicU32,
}

#[derive(Debug, Default)]
struct Ops {
    /// A deferred sync is owed (the last `Step::Sync` in `owed` was deferred).
    pending: bool,
    /// The last failure since the last successful sync. While set, nothing in `owed` counts as
    /// written, and no write or sync is attempted except by `sync_deferred`.
    failed: Option<io::Error>,
}

/// Everything since the last successful `fdatasync`, oldest first.
#[derive(Default)]
struct Owed {
    steps: Vec<Step>,
    /// Emptied buffers kept for reuse.
    spare: Vec<Held>,
}

enum Step {
    /// Writes between two syncs. `on_file`: written to the file (the bytes are kept in case
    /// the sync fails); otherwise only here (deferred, or refused by the disk).
    Writes {
        held: Held,
        on_file: bool,
    },
    Sync,
}

impl std::fmt::Debug for Owed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Owed({} steps)", self.steps.len())
    }
}

/// An error that can be handed out more than once (`io::Error` is not `Clone`).
fn copy(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl DbFile {
    pub fn new(file: File, path: &Path) -> io::Result<DbFile> {
        Ok(DbFile(Arc::new(Shared {
            inner: fault::backend(file, path)?,
            ops: Mutex::new(Ops::default()),
            owed: RwLock::new(Owed::default()),
            holding: AtomicBool::new(false),
            defer_next: AtomicU32::new(0),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Ops> {
        // The state stays meaningful after a panic elsewhere (each change is one assignment).
        self.0.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owed(&self) -> RwLockReadGuard<'_, Owed> {
        self.0.owed.read().unwrap_or_else(|p| p.into_inner())
    }

    fn owed_mut(&self) -> RwLockWriteGuard<'_, Owed> {
        self.0.owed.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `syncs` `sync_data` calls (those of a durable commit: one, or two for a
    /// two-phase commit) only record that a sync is owed, and where (see `owed`).
    pub fn defer_next_syncs(&self, syncs: u32) {
        self.0.defer_next.store(syncs, Ordering::Release);
    }

    /// Withdraws a `defer_next_sync` that no commit used (the commit failed before its sync).
    /// Whatever that commit wrote goes to the file now, as it would have without deferring.
    pub fn cancel_defer(&self) -> io::Result<()> {
        let mut ops = self.lock();
        if self.0.defer_next.swap(0, Ordering::AcqRel) == 0 || ops.pending || ops.failed.is_some() {
            return Ok(());
        }
        let written = {
            let owed = self.owed();
            owed.steps.iter().try_for_each(|s| match s {
                Step::Writes {
                    held,
                    on_file: false,
                } => held.write_to(&self.0.inner),
                _ => Ok(()),
            })
        };
        match written {
            Ok(()) => {
                for s in &mut self.owed_mut().steps {
                    if let Step::Writes { on_file, .. } = s {
                        *on_file = true;
                    }
                }
                self.0.holding.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let out = copy(&e);
                self.fail(&mut ops, e);
                Err(out)
            }
        }
    }

    /// Completes what is owed: a deferred sync, or after a failure everything written since the
    /// last successful sync (rewritten, then synced). `Ok(true)` if something was owed and is
    /// now on disk, `Ok(false)` if nothing was owed (an earlier write or sync completed it).
    /// On error everything stays owed.
    pub fn sync_deferred(&self) -> io::Result<bool> {
        let mut ops = self.lock();
        if !ops.pending && ops.failed.is_none() {
            return Ok(false);
        }
        self.settle(&mut ops)?;
        Ok(true)
    }

    /// The failure that left something owed, if any: a durable commit made while this is set
    /// is not on disk.
    pub fn failure(&self) -> Option<io::Error> {
        self.lock().failed.as_ref().map(copy)
    }

    /// Bytes that must still be written (after a failure: all of `owed`).
    pub fn owed_bytes(&self) -> u64 {
        let failed = self.lock().failed.is_some();
        self.owed()
            .steps
            .iter()
            .map(|s| match s {
                Step::Writes { held, on_file } if failed || !on_file => held.len(),
                _ => 0,
            })
            .sum()
    }

    /// Writes what `owed` holds that the file may lack and syncs, group by group (a group ends
    /// with a sync redb asked for); each group is dropped once its sync succeeded. Called with
    /// `ops` locked. On error the failure is remembered and everything left stays owed.
    fn settle(&self, ops: &mut Ops) -> io::Result<()> {
        loop {
            let (group, written) = {
                let owed = self.owed();
                if owed.steps.is_empty() {
                    break;
                }
                let end = owed
                    .steps
                    .iter()
                    .position(|s| matches!(s, Step::Sync))
                    .map_or(owed.steps.len(), |i| i + 1);
                let written = owed.steps[..end].iter().try_for_each(|s| match s {
                    Step::Writes {
                        held,
                        on_file: false,
                    } => held.write_to(&self.0.inner),
                    _ => Ok(()),
                });
                (end, written)
            };
            if let Err(e) = written.and_then(|()| self.0.inner.sync_data()) {
                let out = copy(&e);
                self.fail(ops, e);
                return Err(out);
            }
            let mut owed = self.owed_mut();
            let done: Vec<Step> = owed.steps.drain(..group).collect();
            for s in done {
                if let Step::Writes { mut held, .. } = s {
                    if owed.spare.len() < 2 {
                        held.clear();
                        owed.spare.push(held);
                    }
                }
            }
        }
        ops.pending = false;
        ops.failed = None;
        self.0.holding.store(false, Ordering::Release);
        Ok(())
    }

    /// Remembers a failure: from now on nothing owed counts as written.
    fn fail(&self, ops: &mut Ops, e: io::Error) {
        ops.failed = Some(e);
        let mut owed = self.owed_mut();
        for s in &mut owed.steps {
            if let Step::Writes { on_file, .. } = s {
                *on_file = false;
            }
        }
        if !owed.steps.is_empty() {
            self.0.holding.store(true, Ordering::Release);
        }
    }

    /// Adds a write to `owed`, replacing whatever bytes of the current group it overlaps.
    fn record(&self, offset: u64, data: &[u8], on_file: bool) {
        if data.is_empty() {
            return;
        }
        let mut owed = self.owed_mut();
        let same =
            matches!(owed.steps.last(), Some(Step::Writes { on_file: o, .. }) if *o == on_file);
        if !same {
            let held = owed.spare.pop().unwrap_or_default();
            owed.steps.push(Step::Writes { held, on_file });
        }
        if let Some(Step::Writes { held, .. }) = owed.steps.last_mut() {
            held.insert(offset, data);
        }
        if !on_file {
            self.0.holding.store(true, Ordering::Release);
        }
    }

    /// Reads the file, with the owed bytes it may lack laid over it, oldest first.
    fn read_through(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let owed = self.owed();
        let end = offset + out.len() as u64;
        let layers: Vec<&Held> = owed
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Writes {
                    held,
                    on_file: false,
                } => Some(held),
                _ => None,
            })
            .collect();
        let covered = layers.iter().any(|h| {
            h.overlapping(offset, end)
                .iter()
                .any(|(o, r)| *o <= offset && *o + r.1 as u64 >= end)
        });
        if !covered {
            self.0.inner.read(offset, out)?;
        }
        for held in layers {
            for (o, r) in held.overlapping(offset, end) {
                let d = held.bytes(r);
                let from = o.max(offset);
                let to = (o + d.len() as u64).min(end);
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&d[(from - o) as usize..(to - o) as usize]);
            }
        }
        Ok(())
    }
}

/// Written bytes: appended to one buffer (kept between checkpoints, so copying a checkpoint's
/// pages in does not fault in fresh memory each time), and the file ranges they cover, which
/// never overlap.
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

    /// Bytes in the ranges.
    fn len(&self) -> u64 {
        self.ranges.values().map(|r| r.1 as u64).sum()
    }

    /// Writes every range to the file, in offset order.
    fn write_to(&self, file: &fault::Backend) -> io::Result<()> {
        for (offset, range) in &self.ranges {
            file.write(*offset, self.bytes(*range))?;
        }
        Ok(())
    }

    /// Ranges that overlap `offset..end`, highest first.
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
        let mut ops = self.lock();
        if len >= self.0.inner.len()? {
            // Growing overwrites nothing (and needs no space on the usual file systems).
            return self.0.inner.set_len(len);
        }
        if ops.pending && ops.failed.is_none() {
            let _ = self.settle(&mut ops);
        }
        if ops.failed.is_some() {
            // Cutting now could cut pages of the last commit on disk; the file stays longer,
            // which redb does not mind.
            return Ok(());
        }
        self.0.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut ops = self.lock();
        {
            let mut owed = self.owed_mut();
            if !matches!(owed.steps.last(), Some(Step::Sync)) {
                owed.steps.push(Step::Sync);
            }
        }
        let deferred = self
            .0
            .defer_next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if deferred.is_ok() {
            ops.pending = true;
            return Ok(());
        }
        if ops.failed.is_none() {
            // A failure is remembered (see `failure`); redb is not told.
            let _ = self.settle(&mut ops);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut ops = self.lock();
        // Inside a deferred commit (also after its first deferred sync: the groups keep the
        // order its syncs stood for).
        let deferring = self.0.defer_next.load(Ordering::Acquire) > 0;
        if ops.pending && ops.failed.is_none() && !deferring {
            // Not over the previous commit's pages before the deferred commit is durable.
            let _ = self.settle(&mut ops);
        }
        if ops.failed.is_some() || deferring {
            self.record(offset, data, false);
            return Ok(());
        }
        match self.0.inner.write(offset, data) {
            Ok(()) => self.record(offset, data, true),
            Err(e) => {
                self.fail(&mut ops, e);
                self.record(offset, data, false);
            }
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        let mut ops = self.lock();
        let settled = if self.owed().steps.is_empty() && ops.failed.is_none() {
            Ok(())
        } else {
            self.settle(&mut ops)
        };
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
    /// Puts the owed bytes the file lacks on it without syncing: the state a crash during
    /// `sync_deferred` can leave.
    pub fn write_held_unsynced(&self) -> io::Result<()> {
        let _ops = self.lock();
        let owed = self.owed();
        owed.steps.iter().try_for_each(|s| match s {
            Step::Writes {
                held,
                on_file: false,
            } => held.write_to(&self.0.inner),
            _ => Ok(()),
        })
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
        DbFile::new(f, &dir.path().join("db")).unwrap()
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

    /// A two-phase commit deferred whole: its writes before the first sync and after it are
    /// read back laid over each other, reach the file only with `sync_deferred`, in that order
    /// (the second group over the first, a sync after each).
    #[test]
    fn both_syncs_of_a_two_phase_commit_are_deferred_in_order() {
        use crate::store::fault::{Cut, Plan};
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::install(dir.path());
        let f = file(&dir);
        f.set_len(32).unwrap();
        f.sync_data().unwrap();
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
        assert_eq!(f.owed().steps.len(), 4, "two groups, each with its sync");
        assert!(f.sync_deferred().unwrap());
        assert_eq!(on_disk(&dir), want);
        let cut = tempfile::tempdir().unwrap();
        plan.snapshot_to(cut.path(), Cut::DropUnsynced);
        assert_eq!(
            std::fs::read(cut.path().join("db")).unwrap(),
            want,
            "synced"
        );
        // A later write is not held.
        f.write(30, &[3; 2]).unwrap();
        want[30..].fill(3);
        assert_eq!(on_disk(&dir), want);
        assert_eq!(read(&f, 0, 32), want);
        plan.uninstall();
    }

    /// A write the disk refuses, or an fsync that fails, is not reported to redb (which would
    /// refuse everything, reads included, until reopened): the bytes are kept and read back,
    /// the failure is remembered, later writes wait in memory in order, a shrink is skipped,
    /// and `sync_deferred` rewrites everything since the last good fsync (a failed fsync may
    /// have lost any of it) before it counts as on disk.
    #[test]
    fn refused_writes_and_failed_fsyncs_are_kept_and_rewritten() {
        use crate::store::fault::{Cut, Fault, Plan};
        for (n, fault) in [(2, Fault::Full), (3, Fault::Eio)] {
            let dir = tempfile::tempdir().unwrap();
            let plan = Plan::install(dir.path());
            let f = file(&dir);
            f.set_len(64).unwrap();
            f.write(0, &[1; 64]).unwrap();
            f.sync_data().unwrap();
            assert!(f.failure().is_none());
            // Op 1 is this write, 2 the next one, 3 the fsync.
            plan.fail_nth(n, fault, true);
            f.write(0, &[2; 8]).unwrap();
            f.write(8, &[3; 8]).unwrap();
            f.sync_data().expect("redb is not told");
            let e = f.failure().expect("the failure is remembered");
            assert_eq!(
                crate::store::health::Problem::of(&e),
                match fault {
                    Fault::Full => crate::store::health::Problem::Full,
                    Fault::Eio => crate::store::health::Problem::Io,
                }
            );
            // A later commit: held in memory, after the failed one.
            f.write(4, &[4; 8]).unwrap();
            f.sync_data().unwrap();
            f.set_len(32).unwrap();
            let mut model = vec![1u8; 64];
            model[..8].fill(2);
            model[8..16].fill(3);
            model[4..12].fill(4);
            assert_eq!(read(&f, 0, 64), model, "reads see every write");
            assert!(f.owed_bytes() >= 16);
            assert!(f.sync_deferred().is_err(), "still failing");
            let mut cut = tempfile::tempdir().unwrap();
            plan.snapshot_to(cut.path(), Cut::DropUnsynced);
            assert_eq!(
                std::fs::read(cut.path().join("db")).unwrap(),
                vec![1u8; 64],
                "a power cut now finds the last good state"
            );
            plan.heal();
            assert!(f.sync_deferred().unwrap(), "rewritten and synced");
            assert!(f.failure().is_none() && f.owed_bytes() == 0);
            cut = tempfile::tempdir().unwrap();
            plan.snapshot_to(cut.path(), Cut::DropUnsynced);
            assert_eq!(
                std::fs::read(cut.path().join("db")).unwrap(),
                model,
                "on disk, every write (the skipped shrink left the file longer)"
            );
            assert_eq!(read(&f, 0, 64), model);
            // Back to normal: writes go to the file.
            f.write(60, &[5; 4]).unwrap();
            f.sync_data().unwrap();
            model[60..].fill(5);
            assert_eq!(on_disk(&dir), model);
            plan.uninstall();
        }
    }
}
