//! The data directory's memory of its database: `chatd.id`, a small text file beside
//! `chatd.redb` naming the database's epoch (random per history; see `schema::META_EPOCH`).
//!
//! redb turns a missing or empty file into a new database, so without this a database truncated
//! to 0 bytes or deleted by mistake would silently start over: every account gone, and with
//! `--registration closed` the first person to register would become admin. With it, a
//! directory that has held a database refuses to start without one and says what to do:
//! `chatd restore`, or `--new-database` to really start over. Written (and fsync'd, with its
//! directory entry) when a database is created, restored or started over, and whenever the
//! database's epoch differs from it (a database copied in by hand: taken, with a warning).
//! Only `store` uses this; it calls nothing but the file system.

use std::io::Write;
use std::path::Path;

use super::{wal, Result, StoreError, DB_FILE};

/// File name of the identity marker inside the data directory.
pub const ID_FILE: &str = "chatd.id";

/// The epoch the marker in `dir` names, if there is a readable marker.
pub fn read(dir: &Path) -> std::io::Result<Option<u64>> {
    let text = match std::fs::read_to_string(dir.join(ID_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(Some(0)),
        Err(e) => return Err(e),
    };
    // An unreadable marker still says a database was here (epoch 0: unknown).
    Ok(Some(
        text.lines()
            .find_map(|l| l.strip_prefix("epoch "))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .unwrap_or(0),
    ))
}

/// Writes the marker for `epoch` durably (a new file renamed over the old one).
pub fn write(dir: &Path, epoch: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    write!(
        f,
        "chatd data directory identity: the database chatd.redb beside this file has\n\
         epoch {epoch:016x}\n\
         Keep this file. While it is here, chatd refuses to start with a missing or empty\n\
         database instead of silently creating a new one (see docs/OPERATIONS.md).\n"
    )?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(ID_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    super::same_owner_as_dir(&dir.join(ID_FILE), dir);
    Ok(())
}

/// Before redb opens (and would create) the database: refuses when the database is missing or
/// empty although the directory held one (a marker, or a log with records), unless
/// `new_database`. Starting over keeps the old log files aside. Returns the epoch of the
/// database being replaced when starting over.
pub fn before_open(dir: &Path, new_database: bool) -> Result<Option<u64>> {
    let path = dir.join(DB_FILE);
    let size = match std::fs::metadata(&path) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::Io(e)),
    };
    if size.is_some_and(|n| n > 0) {
        if new_database {
            tracing::warn!(
                "--new-database ignored: {} holds a database (remove the flag)",
                path.display()
            );
        }
        return Ok(None);
    }
    let marker = read(dir).map_err(StoreError::Io)?;
    let mut logs = Vec::new();
    for name in wal::WAL_FILES {
        if wal::holds_records(&dir.join(name)).map_err(StoreError::Io)? {
            logs.push(name);
        }
    }
    if marker.is_none() && logs.is_empty() {
        return Ok(None); // a new data directory
    }
    let state = if size.is_some() {
        "empty (0 bytes)"
    } else {
        "missing"
    };
    let had = match marker {
        Some(e) if e != 0 => format!("{ID_FILE} names the database with epoch {e:016x}"),
        Some(_) => format!("{ID_FILE} says it did"),
        None => format!("{} holds its logged changes", logs.join(" and ")),
    };
    if !new_database {
        return Err(StoreError::Refused(format!(
            "{} is {state}, but this data directory has held a database ({had}). chatd does not start over with a new empty database, which would lose every account and message (and let the first person to register become admin). Put the database file back, or restore a backup with `chatd restore --data-dir {} FILE`; to really start over with an empty database, start once with --new-database",
            path.display(),
            dir.display()
        )));
    }
    // Starting over: the old log belongs to the old database.
    let stamp = crate::model::now_ms();
    for name in logs {
        let aside = dir.join(format!("{name}.before-new-database-{stamp}"));
        std::fs::rename(dir.join(name), &aside).map_err(StoreError::Io)?;
        tracing::warn!("--new-database: kept the old log as {}", aside.display());
    }
    tracing::warn!(
        "--new-database: {} was {state}; starting over with a new, empty database",
        path.display()
    );
    Ok(Some(marker.unwrap_or(0)))
}

/// After the database is open with `epoch`: records it in the marker if the marker is missing
/// or names another epoch.
pub fn after_open(dir: &Path, epoch: u64, starting_over: Option<u64>) -> std::io::Result<()> {
    match read(dir)? {
        Some(e) if e == epoch => Ok(()),
        Some(e) if starting_over.is_none() => {
            tracing::warn!(
                "{} is not the database this directory held before (epoch {epoch:016x}, {ID_FILE} named {e:016x}): it was copied in by hand; taking it",
                dir.join(DB_FILE).display()
            );
            write(dir, epoch)
        }
        _ => write(dir, epoch),
    }
}
