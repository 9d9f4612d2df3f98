//! `chatd compact`: rewrites the database densely, for small disks (an SD card).
//!
//! redb packs leaves full only when keys arrive in ascending order at the end of a table.
//! Messages arrive at the end of each conversation's range instead, so every conversation's
//! last leaf splits in half when it fills and the left half stays half empty forever: a busy
//! server's `messages` table uses about twice its bytes (see docs/BENCHMARKS.md). A copy made
//! in key order (as `chatd backup` makes it) is dense. Compacting is that copy put in place of
//! the database, with the same epoch (clients keep their cursors), after the log has been
//! applied; the old file is kept as `chatd.redb.before-compact-<ms>` until the operator
//! deletes it. The server must be stopped.

use std::path::{Path, PathBuf};

use super::{backup::DbSummary, check, Result, Store, StoreError, DB_FILE};

/// What `compact` did.
#[derive(Debug)]
pub struct Compacted {
    pub summary: DbSummary,
    /// Size before, in bytes (the file; and the disk space its blocks took).
    pub before: (u64, u64),
    /// Where the old file is.
    pub kept: PathBuf,
}

/// (size, disk space) of a file.
fn sizes(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(StoreError::Io)?;
    Ok((m.len(), m.blocks() * 512))
}

/// Compacts the database of `dir` (see the module doc).
pub fn compact(dir: &Path, now_ms: u64) -> Result<Compacted> {
    let live = dir.join(DB_FILE);
    let staging = dir.join(format!("{DB_FILE}.compacting"));
    let _ = std::fs::remove_file(&staging);
    {
        // Applies what the log holds and stops cleanly (the copy needs no log).
        let store = Store::open(dir)?;
        store.checkpoint()?;
        store.backup_to(&staging)?;
    }
    let report = check::check_file(&staging)?;
    if !report.damage.is_empty() {
        let _ = std::fs::remove_file(&staging);
        return Err(StoreError::Corrupt(format!(
            "the compacted copy does not pass `chatd check` ({}); nothing was replaced",
            report.damage.join("; ")
        )));
    }
    let before = sizes(&live)?;
    let kept = dir.join(format!("{DB_FILE}.before-compact-{now_ms}"));
    std::fs::rename(&live, &kept).map_err(StoreError::Io)?;
    std::fs::rename(&staging, &live).map_err(StoreError::Io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Io)?;
    super::same_owner_as_dir(&live, dir);
    let store = Store::open(dir)?;
    let summary = store.summary(&live)?;
    store.checkpoint()?;
    Ok(Compacted {
        summary,
        before,
        kept,
    })
}
