//! Store tests on real redb files in a temp directory, including reopen after "restart"
//! (dropping every handle releases redb's file lock, as a process exit does).

use super::*;
use crate::model::{Session, SessionKind, StoredMessage};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// What a crash would leave of the store in `live` right now: a copy of its database file and
/// both log files.
fn crash_image(live: &Path) -> tempfile::TempDir {
    let crash = tmp();
    for f in [DB_FILE, wal::WAL_FILES[0], wal::WAL_FILES[1]] {
        std::fs::copy(live.join(f), crash.path().join(f)).unwrap();
    }
    crash
}

/// Two accounts, alice (who sends in the log tests) and bob.
fn alice_and_bob(s: &Store) -> (User, User) {
    let a = s
        .create_user("alice", "h", AdminGrant::No, false, 1)
        .unwrap();
    let b = s.create_user("bob", "h", AdminGrant::No, false, 1).unwrap();
    (a, b)
}

/// Logs and applies `changes` as one batch by `actor` (named alice), as the writer does.
fn apply_as_alice(
    s: &Store,
    cache: &mut crate::store::chat::MemberCache,
    actor: UserId,
    changes: &[crate::store::chat::Change],
) {
    let ops: Vec<wal::LoggedOp<'_>> = changes
        .iter()
        .map(|c| wal::LoggedOp {
            actor,
            actor_name: "alice",
            change: c,
        })
        .collect();
    s.apply_logged(cache, 1000, &ops).unwrap();
}

fn session(user: UserId, expires_ms: u64) -> Session {
    Session {
        user,
        kind: SessionKind::Cookie,
        created_ms: 1,
        expires_ms,
        label: String::new(),
    }
}

#[test]
fn users_survive_reopen_and_first_is_admin() {
    let dir = tmp();
    {
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .create_user("Alice", "h1", AdminGrant::IfFirst, false, 10)
            .unwrap();
        let b = s
            .create_user("bob", "h2", AdminGrant::IfFirst, false, 11)
            .unwrap();
        assert!(a.admin);
        assert!(!b.admin);
        assert_eq!(a.id, UserId(1));
        assert_eq!(b.id, UserId(2));
    }
    let s = Store::open(dir.path()).unwrap();
    let users = s.list_users().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0].name, "Alice");
    assert_eq!(users[0].password_hash, "h1");
    assert_eq!(users[1].created_ms, 11);
    assert_eq!(s.user_by_name("ALICE").unwrap().unwrap().id, UserId(1));
    assert!(s.user_by_name("carol").unwrap().is_none());
    // Ids are never reused, and "first ever" means first ever, not "first of those left".
    let c = s
        .create_user("carol", "h3", AdminGrant::IfFirst, false, 12)
        .unwrap();
    assert_eq!(c.id, UserId(3));
    assert!(!c.admin);
}

#[test]
fn names_are_unique_ignoring_case() {
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    s.create_user("alice", "h", AdminGrant::No, false, 1)
        .unwrap();
    assert!(matches!(
        s.create_user("ALICE", "h", AdminGrant::No, false, 1),
        Err(StoreError::NameTaken)
    ));
    assert_eq!(s.user_count().unwrap(), 1);
}

#[test]
fn closed_registration_allows_only_the_first_account() {
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    let first = s
        .create_user("root", "h", AdminGrant::IfFirst, true, 1)
        .unwrap();
    assert!(first.admin);
    assert!(matches!(
        s.create_user("second", "h", AdminGrant::IfFirst, true, 1),
        Err(StoreError::RegistrationClosed)
    ));
    s.create_user("second", "h", AdminGrant::No, false, 1)
        .unwrap();
}

#[test]
fn sessions_expire_revoke_and_survive_reopen() {
    let dir = tmp();
    let h1 = [1u8; 32];
    let h2 = [2u8; 32];
    let h3 = [3u8; 32];
    let uid;
    {
        let s = Store::open(dir.path()).unwrap();
        uid = s
            .create_user("alice", "h", AdminGrant::No, false, 1)
            .unwrap()
            .id;
        s.create_session(&h1, &session(uid, 0)).unwrap();
        s.create_session(&h2, &session(uid, 1000)).unwrap();
        assert_eq!(s.session_user(&h1, 5000).unwrap().unwrap().id, uid);
        assert_eq!(s.session_user(&h2, 999).unwrap().unwrap().id, uid);
        assert!(s.session_user(&h2, 1000).unwrap().is_none(), "expired");
        assert!(s.session_user(&h3, 0).unwrap().is_none(), "unknown");
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.session_user(&h1, 0).unwrap().unwrap().id, uid);
    assert_eq!(s.sessions_of(uid).unwrap().len(), 2);
    s.delete_session(&h1).unwrap();
    s.delete_session(&h1).unwrap(); // idempotent
    assert!(s.session_user(&h1, 0).unwrap().is_none());
    assert_eq!(s.sessions_of(uid).unwrap().len(), 1);

    // Disabling revokes every session; re-enabling does not bring them back.
    s.create_session(&h3, &session(uid, 0)).unwrap();
    s.set_disabled(uid, true).unwrap();
    assert!(s.session_user(&h3, 0).unwrap().is_none());
    assert!(s.user(uid).unwrap().unwrap().disabled);
    s.set_disabled(uid, false).unwrap();
    assert!(s.session_user(&h3, 0).unwrap().is_none());
    assert!(s.sessions_of(uid).unwrap().is_empty());

    // A password change revokes sessions too.
    s.create_session(&h1, &session(uid, 0)).unwrap();
    s.set_password(uid, "new").unwrap();
    assert!(s.session_user(&h1, 0).unwrap().is_none());
    assert_eq!(s.user(uid).unwrap().unwrap().password_hash, "new");
    assert!(matches!(
        s.set_password(UserId(99), "x"),
        Err(StoreError::NoSuchUser)
    ));
}

#[test]
fn schema_version_newer_is_refused_older_is_migrated() {
    let dir = tmp();
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.meta(schema::META_SCHEMA_VERSION).unwrap(),
            Some(schema::SCHEMA_VERSION)
        );
        s.set_meta_for_tests(schema::META_SCHEMA_VERSION, schema::SCHEMA_VERSION + 1)
            .unwrap();
    }
    match Store::open(dir.path()) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!(found, schema::SCHEMA_VERSION + 1);
            assert_eq!(supported, schema::SCHEMA_VERSION);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer database must be refused"),
    }
}

/// A real database written by the schema-1 code (tests/data/chatd-schema1, see `write_fixture`)
/// opens with this build, is migrated step by step, keeps every record, and stays migrated.
#[test]
fn schema1_database_is_upgraded() {
    let dir = tmp();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chatd-schema1/chatd.redb"
    );
    std::fs::copy(fixture, dir.path().join(DB_FILE)).unwrap();
    let epoch = {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.meta(schema::META_SCHEMA_VERSION).unwrap(),
            Some(schema::SCHEMA_VERSION)
        );
        // 2: the message count was computed from the messages table.
        assert_eq!(s.message_count().unwrap(), 5);
        let users = s.list_users().unwrap();
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert!(users[0].admin && !users[1].admin);
        assert!(crate::auth::verify_password(
            &users[1].password_hash,
            "fixture-password-1"
        ));
        let bob = s.conversations_of(users[1].id, 10).unwrap();
        assert_eq!(bob.len(), 2);
        // 3: the list order now comes from the conversations' last activity.
        assert!(bob[0].last_ms >= bob[1].last_ms, "newest activity first");
        let direct = bob
            .iter()
            .find(|c| c.kind == crate::model::ConversationKind::Direct)
            .unwrap();
        assert_eq!(direct.last_seq, 3);
        assert_eq!(
            direct.read_seq, 2,
            "bob's read position survives the upgrade"
        );
        let page = s
            .history(users[1].id, direct.id, u64::MAX, 10, usize::MAX)
            .unwrap()
            .unwrap();
        let texts: Vec<&str> = page.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            ["hello bob", "hi alice", "schema one <b>was</b> here"]
        );
        // New sends keep counting from the migrated number.
        let mut cache = crate::store::chat::MemberCache::default();
        s.chat_batch(&mut cache, |b| {
            b.send(
                users[1].id,
                "bob",
                crate::store::chat::Target::User(users[0].id),
                "n1",
                "after",
                2,
            )?
            .unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(s.message_count().unwrap(), 6);
        s.epoch()
    };
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.message_count().unwrap(), 6, "migrated once, not again");
    assert_eq!(
        s.epoch(),
        epoch,
        "the epoch is stable across reopen and upgrade"
    );
}

#[test]
fn second_open_is_locked_and_garbage_is_corrupt() {
    let dir = tmp();
    let _s = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(StoreError::Locked(p)) => assert!(p.ends_with(DB_FILE)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("second open must fail"),
    }
    let dir = tmp();
    std::fs::write(dir.path().join(DB_FILE), vec![0x5au8; 8192]).unwrap();
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt(_)) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("garbage must not open"),
    }
}

mod chat {
    use super::*;
    use crate::model::{ConversationId, ConversationKind};
    use crate::store::chat::{ChatError, MemberCache, Target};

    fn users(s: &Store, names: &[&str]) -> Vec<UserId> {
        names
            .iter()
            .map(|n| s.create_user(n, "h", AdminGrant::No, false, 1).unwrap().id)
            .collect()
    }

    /// Catch-up pages and history replies end at `limit` messages or once their texts reach
    /// the byte budget, whichever comes first, and always hold at least one message.
    #[test]
    fn pages_end_at_a_text_byte_budget() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        let u = users(&s, &["a", "b"]);
        let mut cache = MemberCache::default();
        let long = "x".repeat(1000);
        let conv = s
            .chat_batch(&mut cache, |b| {
                let mut conv = None;
                for i in 0..10 {
                    let text = if i == 5 { "short" } else { long.as_str() };
                    let r = b
                        .send(u[0], "a", Target::User(u[1]), &format!("c{i}"), text, 100)?
                        .unwrap();
                    conv = Some(r.message.conversation);
                }
                Ok(conv.unwrap())
            })
            .unwrap();
        let seqs = |after: u64, limit: usize, bytes: usize| {
            let (v, more) = s
                .messages_after_map(u[1], conv, after, limit, bytes, |m| m.seq)
                .unwrap()
                .unwrap();
            (v, more)
        };
        // 2,500 bytes: the third 1,000-byte text reaches it.
        assert_eq!(seqs(0, 100, 2500), (vec![1, 2, 3], true));
        assert_eq!(
            seqs(3, 100, 2500),
            (vec![4, 5, 6, 7], true),
            "seq 6 is short"
        );
        assert_eq!(seqs(7, 100, 2500), (vec![8, 9, 10], false));
        assert_eq!(seqs(0, 2, usize::MAX), (vec![1, 2], true));
        // A single message bigger than the budget still makes a page of one.
        assert_eq!(seqs(0, 100, 10), (vec![1], true));
        assert_eq!(seqs(10, 100, 10), (vec![], false));
        let hist = |before: u64, limit: usize, bytes: usize| -> Vec<u64> {
            s.history(u[1], conv, before, limit, bytes)
                .unwrap()
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect()
        };
        assert_eq!(hist(u64::MAX, 100, 2500), vec![8, 9, 10]);
        assert_eq!(hist(8, 100, 2500), vec![4, 5, 6, 7]);
        assert_eq!(hist(u64::MAX, 2, usize::MAX), vec![9, 10]);
        assert_eq!(hist(u64::MAX, 100, 1), vec![10]);
        assert_eq!(hist(1, 100, 1), Vec::<u64>::new());
    }

    #[test]
    fn direct_conversation_is_one_per_pair_and_sends_are_idempotent() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        let u = users(&s, &["a", "b", "c"]);
        let mut cache = MemberCache::default();
        let (first, second, dup, to_c) = s
            .chat_batch(&mut cache, |b| {
                let first = b
                    .send(u[0], "a", Target::User(u[1]), "c1", "hi", 100)?
                    .unwrap();
                let second = b
                    .send(u[1], "b", Target::User(u[0]), "c1", "yo", 101)?
                    .unwrap();
                let dup = b
                    .send(u[0], "a", Target::User(u[1]), "c1", "hi", 102)?
                    .unwrap();
                let to_c = b
                    .send(u[0], "a", Target::User(u[2]), "c2", "hey", 103)?
                    .unwrap();
                Ok((first, second, dup, to_c))
            })
            .unwrap();
        assert!(first.created && !second.created);
        assert_eq!(first.message.conversation, second.message.conversation);
        assert_eq!((first.message.seq, second.message.seq), (1, 2));
        assert!(dup.duplicate);
        assert_eq!(dup.message.seq, 1);
        assert_eq!(dup.message.time_ms, 100);
        assert_ne!(to_c.message.conversation, first.message.conversation);
        // Nothing to yourself, nothing to nobody.
        let errs = s
            .chat_batch(&mut cache, |b| {
                Ok((
                    b.send(u[0], "a", Target::User(u[0]), "x", "me", 1)?
                        .unwrap_err(),
                    b.send(u[0], "a", Target::User(UserId(99)), "y", "?", 1)?
                        .unwrap_err(),
                    b.send(
                        u[2],
                        "c",
                        Target::Conversation(first.message.conversation),
                        "z",
                        "!",
                        1,
                    )?
                    .unwrap_err(),
                ))
            })
            .unwrap();
        assert!(matches!(errs.0, ChatError::Invalid(_)));
        assert_eq!(errs.1, ChatError::UserNotFound);
        assert_eq!(errs.2, ChatError::NotFound, "non-members cannot post");
        drop(s);

        // Everything survives a reopen, and ids keep counting.
        let s = Store::open(dir.path()).unwrap();
        let conv = first.message.conversation;
        let h = s
            .history(u[0], conv, u64::MAX, 10, usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(
            h.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["hi", "yo"]
        );
        assert!(s
            .history(u[2], conv, u64::MAX, 10, usize::MAX)
            .unwrap()
            .is_none());
        let after = s.messages_after(u[1], conv, 1, 10).unwrap().unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].sender_name, "b");
        let mut cache = MemberCache::default();
        let third = s
            .chat_batch(&mut cache, |b| {
                Ok(
                    b.send(u[0], "a", Target::Conversation(conv), "c3", "again", 200)?
                        .unwrap(),
                )
            })
            .unwrap();
        assert_eq!(third.message.seq, 3);
    }

    #[test]
    fn read_positions_unread_and_recent_order() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        let u = users(&s, &["a", "b", "c"]);
        let mut cache = MemberCache::default();
        let (ab, ac) = s
            .chat_batch(&mut cache, |b| {
                let ab = b
                    .send(u[0], "a", Target::User(u[1]), "1", "x", 10)?
                    .unwrap();
                let ac = b
                    .send(u[0], "a", Target::User(u[2]), "2", "y", 20)?
                    .unwrap();
                b.send(u[0], "a", Target::User(u[1]), "3", "z", 30)?
                    .unwrap();
                b.send(u[0], "a", Target::User(u[1]), "4", "w", 40)?
                    .unwrap();
                Ok((ab.message.conversation, ac.message.conversation))
            })
            .unwrap();
        // a: ab was active last. b sees 3 unread in ab.
        let list = s.conversations_of(u[0], 10).unwrap();
        assert_eq!(list.iter().map(|c| c.id).collect::<Vec<_>>(), [ab, ac]);
        let bl = s.conversations_of(u[1], 10).unwrap();
        assert_eq!(bl.len(), 1);
        assert_eq!(bl[0].last_seq - bl[0].read_seq, 3);
        assert_eq!(bl[0].kind, ConversationKind::Direct);
        assert_eq!(bl[0].peer.as_ref().unwrap().name, "a");
        assert_eq!(bl[0].last_message.as_ref().unwrap().text, "w");
        assert_eq!(list[0].read_seq, 3, "sending marks read");

        s.chat_batch(&mut cache, |b| {
            assert_eq!(b.mark_read(u[1], ab, 2)?.unwrap().unwrap().0, 2);
            assert!(
                b.mark_read(u[1], ab, 1)?.unwrap().is_none(),
                "never backwards"
            );
            assert_eq!(b.mark_read(u[1], ab, 99)?.unwrap().unwrap().0, 3, "clamped");
            assert_eq!(b.mark_read(u[2], ab, 1)?.unwrap_err(), ChatError::NotFound);
            // Activity moves ac to the top for a.
            b.send(u[2], "c", Target::Conversation(ac), "5", "late", 50)?
                .unwrap();
            Ok(())
        })
        .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let list = s.conversations_of(u[0], 10).unwrap();
        assert_eq!(list.iter().map(|c| c.id).collect::<Vec<_>>(), [ac, ab]);
        assert_eq!(s.conversations_of(u[1], 10).unwrap()[0].read_seq, 3);
        let seqs = s.last_seqs(u[0]).unwrap();
        assert_eq!(seqs.len(), 2);
    }

    #[test]
    fn groups_members_owner_and_leaving() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        let u = users(&s, &["a", "b", "c", "d"]);
        let mut cache = MemberCache::default();
        let g = s
            .chat_batch(&mut cache, |b| {
                Ok(b.create_group(u[0], "team", &[u[1], u[1]], 5)?.unwrap())
            })
            .unwrap();
        let conv = g.conversation;
        assert_eq!(&*g.members, &[u[0], u[1]]);
        s.chat_batch(&mut cache, |b| {
            b.send(u[1], "b", Target::Conversation(conv), "m1", "hello", 6)?
                .unwrap();
            assert!(matches!(
                b.add_members(u[1], conv, &[u[2]], 7)?.unwrap_err(),
                ChatError::Forbidden(_)
            ));
            let added = b.add_members(u[0], conv, &[u[2], u[3], u[1]], 7)?.unwrap();
            assert_eq!(added.added, vec![u[2], u[3]]);
            // seq 1 is the "created" line, 2 the message; the "added" line is 3.
            assert_eq!(added.last_seq, 2);
            let line = added.event.as_ref().unwrap();
            assert_eq!(line.seq, 3);
            assert_eq!(line.extra.system.as_ref().unwrap().users, [u[2].0, u[3].0]);
            Ok(())
        })
        .unwrap();
        let c = s.conversation_for(u[2], conv).unwrap().unwrap();
        assert_eq!(c.member_count, 4);
        assert_eq!(c.read_seq, 2, "history before joining is not unread");
        assert_eq!(
            (c.last_seq, c.unread),
            (3, 0),
            "a system line is not unread"
        );
        assert_eq!(c.title, "team");
        s.chat_batch(&mut cache, |b| {
            let left = b.remove_member(u[0], conv, u[0], 8)?.unwrap();
            assert_eq!(left.removed, vec![u[0]]);
            assert!(matches!(
                b.remove_member(u[3], conv, u[2], 8)?.unwrap_err(),
                ChatError::Forbidden(_)
            ));
            Ok(())
        })
        .unwrap();
        let c = s.conversation_for(u[3], conv).unwrap().unwrap();
        assert_eq!(c.owner, u[1], "lowest remaining id owns it");
        assert_eq!(c.member_count, 3);
        assert!(s.conversation_for(u[0], conv).unwrap().is_none());
        assert!(s.conversations_of(u[0], 10).unwrap().is_empty());
        let members = s.members_of(u[1], conv).unwrap().unwrap();
        assert_eq!(
            members.iter().map(|m| m.id).collect::<Vec<_>>(),
            [u[1], u[2], u[3]]
        );
        assert!(members[0].owner);
        assert_eq!(s.contacts(u[2], 256).unwrap(), vec![u[1], u[3]]);
        assert!(
            s.contacts(u[2], 2).unwrap().is_empty(),
            "big groups are skipped"
        );
        assert_eq!(
            s.search_users("B", 10)
                .unwrap()
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        let _ = ConversationId(0);
    }
}

/// A real database written by the schema-4 code (tests/data/chatd-schema4, made by
/// `write_fixture` at commit "Schema-4 fixture", before issue 23 changes the message record)
/// opens with this build and keeps every record: the upgrade from 4 is tested on it.
#[test]
fn schema4_database_is_upgraded() {
    let dir = tmp();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/chatd-schema4");
    for f in ["chatd.redb", "chatd.id", "chatd.wal", "chatd.wal2"] {
        std::fs::copy(format!("{fixture}/{f}"), dir.path().join(f)).unwrap();
    }
    for round in 0..2 {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.meta(schema::META_SCHEMA_VERSION).unwrap(),
            Some(schema::SCHEMA_VERSION),
            "round {round}"
        );
        assert_eq!(s.message_count().unwrap(), 5);
        let users = s.list_users().unwrap();
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        let bob = s.conversations_of(users[1].id, 10).unwrap();
        assert_eq!(bob.len(), 2);
        let direct = bob
            .iter()
            .find(|c| c.kind == crate::model::ConversationKind::Direct)
            .unwrap();
        // bob read 1, and his own message 2 counts as read.
        assert_eq!((direct.last_seq, direct.read_seq), (3, 2));
        let group = bob
            .iter()
            .find(|c| c.kind == crate::model::ConversationKind::Group)
            .unwrap();
        assert_eq!(group.title, "fixture group");
        let page = s
            .history(users[1].id, direct.id, u64::MAX, 10, usize::MAX)
            .unwrap()
            .unwrap();
        let texts: Vec<&str> = page.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            ["hello bob", "hi alice", "schema one <b>was</b> here"]
        );
        assert_eq!(page[0].sender_name, "alice");
        let page = s
            .history(users[2].id, group.id, u64::MAX, 10, usize::MAX)
            .unwrap()
            .unwrap();
        let texts: Vec<&str> = page.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["carol in the group", "alice in the group"]);
    }
}

/// A real database written by main at issue 22 (schema 4 with the file tables;
/// tests/data/chatd-files-main, made by a `write_files_fixture` run on main's code): two
/// messages of alice to bob committed (the second with `one.png`), and a third with `two.png`
/// only in the log as a send-with-files op 7, as a crash before the checkpoint leaves it. It
/// opens with this build: the log op replays, the attachments stay, the schema is upgraded.
#[test]
fn main_files_database_is_upgraded() {
    let dir = tmp();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/chatd-files-main");
    for f in ["chatd.redb", "chatd.id", "chatd.wal", "chatd.wal2"] {
        std::fs::copy(format!("{fixture}/{f}"), dir.path().join(f)).unwrap();
    }
    // The redb file alone holds two messages: the third is the log's.
    let bare = tmp();
    std::fs::copy(format!("{fixture}/chatd.redb"), bare.path().join(DB_FILE)).unwrap();
    let opts = OpenOptions {
        discard_damaged_log: true,
        ..OpenOptions::default()
    };
    assert_eq!(
        Store::open_with(bare.path(), &opts)
            .unwrap()
            .message_count()
            .unwrap(),
        2
    );
    for round in 0..2 {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.meta(schema::META_SCHEMA_VERSION).unwrap(),
            Some(schema::SCHEMA_VERSION),
            "round {round}"
        );
        assert_eq!(s.message_count().unwrap(), 3);
        let users = s.list_users().unwrap();
        let bob = s.conversations_of(users[1].id, 10).unwrap();
        let page = s
            .history(users[1].id, bob[0].id, u64::MAX, 10, usize::MAX)
            .unwrap()
            .unwrap();
        let got: Vec<(&str, Vec<&str>)> = page
            .iter()
            .map(|m| {
                let names = m.attachments.iter().map(|a| a.name.as_str()).collect();
                (m.text.as_str(), names)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("hello bob", vec![]),
                ("a picture", vec!["one.png"]),
                ("", vec!["two.png"])
            ]
        );
        assert_eq!(page[1].attachments[0].width, Some(40));
        // bob may download both files (a conversation he is in holds them).
        for id in [0xa1u128, 0xb2] {
            assert!(s.file_for(users[1].id, id).unwrap().is_some(), "{id:x}");
        }
    }
}

/// Writes a fixture data directory (`tests/data/chatd-schemaN`) used by the
/// upgrade tests:
/// alice, bob and carol (password "fixture-password-1"), a direct chat alice↔bob with 3
/// messages (bob has read 1), a group "fixture group" of all three with 2 messages.
/// Run it only with the code of the schema version it names:
/// `CHATD_FIXTURE_OUT=tests/data/chatd-schemaN cargo test --lib write_fixture -- --ignored`
/// (schema 1 kept only `chatd.redb`; from schema 4 on, the log files and `chatd.id` belong to it).
#[test]
#[ignore]
fn write_fixture() {
    let Ok(out) = std::env::var("CHATD_FIXTURE_OUT") else {
        return;
    };
    let dir = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&dir).unwrap();
    let s = Store::open(&dir).unwrap();
    let hash = crate::auth::hash_password("fixture-password-1").unwrap();
    let u: Vec<UserId> = ["alice", "bob", "carol"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            s.create_user(
                n,
                &hash,
                AdminGrant::IfFirst,
                false,
                1_700_000_000_000 + i as u64,
            )
            .unwrap()
            .id
        })
        .collect();
    use crate::store::chat::{MemberCache, Target};
    let mut cache = MemberCache::default();
    s.chat_batch(&mut cache, |b| {
        let t = 1_700_000_100_000;
        let d = b
            .send(u[0], "alice", Target::User(u[1]), "f1", "hello bob", t)?
            .unwrap();
        b.send(u[1], "bob", Target::User(u[0]), "f2", "hi alice", t + 1)?
            .unwrap();
        b.send(
            u[0],
            "alice",
            Target::User(u[1]),
            "f3",
            "schema one <b>was</b> here",
            t + 2,
        )?
        .unwrap();
        b.mark_read(u[1], d.message.conversation, 1)?.unwrap();
        let g = b
            .create_group(u[0], "fixture group", &[u[1], u[2]], t + 3)?
            .unwrap();
        let gid = Target::Conversation(g.conversation);
        b.send(u[2], "carol", gid, "f4", "carol in the group", t + 4)?
            .unwrap();
        b.send(u[0], "alice", gid, "f5", "alice in the group", t + 5)?
            .unwrap();
        Ok(())
    })
    .unwrap();
}

mod backup {
    use super::*;
    use crate::store::backup::{inspect, restore};
    use crate::store::chat::{MemberCache, Target};
    use redb::{ReadableDatabase, TableHandle};

    fn table_names(path: &Path) -> Vec<String> {
        names_in(&redb::ReadOnlyDatabase::open(path).unwrap())
    }

    fn names_in(db: &impl ReadableDatabase) -> Vec<String> {
        let tx = db.begin_read().unwrap();
        let mut names: Vec<String> = tx
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        names.sort();
        names
    }

    /// A backup taken while another thread keeps committing holds exactly the commits made
    /// before its snapshot (all of them, whole), opens, and restores with a new epoch.
    #[test]
    fn backup_under_writes_is_consistent_and_restores() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .create_user("a", "h", AdminGrant::No, false, 1)
            .unwrap()
            .id;
        let b = s
            .create_user("b", "h", AdminGrant::No, false, 1)
            .unwrap()
            .id;
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut cache = MemberCache::default();
                for i in 0..300u64 {
                    s.chat_batch(&mut cache, |batch| {
                        // Two messages per commit: a consistent copy never has an odd count.
                        for j in 0..2 {
                            let id = format!("m{i}-{j}");
                            batch.send(a, "a", Target::User(b), &id, "x", i)?.unwrap();
                        }
                        Ok(())
                    })
                    .unwrap();
                }
            })
        };
        // Let some commits land, then copy while the writer keeps going.
        while s.message_count().unwrap() < 40 {
            std::thread::yield_now();
        }
        let before = s.message_count().unwrap();
        let out = tmp();
        let file = out.path().join("backup.redb");
        let summary = s.backup_to(&file).unwrap();
        writer.join().unwrap();
        assert!(summary.messages >= before, "{summary:?} < {before}");
        assert_eq!(summary.messages % 2, 0, "a commit was split by the backup");
        assert!(
            summary.messages < 600,
            "the writer was still running, copy should be partial"
        );
        assert_eq!(summary.users, 2);
        assert_eq!(summary.schema, schema::SCHEMA_VERSION);
        assert_eq!(table_names(&file), names_in(&*s.db));
        assert_eq!(inspect(&file).unwrap(), summary);
        assert!(
            s.backup_to(&file).is_err(),
            "an existing file is never overwritten"
        );

        // Restore refuses while the database is open, then works once it is closed.
        let epoch = s.epoch();
        assert!(matches!(
            restore(&file, dir.path(), 5),
            Err(StoreError::Locked(_))
        ));
        drop(s);
        let r = restore(&file, dir.path(), 5).unwrap();
        assert_eq!(r.summary.messages, summary.messages);
        let previous = r.previous.unwrap();
        assert!(previous.ends_with("chatd.redb.before-restore-5"));
        let s = Store::open(dir.path()).unwrap();
        assert_ne!(s.epoch(), epoch, "a restored database has a new epoch");
        assert_eq!(s.message_count().unwrap(), summary.messages);
        let conv = s.conversations_of(a, 10).unwrap();
        assert_eq!(
            conv[0].last_seq, summary.messages,
            "seqs match the copied messages"
        );
        // The database restore replaced is still there, whole.
        assert_eq!(inspect(&previous).unwrap().messages, 600);
    }

    #[test]
    fn restore_refuses_garbage_and_newer_files() {
        let dir = tmp();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, vec![7u8; 10_000]).unwrap();
        assert!(matches!(
            inspect(&junk),
            Err(StoreError::Corrupt(_)) | Err(StoreError::Db(_))
        ));
        let target = tmp();
        assert!(restore(&junk, target.path(), 1).is_err());
        assert!(
            !target.path().join(DB_FILE).exists(),
            "nothing was put in place"
        );
        assert!(restore(&dir.path().join("missing.redb"), target.path(), 1).is_err());

        let newer = tmp();
        {
            let s = Store::open(newer.path()).unwrap();
            s.set_meta_for_tests(schema::META_SCHEMA_VERSION, schema::SCHEMA_VERSION + 1)
                .unwrap();
        }
        let f = newer.path().join(DB_FILE);
        assert!(matches!(inspect(&f), Err(StoreError::NewerSchema { .. })));
        assert!(matches!(
            restore(&f, target.path(), 1),
            Err(StoreError::NewerSchema { .. })
        ));
    }

    /// An old backup (schema 1) restores and is upgraded on the way in.
    #[test]
    fn schema1_backup_restores_upgraded() {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/chatd-schema1/chatd.redb"
        );
        let work = tmp();
        let copy = work.path().join("old-backup.redb");
        std::fs::copy(fixture, &copy).unwrap();
        assert_eq!(inspect(&copy).unwrap().schema, 1);
        let target = tmp();
        let r = restore(&copy, target.path(), 1).unwrap();
        assert!(r.previous.is_none());
        assert_eq!(r.summary.schema, schema::SCHEMA_VERSION);
        assert_eq!(r.summary.messages, 5);
        assert_eq!(r.summary.users, 3);
    }
}

/// A crash image: the database file and the log copied while the store is open, after batches
/// were applied with non-durable commits and logged but not checkpointed. Opening the copy
/// re-applies exactly those batches: same seqs, same new conversation, same read positions.
#[test]
fn logged_batches_are_replayed_after_a_crash() {
    use crate::store::chat::{Applied, Change, MemberCache, Target};
    use crate::store::wal::{LoggedOp, WAL_FILES};
    let live = tmp();
    let crash = tmp();
    let s = Store::open(live.path()).unwrap();
    let (a, b) = alice_and_bob(&s);
    let mut cache = MemberCache::default();
    let first = Change::Send {
        reply_to: None,
        target: Target::User(b.id),
        client_id: "c1".into(),
        text: "hello".into(),
        attachments: Vec::new(),
        mentions: Vec::new(),
    };
    let r = s
        .apply_logged(
            &mut cache,
            1000,
            &[LoggedOp {
                actor: a.id,
                actor_name: "alice",
                change: &first,
            }],
        )
        .unwrap();
    let Ok(Applied::Sent(sent)) = &r[0] else {
        panic!("{r:?}")
    };
    let conv = sent.message.conversation;
    let more: Vec<Change> = (2..=5)
        .map(|i| Change::Send {
            reply_to: None,
            target: Target::Conversation(conv),
            client_id: format!("c{i}"),
            text: format!("m{i}"),
            attachments: Vec::new(),
            mentions: Vec::new(),
        })
        .chain([Change::Read {
            conversation: conv,
            seq: 4,
        }])
        .collect();
    let ops: Vec<LoggedOp<'_>> = more
        .iter()
        .enumerate()
        .map(|(i, c)| LoggedOp {
            actor: if i % 2 == 0 || i == 4 { b.id } else { a.id },
            actor_name: if i % 2 == 0 || i == 4 { "bob" } else { "alice" },
            change: c,
        })
        .collect();
    s.apply_logged(&mut cache, 2000, &ops).unwrap();
    assert!(
        std::fs::metadata(live.path().join(WAL_FILES[0]))
            .unwrap()
            .len()
            > 0,
        "not checkpointed yet"
    );
    let expected = s
        .history(a.id, conv, u64::MAX, 100, usize::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(expected.len(), 5);
    // The crash image, and the same without the log (what redb alone has on disk).
    let no_log = tmp();
    for f in [DB_FILE, WAL_FILES[0], WAL_FILES[1]] {
        std::fs::copy(live.path().join(f), crash.path().join(f)).unwrap();
    }
    std::fs::copy(live.path().join(DB_FILE), no_log.path().join(DB_FILE)).unwrap();
    drop(s);
    // (The database expects its log: only the explicit flag opens it without.)
    assert!(matches!(
        Store::open(no_log.path()),
        Err(StoreError::Refused(_))
    ));
    let bare = Store::open_with(
        no_log.path(),
        &OpenOptions {
            discard_damaged_log: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        bare.message_count().unwrap(),
        0,
        "without the log the non-durable commits are gone (so the replay below does the work)"
    );
    drop(bare);
    let r = Store::open(crash.path()).unwrap();
    let got = r
        .history(a.id, conv, u64::MAX, 100, usize::MAX)
        .unwrap()
        .unwrap();
    let view = |v: &[StoredMessage]| -> Vec<(u64, u64, String, String, u64)> {
        v.iter()
            .map(|m| {
                (
                    m.seq,
                    m.sender.0,
                    m.client_id.clone(),
                    m.text.clone(),
                    m.time_ms,
                )
            })
            .collect()
    };
    assert_eq!(
        view(&got),
        view(&expected),
        "the same messages with the same seqs"
    );
    let bobs = r.conversations_of(b.id, 10).unwrap();
    assert_eq!(bobs[0].read_seq, 4, "bob's read, replayed");
    assert_eq!(
        std::fs::metadata(crash.path().join(WAL_FILES[0]))
            .unwrap()
            .len(),
        0,
        "replayed, made durable, log emptied"
    );
    drop(r);
    // And once more from that state: nothing is applied twice.
    let r = Store::open(crash.path()).unwrap();
    assert_eq!(r.message_count().unwrap(), 5);
    drop(r);

    // Restoring over a crash image: the replaced database takes its log first (the copy kept
    // aside is complete), and the log is never replayed onto the restored database, even
    // though a backup of the same history has the same epoch.
    let backup = tmp();
    let file = backup.path().join("b.redb");
    {
        let early = tmp();
        for f in [DB_FILE, WAL_FILES[0], WAL_FILES[1]] {
            std::fs::copy(no_log.path().join(f), early.path().join(f)).unwrap();
        }
        Store::open(early.path()).unwrap().backup_to(&file).unwrap();
    }
    let again = tmp();
    for f in [DB_FILE, WAL_FILES[0], WAL_FILES[1]] {
        std::fs::copy(live.path().join(f), again.path().join(f)).unwrap();
    }
    let restored = crate::store::backup::restore(&file, again.path(), 7).unwrap();
    assert_eq!(restored.summary.messages, 0, "the backup had none");
    let kept = restored.previous.unwrap();
    let aside = tmp();
    std::fs::copy(&kept, aside.path().join(DB_FILE)).unwrap();
    assert_eq!(
        Store::open(aside.path()).unwrap().message_count().unwrap(),
        5,
        "the replaced database got its logged batches before it was put aside"
    );
    let r = Store::open(again.path()).unwrap();
    assert_eq!(
        r.message_count().unwrap(),
        0,
        "nothing replayed onto the restored one"
    );
}

/// A checkpoint's fsync runs after the writer has moved on, so a crash can come between the
/// checkpoint's page writes and their fsync, with later batches already in the other log file.
/// Whichever state redb comes back with (the checkpoint, or the commit before it when the
/// checkpoint's pages did not all reach the disk), the two log files together bring back every
/// batch exactly once; and in the normal course the syncer empties the covered file.
#[test]
fn a_crash_before_a_checkpoints_fsync_loses_nothing() {
    use crate::store::chat::{Change, MemberCache, Target};
    use crate::store::wal::WAL_FILES;
    let live = tmp();
    let s = Store::open(live.path()).unwrap();
    let (a, b) = alice_and_bob(&s);
    let mut cache = MemberCache::default();
    let send = |i: u32| Change::Send {
        reply_to: None,
        target: Target::User(b.id),
        client_id: format!("c{i}"),
        text: format!("m{i}"),
        attachments: Vec::new(),
        mentions: Vec::new(),
    };
    let log =
        |cache: &mut MemberCache, changes: &[Change]| apply_as_alice(&s, cache, a.id, changes);
    log(&mut cache, &[send(1)]);
    // What the disk holds before the checkpoint: the users, not message 1.
    let before = tmp();
    std::fs::copy(live.path().join(DB_FILE), before.path().join(DB_FILE)).unwrap();
    s.checkpoint_without_fsync().unwrap();
    assert!(s.log_retiring());
    // Its pages are held in memory until the syncer writes them; a crash may come after some
    // or all of them reached the file (this image) or before any did (the one above).
    s.dbfile.write_held_unsynced().unwrap();
    log(&mut cache, &[send(2), send(3)]);
    let size = |d: &Path, i: usize| std::fs::metadata(d.join(WAL_FILES[i])).unwrap().len();
    assert!(
        size(live.path(), 0) > 0 && size(live.path(), 1) > 0,
        "batch 1 in the first file, batch 2 in the second"
    );
    let texts = |st: &Store| -> Vec<String> {
        let conv = st.conversations_of(a.id, 10).unwrap()[0].id;
        st.history(a.id, conv, u64::MAX, 100, usize::MAX)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|m| format!("{}:{}", m.seq, m.text))
            .collect()
    };
    let want = ["1:m1", "2:m2", "3:m3"];
    for (image, db_from) in [
        ("the checkpoint lost", before.path()),
        ("the checkpoint kept", live.path()),
    ] {
        let crash = tmp();
        std::fs::copy(db_from.join(DB_FILE), crash.path().join(DB_FILE)).unwrap();
        for f in WAL_FILES {
            std::fs::copy(live.path().join(f), crash.path().join(f)).unwrap();
        }
        let r = Store::open(crash.path()).unwrap();
        assert_eq!(texts(&r), want, "{image}");
        assert_eq!(r.message_count().unwrap(), 3, "{image}: nothing twice");
        assert!(
            size(crash.path(), 0) == 0 && size(crash.path(), 1) == 0,
            "{image}: recovered, made durable, both files emptied"
        );
    }
    // The normal course: a due checkpoint hands its fsync to the syncer, which then empties the
    // file the checkpoint covers while the writer appends to the other one.
    s.checkpoint().unwrap();
    log(&mut cache, &[send(4)]);
    std::thread::sleep(CHECKPOINT_INTERVAL + Duration::from_millis(50));
    assert!(s.checkpoint_if_due().is_some());
    log(&mut cache, &[send(5)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.log_retiring() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!s.log_retiring(), "the syncer finished the checkpoint");
    let copy = tmp();
    for f in WAL_FILES {
        std::fs::copy(live.path().join(f), copy.path().join(f)).unwrap();
    }
    let (_, left) = crate::store::wal::Wal::open(copy.path()).unwrap();
    assert_eq!(left.batches.len(), 1, "only batch 5 is left in the log");
    assert_eq!(left.dropped_bytes, 0);
    drop(s);
    let r = Store::open(live.path()).unwrap();
    assert_eq!(r.message_count().unwrap(), 5);
}

/// With a page cache far smaller than one batch's pages (`--cache-mb` set low), redb writes the
/// pages of non-durable commits to the file early instead of keeping them until the
/// checkpoint, also while a checkpoint's deferred fsync is still owed (such a write completes
/// that fsync first). Nothing is lost or doubled: not in a crash image taken mid-run, not after
/// a reopen.
#[test]
fn a_tiny_page_cache_loses_nothing() {
    use crate::store::chat::{Change, MemberCache, Target};
    fn batch(s: &Store, cache: &mut MemberCache, actor: UserId, peers: &[UserId], n: &mut u32) {
        let changes: Vec<Change> = peers
            .iter()
            .map(|p| {
                *n += 1;
                Change::Send {
                    reply_to: None,
                    target: Target::User(*p),
                    client_id: format!("c{n}"),
                    text: format!("message {n} {}", "x".repeat(300)),
                    attachments: Vec::new(),
                    mentions: Vec::new(),
                }
            })
            .collect();
        apply_as_alice(s, cache, actor, &changes);
    }
    fn check(s: &Store, a: UserId, batches: u64, peers: usize) {
        assert_eq!(s.message_count().unwrap(), batches * peers as u64);
        let convs = s.conversations_of(a, 1000).unwrap();
        assert_eq!(convs.len(), peers);
        for c in convs {
            let seqs: Vec<u64> = s
                .history(a, c.id, u64::MAX, 100, usize::MAX)
                .unwrap()
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect();
            assert_eq!(seqs, (1..=batches).collect::<Vec<_>>());
        }
    }
    let live = tmp();
    let s = Store::open_with_cache(live.path(), Some(64 * 1024)).unwrap();
    let a = s
        .create_user("alice", "h", AdminGrant::No, false, 1)
        .unwrap()
        .id;
    let peers: Vec<UserId> = (0..40)
        .map(|i| {
            s.create_user(&format!("p{i}"), "h", AdminGrant::No, false, 1)
                .unwrap()
                .id
        })
        .collect();
    let mut cache = MemberCache::default();
    let mut n = 0;
    for i in 1..=30u64 {
        batch(&s, &mut cache, a, &peers, &mut n);
        match i {
            // A checkpoint whose fsync is still owed when the next batches write pages early.
            10 => s.checkpoint_without_fsync().unwrap(),
            20 => s.checkpoint().unwrap(),
            25 => {
                let crash = crash_image(live.path());
                let r = Store::open_with_cache(crash.path(), Some(64 * 1024)).unwrap();
                check(&r, a, 25, peers.len());
            }
            _ => {}
        }
    }
    check(&s, a, 30, peers.len());
    drop(s);
    let r = Store::open_with_cache(live.path(), Some(64 * 1024)).unwrap();
    check(&r, a, 30, peers.len());
    drop(r);
    check(&Store::open(live.path()).unwrap(), a, 30, peers.len());
}

/// The log's two files are reused in place: after a checkpoint's fsync the covered file is not
/// truncated, and later records are written over its old ones (longer and shorter than them,
/// so new records end inside old ones). A crash image taken at any point brings back every
/// message exactly once, and the old records are never replayed.
#[test]
fn reused_log_files_bring_back_every_batch_once_after_a_crash() {
    use crate::store::chat::{Change, MemberCache, Target};
    let live = tmp();
    let s = Store::open(live.path()).unwrap();
    let (a, b) = alice_and_bob(&s);
    let mut cache = MemberCache::default();
    let mut sent = 0u64;
    let check = |dir: &Path, want: u64| {
        let r = Store::open(dir).unwrap();
        assert_eq!(r.message_count().unwrap(), want);
        if want > 0 {
            let conv = r.conversations_of(a.id, 10).unwrap()[0].id;
            let seqs: Vec<u64> = r
                .history(a.id, conv, u64::MAX, 1000, usize::MAX)
                .unwrap()
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect();
            assert_eq!(seqs, (1..=want).collect::<Vec<_>>());
        }
    };
    for round in 0..8u64 {
        // Long texts in the early rounds, short ones later: new records end mid-old-record.
        let len = if round < 4 {
            400
        } else {
            10 + 37 * (round % 3) as usize
        };
        for _ in 0..(3 + round % 2) {
            sent += 1;
            let c = Change::Send {
                reply_to: None,
                target: Target::User(b.id),
                client_id: format!("c{sent}"),
                text: "y".repeat(len),
                attachments: Vec::new(),
                mentions: Vec::new(),
            };
            apply_as_alice(&s, &mut cache, a.id, &[c]);
        }
        check(crash_image(live.path()).path(), sent);
        // A checkpoint as the writer and the syncer make it: switch, fsync, retire (reuse).
        s.checkpoint_without_fsync().unwrap();
        let switch = s.lock_journal().wal.switches();
        s.dbfile.sync_deferred().unwrap();
        s.lock_journal().wal.finish_retire(switch).unwrap();
        check(crash_image(live.path()).path(), sent);
    }
    drop(s);
    check(live.path(), sent);
}
