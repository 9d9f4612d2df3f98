//! The redb file backend: redb's own `FileBackend`, except that the `fdatasync` of a
//! checkpoint can be taken off the message writer's thread.
//!
//! Why: a checkpoint (the durable redb commit that lets the write-ahead log be emptied) writes
//! every page changed since the previous one and then waits for `fdatasync`; the wait was most
//! of the checkpoint's 60–150 ms, and the writer could not log or acknowledge anything
//! meanwhile. Here the store asks for the next sync to be deferred (`defer_next_sync`); redb's
//! commit then returns after its writes, and the checkpoint thread calls `sync_deferred` later.
//!
//! Safety: until that sync has completed, the file is in the state of a commit interrupted
//! before its fsync, which redb recovers from on its own (the new header's checksums fail and
//! it uses the previous commit, whose pages the new commit did not overwrite). What could break
//! that is a later write over the previous commit's pages, or a shrink of the file, before the
//! sync: so every `write`, `set_len` and undeferred `sync_data` first completes a pending
//! sync, holding the lock that `sync_deferred` holds. Non-durable commits write nothing to the
//! file (their pages stay in redb's write buffer), so they do not wait. The log that covers the
//! deferred commit is kept until `sync_deferred` has returned `Ok` (see `Store`). Only `store`
//! uses this.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    defer_next: AtomicBool,
}

impl DbFile {
    pub fn new(file: File) -> io::Result<DbFile> {
        Ok(DbFile(Arc::new(Shared {
            inner: FileBackend::new(file).map_err(io::Error::other)?,
            pending: Mutex::new(false),
            defer_next: AtomicBool::new(false),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        // The flag stays meaningful after a panic elsewhere (it is only set after a write).
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `sync_data` call (the one that ends a durable commit) only records that a sync
    /// is owed.
    pub fn defer_next_sync(&self) {
        self.0.defer_next.store(true, Ordering::Release);
    }

    /// Withdraws a `defer_next_sync` that no commit used (the commit failed before its sync).
    pub fn cancel_defer(&self) {
        self.0.defer_next.store(false, Ordering::Release);
    }

    /// Completes an owed sync. `Ok(true)` if one was owed and is done, `Ok(false)` if none was
    /// owed (an earlier write or sync completed it).
    pub fn sync_deferred(&self) -> io::Result<bool> {
        let mut pending = self.lock();
        if !*pending {
            return Ok(false);
        }
        self.0.inner.sync_data()?;
        *pending = false;
        Ok(true)
    }

    fn settle(&self, pending: &mut bool) -> io::Result<()> {
        if *pending {
            self.0.inner.sync_data()?;
            *pending = false;
        }
        Ok(())
    }
}

impl StorageBackend for DbFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut pending = self.lock();
        self.settle(&mut pending)?;
        self.0.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut pending = self.lock();
        if self.0.defer_next.swap(false, Ordering::AcqRel) {
            *pending = true;
            return Ok(());
        }
        self.0.inner.sync_data()?;
        *pending = false;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut pending = self.lock();
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
