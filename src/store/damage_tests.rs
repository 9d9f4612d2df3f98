//! Damaged data directories (issue 20): each test builds the damage on real redb and log files
//! in a temp directory (a crash image of a live store, then a flipped bit, a truncated or
//! deleted file) and checks the outcome: refused with a clear error, or recovered exactly.
//! Never a silent loss and never a message at another seq.

use super::*;
use crate::model::ConversationId;
use crate::store::chat::{Change, MemberCache, Target};
use crate::store::wal::{LoggedOp, WAL_FILES};

pub(super) fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A copy of what a crash would leave of the store in `live` now (database and both logs).
pub(super) fn crash_image(live: &Path) -> tempfile::TempDir {
    let crash = tmp();
    for e in std::fs::read_dir(live).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), crash.path().join(e.file_name())).unwrap();
        }
    }
    crash
}

pub(super) struct Live {
    pub(super) dir: tempfile::TempDir,
    pub(super) store: Store,
    pub(super) alice: UserId,
    pub(super) bob: UserId,
    cache: MemberCache,
    sent: u64,
}

impl Live {
    pub(super) fn new() -> Live {
        let dir = tmp();
        let store = Store::open(dir.path()).unwrap();
        let a = store
            .create_user("alice", "h", AdminGrant::No, false, 1)
            .unwrap();
        let b = store
            .create_user("bob", "h", AdminGrant::No, false, 1)
            .unwrap();
        Live {
            dir,
            store,
            alice: a.id,
            bob: b.id,
            cache: MemberCache::default(),
            sent: 0,
        }
    }

    /// `n` batches of one message each from alice to bob, logged and applied as the writer does.
    pub(super) fn send(&mut self, n: u64) {
        for _ in 0..n {
            self.sent += 1;
            let c = Change::Send {
                reply_to: None,
                target: Target::User(self.bob),
                client_id: format!("c{}", self.sent),
                text: format!("message number {}", self.sent),
                attachments: Vec::new(),
                mentions: Vec::new(),
            };
            let ops = [LoggedOp {
                actor: self.alice,
                actor_name: "alice",
                change: &c,
            }];
            self.store
                .apply_logged(&mut self.cache, 1000 + self.sent, &ops)
                .unwrap();
        }
    }

    /// A checkpoint as the writer and its syncer make it: a durable commit with a deferred
    /// fsync, a switch to the other log file, the fsync, and the covered file emptied.
    fn writer_checkpoint(&self) {
        self.store.checkpoint_without_fsync().unwrap();
        let switch = self.store.lock_journal().wal.switches();
        self.store.dbfile.sync_deferred().unwrap();
        self.store.lock_journal().wal.finish_retire(switch).unwrap();
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// (seq, text) of every message alice can read, in seq order.
pub(super) fn texts(s: &Store, alice: UserId) -> Vec<(u64, String)> {
    let Some(conv) = s.conversations_of(alice, 10).unwrap().first().map(|c| c.id) else {
        return Vec::new();
    };
    s.history(alice, conv, u64::MAX, 1000, usize::MAX)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.text))
        .collect()
}

pub(super) fn expected(n: u64) -> Vec<(u64, String)> {
    (1..=n)
        .map(|i| (i, format!("message number {i}")))
        .collect()
}

pub(super) fn discarding(dir: &Path) -> Store {
    Store::open_with(
        dir,
        &OpenOptions {
            discard_damaged_log: true,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

/// Names of the files in `dir` that start with `prefix`.
pub(super) fn files_like(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

pub(super) fn open_err(dir: &Path) -> String {
    match Store::open(dir) {
        Ok(s) => panic!(
            "opened, with {} messages: {:?}",
            s.message_count().unwrap(),
            s.meta(schema::META_WAL_APPLIED)
        ),
        Err(e) => e.to_string(),
    }
}

/// Byte offsets of the records in a log file (from their headers; stops at the first that is
/// not a record).
pub(super) fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= bytes.len() && &bytes[at..at + 4] == b"CWL2" {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, 24 + len));
        at += 24 + len;
    }
    out
}

/// Defect 1: the database's durable state goes back behind the log (redb fell back to an older
/// commit: here the older file itself is put back), and the log no longer holds the batches
/// between that commit and the newest one. Applying the log's later batches over that gap
/// would renumber acknowledged messages; the start must stop and name what is missing.
#[test]
fn a_gap_between_the_database_and_the_log_stops_the_start() {
    let mut live = Live::new();
    live.send(3);
    live.writer_checkpoint(); // durable: batches 1-3
    let older = std::fs::read(live.path().join(DB_FILE)).unwrap();
    live.send(2);
    live.writer_checkpoint(); // durable: batches 1-5; the log file holding 4-5 is emptied
    live.send(3); // batches 6-8: only in the log
    let crash = crash_image(live.path());
    let intact = crash_image(live.path());
    std::fs::write(crash.path().join(DB_FILE), &older).unwrap();
    let err = open_err(crash.path());
    assert!(
        err.contains("batches 4 to 5 are missing") && err.contains("--discard-damaged-log"),
        "{err}"
    );
    // Without the damage the same image recovers exactly.
    let s = Store::open(intact.path()).unwrap();
    assert_eq!(texts(&s, live.alice), expected(8));
    // The operator's way out: start from what the database has; 6-8 are not applied over the
    // gap (they would have become seqs 4-6), and the log is kept aside.
    let s = discarding(crash.path());
    assert_eq!(texts(&s, live.alice), expected(3));
    assert_eq!(files_like(crash.path(), "chatd.wal.damaged-").len(), 1);
    drop(s);
    let s = Store::open(crash.path()).unwrap();
    assert_eq!(
        texts(&s, live.alice),
        expected(3),
        "and it starts normally after"
    );
}

/// Defect 1 as the outside test made it: one flipped bit in redb's primary commit slot of a
/// crashed database. redb's quick repair commits in two phases, so redb no longer falls back
/// to the older slot by itself: the start stops, saying what to do. `chatd repair` then saves
/// the commit before it, and the start after that names the batches the log cannot give back.
#[test]
fn a_flipped_bit_in_the_newest_commit_slot_never_renumbers() {
    let mut live = Live::new();
    live.send(3);
    live.writer_checkpoint();
    live.send(2);
    live.writer_checkpoint();
    live.send(3);
    let crash = crash_image(live.path());
    // The primary commit slot is 64 + 128 × (god byte & 1); bit 0 of its transaction id field
    // (at 104 in the slot) breaks the slot's checksum.
    let db = crash.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let slot = 64 + 128 * usize::from(bytes[9] & 1);
    bytes[slot + 104] ^= 1;
    std::fs::write(&db, &bytes).unwrap();
    let err = open_err(crash.path());
    assert!(err.contains("damaged"), "{err}");
    let r = repair::repair(crash.path(), 9).unwrap();
    assert!(r.lost[0].contains("newest commit"), "{:?}", r.lost);
    let err = open_err(crash.path());
    assert!(err.contains("missing") && err.contains("batches"), "{err}");
    let s = discarding(crash.path());
    let got = texts(&s, live.alice);
    assert_eq!(
        got,
        expected(got.len() as u64),
        "a prefix, never renumbered"
    );
}

/// Defect 2: one flipped payload byte in record 31 of 60. Records 32-60 are intact: cutting the
/// log off at record 31 would lose them silently. The start must stop and say so.
#[test]
fn a_damaged_record_followed_by_intact_ones_stops_the_start() {
    let mut live = Live::new();
    live.send(60);
    let crash = crash_image(live.path());
    let log = crash.path().join(WAL_FILES[0]);
    let mut bytes = std::fs::read(&log).unwrap();
    let records = record_offsets(&bytes);
    assert_eq!(records.len(), 60);
    let (at, len) = records[30];
    bytes[at + 24 + len / 2] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let err = open_err(crash.path());
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains("29 intact records"), "{err}");
    assert!(err.contains("batches 32 to 60"), "{err}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "nothing was cut off or changed"
    );
    let s = discarding(crash.path());
    assert_eq!(texts(&s, live.alice), expected(30));
    assert_eq!(
        std::fs::read(
            crash
                .path()
                .join(&files_like(crash.path(), "chatd.wal.damaged-")[0])
        )
        .unwrap(),
        bytes,
        "the damaged log is kept as it was"
    );
}

/// A torn last record (the append a crash cut short, never acknowledged) stays normal: cut off
/// silently, everything before it recovered.
#[test]
fn a_torn_last_record_is_cut_off_quietly() {
    let mut live = Live::new();
    live.send(10);
    let crash = crash_image(live.path());
    let log = crash.path().join(WAL_FILES[0]);
    let mut bytes = std::fs::read(&log).unwrap();
    let (at, len) = record_offsets(&bytes)[9];
    // The second half of the last record never reached the disk.
    bytes[at + len / 2..at + len].fill(0);
    std::fs::write(&log, &bytes).unwrap();
    let s = Store::open(crash.path()).unwrap();
    assert_eq!(texts(&s, live.alice), expected(9));
}

/// Defect 3: the log file holding the batches is deleted, or both log files are replaced by
/// garbage, while the database expects batches after its last checkpoint.
#[test]
fn a_missing_or_garbage_log_stops_the_start() {
    let mut live = Live::new();
    live.send(5);
    let deleted = crash_image(live.path());
    std::fs::remove_file(deleted.path().join(WAL_FILES[0])).unwrap();
    let err = open_err(deleted.path());
    assert!(
        err.contains(WAL_FILES[0]) && err.contains("missing"),
        "{err}"
    );

    let garbage = crash_image(live.path());
    for (i, f) in WAL_FILES.iter().enumerate() {
        let noise: Vec<u8> = (0..3000u32)
            .map(|x| (x.wrapping_mul(2_654_435_761) >> (8 + i)) as u8)
            .collect();
        std::fs::write(garbage.path().join(f), noise).unwrap();
    }
    let err = open_err(garbage.path());
    assert!(err.contains("not a chatd log"), "{err}");
    // With the flag: what the database has (the users; the batches were only in the log).
    let s = discarding(garbage.path());
    assert_eq!(s.user_count().unwrap(), 2);
    assert_eq!(s.message_count().unwrap(), 0);

    // After a clean stop the log holds nothing the database lacks: a missing log file is fine.
    live.store.checkpoint().unwrap();
    let clean = crash_image(live.path());
    std::fs::remove_file(clean.path().join(WAL_FILES[0])).unwrap();
    std::fs::remove_file(clean.path().join(WAL_FILES[1])).unwrap();
    let s = Store::open(clean.path()).unwrap();
    assert_eq!(texts(&s, live.alice), expected(5));
    drop(s);
    // And the next batch marks the log in use again before it is logged.
    live.send(1);
    let again = crash_image(live.path());
    std::fs::remove_file(again.path().join(WAL_FILES[0])).unwrap();
    assert!(open_err(again.path()).contains("missing"));
}

/// Defect 4: a database truncated to 0 bytes, or deleted while the log holds its batches, must
/// not start over as a new empty database.
#[test]
fn a_missing_or_emptied_database_is_not_replaced_by_a_new_one() {
    let mut live = Live::new();
    live.send(5);
    live.store.checkpoint().unwrap();
    live.send(2);
    let emptied = crash_image(live.path());
    std::fs::write(emptied.path().join(DB_FILE), b"").unwrap();
    let err = open_err(emptied.path());
    assert!(
        err.contains("chatd restore") && err.contains("--new-database"),
        "{err}"
    );

    let deleted = crash_image(live.path());
    std::fs::remove_file(deleted.path().join(DB_FILE)).unwrap();
    let err = open_err(deleted.path());
    assert!(err.contains("missing"), "{err}");
    assert!(
        !deleted.path().join(DB_FILE).exists(),
        "nothing was created"
    );
    // Without the marker too (a directory from before it): the log's records say it.
    std::fs::remove_file(deleted.path().join(identity::ID_FILE)).unwrap();
    let err = open_err(deleted.path());
    assert!(err.contains("holds its logged changes"), "{err}");

    // Starting over on purpose: a new epoch, and the old log kept aside.
    let old_epoch = live.store.epoch();
    let s = Store::open_with(
        emptied.path(),
        &OpenOptions {
            new_database: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.user_count().unwrap(), 0);
    assert_ne!(s.epoch(), old_epoch);
    assert_eq!(identity::read(emptied.path()).unwrap(), Some(s.epoch()));
    assert_eq!(
        files_like(emptied.path(), "chatd.wal.before-new-database-").len(),
        1
    );
    drop(s);
    assert!(
        Store::open(emptied.path()).is_ok(),
        "and starts normally after"
    );
}

/// The marker is written with a new database and follows a restore.
#[test]
fn the_identity_marker_follows_the_database() {
    let live = Live::new();
    assert_eq!(
        identity::read(live.path()).unwrap(),
        Some(live.store.epoch())
    );
    let backup = tmp();
    let file = backup.path().join("b.redb");
    live.store.backup_to(&file).unwrap();
    drop(live.store);
    let r = backup::restore(&file, live.dir.path(), 5).unwrap();
    let s = Store::open(live.dir.path()).unwrap();
    assert_eq!(r.summary.users, 2);
    assert_eq!(identity::read(live.dir.path()).unwrap(), Some(s.epoch()));
}

/// Every offset of `needle` in `hay`.
pub(super) fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// A stopped store with `n` messages from alice to bob (cleanly closed), for damaging.
pub(super) fn stopped_with(n: u64) -> (tempfile::TempDir, UserId, ConversationId) {
    let mut live = Live::new();
    live.send(n);
    live.store.checkpoint().unwrap();
    let conv = live.store.conversations_of(live.alice, 1).unwrap()[0].id;
    let alice = live.alice;
    drop(live.store);
    (live.dir, alice, conv)
}

/// What a catch-up from `after` reads, page by page as a session does: (seq, text or
/// "UNREADABLE") per message. Panics if a page makes no progress.
pub(super) fn catch_up(
    s: &Store,
    user: UserId,
    conv: ConversationId,
    after: u64,
) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let (page, more) = s
            .messages_after_map(user, conv, cursor, 7, usize::MAX, |m| {
                let text = if m.unreadable {
                    "UNREADABLE".to_string()
                } else {
                    m.text.to_string()
                };
                (m.seq, text)
            })
            .unwrap()
            .unwrap();
        for (seq, text) in page {
            assert_eq!(seq, cursor + 1, "every seq once, in order");
            cursor = seq;
            out.push((seq, text));
        }
        if !more {
            return out;
        }
        assert!(out.len() < 10_000, "no progress");
    }
}

/// Defect 6: one character of a stored text changed inside chatd.redb is not served as if
/// intact: the record's checksum fails, and readers get a marker at its seq, counted.
#[test]
fn an_altered_text_is_a_marker_not_a_message() {
    let (dir, alice, conv) = stopped_with(40);
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let at = find_all(&bytes, b"message number 17");
    assert!(!at.is_empty());
    for i in at {
        bytes[i + 8] = b'N'; // "number" → "Number"
    }
    std::fs::write(&db, &bytes).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let before = damage::seen();
    let got = catch_up(&s, alice, conv, 0);
    let mut want = expected(40);
    want[16].1 = "UNREADABLE".into();
    assert_eq!(got, want);
    assert!(damage::seen() > before, "counted");
    let h = s
        .history(alice, conv, u64::MAX, 100, usize::MAX)
        .unwrap()
        .unwrap();
    assert!(h[16].unreadable && h[16].text.is_empty() && h[16].seq == 17);
    assert!(h.iter().filter(|m| m.unreadable).count() == 1);
}

/// Defect 5 (keys): one seq's top byte changed. The message is no longer at its seq, a key far
/// beyond the conversation's last seq exists: the catch-up neither spins nor ends early, it
/// shows a marker at the seq and goes on to the end; history never serves the stray key.
#[test]
fn a_damaged_key_is_a_marker_and_the_catch_up_goes_on() {
    let (dir, alice, conv) = stopped_with(40);
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let key = codec::key2(conv.0, 23);
    let at = find_all(&bytes, &key);
    assert!(!at.is_empty());
    for i in at {
        bytes[i + 15] = 1; // the seq's top byte: 23 + 2^56
    }
    std::fs::write(&db, &bytes).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let got = catch_up(&s, alice, conv, 0);
    let mut want = expected(40);
    want[22].1 = "UNREADABLE".into();
    assert_eq!(got, want);
    let h = s
        .history(alice, conv, u64::MAX, 100, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(h.len(), 40);
    assert_eq!(h.last().unwrap().seq, 40, "no seq past the last one");
    // A cursor beyond the damage reads on normally.
    assert_eq!(catch_up(&s, alice, conv, 30), expected(40)[30..].to_vec());
}

/// Defect 5 (pages): a zeroed 4 KiB page in the middle of the messages. No panic escapes, and
/// a catch-up from the start reaches the last seq with markers where it could not read.
#[test]
fn a_zeroed_page_gives_markers_not_a_panic_or_a_stuck_catch_up() {
    let (dir, alice, conv) = stopped_with(400);
    let bytes = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    // The text may lie in older copies of its page too (free pages, or pages reused for other
    // trees): damage each in turn until the live one is hit. A copy whose damage stops the open
    // must fail it cleanly (the table-definition test below).
    let mut tried = 0;
    let (copy, s) = find_all(&bytes, b"message number 200")
        .into_iter()
        .find_map(|i| {
            tried += 1;
            let copy = crash_image(dir.path());
            let mut b = bytes.clone();
            let page = i / 4096 * 4096;
            b[page..page + 4096].fill(0);
            std::fs::write(copy.path().join(DB_FILE), &b).unwrap();
            let s = std::panic::catch_unwind(|| Store::open(copy.path()))
                .expect("the open does not panic")
                .ok()?;
            let h = s.history(alice, conv, 201, 1, usize::MAX).unwrap().unwrap();
            h[0].unreadable.then_some((copy, s))
        })
        .unwrap_or_else(|| panic!("no copy of the page is the live one ({tried} tried)"));
    let got = catch_up(&s, alice, conv, 0);
    assert_eq!(got.len(), 400);
    let lost: Vec<u64> = got
        .iter()
        .filter(|(_, t)| t == "UNREADABLE")
        .map(|(seq, _)| *seq)
        .collect();
    assert!(lost.contains(&200), "{lost:?}");
    assert!(lost.len() < 400, "the rest is read: {lost:?}");
    for (seq, text) in &got {
        assert!(
            text == "UNREADABLE" || *text == format!("message number {seq}"),
            "{seq}: {text}"
        );
    }
    let h = s
        .history(alice, conv, u64::MAX, 100, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(h.len(), 100);
    drop(copy);
}

/// Defect 5 (start-up): a damaged byte in the table definitions made redb panic while opening.
/// The start fails with an error instead, never a panic.
#[test]
fn damaged_table_definitions_fail_the_start_without_a_panic() {
    let (dir, _, _) = stopped_with(5);
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    for name in [&b"conversations"[..], b"client_ids", b"messages"] {
        for i in find_all(&bytes, name) {
            bytes[i + 2] = 0xff; // not UTF-8
        }
    }
    std::fs::write(&db, &bytes).unwrap();
    let r = std::panic::catch_unwind(|| Store::open(dir.path()).map(|_| ()));
    match r {
        Ok(Err(e)) => assert!(e.to_string().contains("damaged"), "{e}"),
        Ok(Ok(())) => {}
        Err(_) => panic!("the open panicked"),
    }
}

/// The database file replaced by another database's while the log still held batches of the
/// first (defect 4's second case, with a database there instead of none): those batches would
/// be dropped with one WARN line each; the start refuses instead.
#[test]
fn a_log_of_another_database_stops_the_start() {
    let mut live = Live::new();
    live.send(5);
    let crash = crash_image(live.path());
    let other = Live::new();
    drop(other.store);
    std::fs::copy(other.dir.path().join(DB_FILE), crash.path().join(DB_FILE)).unwrap();
    let err = open_err(crash.path());
    assert!(err.contains("5 batches of another database"), "{err}");
}
