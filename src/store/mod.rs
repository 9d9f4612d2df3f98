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
//! The store must not call into the HTTP, WebSocket or hub layers.

pub mod accounts;
pub mod backup;
pub mod chat;
mod codec;
mod dbfile;
pub mod schema;
#[cfg(test)]
mod tests;
pub mod wal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    /// Registration is closed and the database already has accounts.
    RegistrationClosed,
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
            StoreError::RegistrationClosed => write!(f, "registration is closed"),
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
    syncer: Arc<std::sync::mpsc::SyncSender<()>>,
}

/// The log and what the writer needs to use it.
struct Journal {
    wal: wal::Wal,
    /// Number of the next batch.
    next: u64,
    last_checkpoint: Instant,
    /// Batches applied without a durable redb commit since the last checkpoint.
    unpersisted: u64,
    /// Set when a logged batch could neither be applied nor voided: logging more would make
    /// recovery replay it before them, so no further batch is accepted.
    broken: bool,
}

/// Checkpoint (durable redb commit, then an empty log) when the log is this big...
const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// ... or this long after the previous checkpoint.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// While the previous checkpoint's fsync is still under way, the next one waits for it unless
/// the log has grown this big.
const CHECKPOINT_BYTES_MAX: u64 = 4 * CHECKPOINT_BYTES;

/// Starts the thread that completes deferred checkpoint fsyncs and then empties the log file
/// they cover. If the fsync fails, nothing is emptied and the writer stops taking batches (the
/// log holds them all; the next start replays them).
fn spawn_syncer(
    dbfile: dbfile::DbFile,
    journal: Arc<Mutex<Journal>>,
) -> Result<std::sync::mpsc::SyncSender<()>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("chatd-sync".into())
        .spawn(move || {
            let lock = || journal.lock().unwrap_or_else(|p| p.into_inner());
            while rx.recv().is_ok() {
                // The checkpoint before this switch has made its writes (both happen under
                // the journal lock), so the fsync below covers it.
                let switch = lock().wal.switches();
                let synced = dbfile.sync_deferred();
                let mut j = lock();
                let emptied = synced.and_then(|_| j.wal.finish_retire(switch));
                if let Err(e) = emptied {
                    tracing::error!(
                        "cannot complete a checkpoint ({e}); no more messages are accepted, the log keeps every batch: restart chatd"
                    );
                    j.broken = true;
                }
            }
        })
        .map_err(StoreError::Io)?;
    Ok(tx)
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
        let path = dir.join(DB_FILE);
        let new_db = !path.exists();
        let dbfile = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(dbfile::DbFile::new)
            .map_err(|e| {
                StoreError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot open {}: {e}", path.display()),
                ))
            })?;
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
        let epoch = init_schema(&db)?;
        accounts::init_tables(&db)?;
        if new_db {
            same_owner_as_dir(&path, dir);
        }
        let (wal, recovered) = wal::Wal::open(dir).map_err(|e| {
            StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot open the log in {}: {e}", dir.display()),
            ))
        })?;
        let journal = Arc::new(Mutex::new(Journal {
            wal,
            next: 1,
            last_checkpoint: Instant::now(),
            unpersisted: 0,
            broken: false,
        }));
        let syncer = spawn_syncer(dbfile.clone(), journal.clone())?;
        let store = Store {
            db: Arc::new(db),
            epoch,
            journal,
            dbfile,
            syncer: Arc::new(syncer),
        };
        store.recover(recovered)?;
        Ok(store)
    }

    /// Re-applies the logged batches that the last durable commit does not have, makes them
    /// durable and empties the log.
    fn recover(&self, recovered: wal::Recovered) -> Result<()> {
        let applied = self.meta(META_WAL_APPLIED)?.unwrap_or(0);
        if recovered.dropped_bytes > 0 {
            tracing::info!(
                bytes = recovered.dropped_bytes,
                "cut off what followed the last intact record of the log: a write the crash cut short, or the rest of older records of a reused log file (neither was acknowledged or is still needed)"
            );
        }
        let mut cache = chat::MemberCache::default();
        let mut last = applied;
        let mut replayed = 0;
        for b in recovered.batches {
            if b.epoch != self.epoch {
                tracing::warn!(
                    batch = b.number,
                    "the log holds a batch of another database (a different epoch); ignored"
                );
                continue;
            }
            if b.number <= applied {
                continue;
            }
            let ops: Vec<wal::LoggedOp<'_>> = b
                .ops
                .iter()
                .map(|(actor, name, change)| wal::LoggedOp {
                    actor: *actor,
                    actor_name: name,
                    change,
                })
                .collect();
            self.apply_batch(
                &mut cache,
                b.number,
                b.now_ms,
                &ops,
                Durability::None,
                || Ok(()),
            )?;
            last = b.number;
            replayed += 1;
        }
        let mut j = self.lock_journal();
        j.next = last + 1;
        if replayed > 0 || !j.wal.is_empty() {
            if replayed > 0 {
                tracing::info!(
                    batches = replayed,
                    "recovered logged batches after an unclean stop"
                );
            }
            j.unpersisted = replayed;
            self.checkpoint_locked(&mut j)?;
        }
        Ok(())
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
        if j.broken {
            return Err(StoreError::Io(std::io::Error::other(
                "the log could not be written earlier; restart chatd",
            )));
        }
        let number = j.next;
        let failed_log = |j: &mut Journal, e: std::io::Error| {
            if !j.wal.is_clean() {
                tracing::error!("the log could not be repaired after a failed write: {e}");
                j.broken = true;
            }
            StoreError::Io(e)
        };
        // The record's fsync runs on the log's sync thread while the batch is applied here;
        // the redb commit waits for it, so nothing of a batch the disk refused becomes visible.
        if let Err(e) = j.wal.begin_append(number, self.epoch, now_ms, ops) {
            return Err(failed_log(&mut j, e));
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
            // Cut off again and not committed to redb: as if the batch never happened.
            cache.clear();
            return Err(failed_log(&mut j, e));
        }
        match applied {
            Ok(results) => {
                j.unpersisted += 1;
                Ok(results)
            }
            Err(e) => {
                cache.clear();
                if let Err(e2) = j.wal.append_abort(number) {
                    tracing::error!("cannot void batch {number} in the log: {e2}");
                    j.broken = true;
                }
                Err(e)
            }
        }
    }

    /// Checkpoints if the log has grown past `CHECKPOINT_BYTES` or the last checkpoint is
    /// `CHECKPOINT_INTERVAL` old. The checkpoint's fsync is left to the syncer thread, so this
    /// costs the writer only redb's page writes; the next checkpoint waits until that fsync is
    /// done (unless the log has grown to `CHECKPOINT_BYTES_MAX`, then it syncs itself). A
    /// failure is logged: the log still holds everything and the next call tries again.
    /// Returns how long the checkpoint took, if one ran.
    pub fn checkpoint_if_due(&self) -> Option<Duration> {
        let mut j = self.lock_journal();
        if j.unpersisted == 0
            || (j.wal.len() < CHECKPOINT_BYTES && j.last_checkpoint.elapsed() < CHECKPOINT_INTERVAL)
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
        if let Err(e) = done {
            tracing::error!("checkpoint failed: {e}");
        }
        Some(t.elapsed())
    }

    /// A durable redb commit whose fsync is deferred; the log switches to its other file and
    /// the syncer thread empties the covered one after the fsync.
    fn checkpoint_deferred(&self, j: &mut Journal, wake_syncer: bool) -> Result<()> {
        let tx = self.write()?;
        self.dbfile.defer_next_sync();
        let committed = tx.commit();
        // Unused if the commit failed before its sync; must not defer a later commit's.
        let cancelled = self.dbfile.cancel_defer();
        committed?;
        cancelled.map_err(StoreError::Io)?;
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
            self.dbfile.sync_deferred().map_err(StoreError::Io)?;
            j.wal.reset().map_err(StoreError::Io)
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

    /// Makes every applied batch durable in redb and empties the log (a no-op if nothing is
    /// pending). The writer calls it when it stops.
    pub fn checkpoint(&self) -> Result<()> {
        let mut j = self.lock_journal();
        if j.unpersisted == 0 && j.wal.is_empty() {
            return Ok(());
        }
        self.checkpoint_locked(&mut j)
    }

    fn checkpoint_locked(&self, j: &mut Journal) -> Result<()> {
        // An Immediate commit persists every non-durable commit before it.
        let tx = self.write()?;
        tx.commit()?;
        j.unpersisted = 0;
        j.last_checkpoint = Instant::now();
        j.wal.reset().map_err(StoreError::Io)?;
        Ok(())
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

    fn write(&self) -> Result<redb::WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        // Explicit, although it is redb's default: acknowledged means fsync'd.
        tx.set_durability(Durability::Immediate)?;
        Ok(tx)
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
            let rec = Enc::new(1)
                .u64(session.user.0)
                .u8(match session.kind {
                    SessionKind::Cookie => 1,
                    SessionKind::Token => 2,
                })
                .u64(session.created_ms)
                .u64(session.expires_ms)
                .str(&session.label)
                .0;
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
        let session = decode_session(raw.value())?;
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
                Some(raw) => Some(decode_session(raw.value())?.user),
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
                out.push((*hash, decode_session(raw.value())?));
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
                let rec = Enc::new(1).u64(next).u8(2).u64(now_ms).u64(0).str("seed").0;
                sessions.insert(token, rec.as_slice())?;
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
fn init_schema(db: &Database) -> Result<u64> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
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

fn encode_user(u: &User) -> Vec<u8> {
    let mut flags = 0;
    if u.admin {
        flags |= USER_FLAG_ADMIN;
    }
    if u.disabled {
        flags |= USER_FLAG_DISABLED;
    }
    // v1 while the profile fields are unset, so an older chatd can still read the account.
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

fn decode_session(raw: &[u8]) -> Result<Session> {
    let mut d = Dec::new(raw, 1, "session record version")?;
    let user = UserId(d.u64()?);
    let kind = match d.u8()? {
        1 => SessionKind::Cookie,
        2 => SessionKind::Token,
        _ => return Err(StoreError::Corrupt("unknown session kind".into())),
    };
    Ok(Session {
        user,
        kind,
        created_ms: d.u64()?,
        expires_ms: d.u64()?,
        label: d.str()?.to_string(),
    })
}
