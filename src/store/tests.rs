//! Store tests on real redb files in a temp directory, including reopen after "restart"
//! (dropping every handle releases redb's file lock, as a process exit does).

use super::*;
use crate::model::{Session, SessionKind};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
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
    let dir = tmp();
    let epoch = {
        let s = Store::open(dir.path()).unwrap();
        s.set_meta_for_tests(schema::META_SCHEMA_VERSION, 0)
            .unwrap();
        s.epoch()
    };
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.meta(schema::META_SCHEMA_VERSION).unwrap(),
        Some(schema::SCHEMA_VERSION)
    );
    assert_eq!(s.epoch(), epoch, "the epoch is stable across reopen");
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
