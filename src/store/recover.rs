//! Opening the log after a stop, and what the store refuses to start on.
//!
//! `Store::open` reads both log files (`wal::scan`) before it changes anything and checks them
//! against the database's durable state: the number of the last batch it applied
//! (`meta.wal_applied`), its epoch, and whether it was using the log when it stopped
//! (`meta.wal_open`: set by a durable commit when the log is opened, cleared by the final
//! checkpoint of a clean stop). Replaying is only exact if the log holds every batch after
//! `wal_applied`, in order: applying a later batch over a missing one would give its messages
//! other seqs than their acks named. So the start stops, with one message saying what is missing
//! and what to do, when:
//! - the log's batches do not continue the database's (a gap: the database file went back to
//!   an older commit, or batches are missing between the two files);
//! - a record is damaged and intact records of the same file follow it (a torn last append is
//!   normal and cut off quietly; see `wal::Damage`);
//! - a log file is not a chatd log at all (garbage at its start);
//! - a log file is missing although the database was using the log;
//! - the log holds batches of another database (another epoch): the database file was
//!   replaced while its log still held batches.
//!
//! With `--discard-damaged-log` the operator accepts the loss: the batches that continue the
//! database's state without a gap are applied, the rest is not, both log files are kept aside
//! (`chatd.wal.damaged-<ms>`), and an ERROR line says what was discarded. It may call `wal`
//! and redb (through the store); nothing above the store.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase};

use super::schema::{META, META_WAL_APPLIED, META_WAL_OPEN};
use super::{chat, wal, Result, Store, StoreError};

/// What is wrong with the log, phrased for the operator.
struct Problems {
    lines: Vec<String>,
    /// Batch numbers (after the database's) that are known to be lost if the start goes on.
    lost_batches: u64,
}

/// The log to continue with and the batches to replay (in order, all after `applied`).
pub(super) struct Opened {
    pub wal: wal::Wal,
    pub replay: Vec<wal::Batch>,
    /// Why the log could not be given its room (see `wal::Recovered::unprepared`).
    pub unprepared: Option<std::io::Error>,
}

/// Reads `wal_applied` and `wal_open` from the durable state redb came back with.
pub(super) fn durable_state(db: &Database) -> Result<(u64, bool)> {
    let tx = db.begin_read()?;
    let meta = tx.open_table(META)?;
    let applied = meta.get(META_WAL_APPLIED)?.map_or(0, |v| v.value());
    let open = meta.get(META_WAL_OPEN)?.is_some_and(|v| v.value() == 1);
    Ok((applied, open))
}

/// What the log files hold against the database's durable state.
pub(super) struct Analysis {
    /// What is wrong, phrased for the operator; empty when the log can be replayed exactly.
    pub problems: Vec<String>,
    /// At least this many batches are lost if the start goes on without them.
    pub lost_batches: u64,
    /// The batches after the database's state that continue it without a gap (to replay).
    pub continuing: u64,
    /// Batches of this database after its durable state (all of them, gap or not).
    pub pending: u64,
    /// Damaged records whose loss costs nothing (every record after them is in the database).
    pub harmless: Vec<String>,
}

/// Compares a `wal::scan` with the durable state (`applied`, `was_open`) of the database with
/// `epoch`; changes nothing.
pub(super) fn analyze(scan: &wal::Scan, applied: u64, was_open: bool, epoch: u64) -> Analysis {
    let mut problems = Problems {
        lines: Vec::new(),
        lost_batches: 0,
    };
    let mut harmless = Vec::new();
    for f in &scan.files {
        if was_open && !f.existed {
            problems.lines.push(format!(
                "the log file {} is missing, but the database was using its log when it stopped: the batches after its last checkpoint (batch {applied}) are lost with it",
                f.name
            ));
        }
        match f.damage() {
            None => {}
            Some(wal::Damage::NotALog) => problems.lines.push(format!(
                "{} ({} bytes) is not a chatd log: it does not start with a log record (replaced, or its start is destroyed); what it held is lost",
                f.name, f.size
            )),
            Some(wal::Damage::Record {
                offset,
                after_batch,
                intact_after,
            }) => {
                let needed: Vec<u64> = intact_after
                    .iter()
                    .filter(|(n, e)| *n > applied && (*e == epoch || *e == 0))
                    .map(|(n, _)| *n)
                    .collect();
                let what = match after_batch {
                    Some(n) => format!("the record after batch {n}"),
                    None => "its first record".to_string(),
                };
                if needed.is_empty() {
                    harmless.push(format!(
                        "{} has a damaged record at byte {offset} ({what}); every intact record after it is already in the database, so nothing is lost",
                        f.name
                    ));
                } else {
                    problems.lost_batches += needed.len() as u64 + 1;
                    problems.lines.push(format!(
                        "{} has a damaged record at byte {offset} ({what}), and {} intact records follow it (batches {} to {}): they cannot be applied without the damaged one",
                        f.name,
                        needed.len(),
                        needed.first().copied().unwrap_or(0),
                        needed.last().copied().unwrap_or(0),
                    ));
                }
            }
        }
    }
    // Every batch of both files, ours and others', and the voided numbers.
    let mut foreign = 0u64;
    let mut foreign_epoch = 0;
    let mut numbers: Vec<u64> = Vec::new();
    let mut pending = 0;
    for f in &scan.files {
        for b in f.batches() {
            if b.epoch != epoch {
                foreign += 1;
                foreign_epoch = b.epoch;
            } else if b.number > applied {
                numbers.push(b.number);
                pending += 1;
            }
        }
        numbers.extend(f.aborted().iter().filter(|n| **n > applied));
    }
    if foreign > 0 {
        problems.lost_batches += foreign;
        problems.lines.push(format!(
            "the log holds {foreign} batches of another database (epoch {foreign_epoch:016x}, this one is {epoch:016x}): the database file was replaced while its log still held changes, which are lost"
        ));
    }
    numbers.sort_unstable();
    numbers.dedup();
    // The batches that continue the database without a gap.
    let mut next = applied + 1;
    let mut gap = None;
    for n in &numbers {
        if *n != next {
            gap = Some((next, n - 1));
            break;
        }
        next += 1;
    }
    if let Some((from, to)) = gap {
        problems.lost_batches += to - from + 1;
        let range = if from == to {
            format!("batch {from} is")
        } else {
            format!("batches {from} to {to} are")
        };
        problems.lines.push(format!(
            "the database's durable state ends at batch {applied}, but the log continues at batch {}: {range} missing (the database file went back to an older commit, or log records are lost); applying the later ones would give acknowledged messages other seqs",
            to + 1
        ));
    }
    Analysis {
        problems: problems.lines,
        lost_batches: problems.lost_batches,
        continuing: next,
        pending,
        harmless,
    }
}

/// Checks the log files of `dir` against the database and opens them (see the module doc).
pub(super) fn open_log(db: &Database, dir: &Path, epoch: u64, discard: bool) -> Result<Opened> {
    let (applied, was_open) = durable_state(db)?;
    let io = |e: std::io::Error| {
        StoreError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot open the log in {}: {e}", dir.display()),
        ))
    };
    let scan = wal::scan(dir).map_err(io)?;
    let analysis = analyze(&scan, applied, was_open, epoch);
    for h in &analysis.harmless {
        tracing::warn!("{h}");
    }
    let continuing = analysis.continuing;
    let problems = Problems {
        lines: analysis.problems,
        lost_batches: analysis.lost_batches,
    };

    if problems.lines.is_empty() {
        // The usual case: replay what the database lacks.
        let (wal, recovered) = wal::Wal::open_scanned(dir, scan).map_err(io)?;
        if recovered.dropped_bytes > 0 {
            tracing::debug!(
                bytes = recovered.dropped_bytes,
                "cut off a torn last log record (a write the crash cut short; never acknowledged)"
            );
        }
        let unprepared = recovered.unprepared;
        let replay = recovered
            .batches
            .into_iter()
            .filter(|b| b.epoch == epoch && b.number > applied)
            .collect();
        return Ok(Opened {
            wal,
            replay,
            unprepared,
        });
    }
    let summary = problems.lines.join("; ");
    if !discard {
        return Err(StoreError::Refused(format!(
            "the write-ahead log in {} does not match the database, so acknowledged changes would be lost or renumbered: {summary}. chatd does not start on it. Restore a backup (`chatd restore`), or start once with --discard-damaged-log to go on from what the database and the intact part of the log hold (at least {} batches of acknowledged changes are then lost; the log files are kept aside). `chatd check` describes the damage",
            dir.display(),
            problems.lost_batches.max(1),
        )));
    }
    // The operator accepts the loss: keep the files aside, apply what continues without a gap.
    let stamp = crate::model::now_ms();
    let mut kept = Vec::new();
    for f in &scan.files {
        if f.existed && f.size > 0 {
            let from = dir.join(f.name);
            let to = dir.join(format!("{}.damaged-{stamp}", f.name));
            std::fs::rename(&from, &to).map_err(io)?;
            kept.push(to.display().to_string());
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    let replay: Vec<wal::Batch> = scan
        .files
        .into_iter()
        .flat_map(|f| f.into_batches())
        .filter(|b| b.epoch == epoch && b.number > applied && b.number < continuing)
        .collect();
    let mut replay = replay;
    replay.sort_by_key(|b| b.number);
    tracing::error!(
        "--discard-damaged-log: starting without what the damaged log held after batch {}: {summary}. The log files were kept as {}",
        continuing - 1,
        if kept.is_empty() {
            "(none: they were missing)".to_string()
        } else {
            kept.join(", ")
        }
    );
    let (wal, recovered) = wal::Wal::open(dir).map_err(io)?;
    Ok(Opened {
        wal,
        replay,
        unprepared: recovered.unprepared,
    })
}

impl Store {
    /// Re-applies `batches` (in order, each the next after the database's), makes them durable
    /// with the mark that the log is in use (`meta.wal_open`), and empties the log.
    pub(super) fn replay(&self, batches: Vec<wal::Batch>) -> Result<()> {
        let applied = self.meta(META_WAL_APPLIED)?.unwrap_or(0);
        let mut cache = chat::MemberCache::default();
        let mut last = applied;
        let replayed = batches.len();
        for b in batches {
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
        }
        if replayed > 0 {
            tracing::info!(
                batches = replayed,
                "recovered logged batches after an unclean stop"
            );
        }
        let mut j = self.lock_journal();
        j.next = last + 1;
        // One durable commit: the replayed batches, and the mark that this database's changes
        // since it are in the log in this directory. Made on whatever the health says: on a
        // full disk it fails, the batches stay in the log (and applied in memory, so they are
        // read), and writes are refused until the sync thread has made them durable (`heal`;
        // the next batch then marks the log again).
        let tx = self.write_unchecked()?;
        tx.open_table(META)?.insert(META_WAL_OPEN, 1)?;
        match tx.commit() {
            Ok(()) => {
                j.log_marked = true;
                j.unpersisted = 0;
                j.last_checkpoint = std::time::Instant::now();
                if let Err(e) = j.wal.reset() {
                    self.stop_writes("emptying the write-ahead log", &e);
                }
                Ok(())
            }
            Err(StoreError::Unwritable(_)) => {
                j.unpersisted = replayed as u64;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
