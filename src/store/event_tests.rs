//! Store tests of issue 23's events on real redb files: a deletion really removes the text,
//! mentions, reactions and attachment references; events logged but not checkpointed come
//! back after a crash; databases written before the events (the schema-4 fixture, main's
//! files fixture) take events on their old records and count unread text only.

use super::chat::{Applied, Change, MemberCache, Target};
use super::files::FileRecord;
use super::*;
use crate::model::{ConversationId, MessageKind};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn users(s: &Store, names: &[&str]) -> Vec<UserId> {
    names
        .iter()
        .map(|n| s.create_user(n, "h", AdminGrant::No, false, 1).unwrap().id)
        .collect()
}

fn file(id: u128, uploader: UserId) -> FileRecord {
    FileRecord {
        id,
        uploader,
        sha256: [7; 32],
        size: 10,
        created_ms: 1,
        attached: false,
        width: None,
        height: None,
        mime: "text/plain".into(),
        name: "notes.txt".into(),
    }
}

/// Applies `changes` as one logged batch by `actor`, as the writer does.
fn apply(
    s: &Store,
    cache: &mut MemberCache,
    actor: UserId,
    name: &str,
    changes: &[Change],
) -> Vec<std::result::Result<Applied, chat::ChatError>> {
    let ops: Vec<wal::LoggedOp<'_>> = changes
        .iter()
        .map(|c| wal::LoggedOp {
            actor,
            actor_name: name,
            change: c,
        })
        .collect();
    s.apply_logged(cache, 1_000, &ops).unwrap()
}

fn raw_record(s: &Store, conv: ConversationId, seq: u64) -> Vec<u8> {
    let tx = s.db.begin_read().unwrap();
    let t = tx.open_table(MESSAGES).unwrap();
    let v = t.get((conv.0, seq)).unwrap().unwrap().value().to_vec();
    v
}

#[test]
fn a_deleted_message_keeps_no_text_mentions_reactions_or_file_references() {
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    let u = users(&s, &["alice", "bob", "carol"]);
    s.add_file(&file(0xf1, u[0])).unwrap();
    let mut cache = MemberCache::default();
    let g = s
        .chat_batch(&mut cache, |b| {
            Ok(b.create_group(u[0], "g", &[u[1], u[2]], 1)?.unwrap())
        })
        .unwrap()
        .conversation;
    let secret = "the launch code is 0000";
    let r = apply(
        &s,
        &mut cache,
        u[0],
        "alice",
        &[Change::Send {
            target: Target::Conversation(g),
            client_id: "c1".into(),
            text: secret.into(),
            reply_to: None,
            attachments: vec![0xf1],
            mentions: vec![u[1]],
        }],
    );
    let Ok(Applied::Sent(sent)) = &r[0] else {
        panic!("{r:?}")
    };
    let seq = sent.message.seq;
    apply(
        &s,
        &mut cache,
        u[2],
        "carol",
        &[Change::React {
            conversation: g,
            seq,
            emoji: "👍".into(),
            client_id: None,
        }],
    );
    assert!(raw_record(&s, g, seq)
        .windows(secret.len())
        .any(|w| w == secret.as_bytes()));
    assert_eq!(s.conversation_for(u[1], g).unwrap().unwrap().mentions, 1);
    assert!(
        s.file_for(u[2], 0xf1).unwrap().is_some(),
        "carol may download it"
    );

    let r = apply(
        &s,
        &mut cache,
        u[0],
        "alice",
        &[Change::Delete {
            conversation: g,
            seq,
            client_id: None,
        }],
    );
    let Ok(Applied::Event(ev)) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(
        (ev.message.extra.kind, ev.message.extra.target),
        (MessageKind::Delete, Some(seq))
    );
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    // The record holds no text (not just a flag over it), and no mention or reaction.
    let raw = raw_record(&s, g, seq);
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let f = messages::decode(g.0, seq, &raw).unwrap();
    assert!(f.text.is_empty() && f.extra.deleted);
    assert!(f.extra.mentions.is_empty() && f.extra.reactions.is_empty());
    assert_eq!(s.conversation_for(u[1], g).unwrap().unwrap().mentions, 0);
    // The attachment references are gone: no list, no conversation holds the file, so only
    // its uploader may fetch it until the collector removes it as unattached.
    assert!(s.message_attachments(g, seq).unwrap().is_empty());
    assert!(
        s.file_for(u[2], 0xf1).unwrap().is_none(),
        "carol may not any more"
    );
    let rec = s
        .all_files()
        .unwrap()
        .into_iter()
        .find(|f| f.id == 0xf1)
        .unwrap();
    assert!(!rec.attached);
    let gone = s.remove_unattached_files(u64::MAX, 10).unwrap();
    assert_eq!(
        gone.removed.iter().map(|f| f.id).collect::<Vec<_>>(),
        [0xf1]
    );
    let h = s
        .history(u[1], g, u64::MAX, 10, usize::MAX)
        .unwrap()
        .unwrap();
    let last = h.last().unwrap();
    assert!(last.extra.deleted && last.text.is_empty() && last.attachments.is_empty());
}

#[test]
fn events_in_the_log_come_back_after_a_crash() {
    let live = tmp();
    let s = Store::open(live.path()).unwrap();
    let u = users(&s, &["alice", "bob"]);
    let mut cache = MemberCache::default();
    let send = |cid: &str, text: &str| Change::Send {
        target: Target::User(u[1]),
        client_id: cid.into(),
        text: text.into(),
        reply_to: None,
        attachments: Vec::new(),
        mentions: Vec::new(),
    };
    let r = apply(
        &s,
        &mut cache,
        u[0],
        "alice",
        &[send("a", "one"), send("b", "two")],
    );
    let Ok(Applied::Sent(m)) = &r[0] else {
        panic!("{r:?}")
    };
    let conv = m.message.conversation;
    apply(
        &s,
        &mut cache,
        u[0],
        "alice",
        &[
            Change::Edit {
                conversation: conv,
                seq: 1,
                text: "ONE".into(),
                mentions: vec![u[1]],
                client_id: None,
            },
            Change::React {
                conversation: conv,
                seq: 1,
                emoji: "🎉".into(),
                client_id: None,
            },
            Change::Delete {
                conversation: conv,
                seq: 2,
                client_id: None,
            },
            Change::Mute {
                conversation: conv,
                muted: true,
            },
        ],
    );
    apply(
        &s,
        &mut cache,
        u[1],
        "bob",
        &[Change::Mute {
            conversation: conv,
            muted: true,
        }],
    );
    let crash = tmp();
    for f in [DB_FILE, wal::WAL_FILES[0], wal::WAL_FILES[1]] {
        std::fs::copy(live.path().join(f), crash.path().join(f)).unwrap();
    }
    drop(s);
    let s = Store::open(crash.path()).unwrap();
    let h = s
        .history(u[1], conv, u64::MAX, 10, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(h.len(), 2, "events are folded");
    assert_eq!((h[0].text.as_str(), h[0].extra.edited), ("ONE", true));
    assert_eq!(h[0].extra.mentions, [u[1].0]);
    assert_eq!(h[0].extra.reactions[0].users, [u[0].0]);
    assert!(h[1].extra.deleted && h[1].text.is_empty());
    let c = s.conversation_for(u[1], conv).unwrap().unwrap();
    assert_eq!((c.last_seq, c.unread, c.mentions, c.muted), (5, 2, 1, true));
    let (page, more) = s
        .messages_after_map(u[1], conv, 2, 10, usize::MAX, |m| {
            (m.seq, m.extra.kind, m.text.to_string())
        })
        .unwrap()
        .unwrap();
    assert!(!more);
    assert_eq!(
        page,
        [
            (3, MessageKind::Edit, "ONE".to_string()),
            (4, MessageKind::Reaction, String::new()),
            (5, MessageKind::Delete, String::new())
        ]
    );
}

/// Opens a copy of fixture `name` (tests/data).
fn fixture(name: &str) -> (tempfile::TempDir, Store) {
    let dir = tmp();
    let from = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    for f in ["chatd.redb", "chatd.id", "chatd.wal", "chatd.wal2"] {
        std::fs::copy(format!("{from}/{f}"), dir.path().join(f)).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

#[test]
fn old_databases_take_events_on_their_old_records() {
    // The schema-4 fixture: message records v2, conversation records v1.
    let (dir, s) = fixture("chatd-schema4");
    let users = s.list_users().unwrap();
    let (alice, bob) = (users[0].id, users[1].id);
    let list = s.conversations_of(bob, 10).unwrap();
    let direct = list
        .iter()
        .find(|c| c.kind == crate::model::ConversationKind::Direct)
        .unwrap();
    let group = list
        .iter()
        .find(|c| c.kind == crate::model::ConversationKind::Group)
        .unwrap();
    // Before any event: unread as before (3 seqs, bob read 2), the preview the last message.
    assert_eq!(
        (direct.unread, direct.mentions, direct.muted),
        (1, 0, false)
    );
    assert_eq!(direct.last_message.as_ref().unwrap().seq, 3);
    let (dc, gc) = (direct.id, group.id);
    let mut cache = MemberCache::default();
    let r = apply(
        &s,
        &mut cache,
        alice,
        "alice",
        &[
            Change::Edit {
                conversation: dc,
                seq: 1,
                text: "hello again".into(),
                mentions: vec![],
                client_id: None,
            },
            Change::React {
                conversation: dc,
                seq: 2,
                emoji: "👍".into(),
                client_id: None,
            },
            Change::Delete {
                conversation: dc,
                seq: 3,
                client_id: None,
            },
            Change::RenameGroup {
                conversation: gc,
                title: "renamed".into(),
                client_id: None,
            },
        ],
    );
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    let d = s.conversation_for(bob, dc).unwrap().unwrap();
    assert_eq!(
        (d.last_seq, d.unread),
        (6, 1),
        "events do not count as unread"
    );
    assert!(d.last_message.as_ref().unwrap().extra.deleted);
    let h = s
        .history(bob, dc, u64::MAX, 10, usize::MAX)
        .unwrap()
        .unwrap();
    let texts: Vec<&str> = h.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello again", "hi alice", ""]);
    let g = s.conversation_for(bob, gc).unwrap().unwrap();
    assert_eq!((g.title.as_str(), g.last_seq), ("renamed", 3));
    assert_eq!(g.last_message.as_ref().unwrap().text, "alice in the group");

    // Main's files fixture: deleting the message with one.png detaches it.
    let (_dir, s) = fixture("chatd-files-main");
    let users = s.list_users().unwrap();
    let (alice, bob) = (users[0].id, users[1].id);
    let conv = s.conversations_of(bob, 10).unwrap()[0].id;
    let mut cache = MemberCache::default();
    let r = apply(
        &s,
        &mut cache,
        alice,
        "alice",
        &[Change::Delete {
            conversation: conv,
            seq: 2,
            client_id: None,
        }],
    );
    assert!(r[0].is_ok(), "{r:?}");
    assert!(s.message_attachments(conv, 2).unwrap().is_empty());
    assert!(s.file_for(bob, 0xa1).unwrap().is_none());
    assert!(
        s.file_for(bob, 0xb2).unwrap().is_some(),
        "the other message keeps its file"
    );
}
