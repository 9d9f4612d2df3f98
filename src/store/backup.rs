//! Backups and restores: a consistent copy of every table, taken from one read transaction so it
//! can run while the server keeps committing (redb's MVCC: a commit is either wholly in the copy
//! or wholly out), and the checks that guard putting a copy back.
//!
//! Part of the store, so it is the only other place that names tables; it copies them all
//! generically, which is why a new table must be added to `copy_all` (a test compares the list
//! against what `init_schema` creates).

use std::path::{Path, PathBuf};

use redb::{Key, ReadTransaction, TableDefinition, Value, WriteTransaction};

use super::*;

/// What a database file holds, for the administrator's eyes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbSummary {
    pub schema: u64,
    pub users: u64,
    pub conversations: u64,
    pub messages: u64,
    /// File size in bytes.
    pub bytes: u64,
}

impl fmt::Display for DbSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} users, {} conversations, {} messages, schema {}, {:.1} MiB",
            self.users,
            self.conversations,
            self.messages,
            self.schema,
            self.bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

impl Store {
    /// Writes a consistent snapshot of the whole database to the new file `dest` (which must not
    /// exist), durably, and describes it. Blocking; the server runs it on the blocking pool while
    /// the writer keeps committing.
    pub fn backup_to(&self, dest: &Path) -> Result<DbSummary> {
        if dest.exists() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", dest.display()),
            )));
        }
        let snapshot = self.db.begin_read()?;
        let result = write_copy(&snapshot, dest);
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    /// Gives the database a new random epoch, so connected clients can tell that its history was
    /// replaced (after a restore) and start over instead of trusting their cursors.
    pub fn reset_epoch(&mut self) -> Result<u64> {
        let e = random_u64();
        let tx = self.write()?;
        tx.open_table(META)?.insert(META_EPOCH, e)?;
        tx.commit()?;
        self.epoch = e;
        Ok(e)
    }

    /// Describes the open database.
    pub fn summary(&self, path: &Path) -> Result<DbSummary> {
        let tx = self.db.begin_read()?;
        summarize(&tx, path)
    }
}

fn write_copy(snapshot: &ReadTransaction, dest: &Path) -> Result<DbSummary> {
    let db = Database::create(dest)?;
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    copy_all(snapshot, &tx)?;
    // A copy has no log beside it (see `schema::META_WAL_OPEN`).
    tx.open_table(META)?.remove(META_WAL_OPEN)?;
    tx.commit()?;
    let mut summary = summarize(&db.begin_read()?, dest)?;
    // Closing the database settles its file; measure after.
    drop(db);
    summary.bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(summary)
}

/// Copies every table of the schema. Keep in step with `schema.rs` and `init_schema`.
fn copy_all(from: &ReadTransaction, to: &WriteTransaction) -> Result<()> {
    copy(from, to, META)?;
    copy(from, to, USERS)?;
    copy(from, to, USER_NAMES)?;
    copy(from, to, SESSIONS)?;
    copy(from, to, USER_SESSIONS)?;
    copy(from, to, CONVERSATIONS)?;
    copy(from, to, MEMBERS)?;
    copy(from, to, READ_SEQS)?;
    copy(from, to, DIRECT_PAIRS)?;
    copy(from, to, MESSAGES)?;
    copy(from, to, CLIENT_IDS)?;
    copy(from, to, SETTINGS)?;
    copy(from, to, INVITES)?;
    copy(from, to, USER_SKELETONS)?;
    copy(from, to, LAST_SEEN)?;
    copy(from, to, EVENT_SEQS)?;
    copy(from, to, MENTIONS)?;
    copy(from, to, MUTES)?;
    copy(from, to, super::files::FILES)?;
    copy(from, to, super::files::FILE_CONVS)?;
    copy(from, to, super::files::MESSAGE_FILES)?;
    Ok(())
}

fn copy<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<()> {
    let src = from.open_table(def)?;
    let mut dst = to.open_table(def)?;
    for row in src.iter()? {
        let (k, v) = row?;
        dst.insert(k.value(), v.value())?;
    }
    Ok(())
}

fn summarize(tx: &ReadTransaction, path: &Path) -> Result<DbSummary> {
    let meta = tx.open_table(META)?;
    let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
    let schema = get(META_SCHEMA_VERSION)?;
    let messages = tx.open_table(MESSAGES)?.len()?;
    Ok(DbSummary {
        schema,
        users: tx.open_table(USERS)?.len()?,
        conversations: tx.open_table(CONVERSATIONS)?.len()?,
        messages,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}

/// Opens a database file that no server uses (a backup) without changing it, checks that this
/// chatd can use it, and describes it.
pub fn inspect(path: &Path) -> Result<DbSummary> {
    let bytes = std::fs::metadata(path).map_err(StoreError::Io)?.len();
    let db = match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::Locked(path.to_path_buf()))
        }
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(StoreError::Io(e))
        }
        Err(e) => return Err(e.into()),
    };
    let tx = db.begin_read()?;
    let summary = match summarize(&tx, path) {
        Ok(s) => DbSummary { bytes, ..s },
        Err(StoreError::Db(redb::Error::TableDoesNotExist(t))) => {
            return Err(StoreError::Corrupt(format!("it has no {t} table")))
        }
        Err(e) => return Err(e),
    };
    if summary.schema == 0 {
        return Err(StoreError::Corrupt("it has no schema version".into()));
    }
    if summary.schema > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: summary.schema,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(summary)
}

/// What `restore` did.
#[derive(Debug)]
pub struct Restored {
    pub summary: DbSummary,
    /// Where the database that was replaced now is, if there was one.
    pub previous: Option<PathBuf>,
}

/// Puts the backup `file` in place as the database of `dir`. Refuses while a server holds the
/// current database, and refuses a file this chatd cannot use. The current database is kept
/// beside it as `chatd.redb.before-restore-<ms>`; the restored one is upgraded to this schema
/// and gets a new epoch (clients start over instead of trusting cursors from the old history).
pub fn restore(file: &Path, dir: &Path, now_ms: u64) -> Result<Restored> {
    inspect(file)?;
    let live = dir.join(DB_FILE);
    if live.exists() {
        // Opening it proves no server (or other command) has the database open, and applies
        // whatever its write-ahead log still holds, so the copy kept below is complete and
        // the log is empty (it belongs to the replaced history, not to the restored one).
        match Store::open(dir) {
            // A clean stop: the copy kept aside then opens without its log.
            Ok(store) => store.checkpoint()?,
            Err(StoreError::Locked(p)) => return Err(StoreError::Locked(p)),
            // A damaged current database is a good reason to restore; do not insist on it.
            Err(_) => {}
        }
    }
    // Whatever the log still holds (the current database could not take it, or there is no
    // database beside it) belongs to the replaced history: keep it aside, never replay it onto
    // the restored one.
    // A file without records (but with preallocated space, or a reused file's old records)
    // is removed, so the restored database starts with a clean log.
    for name in super::wal::WAL_FILES {
        let wal = dir.join(name);
        if super::wal::holds_records(&wal).map_err(StoreError::Io)? {
            let aside = dir.join(format!("{name}.before-restore-{now_ms}"));
            std::fs::rename(&wal, aside).map_err(StoreError::Io)?;
        } else if wal.exists() {
            std::fs::remove_file(&wal).map_err(StoreError::Io)?;
        }
    }
    let staging = dir.join(format!("{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&staging);
    std::fs::copy(file, &staging).map_err(StoreError::Io)?;
    {
        // A backup of an older chatd may say its log was in use; it has none here.
        let db = Database::create(&staging)?;
        let tx = db.begin_write()?;
        tx.open_table(META)?.remove(META_WAL_OPEN)?;
        tx.commit()?;
    }
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::Io)?;
    // The marker names the replaced database; the restored one gets its own below.
    match std::fs::remove_file(dir.join(super::identity::ID_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::Io(e)),
        _ => {}
    }
    let previous = if live.exists() {
        let old = dir.join(format!("{DB_FILE}.before-restore-{now_ms}"));
        std::fs::rename(&live, &old).map_err(StoreError::Io)?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(&staging, &live).map_err(StoreError::Io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Io)?;
    let mut store = Store::open(dir)?;
    let epoch = store.reset_epoch()?;
    super::identity::write(dir, epoch).map_err(StoreError::Io)?;
    let summary = store.summary(&live)?;
    Ok(Restored { summary, previous })
}
