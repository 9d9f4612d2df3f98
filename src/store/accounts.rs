//! Accounts beyond log-in: creating users under the registration rules (first account, open or
//! closed registration, invites), unique names by case and by look-alike skeleton, profiles,
//! admin flags with the last-admin guard, password changes that keep one session, runtime
//! settings, invites and last-seen times. Tables: `users`, `user_names`, `user_skeletons`,
//! `settings`, `invites`, `last_seen`, `sessions`, `user_sessions` (see `schema`).
//!
//! Part of the store (the only code naming redb); every write commits durably.

use std::collections::HashMap;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::codec::{Dec, Enc};
use super::schema::*;
use super::{decode_user, encode_user, AdminGrant, Result, Store, StoreError};
use crate::model::{name_key, name_skeleton, skeleton_version, Invite, Session, User, UserId};

/// Who is creating an account, which decides whether they may.
#[derive(Clone, Copy, Debug)]
pub enum Admission<'a> {
    /// An administrator (at the shell or in the web admin screen): always allowed. The first
    /// account ever is an admin whatever `admin` says.
    ByAdmin { admin: bool },
    /// Someone registering from the web page: allowed while no account exists, while
    /// registration is open (the stored setting, else `default_open`, the `--registration`
    /// flag), or with a valid `invite` (one use is consumed, even when registration is open;
    /// an unknown, used-up or expired one is refused with `InvalidInvite`).
    Public {
        default_open: bool,
        invite: Option<&'a str>,
        now_ms: u64,
    },
}

/// Creates the tables this module added (without a schema change) and (re)builds the skeleton
/// index when it does not cover every user or was made with another skeleton version. Runs
/// in `Store::open`.
pub(super) fn init_tables(db: &Database) -> Result<()> {
    let mut tx = db.begin_write()?;
    tx.set_durability(redb::Durability::Immediate)?;
    let rebuilt = {
        let mut settings = tx.open_table(SETTINGS)?;
        tx.open_table(INVITES)?;
        tx.open_table(LAST_SEEN)?;
        let users = tx.open_table(USERS)?;
        let mut index = tx.open_table(USER_SKELETONS)?;
        let version = settings.get(SETTING_SKELETON_VERSION)?.map(|v| v.value());
        if version == Some(skeleton_version()) && index.len()? == users.len()? {
            None
        } else {
            index.retain(|_, _| false)?;
            let mut n = 0u64;
            for row in users.iter()? {
                let (k, v) = row?;
                let user = decode_user(k.value(), v.value())?;
                index.insert((name_skeleton(&user.name).as_str(), user.id.0), ())?;
                n += 1;
            }
            settings.insert(SETTING_SKELETON_VERSION, skeleton_version())?;
            Some(n)
        }
    };
    tx.commit()?;
    if let Some(n) = rebuilt.filter(|n| *n > 0) {
        tracing::info!(users = n, "built the index of look-alike user names");
    }
    Ok(())
}

/// Inserts a new account after checking its name is free by case (`NameTaken`) and by
/// skeleton (`NameConfusable`, naming the existing account). The caller checked whether the
/// account may be created at all.
pub(super) fn insert_user(
    tx: &WriteTransaction,
    name: &str,
    password_hash: &str,
    admin: AdminGrant,
    now_ms: u64,
) -> Result<User> {
    let mut names = tx.open_table(USER_NAMES)?;
    let key = name_key(name);
    if names.get(key.as_str())?.is_some() {
        return Err(StoreError::NameTaken);
    }
    let skeleton = name_skeleton(name);
    let mut index = tx.open_table(USER_SKELETONS)?;
    let users = tx.open_table(USERS)?;
    let clash = index
        .range((skeleton.as_str(), 0)..=(skeleton.as_str(), u64::MAX))?
        .next()
        .transpose()?
        .map(|(k, _)| k.value().1);
    if let Some(other) = clash {
        let existing = match users.get(other)? {
            Some(v) => decode_user(other, v.value())?.name,
            None => String::new(),
        };
        return Err(StoreError::NameConfusable(existing));
    }
    drop(users);
    let mut meta = tx.open_table(META)?;
    let id = meta.get(META_NEXT_USER)?.map(|v| v.value()).unwrap_or(1);
    meta.insert(META_NEXT_USER, id + 1)?;
    let user = User {
        id: UserId(id),
        name: name.to_string(),
        password_hash: password_hash.to_string(),
        admin: match admin {
            AdminGrant::Yes => true,
            AdminGrant::No => false,
            AdminGrant::IfFirst => id == 1,
        },
        disabled: false,
        created_ms: now_ms,
        display_name: None,
        color: 0,
    };
    names.insert(key.as_str(), id)?;
    index.insert((skeleton.as_str(), id), ())?;
    tx.open_table(USERS)?
        .insert(id, encode_user(&user).as_slice())?;
    Ok(user)
}

fn encode_invite(i: &Invite) -> Vec<u8> {
    Enc::new(1)
        .u64(i.uses_left)
        .u64(i.expires_ms)
        .u64(i.created_by.0)
        .u64(i.created_ms)
        .0
}

pub(super) fn decode_invite(code: &str, raw: &[u8]) -> Result<Invite> {
    let mut d = Dec::new(raw, 1, "invite record version")?;
    Ok(Invite {
        code: code.to_string(),
        uses_left: d.u64()?,
        expires_ms: d.u64()?,
        created_by: UserId(d.u64()?),
        created_ms: d.u64()?,
    })
}

/// Removes every session of `user` except `keep`; returns how many were removed.
fn revoke_sessions_except(
    tx: &WriteTransaction,
    user: UserId,
    keep: Option<&[u8; 32]>,
) -> Result<usize> {
    let mut index = tx.open_table(USER_SESSIONS)?;
    let mut sessions = tx.open_table(SESSIONS)?;
    let mut hashes = Vec::new();
    for row in index.range((user.0, &[0u8; 32])..=(user.0, &[0xffu8; 32]))? {
        let (k, _) = row?;
        let h = *k.value().1;
        if Some(&h) != keep {
            hashes.push(h);
        }
    }
    for h in &hashes {
        sessions.remove(h)?;
        index.remove((user.0, h))?;
    }
    Ok(hashes.len())
}

/// Enabled admins other than `except`.
fn other_admins(tx: &WriteTransaction, except: UserId) -> Result<usize> {
    let users = tx.open_table(USERS)?;
    let mut n = 0;
    for row in users.iter()? {
        let (k, v) = row?;
        if k.value() == except.0 {
            continue;
        }
        let u = decode_user(k.value(), v.value())?;
        if u.admin && !u.disabled {
            n += 1;
        }
    }
    Ok(n)
}

impl Store {
    /// Creates an account if `admission` allows it (see `Admission`). The name must already be
    /// validated. Checked and written in one transaction, so racing registrations cannot both
    /// take a name, both be "the first", or both take an invite's last use.
    pub fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        admission: Admission<'_>,
        now_ms: u64,
    ) -> Result<User> {
        let tx = self.write()?;
        let grant = match admission {
            Admission::ByAdmin { admin: true } => AdminGrant::Yes,
            Admission::ByAdmin { admin: false } => AdminGrant::IfFirst,
            Admission::Public {
                default_open,
                invite,
                now_ms,
            } => {
                let first = tx.open_table(USERS)?.is_empty()?;
                if let Some(code) = invite {
                    // Looked up first: a bad code is refused even while registration is open,
                    // so a stale link says so instead of quietly doing something else.
                    let mut invites = tx.open_table(INVITES)?;
                    let found = match invites.get(code)? {
                        Some(v) => Some(decode_invite(code, v.value())?),
                        None => None,
                    };
                    match found {
                        Some(i) if i.uses_left > 0 && i.expires_ms > now_ms => {
                            if i.uses_left == 1 {
                                invites.remove(code)?;
                            } else {
                                let left = Invite {
                                    uses_left: i.uses_left - 1,
                                    ..i
                                };
                                invites.insert(code, encode_invite(&left).as_slice())?;
                            }
                        }
                        _ => return Err(StoreError::InvalidInvite),
                    }
                } else if !first {
                    let stored = tx
                        .open_table(SETTINGS)?
                        .get(SETTING_REGISTRATION)?
                        .map(|v| v.value());
                    let open = match stored {
                        Some(1) => true,
                        Some(2) => false,
                        _ => default_open,
                    };
                    if !open {
                        return Err(StoreError::RegistrationClosed);
                    }
                }
                AdminGrant::IfFirst
            }
        };
        let user = insert_user(&tx, name, password_hash, grant, now_ms)?;
        tx.commit()?;
        Ok(user)
    }

    /// The registration mode an admin set at run time: `Some(true)` open, `Some(false)` closed,
    /// `None` never set (the `--registration` flag decides).
    pub fn registration_setting(&self) -> Result<Option<bool>> {
        let tx = self.db.begin_read()?;
        let v = tx
            .open_table(SETTINGS)?
            .get(SETTING_REGISTRATION)?
            .map(|v| v.value());
        Ok(match v {
            Some(1) => Some(true),
            Some(2) => Some(false),
            _ => None,
        })
    }

    /// Stores the registration mode (wins over the flag from now on).
    pub fn set_registration_open(&self, open: bool) -> Result<()> {
        let tx = self.write()?;
        tx.open_table(SETTINGS)?
            .insert(SETTING_REGISTRATION, if open { 1 } else { 2 })?;
        tx.commit()?;
        Ok(())
    }

    /// Changes a user's display name (`Some(None)` clears it) and/or colour (`User::color`);
    /// returns the updated account.
    pub fn update_profile(
        &self,
        id: UserId,
        display_name: Option<Option<String>>,
        color: Option<u8>,
    ) -> Result<User> {
        self.change_user(id, |_, u| {
            if let Some(d) = display_name {
                u.display_name = d;
            }
            if let Some(c) = color {
                u.color = c;
            }
            Ok(())
        })
    }

    /// Replaces a user's password hash and revokes every session and token of the user except
    /// `keep` (the one that asked for the change), in one transaction.
    pub fn change_password(
        &self,
        id: UserId,
        password_hash: &str,
        keep: Option<&[u8; 32]>,
    ) -> Result<User> {
        self.change_user(id, |tx, u| {
            u.password_hash = password_hash.to_string();
            revoke_sessions_except(tx, id, keep)?;
            Ok(())
        })
    }

    /// Revokes every session and token of `user` except `keep`; returns how many.
    pub fn revoke_other_sessions(&self, user: UserId, keep: &[u8; 32]) -> Result<usize> {
        let tx = self.write()?;
        let n = revoke_sessions_except(&tx, user, Some(keep))?;
        tx.commit()?;
        Ok(n)
    }

    /// Replaces the session `old` with `new` (the same browser, a fresh token): the new one is
    /// stored first, so a failure in between leaves the browser logged in.
    pub fn rotate_session(&self, old: &[u8; 32], new: &[u8; 32], session: &Session) -> Result<()> {
        self.create_session(new, session)?;
        self.delete_session(old)
    }

    /// Grants or removes admin rights; refuses (`LastAdmin`) to remove them from the last
    /// enabled admin. Returns the updated account.
    pub fn set_admin_checked(&self, id: UserId, admin: bool) -> Result<User> {
        self.change_user(id, |tx, u| {
            if !admin && u.admin && !u.disabled && other_admins(tx, id)? == 0 {
                return Err(StoreError::LastAdmin);
            }
            u.admin = admin;
            Ok(())
        })
    }

    /// Disables (revoking every session and token) or enables an account; refuses
    /// (`LastAdmin`) to disable the last enabled admin. Returns the updated account.
    pub fn set_disabled_checked(&self, id: UserId, disabled: bool) -> Result<User> {
        self.change_user(id, |tx, u| {
            if disabled && u.admin && !u.disabled && other_admins(tx, id)? == 0 {
                return Err(StoreError::LastAdmin);
            }
            u.disabled = disabled;
            if disabled {
                revoke_sessions_except(tx, id, None)?;
            }
            Ok(())
        })
    }

    /// Reads, changes and writes back one account in one transaction.
    fn change_user(
        &self,
        id: UserId,
        f: impl FnOnce(&WriteTransaction, &mut User) -> Result<()>,
    ) -> Result<User> {
        let tx = self.write()?;
        let mut user = match tx.open_table(USERS)?.get(id.0)? {
            Some(v) => decode_user(id.0, v.value())?,
            None => return Err(StoreError::NoSuchUser),
        };
        f(&tx, &mut user)?;
        tx.open_table(USERS)?
            .insert(id.0, encode_user(&user).as_slice())?;
        tx.commit()?;
        Ok(user)
    }

    // ---- invites ----------------------------------------------------------------------------

    /// Stores a new invite, and deletes the expired ones.
    pub fn create_invite(&self, invite: &Invite, now_ms: u64) -> Result<()> {
        let tx = self.write()?;
        {
            let mut invites = tx.open_table(INVITES)?;
            let mut expired = Vec::new();
            for row in invites.iter()? {
                let (k, v) = row?;
                if decode_invite(k.value(), v.value())?.expires_ms <= now_ms {
                    expired.push(k.value().to_string());
                }
            }
            for code in &expired {
                invites.remove(code.as_str())?;
            }
            invites.insert(invite.code.as_str(), encode_invite(invite).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Invites that still work at `now_ms`, newest first.
    pub fn invites(&self, now_ms: u64) -> Result<Vec<Invite>> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(INVITES)?.iter()? {
            let (k, v) = row?;
            let i = decode_invite(k.value(), v.value())?;
            if i.expires_ms > now_ms && i.uses_left > 0 {
                out.push(i);
            }
        }
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.code.cmp(&b.code)));
        Ok(out)
    }

    /// Deletes an invite; false if there was none with that code.
    pub fn delete_invite(&self, code: &str) -> Result<bool> {
        let tx = self.write()?;
        let found = tx.open_table(INVITES)?.remove(code)?.is_some();
        tx.commit()?;
        Ok(found)
    }

    // ---- last seen --------------------------------------------------------------------------

    /// The stored last-seen time of every user who has one.
    pub fn last_seen(&self) -> Result<HashMap<UserId, u64>> {
        let tx = self.db.begin_read()?;
        let mut out = HashMap::new();
        for row in tx.open_table(LAST_SEEN)?.iter()? {
            let (k, v) = row?;
            out.insert(UserId(k.value()), v.value());
        }
        Ok(out)
    }

    /// Stores last-seen times (a time never moves back), in one transaction.
    pub fn record_last_seen(&self, seen: &[(UserId, u64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let tx = self.write()?;
        {
            let mut table = tx.open_table(LAST_SEEN)?;
            for (user, ms) in seen {
                let old = table.get(user.0)?.map(|v| v.value()).unwrap_or(0);
                if *ms > old {
                    table.insert(user.0, *ms)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Session;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn public(invite: Option<&str>, now_ms: u64) -> Admission<'_> {
        Admission::Public {
            default_open: false,
            invite,
            now_ms,
        }
    }

    #[test]
    fn registration_rules_invites_and_look_alikes() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        // The first account may always register, and is the admin.
        let alice = s.add_user("alice", "h", public(None, 10), 10).unwrap();
        assert!(alice.admin);
        assert!(matches!(
            s.add_user("bob", "h", public(None, 10), 10),
            Err(StoreError::RegistrationClosed)
        ));
        // The stored setting wins over the flag's default.
        s.set_registration_open(true).unwrap();
        assert_eq!(s.registration_setting().unwrap(), Some(true));
        let bob = s.add_user("bob", "h", public(None, 10), 10).unwrap();
        assert!(!bob.admin);
        s.set_registration_open(false).unwrap();
        // An invite for two uses works while closed, twice, then is gone.
        let inv = Invite {
            code: "c0de".into(),
            uses_left: 2,
            expires_ms: 1000,
            created_by: alice.id,
            created_ms: 5,
        };
        s.create_invite(&inv, 5).unwrap();
        assert_eq!(s.invites(6).unwrap(), vec![inv.clone()]);
        s.add_user("carol", "h", public(Some("c0de"), 20), 20)
            .unwrap();
        assert_eq!(s.invites(21).unwrap()[0].uses_left, 1);
        s.add_user("dave", "h", public(Some("c0de"), 20), 20)
            .unwrap();
        assert!(s.invites(21).unwrap().is_empty());
        assert!(matches!(
            s.add_user("erin", "h", public(Some("c0de"), 20), 20),
            Err(StoreError::InvalidInvite)
        ));
        // Expired, and unknown; a refused registration consumes nothing.
        s.create_invite(
            &Invite {
                code: "old".into(),
                expires_ms: 30,
                ..inv.clone()
            },
            5,
        )
        .unwrap();
        assert!(matches!(
            s.add_user("erin", "h", public(Some("old"), 30), 30),
            Err(StoreError::InvalidInvite)
        ));
        assert!(matches!(
            s.add_user("erin", "h", public(Some("nope"), 20), 20),
            Err(StoreError::InvalidInvite)
        ));
        s.create_invite(
            &Invite {
                code: "one".into(),
                uses_left: 1,
                ..inv.clone()
            },
            5,
        )
        .unwrap();
        assert!(matches!(
            s.add_user("\u{430}lice", "h", public(Some("one"), 20), 20),
            Err(StoreError::NameConfusable(n)) if n == "alice"
        ));
        let one = s.invites(20).unwrap().into_iter().find(|i| i.code == "one");
        assert_eq!(
            one.map(|i| i.uses_left),
            Some(1),
            "not consumed by a refusal"
        );
        // Creating an invite drops the expired ones.
        s.create_invite(
            &Invite {
                code: "new".into(),
                ..inv.clone()
            },
            40,
        )
        .unwrap();
        let codes: Vec<String> = s.invites(0).unwrap().into_iter().map(|i| i.code).collect();
        assert!(!codes.contains(&"old".to_string()), "{codes:?}");
        assert!(s.delete_invite("one").unwrap());
        assert!(!s.delete_invite("one").unwrap());
        // Admins bypass registration, not the name rules.
        assert!(matches!(
            s.add_user("ALICE", "h", Admission::ByAdmin { admin: false }, 1),
            Err(StoreError::NameTaken)
        ));
        assert!(matches!(
            s.add_user("a1ice", "h", Admission::ByAdmin { admin: true }, 1),
            Err(StoreError::NameConfusable(_))
        ));
        assert!(matches!(
            s.create_user("aIice", "h", AdminGrant::No, false, 1),
            Err(StoreError::NameConfusable(_))
        ));
        let frank = s
            .add_user("frank", "h", Admission::ByAdmin { admin: true }, 1)
            .unwrap();
        assert!(frank.admin);
    }

    /// A database whose accounts predate the skeleton index gets it built on open, so an old
    /// account is protected too; one built with another skeleton version is rebuilt.
    #[test]
    fn the_skeleton_index_is_built_for_existing_accounts() {
        let dir = tmp();
        {
            let s = Store::open(dir.path()).unwrap();
            s.create_user("alice", "h", AdminGrant::No, false, 1)
                .unwrap();
            // Forget the index, as a database from before it would have none.
            let tx = s.write().unwrap();
            tx.open_table(USER_SKELETONS)
                .unwrap()
                .retain(|_, _| false)
                .unwrap();
            tx.open_table(SETTINGS)
                .unwrap()
                .remove(SETTING_SKELETON_VERSION)
                .unwrap();
            tx.commit().unwrap();
            assert!(
                s.add_user("\u{430}lice", "h", Admission::ByAdmin { admin: false }, 1)
                    .is_ok(),
                "without the index the look-alike got through"
            );
        }
        let s = Store::open(dir.path()).unwrap();
        assert!(matches!(
            s.add_user("al\u{456}ce", "h", Admission::ByAdmin { admin: false }, 1),
            Err(StoreError::NameConfusable(_))
        ));
    }

    #[test]
    fn profiles_survive_reopen_and_plain_accounts_stay_v1() {
        let dir = tmp();
        let id;
        {
            let s = Store::open(dir.path()).unwrap();
            let u = s
                .create_user("alice", "h", AdminGrant::No, false, 1)
                .unwrap();
            id = u.id;
            let raw = |s: &Store| {
                let tx = s.db.begin_read().unwrap();
                let v = tx.open_table(USERS).unwrap().get(id.0).unwrap().unwrap();
                v.value().to_vec()
            };
            assert_eq!(raw(&s)[0], 1, "no profile: record v1");
            let u = s
                .update_profile(id, Some(Some("Alice A.".into())), Some(8))
                .unwrap();
            assert_eq!((u.shown_name(), u.color_name()), ("Alice A.", "blue"));
            assert_eq!(raw(&s)[0], 2);
        }
        let s = Store::open(dir.path()).unwrap();
        let u = s.user(id).unwrap().unwrap();
        assert_eq!(u.display_name.as_deref(), Some("Alice A."));
        assert_eq!(u.color, 8);
        let u = s.update_profile(id, Some(None), None).unwrap();
        assert_eq!((u.display_name, u.color), (None, 8));
    }

    #[test]
    fn password_changes_keep_one_session_and_the_last_admin_stays() {
        let dir = tmp();
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .create_user("a", "h", AdminGrant::Yes, false, 1)
            .unwrap()
            .id;
        let b = s
            .create_user("b", "h", AdminGrant::No, false, 1)
            .unwrap()
            .id;
        let session = |u| Session {
            user: u,
            kind: crate::model::SessionKind::Cookie,
            created_ms: 1,
            expires_ms: 0,
            label: String::new(),
        };
        for h in [[1u8; 32], [2; 32], [3; 32]] {
            s.create_session(&h, &session(a)).unwrap();
        }
        s.change_password(a, "h2", Some(&[2; 32])).unwrap();
        let left: Vec<_> = s.sessions_of(a).unwrap().into_iter().map(|x| x.0).collect();
        assert_eq!(left, vec![[2u8; 32]]);
        s.create_session(&[4; 32], &session(a)).unwrap();
        assert_eq!(s.revoke_other_sessions(a, &[4; 32]).unwrap(), 1);
        s.rotate_session(&[4; 32], &[5; 32], &session(a)).unwrap();
        assert!(s.session_user(&[4; 32], 2).unwrap().is_none());
        assert!(s.session_user(&[5; 32], 2).unwrap().is_some());

        assert!(matches!(
            s.set_admin_checked(a, false),
            Err(StoreError::LastAdmin)
        ));
        assert!(matches!(
            s.set_disabled_checked(a, true),
            Err(StoreError::LastAdmin)
        ));
        assert!(s.set_admin_checked(b, true).unwrap().admin);
        assert!(!s.set_admin_checked(a, false).unwrap().admin);
        assert!(s.set_disabled_checked(a, true).unwrap().disabled);
        assert!(matches!(
            s.set_admin_checked(b, false),
            Err(StoreError::LastAdmin)
        ));
        assert!(s.sessions_of(a).unwrap().is_empty(), "disabling revokes");

        s.record_last_seen(&[(a, 50), (b, 40)]).unwrap();
        s.record_last_seen(&[(a, 10)]).unwrap();
        let seen = s.last_seen().unwrap();
        assert_eq!((seen[&a], seen[&b]), (50, 40), "never moves back");
    }
}
