//! The write-ahead log of chat mutations: `<data-dir>/chatd.wal` and `chatd.wal2`.
//!
//! Why: a durable redb commit writes every page the batch touched (a dozen 4 KiB pages for one
//! message: four tables, their branch pages, the table tree, the freed-page list) and then
//! fsyncs, so a lone message's ack waited for ~0.5 ms of scattered writes. With the log, the
//! message writer appends one record per batch (the batch's *inputs*: who asked for what, and
//! the time) with a single `write` + `fdatasync` and applies the batch to redb with a
//! non-durable commit (pages stay in redb's write buffer), then acknowledges. The `fdatasync`
//! runs on the `chatd-logsync` thread while the writer applies the batch; the redb commit waits
//! for it, so a batch becomes visible to readers only once its record is on disk. A checkpoint
//! (a durable redb commit) now and then persists everything applied so far. Its fsync runs on
//! another thread (`dbfile`), so the log has two files: the checkpoint switches appends to the
//! empty one, and the one it covers is emptied once that fsync is done. Emptied means reused in
//! place (`LogFile::recycle`), not truncated: records are written over blocks the file already
//! has, kept at least `PREALLOC` long and zero-filled, so an append's `fdatasync` is a data
//! flush without a journal commit for a size change. Reading a file stops at the first record
//! that is not intact or that does not follow the one before (batch numbers grow, the epoch
//! stays): what lies beyond is zeros, old records of the file's previous use, or a torn write.
//!
//! Recovery (`Store::open`): every record of both files after the batch number stored in
//! `meta.wal_applied` is applied again, in order, on the last durable state. That reproduces
//! the lost non-durable commits exactly: applying a batch is deterministic given the state and
//! the record (the time is in the record), and every other writer in chatd commits durably,
//! which persists all earlier batches with it. A torn record at the end (a crash mid-append:
//! never acknowledged) is cut off. A batch whose redb apply failed after it was logged is
//! voided by an `abort` record, so recovery skips it (its ops were answered with errors).
//!
//! Record: magic `CWL2`, payload length (u32 LE), the file's salt (u64 LE), FNV-1a 64 of the
//! salt and the payload (u64 LE), payload (`codec` encoding: kind, batch number, database
//! epoch, time, ops). The salt is a random number drawn whenever a file is emptied and never
//! shown to anyone; a file's records all carry the one of its first record. It is what makes
//! reuse safe: old bytes behind the current records are never read as records, not even a
//! record a user crafted inside a message text (their own old message could otherwise sit
//! exactly where the current records end, with a valid checksum and a plausible batch number).
//! Files written before the salt (magic `CWL1`: length, FNV-1a of the payload, payload; never
//! reused) are still read. Only `store` uses this.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use super::chat::Change;
use super::codec::{Dec, DecodeError, Enc};
use super::fault::{self, LogHandle};
use crate::model::{ConversationId, UserId};

/// File names of the log's two halves inside the data directory.
pub const WAL_FILES: [&str; 2] = ["chatd.wal", "chatd.wal2"];

const MAGIC: &[u8; 4] = b"CWL2";
const HEADER: usize = 24;
/// Records of files written before the salt (16-byte header, no salt).
const MAGIC_V1: &[u8; 4] = b"CWL1";
const HEADER_V1: usize = 16;
/// Each file is kept at least this long, zero-filled beyond its records, and reused in place
/// rather than truncated: a record written over blocks the file already has needs only a data
/// flush, while one that makes the file longer makes `fdatasync` commit the file system's
/// journal too (measured on ext4: 0.09 ms against 0.16 ms per 4 KiB record).
pub(crate) const PREALLOC: u64 = 1024 * 1024;
/// Largest record accepted when reading back (a batch of the largest messages fits easily).
const RECORD_MAX: usize = 256 * 1024 * 1024;

const KIND_BATCH: u8 = 1;
const KIND_ABORT: u8 = 2;

/// One mutation as logged: who asked, under which name, for what.
pub struct LoggedOp<'a> {
    pub actor: UserId,
    pub actor_name: &'a str,
    pub change: &'a Change,
}

/// A batch read back from the log.
#[derive(Debug)]
pub struct Batch {
    pub number: u64,
    pub epoch: u64,
    pub now_ms: u64,
    pub ops: Vec<(UserId, String, Change)>,
}

/// What a log file held: batches in order, minus aborted ones.
pub struct Recovered {
    pub batches: Vec<Batch>,
    /// Numbers of the batches voided by an abort record (logged, never applied or acked).
    pub aborted: Vec<u64>,
    /// Bytes of a torn or damaged tail that were cut off.
    pub dropped_bytes: u64,
    /// Why a file could not be made `PREALLOC` long (the disk is full, say): the log works,
    /// but its next appends may fail; the store refuses writes until `Wal::repair` succeeds.
    pub unprepared: Option<std::io::Error>,
}

/// Both log files as read from the disk, before anything is changed: what `Wal::open` would
/// recover, and whether either file is damaged in a way that cutting it off would hide (see
/// `Damage`). The store checks this against the database before it opens the log.
pub struct Scan {
    pub files: [FileScan; 2],
}

/// One log file, read without changing it.
pub struct FileScan {
    pub name: &'static str,
    /// The file was there (a missing file is read as empty).
    pub existed: bool,
    /// Its size in bytes.
    pub size: u64,
    parsed: Parsed,
}

/// Damage in a log file that is more than a torn last append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file starts with neither a record nor zeros: it is not chatd's log, or its first
    /// record's header is destroyed.
    NotALog,
    /// The record at byte `offset` is not intact, yet intact records of the same use of the
    /// file follow it: not a torn append (always the last one), but damage to a record that
    /// was written, and cutting the file off there would drop the ones after it.
    Record {
        offset: u64,
        /// The batch number of the last intact record before it (`None`: it is the first).
        after_batch: Option<u64>,
        /// (batch number, epoch) of the intact records found after it, in file order (an abort
        /// record shows as its batch number with epoch 0).
        intact_after: Vec<(u64, u64)>,
    },
}

impl FileScan {
    pub fn batches(&self) -> &[Batch] {
        &self.parsed.batches
    }
    pub fn aborted(&self) -> &[u64] {
        &self.parsed.aborted
    }
    pub fn damage(&self) -> Option<&Damage> {
        self.parsed.damage.as_ref()
    }
    /// Bytes after the readable records that are neither zeros nor a reused file's old
    /// records behind a zeroed header: a torn append, or the damage in `damage`.
    pub fn dropped_bytes(&self) -> u64 {
        self.parsed.dropped_bytes
    }
    pub fn into_batches(self) -> Vec<Batch> {
        self.parsed.batches
    }
}

/// Reads both log files of `dir` without changing anything.
pub fn scan(dir: &Path) -> std::io::Result<Scan> {
    let one = |name: &'static str| -> std::io::Result<FileScan> {
        let (existed, bytes) = match std::fs::read(dir.join(name)) {
            Ok(b) => (true, b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (false, Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(FileScan {
            name,
            existed,
            size: bytes.len() as u64,
            parsed: parse(&bytes),
        })
    };
    Ok(Scan {
        files: [one(WAL_FILES[0])?, one(WAL_FILES[1])?],
    })
}

/// The log, appended to by the message writer only. It is two files used in turn: a checkpoint
/// whose fsync is still under way switches appends to the other (empty) file, and the file it
/// covers is emptied once that fsync has completed (`finish_retire`), so the writer never waits
/// for it.
pub struct Wal {
    files: [LogFile; 2],
    active: usize,
    /// The other file still holds batches that only a checkpoint still being synced covers.
    retiring: bool,
    /// Number of switches so far (so a late fsync cannot empty a file a newer switch left).
    switches: u64,
    /// The thread that fsyncs a record written by `begin_append` while the writer goes on.
    sync: LogSync,
    /// The result of an fsync `begin_append` had to run itself.
    sync_now: Option<std::io::Result<()>>,
}

/// One of the two files.
struct LogFile {
    file: Arc<LogHandle>,
    len: u64,
    /// Carried by every record of the file's current use (see the module doc).
    salt: u64,
    buf: Vec<u8>,
    /// Length of a record written by `begin_append` whose fsync is still to be collected.
    unsynced: Option<u64>,
    /// False once a failed append could not be cut off again.
    clean: bool,
}

/// A thread that runs `fdatasync` on the log file it is handed and answers with the result:
/// the writer applies a batch to redb while the disk takes the batch's record.
struct LogSync {
    req: SyncSender<Arc<LogHandle>>,
    done: Receiver<std::io::Result<()>>,
}

impl LogSync {
    fn spawn() -> std::io::Result<LogSync> {
        let (req, jobs) = sync_channel::<Arc<LogHandle>>(1);
        let (answer, done) = sync_channel(1);
        std::thread::Builder::new()
            .name("chatd-logsync".into())
            .spawn(move || {
                // Ends when the log (holding `req`) is dropped.
                while let Ok(file) = jobs.recv() {
                    if answer.send(file.sync_data()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(LogSync { req, done })
    }

    /// Starts an fsync of `file`; `wait` collects it. Runs it right here if the thread is gone.
    fn start(&self, file: &Arc<LogHandle>) -> Option<std::io::Result<()>> {
        match self.req.send(file.clone()) {
            Ok(()) => None,
            Err(_) => Some(file.sync_data()),
        }
    }

    fn wait(&self) -> std::io::Result<()> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the log's sync thread is gone")))
    }
}

impl Wal {
    /// Opens (creating them if needed) both log files in `dir` and reads back every intact
    /// record, in batch order. A damaged tail is cut off so appends continue after the last
    /// good record.
    pub fn open(dir: &Path) -> std::io::Result<(Wal, Recovered)> {
        Wal::open_scanned(dir, scan(dir)?)
    }

    /// `open`, from a `scan` of `dir` made just before (nothing may change the files between).
    pub fn open_scanned(dir: &Path, scan: Scan) -> std::io::Result<(Wal, Recovered)> {
        let [sa, sb] = scan.files;
        let (a, ra) = LogFile::open(dir, sa)?;
        let (b, rb) = LogFile::open(dir, sb)?;
        let sync = LogSync::spawn()?;
        let mut batches = ra.batches;
        batches.extend(rb.batches);
        batches.sort_by_key(|b| b.number);
        let mut aborted = ra.aborted;
        aborted.extend(rb.aborted);
        aborted.sort_unstable();
        Ok((
            Wal {
                files: [a, b],
                active: 0,
                retiring: false,
                switches: 0,
                sync,
                sync_now: None,
            },
            Recovered {
                batches,
                aborted,
                dropped_bytes: ra.dropped_bytes + rb.dropped_bytes,
                unprepared: ra.unprepared.or(rb.unprepared),
            },
        ))
    }

    /// Appends a batch and waits until it is on disk: `begin_append` + `finish_append`.
    #[cfg(test)]
    pub fn append_batch(
        &mut self,
        number: u64,
        epoch: u64,
        now_ms: u64,
        ops: &[LoggedOp<'_>],
    ) -> std::io::Result<()> {
        self.begin_append(number, epoch, now_ms, ops)?;
        self.finish_append()
    }

    /// Writes a batch's record and starts its `fdatasync` on the sync thread, so the caller can
    /// work meanwhile; `finish_append` waits for it and must come before any other call that
    /// changes the log. Until then the record does not count: if its write fails here, or its
    /// fsync fails there, it is cut off again.
    pub fn begin_append(
        &mut self,
        number: u64,
        epoch: u64,
        now_ms: u64,
        ops: &[LoggedOp<'_>],
    ) -> std::io::Result<()> {
        let f = &mut self.files[self.active];
        f.write_unsynced(&batch_payload(number, epoch, now_ms, ops))?;
        if let Some(r) = self.sync.start(&f.file) {
            // No sync thread: the result is ready now; `finish_append` takes it from `sync_now`.
            self.sync_now = Some(r);
        }
        Ok(())
    }

    /// Waits for the fsync `begin_append` started. On success the record counts; on failure it
    /// is cut off (see `is_clean`) and the error returned.
    pub fn finish_append(&mut self) -> std::io::Result<()> {
        let f = &mut self.files[self.active];
        let Some(n) = f.unsynced.take() else {
            return Ok(());
        };
        let synced = match self.sync_now.take() {
            Some(r) => r,
            None => self.sync.wait(),
        };
        match synced {
            Ok(()) => {
                f.len += n;
                Ok(())
            }
            Err(e) => {
                f.cut_off();
                Err(e)
            }
        }
    }

    /// Voids batch `number` (logged, but its redb apply failed, so nothing of it was acked).
    /// It is in the active file: nothing switches files between a batch and its abort.
    pub fn append_abort(&mut self, number: u64) -> std::io::Result<()> {
        let e = Enc::new(1).u8(KIND_ABORT).u64(number);
        self.files[self.active].write_record(&e.0)
    }

    /// Bytes in the file being appended to.
    pub fn len(&self) -> u64 {
        self.files[self.active].len
    }

    /// Whether both files are empty.
    pub fn is_empty(&self) -> bool {
        self.files.iter().all(|f| f.len == 0)
    }

    /// Whether the active file holds exactly the records appended successfully.
    pub fn is_clean(&self) -> bool {
        self.files[self.active].clean
    }

    /// Whether a switched-away file still waits for `finish_retire`.
    pub fn retiring(&self) -> bool {
        self.retiring
    }

    /// Switches appends to the other file, which is empty (a checkpoint covering everything
    /// logged so far has been committed; its fsync is still to come). Refused while the
    /// previous switch is not finished.
    pub fn switch(&mut self) -> bool {
        if self.retiring || self.files[1 - self.active].len != 0 {
            return false;
        }
        self.active = 1 - self.active;
        self.retiring = true;
        self.switches += 1;
        true
    }

    /// How many switches there have been.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Empties the switched-away file, if it is still the one switch number `switch` left: the
    /// checkpoint made before that switch is now durable.
    pub fn finish_retire(&mut self, switch: u64) -> std::io::Result<()> {
        if self.retiring && self.switches == switch {
            self.files[1 - self.active].recycle()?;
            self.retiring = false;
        }
        Ok(())
    }

    /// Makes the log fit to take records again after a failed write: the active file is cut
    /// back to the records that count if an earlier cut failed, and gets room for `PREALLOC`
    /// more bytes of records (zeros written and fsync'd now, so a disk that is still full
    /// fails here, not at the next append).
    pub fn repair(&mut self) -> std::io::Result<()> {
        let f = &mut self.files[self.active];
        if !f.clean {
            f.file.set_len(f.len)?;
            f.file.sync_all()?;
            f.clean = true;
        }
        f.make_room(f.len + PREALLOC)
    }

    /// Empties both files (after a checkpoint made everything in them durable in redb).
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.files[1 - self.active].reset()?;
        self.retiring = false;
        self.files[self.active].reset()
    }
}

impl LogFile {
    fn open(dir: &Path, scanned: FileScan) -> std::io::Result<(LogFile, Recovered)> {
        let path = dir.join(scanned.name);
        let created = !path.exists();
        // Not `append`: records are written at the end of the intact ones, over whatever the
        // file holds there (zeros, or old records of a reused file).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if created {
            // The new directory entry must survive a power loss before any ack relies on it.
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
            super::same_owner_as_dir(&path, dir);
        }
        let Parsed {
            batches,
            aborted,
            good,
            salt,
            dropped_bytes,
            ..
        } = scanned.parsed;
        if created && good > 0 {
            return Err(std::io::Error::other(format!(
                "{} disappeared while it was being opened",
                path.display()
            )));
        }
        let recovered = Recovered {
            batches,
            aborted,
            dropped_bytes,
            unprepared: None,
        };
        if recovered.dropped_bytes > 0 {
            // Not zeros: a torn write or old records. Cut off, so none of it can ever be read
            // back as a record; `prepare` below fills the space with zeros again.
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        let f = LogFile {
            file: Arc::new(fault::log_handle(file, &path)),
            len: good as u64,
            // Appends continue the records there are (recovery empties the file anyway).
            salt: salt.unwrap_or_else(fresh_salt),
            buf: Vec::new(),
            unsynced: None,
            clean: true,
        };
        // On a full disk the log still opens (reads and recovery need no space).
        let mut recovered = recovered;
        recovered.unprepared = f.prepare().err();
        Ok((f, recovered))
    }

    /// Makes the file at least `PREALLOC` long by writing zeros after its end (real writes, so
    /// the blocks are allocated and initialised: later records over them change no metadata).
    fn prepare(&self) -> std::io::Result<()> {
        self.make_room(PREALLOC)
    }

    /// Makes the file at least `size` long with zeros after its end, fsync'd.
    fn make_room(&self, size: u64) -> std::io::Result<()> {
        let have = self.file.metadata()?.len();
        if have >= size {
            return Ok(());
        }
        let zeros = vec![0u8; (size - have) as usize];
        self.file.write_all_at(&zeros, have)?;
        self.file.sync_data()
    }

    /// Appends a record and waits until it is on disk.
    fn write_record(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.write_unsynced(payload)?;
        let n = self.unsynced.take().unwrap_or(0);
        if let Err(e) = self.file.sync_data() {
            self.cut_off();
            return Err(e);
        }
        self.len += n;
        Ok(())
    }

    /// Writes a record after the last one that counts, without waiting for the disk; its
    /// length is kept in `unsynced` until the caller's fsync decides whether it counts.
    fn write_unsynced(&mut self, payload: &[u8]) -> std::io::Result<()> {
        debug_assert!(self.unsynced.is_none(), "one unsynced record at a time");
        self.buf.clear();
        frame_record(&mut self.buf, self.salt, payload);
        if let Err(e) = self.file.write_all_at(&self.buf, self.len) {
            self.cut_off();
            return Err(e);
        }
        self.unsynced = Some(self.buf.len() as u64);
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// A record that failed to reach the disk must not count: it was never acknowledged, and
    /// replaying it later would put it before batches that were. Cuts the file back to the
    /// records that count; if even that fails, the log can no longer be trusted (`is_clean`).
    fn cut_off(&mut self) {
        self.unsynced = None;
        self.clean = self.file.set_len(self.len).is_ok() && self.file.sync_all().is_ok();
    }

    /// Empties the file for reuse, keeping its blocks: the first record header is zeroed (a
    /// crash before the next record is written leaves the old records readable, which is
    /// harmless: the checkpoint that let this file go covers all of them, so recovery skips
    /// them by number), and the next record goes to offset 0. Nothing to wait for here.
    fn recycle(&mut self) -> std::io::Result<()> {
        debug_assert!(self.unsynced.is_none(), "recycle with a record in flight");
        if self.len == 0 && self.clean {
            return Ok(());
        }
        self.file.write_all_at(&[0u8; HEADER], 0)?;
        self.len = 0;
        self.salt = fresh_salt();
        self.clean = true;
        self.prepare()
    }

    /// Empties the file for good (it is cut to length 0): at a checkpoint that stops, recovers
    /// or catches up with the log.
    fn reset(&mut self) -> std::io::Result<()> {
        debug_assert!(self.unsynced.is_none(), "reset with a record in flight");
        if self.len == 0 && self.clean {
            return Ok(());
        }
        self.file.set_len(0)?;
        // From here appends start at 0 whether or not the sync below succeeds (and whatever a
        // failed append left behind is gone).
        self.len = 0;
        self.clean = true;
        self.salt = fresh_salt();
        self.file.sync_all()
    }
}

/// A salt for a file's next use: unpredictable (std's SipHash keys come from the OS at start),
/// and different every time.
fn fresh_salt() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

/// A record's checksum: FNV-1a 64 over the salt and the payload.
fn checksum(salt: u64, payload: &[u8]) -> u64 {
    fnv1a_from(fnv1a(&salt.to_le_bytes()), payload)
}

/// Appends a whole record (header, then `payload`) to `buf`.
pub(super) fn frame_record(buf: &mut Vec<u8>, salt: u64, payload: &[u8]) {
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&salt.to_le_bytes());
    buf.extend_from_slice(&checksum(salt, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Whether the log file at `path` holds any record (a missing file holds none).
pub fn holds_records(path: &Path) -> std::io::Result<bool> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse(&bytes).good > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn batch_payload(number: u64, epoch: u64, now_ms: u64, ops: &[LoggedOp<'_>]) -> Vec<u8> {
    let mut e = Enc::new(1)
        .u8(KIND_BATCH)
        .u64(number)
        .u64(epoch)
        .u64(now_ms)
        .u64(ops.len() as u64);
    for op in ops {
        e = encode_change(e.u64(op.actor.0).str(op.actor_name), op.change);
    }
    e.0
}

/// A log file's bytes, read back.
pub(super) struct Parsed {
    pub(super) batches: Vec<Batch>,
    pub(super) aborted: Vec<u64>,
    /// Length of the readable records.
    pub(super) good: usize,
    /// The salt of the records (if they have one).
    pub(super) salt: Option<u64>,
    pub(super) dropped_bytes: u64,
    pub(super) damage: Option<Damage>,
}

/// Reads records until the end or the first one that is damaged or not of the file's current
/// use, then looks at what follows (see `Damage`).
pub(super) fn parse(bytes: &[u8]) -> Parsed {
    let mut batches: Vec<Batch> = Vec::new();
    let mut aborted: Vec<u64> = Vec::new();
    let mut at = 0;
    let mut salt: Option<u64> = None;
    // The salt of the record where reading stopped, if it has the current one (or is the
    // first): intact records with it further on were written after it.
    let mut stop_salt: Option<u64> = None;
    loop {
        let rest = &bytes[at..];
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[i..i + 8]);
            u64::from_le_bytes(b)
        };
        // The record's header length, payload length and whether its checksum holds.
        let (header, len, ok) = if rest.len() >= HEADER && &rest[..4] == MAGIC {
            let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let (s, sum) = (u64_at(8), u64_at(16));
            // Every record of the file's current use has the salt of the first one.
            if salt.is_some_and(|first| first != s) || (at > 0 && salt.is_none()) {
                stop_salt = salt;
                break;
            }
            stop_salt = Some(s);
            let fits = len <= RECORD_MAX && rest.len() - HEADER >= len;
            let ok = fits && checksum(s, &rest[HEADER..HEADER + len]) == sum;
            if ok {
                salt = Some(s);
            }
            (HEADER, len, ok)
        } else if rest.len() >= HEADER_V1 && &rest[..4] == MAGIC_V1 && salt.is_none() {
            // A file from before the salt: such files were never reused.
            let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let fits = len <= RECORD_MAX && rest.len() - HEADER_V1 >= len;
            let ok = fits && fnv1a(&rest[HEADER_V1..HEADER_V1 + len]) == u64_at(8);
            (HEADER_V1, len, ok)
        } else {
            break;
        };
        if !ok {
            break;
        }
        let payload = &rest[header..header + len];
        match decode_record(payload) {
            Ok(Record::Batch(b)) => {
                // Batch numbers only grow within a file, under one database epoch; anything
                // else is an old record of a reused file, after the end of the current ones.
                if batches
                    .last()
                    .is_some_and(|last| b.number <= last.number || b.epoch != last.epoch)
                {
                    break;
                }
                batches.push(b)
            }
            Ok(Record::Abort(n)) => {
                batches.retain(|b| b.number != n);
                aborted.push(n);
            }
            Err(_) => break,
        }
        at += header + len;
    }
    // What follows the records is never read as records. It is unused space if it is zeros
    // (preallocated) or starts with a zeroed header (a reused file's old records); anything
    // else is reported and cut off: a torn write, or old records partly overwritten.
    let rest = &bytes[at..];
    let zeroed = rest.len() >= HEADER && rest[..HEADER].iter().all(|&b| b == 0);
    let dropped_bytes = if zeroed {
        0
    } else {
        rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64
    };
    let damage = if dropped_bytes == 0 {
        None
    } else if at == 0 && !torn_start_of(rest, MAGIC, MAGIC_V1) {
        Some(Damage::NotALog)
    } else {
        // Only records with the current salt count: they were written in this use of the
        // file, after the one where reading stopped (old records of a reused file, and any
        // record a user crafted inside a message text, have another).
        let intact_after = stop_salt.map_or_else(Vec::new, |s| intact_after(bytes, at + 1, s));
        (!intact_after.is_empty()).then(|| Damage::Record {
            offset: at as u64,
            after_batch: batches.last().map(|b| b.number),
            intact_after,
        })
    };
    Parsed {
        batches,
        aborted,
        good: at,
        salt,
        dropped_bytes,
        damage,
    }
}

/// Whether the bytes at `rest` (where reading stopped, at the file's start) could be a record
/// cut short by a power cut rather than something that is no log: each of the first four
/// bytes is either the magic's or zero. That covers a first record torn within its magic, and
/// a recycled file whose header zeroing was torn (`recycle`: the old records behind it are
/// covered by a checkpoint, so nothing is lost).
fn torn_start_of(rest: &[u8], a: &[u8; 4], b: &[u8; 4]) -> bool {
    let n = rest.len().min(4);
    let like = |m: &[u8; 4]| rest[..n].iter().zip(m).all(|(x, y)| *x == 0 || x == y);
    like(a) || like(b)
}

/// (batch number, epoch) of every intact record with `salt` from byte `from` on, in file order
/// (an abort record shows as its batch number with epoch 0).
fn intact_after(bytes: &[u8], from: usize, salt: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let want = salt.to_le_bytes();
    let mut i = from;
    while i + HEADER <= bytes.len() {
        let r = &bytes[i..];
        if &r[..4] == MAGIC && r[8..16] == want {
            let len = u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as usize;
            let mut sum = [0u8; 8];
            sum.copy_from_slice(&r[16..24]);
            if len <= RECORD_MAX
                && r.len() - HEADER >= len
                && checksum(salt, &r[HEADER..HEADER + len]) == u64::from_le_bytes(sum)
            {
                match decode_record(&r[HEADER..HEADER + len]) {
                    Ok(Record::Batch(b)) => out.push((b.number, b.epoch)),
                    Ok(Record::Abort(n)) => out.push((n, 0)),
                    Err(_) => {}
                }
                i += HEADER + len;
                continue;
            }
        }
        i += 1;
    }
    out
}

enum Record {
    Batch(Batch),
    Abort(u64),
}

fn decode_record(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut d = Dec::new(payload, 1, "log record version")?;
    match d.u8()? {
        KIND_BATCH => {
            let number = d.u64()?;
            let epoch = d.u64()?;
            let now_ms = d.u64()?;
            let n = d.u64()?;
            let mut ops = Vec::new();
            for _ in 0..n {
                let actor = UserId(d.u64()?);
                let name = d.str()?.to_string();
                ops.push((actor, name, decode_change(&mut d)?));
            }
            Ok(Record::Batch(Batch {
                number,
                epoch,
                now_ms,
                ops,
            }))
        }
        KIND_ABORT => Ok(Record::Abort(d.u64()?)),
        _ => Err(DecodeError("unknown log record kind")),
    }
}

const OP_SEND_CONV: u8 = 1;
const OP_SEND_USER: u8 = 2;
const OP_READ: u8 = 3;
const OP_CREATE_GROUP: u8 = 4;
const OP_ADD_MEMBERS: u8 = 5;
const OP_REMOVE_MEMBER: u8 = 6;
/// A send with attachments (issue 22): ops 1/2's fields, then the count and the file ids.
const OP_SEND_CONV_FILES: u8 = 7;
const OP_SEND_USER_FILES: u8 = 8;
/// Any other send (schema 5: a reply, mentions): ops 1/2's fields, then `reply_to` (0 = none),
/// the file ids (count, then each id as two u64) and the mentioned user ids (count, ids).
/// Sends that need none of these keep ops 1/2 (or 7/8 with files only), so the logs of older
/// builds decode unchanged and theirs stay what they were.
const OP_SEND_CONV_EXT: u8 = 9;
const OP_SEND_USER_EXT: u8 = 10;
/// Issue 23's events (schema 5): conversation, seq, text, mentions, client_id ("" = none).
const OP_EDIT: u8 = 11;
/// Conversation, seq, client_id.
const OP_DELETE: u8 = 12;
/// Conversation, seq, emoji, client_id.
const OP_REACT: u8 = 13;
/// Conversation, muted (0/1).
const OP_MUTE: u8 = 14;
/// Conversation, title, client_id.
const OP_RENAME: u8 = 15;

fn opt_str(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn decode_opt_str(d: &mut Dec<'_>) -> Result<Option<String>, DecodeError> {
    Ok(Some(d.str()?).filter(|s| !s.is_empty()).map(str::to_string))
}

fn encode_change(e: Enc, c: &Change) -> Enc {
    use super::chat::Target;
    match c {
        Change::Send {
            target,
            client_id,
            text,
            reply_to,
            attachments,
            mentions,
        } => {
            // A plain send keeps the original op, one with files only op 7/8 (records stay
            // readable by older builds); anything else is op 9/10.
            let ext = reply_to.is_some() || !mentions.is_empty();
            let files = !attachments.is_empty();
            let op = match (target, ext, files) {
                (Target::Conversation(_), false, false) => OP_SEND_CONV,
                (Target::User(_), false, false) => OP_SEND_USER,
                (Target::Conversation(_), false, true) => OP_SEND_CONV_FILES,
                (Target::User(_), false, true) => OP_SEND_USER_FILES,
                (Target::Conversation(_), true, _) => OP_SEND_CONV_EXT,
                (Target::User(_), true, _) => OP_SEND_USER_EXT,
            };
            let id = match target {
                Target::Conversation(c) => c.0,
                Target::User(u) => u.0,
            };
            let mut e = e.u8(op).u64(id).str(client_id).str(text);
            if ext {
                e = e.u64(reply_to.unwrap_or(0));
            }
            if files || ext {
                e = e.u64(attachments.len() as u64);
                for id in attachments {
                    e = e.u64((*id >> 64) as u64).u64(*id as u64);
                }
            }
            if ext {
                e = e.u64(mentions.len() as u64);
                for m in mentions {
                    e = e.u64(m.0);
                }
            }
            e
        }
        Change::Read { conversation, seq } => e.u8(OP_READ).u64(conversation.0).u64(*seq),
        Change::CreateGroup { title, members } => {
            let mut e = e.u8(OP_CREATE_GROUP).str(title).u64(members.len() as u64);
            for m in members {
                e = e.u64(m.0);
            }
            e
        }
        Change::AddMembers {
            conversation,
            members,
        } => {
            let mut e = e
                .u8(OP_ADD_MEMBERS)
                .u64(conversation.0)
                .u64(members.len() as u64);
            for m in members {
                e = e.u64(m.0);
            }
            e
        }
        Change::RemoveMember { conversation, user } => {
            e.u8(OP_REMOVE_MEMBER).u64(conversation.0).u64(user.0)
        }
        Change::Edit {
            conversation,
            seq,
            text,
            mentions,
            client_id,
        } => {
            let mut e = e
                .u8(OP_EDIT)
                .u64(conversation.0)
                .u64(*seq)
                .str(text)
                .u64(mentions.len() as u64);
            for m in mentions {
                e = e.u64(m.0);
            }
            e.str(opt_str(client_id))
        }
        Change::Delete {
            conversation,
            seq,
            client_id,
        } => e
            .u8(OP_DELETE)
            .u64(conversation.0)
            .u64(*seq)
            .str(opt_str(client_id)),
        Change::React {
            conversation,
            seq,
            emoji,
            client_id,
        } => e
            .u8(OP_REACT)
            .u64(conversation.0)
            .u64(*seq)
            .str(emoji)
            .str(opt_str(client_id)),
        Change::Mute {
            conversation,
            muted,
        } => e.u8(OP_MUTE).u64(conversation.0).u8(u8::from(*muted)),
        Change::RenameGroup {
            conversation,
            title,
            client_id,
        } => e
            .u8(OP_RENAME)
            .u64(conversation.0)
            .str(title)
            .str(opt_str(client_id)),
    }
}

fn decode_users(d: &mut Dec<'_>) -> Result<Vec<UserId>, DecodeError> {
    let n = d.u64()?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(UserId(d.u64()?));
    }
    Ok(v)
}

fn decode_change(d: &mut Dec<'_>) -> Result<Change, DecodeError> {
    use super::chat::Target;
    Ok(match d.u8()? {
        k @ (OP_SEND_CONV | OP_SEND_USER | OP_SEND_CONV_FILES | OP_SEND_USER_FILES
        | OP_SEND_CONV_EXT | OP_SEND_USER_EXT) => {
            let id = d.u64()?;
            let target = if matches!(k, OP_SEND_CONV | OP_SEND_CONV_FILES | OP_SEND_CONV_EXT) {
                Target::Conversation(ConversationId(id))
            } else {
                Target::User(UserId(id))
            };
            let client_id = d.str()?.to_string();
            let text = d.str()?.to_string();
            let ext = matches!(k, OP_SEND_CONV_EXT | OP_SEND_USER_EXT);
            let reply_to = if ext {
                Some(d.u64()?).filter(|&s| s != 0)
            } else {
                None
            };
            let mut attachments = Vec::new();
            if ext || matches!(k, OP_SEND_CONV_FILES | OP_SEND_USER_FILES) {
                let n = d.u64()?;
                for _ in 0..n.min(1024) {
                    attachments.push((u128::from(d.u64()?) << 64) | u128::from(d.u64()?));
                }
            }
            let mentions = if ext { decode_users(d)? } else { Vec::new() };
            Change::Send {
                target,
                client_id,
                text,
                reply_to,
                attachments,
                mentions,
            }
        }
        OP_EDIT => Change::Edit {
            conversation: ConversationId(d.u64()?),
            seq: d.u64()?,
            text: d.str()?.to_string(),
            mentions: decode_users(d)?,
            client_id: decode_opt_str(d)?,
        },
        OP_DELETE => Change::Delete {
            conversation: ConversationId(d.u64()?),
            seq: d.u64()?,
            client_id: decode_opt_str(d)?,
        },
        OP_REACT => Change::React {
            conversation: ConversationId(d.u64()?),
            seq: d.u64()?,
            emoji: d.str()?.to_string(),
            client_id: decode_opt_str(d)?,
        },
        OP_MUTE => Change::Mute {
            conversation: ConversationId(d.u64()?),
            muted: match d.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError("mute flag must be 0 or 1")),
            },
        },
        OP_RENAME => Change::RenameGroup {
            conversation: ConversationId(d.u64()?),
            title: d.str()?.to_string(),
            client_id: decode_opt_str(d)?,
        },
        OP_READ => Change::Read {
            conversation: ConversationId(d.u64()?),
            seq: d.u64()?,
        },
        OP_CREATE_GROUP => Change::CreateGroup {
            title: d.str()?.to_string(),
            members: decode_users(d)?,
        },
        OP_ADD_MEMBERS => Change::AddMembers {
            conversation: ConversationId(d.u64()?),
            members: decode_users(d)?,
        },
        OP_REMOVE_MEMBER => Change::RemoveMember {
            conversation: ConversationId(d.u64()?),
            user: UserId(d.u64()?),
        },
        _ => return Err(DecodeError("unknown log op")),
    })
}

/// FNV-1a, 64 bit: enough to tell a torn or overwritten record from a whole one.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a 64 continued from state `h` over `bytes`.
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chat::Target;

    fn send(cid: &str) -> Change {
        Change::Send {
            // "a" answers seq 4 with a file: the extended send op round-trips too.
            reply_to: (cid == "a").then_some(4),
            target: Target::Conversation(ConversationId(7)),
            client_id: cid.into(),
            text: "héllo".into(),
            attachments: if cid == "a" {
                vec![(0xfeed_u128 << 64) | 9]
            } else {
                Vec::new()
            },
            mentions: if cid == "a" {
                vec![UserId(3), UserId(5)]
            } else {
                Vec::new()
            },
        }
    }

    /// One op of alice's.
    fn by_alice(change: &Change) -> [LoggedOp<'_>; 1] {
        [LoggedOp {
            actor: UserId(1),
            actor_name: "alice",
            change,
        }]
    }

    #[test]
    fn every_change_kind_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let changes = [
            send("x"),
            Change::Send {
                reply_to: None,
                target: Target::User(UserId(9)),
                client_id: "y".into(),
                text: String::new(),
                attachments: Vec::new(),
                mentions: Vec::new(),
            },
            Change::Read {
                conversation: ConversationId(3),
                seq: u64::MAX,
            },
            Change::CreateGroup {
                title: "t".into(),
                members: vec![],
            },
            Change::AddMembers {
                conversation: ConversationId(5),
                members: vec![UserId(1), UserId(2)],
            },
            Change::RemoveMember {
                conversation: ConversationId(5),
                user: UserId(2),
            },
            send("a"),
            Change::Edit {
                conversation: ConversationId(5),
                seq: 3,
                text: "fixed".into(),
                mentions: vec![UserId(2)],
                client_id: Some("e1".into()),
            },
            Change::Delete {
                conversation: ConversationId(5),
                seq: 3,
                client_id: None,
            },
            Change::React {
                conversation: ConversationId(5),
                seq: 2,
                emoji: "👍🏽".into(),
                client_id: Some("r".into()),
            },
            Change::Mute {
                conversation: ConversationId(5),
                muted: true,
            },
            Change::RenameGroup {
                conversation: ConversationId(5),
                title: "新しい".into(),
                client_id: None,
            },
        ];
        let ops: Vec<LoggedOp<'_>> = changes
            .iter()
            .map(|c| LoggedOp {
                actor: UserId(4),
                actor_name: "dave",
                change: c,
            })
            .collect();
        Wal::open(dir.path())
            .unwrap()
            .0
            .append_batch(7, 1, 2, &ops)
            .unwrap();
        let (_, rec) = Wal::open(dir.path()).unwrap();
        let got: Vec<String> = rec.batches[0]
            .ops
            .iter()
            .map(|(_, _, c)| format!("{c:?}"))
            .collect();
        let want: Vec<String> = changes.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(got, want);
    }

    /// A power cut can tear the first record of an emptied file within its magic, or the zeroing
    /// of a recycled file's first header: that is a torn tail (silent), not a file that is no
    /// log (which refuses the start). Found by the power-cut test of `storage_fault_tests`.
    #[test]
    fn a_first_record_torn_inside_its_magic_is_a_torn_tail() {
        for n in 1..=8 {
            let mut bytes = vec![0u8; 64];
            bytes[..n.min(4)].copy_from_slice(&MAGIC[..n.min(4)]);
            if n > 4 {
                bytes[4..n].fill(0x5a);
            }
            let p = parse(&bytes);
            assert!(p.batches.is_empty());
            assert!(p.damage.is_none(), "torn after {n} bytes");
        }
        // A recycled file whose header zeroing was torn after two bytes.
        let mut zeroed = vec![0u8; 64];
        zeroed[2..4].copy_from_slice(b"L2");
        zeroed[4..40].fill(0x5a);
        assert!(parse(&zeroed).damage.is_none());
        let mut garbage = vec![0u8; 64];
        garbage[..3].copy_from_slice(b"CWX");
        assert!(matches!(parse(&garbage).damage, Some(Damage::NotALog)));
    }

    #[test]
    fn records_round_trip_aborts_void_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let changes = [
            send("a"),
            Change::CreateGroup {
                title: "g".into(),
                members: vec![UserId(2), UserId(3)],
            },
            Change::Read {
                conversation: ConversationId(7),
                seq: 4,
            },
        ];
        {
            let (mut wal, rec) = Wal::open(dir.path()).unwrap();
            assert!(rec.batches.is_empty());
            let ops: Vec<LoggedOp<'_>> = changes
                .iter()
                .map(|c| LoggedOp {
                    actor: UserId(1),
                    actor_name: "alice",
                    change: c,
                })
                .collect();
            wal.append_batch(1, 9, 100, &ops).unwrap();
            wal.append_batch(2, 9, 101, &ops[..1]).unwrap();
            wal.append_abort(2).unwrap();
            wal.append_batch(3, 9, 102, &ops[2..]).unwrap();
        }
        // A torn append: half a record after the last one (in the zero-filled space).
        let path = dir.path().join(WAL_FILES[0]);
        let whole = {
            let (wal, _) = Wal::open(dir.path()).unwrap();
            wal.len()
        };
        assert!(std::fs::metadata(&path).unwrap().len() >= PREALLOC);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"CWL2\x40\x00\x00\x00garbage", whole)
            .unwrap();
        drop(f);
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(rec.dropped_bytes, 15);
        assert_eq!(wal.len(), whole, "the torn tail was cut off");
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 >= PREALLOC, "and zeros put back");
        assert!(bytes[whole as usize..].iter().all(|&b| b == 0));
        let numbers: Vec<u64> = rec.batches.iter().map(|b| b.number).collect();
        assert_eq!(numbers, [1, 3], "batch 2 was aborted");
        let b = &rec.batches[0];
        assert_eq!((b.epoch, b.now_ms, b.ops.len()), (9, 100, 3));
        assert_eq!(b.ops[0].1, "alice");
        match &b.ops[0].2 {
            Change::Send {
                target: Target::Conversation(c),
                client_id,
                text,
                reply_to,
                attachments,
                mentions,
            } => {
                assert_eq!(
                    (c.0, client_id.as_str(), text.as_str(), *reply_to),
                    (7, "a", "héllo", Some(4))
                );
                assert_eq!(attachments, &[(0xfeed_u128 << 64) | 9]);
                assert_eq!(mentions, &[UserId(3), UserId(5)]);
            }
            other => panic!("{other:?}"),
        }
        match &b.ops[1].2 {
            Change::CreateGroup { title, members } => {
                assert_eq!(
                    (title.as_str(), members.as_slice()),
                    ("g", &[UserId(2), UserId(3)][..])
                )
            }
            other => panic!("{other:?}"),
        }
        // A flipped byte inside a record ends the readable log there.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 5] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        drop(wal);
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert!(rec.batches.is_empty());
    }

    #[test]
    fn a_record_whose_fsync_runs_on_the_sync_thread_counts_once_collected() {
        let dir = tempfile::tempdir().unwrap();
        let c = send("x");
        let ops = by_alice(&c);
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append_batch(1, 9, 100, &ops).unwrap();
            let one = wal.len();
            wal.begin_append(2, 9, 101, &ops).unwrap();
            assert_eq!(wal.len(), one, "not counted before its fsync is collected");
            wal.finish_append().unwrap();
            assert_eq!(wal.len(), 2 * one);
            assert!(wal.is_clean());
            // Nothing in flight: collecting again is a no-op.
            wal.finish_append().unwrap();
            wal.begin_append(3, 9, 102, &ops).unwrap();
            wal.finish_append().unwrap();
            assert_eq!(wal.len(), 3 * one);
        }
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        let numbers: Vec<u64> = rec.batches.iter().map(|b| b.number).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(rec.batches[2].now_ms, 102);
        assert_eq!(rec.dropped_bytes, 0);
        assert!(!wal.is_empty());
    }

    #[test]
    fn the_two_files_are_read_back_in_batch_order_and_emptied_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let c = send("x");
        let ops = by_alice(&c);
        let numbers =
            |rec: &Recovered| -> Vec<u64> { rec.batches.iter().map(|b| b.number).collect() };
        let size = |i: usize| {
            std::fs::metadata(dir.path().join(WAL_FILES[i]))
                .unwrap()
                .len()
        };
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append_batch(1, 9, 100, &ops).unwrap();
            wal.append_batch(2, 9, 100, &ops).unwrap();
            assert!(wal.switch(), "a checkpoint switches to the empty file");
            assert!(wal.retiring());
            assert!(!wal.switch(), "not again before the first file is emptied");
            wal.append_batch(3, 9, 100, &ops).unwrap();
            assert!(size(0) >= PREALLOC && size(1) >= PREALLOC, "preallocated");
            assert!(
                (1..PREALLOC).contains(&wal.len()),
                "len is the active file's records'"
            );
        }
        // A crash before the checkpoint's fsync: both files count, oldest first.
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(numbers(&rec), [1, 2, 3]);
        // Reopened, appends go to the first file again (the store checkpoints and empties
        // both after recovering); the order comes from the batch numbers, not the files.
        wal.append_batch(4, 9, 100, &ops).unwrap();
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(numbers(&rec), [1, 2, 3, 4]);
        wal.reset().unwrap();
        assert!(wal.is_empty());
        // The normal course: switch, the fsync completes, the covered file is emptied.
        wal.append_batch(5, 9, 100, &ops).unwrap();
        assert!(wal.switch());
        wal.append_batch(6, 9, 100, &ops).unwrap();
        let n = wal.switches();
        wal.finish_retire(n - 1).unwrap();
        assert!(
            wal.retiring(),
            "an fsync from before this switch does not cover it"
        );
        wal.finish_retire(n).unwrap();
        assert!(!wal.retiring());
        assert!(size(0) >= PREALLOC, "the covered file is kept for reuse");
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(numbers(&rec), [6], "and holds no records");
        assert_eq!(rec.dropped_bytes, 0, "nothing torn");

        // Reused files: records written over old ones. Batches 7 and 8 go to the first file,
        // then (after a switch and retire) the shorter batch 10 over batch 7's start: what
        // follows it is what is left of the old records, and is never read back.
        wal.reset().unwrap();
        let long = send(&"x".repeat(300));
        let long_ops = by_alice(&long);
        wal.append_batch(7, 9, 100, &long_ops).unwrap();
        wal.append_batch(8, 9, 100, &long_ops).unwrap();
        assert!(wal.switch());
        wal.append_batch(9, 9, 100, &ops).unwrap();
        wal.finish_retire(wal.switches()).unwrap();
        assert!(wal.switch());
        wal.append_batch(10, 9, 100, &ops).unwrap();
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(numbers(&rec), [9, 10]);
        assert!(
            rec.dropped_bytes > 0,
            "the rest of batch 7 and batch 8 were cut off"
        );
        // An old record that starts exactly where the new ones end is not read either: the
        // file holds batch 11 over batch 9's place (same length), then the old batch 10.
        wal.reset().unwrap();
        wal.append_batch(12, 9, 100, &ops).unwrap();
        wal.append_batch(13, 9, 100, &ops).unwrap();
        assert!(wal.switch());
        wal.finish_retire(wal.switches()).unwrap();
        assert!(wal.switch());
        wal.finish_retire(wal.switches()).unwrap();
        wal.append_batch(14, 9, 100, &ops).unwrap();
        drop(wal);
        let (_, rec) = Wal::open(dir.path()).unwrap();
        assert_eq!(numbers(&rec), [14], "batch 13 after it is an old record");
        assert!(rec.dropped_bytes > 0);
    }

    /// A record built by hand: magic, length, the given salt, checksum, payload.
    fn record(salt: u64, payload: &[u8]) -> Vec<u8> {
        let mut r = MAGIC.to_vec();
        r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        r.extend_from_slice(&salt.to_le_bytes());
        r.extend_from_slice(&checksum(salt, payload).to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    /// A user's message text lies in the log as it was sent, so a user can put a well-formed
    /// record inside one (with the database epoch, which `welcome` shows, and a batch number
    /// far ahead). When a reused file's current records end exactly where such a text lies,
    /// the crafted record must not be read: it cannot carry the file's current salt.
    #[test]
    fn a_record_crafted_inside_old_bytes_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = send("x");
        let ops = by_alice(&c);
        let whole = {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append_batch(1, 9, 100, &ops).unwrap();
            wal.len()
        };
        let evil = Change::Send {
            reply_to: None,
            target: Target::User(UserId(2)),
            client_id: "evil".into(),
            text: "pwned".into(),
            attachments: Vec::new(),
            mentions: Vec::new(),
        };
        let payload = batch_payload(1_000_000, 9, 100, &by_alice(&evil));
        let path = dir.path().join(WAL_FILES[0]);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        // With any salt but the file's own (a guess), and without one (the old format).
        for bad in [record(0x5eed, &payload), {
            let mut r = MAGIC_V1.to_vec();
            r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            r.extend_from_slice(&fnv1a(&payload).to_le_bytes());
            r.extend_from_slice(&payload);
            r
        }] {
            f.write_all_at(&bad, whole).unwrap();
            let (bytes, numbers) = {
                let bytes = std::fs::read(&path).unwrap();
                let p = parse(&bytes);
                (
                    p.good,
                    p.batches.iter().map(|b| b.number).collect::<Vec<_>>(),
                )
            };
            assert_eq!(numbers, [1]);
            assert_eq!(bytes as u64, whole);
        }
        // The same bytes with the file's salt would be read: the salt is what stops them.
        let salt = parse(&std::fs::read(&path).unwrap()).salt.unwrap();
        f.write_all_at(&record(salt, &payload), whole).unwrap();
        let p = parse(&std::fs::read(&path).unwrap());
        assert_eq!(p.batches.len(), 2);
    }

    /// Log files written before the salt (`CWL1`) are still read back after an upgrade.
    #[test]
    fn files_from_before_the_salt_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = send("old");
        let mut bytes = Vec::new();
        for n in [4u64, 5] {
            let payload = batch_payload(n, 9, 100, &by_alice(&c));
            bytes.extend_from_slice(MAGIC_V1);
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&fnv1a(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        std::fs::write(dir.path().join(WAL_FILES[1]), &bytes).unwrap();
        let (wal, rec) = Wal::open(dir.path()).unwrap();
        let numbers: Vec<u64> = rec.batches.iter().map(|b| b.number).collect();
        assert_eq!(numbers, [4, 5]);
        assert_eq!(rec.dropped_bytes, 0);
        assert!(!wal.is_empty());
    }
}
