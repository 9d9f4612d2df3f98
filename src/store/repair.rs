//! `chatd repair`: writes a new database from everything readable in a damaged one, never in
//! place. The old file is read through `overlay` (never written) and kept as
//! `chatd.redb.before-repair-<ms>`; the new one is written beside it, checked, and only then
//! renamed to `chatd.redb`. What could not be saved is listed for the operator.
//!
//! Each table is read forward until redb fails (an error, or a panic on a damaged page,
//! caught), then backward from its end to the same place, so one damaged page loses only the
//! rows on it. Records whose seal fails are dropped; the primary data is kept and every index
//! is rebuilt from it: `user_names` from `users`, `user_sessions` from `sessions`, `read_seqs`
//! from `members` (keeping the old read seq where it is readable), member counts, and
//! `client_ids` from the messages. A conversation whose record is lost is rebuilt from its
//! members, `direct_pairs` and its messages (a group's title is lost). Every seq of every
//! conversation gets a record: the message, or a marker of a lost message (kind 2), which
//! clients get as `unreadable` (so cursors and seqs stay as they were acknowledged).
//! Settings, invites and last-seen times are copied (the look-alike name index is rebuilt
//! from the accounts on the next open). The database's meta values (epoch, last logged batch) are kept, so the log still
//! continues it: the next start replays what the log holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle, Value,
};

use super::chat::{self, ConvRecord};
use super::codec::{self, key1};
use super::schema::*;
use super::{
    check, damage, decode_session_record, decode_user_record, messages, Result, StoreError, DB_FILE,
};
use crate::model::{name_key, ConversationId, ConversationKind, StoredMessage, UserId};

/// What `repair` did.
#[derive(Debug, Default)]
pub struct Repaired {
    /// Where the damaged database was kept.
    pub kept: PathBuf,
    /// What could not be saved, one line each.
    pub lost: Vec<String>,
    /// What was rebuilt from other data.
    pub rebuilt: Vec<String>,
    pub users: u64,
    pub conversations: u64,
    pub messages: u64,
    /// Of `messages`, markers of lost ones.
    pub markers: u64,
}

/// Rows of a table read forward, then backward up to the first row that failed, keyed.
fn salvage<K: Key + 'static, V: Value + 'static, KO: Ord, VO>(
    tx: &ReadTransaction,
    def: TableDefinition<K, V>,
    lost: &mut Vec<String>,
    mut f: impl FnMut(K::SelfType<'_>, V::SelfType<'_>) -> (KO, VO),
) -> BTreeMap<KO, VO> {
    let mut out = BTreeMap::new();
    let mut pass = |rev: bool, out: &mut BTreeMap<KO, VO>| {
        damage::catch(|| -> Result<()> {
            let t = tx.open_table(def)?;
            let rows = t.iter()?;
            let mut rows: Box<dyn Iterator<Item = _>> = if rev {
                Box::new(rows.rev())
            } else {
                Box::new(rows)
            };
            for row in rows.by_ref() {
                let (k, v) = row?;
                let (ko, vo) = f(k.value(), v.value());
                out.insert(ko, vo);
            }
            Ok(())
        })
        .map_err(StoreError::Corrupt)
        .and_then(|r| r)
    };
    if let Err(e) = pass(false, &mut out) {
        let before = out.len();
        let _ = pass(true, &mut out);
        lost.push(format!(
            "table {}: the rows on the pages redb could not read ({e}); {} rows read before them, {} after",
            def.name(),
            before,
            out.len() - before
        ));
    }
    out
}

/// Repairs the database of `dir` (see the module doc). The server must be stopped.
pub fn repair(dir: &Path, now_ms: u64) -> Result<Repaired> {
    let src = dir.join(DB_FILE);
    match std::fs::metadata(&src) {
        Ok(m) if m.len() > 0 => {}
        _ => {
            return Err(StoreError::Refused(format!(
                "{} is missing or empty: there is nothing to repair; restore a backup with `chatd restore`",
                src.display()
            )))
        }
    }
    let (db, older) = match check::open_overlay(&src) {
        Ok(x) => x,
        Err(StoreError::Locked(p)) => return Err(StoreError::Locked(p)),
        Err(e) => {
            return Err(StoreError::Refused(format!(
                "{} cannot be read at all ({e}); nothing can be saved from it: restore a backup with `chatd restore`",
                src.display()
            )))
        }
    };
    damage::set_quiet(true);
    let staging = dir.join(format!("{DB_FILE}.repairing"));
    let _ = std::fs::remove_file(&staging);
    let result = db
        .begin_read()
        .map_err(StoreError::from)
        .and_then(|tx| rebuild(&tx, &staging));
    damage::set_quiet(false);
    drop(db);
    let mut done = match result {
        Ok(mut r) => {
            if let Some(why) = older {
                r.lost.insert(0, format!(
                    "the database's newest commit could not be opened ({why}): repaired from the commit before it; what the newest one added is lost unless the log still holds it (the next start replays it, or says what is missing)"
                ));
            }
            r
        }
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
    };
    // The new file must pass the check before it replaces anything.
    let report = check::check_file(&staging)?;
    if !report.damage.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "the repaired database {} does not pass `chatd check` ({}); the damaged one is unchanged",
            staging.display(),
            report.damage.join("; ")
        )));
    }
    let kept = dir.join(format!("{DB_FILE}.before-repair-{now_ms}"));
    std::fs::rename(&src, &kept).map_err(StoreError::Io)?;
    std::fs::rename(&staging, &src).map_err(StoreError::Io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Io)?;
    super::same_owner_as_dir(&src, dir);
    done.kept = kept;
    Ok(done)
}

/// Reads everything readable from `tx` and writes the new database at `dest`.
fn rebuild(tx: &ReadTransaction, dest: &Path) -> Result<Repaired> {
    let mut r = Repaired::default();
    let lost = &mut r.lost;

    let meta = salvage(tx, META, lost, |k, v| (k.to_string(), v));
    let users = salvage(tx, USERS, lost, |k, v| {
        let ok = codec::unseal(&key1(k), v)
            .and_then(|rec| decode_user_record(k, rec))
            .is_ok();
        (k, ok.then(|| v.to_vec()))
    });
    let mut names = BTreeMap::new();
    let mut good_users = BTreeMap::new();
    for (id, raw) in users {
        match raw {
            Some(raw) => {
                let rec = codec::unseal(&key1(id), &raw).map_err(|e| StoreError::Corrupt(e.0.into()))?;
                if let Ok(u) = decode_user_record(id, rec) {
                    names.insert(name_key(&u.name), id);
                }
                good_users.insert(id, raw);
            }
            None => lost.push(format!(
                "account {id}: its record is damaged (the account is gone; its messages keep its id)"
            )),
        }
    }
    let sessions = salvage(tx, SESSIONS, lost, |k, v| {
        let s = codec::unseal(k, v).and_then(decode_session_record).ok();
        (*k, s.map(|s| (s.user.0, v.to_vec())))
    });
    let mut dropped_sessions = 0;
    let sessions: BTreeMap<[u8; 32], (u64, Vec<u8>)> = sessions
        .into_iter()
        .filter_map(|(k, s)| match s {
            Some((user, raw)) if good_users.contains_key(&user) => Some((k, (user, raw))),
            _ => {
                dropped_sessions += 1;
                None
            }
        })
        .collect();
    if dropped_sessions > 0 {
        lost.push(format!(
            "{dropped_sessions} login sessions or tokens (damaged, or of a lost account): those devices log in again"
        ));
    }
    let convs = salvage(tx, CONVERSATIONS, lost, |k, v| {
        let c = codec::unseal(&key1(k), v)
            .and_then(chat::decode_conv_record)
            .ok();
        (k, c)
    });
    let members = salvage(tx, MEMBERS, lost, |k, v| (k, v));
    let reads = salvage(tx, READ_SEQS, lost, |k, v| (k, v));
    let pairs = salvage(tx, DIRECT_PAIRS, lost, |k, v| (k, v));
    // The tables added without a schema change (`accounts::init_tables`); a database from
    // before them has none, which is not damage. The look-alike name index is not copied:
    // without its version setting, the next open rebuilds it from the accounts kept here.
    let has = |name: &str| {
        tx.list_tables()
            .map(|mut t| t.any(|h| h.name() == name))
            .unwrap_or(false)
    };
    let settings = if has(SETTINGS.name()) {
        salvage(tx, SETTINGS, lost, |k, v| (k.to_string(), v))
    } else {
        BTreeMap::new()
    };
    let invites = if has(INVITES.name()) {
        salvage(tx, INVITES, lost, |k, v| {
            let ok = super::accounts::decode_invite(k, v).is_ok();
            (k.to_string(), ok.then(|| v.to_vec()))
        })
    } else {
        BTreeMap::new()
    };
    let last_seen = if has(LAST_SEEN.name()) {
        salvage(tx, LAST_SEEN, lost, |k, v| (k, v))
    } else {
        BTreeMap::new()
    };
    let mutes = if has(MUTES.name()) {
        salvage(tx, MUTES, lost, |k, v| (k, v))
    } else {
        BTreeMap::new()
    };

    // Conversations: the intact records, and every id that members or pairs name.
    let mut member_lists: BTreeMap<u64, Vec<(u64, u8)>> = BTreeMap::new();
    let mut dropped_members = 0;
    for ((conv, user), role) in &members {
        if good_users.contains_key(user) {
            member_lists.entry(*conv).or_default().push((*user, *role));
        } else {
            dropped_members += 1;
        }
    }
    if dropped_members > 0 {
        r.rebuilt.push(format!(
            "{dropped_members} memberships of lost or unknown accounts were removed"
        ));
    }
    let direct_ids: BTreeSet<u64> = pairs.values().copied().collect();
    let mut ids: BTreeSet<u64> = convs.keys().copied().collect();
    ids.extend(member_lists.keys().copied());
    let messages_t = tx.open_table(MESSAGES)?;
    let users_t = tx.open_table(USERS)?;
    let mut records: BTreeMap<u64, ConvRecord> = BTreeMap::new();
    for id in &ids {
        let list = member_lists.get(id).cloned().unwrap_or_default();
        let rec = match convs.get(id).cloned().flatten() {
            Some(mut c) => {
                c.member_count = list.len() as u64;
                c
            }
            None => {
                if list.is_empty() {
                    lost.push(format!(
                        "conversation {id}: its record is damaged and it has no members left; its messages are gone"
                    ));
                    continue;
                }
                let (last_seq, first_ms, last_ms) = readable_range(&messages_t, *id);
                let direct = direct_ids.contains(id);
                let owner = list
                    .iter()
                    .find(|(_, role)| *role == chat::ROLE_OWNER)
                    .or_else(|| list.first())
                    .map_or(0, |(u, _)| *u);
                r.rebuilt.push(format!(
                    "conversation {id}: its record was damaged; rebuilt from its {} members and messages (up to seq {last_seq}){}",
                    list.len(),
                    if direct { "" } else { "; the group's title is lost" }
                ));
                ConvRecord {
                    kind: if direct {
                        ConversationKind::Direct
                    } else {
                        ConversationKind::Group
                    },
                    title: if direct {
                        String::new()
                    } else {
                        "(recovered group)".into()
                    },
                    owner,
                    created_ms: first_ms,
                    last_seq,
                    last_ms,
                    member_count: list.len() as u64,
                    // The preview may then show an event's empty line; the seqs stay right.
                    last_text_seq: last_seq,
                }
            }
        };
        records.insert(*id, rec);
    }

    let dest_db = Database::create(dest)?;
    let commit = |f: &dyn Fn(&redb::WriteTransaction) -> Result<()>, last: bool| -> Result<()> {
        let mut w = dest_db.begin_write()?;
        w.set_durability(if last {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        f(&w)?;
        w.commit()?;
        Ok(())
    };
    let max_user = good_users.keys().next_back().copied().unwrap_or(0);
    let max_conv = records.keys().next_back().copied().unwrap_or(0);
    commit(
        &|w| {
            let mut t = w.open_table(META)?;
            for (k, v) in &meta {
                let v = match k.as_str() {
                    META_NEXT_USER => (*v).max(max_user + 1),
                    META_NEXT_CONVERSATION => (*v).max(max_conv + 1),
                    _ => *v,
                };
                t.insert(k.as_str(), v)?;
            }
            t.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            let mut u = w.open_table(USERS)?;
            for (id, raw) in &good_users {
                u.insert(*id, raw.as_slice())?;
            }
            let mut n = w.open_table(USER_NAMES)?;
            for (name, id) in &names {
                n.insert(name.as_str(), *id)?;
            }
            let mut s = w.open_table(SESSIONS)?;
            let mut us = w.open_table(USER_SESSIONS)?;
            for (hash, (user, raw)) in &sessions {
                s.insert(hash, raw.as_slice())?;
                us.insert((*user, hash), ())?;
            }
            let mut c = w.open_table(CONVERSATIONS)?;
            let mut m = w.open_table(MEMBERS)?;
            let mut rs = w.open_table(READ_SEQS)?;
            for (id, rec) in &records {
                c.insert(*id, chat::encode_conv(*id, rec).as_slice())?;
                for (user, role) in member_lists.get(id).map(Vec::as_slice).unwrap_or(&[]) {
                    m.insert((*id, *user), *role)?;
                    let seq = reads.get(&(*user, *id)).copied().unwrap_or(0);
                    rs.insert((*user, *id), seq.min(rec.last_seq))?;
                }
            }
            let mut p = w.open_table(DIRECT_PAIRS)?;
            for ((a, b), conv) in &pairs {
                let members = member_lists.get(conv);
                let both = members.is_some_and(|l| {
                    l.iter().any(|(u, _)| u == a) && l.iter().any(|(u, _)| u == b)
                });
                if records
                    .get(conv)
                    .is_some_and(|c| c.kind == ConversationKind::Direct)
                    && both
                {
                    p.insert((*a, *b), *conv)?;
                }
            }
            let mut t = w.open_table(SETTINGS)?;
            for (k, v) in settings
                .iter()
                .filter(|(k, _)| k.as_str() != SETTING_SKELETON_VERSION)
            {
                t.insert(k.as_str(), *v)?;
            }
            let mut t = w.open_table(INVITES)?;
            for (code, raw) in invites.iter().filter_map(|(c, r)| Some((c, r.as_ref()?))) {
                t.insert(code.as_str(), raw.as_slice())?;
            }
            let mut t = w.open_table(LAST_SEEN)?;
            for (user, ms) in last_seen.iter().filter(|(u, _)| good_users.contains_key(u)) {
                t.insert(*user, *ms)?;
            }
            let mut t = w.open_table(MUTES)?;
            for ((user, conv), ()) in &mutes {
                let member = member_lists
                    .get(conv)
                    .is_some_and(|l| l.iter().any(|(u, _)| u == user));
                if member {
                    t.insert((*user, *conv), ())?;
                }
            }
            // Every table exists, as `init_schema` would make them.
            w.open_table(MESSAGES)?;
            w.open_table(EVENT_SEQS)?;
            w.open_table(MENTIONS)?;
            w.open_table(CLIENT_IDS)?;
            Ok(())
        },
        false,
    )?;

    // Messages, a conversation at a time, in commits of about 50,000.
    let mut pending: Vec<StoredMessage> = Vec::new();
    let flush = |pending: &mut Vec<StoredMessage>| -> Result<()> {
        commit(
            &|w| {
                let mut t = w.open_table(MESSAGES)?;
                let mut ids = w.open_table(CLIENT_IDS)?;
                // The event and mention indexes are rebuilt from the messages themselves.
                let mut events = w.open_table(EVENT_SEQS)?;
                let mut mentions = w.open_table(MENTIONS)?;
                for m in pending.iter() {
                    let (c, seq) = (m.conversation.0, m.seq);
                    if m.extra.kind != crate::model::MessageKind::Text {
                        events.insert((c, seq), ())?;
                    }
                    for u in &m.extra.mentions {
                        let member = member_lists
                            .get(&c)
                            .is_some_and(|l| l.iter().any(|(x, _)| x == u));
                        if member && m.extra.kind == crate::model::MessageKind::Text {
                            mentions.insert((*u, c, seq), ())?;
                        }
                    }
                    t.insert((c, seq), messages::encode(m).as_slice())?;
                    if !m.unreadable && !m.client_id.is_empty() {
                        ids.insert(
                            (m.sender.0, client_id_hash(&m.client_id)),
                            (m.conversation.0, m.seq),
                        )?;
                    }
                }
                Ok(())
            },
            false,
        )?;
        pending.clear();
        Ok(())
    };
    for (id, rec) in &records {
        let mut lost_seqs: Vec<u64> = Vec::new();
        if rec.last_seq > 0 {
            messages::walk(&messages_t, &users_t, *id, 1, rec.last_seq, true, |m| {
                let mut s = m.to_stored();
                if s.unreadable {
                    lost_seqs.push(s.seq);
                    s.sender = UserId(0);
                }
                s.conversation = ConversationId(*id);
                pending.push(s);
                true
            });
        }
        r.messages += rec.last_seq;
        r.markers += lost_seqs.len() as u64;
        if !lost_seqs.is_empty() {
            r.lost.push(format!(
                "conversation {id}: {} messages could not be read ({}); they are markers now",
                lost_seqs.len(),
                ranges(&lost_seqs)
            ));
        }
        if pending.len() >= 50_000 {
            flush(&mut pending)?;
        }
    }
    flush(&mut pending)?;
    commit(&|_| Ok(()), true)?;
    drop(dest_db);
    r.users = good_users.len() as u64;
    r.conversations = records.len() as u64;
    // Messages of conversations that are gone.
    let mut orphans: HashMap<u64, u64> = HashMap::new();
    let _ = damage::catch(|| -> Result<()> {
        for row in messages_t.iter()? {
            let (k, _) = row?;
            let (conv, _) = k.value();
            if !records.contains_key(&conv) {
                *orphans.entry(conv).or_default() += 1;
            }
        }
        Ok(())
    });
    for (conv, n) in orphans {
        r.lost.push(format!(
            "{n} messages of conversation {conv}, which has no readable record or members"
        ));
    }
    Ok(r)
}

/// (highest seq with an intact record, its earliest and latest time) among a conversation's
/// messages (used when its record is lost).
fn readable_range(
    messages: &redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
    conv: u64,
) -> (u64, u64, u64) {
    let mut out = (0, u64::MAX, 0);
    let _ = damage::catch(|| -> Result<()> {
        for row in messages.range((conv, 1)..=(conv, u64::MAX))? {
            let (k, v) = row?;
            let seq = k.value().1;
            if let Ok(f) = messages::decode(conv, seq, v.value()) {
                out.0 = out.0.max(seq);
                out.1 = out.1.min(f.time_ms);
                out.2 = out.2.max(f.time_ms);
            }
        }
        Ok(())
    });
    if out.1 == u64::MAX {
        out.1 = 0;
    }
    out
}

/// "3, 7 to 9, 12".
fn ranges(seqs: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{} to {}", seqs[i], seqs[j])
        });
        i = j + 1;
        if parts.len() == 30 && i < seqs.len() {
            parts.push(format!("and {} more", seqs.len() - i));
            break;
        }
    }
    parts.join(", ")
}
