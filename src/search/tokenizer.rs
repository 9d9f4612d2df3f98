//! How message text becomes search terms: one tantivy `Tokenizer` for English, Chinese and
//! mixed text, used both when a message is indexed and when a query is parsed (so both sides
//! always agree). It calls nothing outside tantivy's tokenizer API.
//!
//! - Runs of letters and digits (any script that separates words with spaces or punctuation)
//!   are one token each: `Release`, `v2`, `café`. The analyzer (`analyzer`) lowercases them and
//!   folds them to ASCII (`Café` → `cafe`); combining marks of decomposed text are dropped
//!   here, so `cafe\u{301}` folds the same way.
//! - Runs of CJK characters (Han, kana, Hangul), which have no spaces between words, become
//!   overlapping bigrams (`明天上午` → `明天 天上 上午`), plus the run's last character alone.
//!   Any word of two or more characters inside a sentence is then a phrase of consecutive
//!   bigrams (`评审` in `明天上午十点的评审会议` is the bigram `评审`; `评审会议` is
//!   `评审 审会 会议` at consecutive positions), and a single character is a prefix of some
//!   bigram or that last character. No dictionary: nothing to ship, nothing to go stale, and
//!   new words (names, product terms) are found as well as dictionary words; the cost is some
//!   false positives across word boundaries, which for a chat history is the right trade.
//!
//! In `Mode::Query` the run's last character is left out of runs of two or more (the bigrams
//! already cover it, and in a document that character may be followed by more CJK text), and
//! the token text of a lone CJK character is marked as such (`is_cjk_single`) so the query
//! builder makes it a prefix.

use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// The name the index's text field is registered with.
pub const NAME: &str = "chatd";

/// Tokens longer than this (in bytes) are dropped (a pasted hash or base64 blob is not a word
/// anyone searches for, and would bloat the term dictionary).
const MAX_TOKEN_BYTES: usize = 64;

/// Whether tokens are for the index or for a query (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Index,
    Query,
}

/// The full analyzer: the tokenizer, long tokens dropped, lowercased, ASCII-folded.
pub fn analyzer(mode: Mode) -> TextAnalyzer {
    TextAnalyzer::builder(ChatTokenizer { mode })
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Characters written without spaces between words, tokenized as bigrams.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9D    // Halfwidth Katakana
        | 0x20000..=0x2FA1F) // CJK extensions B-F, compatibility supplement
}

/// Combining marks (decomposed accents): part of the word they follow, dropped from its text.
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

/// True when a query token is one CJK character (searched as a prefix).
pub fn is_cjk_single(text: &str) -> bool {
    let mut chars = text.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if is_cjk(c))
}

/// The tokenizer (see the module doc). Tokens are computed up front into a small vector.
#[derive(Clone)]
pub struct ChatTokenizer {
    mode: Mode,
}

pub struct ChatTokenStream {
    tokens: Vec<Token>,
    /// Index of the current token + 1 (0 before the first `advance`).
    next: usize,
}

impl Tokenizer for ChatTokenizer {
    type TokenStream<'a> = ChatTokenStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> ChatTokenStream {
        ChatTokenStream {
            tokens: split(text, self.mode),
            next: 0,
        }
    }
}

impl TokenStream for ChatTokenStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }
    fn token(&self) -> &Token {
        &self.tokens[self
            .next
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1))]
    }
    fn token_mut(&mut self) -> &mut Token {
        let i = self
            .next
            .saturating_sub(1)
            .min(self.tokens.len().saturating_sub(1));
        &mut self.tokens[i]
    }
}

fn token(from: usize, to: usize, position: usize, text: String) -> Token {
    Token {
        offset_from: from,
        offset_to: to,
        position,
        text,
        position_length: 1,
    }
}

/// The raw tokens of `text` (before lowercasing and folding).
fn split(text: &str, mode: Mode) -> Vec<Token> {
    let mut out = Vec::new();
    let mut position = 0usize;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if is_cjk(c) {
            let mut run: Vec<(usize, char)> = Vec::new();
            while let Some(&(i, c)) = chars.peek() {
                if !is_cjk(c) {
                    break;
                }
                run.push((i, c));
                chars.next();
            }
            let end_of = |k: usize| run[k].0 + run[k].1.len_utf8();
            for k in 0..run.len().saturating_sub(1) {
                let t: String = [run[k].1, run[k + 1].1].iter().collect();
                out.push(token(run[k].0, end_of(k + 1), position + k, t));
            }
            let last = run.len() - 1;
            if run.len() == 1 || mode == Mode::Index {
                out.push(token(
                    run[last].0,
                    end_of(last),
                    position + last,
                    run[last].1.to_string(),
                ));
            }
            position += run.len();
        } else if is_word(c) {
            let mut end = start;
            let mut word = String::new();
            while let Some(&(i, c)) = chars.peek() {
                if is_word(c) {
                    word.push(c);
                } else if !is_mark(c) {
                    break;
                }
                end = i + c.len_utf8();
                chars.next();
            }
            out.push(token(start, end, position, word));
            position += 1;
        } else {
            chars.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str, mode: Mode) -> Vec<(String, usize)> {
        let mut a = analyzer(mode);
        let mut s = a.token_stream(text);
        let mut out = Vec::new();
        while s.advance() {
            out.push((s.token().text.clone(), s.token().position));
        }
        out
    }

    fn words(text: &str, mode: Mode) -> Vec<String> {
        terms(text, mode).into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn latin_words_are_lowercased_and_folded() {
        assert_eq!(
            words("Café NAÏVE, re-test v2!", Mode::Index),
            ["cafe", "naive", "re", "test", "v2"]
        );
        // Decomposed accents fold the same way as precomposed ones.
        assert_eq!(words("cafe\u{301} Zoë", Mode::Index), ["cafe", "zoe"]);
    }

    #[test]
    fn chinese_runs_are_bigrams_plus_the_last_character() {
        assert_eq!(
            terms("评审会议", Mode::Index),
            [
                ("评审".to_string(), 0),
                ("审会".to_string(), 1),
                ("会议".to_string(), 2),
                ("议".to_string(), 3)
            ]
        );
        assert_eq!(
            terms("评审会议", Mode::Query),
            [
                ("评审".to_string(), 0),
                ("审会".to_string(), 1),
                ("会议".to_string(), 2)
            ]
        );
        assert_eq!(words("好", Mode::Query), ["好"]);
        assert!(words("明天上午十点的评审会议", Mode::Index).contains(&"评审".to_string()));
    }

    #[test]
    fn mixed_text_keeps_positions_in_order() {
        assert_eq!(
            terms("Release 评审 OK", Mode::Index),
            [
                ("release".to_string(), 0),
                ("评审".to_string(), 1),
                ("审".to_string(), 2),
                ("ok".to_string(), 3)
            ]
        );
        // The query side leaves the last character out but keeps the positions.
        assert_eq!(
            terms("Release 评审 OK", Mode::Query),
            [
                ("release".to_string(), 0),
                ("评审".to_string(), 1),
                ("ok".to_string(), 3)
            ]
        );
    }

    #[test]
    fn punctuation_and_operators_make_no_tokens() {
        assert!(words("* ~ ^ : \" ( ) + -", Mode::Query).is_empty());
        assert!(words("", Mode::Index).is_empty());
        // Very long tokens are dropped.
        assert!(words(&"a".repeat(65), Mode::Index).is_empty());
    }
}
