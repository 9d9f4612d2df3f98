//! `chatd check`: verifies a data directory without changing a byte of it (the database is
//! opened through `overlay`, so even redb's own repair after an unclean stop stays in memory).
//!
//! It runs redb's integrity check (every page's checksum, the allocator state), then reads
//! every record: each seal (`codec::seal`) and decoding, each conversation's seqs (1 to its
//! last seq, no gaps, nothing beyond), and the indexes against what they index (`user_names` ↔
//! `users`, `user_sessions` ↔ `sessions`, `members` ↔ `read_seqs` and the member counts,
//! `direct_pairs`, `client_ids` ↔ `messages`); then the log against the database
//! (`recover::analyze`, what a start would refuse) and the identity marker. It also reports
//! where the bytes go (each table's rows, stored bytes and pages). Every redb call runs under
//! `catch_unwind`: a page that makes redb panic is a finding, not a crash.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableStats,
};

use super::codec::{self, key1};
use super::schema::*;
use super::{
    damage, decode_session_record, decode_user_record, identity, messages, overlay, recover, wal,
    Result, StoreError, DB_FILE,
};
use crate::model::name_key;

/// Findings beyond this many of one kind are counted, not listed.
const LIST_MAX: usize = 20;

/// What `check` found.
#[derive(Default)]
pub struct Report {
    /// Facts: sizes, counts, where the bytes go.
    pub facts: Vec<String>,
    /// Damage: each a sentence. Empty means the directory is sound.
    pub damage: Vec<String>,
    /// Worth knowing, not damage (batches a start will replay, markers of messages a repair
    /// could not save).
    pub notes: Vec<String>,
    /// Per kind of damage, how many were found and how many of them were not listed.
    more: HashMap<&'static str, (usize, usize)>,
    total: usize,
}

impl Report {
    fn damage(&mut self, kind: &'static str, text: String) {
        self.total += 1;
        let e = self.more.entry(kind).or_default();
        e.0 += 1;
        if e.0 <= LIST_MAX {
            self.damage.push(text);
        } else {
            e.1 += 1;
        }
    }

    fn finish(&mut self) {
        let mut more: Vec<_> = self.more.iter().filter(|(_, (_, n))| *n > 0).collect();
        more.sort();
        for (kind, (_, n)) in more {
            self.damage
                .push(format!("... and {n} more of the same kind ({kind})"));
        }
        self.more.clear();
    }

    /// How many damaged things were found in all.
    pub fn damage_count(&self) -> usize {
        self.total
    }
}

/// Opens `path` through an `overlay` (never written), upgraded in memory if it is older.
/// Errors and panics inside redb become `StoreError::Corrupt`. If the newest commit cannot be
/// opened, the one before it is tried (the second value is then the reason).
pub(super) fn open_overlay(path: &Path) -> Result<(Database, Option<String>)> {
    match open_overlay_with(path, false) {
        Ok(db) => Ok((db, None)),
        Err(StoreError::Locked(p)) => Err(StoreError::Locked(p)),
        Err(e) => match open_overlay_with(path, true) {
            Ok(db) => Ok((db, Some(e.to_string()))),
            Err(_) => Err(e),
        },
    }
}

fn open_overlay_with(path: &Path, other_slot: bool) -> Result<Database> {
    let backend = overlay::Overlay::open(path).map_err(StoreError::Io)?;
    if other_slot {
        backend.use_other_commit_slot().map_err(StoreError::Io)?;
    }
    let opened = damage::catch(|| Database::builder().create_with_backend(backend));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError::Locked(path.to_path_buf()))
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(p) => {
            return Err(StoreError::Corrupt(format!(
                "redb cannot open it (it failed: {p})"
            )))
        }
    };
    match damage::catch(|| super::init_schema(&db)) {
        Ok(Ok(_)) => Ok(db),
        Ok(Err(e)) => Err(e),
        Err(p) => Err(StoreError::Corrupt(format!(
            "redb cannot read its tables (it failed: {p})"
        ))),
    }
}

/// Checks the data directory `dir` (a stopped server's): its database, its log, its marker.
pub fn check_dir(dir: &Path) -> Result<Report> {
    let path = dir.join(DB_FILE);
    let mut r = Report::default();
    let marker = identity::read(dir).map_err(StoreError::Io)?;
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > 0 => {}
        Ok(_) | Err(_) => {
            r.damage(
                "database",
                format!(
                    "{} is missing or empty{}",
                    path.display(),
                    if marker.is_some() {
                        format!(", but {} says the directory held one", identity::ID_FILE)
                    } else {
                        String::new()
                    }
                ),
            );
            r.finish();
            return Ok(r);
        }
    }
    let Some(state) = check_file_into(&path, &mut r)? else {
        r.finish();
        return Ok(r);
    };
    match wal::scan(dir) {
        Ok(scan) => {
            let a = recover::analyze(&scan, state.applied, state.was_open, state.epoch);
            for p in a.problems {
                r.damage("log", format!("log: {p}"));
            }
            r.notes
                .extend(a.harmless.into_iter().map(|h| format!("log: {h}")));
            if a.pending > 0 {
                r.notes.push(format!(
                    "log: {} batches after the database's last checkpoint (batch {}): the server stopped uncleanly; the next start replays them",
                    a.pending, state.applied
                ));
            }
        }
        Err(e) => r.damage("log", format!("log: cannot read it: {e}")),
    }
    match marker {
        Some(e) if e != state.epoch => r.notes.push(format!(
            "{} names epoch {e:016x}, the database has {:016x} (copied in by hand? the next start takes it)",
            identity::ID_FILE,
            state.epoch
        )),
        None => r.notes.push(format!(
            "no {} yet (written at the next start)",
            identity::ID_FILE
        )),
        _ => {}
    }
    r.finish();
    Ok(r)
}

/// Checks a database file alone (a backup, or a running server's snapshot).
pub fn check_file(path: &Path) -> Result<Report> {
    let mut r = Report::default();
    check_file_into(path, &mut r)?;
    r.finish();
    Ok(r)
}

/// What the log check needs from the database.
struct DurableState {
    epoch: u64,
    applied: u64,
    was_open: bool,
}

fn check_file_into(path: &Path, r: &mut Report) -> Result<Option<DurableState>> {
    let bytes = std::fs::metadata(path).map_err(StoreError::Io)?.len();
    let mut db = match open_overlay(path) {
        Ok((db, None)) => db,
        Ok((db, Some(why))) => {
            r.damage(
                "database",
                format!("the newest commit cannot be opened ({why}); what follows is the commit before it, which `chatd repair` would save"),
            );
            db
        }
        Err(StoreError::Locked(p)) => return Err(StoreError::Locked(p)),
        Err(e) => {
            r.damage("database", format!("the database cannot be opened: {e}"));
            return Ok(None);
        }
    };
    match damage::catch(|| db.check_integrity()) {
        Ok(Ok(true)) => r.facts.push("redb's integrity check: every page's checksum matches".into()),
        Ok(Ok(false)) => r.damage(
            "pages",
            "redb's integrity check found damaged pages or allocator state (it could repair its own structures in memory; records may still be lost, see below)".into(),
        ),
        Ok(Err(e)) => r.damage("pages", format!("redb's integrity check failed: {e}")),
        Err(p) => r.damage("pages", format!("redb's integrity check crashed: {p}")),
    }
    // Pages in use against the file's size (the rest is free: redb grows a file in steps and
    // reuses freed pages before it grows again).
    let allocated = damage::catch(|| {
        let w = db.begin_write().ok()?;
        let s = w.stats().ok()?;
        let _ = w.abort();
        Some(s.allocated_pages() * s.page_size() as u64)
    })
    .ok()
    .flatten();
    if let Some(a) = allocated {
        r.facts.push(format!(
            "pages in use: {:.1} MiB of the file's {:.1} MiB ({:.1} MiB free for reuse)",
            a as f64 / 1048576.0,
            bytes as f64 / 1048576.0,
            bytes.saturating_sub(a) as f64 / 1048576.0
        ));
    }
    let tx = db.begin_read()?;
    let meta = read_meta(&tx)?;
    let state = DurableState {
        epoch: meta.get(META_EPOCH).copied().unwrap_or(0),
        applied: meta.get(META_WAL_APPLIED).copied().unwrap_or(0),
        was_open: meta.get(META_WAL_OPEN).copied() == Some(1),
    };
    let mut c = Checker {
        tx: &tx,
        r,
        users: HashMap::new(),
        damaged_users: HashSet::new(),
        convs: HashMap::new(),
        damaged_convs: HashSet::new(),
        messages: 0,
        lost: 0,
    };
    c.run();
    let (messages, lost) = (c.messages, c.lost);
    let users = c.users.len();
    let convs = c.convs.len();
    r.facts.insert(
        0,
        format!(
            "database {}: {:.1} MiB, schema {}, {users} users, {convs} conversations, {messages} messages{}",
            path.display(),
            bytes as f64 / (1024.0 * 1024.0),
            meta.get(META_SCHEMA_VERSION).copied().unwrap_or(0),
            match bytes.checked_div(messages) {
                Some(b) => format!(" ({b} bytes per message)"),
                None => String::new(),
            }
        ),
    );
    if lost > 0 {
        r.notes.push(format!(
            "{lost} messages are markers of messages lost before (written by `chatd repair`)"
        ));
    }
    table_stats(&tx, r);
    Ok(Some(state))
}

fn read_meta(tx: &ReadTransaction) -> Result<HashMap<String, u64>> {
    let t = tx.open_table(META)?;
    let mut m = HashMap::new();
    for row in t.iter()? {
        let (k, v) = row?;
        m.insert(k.value().to_string(), v.value());
    }
    Ok(m)
}

/// Where the bytes go: rows, stored bytes, pages per table.
fn table_stats(tx: &ReadTransaction, r: &mut Report) {
    fn line<K: redb::Key + 'static, V: redb::Value + 'static>(
        tx: &ReadTransaction,
        def: redb::TableDefinition<K, V>,
    ) -> Option<(u64, TableStats)> {
        damage::catch(|| {
            let t = tx.open_table(def).ok()?;
            Some((t.len().ok()?, t.stats().ok()?))
        })
        .ok()
        .flatten()
    }
    let mut out = String::from(
        "where the bytes go (rows; keys and values; pages of 4 KiB: leaf + branch; fragmented):",
    );
    let mut put = |name: &str, s: Option<(u64, TableStats)>| {
        if let Some((n, s)) = s {
            let _ = write!(
                out,
                "\n  {name}: {n} rows; {:.1} MiB; {} + {} pages; {:.1} MiB fragmented",
                s.stored_bytes() as f64 / 1048576.0,
                s.leaf_pages(),
                s.branch_pages(),
                s.fragmented_bytes() as f64 / 1048576.0,
            );
        }
    };
    put("messages", line(tx, MESSAGES));
    put("client_ids", line(tx, CLIENT_IDS));
    put("conversations", line(tx, CONVERSATIONS));
    put("members", line(tx, MEMBERS));
    put("read_seqs", line(tx, READ_SEQS));
    put("users", line(tx, USERS));
    put("sessions", line(tx, SESSIONS));
    r.facts.push(out);
}

struct Checker<'a> {
    tx: &'a ReadTransaction,
    r: &'a mut Report,
    /// Intact accounts: id → name.
    users: HashMap<u64, String>,
    damaged_users: HashSet<u64>,
    /// Intact conversations: id → (direct, last_seq, member_count).
    convs: HashMap<u64, (bool, u64, u64)>,
    damaged_convs: HashSet<u64>,
    messages: u64,
    lost: u64,
}

impl Checker<'_> {
    fn run(&mut self) {
        self.section("users", Self::users);
        self.section("sessions", Self::sessions);
        self.section("conversations", Self::conversations);
        self.section("members", Self::members);
        self.section("direct_pairs", Self::direct_pairs);
        self.section("messages", Self::messages);
        self.section("client_ids", Self::client_ids);
    }

    /// Runs one part; a redb error or panic there is a finding, and the next part goes on.
    fn section(&mut self, name: &'static str, f: fn(&mut Self) -> Result<()>) {
        match damage::catch(|| f(self)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self
                .r
                .damage("tables", format!("{name}: redb cannot read all of it: {e}")),
            Err(p) => self
                .r
                .damage("tables", format!("{name}: redb failed reading it: {p}")),
        }
    }

    fn users(&mut self) -> Result<()> {
        let users = self.tx.open_table(USERS)?;
        for row in users.iter()? {
            let (k, v) = row?;
            let id = k.value();
            match codec::unseal(&key1(id), v.value()).and_then(|rec| decode_user_record(id, rec)) {
                Ok(u) => {
                    self.users.insert(id, u.name);
                }
                Err(e) => {
                    self.damaged_users.insert(id);
                    self.r
                        .damage("records", format!("users {id}: damaged record ({})", e.0));
                }
            }
        }
        let names = self.tx.open_table(USER_NAMES)?;
        let mut named = HashSet::new();
        for row in names.iter()? {
            let (k, v) = row?;
            let (key, id) = (k.value().to_string(), v.value());
            match self.users.get(&id) {
                Some(n) if name_key(n) == key => {
                    named.insert(id);
                }
                Some(n) => self.r.damage(
                    "indexes",
                    format!("user_names {key:?} points at user {id}, who is named {n:?}"),
                ),
                None if self.damaged_users.contains(&id) => {}
                None => self.r.damage(
                    "indexes",
                    format!("user_names {key:?} points at user {id}, who does not exist"),
                ),
            }
        }
        for (id, n) in &self.users {
            if !named.contains(id) {
                self.r.damage(
                    "indexes",
                    format!("user {id} ({n:?}) is missing from user_names"),
                );
            }
        }
        Ok(())
    }

    fn sessions(&mut self) -> Result<()> {
        let sessions = self.tx.open_table(SESSIONS)?;
        let index = self.tx.open_table(USER_SESSIONS)?;
        for row in sessions.iter()? {
            let (k, v) = row?;
            let hash = *k.value();
            let short = super::short_hash(&hash);
            match codec::unseal(&hash, v.value()).and_then(decode_session_record) {
                Ok(s) => {
                    if !self.users.contains_key(&s.user.0)
                        && !self.damaged_users.contains(&s.user.0)
                    {
                        self.r.damage(
                            "indexes",
                            format!(
                                "sessions {short}: belongs to user {}, who does not exist",
                                s.user.0
                            ),
                        );
                    }
                    if index.get((s.user.0, &hash))?.is_none() {
                        self.r.damage(
                            "indexes",
                            format!("sessions {short}: missing from user_sessions"),
                        );
                    }
                }
                Err(e) => self.r.damage(
                    "records",
                    format!("sessions {short}: damaged record ({})", e.0),
                ),
            }
        }
        for row in index.iter()? {
            let (k, _) = row?;
            let (user, hash) = k.value();
            if sessions.get(hash)?.is_none() {
                self.r.damage(
                    "indexes",
                    format!(
                        "user_sessions ({user}, {}) points at no session",
                        super::short_hash(hash)
                    ),
                );
            }
        }
        Ok(())
    }

    fn conversations(&mut self) -> Result<()> {
        let convs = self.tx.open_table(CONVERSATIONS)?;
        for row in convs.iter()? {
            let (k, v) = row?;
            let id = k.value();
            match super::chat::check_conv(id, v.value()) {
                Ok((direct, last_seq, members)) => {
                    self.convs.insert(id, (direct, last_seq, members));
                }
                Err(e) => {
                    self.damaged_convs.insert(id);
                    self.r.damage(
                        "records",
                        format!("conversations {id}: damaged record ({})", e.0),
                    );
                }
            }
        }
        Ok(())
    }

    fn conv_known(&self, id: u64) -> bool {
        self.convs.contains_key(&id) || self.damaged_convs.contains(&id)
    }

    fn members(&mut self) -> Result<()> {
        let members = self.tx.open_table(MEMBERS)?;
        let reads = self.tx.open_table(READ_SEQS)?;
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for row in members.iter()? {
            let (k, _) = row?;
            let (conv, user) = k.value();
            *counts.entry(conv).or_default() += 1;
            if !self.conv_known(conv) {
                self.r.damage(
                    "indexes",
                    format!("members ({conv}, {user}): conversation {conv} does not exist"),
                );
            }
            if !self.users.contains_key(&user) && !self.damaged_users.contains(&user) {
                self.r.damage(
                    "indexes",
                    format!("members ({conv}, {user}): user {user} does not exist"),
                );
            }
            if reads.get((user, conv))?.is_none() {
                self.r.damage(
                    "indexes",
                    format!("read_seqs has no entry for member {user} of conversation {conv}"),
                );
            }
        }
        for row in reads.iter()? {
            let (k, v) = row?;
            let (user, conv) = k.value();
            if members.get((conv, user))?.is_none() {
                self.r.damage(
                    "indexes",
                    format!("read_seqs ({user}, {conv}): {user} is not a member of {conv}"),
                );
            }
            if let Some((_, last, _)) = self.convs.get(&conv) {
                if v.value() > *last {
                    self.r.damage(
                        "indexes",
                        format!(
                            "read_seqs ({user}, {conv}) is {}, past the conversation's last seq {last}",
                            v.value()
                        ),
                    );
                }
            }
        }
        for (id, (_, _, n)) in &self.convs {
            let have = counts.get(id).copied().unwrap_or(0);
            if have != *n {
                self.r.damage(
                    "indexes",
                    format!("conversations {id} says {n} members, members has {have}"),
                );
            }
        }
        Ok(())
    }

    fn direct_pairs(&mut self) -> Result<()> {
        let pairs = self.tx.open_table(DIRECT_PAIRS)?;
        let members = self.tx.open_table(MEMBERS)?;
        for row in pairs.iter()? {
            let (k, v) = row?;
            let ((a, b), conv) = (k.value(), v.value());
            match self.convs.get(&conv) {
                Some((true, _, _)) => {
                    if members.get((conv, a))?.is_none() || members.get((conv, b))?.is_none() {
                        self.r.damage(
                            "indexes",
                            format!("direct_pairs ({a}, {b}) → {conv}: they are not its members"),
                        );
                    }
                }
                Some((false, _, _)) => self.r.damage(
                    "indexes",
                    format!("direct_pairs ({a}, {b}) → {conv}: a group"),
                ),
                None if self.damaged_convs.contains(&conv) => {}
                None => self.r.damage(
                    "indexes",
                    format!("direct_pairs ({a}, {b}) → {conv}: no such conversation"),
                ),
            }
        }
        Ok(())
    }

    fn messages(&mut self) -> Result<()> {
        let messages = self.tx.open_table(MESSAGES)?;
        let client_ids = self.tx.open_table(CLIENT_IDS)?;
        // Conversation → the next seq expected.
        let mut next: HashMap<u64, u64> = HashMap::new();
        let mut strays = HashSet::new();
        for row in messages.iter()? {
            let (k, v) = row?;
            let (conv, seq) = k.value();
            let last = match self.convs.get(&conv) {
                Some((_, last, _)) => *last,
                None if self.damaged_convs.contains(&conv) => u64::MAX,
                None => {
                    if strays.insert(conv) {
                        self.r.damage(
                            "messages",
                            format!("messages of conversation {conv}, which does not exist"),
                        );
                    }
                    continue;
                }
            };
            let expected = next.entry(conv).or_insert(1);
            if seq > last {
                self.r.damage(
                    "messages",
                    format!("messages {conv}/{seq}: a key past the conversation's last seq {last} (a damaged key)"),
                );
                continue;
            }
            if seq < *expected {
                self.r.damage(
                    "messages",
                    format!("messages {conv}/{seq}: a key out of order (a damaged key)"),
                );
                continue;
            }
            if seq > *expected {
                self.r.damage(
                    "messages",
                    format!(
                        "messages {conv}: seqs {} to {} are missing",
                        *expected,
                        seq - 1
                    ),
                );
            }
            *expected = seq + 1;
            self.messages += 1;
            match messages::decode(conv, seq, v.value()) {
                Ok(f) if f.kind == messages::KIND_LOST => self.lost += 1,
                Ok(f) => {
                    if !f.client_id.is_empty() {
                        let indexed = client_ids
                            .get((f.sender, client_id_hash(f.client_id)))?
                            .map(|v| v.value());
                        if indexed != Some((conv, seq)) {
                            self.r.damage(
                                "indexes",
                                format!("client_ids has no entry for message {conv}/{seq}"),
                            );
                        }
                    }
                }
                Err(e) => self.r.damage(
                    "records",
                    format!("messages {conv}/{seq}: damaged record ({})", e.0),
                ),
            }
        }
        for (id, (_, last, _)) in &self.convs {
            let expected = next.get(id).copied().unwrap_or(1);
            if expected <= *last {
                self.r.damage(
                    "messages",
                    format!("messages {id}: seqs {expected} to {last} are missing"),
                );
            }
        }
        Ok(())
    }

    fn client_ids(&mut self) -> Result<()> {
        let client_ids = self.tx.open_table(CLIENT_IDS)?;
        let messages = self.tx.open_table(MESSAGES)?;
        for row in client_ids.iter()? {
            let (k, v) = row?;
            let ((sender, hash), (conv, seq)) = (k.value(), v.value());
            let ok = match messages.get((conv, seq))? {
                Some(m) => messages::decode(conv, seq, m.value())
                    .map(|f| f.sender == sender && client_id_hash(f.client_id) == hash)
                    // A damaged message is reported as such.
                    .unwrap_or(true),
                None => false,
            };
            if !ok {
                self.r.damage(
                    "indexes",
                    format!("client_ids ({sender}, {hash:016x}) → {conv}/{seq}: not that message"),
                );
            }
        }
        Ok(())
    }
}
