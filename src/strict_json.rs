//! Strict reading of JSON that clients send (WebSocket frames and HTTP request bodies), before
//! it is decoded into a typed request: the document must be one JSON object, no object in it
//! may have the same key twice, and it may nest at most `MAX_DEPTH` levels. serde's derived
//! decoders alone would let a field given twice through (one of the two silently wins, and
//! which one differs between parsers), and would take a sequence in place of a struct or an
//! integer in place of an enum variant's name (they match them by position).
//!
//! On the way, `scan` reads the top-level `ref`, `client_id` and `type`, even from a document
//! that turns out to be broken further on, so an error reply can name the request it answers.
//! Pure: no I/O. Used by `proto::decode` and `http::api`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest nesting accepted: the top-level object is level 1. Frames and bodies need 3.
pub const MAX_DEPTH: usize = 32;

/// What `scan` read of the top-level object (as far as it got).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Head {
    /// `ref`, when it is a non-negative integer (and given once).
    pub reference: Option<u64>,
    /// `client_id`, when it is a string (and given once).
    pub client_id: Option<String>,
    pub kind: TypeField,
}

/// The top-level `type` field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum TypeField {
    #[default]
    Missing,
    /// Present, but not a string (a number, `null`, an object, ...).
    NotString,
    Name(String),
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON at all (syntax error, trailing characters, empty).
    NotJson(String),
    /// Valid JSON, but not an object at the top.
    NotObject,
    /// This key appears twice in one object.
    DuplicateKey(String),
    /// Nested deeper than `MAX_DEPTH`.
    TooDeep,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotJson(e) => write!(f, "not JSON: {e}"),
            Problem::NotObject => write!(f, "not a JSON object"),
            Problem::DuplicateKey(k) => write!(f, "the key {k:?} appears twice in one object"),
            Problem::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Checks `text` and reads its head. On failure, also returns what was read before it.
pub fn scan(text: &str) -> Result<Head, (Problem, Head)> {
    let mut head = Head::default();
    let mut problem = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let r = Top {
        head: &mut head,
        problem: &mut problem,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (r, problem) {
        (Ok(()), _) => Ok(head),
        (Err(_), Some(p)) => Err((p, head)),
        (Err(e), None) => Err((Problem::NotJson(e.to_string()), head)),
    }
}

/// A custom error whose reason is kept in `problem` (serde's error type cannot carry it).
fn fail<E: de::Error>(problem: &mut Option<Problem>, p: Problem) -> E {
    let msg = p.to_string();
    problem.get_or_insert(p);
    E::custom(msg)
}

/// The top level: must be an object; records `ref`, `client_id` and `type`.
struct Top<'a> {
    head: &'a mut Head,
    problem: &'a mut Option<Problem>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let field = match key.as_ref() {
                "ref" => Field::Ref,
                "client_id" => Field::ClientId,
                "type" => Field::Type,
                _ => Field::Other,
            };
            if seen.contains(&key) {
                // A request named twice is no request: name neither.
                match field {
                    Field::Ref => self.head.reference = None,
                    Field::ClientId => self.head.client_id = None,
                    _ => {}
                }
                return Err(fail(self.problem, Problem::DuplicateKey(key.into_owned())));
            }
            seen.insert(key);
            let want_str = matches!(field, Field::ClientId | Field::Type);
            let v = map.next_value_seed(Any {
                depth: 2,
                want_str,
                problem: self.problem,
            })?;
            match (field, v) {
                (Field::Ref, Scalar::U64(n)) => self.head.reference = Some(n),
                (Field::ClientId, Scalar::Str(s)) => self.head.client_id = Some(s),
                (Field::Type, Scalar::Str(s)) => self.head.kind = TypeField::Name(s),
                (Field::Type, _) => self.head.kind = TypeField::NotString,
                _ => {}
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(fail(self.problem, Problem::NotObject))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(fail(self.problem, Problem::NotObject))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(fail(self.problem, Problem::NotObject))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(fail(self.problem, Problem::NotObject))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(fail(self.problem, Problem::NotObject))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(fail(self.problem, Problem::NotObject))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(fail(self.problem, Problem::NotObject))
    }
}

#[derive(Clone, Copy)]
enum Field {
    Ref,
    ClientId,
    Type,
    Other,
}

/// An object key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// What a checked value was, as far as the head needs it.
enum Scalar {
    U64(u64),
    Str(String),
    Other,
}

/// Any JSON value at `depth`: checks its objects for repeated keys and its depth.
struct Any<'a> {
    depth: usize,
    /// Keep a string value (only `type` and `client_id` need theirs).
    want_str: bool,
    problem: &'a mut Option<Problem>,
}

impl<'de> DeserializeSeed<'de> for Any<'_> {
    type Value = Scalar;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Any<'_> {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(fail(self.problem, Problem::TooDeep));
        }
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if seen.contains(&key) {
                return Err(fail(self.problem, Problem::DuplicateKey(key.into_owned())));
            }
            seen.insert(key);
            map.next_value_seed(Any {
                depth: self.depth + 1,
                want_str: false,
                problem: &mut *self.problem,
            })?;
        }
        Ok(Scalar::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(fail(self.problem, Problem::TooDeep));
        }
        while seq
            .next_element_seed(Any {
                depth: self.depth + 1,
                want_str: false,
                problem: &mut *self.problem,
            })?
            .is_some()
        {}
        Ok(Scalar::Other)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(if self.want_str {
            Scalar::Str(v.to_string())
        } else {
            Scalar::Other
        })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(r: Option<u64>, cid: Option<&str>, kind: TypeField) -> Head {
        Head {
            reference: r,
            client_id: cid.map(str::to_string),
            kind,
        }
    }

    #[test]
    fn reads_the_head_of_a_good_object() {
        let h = scan(r#"{"type":"send","ref":7,"client_id":"c","text":"x","n":[1,{"a":2}]}"#);
        assert_eq!(
            h,
            Ok(head(Some(7), Some("c"), TypeField::Name("send".into())))
        );
        assert_eq!(scan("{}"), Ok(Head::default()));
        assert_eq!(
            scan(r#"{"type":1,"ref":-1,"client_id":5}"#),
            Ok(head(None, None, TypeField::NotString))
        );
        assert_eq!(
            scan(r#"{"type":null}"#).map(|h| h.kind),
            Ok(TypeField::NotString)
        );
        // Escaped keys are keys all the same.
        assert_eq!(scan(r#"{"\u0072ef":3}"#).map(|h| h.reference), Ok(Some(3)));
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for text in ["[1,2]", "42", "\"send\"", "null", "true", "-1.5"] {
            assert_eq!(scan(text).unwrap_err().0, Problem::NotObject, "{text}");
        }
        for text in ["", "{oops", "{\"a\":1}}", "{} {}", "{\"a\":1,}"] {
            assert!(
                matches!(scan(text).unwrap_err().0, Problem::NotJson(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn keeps_what_it_read_before_a_syntax_error() {
        let (p, h) = scan(r#"{"type":"conversations","ref":60,}"#).unwrap_err();
        assert!(matches!(p, Problem::NotJson(_)), "{p:?}");
        assert_eq!(h.reference, Some(60));
        let (_, h) = scan(r#"{"ref":61,"type":"sync"} trailing"#).unwrap_err();
        assert_eq!(h.reference, Some(61));
        let (_, h) =
            scan(r#"{"type":"send","ref":62,"client_id":"c62","text":"unterminated"#).unwrap_err();
        assert_eq!(
            h,
            head(Some(62), Some("c62"), TypeField::Name("send".into()))
        );
    }

    #[test]
    fn refuses_a_key_given_twice_at_any_depth() {
        let (p, h) = scan(r#"{"ref":1,"text":"a","text":"b"}"#).unwrap_err();
        assert_eq!(p, Problem::DuplicateKey("text".into()));
        assert_eq!(h.reference, Some(1));
        let (p, h) = scan(r#"{"ref":1,"ref":2}"#).unwrap_err();
        assert_eq!(p, Problem::DuplicateKey("ref".into()));
        assert_eq!(h.reference, None, "an ambiguous ref is not echoed");
        let (p, _) = scan(r#"{"type":"sync","type":"history"}"#).unwrap_err();
        assert_eq!(p, Problem::DuplicateKey("type".into()));
        let (p, _) = scan(r#"{"c":[{"conversation":1,"conversation":2}]}"#).unwrap_err();
        assert_eq!(p, Problem::DuplicateKey("conversation".into()));
        // Escapes do not hide a repeat.
        let (p, _) = scan(r#"{"a":1,"\u0061":2}"#).unwrap_err();
        assert_eq!(p, Problem::DuplicateKey("a".into()));
        // The same key in different objects is fine.
        assert!(scan(r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#).is_ok());
    }

    #[test]
    fn refuses_deep_nesting() {
        let ok = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(scan(&ok).is_ok());
        let deep = format!(
            "{{\"ref\":9,\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        let (p, h) = scan(&deep).unwrap_err();
        assert_eq!(p, Problem::TooDeep);
        assert_eq!(h.reference, Some(9));
        // Far deeper than serde_json's own limit: still our answer, and no stack overflow.
        let deeper = format!("{{\"a\":{}", "[".repeat(100_000));
        assert_eq!(scan(&deeper).unwrap_err().0, Problem::TooDeep);
    }
}
