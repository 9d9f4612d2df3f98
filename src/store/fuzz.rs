//! The store's side of the fuzz targets (`crate::fuzzing`, `fuzz/`): arbitrary bytes through the
//! record decoders and the write-ahead log reader, with the properties they must keep. Only
//! the fuzz targets and their regression tests call this; it opens no file.

use super::chat::{self, ConvRecord};
use super::codec::Dec;
use super::wal::{self, LoggedOp};
use crate::model::{ConversationKind, UserId};

/// The first byte picks a record decoder, the rest is the stored value. Decoding never panics,
/// never allocates more than the record holds, and what decodes encodes back to the same record.
pub fn record(data: &[u8]) {
    let Some((&which, raw)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(u) = super::decode_user(7, raw) {
                let again = super::decode_user(7, &super::encode_user(&u));
                // Unknown flag bits are dropped; everything else survives.
                assert_eq!(again.ok(), Some(u), "user record round trip");
            }
        }
        1 => {
            let _ = super::decode_session(raw);
        }
        2 => {
            if let Ok(c) = chat::decode_conv(raw) {
                let again =
                    chat::decode_conv(&chat::encode_conv(&c)).expect("conversation round trip");
                assert_eq!(conv_fields(&again), conv_fields(&c));
            }
        }
        3 => {
            let full = chat::decode_message(9, 4, raw);
            let borrowed = chat::decode_message_ref(9, 4, raw);
            assert_eq!(
                full.is_ok(),
                borrowed.is_ok(),
                "the two message decoders agree"
            );
            if let (Ok(m), Ok(r)) = (full, borrowed) {
                assert_eq!(
                    (
                        m.sender,
                        m.sender_name.as_str(),
                        m.time_ms,
                        m.client_id.as_str(),
                        m.text.as_str()
                    ),
                    (r.sender, r.sender_name, r.time_ms, r.client_id, r.text)
                );
                let again = chat::decode_message(9, 4, &chat::encode_message(&m));
                assert_eq!(again.ok(), Some(m), "message record round trip");
            }
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
    let (rec, good, salt) = wal::parse(&image);
    assert!(good >= valid && good <= image.len());
    assert_eq!(salt, Some(SALT));
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
    let (alone, good, _) = wal::parse(data);
    assert!(good <= data.len());
    assert!(alone.dropped_bytes as usize <= data.len() - good);

    let mut image = valid_image();
    let valid = image.len();
    image.extend_from_slice(data);
    let (rec, good, salt) = wal::parse(&image);
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
