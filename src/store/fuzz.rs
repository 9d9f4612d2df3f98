//! The store's side of the fuzz targets (`crate::fuzzing`, `fuzz/`): arbitrary bytes through the
//! record decoders and the write-ahead log reader, with the properties they must keep. Only
//! the fuzz targets and their regression tests call this; it opens no file.

use super::chat::{self, ConvRecord};
use super::codec::{self, Dec};
use super::messages;
use super::wal::{self, LoggedOp};
use crate::model::{ConversationId, ConversationKind, StoredMessage, UserId};

/// The first byte picks a record decoder, the rest is the record inside its seal (sealed here
/// with the right key: a fuzzer cannot forge CRC-32Cs, and a bad seal is tested in
/// `store::damage_tests`). Decoding never panics, never allocates more than the record holds,
/// and what decodes encodes back to the same record.
pub fn record(data: &[u8]) {
    let Some((&which, raw)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let sealed = codec::seal(&codec::key1(7), raw.to_vec());
            if let Ok(u) = super::decode_user(7, &sealed) {
                let again = super::decode_user(7, &super::encode_user(&u));
                // Unknown flag bits are dropped; everything else survives.
                assert_eq!(again.ok(), Some(u), "user record round trip");
            }
        }
        1 => {
            let hash = [3u8; 32];
            let sealed = codec::seal(&hash, raw.to_vec());
            if let Ok(s) = super::decode_session(&hash, &sealed) {
                let again = super::decode_session(&hash, &super::encode_session(&hash, &s))
                    .expect("session round trip");
                assert_eq!(
                    (again.user, again.created_ms, again.expires_ms, &again.label),
                    (s.user, s.created_ms, s.expires_ms, &s.label)
                );
            }
        }
        2 => {
            if let Ok(c) = chat::decode_conv_record(raw) {
                let again = chat::decode_conv(5, &chat::encode_conv(5, &c))
                    .expect("conversation round trip");
                assert_eq!(conv_fields(&again), conv_fields(&c));
            }
        }
        3 => {
            let sealed = codec::seal(&codec::key2(9, 4), raw.to_vec());
            if let Ok(f) = messages::decode(9, 4, &sealed) {
                let m = StoredMessage {
                    conversation: ConversationId(9),
                    seq: 4,
                    sender: UserId(f.sender),
                    sender_name: String::new(),
                    time_ms: f.time_ms,
                    client_id: f.client_id.to_string(),
                    text: f.text.to_string(),
                    reply_to: f.reply_to,
                    unreadable: f.kind != messages::KIND_TEXT,
                    attachments: Vec::new(),
                    extra: f.extra.clone(),
                };
                let encoded = messages::encode(&m);
                let g = messages::decode(9, 4, &encoded).expect("message record round trip");
                assert_eq!(
                    (g.sender, g.time_ms, g.client_id, g.text),
                    (f.sender, f.time_ms, f.client_id, f.text)
                );
                assert_eq!(g.kind == messages::KIND_TEXT, f.kind == messages::KIND_TEXT);
            }
        }
        4 => {
            // Schema ≤ 3 message records, read by the upgrade.
            let _ = messages::decode_v1(raw);
        }
        _ => codec_ops(raw),
    }
}

fn conv_fields(c: &ConvRecord) -> (bool, &str, u64, u64, u64, u64, u64) {
    (
        c.kind == ConversationKind::Direct,
        &c.title,
        c.owner,
        c.created_ms,
        c.last_seq,
        c.last_ms,
        c.member_count,
    )
}

/// The codec's primitives over arbitrary bytes: the low bits of each op byte pick the next
/// read; every read either succeeds within the buffer or fails cleanly.
fn codec_ops(raw: &[u8]) {
    let Some((&ops, rest)) = raw.split_first() else {
        return;
    };
    let Ok(mut d) = Dec::new(rest, 1, "fuzz") else {
        return;
    };
    let mut op = ops;
    for _ in 0..64 {
        let ok = match op & 3 {
            0 => d.u8().is_ok(),
            1 => d.u64().is_ok(),
            _ => d.str().is_ok(),
        };
        if !ok {
            return;
        }
        op = op.rotate_right(2) ^ 0x5a;
    }
}

/// The epoch and salt of the valid records the log target writes before the arbitrary bytes.
const EPOCH: u64 = 0x00c0_ffee;
const SALT: u64 = 0x5eed_5eed_5eed_5eed;

/// A log file image of three valid batch records followed by `data`; reading it back must give
/// those three batches first, exactly, and account for every byte: the reader's good length is
/// at least theirs, and what it reports as dropped is at most what follows. `data` alone is
/// read as a whole file too. And since a fuzzer cannot forge checksums, `data` is also split
/// into payloads that are framed as intact records (with the file's salt) after the valid
/// ones: the payload decoders and the rules on batch numbers and epochs see arbitrary input.
pub fn wal(data: &[u8]) {
    wal_tail(data);
    wal_payloads(data);
}

fn wal_payloads(data: &[u8]) {
    let mut image = valid_image();
    let valid = image.len();
    // Payloads are separated by the bytes "|!".
    let mut rest = data;
    let mut n = 0;
    while !rest.is_empty() && n < 16 {
        let end = rest
            .windows(2)
            .position(|w| w == b"|!")
            .unwrap_or(rest.len());
        wal::frame_record(&mut image, SALT, &rest[..end]);
        rest = rest.get(end + 2..).unwrap_or(&[]);
        n += 1;
    }
    let rec = wal::parse(&image);
    let good = rec.good;
    assert!(good >= valid && good <= image.len());
    assert_eq!(rec.salt, Some(SALT));
    assert!(rec.dropped_bytes as usize <= image.len() - good);
    // An abort record may void one of the first three; none of them changes.
    for b in &rec.batches {
        if b.number <= 3 {
            assert_eq!(b.epoch, EPOCH);
            assert_eq!(b.ops[0].0 .0, b.number);
        }
    }
    for w in rec.batches.windows(2) {
        assert!(w[0].number < w[1].number && w[0].epoch == w[1].epoch);
    }
}

fn change(i: u64) -> chat::Change {
    chat::Change::Send {
        target: chat::Target::Conversation(crate::model::ConversationId(i)),
        client_id: format!("c{i}"),
        text: "é".repeat(i as usize),
        reply_to: None,
        attachments: Vec::new(),
        mentions: Vec::new(),
    }
}

/// Three valid batch records (numbers 1-3).
fn valid_image() -> Vec<u8> {
    let mut image = Vec::new();
    for n in 1..=3u64 {
        let c = change(n);
        let ops = [LoggedOp {
            actor: UserId(n),
            actor_name: "alice",
            change: &c,
        }];
        let payload = wal::batch_payload(n, EPOCH, 999 + n, &ops);
        wal::frame_record(&mut image, SALT, &payload);
    }
    image
}

fn wal_tail(data: &[u8]) {
    let alone = wal::parse(data);
    assert!(alone.good <= data.len());
    assert!(alone.dropped_bytes as usize <= data.len() - alone.good);

    let mut image = valid_image();
    let valid = image.len();
    image.extend_from_slice(data);
    let rec = wal::parse(&image);
    let (good, salt) = (rec.good, rec.salt);
    assert!(
        good >= valid,
        "the valid records were cut: {good} < {valid}"
    );
    assert!(good <= image.len());
    assert_eq!(salt, Some(SALT));
    assert!(rec.dropped_bytes as usize <= image.len() - good);
    assert!(rec.batches.len() >= 3, "{} batches", rec.batches.len());
    for (i, b) in rec.batches.iter().take(3).enumerate() {
        let n = i as u64 + 1;
        assert_eq!((b.number, b.epoch, b.now_ms), (n, EPOCH, 999 + n));
        assert_eq!(b.ops.len(), 1);
        let (actor, name, c) = &b.ops[0];
        assert_eq!((actor.0, name.as_str()), (n, "alice"));
        assert_eq!(format!("{c:?}"), format!("{:?}", change(n)));
    }
    // Anything read after them is a whole, later batch of the same history.
    for w in rec.batches.windows(2) {
        assert!(w[0].number < w[1].number && w[0].epoch == w[1].epoch);
    }
}
