//! The search index on disk (`<data>/search/`, a tantivy index) and the indexer thread that
//! keeps it following the store. It calls the store (reads only) and tantivy; nothing calls
//! into it but `search` (the handle) and the writer (through `Hints`).
//!
//! **Derived, never trusted.** Every message is a document keyed by (conversation, seq); only
//! text messages are indexed (other record kinds and unreadable records are skipped). The text
//! itself is not stored in the index: results are read back from the store.
//!
//! **Progress is in the index's own commit.** The indexer keeps, per conversation, the last seq
//! it has covered; that cursor map is written as the payload of every tantivy commit, so the
//! documents and the cursor that says which documents exist are made durable together. After
//! `kill -9` the index reopens at its last commit, the cursor says exactly what is in it, and
//! the indexer indexes every seq after it: none missing, none twice.
//!
//! **Off the writer's path.** After each committed batch the writer drops a `Hint` (the
//! conversation) into a bounded channel with `try_send`; it never waits. When the channel is
//! full the writer sets an overflow flag instead, and the indexer then compares every
//! conversation's last seq with its cursor (as it does at start, and every `RESCAN` anyway).
//! Documents are committed at most every `COMMIT_EVERY` (the search sees a message within
//! about that, plus the commit itself), in one tantivy writer thread with a memory budget
//! (`--search-memory-mb`) and one merge thread.
//!
//! **Rebuilt when it cannot be trusted.** A missing index, one tantivy cannot open, one with
//! damaged files (checksums), another format, no cursor, or a cursor from another database
//! (epoch: a restore) is deleted and rebuilt from the store, with progress in the log, while
//! the server runs (searches meanwhile find what is indexed so far).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::indexer::IndexWriterOptions;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, Term};

use super::tokenizer::{self, Mode};
use super::Shared;
use crate::model::ConversationId;
use crate::store::Store;

/// The directory inside the data directory.
pub const DIR: &str = "search";

/// Written in the commit payload; another value (an index of another layout) is rebuilt.
const FORMAT: &str = "chatd-search 1";

/// Longest a new message waits in the indexer's memory before a commit makes it searchable.
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// While catching up (start, rebuild), a commit every this many documents.
const CATCH_UP_COMMIT_DOCS: u64 = 100_000;
/// Seqs read from the store per page while indexing.
const PAGE: usize = 2000;
/// A full comparison of every conversation with the cursor, whatever the hints said.
const RESCAN: Duration = Duration::from_secs(30);
/// After a failed index write, the next attempt.
const RETRY: Duration = Duration::from_secs(5);
/// Hints waiting for the indexer; beyond this the writer sets the overflow flag.
pub const HINT_QUEUE: usize = 65_536;

/// The index's fields.
#[derive(Clone, Copy)]
pub struct Fields {
    pub text: Field,
    pub conv: Field,
    pub seq: Field,
    pub sender: Field,
    pub time: Field,
    /// (conversation, seq), 16 bytes big-endian: the unique key an edit or delete removes by.
    pub key: Field,
}

pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer::NAME)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        ),
    );
    let num = || NumericOptions::default().set_indexed().set_fast();
    let conv = b.add_u64_field("conv", num());
    let seq = b.add_u64_field("seq", NumericOptions::default().set_fast());
    let sender = b.add_u64_field("sender", num());
    let time = b.add_u64_field("time", num());
    let key = b.add_bytes_field(
        "key",
        tantivy::schema::BytesOptions::default().set_indexed(),
    );
    (
        b.build(),
        Fields {
            text,
            conv,
            seq,
            sender,
            time,
            key,
        },
    )
}

pub fn key_bytes(conv: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&conv.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The open index, shared by the indexer (which writes) and searches (which read).
pub struct Engine {
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
}

/// What the writer tells the indexer.
#[derive(Clone, Copy, Debug)]
pub enum Hint {
    /// New messages were committed in this conversation.
    Appended(ConversationId),
    /// The message at (conversation, seq) changed or was removed: its document is replaced by
    /// what the store now holds (nothing, if it is no longer a text message). For message
    /// edits and deletions (issue 23).
    Changed(ConversationId, u64),
}

/// The writer's side: never blocks (see the module doc).
#[derive(Clone)]
pub struct Hints {
    tx: SyncSender<Hint>,
    overflow: Arc<AtomicBool>,
}

impl Hints {
    pub fn new() -> (Hints, Receiver<Hint>, Arc<AtomicBool>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(HINT_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        (
            Hints {
                tx,
                overflow: overflow.clone(),
            },
            rx,
            overflow,
        )
    }

    pub fn send(&self, hint: Hint) {
        match self.tx.try_send(hint) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.overflow.store(true, Relaxed),
            // The indexer stopped (it logged why); the next start catches up.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The durable cursor: per conversation, the last seq indexed (covered).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: u64,
    pub seqs: HashMap<u64, u64>,
}

impl Cursor {
    /// `chatd-search 1;epoch;conv:seq,conv:seq,...`
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(32 + self.seqs.len() * 12);
        out.push_str(FORMAT);
        out.push(';');
        out.push_str(&self.epoch.to_string());
        out.push(';');
        let mut list: Vec<_> = self.seqs.iter().filter(|(_, s)| **s > 0).collect();
        list.sort_unstable();
        for (i, (c, s)) in list.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{c}:{s}"));
        }
        out
    }

    pub fn decode(payload: &str) -> Option<Cursor> {
        let mut parts = payload.splitn(3, ';');
        if parts.next()? != FORMAT {
            return None;
        }
        let epoch = parts.next()?.parse().ok()?;
        let mut seqs = HashMap::new();
        for pair in parts.next()?.split(',').filter(|p| !p.is_empty()) {
            let (c, s) = pair.split_once(':')?;
            seqs.insert(c.parse().ok()?, s.parse().ok()?);
        }
        Some(Cursor { epoch, seqs })
    }

    pub fn total(&self) -> u64 {
        self.seqs.values().sum()
    }
}

fn new_index(dir: &Path) -> tantivy::Result<Index> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Index::create_in_dir(dir, schema().0)
}

/// Opens the index in `dir` with its cursor, or says why it must be rebuilt.
fn open_existing(dir: &Path, epoch: u64) -> Result<(Index, Cursor), String> {
    if !dir.join("meta.json").exists() {
        return Err("there is none".into());
    }
    let index = Index::open_in_dir(dir).map_err(|e| format!("it cannot be opened ({e})"))?;
    if index.schema() != schema().0 {
        return Err("it has another layout".into());
    }
    let damaged = index
        .validate_checksum()
        .map_err(|e| format!("it cannot be checked ({e})"))?;
    if !damaged.is_empty() {
        return Err(format!("{} of its files are damaged", damaged.len()));
    }
    let metas = index
        .load_metas()
        .map_err(|e| format!("it cannot be read ({e})"))?;
    let cursor = match metas.payload.as_deref() {
        Some(p) => Cursor::decode(p).ok_or("its progress record is unreadable")?,
        None if metas.segments.is_empty() => Cursor {
            epoch,
            seqs: HashMap::new(),
        },
        None => return Err("it has no progress record".into()),
    };
    if cursor.epoch != epoch {
        return Err("it belongs to another database (restored?)".into());
    }
    Ok((index, cursor))
}

/// Opens (or creates, or rebuilds) the index under `data_dir`: the engine, the cursor, and
/// whether everything is being indexed from scratch.
pub fn open(data_dir: &Path, epoch: u64) -> tantivy::Result<(Engine, Cursor, bool)> {
    let dir = data_dir.join(DIR);
    let (index, cursor, fresh) = match open_existing(&dir, epoch) {
        Ok((index, cursor)) => (index, cursor, false),
        Err(why) => {
            if dir.join("meta.json").exists() {
                tracing::warn!(
                    "search index in {}: {why}; rebuilding it from the database",
                    dir.display()
                );
            } else {
                tracing::info!(
                    "search index in {}: {why}; building it from the database",
                    dir.display()
                );
            }
            let index = new_index(&dir)?;
            let cursor = Cursor {
                epoch,
                seqs: HashMap::new(),
            };
            (index, cursor, true)
        }
    };
    index
        .tokenizers()
        .register(tokenizer::NAME, tokenizer::analyzer(Mode::Index));
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let fields = schema().1;
    Ok((
        Engine {
            index,
            reader,
            fields,
        },
        cursor,
        fresh,
    ))
}

/// The indexer thread's state.
pub struct Indexer {
    pub store: Store,
    pub shared: Arc<Shared>,
    pub engine: Arc<Engine>,
    pub writer: IndexWriter,
    pub cursor: Cursor,
    /// The cursor of the last commit (restored after a failed one).
    committed: Cursor,
    pending: u64,
    last_commit: Instant,
    dir: PathBuf,
    /// Since the last failure, no commit has succeeded (one log line per streak).
    failing: bool,
    last_failure: Instant,
}

/// The tantivy writer with the memory budget (`--search-memory-mb`, at least tantivy's 15 MB).
pub fn writer(index: &Index, memory_mb: u64) -> tantivy::Result<IndexWriter> {
    let budget = usize::try_from(memory_mb.saturating_mul(1 << 20))
        .unwrap_or(usize::MAX)
        // tantivy's bounds: at least 15 MB, below 4 GiB.
        .clamp(15_000_000, 4_000_000_000);
    let options = IndexWriterOptions::builder()
        .memory_budget_per_thread(budget)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build();
    index.writer_with_options(options)
}

/// Bytes of the files in `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Indexer {
    pub fn new(
        store: Store,
        shared: Arc<Shared>,
        engine: Arc<Engine>,
        writer: IndexWriter,
        cursor: Cursor,
        data_dir: &Path,
    ) -> Indexer {
        Indexer {
            store,
            shared,
            engine,
            writer,
            committed: cursor.clone(),
            cursor,
            pending: 0,
            last_commit: Instant::now(),
            dir: data_dir.join(DIR),
            failing: false,
            last_failure: Instant::now(),
        }
    }

    /// Runs until the writer (the last `Hints`) is gone.
    pub fn run(mut self, rx: Receiver<Hint>, overflow: Arc<AtomicBool>) {
        self.publish();
        if let Err(e) = self.catch_up(true) {
            self.failed(&e);
        }
        let mut dirty: HashSet<u64> = HashSet::new();
        let mut changed: Vec<(u64, u64)> = Vec::new();
        let mut last_scan = Instant::now();
        loop {
            let wait = if self.failing {
                RETRY.saturating_sub(self.last_failure.elapsed())
            } else if self.pending > 0 {
                COMMIT_EVERY.saturating_sub(self.last_commit.elapsed())
            } else {
                RESCAN.saturating_sub(last_scan.elapsed())
            };
            let mut stop = false;
            let mut note = |h: Hint| match h {
                Hint::Appended(c) => {
                    dirty.insert(c.0);
                }
                Hint::Changed(c, s) => changed.push((c.0, s)),
            };
            match rx.recv_timeout(wait) {
                Ok(h) => {
                    note(h);
                    while let Ok(h) = rx.try_recv() {
                        note(h);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            // After a failure the work of the lost hints is redone by comparing everything.
            let full = overflow.swap(false, Relaxed)
                || last_scan.elapsed() >= RESCAN
                || (self.failing && self.last_failure.elapsed() >= RETRY);
            let result = (|| -> Result<(), String> {
                if full {
                    last_scan = Instant::now();
                    dirty.clear();
                    self.catch_up(false)?;
                }
                for conv in dirty.drain() {
                    self.index_conversation(ConversationId(conv))?;
                }
                for (conv, seq) in changed.drain(..) {
                    self.reindex(conv, seq)?;
                }
                if self.pending > 0 && (stop || self.last_commit.elapsed() >= COMMIT_EVERY) {
                    self.commit()?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                self.failed(&e);
            }
            if stop {
                tracing::debug!("search indexer stopped");
                return;
            }
        }
    }

    /// After a failure (disk full?): back to the last commit, and try again a little later.
    /// One warning per streak of failures (a full disk is the store's error to report; chat
    /// goes on without the index), and one line when it works again.
    fn failed(&mut self, e: &str) {
        if self.failing {
            tracing::debug!("search index: still failing: {e}");
        } else {
            tracing::warn!(
                "search index: {e}; new messages are not searchable until it can write again (retried every 5 s)"
            );
            self.failing = true;
        }
        let _ = self.writer.rollback();
        self.cursor = self.committed.clone();
        self.pending = 0;
        self.last_failure = Instant::now();
    }

    /// Indexes every conversation behind its last seq. `start`: say so in the log.
    fn catch_up(&mut self, start: bool) -> Result<(), String> {
        let heads = self.store.conversation_heads().map_err(|e| e.to_string())?;
        let behind: Vec<(ConversationId, u64)> = heads
            .into_iter()
            .filter(|(c, last)| self.cursor.seqs.get(&c.0).copied().unwrap_or(0) < *last)
            .collect();
        let owed: u64 = behind
            .iter()
            .map(|(c, last)| last - self.cursor.seqs.get(&c.0).copied().unwrap_or(0))
            .sum();
        if owed == 0 {
            return Ok(());
        }
        let loud = start && owed >= 1000;
        if loud {
            tracing::info!(
                "search index: indexing {owed} messages in {} conversations",
                behind.len()
            );
        }
        let began = Instant::now();
        let mut said = Instant::now();
        let mut done = 0u64;
        for (conv, _) in behind {
            let before = self.cursor.seqs.get(&conv.0).copied().unwrap_or(0);
            self.index_conversation(conv)?;
            done += self.cursor.seqs.get(&conv.0).copied().unwrap_or(0) - before;
            if loud && said.elapsed() >= Duration::from_secs(5) {
                said = Instant::now();
                tracing::info!("search index: {done} of {owed} messages indexed");
            }
        }
        if self.pending > 0 {
            self.commit()?;
        }
        if loud {
            tracing::info!(
                "search index: caught up, {done} messages in {:.1} s",
                began.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Indexes the messages of `conv` after its cursor, up to its last seq now.
    fn index_conversation(&mut self, conv: ConversationId) -> Result<(), String> {
        let f = self.engine.fields;
        loop {
            let after = self.cursor.seqs.get(&conv.0).copied().unwrap_or(0);
            let (messages, covered) = self
                .store
                .index_page(conv, after, PAGE)
                .map_err(|e| e.to_string())?;
            for m in &messages {
                self.writer
                    .add_document(doc!(
                        f.text => m.text.as_str(),
                        f.conv => conv.0,
                        f.seq => m.seq,
                        f.sender => m.sender.0,
                        f.time => m.time_ms,
                        f.key => key_bytes(conv.0, m.seq).to_vec(),
                    ))
                    .map_err(|e| e.to_string())?;
            }
            self.pending += messages.len() as u64;
            if covered <= after {
                return Ok(());
            }
            self.cursor.seqs.insert(conv.0, covered);
            if self.pending >= CATCH_UP_COMMIT_DOCS {
                self.commit()?;
            }
        }
    }

    /// Replaces the document of (conv, seq) by what the store holds now (see `Hint::Changed`).
    /// Seqs the cursor has not reached are left to `index_conversation`.
    fn reindex(&mut self, conv: u64, seq: u64) -> Result<(), String> {
        if seq == 0 || seq > self.cursor.seqs.get(&conv).copied().unwrap_or(0) {
            return Ok(());
        }
        let f = self.engine.fields;
        self.writer
            .delete_term(Term::from_field_bytes(f.key, &key_bytes(conv, seq)));
        let (messages, _) = self
            .store
            .index_page(ConversationId(conv), seq - 1, 1)
            .map_err(|e| e.to_string())?;
        for m in messages.iter().filter(|m| m.seq == seq) {
            self.writer
                .add_document(doc!(
                    f.text => m.text.as_str(),
                    f.conv => conv,
                    f.seq => m.seq,
                    f.sender => m.sender.0,
                    f.time => m.time_ms,
                    f.key => key_bytes(conv, m.seq).to_vec(),
                ))
                .map_err(|e| e.to_string())?;
        }
        self.pending += 1;
        Ok(())
    }

    /// Commits the documents and the cursor together, and makes them searchable.
    fn commit(&mut self) -> Result<(), String> {
        let mut prepared = self.writer.prepare_commit().map_err(|e| e.to_string())?;
        prepared.set_payload(&self.cursor.encode());
        prepared.commit().map_err(|e| e.to_string())?;
        self.committed = self.cursor.clone();
        self.pending = 0;
        self.last_commit = Instant::now();
        if self.failing {
            self.failing = false;
            tracing::info!("search index: writing again; catching up");
        }
        self.engine.reader.reload().map_err(|e| e.to_string())?;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let stats = &self.shared.stats;
        stats.indexed_seqs.store(self.committed.total(), Relaxed);
        stats.index_bytes.store(dir_bytes(&self.dir), Relaxed);
        stats.commits.fetch_add(1, Relaxed);
    }
}

/// Counters for /metrics.
pub struct Stats {
    /// Seqs covered by the last commit (the sum of the cursor).
    pub indexed_seqs: AtomicU64,
    pub index_bytes: AtomicU64,
    pub commits: AtomicU64,
    pub queries: AtomicU64,
    pub query_seconds: crate::metrics::Histogram,
}

/// Query latency buckets, seconds.
const QUERY_SECONDS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0];

impl Default for Stats {
    fn default() -> Self {
        Stats {
            indexed_seqs: AtomicU64::new(0),
            index_bytes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            query_seconds: crate::metrics::Histogram::new(QUERY_SECONDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let mut c = Cursor {
            epoch: u64::MAX,
            seqs: HashMap::new(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        c.seqs.insert(7, 12);
        c.seqs.insert(1, 3);
        assert_eq!(c.encode(), format!("{FORMAT};{};1:3,7:12", u64::MAX));
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        assert_eq!(c.total(), 15);
        assert_eq!(Cursor::decode("chatd-search 0;1;"), None);
        assert_eq!(Cursor::decode("chatd-search 1;x;"), None);
        assert_eq!(Cursor::decode("chatd-search 1;1;1-2"), None);
    }
}
