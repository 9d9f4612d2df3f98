//! The store: the only code that names redb. It owns the database file, every table (see
//! `schema`), every transaction, and the encoding of records (`codec`).
//!
//! Callers get plain domain types (`model`) and `StoreError`s. Every method is blocking (redb does
//! file I/O), so async code calls the store from a dedicated thread (`readers`, the writer) or
//! `spawn_blocking`, never directly on a runtime worker. When a method returns `Ok`, the change
//! is on disk (fsync'd) and may be acknowledged: every write transaction commits with
//! `Durability::Immediate`, except the message writer's batches, which are first appended to
//! the write-ahead log (`wal`, fsync'd) and then committed to redb non-durably; `Store::open`
//! re-applies whatever the last durable commit lacks.
//! When the disk refuses a write (full, or failing), the store keeps every acknowledged change
//! (in the log, or owed to redb's file in memory, see `dbfile`), refuses further writes with
//! `StoreError::Unwritable` while reads go on, and its sync thread retries until everything owed
//! is on disk (`Store::heal`, `health`).
//! The store must not call into the HTTP, WebSocket or hub layers.

pub mod accounts;
pub mod backup;
pub mod chat;
pub mod check;
mod codec;
pub mod compact;
pub mod damage;
#[cfg(test)]
mod damage_tests;
mod dbfile;
#[cfg(test)]
mod event_tests;
pub(crate) mod fault;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod health;
pub mod identity;
mod messages;
mod overlay;
mod recover;
pub mod repair;
#[cfg(test)]
mod repair_tests;
pub mod schema;
pub mod search_reads;
#[cfg(test)]
mod tests;
pub mod wal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::model::{name_key, Session, SessionKind, User, UserId};
use codec::{Dec, DecodeError, Enc};
use schema::*;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "chatd.redb";

/// Everything that can go wrong in the store, phrased for the person who has to act on it.
#[derive(Debug)]
pub enum StoreError {
    /// Another process holds the database open (normally a running `chatd serve`).
    Locked(PathBuf),
    /// The database was written by a newer chatd.
    NewerSchema { found: u64, supported: u64 },
    /// The file exists but is not a chatd/redb database, or is damaged.
    Corrupt(String),
    /// The operating system refused a file operation.
    Io(std::io::Error),
    /// Any other database failure.
    Db(redb::Error),
    /// A user with that name (in any letter case) already exists.
    NameTaken,
    /// No user with that id or name.
    NoSuchUser,
    /// The data directory is damaged in a way that starting would hide (a missing database,
    /// a log that does not match it): the message says what is missing and what to do.
    Refused(String),
    /// Registration is closed and the database already has accounts.
    RegistrationClosed,
    /// Writes are refused until the disk takes them again (see `health`); nothing was changed.
    Unwritable(health::Unwritable),
    /// The name looks like an existing account's (this one): same confusable skeleton.
    NameConfusable(String),
    /// The invite code is unknown, used up or expired.
    InvalidInvite,
    /// The change would leave the server without an enabled admin.
    LastAdmin,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked(p) => write!(
                f,
                "the database {} is in use by another chatd process (is the server running? stop it first)",
                p.display()
            ),
            StoreError::NewerSchema { found, supported } => write!(
                f,
                "the database has schema version {found}, but this chatd supports at most {supported}: it was written by a newer chatd; upgrade chatd or restore a backup"
            ),
            StoreError::Corrupt(why) => write!(f, "the database is damaged or not a chatd database: {why}"),
            StoreError::Io(e) => write!(f, "{e}"),
            StoreError::Db(e) => write!(f, "database error: {e}"),
            StoreError::NameTaken => write!(f, "that name is already taken"),
            StoreError::NoSuchUser => write!(f, "no such user"),
            StoreError::Refused(why) => write!(f, "{why}"),
            StoreError::RegistrationClosed => write!(f, "registration is closed"),
            StoreError::Unwritable(u) => write!(f, "{u}"),
            StoreError::NameConfusable(other) => {
                write!(f, "that name looks like the existing name {other:?}")
            }
            StoreError::InvalidInvite => write!(f, "the invite is unknown, used up or expired"),
            StoreError::LastAdmin => write!(f, "that would leave the server without an admin"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(why) => StoreError::Corrupt(why),
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StoreError::Corrupt(io.to_string())
            }
            redb::Error::Io(io) => StoreError::Io(io),
            other => StoreError::Db(other),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        StoreError::Corrupt(format!("undecodable record ({})", e.0))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whether a new account gets admin rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminGrant {
    Yes,
    No,
    /// Admin only if this is the first account ever created in this database.
    IfFirst,
}

/// When root (say, `chatd restore` or an admin command before the first start) creates a file
/// in a data directory that belongs to the service user, hands the file to that user, or the
/// server could not open it. Without the right to chown this does nothing (the file then
/// already belongs to whoever may write the directory).
pub fn same_owner_as_dir(path: &Path, dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(d), Ok(f)) = (std::fs::metadata(dir), std::fs::metadata(path)) {
            if (d.uid(), d.gid()) != (f.uid(), f.gid()) {
                let _ = std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid()));
            }
        }
    }
}

/// Handle to the open database. Cheap to clone; all clones share one redb `Database`.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// Random id of this database's history; changes on restore (see `schema::META_EPOCH`).
    epoch: u64,
    /// The write-ahead log of the message writer's batches (see `wal`).
    journal: Arc<Mutex<Journal>>,
    /// redb's file, to defer a checkpoint's fsync to the syncer thread.
    dbfile: dbfile::DbFile,
    /// Wakes the syncer thread (see `spawn_syncer`); it ends when the last handle is dropped.
    syncer: Arc<SyncSender<()>>,
    /// Whether writes are accepted (see `health`).
    health: Arc<health::Health>,
}

/// A `Store` that does not keep it open: what the syncer thread holds.
struct WeakStore {
    db: Weak<Database>,
    epoch: u64,
    journal: Arc<Mutex<Journal>>,
    dbfile: dbfile::DbFile,
    syncer: Weak<SyncSender<()>>,
    health: Arc<health::Health>,
}

impl WeakStore {
    fn upgrade(&self) -> Option<Store> {
        Some(Store {
            db: self.db.upgrade()?,
            epoch: self.epoch,
            journal: self.journal.clone(),
            dbfile: self.dbfile.clone(),
            syncer: self.syncer.upgrade()?,
            health: self.health.clone(),
        })
    }
}

/// The log and what the writer needs to use it.
struct Journal {
    wal: wal::Wal,
    /// Number of the next batch.
    next: u64,
    last_checkpoint: Instant,
    /// `CHECKPOINT_INTERVAL`, except in tests.
    interval: Duration,
    /// Batches applied without a durable redb commit since the last checkpoint.
    unpersisted: u64,
    /// A logged batch that could neither be applied nor voided (its `abort` record could not
    /// be written): logging more would make recovery replay it before them, so writes stop
    /// until `heal` has written the abort.
    void: Option<u64>,
    /// The durable state has `meta.wal_open` set (see `store::recover`).
    log_marked: bool,
}

/// How `Store::open_with` treats a data directory it would otherwise refuse.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// redb's page cache (see `open_with_cache`); `None`: redb's default, 1 GiB.
    pub cache_bytes: Option<usize>,
    /// Start over with a new, empty database when the directory held one that is missing or
    /// empty now (`--new-database`).
    pub new_database: bool,
    /// Start on a log that does not match the database, without the batches that cannot be
    /// applied (`--discard-damaged-log`).
    pub discard_damaged_log: bool,
}

/// Checkpoint (durable redb commit, then an empty log) when the log is this big...
const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// ... or this long after the previous checkpoint.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// While the previous checkpoint's fsync is still under way, the next one waits for it unless
/// the log has grown this big.
const CHECKPOINT_BYTES_MAX: u64 = 4 * CHECKPOINT_BYTES;

/// Starts the thread that completes deferred checkpoint fsyncs and then empties the log file
/// they cover. If the fsync fails, nothing is emptied and writes stop (the log holds every
/// batch; `dbfile` keeps the checkpoint's pages); while they are stopped, the thread calls
/// `Store::heal` every `health::RETRY`. It ends when the last `Store` handle is dropped.
fn spawn_syncer(store: WeakStore, rx: std::sync::mpsc::Receiver<()>) -> Result<()> {
    std::thread::Builder::new()
        .name("chatd-sync".into())
        .spawn(move || {
            let lock = || store.journal.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let woke = if store.health.writable() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(store.health.retry())
                };
                match woke {
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) => {
                        // The checkpoint before this switch has made its writes (both happen
                        // under the journal lock), so the fsync below covers it.
                        let switch = lock().wal.switches();
                        match store.dbfile.sync_deferred() {
                            Ok(_) => {
                                if let Err(e) = lock().wal.finish_retire(switch) {
                                    store.health.stop(
                                        "emptying a log file after a checkpoint",
                                        &e,
                                        0,
                                    );
                                }
                            }
                            Err(e) => {
                                let owed = store.dbfile.owed_bytes();
                                store
                                    .health
                                    .stop("writing a checkpoint to chatd.redb", &e, owed);
                            }
                        }
                    }
                }
                if !store.health.writable() {
                    match store.upgrade() {
                        Some(s) => s.heal(),
                        None => break,
                    }
                }
            }
        })
        .map_err(StoreError::Io)?;
    Ok(())
}

/// A write transaction that commits durably: `commit` returns `Ok` only once the commit is on
/// disk (see `Store::durable`). Derefs to redb's transaction for everything else.
pub(crate) struct WriteTx<'a> {
    tx: redb::WriteTransaction,
    store: &'a Store,
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = redb::WriteTransaction;
    fn deref(&self) -> &redb::WriteTransaction {
        &self.tx
    }
}

impl WriteTx<'_> {
    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        self.store.durable()
    }
}

const USER_FLAG_ADMIN: u8 = 1;
const USER_FLAG_DISABLED: u8 = 2;

impl Store {
    /// Opens (or creates) `DB_FILE` in `dir`, creates missing tables, checks the schema version
    /// and migrates an older one. redb's page cache may grow to its default, 1 GiB (fine for
    /// the short-lived admin commands; the server sizes it with `open_with_cache`).
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with_cache(dir, None)
    }

    /// `open`, with redb's page cache limited to `cache_bytes`: the pages read stay cached up
    /// to this, and up to half of it holds the pages of non-durable commits until the next
    /// checkpoint (beyond that redb writes them out early, which then waits for a pending
    /// checkpoint fsync). This is the bulk of a busy server's memory besides its connections.
    pub fn open_with_cache(dir: &Path, cache_bytes: Option<usize>) -> Result<Store> {
        Store::open_with(
            dir,
            &OpenOptions {
                cache_bytes,
                ..OpenOptions::default()
            },
        )
    }

    /// `open`, with the page cache and what to accept in a damaged directory set in `opts`.
    /// Never panics on a damaged file: a panic inside redb becomes `StoreError::Corrupt`.
    pub fn open_with(dir: &Path, opts: &OpenOptions) -> Result<Store> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Store::open_inner(dir, opts)
        })) {
            Ok(r) => r,
            Err(p) => Err(StoreError::Corrupt(format!(
                "reading it made the database library fail ({}); `chatd check` describes the damage, `chatd repair` or `chatd restore` recover from it",
                damage::panic_message(&*p)
            ))),
        }
    }

    fn open_inner(dir: &Path, opts: &OpenOptions) -> Result<Store> {
        let path = dir.join(DB_FILE);
        let starting_over = identity::before_open(dir, opts.new_database)?;
        let cache_bytes = opts.cache_bytes;
        let new_db = !path.exists();
        let dbfile = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| dbfile::DbFile::new(f, &path))
            .map_err(|e| {
                StoreError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot open {}: {e}", path.display()),
                ))
            })?;
        let t0 = Instant::now();
        let mut builder = Database::builder();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = match builder.create_with_backend(dbfile.clone()) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path)),
            Err(redb::DatabaseError::UpgradeRequired(v)) => {
                return Err(StoreError::Corrupt(format!(
                    "file format {v} needs a redb upgrade"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let t_redb = t0.elapsed();
        let epoch = init_schema(&db)?;
        accounts::init_tables(&db)?;
        files::init_tables(&db)?;
        if new_db {
            same_owner_as_dir(&path, dir);
        }
        // On a full disk the database opens all the same (`dbfile` keeps what it could not
        // write): reads are served, writes refused until the sync thread has written it.
        let health = Arc::new(health::Health::default());
        if let Some(e) = dbfile.failure() {
            health.stop(
                "opening chatd.redb",
                &e,
                dbfile.owed_bytes() + wal::PREALLOC,
            );
        }
        identity::after_open(dir, epoch, starting_over).map_err(StoreError::Io)?;
        let t1 = Instant::now();
        let opened = recover::open_log(&db, dir, epoch, opts.discard_damaged_log)?;
        let t_log = t1.elapsed();
        let batches = opened.replay.len();
        if let Some(e) = &opened.unprepared {
            health.stop("preallocating the write-ahead log", e, wal::PREALLOC);
        }
        let journal = Arc::new(Mutex::new(Journal {
            wal: opened.wal,
            next: 1,
            last_checkpoint: Instant::now(),
            interval: CHECKPOINT_INTERVAL,
            unpersisted: 0,
            void: None,
            log_marked: false,
        }));
        let (wake, rx) = std::sync::mpsc::sync_channel(1);
        let store = Store {
            db: Arc::new(db),
            epoch,
            journal,
            dbfile,
            syncer: Arc::new(wake),
            health,
        };
        spawn_syncer(store.downgrade(), rx)?;
        let t2 = Instant::now();
        store.replay(opened.replay)?;
        let took = t0.elapsed();
        let (redb_ms, log_ms, replay_ms) = (
            t_redb.as_millis() as u64,
            t_log.as_millis() as u64,
            t2.elapsed().as_millis() as u64,
        );
        if took > Duration::from_millis(200) || batches > 0 {
            tracing::info!(
                redb_ms,
                log_ms,
                replay_ms,
                batches,
                "opened the database in {} ms",
                took.as_millis()
            );
        } else {
            tracing::debug!(
                redb_ms,
                log_ms,
                replay_ms,
                batches,
                "opened the database in {} ms",
                took.as_millis()
            );
        }
        Ok(store)
    }

    fn downgrade(&self) -> WeakStore {
        WeakStore {
            db: Arc::downgrade(&self.db),
            epoch: self.epoch,
            journal: self.journal.clone(),
            dbfile: self.dbfile.clone(),
            syncer: Arc::downgrade(&self.syncer),
            health: self.health.clone(),
        }
    }

    /// Why writes are refused right now, or `None` while they are accepted.
    pub fn write_health(&self) -> Option<health::Status> {
        self.health.status()
    }

    /// Times writing stopped, and writes refused, since the store was opened.
    pub fn write_health_counts(&self) -> (u64, u64) {
        self.health.counts()
    }

    /// Stops writes because `what` failed with `e` (logged once; the syncer thread is woken to
    /// retry) and returns the error for the caller.
    fn stop_writes(&self, what: &str, e: &std::io::Error) -> StoreError {
        let was_writable = self.health.writable();
        let u = self
            .health
            .stop(what, e, self.dbfile.owed_bytes() + wal::PREALLOC);
        if was_writable {
            let _ = self.syncer.try_send(());
        }
        StoreError::Unwritable(u)
    }

    /// `Ok` if the last durable commit is on disk; otherwise writes stop and this says why.
    fn durable(&self) -> Result<()> {
        match self.dbfile.failure() {
            None => Ok(()),
            Some(e) => Err(self.stop_writes("writing chatd.redb", &e)),
        }
    }

    /// Tries to make the store writable again after a failure, in the order that keeps every
    /// invariant: rewrite and fsync everything `dbfile` owes (after a failed fsync nothing since
    /// the last good one is trusted to be on disk), cut a failed record off the log, void a
    /// batch whose `abort` could not be written, make everything durable with a checkpoint that
    /// empties the log, and give the log room for more records (which fails while the disk is
    /// still full). Writes resume only if all of it succeeded; otherwise the reason is updated
    /// and the syncer thread tries again after `health::RETRY`.
    fn heal(&self) {
        let mut j = self.lock_journal();
        let stop = |what: &'static str| move |e: std::io::Error| self.stop_writes(what, &e);
        let healed = (|| -> Result<()> {
            self.dbfile
                .sync_deferred()
                .map_err(stop("writing what chatd.redb owes"))?;
            let room = "making room in the write-ahead log";
            j.wal.repair().map_err(stop(room))?;
            if let Some(n) = j.void {
                j.wal
                    .append_abort(n)
                    .map_err(stop("voiding a batch in the write-ahead log"))?;
                j.void = None;
            }
            if j.unpersisted > 0 || !j.wal.is_empty() {
                self.checkpoint_locked(&mut j)?;
            }
            j.wal.repair().map_err(stop(room))
        })();
        match healed {
            Ok(()) => self.health.resume(),
            Err(e) => tracing::debug!("writes are still refused: {e}"),
        }
    }

    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        // A panic while holding it leaves a usable log (every step is a whole record).
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a batch of changes for the message writer, durably: the batch is appended to the
    /// log and fsync'd, then applied to redb with a non-durable commit. When this returns `Ok`,
    /// every result may be acknowledged. The writer calls `checkpoint_if_due` after handing
    /// the results on, so a checkpoint never delays the acks of the batch before it.
    pub fn apply_logged(
        &self,
        cache: &mut chat::MemberCache,
        now_ms: u64,
        ops: &[wal::LoggedOp<'_>],
    ) -> Result<Vec<std::result::Result<chat::Applied, chat::ChatError>>> {
        let mut j = self.lock_journal();
        self.health
            .check_ops(ops.len() as u64)
            .map_err(StoreError::Unwritable)?;
        if !j.log_marked {
            // After a clean stop's checkpoint (see `store::recover`).
            self.mark_log(true)?;
            j.log_marked = true;
        }
        let number = j.next;
        // The record's fsync runs on the log's sync thread while the batch is applied here;
        // the redb commit waits for it, so nothing of a batch the disk refused becomes visible.
        if let Err(e) = j.wal.begin_append(number, self.epoch, now_ms, ops) {
            return Err(self.stop_writes("appending to the write-ahead log", &e));
        }
        j.next += 1;
        let mut synced = None;
        let applied = self.apply_batch(cache, number, now_ms, ops, Durability::None, || {
            let r = j.wal.finish_append();
            let ok = r.is_ok();
            synced = Some(r);
            if ok {
                Ok(())
            } else {
                Err(StoreError::Io(std::io::Error::other(
                    "the log's fsync failed",
                )))
            }
        });
        // The apply may have failed before it got to the commit (and so to the fsync).
        let synced = synced.unwrap_or_else(|| j.wal.finish_append());
        if let Err(e) = synced {
            // Cut off again and not committed to redb: as if the batch never happened, so the
            // next batch takes its number (recovery refuses a gap in the numbers).
            cache.clear();
            j.next = number;
            return Err(self.stop_writes("syncing the write-ahead log", &e));
        }
        match applied {
            Ok(results) => {
                j.unpersisted += 1;
                if let Some(e) = self.dbfile.failure() {
                    // redb wrote pages out early and the disk refused them; the batch itself
                    // is in the log, so it stands.
                    self.stop_writes("writing chatd.redb", &e);
                }
                Ok(results)
            }
            Err(e) => {
                cache.clear();
                if let Err(e2) = j.wal.append_abort(number) {
                    j.void = Some(number);
                    self.stop_writes("voiding a batch in the write-ahead log", &e2);
                }
                Err(e)
            }
        }
    }

    /// Checkpoints if the log has grown past `CHECKPOINT_BYTES` or the last checkpoint is
    /// `CHECKPOINT_INTERVAL` old. The checkpoint's fsync is left to the syncer thread, so this
    /// costs the writer only redb's page writes; the next checkpoint waits until that fsync is
    /// done (unless the log has grown to `CHECKPOINT_BYTES_MAX`, then it syncs itself). A
    /// failure stops writes (see `health`): the log still holds everything and `heal` makes it
    /// durable. While writes are refused this does nothing. Returns how long the checkpoint
    /// took, if one ran.
    pub fn checkpoint_if_due(&self) -> Option<Duration> {
        let mut j = self.lock_journal();
        if !self.health.writable()
            || j.unpersisted == 0
            || (j.wal.len() < CHECKPOINT_BYTES && j.last_checkpoint.elapsed() < j.interval)
        {
            return None;
        }
        let retiring = j.wal.retiring();
        if retiring && j.wal.len() < CHECKPOINT_BYTES_MAX {
            return None;
        }
        let t = Instant::now();
        let done = if retiring {
            self.checkpoint_locked(&mut j)
        } else {
            self.checkpoint_deferred(&mut j, true)
        };
        match done {
            // Logged once by `health`.
            Ok(()) | Err(StoreError::Unwritable(_)) => {}
            Err(e) => tracing::error!("checkpoint failed: {e}"),
        }
        Some(t.elapsed())
    }

    /// A durable redb commit whose fsync is deferred; the log switches to its other file and
    /// the syncer thread empties the covered one after the fsync.
    fn checkpoint_deferred(&self, j: &mut Journal, wake_syncer: bool) -> Result<()> {
        let tx = self.write_unchecked()?;
        // Both fsyncs of the two-phase commit (see `durable_write`).
        self.dbfile.defer_next_syncs(2);
        let committed = tx.commit();
        // Unused if the commit failed before its sync; must not defer a later commit's.
        let cancelled = self.dbfile.cancel_defer();
        committed?;
        cancelled.map_err(|e| self.stop_writes("writing a checkpoint to chatd.redb", &e))?;
        j.unpersisted = 0;
        j.last_checkpoint = Instant::now();
        if j.wal.switch() {
            if wake_syncer {
                // A full channel means a wake-up is already pending; it covers this commit too.
                let _ = self.syncer.try_send(());
            }
            Ok(())
        } else {
            // The other file is not empty (cannot happen while `retiring` is false): sync here.
            self.dbfile
                .sync_deferred()
                .map_err(|e| self.stop_writes("writing a checkpoint to chatd.redb", &e))?;
            j.wal
                .reset()
                .map_err(|e| self.stop_writes("emptying the write-ahead log", &e))
        }
    }

    /// A checkpoint as the writer makes it, minus its fsync: the state a crash can leave.
    #[cfg(test)]
    fn checkpoint_without_fsync(&self) -> Result<()> {
        let mut j = self.lock_journal();
        self.checkpoint_deferred(&mut j, false)
    }

    /// Whether the log still has a file waiting for a checkpoint's fsync.
    #[cfg(test)]
    fn log_retiring(&self) -> bool {
        self.lock_journal().wal.retiring()
    }

    /// Test knobs: how often the writer checkpoints, and how often a stopped store retries.
    #[cfg(test)]
    pub(crate) fn set_timings_for_tests(&self, checkpoint: Duration, retry: Duration) {
        self.lock_journal().interval = checkpoint;
        self.health.set_retry(retry);
    }

    /// Waits (up to 10 s) until every applied batch is checkpointed and no checkpoint's fsync
    /// is outstanding, or writes have stopped.
    #[cfg(test)]
    pub(crate) fn wait_checkpoint_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let busy = || {
            let j = self.lock_journal();
            j.unpersisted > 0 || j.wal.retiring()
        };
        while busy() && self.health.writable() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// What the log holds, and what the database file owes (for the tests' messages).
    #[cfg(test)]
    pub(crate) fn describe_for_tests(&self) -> String {
        let j = self.lock_journal();
        format!(
            "log: {} bytes in the active file, retiring={}, unpersisted={}, next={}; chatd.redb owes {} bytes ({:?}); health {:?}",
            j.wal.len(),
            j.wal.retiring(),
            j.unpersisted,
            j.next,
            self.dbfile.owed_bytes(),
            self.dbfile.failure(),
            self.health.status()
        )
    }

    /// Makes every applied batch durable in redb and empties the log (a no-op if nothing is
    /// pending). The writer calls it when it stops. While writes are refused it does nothing
    /// and says so (the log keeps every batch for the next start). The durable state then says
    /// the log holds nothing it lacks (`meta.wal_open` cleared): a start that finds a log file
    /// missing goes on.
    pub fn checkpoint(&self) -> Result<()> {
        let mut j = self.lock_journal();
        if j.unpersisted == 0 && j.wal.is_empty() && !j.log_marked {
            return Ok(());
        }
        self.health.check().map_err(StoreError::Unwritable)?;
        // An Immediate commit persists every non-durable commit before it.
        self.mark_log(false)?;
        j.log_marked = false;
        j.unpersisted = 0;
        j.last_checkpoint = Instant::now();
        j.wal
            .reset()
            .map_err(|e| self.stop_writes("emptying the write-ahead log", &e))
    }

    /// Sets or clears `meta.wal_open` with a durable commit.
    fn mark_log(&self, open: bool) -> Result<()> {
        let tx = self.write()?;
        tx.open_table(META)?
            .insert(META_WAL_OPEN, u64::from(open))?;
        tx.commit()
    }

    /// A checkpoint whose fsync is made here (on whatever the health says: `heal` and
    /// `recover` use it to find out).
    fn checkpoint_locked(&self, j: &mut Journal) -> Result<()> {
        // An Immediate commit persists every non-durable commit before it.
        let tx = self.write_unchecked()?;
        tx.commit()?;
        j.unpersisted = 0;
        j.last_checkpoint = Instant::now();
        j.wal
            .reset()
            .map_err(|e| self.stop_writes("emptying the write-ahead log", &e))
    }

    /// Applies `ops` as batch `number` in one write transaction with the given durability,
    /// calling `before_commit` between the last change and the commit (an error aborts).
    fn apply_batch(
        &self,
        cache: &mut chat::MemberCache,
        number: u64,
        now_ms: u64,
        ops: &[wal::LoggedOp<'_>],
        durability: Durability,
        before_commit: impl FnOnce() -> Result<()>,
    ) -> Result<Vec<std::result::Result<chat::Applied, chat::ChatError>>> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        let results = {
            let mut b = chat::ChatBatch::open(&tx, cache)?;
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(b.apply(op.actor, op.actor_name, op.change, now_ms)?);
            }
            b.set_wal_applied(number)?;
            out
        };
        // An error here drops `tx`: redb aborts it.
        before_commit()?;
        tx.commit()?;
        Ok(results)
    }

    /// The database epoch (see `schema::META_EPOCH`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A durable write transaction, unless writes are refused (see `health`).
    fn write(&self) -> Result<WriteTx<'_>> {
        self.health.check().map_err(StoreError::Unwritable)?;
        self.write_unchecked()
    }

    fn write_unchecked(&self) -> Result<WriteTx<'_>> {
        Ok(WriteTx {
            tx: durable_write(&self.db)?,
            store: self,
        })
    }

    // ---- users -------------------------------------------------------------------------------

    /// Creates an account. The name must already be validated; uniqueness is case-insensitive.
    /// With `only_if_none`, fails with `RegistrationClosed` unless no account exists yet
    /// (checked in the same transaction, so two racing "first" registrations cannot both pass).
    pub fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: AdminGrant,
        only_if_none: bool,
        now_ms: u64,
    ) -> Result<User> {
        let tx = self.write()?;
        if only_if_none && !tx.open_table(USER_NAMES)?.is_empty()? {
            return Err(StoreError::RegistrationClosed);
        }
        // Unique by case and by look-alike skeleton (`accounts::insert_user`).
        let user = accounts::insert_user(&tx, name, password_hash, admin, now_ms)?;
        tx.commit()?;
        Ok(user)
    }

    /// Looks a user up by id.
    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        let tx = self.db.begin_read()?;
        let users = tx.open_table(USERS)?;
        match users.get(id.0)? {
            Some(v) => Ok(Some(decode_user(id.0, v.value())?)),
            None => Ok(None),
        }
    }

    /// Looks a user up by name (any letter case).
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let tx = self.db.begin_read()?;
        let names = tx.open_table(USER_NAMES)?;
        let Some(id) = names.get(name_key(name).as_str())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let users = tx.open_table(USERS)?;
        match users.get(id)? {
            Some(v) => Ok(Some(decode_user(id, v.value())?)),
            None => Err(StoreError::Corrupt(format!(
                "name index points at missing user {id}"
            ))),
        }
    }

    /// Every account, in id order.
    pub fn list_users(&self) -> Result<Vec<User>> {
        let tx = self.db.begin_read()?;
        let users = tx.open_table(USERS)?;
        let mut out = Vec::new();
        for row in users.iter()? {
            let (k, v) = row?;
            out.push(decode_user(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Number of accounts.
    pub fn user_count(&self) -> Result<u64> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(USERS)?.len()?)
    }

    /// Messages stored in the database (all conversations).
    /// (redb keeps every table's length in its header, so this reads no rows.)
    pub fn message_count(&self) -> Result<u64> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(MESSAGES)?.len()?)
    }

    /// Replaces a user's password hash and revokes all of the user's sessions and tokens.
    pub fn set_password(&self, id: UserId, password_hash: &str) -> Result<()> {
        self.update_user(id, |u| u.password_hash = password_hash.to_string(), true)
    }

    /// Disables or re-enables an account. Disabling revokes all of its sessions and tokens.
    pub fn set_disabled(&self, id: UserId, disabled: bool) -> Result<()> {
        self.update_user(id, |u| u.disabled = disabled, disabled)
    }

    /// Grants or removes admin rights.
    pub fn set_admin(&self, id: UserId, admin: bool) -> Result<()> {
        self.update_user(id, |u| u.admin = admin, false)
    }

    fn update_user(&self, id: UserId, f: impl FnOnce(&mut User), revoke: bool) -> Result<()> {
        let tx = self.write()?;
        {
            let mut users = tx.open_table(USERS)?;
            let mut user = match users.get(id.0)? {
                Some(v) => decode_user(id.0, v.value())?,
                None => return Err(StoreError::NoSuchUser),
            };
            f(&mut user);
            users.insert(id.0, encode_user(&user).as_slice())?;
            if revoke {
                revoke_sessions(&tx, id)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ---- sessions ----------------------------------------------------------------------------

    /// Stores a new session under the hash of its token.
    pub fn create_session(&self, token_hash: &[u8; 32], session: &Session) -> Result<()> {
        let tx = self.write()?;
        {
            let rec = encode_session(token_hash, session);
            tx.open_table(SESSIONS)?
                .insert(token_hash, rec.as_slice())?;
            tx.open_table(USER_SESSIONS)?
                .insert((session.user.0, token_hash), ())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Resolves a token hash to its user, if the session exists, has not expired and the user
    /// is not disabled. Expired sessions are left for `delete_session`/`revoke` to clean up.
    pub fn session_user(&self, token_hash: &[u8; 32], now_ms: u64) -> Result<Option<User>> {
        let tx = self.db.begin_read()?;
        let sessions = tx.open_table(SESSIONS)?;
        let Some(raw) = sessions.get(token_hash)? else {
            return Ok(None);
        };
        let session = decode_session(token_hash, raw.value())?;
        if session.expires_ms != 0 && session.expires_ms <= now_ms {
            return Ok(None);
        }
        let users = tx.open_table(USERS)?;
        let Some(u) = users.get(session.user.0)? else {
            return Ok(None);
        };
        let user = decode_user(session.user.0, u.value())?;
        Ok(if user.disabled { None } else { Some(user) })
    }

    /// Deletes one session (logout). Deleting a missing session is not an error.
    pub fn delete_session(&self, token_hash: &[u8; 32]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut sessions = tx.open_table(SESSIONS)?;
            let user = match sessions.remove(token_hash)? {
                Some(raw) => Some(decode_session(token_hash, raw.value())?.user),
                None => None,
            };
            if let Some(user) = user {
                tx.open_table(USER_SESSIONS)?.remove((user.0, token_hash))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Lists a user's sessions and tokens (hash, record), oldest first is not guaranteed.
    pub fn sessions_of(&self, user: UserId) -> Result<Vec<([u8; 32], Session)>> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(USER_SESSIONS)?;
        let sessions = tx.open_table(SESSIONS)?;
        let mut out = Vec::new();
        for row in index.range((user.0, &[0u8; 32])..=(user.0, &[0xffu8; 32]))? {
            let (k, _) = row?;
            let (_, hash) = k.value();
            if let Some(raw) = sessions.get(hash)? {
                out.push((*hash, decode_session(hash, raw.value())?));
            }
        }
        Ok(out)
    }

    /// Creates many accounts and one session each in a single transaction (benchmark and import
    /// setup; `chatd user add` is the way for people). Names must be valid and unused.
    pub fn seed_users(
        &self,
        names: &[String],
        password_hash: &str,
        tokens: &[[u8; 32]],
        now_ms: u64,
    ) -> Result<Vec<User>> {
        let tx = self.write()?;
        let mut out = Vec::with_capacity(names.len());
        {
            let mut meta = tx.open_table(META)?;
            let mut users = tx.open_table(USERS)?;
            let mut index = tx.open_table(USER_NAMES)?;
            let mut sessions = tx.open_table(SESSIONS)?;
            let mut user_sessions = tx.open_table(USER_SESSIONS)?;
            let mut skeletons = tx.open_table(USER_SKELETONS)?;
            let mut next = meta.get(META_NEXT_USER)?.map(|v| v.value()).unwrap_or(1);
            for (name, token) in names.iter().zip(tokens) {
                let key = name_key(name);
                if index.get(key.as_str())?.is_some() {
                    return Err(StoreError::NameTaken);
                }
                let user = User {
                    id: UserId(next),
                    name: name.clone(),
                    password_hash: password_hash.to_string(),
                    admin: false,
                    disabled: false,
                    created_ms: now_ms,
                    display_name: None,
                    color: 0,
                };
                index.insert(key.as_str(), next)?;
                skeletons.insert((crate::model::name_skeleton(name).as_str(), next), ())?;
                users.insert(next, encode_user(&user).as_slice())?;
                let session = Session {
                    user: UserId(next),
                    kind: SessionKind::Token,
                    created_ms: now_ms,
                    expires_ms: 0,
                    label: "seed".into(),
                };
                sessions.insert(token, encode_session(token, &session).as_slice())?;
                user_sessions.insert((next, token), ())?;
                next += 1;
                out.push(user);
            }
            meta.insert(META_NEXT_USER, next)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Reads a meta counter (for tests and diagnostics).
    pub fn meta(&self, key: &str) -> Result<Option<u64>> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(META)?.get(key)?.map(|v| v.value()))
    }

    /// Sets a meta value. Only for tests that fake an old or future database.
    #[doc(hidden)]
    pub fn set_meta_for_tests(&self, key: &str, value: u64) -> Result<()> {
        let tx = self.write()?;
        tx.open_table(META)?.insert(key, value)?;
        tx.commit()?;
        Ok(())
    }
}

/// Creates every table, writes the schema version and epoch on a new database, refuses a newer
/// one and migrates an older one. Returns the epoch.
/// A write transaction that commits durably (fsync: acknowledged means on disk) with redb's
/// quick repair: the commit also records the allocator state (two-phase, so two fsyncs), and
/// the open after a crash loads it instead of walking the whole file to rebuild it (0.8 s at
/// 1,000,000 messages, growing with the file; see docs/BENCHMARKS.md). Every durable commit
/// must do this: the next open after a crash needs its last durable commit to have it.
fn durable_write(db: &Database) -> Result<redb::WriteTransaction> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    tx.set_quick_repair(true);
    Ok(tx)
}

fn init_schema(db: &Database) -> Result<u64> {
    let tx = durable_write(db)?;
    let epoch = {
        let mut meta = tx.open_table(META)?;
        let found = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
        match found {
            None => {
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(v) if v < SCHEMA_VERSION => {
                drop(meta);
                migrate(&tx, v)?;
                meta = tx.open_table(META)?;
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            }
            Some(_) => {}
        }
        let existing = meta.get(META_EPOCH)?.map(|v| v.value());
        match existing {
            Some(e) => e,
            None => {
                let e = random_u64();
                meta.insert(META_EPOCH, e)?;
                e
            }
        }
    };
    // Opening a table in a write transaction creates it, so readers never meet a missing table.
    tx.open_table(USERS)?;
    tx.open_table(USER_NAMES)?;
    tx.open_table(SESSIONS)?;
    tx.open_table(USER_SESSIONS)?;
    tx.open_table(CONVERSATIONS)?;
    tx.open_table(MEMBERS)?;
    tx.open_table(READ_SEQS)?;
    tx.open_table(DIRECT_PAIRS)?;
    tx.open_table(MESSAGES)?;
    tx.open_table(CLIENT_IDS)?;
    tx.open_table(EVENT_SEQS)?;
    tx.open_table(MENTIONS)?;
    tx.open_table(MUTES)?;
    tx.commit()?;
    Ok(epoch)
}

/// Upgrades a database written with schema `from` to `SCHEMA_VERSION`, one step per version,
/// inside the opening transaction: if any step fails nothing changes and the old chatd can
/// still open the file.
fn migrate(tx: &redb::WriteTransaction, from: u64) -> Result<()> {
    tracing::info!(from, to = SCHEMA_VERSION, "upgrading the database schema");
    let mut v = from;
    while v < SCHEMA_VERSION {
        match v {
            // 1 → 2: count the stored messages once; sends kept the count (until 3).
            1 => {
                let n = tx.open_table(MESSAGES)?.len()?;
                tx.open_table(META)?.insert(META_MESSAGE_COUNT, n)?;
            }
            // 2 → 3: keep only the read seq of each (user, conversation); drop the activity
            // index (the list order is computed from the conversations' last_ms).
            2 => {
                {
                    let old = tx.open_table(OLD_READ_POSITIONS)?;
                    let mut new = tx.open_table(READ_SEQS)?;
                    for row in old.iter()? {
                        let (k, v) = row?;
                        new.insert(k.value(), v.value().0)?;
                    }
                }
                tx.delete_table(OLD_READ_POSITIONS)?;
                tx.delete_table(OLD_ACTIVITY)?;
                // redb keeps each table's length, so the message count needs no counter.
                tx.open_table(META)?.remove(META_MESSAGE_COUNT)?;
            }
            // 3 → 4: seal every record; message records v2 (see `store::messages`).
            3 => seal_records(tx)?,
            // 4 → 5: message records v3 (a reply's `reply_to`) and the send-with-reply log ops.
            // v2 records read as messages without a reply, so nothing is rewritten: the bump
            // only keeps an older chatd from opening a database that may hold v3 records.
            4 => {}
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "unknown schema version {v} (no upgrade step from it)"
                )))
            }
        }
        v += 1;
    }
    Ok(())
}

/// The 3 → 4 step: every record sealed (`codec::seal`), message records rewritten as v2.
/// Messages are rewritten in chunks (their keys read, then written), so memory stays small
/// whatever the database's size.
fn seal_records(tx: &redb::WriteTransaction) -> Result<()> {
    let undecodable = |what: String| {
        move |e: DecodeError| StoreError::Corrupt(format!("cannot upgrade {what}: {}", e.0))
    };
    {
        let mut t = tx.open_table(USERS)?;
        let rows: Vec<(u64, Vec<u8>)> = t
            .iter()?
            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<std::result::Result<_, _>>()?;
        for (id, raw) in rows {
            t.insert(id, codec::seal(&codec::key1(id), raw).as_slice())?;
        }
    }
    {
        let mut t = tx.open_table(SESSIONS)?;
        let rows: Vec<([u8; 32], Vec<u8>)> = t
            .iter()?
            .map(|r| r.map(|(k, v)| (*k.value(), v.value().to_vec())))
            .collect::<std::result::Result<_, _>>()?;
        for (hash, raw) in rows {
            t.insert(&hash, codec::seal(&hash, raw).as_slice())?;
        }
    }
    {
        let mut t = tx.open_table(CONVERSATIONS)?;
        let rows: Vec<(u64, Vec<u8>)> = t
            .iter()?
            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<std::result::Result<_, _>>()?;
        for (id, raw) in rows {
            t.insert(id, chat::upgrade_conv(id, &raw)?.as_slice())?;
        }
    }
    let mut t = tx.open_table(MESSAGES)?;
    let mut ids = tx.open_table(CLIENT_IDS)?;
    let total = t.len()?;
    let mut from = (0u64, 0u64);
    let mut done = 0u64;
    loop {
        const CHUNK: usize = 10_000;
        let mut rows: Vec<((u64, u64), Vec<u8>)> = Vec::with_capacity(CHUNK);
        for r in t.range(from..)?.take(CHUNK) {
            let (k, v) = r?;
            let (conv, seq) = k.value();
            let (sender, time_ms, client_id, text) = messages::decode_v1(v.value())
                .map_err(undecodable(format!("message {conv}/{seq}")))?;
            let m = crate::model::StoredMessage {
                conversation: crate::model::ConversationId(conv),
                seq,
                sender: UserId(sender),
                sender_name: String::new(),
                time_ms,
                client_id: client_id.to_string(),
                text: text.to_string(),
                reply_to: None,
                unreadable: false,
                attachments: Vec::new(),
                extra: Default::default(),
            };
            ids.insert((sender, client_id_hash(client_id)), (conv, seq))?;
            rows.push(((conv, seq), messages::encode(&m)));
        }
        let Some(&((conv, seq), _)) = rows.last() else {
            break;
        };
        for (k, v) in &rows {
            t.insert(*k, v.as_slice())?;
        }
        done += rows.len() as u64;
        if done % 100_000 < CHUNK as u64 {
            tracing::info!("upgrading the database: {done} of {total} messages");
        }
        from = match seq.checked_add(1) {
            Some(s) => (conv, s),
            None => match conv.checked_add(1) {
                Some(c) => (c, 0),
                None => break,
            },
        };
    }
    drop((t, ids));
    // The index was rebuilt from the messages above.
    tx.delete_table(OLD_CLIENT_IDS)?;
    Ok(())
}

fn revoke_sessions(tx: &redb::WriteTransaction, user: UserId) -> Result<()> {
    let mut index = tx.open_table(USER_SESSIONS)?;
    let mut sessions = tx.open_table(SESSIONS)?;
    let mut hashes = Vec::new();
    for row in index.range((user.0, &[0u8; 32])..=(user.0, &[0xffu8; 32]))? {
        let (k, _) = row?;
        hashes.push(*k.value().1);
    }
    for h in &hashes {
        sessions.remove(h)?;
        index.remove((user.0, h))?;
    }
    Ok(())
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // If the OS has no randomness the epoch is only less unique; the time is a fine fallback.
    if getrandom::fill(&mut b).is_err() {
        return crate::model::now_ms();
    }
    u64::from_le_bytes(b)
}

/// The record inside a sealed value of `table` at `key` (`key_bytes` as sealed), or a reported
/// `Corrupt` error when its checksum does not match (see `codec::seal`, `damage`).
fn unsealed<'a>(
    table: &str,
    key: impl fmt::Display,
    key_bytes: &[u8],
    raw: &'a [u8],
) -> Result<&'a [u8]> {
    codec::unseal(key_bytes, raw).map_err(|e| damaged(table, key, e))
}

/// Reports a damaged record (see `damage`) and makes the error for it.
fn damaged(table: &str, key: impl fmt::Display, e: DecodeError) -> StoreError {
    let what = format!("{table} {key}");
    damage::report(&what, e.0);
    StoreError::Corrupt(format!("{what}: {}", e.0))
}

fn encode_user(u: &User) -> Vec<u8> {
    codec::seal(&codec::key1(u.id.0), encode_user_record(u))
}

fn encode_user_record(u: &User) -> Vec<u8> {
    let mut flags = 0;
    if u.admin {
        flags |= USER_FLAG_ADMIN;
    }
    if u.disabled {
        flags |= USER_FLAG_DISABLED;
    }
    // v1 while the profile fields are unset (two bytes shorter).
    let plain = u.display_name.is_none() && u.color == 0;
    let rec = Enc::new(if plain { 1 } else { 2 })
        .str(&u.name)
        .str(&u.password_hash)
        .u8(flags)
        .u64(u.created_ms);
    if plain {
        return rec.0;
    }
    rec.str(u.display_name.as_deref().unwrap_or(""))
        .u8(u.color)
        .0
}

fn decode_user(id: u64, raw: &[u8]) -> Result<User> {
    let rec = unsealed("users", id, &codec::key1(id), raw)?;
    decode_user_record(id, rec).map_err(|e| damaged("users", id, e))
}

fn decode_user_record(id: u64, raw: &[u8]) -> std::result::Result<User, DecodeError> {
    let (version, mut d) = Dec::versioned(raw, 1..=2, "user record version")?;
    let name = d.str()?.to_string();
    let password_hash = d.str()?.to_string();
    let flags = d.u8()?;
    let created_ms = d.u64()?;
    let (display_name, color) = if version >= 2 {
        let shown = d.str()?;
        (Some(shown.to_string()).filter(|s| !s.is_empty()), d.u8()?)
    } else {
        (None, 0)
    };
    Ok(User {
        id: UserId(id),
        name,
        password_hash,
        admin: flags & USER_FLAG_ADMIN != 0,
        disabled: flags & USER_FLAG_DISABLED != 0,
        created_ms,
        display_name,
        color,
    })
}

fn encode_session(hash: &[u8; 32], s: &Session) -> Vec<u8> {
    let rec = Enc::new(1)
        .u64(s.user.0)
        .u8(match s.kind {
            SessionKind::Cookie => 1,
            SessionKind::Token => 2,
        })
        .u64(s.created_ms)
        .u64(s.expires_ms)
        .str(&s.label)
        .0;
    codec::seal(hash, rec)
}

/// A session's key as the logs show it: the first bytes of the token's hash.
fn short_hash(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_session(hash: &[u8; 32], raw: &[u8]) -> Result<Session> {
    let rec = unsealed("sessions", short_hash(hash), hash, raw)?;
    decode_session_record(rec).map_err(|e| damaged("sessions", short_hash(hash), e))
}

fn decode_session_record(raw: &[u8]) -> std::result::Result<Session, DecodeError> {
    let mut d = Dec::new(raw, 1, "session record version")?;
    let user = UserId(d.u64()?);
    let kind = match d.u8()? {
        1 => SessionKind::Cookie,
        2 => SessionKind::Token,
        _ => return Err(DecodeError("unknown session kind")),
    };
    Ok(Session {
        user,
        kind,
        created_ms: d.u64()?,
        expires_ms: d.u64()?,
        label: d.str()?.to_string(),
    })
}
