//! Message search: the `search` frame, and `history` around a seq (to open a result).
//!
//! Owns the full-text index (`index`: a tantivy index under `<data>/search/`, derived from the
//! store and kept following it by the indexer thread), the query language (`query`) and the
//! tokenizer for English, Chinese and mixed text (`tokenizer`). It calls the store (reads only,
//! through `App::db` for requests), tantivy, and nothing that writes.
//!
//! A search never trusts the index alone: it restricts the query to the conversations the user
//! is a member of now (read from the store), and reads every hit back from the store with
//! membership checked again in that snapshot; a hit the store no longer has as a readable text
//! message is dropped. Results are newest first; `next` resumes after the last one.

pub mod index;
pub mod query;
pub mod tokenizer;

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, QueryClone, RangeQuery, TermSetQuery};
use tantivy::{DocId, SegmentReader, Term};

use crate::model::{name_key, now_ms, ConversationId, StoredMessage, UserId};
use crate::proto::{self, ErrorCode, ServerFrame};
use crate::store::search_reads::ScopeConversation;
use crate::store::{Store, StoreError};
use index::{Engine, Stats};
pub use index::{Hint, Hints};
use query::{QueryError, QueryTerm};
use tokenizer::Mode;

/// Results per page when the request does not say, and at most.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 50;
/// A plain word in fewer documents than this is searched over all time at once (see `run`).
/// (Small in unit tests, so a small history takes the windowed path.)
const RARE_DOCS: u64 = if cfg!(test) { 10 } else { 20_000 };
/// The first time window searched for frequent words: one day.
const WINDOW_FIRST_MS: u64 = 86_400_000;
/// Snippets: at most this many characters of the message, around the first match.
const SNIPPET_CHARS: usize = 160;
/// Characters of context kept before the first match in a cut snippet.
const SNIPPET_LEAD: usize = 40;

/// State shared by the handle and the indexer thread.
pub struct Shared {
    engine: OnceLock<Arc<Engine>>,
    pub stats: Stats,
    /// Set when the indexer thread has ended (after its last commit).
    stopped: std::sync::atomic::AtomicBool,
}

/// The server's handle on search (in `App`).
#[derive(Clone)]
pub struct Search {
    shared: Arc<Shared>,
}

impl Search {
    /// Starts the indexer thread (it opens or rebuilds the index, then follows the store) and
    /// returns the handle and the writer's `Hints`.
    pub fn start(
        store: Store,
        data_dir: &Path,
        memory_mb: u64,
    ) -> std::io::Result<(Search, Hints)> {
        let shared = Arc::new(Shared {
            engine: OnceLock::new(),
            stats: Stats::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        let (hints, rx, overflow) = Hints::new();
        let thread_shared = shared.clone();
        let dir = data_dir.to_path_buf();
        std::thread::Builder::new()
            .name("chatd-search".into())
            .spawn(move || {
                // Indexing may lag, sends may not: this thread (and tantivy's worker and merge
                // threads, which it starts and which inherit it) runs at nice 10, so under load
                // the writer, fan-out and sessions get the CPU first. Best effort.
                if let Err(e) =
                    rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10)
                {
                    tracing::debug!("search indexer: cannot lower its priority ({e})");
                }
                let opened = index::open(&dir, store.epoch()).and_then(|(engine, cursor, _)| {
                    let writer = index::writer(&engine.index, memory_mb)?;
                    Ok((engine, cursor, writer))
                });
                let done = thread_shared.clone();
                let _stopped = Stopped(&done);
                let (engine, cursor, writer) = match opened {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(
                            "search index in {}: cannot open or create it ({e}); search is off until the next start",
                            dir.join(index::DIR).display()
                        );
                        return;
                    }
                };
                let engine = Arc::new(engine);
                let _ = thread_shared.engine.set(engine.clone());
                index::Indexer::new(store, thread_shared, engine, writer, cursor, &dir)
                    .run(rx, overflow);
            })?;
        Ok((Search { shared }, hints))
    }

    /// Waits (up to `timeout`) for the indexer to make its last commit and stop, which it does
    /// once the writer has stopped: a clean shutdown leaves a complete index.
    pub fn wait_stopped(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.shared.stopped.load(Relaxed) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    /// The search section of /metrics. `messages_in_store` gives the lag.
    pub fn render_metrics(&self, out: &mut String, messages_in_store: Option<u64>) {
        use std::fmt::Write;
        let s = &self.shared.stats;
        let indexed = s.indexed_seqs.load(Relaxed);
        let mut put = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        put(
            "chatd_search_index_bytes",
            "gauge",
            "Size of the search index on disk (the search directory in the data directory).",
            s.index_bytes.load(Relaxed),
        );
        put(
            "chatd_search_indexed_messages",
            "gauge",
            "Messages (seqs) the search index covers as of its last commit.",
            indexed,
        );
        if let Some(n) = messages_in_store {
            put(
                "chatd_search_lag_messages",
                "gauge",
                "Messages stored but not yet searchable (catching up after a start or rebuild, or under load).",
                n.saturating_sub(indexed),
            );
        }
        put(
            "chatd_search_queries_total",
            "counter",
            "Search requests answered.",
            s.queries.load(Relaxed),
        );
        s.query_seconds.render(
            out,
            "chatd_search_query_duration_seconds",
            "Time to answer one search (index query, membership filter, reading the hits back).",
        );
    }

    /// Runs a search for `user` (blocking: call it on a store reader thread).
    pub fn search(&self, store: &Store, user: UserId, req: &Request) -> Result<Page, SearchError> {
        let started = Instant::now();
        let out = self.run(store, user, req);
        let s = &self.shared.stats;
        s.queries.fetch_add(1, Relaxed);
        s.query_seconds.observe_duration(started.elapsed());
        out
    }

    fn run(&self, store: &Store, user: UserId, req: &Request) -> Result<Page, SearchError> {
        let parsed = query::parse(&req.query).map_err(SearchError::Query)?;
        let limit = req.limit.clamp(1, MAX_LIMIT);
        let cursor = match &req.before {
            Some(s) => Some(decode_next(s).ok_or(SearchError::BadCursor)?),
            None => None,
        };
        let engine = self.shared.engine.get().ok_or(SearchError::Unavailable)?;
        let f = engine.fields;
        let mut analyzer = tokenizer::analyzer(Mode::Query);
        let (texts, terms) = query::text_queries(&parsed, f.text, &mut analyzer);
        if texts.is_empty() && !parsed.has_filters() {
            return Err(SearchError::Query(QueryError::NothingToSearch));
        }

        // Where the user may search: their conversations now, narrowed by the request.
        let scope = store.search_scope(user)?;
        let mut convs: Vec<u64> = scope.iter().map(|c| c.id.0).collect();
        if let Some(c) = req.conversation {
            if !convs.contains(&c) {
                return Err(SearchError::NotFound);
            }
            convs = vec![c];
        }
        if !parsed.within.is_empty() {
            let wanted: Vec<String> = parsed.within.iter().map(|w| w.to_lowercase()).collect();
            let names = |c: &ScopeConversation| -> Vec<String> {
                let mut n: Vec<String> = c.peer_names.iter().map(|p| p.to_lowercase()).collect();
                if !c.title.is_empty() {
                    n.push(c.title.to_lowercase());
                }
                n
            };
            // Exact names first; a name that matches none exactly matches by substring.
            let mut keep = HashSet::new();
            for w in &wanted {
                let exact: Vec<u64> = scope
                    .iter()
                    .filter(|c| names(c).iter().any(|n| n == w))
                    .map(|c| c.id.0)
                    .collect();
                if exact.is_empty() {
                    keep.extend(
                        scope
                            .iter()
                            .filter(|c| names(c).iter().any(|n| n.contains(w.as_str())))
                            .map(|c| c.id.0),
                    );
                } else {
                    keep.extend(exact);
                }
            }
            convs.retain(|c| keep.contains(c));
        }
        if convs.is_empty() {
            return Ok(Page::default());
        }
        let mut filters: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        filters.push((
            Occur::Must,
            Box::new(TermSetQuery::new(
                convs.iter().map(|c| Term::from_field_u64(f.conv, *c)),
            )),
        ));
        if !parsed.from.is_empty() {
            let wanted: Vec<String> = parsed.from.iter().map(|n| n.to_lowercase()).collect();
            let senders: Vec<u64> = store
                .list_users()?
                .into_iter()
                .filter(|u| {
                    wanted.iter().any(|w| {
                        name_key(&u.name) == name_key(w)
                            || u.display_name
                                .as_deref()
                                .is_some_and(|d| d.to_lowercase() == *w)
                    })
                })
                .map(|u| u.id.0)
                .collect();
            if senders.is_empty() {
                return Ok(Page::default());
            }
            filters.push((
                Occur::Must,
                Box::new(TermSetQuery::new(
                    senders.iter().map(|s| Term::from_field_u64(f.sender, *s)),
                )),
            ));
        }
        if let Some((lo, hi)) = query::time_bounds(&parsed, f.time) {
            filters.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        if let Some((t, _, _)) = cursor {
            filters.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Unbounded,
                    Bound::Included(Term::from_field_u64(f.time, t)),
                )),
            ));
        }
        for q in texts {
            filters.push((Occur::Must, q));
        }
        // Newest first by (time, conversation, seq); entries at or after the cursor (only
        // those sent in the cursor's millisecond get past the time range) sort last and are
        // dropped.
        let collector = TopDocs::with_limit(limit + 1).custom_score(move |seg: &SegmentReader| {
            let ff = seg.fast_fields();
            let (t, c, s) = (ff.u64("time").ok(), ff.u64("conv").ok(), ff.u64("seq").ok());
            move |doc: DocId| {
                let get = |col: &Option<tantivy::columnar::Column<u64>>| {
                    col.as_ref().and_then(|c| c.first(doc)).unwrap_or(0)
                };
                let key = (get(&t), get(&c), get(&s));
                if cursor.is_some_and(|cur| key >= cur) {
                    (0, 0, 0)
                } else {
                    key
                }
            }
        });
        let searcher = engine.reader.searcher();
        // Ranking every match of a word in most messages ("the") costs time in proportion to
        // the matches; but only the newest `limit + 1` are wanted. So unless a plain word is
        // rare, search the newest day first, then 16 times as far back, and so on, until a
        // window holds more than `limit` matches (then the newest of all matches are in it) or
        // it reaches back to the beginning.
        let rare = terms
            .iter()
            .filter(|t| !t.prefix)
            .map(|t| {
                searcher
                    .doc_freq(&Term::from_field_text(f.text, &t.text))
                    .unwrap_or(u64::MAX)
            })
            .min()
            .is_some_and(|n| n < RARE_DOCS);
        let top = cursor.map_or_else(now_ms, |c| c.0);
        let mut span = if rare { u64::MAX } else { WINDOW_FIRST_MS };
        let mut keys: Vec<(u64, u64, u64)> = loop {
            let lo = top.saturating_sub(span);
            let mut parts: Vec<(Occur, Box<dyn Query>)> =
                filters.iter().map(|(o, q)| (*o, q.box_clone())).collect();
            if lo > 0 {
                parts.push((
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Included(Term::from_field_u64(f.time, lo)),
                        Bound::Unbounded,
                    )),
                ));
            }
            let found = searcher
                .search(&BooleanQuery::new(parts), &collector)
                .map_err(|e| SearchError::Index(e.to_string()))?;
            let keys: Vec<(u64, u64, u64)> = found
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| *k != (0, 0, 0))
                .collect();
            if keys.len() > limit || lo == 0 {
                break keys;
            }
            span = span.saturating_mul(16);
        };
        let next = (keys.len() > limit).then(|| {
            keys.truncate(limit);
            keys.last().map(|k| encode_next(*k)).unwrap_or_default()
        });
        // Read back from the store (membership checked again there), never from the index.
        let allowed: HashSet<u64> = convs.into_iter().collect();
        keys.retain(|k| allowed.contains(&k.1));
        let at: Vec<(u64, u64)> = keys.iter().map(|k| (k.1, k.2)).collect();
        let messages = store.messages_at(user, &at)?;
        let mut highlight_analyzer = tokenizer::analyzer(Mode::Index);
        let results = messages
            .into_iter()
            .flatten()
            .map(|m| {
                let (snippet, highlights) = snippet(&m.text, &terms, &mut highlight_analyzer);
                Hit {
                    message: m,
                    snippet,
                    highlights,
                }
            })
            .collect();
        Ok(Page { results, next })
    }
}

/// Marks the indexer stopped when its thread ends, however it ends.
struct Stopped<'a>(&'a Arc<Shared>);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.stopped.store(true, Relaxed);
    }
}

/// A `search` request.
#[derive(Clone, Debug)]
pub struct Request {
    pub query: String,
    pub conversation: Option<u64>,
    /// The `next` of the previous page.
    pub before: Option<String>,
    pub limit: usize,
}

/// One result.
#[derive(Clone, Debug)]
pub struct Hit {
    pub message: StoredMessage,
    pub snippet: String,
    /// `[start, end)` in characters (Unicode code points) of `snippet`.
    pub highlights: Vec<[usize; 2]>,
}

#[derive(Clone, Debug, Default)]
pub struct Page {
    pub results: Vec<Hit>,
    pub next: Option<String>,
}

#[derive(Debug)]
pub enum SearchError {
    Query(QueryError),
    BadCursor,
    /// The conversation does not exist or the user is not a member.
    NotFound,
    /// The index is not open (yet).
    Unavailable,
    Store(StoreError),
    Index(String),
}

impl From<StoreError> for SearchError {
    fn from(e: StoreError) -> Self {
        SearchError::Store(e)
    }
}

fn encode_next((t, c, s): (u64, u64, u64)) -> String {
    format!("{t}.{c}.{s}")
}

fn decode_next(s: &str) -> Option<(u64, u64, u64)> {
    let mut parts = s.split('.');
    let key = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(key)
}

/// The snippet of `text` around its first match, and the matches in it.
pub fn snippet(
    text: &str,
    terms: &[QueryTerm],
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
) -> (String, Vec<[usize; 2]>) {
    // Byte ranges of matching tokens, merged.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    if !terms.is_empty() {
        let mut s = analyzer.token_stream(text);
        while s.advance() {
            let t = s.token();
            let hit = terms.iter().any(|q| {
                if q.prefix {
                    t.text.starts_with(&q.text)
                } else {
                    t.text == q.text
                }
            });
            if hit {
                ranges.push((t.offset_from, t.offset_to));
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    // To character offsets.
    let char_at = |byte: usize| text[..byte].chars().count();
    let marks: Vec<[usize; 2]> = merged
        .iter()
        .map(|(a, b)| [char_at(*a), char_at(*b)])
        .collect();
    let total = text.chars().count();
    if total <= SNIPPET_CHARS {
        return (text.to_string(), marks);
    }
    let first = marks.first().map_or(0, |m| m[0]);
    let start = first
        .saturating_sub(SNIPPET_LEAD)
        .min(total - SNIPPET_CHARS);
    let end = start + SNIPPET_CHARS;
    let mut out = String::new();
    let shift = if start > 0 {
        out.push('…');
        1
    } else {
        0
    };
    out.extend(text.chars().skip(start).take(SNIPPET_CHARS));
    if end < total {
        out.push('…');
    }
    let marks = marks
        .into_iter()
        .filter(|m| m[0] >= start && m[1] <= end)
        .map(|m| [m[0] - start + shift, m[1] - start + shift])
        .collect();
    (out, marks)
}

/// The error frame for a failed search.
fn error_frame(r: Option<u64>, e: SearchError) -> ServerFrame {
    let (code, message) = match e {
        SearchError::Query(q) => (ErrorCode::BadQuery, q.to_string()),
        SearchError::BadCursor => (
            ErrorCode::BadFrame,
            "before: not a cursor from a previous search_results".to_string(),
        ),
        SearchError::NotFound => (ErrorCode::NotFound, "no such conversation".to_string()),
        SearchError::Unavailable => (
            ErrorCode::SearchUnavailable,
            "search is not available yet (the index is opening); retry in a moment".to_string(),
        ),
        SearchError::Store(e) => {
            tracing::error!("search: store read failed: {e}");
            (
                ErrorCode::Internal,
                "the server failed; retry later".to_string(),
            )
        }
        SearchError::Index(e) => {
            tracing::error!("search: index query failed: {e}");
            (
                ErrorCode::Internal,
                "the server failed; retry later".to_string(),
            )
        }
    };
    ServerFrame::error(r, None, code, message)
}

/// Answers a `search` frame: `search_results`, or an `error`.
pub async fn respond(
    app: &crate::app::App,
    user: UserId,
    r: Option<u64>,
    req: Request,
) -> ServerFrame {
    let search = app.search.clone();
    // The whole search (store reads and the index) on a store reader thread.
    let res = app
        .db(move |s| Ok(search.search(s, user, &req)))
        .await
        .unwrap_or_else(|e| Err(SearchError::Store(e)));
    match res {
        Ok(page) => ServerFrame::SearchResults {
            reference: r,
            results: page
                .results
                .into_iter()
                .map(|h| proto::SearchResult {
                    conversation: h.message.conversation.0,
                    seq: h.message.seq,
                    sender: h.message.sender.0,
                    sender_name: h.message.sender_name,
                    time: h.message.time_ms,
                    snippet: h.snippet,
                    highlights: h.highlights,
                })
                .collect(),
            next: page.next,
        },
        Err(e) => error_frame(r, e),
    }
}

/// `history` around `seq`: up to `limit` messages, about half before `seq`, `seq` itself,
/// and the rest after it, oldest first; `None` if `user` is not a member. Reads what
/// `Store::history` and `Store::messages_after` read (membership checked by both).
pub fn history_around(
    store: &Store,
    user: UserId,
    conv: ConversationId,
    seq: u64,
    limit: usize,
    text_bytes: usize,
) -> Result<Option<Vec<StoredMessage>>, StoreError> {
    let limit = limit.max(1);
    let older = limit / 2;
    // Messages with seq <= `seq` (the newest `older + 1`), then those after it.
    let Some(mut out) = store.history(user, conv, seq.saturating_add(1), older + 1, text_bytes)?
    else {
        return Ok(None);
    };
    let newer = limit.saturating_sub(out.len());
    if newer > 0 {
        match store.messages_after(user, conv, seq, newer)? {
            Some(more) => out.extend(more),
            None => return Ok(None),
        }
    }
    // Near the newest message: fill the page with older ones instead.
    let first = out.first().map_or(0, |m| m.seq);
    if out.len() < limit && first > 1 {
        if let Some(mut older) = store.history(user, conv, first, limit - out.len(), text_bytes)? {
            older.append(&mut out);
            out = older;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chat::{MemberCache, Target};

    /// A history over three years: a frequent word is searched in growing time windows, and
    /// paging through it still gives every match once, newest first; a rare word and a filter
    /// find theirs across the whole range. On a real store and index.
    #[test]
    fn windows_and_paging_give_every_match_once_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = ["ann", "ben", "cat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let users = store
            .seed_users(&names, "x", &[[1; 32], [2; 32], [3; 32]], now_ms())
            .unwrap();
        let (ann, ben, cat) = (users[0].id, users[1].id, users[2].id);
        let mut cache = MemberCache::default();
        let now = now_ms();
        let day = 86_400_000;
        let (group, other) = store
            .chat_batch(&mut cache, |b| {
                // Created long ago (a conversation's times never go back before its last).
                let long_ago = now - 1500 * day;
                let g = b
                    .create_group(ann, "g", &[ben], long_ago)?
                    .unwrap()
                    .conversation;
                let o = b
                    .create_group(cat, "o", &[], long_ago)?
                    .unwrap()
                    .conversation;
                // 300 messages, one every 4 days (the oldest ~3.3 years ago); every 7th also
                // has a rare word. cat's own group has the frequent word too.
                for i in 0..300u64 {
                    let text = if i % 7 == 0 {
                        format!("the zircon {i}")
                    } else {
                        format!("the word {i}")
                    };
                    let sender = if i % 2 == 0 { ann } else { ben };
                    let time = now - (300 - i) * 4 * day;
                    b.send(
                        sender,
                        "x",
                        Target::Conversation(g),
                        &format!("m{i}"),
                        &text,
                        time,
                    )?
                    .unwrap();
                    b.send(
                        cat,
                        "x",
                        Target::Conversation(o),
                        &format!("m{i}"),
                        "the",
                        time,
                    )?
                    .unwrap();
                }
                Ok((g, o))
            })
            .unwrap();
        let (search, _hints) = Search::start(store.clone(), dir.path(), 16).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while search.shared.stats.indexed_seqs.load(Relaxed) < 600 {
            assert!(Instant::now() < deadline, "not indexed in time");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let all = |query: &str, user: UserId, limit: usize| -> Vec<u64> {
            let mut out = Vec::new();
            let mut before = None;
            loop {
                let req = Request {
                    query: query.into(),
                    conversation: None,
                    before: before.clone(),
                    limit,
                };
                let page = search.search(&store, user, &req).unwrap();
                for h in &page.results {
                    assert_eq!(h.message.conversation, group, "only ben's conversation");
                    out.push(h.message.seq);
                }
                match page.next {
                    Some(n) => before = Some(n),
                    None => return out,
                }
            }
        };
        // Seq 1 is the group's "created" line (not searchable): message i is at seq i + 2.
        let newest_first: Vec<u64> = (2..=301).rev().collect();
        assert_eq!(all("the", ben, 50), newest_first);
        assert_eq!(all("the", ben, 7), newest_first);
        let zircon: Vec<u64> = (2..=301).rev().filter(|s| (s - 2) % 7 == 0).collect();
        assert_eq!(all("zircon", ben, 5), zircon);
        let from_ann: Vec<u64> = (2..=301).rev().filter(|s| (s - 2) % 2 == 0).collect();
        assert_eq!(all("from:ann", ben, 50), from_ann);
        // cat sees only its own group.
        let page = search
            .search(
                &store,
                cat,
                &Request {
                    query: "the".into(),
                    conversation: None,
                    before: None,
                    limit: 50,
                },
            )
            .unwrap();
        assert!(page.results.iter().all(|h| h.message.conversation == other));
    }

    fn t(text: &str, prefix: bool) -> QueryTerm {
        QueryTerm {
            text: text.into(),
            prefix,
        }
    }

    #[test]
    fn snippet_marks_matches_in_characters() {
        let mut a = tokenizer::analyzer(Mode::Index);
        let (s, h) = snippet("明天上午十点的评审会议", &[t("评审", false)], &mut a);
        assert_eq!(s, "明天上午十点的评审会议");
        assert_eq!(h, [[7, 9]]);
        // Overlapping bigrams of one word merge into one mark.
        let (_, h) = snippet(
            "评审会议",
            &[t("评审", false), t("审会", false), t("会议", false)],
            &mut a,
        );
        assert_eq!(h, [[0, 4]]);
        let (_, h) = snippet("The Café is open", &[t("caf", true)], &mut a);
        assert_eq!(h, [[4, 8]]);
    }

    #[test]
    fn long_texts_are_cut_around_the_first_match() {
        let mut a = tokenizer::analyzer(Mode::Index);
        let text = format!("{} needle {}", "hay ".repeat(100), "straw ".repeat(100));
        let (s, h) = snippet(&text, &[t("needle", false)], &mut a);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 2);
        let [a0, b0] = h[0];
        let chars: Vec<char> = s.chars().collect();
        assert_eq!(chars[a0..b0].iter().collect::<String>(), "needle");
    }

    #[test]
    fn next_cursor_round_trips_and_rejects_junk() {
        assert_eq!(decode_next(&encode_next((1, 2, 3))), Some((1, 2, 3)));
        assert_eq!(decode_next("1.2"), None);
        assert_eq!(decode_next("1.2.3.4"), None);
        assert_eq!(decode_next("a.b.c"), None);
        assert_eq!(decode_next(""), None);
    }
}
