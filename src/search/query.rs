//! The search query language, parsed here by hand and turned into tantivy queries (user text
//! never reaches tantivy's own query parser, so its operators have no meaning here):
//!
//! - `word`: messages containing the word (case- and accent-insensitive; any word of a
//!   Chinese sentence). Several words: all of them, anywhere in the message.
//! - the last word, when the query does not end with a space, also matches as a prefix (so
//!   results follow typing: `relea` finds `release`).
//! - `"a phrase"`: the words in this order, next to each other.
//! - `from:name` (or `from:"Display Name"`): sent by that user (account or display name).
//! - `in:name` (or `in:"Group title"`): in the group with that title, or the direct
//!   conversation with that user.
//! - `before:YYYY-MM-DD`, `after:YYYY-MM-DD`: sent before that day began, or after it ended
//!   (UTC).
//!
//! Anything else (`*`, `~`, `^`, `:`, brackets, `AND`) is plain text: punctuation makes no
//! search term, `AND` is the word "and". This module calls only the tokenizer and tantivy's
//! query types.

use std::ops::Bound;

use tantivy::query::{PhrasePrefixQuery, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::Term;

use super::tokenizer::is_cjk_single;

/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 1000;
/// Most words, phrases and filters in one query.
pub const MAX_PARTS: usize = 32;
/// How many terms a prefix may stand for (the most frequent first is not guaranteed: tantivy
/// takes them in term order).
const MAX_EXPANSIONS: u32 = 200;

/// One part of the text to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clause {
    /// A word; `prefix` for the last word of a query still being typed.
    Word {
        text: String,
        prefix: bool,
    },
    Phrase(String),
}

/// A parsed query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub clauses: Vec<Clause>,
    /// `from:` names (several: sent by any of them).
    pub from: Vec<String>,
    /// `in:` names (several: in any of them).
    pub within: Vec<String>,
    /// Messages sent before this time (ms, exclusive).
    pub before_ms: Option<u64>,
    /// Messages sent at or after this time (ms).
    pub after_ms: Option<u64>,
}

impl Parsed {
    pub fn has_filters(&self) -> bool {
        !self.from.is_empty()
            || !self.within.is_empty()
            || self.before_ms.is_some()
            || self.after_ms.is_some()
    }
}

/// Why a query was refused (the `error` frame's message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    Empty,
    TooLong,
    TooManyParts,
    UnbalancedQuote,
    MissingValue(&'static str),
    BadDate(String),
    /// Only punctuation or operators: no word to look for and no filter.
    NothingToSearch,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Empty => write!(f, "the query is empty"),
            QueryError::TooLong => {
                write!(f, "the query is longer than {MAX_QUERY_BYTES} bytes")
            }
            QueryError::TooManyParts => {
                write!(f, "the query has more than {MAX_PARTS} words and filters")
            }
            QueryError::UnbalancedQuote => {
                write!(f, "a quote is not closed: end the phrase with \"")
            }
            QueryError::MissingValue(key) => write!(f, "{key}: needs a value, as in {key}:name"),
            QueryError::BadDate(s) => write!(f, "{s:?} is not a date: write YYYY-MM-DD"),
            QueryError::NothingToSearch => write!(
                f,
                "nothing to search for: give a word, a \"phrase\" or a filter (from:, in:, before:, after:)"
            ),
        }
    }
}

const KEYS: [&str; 4] = ["from", "in", "before", "after"];

/// Parses the query text (see the module doc).
pub fn parse(text: &str) -> Result<Parsed, QueryError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    if text.trim().is_empty() {
        return Err(QueryError::Empty);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut out = Parsed::default();
    let mut parts = 0usize;
    // Reads a quoted string starting at `chars[i] == '"'`; returns it and the index after it.
    let quoted = |i: usize| -> Result<(String, usize), QueryError> {
        let rest = &chars[i + 1..];
        match rest.iter().position(|c| *c == '"') {
            Some(n) => Ok((rest[..n].iter().collect(), i + 1 + n + 1)),
            None => Err(QueryError::UnbalancedQuote),
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        parts += 1;
        if parts > MAX_PARTS {
            return Err(QueryError::TooManyParts);
        }
        if c == '"' {
            let (phrase, next) = quoted(i)?;
            out.clauses.push(Clause::Phrase(phrase));
            i = next;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '"' {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let key = word
            .split_once(':')
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .filter(|(k, _)| KEYS.contains(&k.as_str()));
        let Some((key, mut value)) = key else {
            out.clauses.push(Clause::Word {
                text: word,
                prefix: i == chars.len(),
            });
            continue;
        };
        if value.is_empty() && i < chars.len() && chars[i] == '"' {
            let (v, next) = quoted(i)?;
            value = v;
            i = next;
        }
        let value = value.trim().to_string();
        let key_name = KEYS.iter().find(|k| **k == key).copied().unwrap_or("from");
        if value.is_empty() {
            return Err(QueryError::MissingValue(key_name));
        }
        match key_name {
            "from" => out.from.push(value),
            "in" => out.within.push(value),
            "before" => {
                let day = day_start_ms(&value).ok_or(QueryError::BadDate(value))?;
                out.before_ms = Some(out.before_ms.map_or(day, |b| b.min(day)));
            }
            _ => {
                let day = day_start_ms(&value).ok_or(QueryError::BadDate(value))?;
                let next_day = day + 86_400_000;
                out.after_ms = Some(out.after_ms.map_or(next_day, |a| a.max(next_day)));
            }
        }
    }
    Ok(out)
}

/// Midnight UTC at the start of `YYYY-MM-DD`, in ms since 1970 (`None` if not a real date, or
/// before 1970).
pub fn day_start_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return None;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days).ok().map(|d| d * 86_400_000)
}

/// A term of the analysed query text: its text, its position, and whether it is matched as a
/// prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryTerm {
    pub text: String,
    pub prefix: bool,
}

/// The tokens of `text` under the query analyzer: (text, position).
fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, usize)> {
    let mut s = analyzer.token_stream(text);
    let mut out = Vec::new();
    while s.advance() {
        let t = s.token();
        out.push((t.text.clone(), t.position));
    }
    out
}

/// The tantivy queries for the text clauses (all must match), and every term (for
/// highlighting). A clause with no term (only punctuation) is left out.
pub fn text_queries(
    parsed: &Parsed,
    field: Field,
    analyzer: &mut TextAnalyzer,
) -> (Vec<Box<dyn Query>>, Vec<QueryTerm>) {
    let mut queries: Vec<Box<dyn Query>> = Vec::new();
    let mut terms = Vec::new();
    for clause in &parsed.clauses {
        let (text, prefix) = match clause {
            Clause::Word { text, prefix } => (text.as_str(), *prefix),
            Clause::Phrase(text) => (text.as_str(), false),
        };
        let toks = tokens(analyzer, text);
        let Some(first) = toks.first().map(|t| t.1) else {
            continue;
        };
        let last_single = toks.last().is_some_and(|t| is_cjk_single(&t.0));
        let n = toks.len();
        for (k, (t, _)) in toks.iter().enumerate() {
            terms.push(QueryTerm {
                text: t.clone(),
                prefix: k + 1 == n && (prefix || last_single),
            });
        }
        let with_offsets: Vec<(usize, Term)> = toks
            .iter()
            .map(|(t, p)| (p - first, Term::from_field_text(field, t)))
            .collect();
        let q: Box<dyn Query> = if prefix || last_single {
            let mut q = PhrasePrefixQuery::new_with_offset(with_offsets);
            q.set_max_expansions(MAX_EXPANSIONS);
            Box::new(q)
        } else if n == 1 {
            let term = Term::from_field_text(field, &toks[0].0);
            Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
        } else {
            Box::new(PhraseQuery::new_with_offset(with_offsets))
        };
        queries.push(q);
    }
    (queries, terms)
}

/// `[lo, hi)` of the time filters, as bounds on a u64 field.
pub fn time_bounds(parsed: &Parsed, field: Field) -> Option<(Bound<Term>, Bound<Term>)> {
    if parsed.before_ms.is_none() && parsed.after_ms.is_none() {
        return None;
    }
    let lo = match parsed.after_ms {
        Some(a) => Bound::Included(Term::from_field_u64(field, a)),
        None => Bound::Unbounded,
    };
    let hi = match parsed.before_ms {
        Some(b) => Bound::Excluded(Term::from_field_u64(field, b)),
        None => Bound::Unbounded,
    };
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(t: &str, prefix: bool) -> Clause {
        Clause::Word {
            text: t.into(),
            prefix,
        }
    }

    #[test]
    fn words_phrases_and_filters() {
        let p = parse(r#"deploy "release notes" from:bob in:"Release crew" after:2026-11-30 fri"#)
            .unwrap();
        assert_eq!(
            p.clauses,
            [
                word("deploy", false),
                Clause::Phrase("release notes".into()),
                word("fri", true)
            ]
        );
        assert_eq!(p.from, ["bob"]);
        assert_eq!(p.within, ["Release crew"]);
        assert_eq!(p.after_ms, Some(day_start_ms("2026-12-01").unwrap()));
        // A trailing space ends the last word: no prefix.
        assert_eq!(parse("deploy ").unwrap().clauses, [word("deploy", false)]);
        // Keys are case-insensitive; unknown keys are plain text.
        assert_eq!(parse("FROM:bob").unwrap().from, ["bob"]);
        assert_eq!(parse("http://x").unwrap().clauses, [word("http://x", true)]);
    }

    #[test]
    fn bad_queries_are_errors() {
        assert_eq!(parse(""), Err(QueryError::Empty));
        assert_eq!(parse("   "), Err(QueryError::Empty));
        assert_eq!(parse(&"a".repeat(10_000)), Err(QueryError::TooLong));
        assert_eq!(parse("\"open"), Err(QueryError::UnbalancedQuote));
        assert_eq!(parse("in:\"open"), Err(QueryError::UnbalancedQuote));
        assert_eq!(parse("from:"), Err(QueryError::MissingValue("from")));
        assert_eq!(parse("x in:"), Err(QueryError::MissingValue("in")));
        assert_eq!(parse("from:\"\""), Err(QueryError::MissingValue("from")));
        assert!(matches!(
            parse("before:2026-13-01"),
            Err(QueryError::BadDate(_))
        ));
        assert!(matches!(
            parse("after:yesterday"),
            Err(QueryError::BadDate(_))
        ));
        assert_eq!(
            parse(&"a ".repeat(MAX_PARTS + 1)),
            Err(QueryError::TooManyParts)
        );
        // Operators alone parse (as words with no term; the search says nothing to search).
        assert!(parse("* ~ ^ :").is_ok());
    }

    #[test]
    fn dates() {
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(day_start_ms("2000-03-01"), Some(951_868_800_000));
        assert_eq!(day_start_ms("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(day_start_ms("2023-02-29"), None);
        assert_eq!(day_start_ms("1969-12-31"), None);
        assert_eq!(day_start_ms("2024-1-01"), None);
        assert_eq!(day_start_ms("+024-01-01"), None);
    }
}
