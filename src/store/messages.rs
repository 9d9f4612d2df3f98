//! Message records (table `messages`): their encoding, and reading them so that damage never
//! stops a reader.
//!
//! Record v4 (schema 5, issue 23) is v3 followed by the message's state and its event data:
//! flags (1 = edited, 2 = deleted, 4 = a reaction event that added), target seq (0 = none),
//! mentions (count, user ids), reactions (count, then each: emoji, count, user ids), a
//! reaction event's emoji ("" = none), and the system line (action 0 = none, else 1 created,
//! 2 added, 3 removed, 4 left, 5 renamed, then users (count, ids), names (count, strings) and
//! the title ("" = none)); all counts and numbers varints, strings varint length + UTF-8.
//! Kinds: 1 text, 2 lost (a repair's marker), 3 edit, 4 delete, 5 reaction, 6 system. An edit
//! event stores no text: it is served with its target's current text (`chat`), so a deleted or
//! re-edited message's old text is nowhere. A deletion rewrites the target with no text.
//!
//! Record v3 (schema 5 before issue 23's events) is v2 followed by `reply_to` (varint; 0 = not
//! a reply). v2 and v3 records are read as they are, as text messages: the upgrade to 5
//! rewrites nothing.
//!
//! Record v2 (schema 4), sealed with the key (conversation, seq) (`codec::seal`): version 2,
//! sender id (varint), server time ms (varint), kind (1 = text, 2 = lost: a marker `chatd
//! repair` writes where a message could not be read), client_id and text (varint length +
//! UTF-8). The sender's name is not stored: names never change, and it is looked up in `users`
//! when a message is read (schema ≤ 3 copied it into every record).
//!
//! `walk` visits every seq of a range in order and yields, for each, the message or a marker
//! (`MessageRef::unreadable`): for a record whose checksum fails or that does not decode, for a
//! seq with no record (a damaged key moves a record elsewhere), and for seqs that redb cannot
//! read (an error, or a panic inside redb on a damaged page: caught, and the walk goes on after
//! that seq). Every marker is reported (`damage`). So a catch-up or `history` always advances,
//! seq by seq, to the conversation's last seq, and says what it could not read.

use std::collections::HashMap;

use redb::{ReadOnlyTable, ReadableTable};

use super::codec::{self, Dec, DecodeError, Enc};
use super::{damage, decode_user};
use crate::model::{
    ConversationId, MessageExtra, MessageKind, MessageRef, Reaction, StoredMessage, SystemAction,
    SystemEvent, UserId,
};

/// Record kinds.
pub const KIND_TEXT: u8 = 1;
/// Written by `chatd repair` at the seq of a message it could not read.
pub const KIND_LOST: u8 = 2;
pub const KIND_EDIT: u8 = 3;
pub const KIND_DELETE: u8 = 4;
pub const KIND_REACTION: u8 = 5;
pub const KIND_SYSTEM: u8 = 6;

const FLAG_EDITED: u8 = 1;
const FLAG_DELETED: u8 = 2;
const FLAG_ADDED: u8 = 4;

fn kind_code(k: MessageKind) -> u8 {
    match k {
        MessageKind::Text => KIND_TEXT,
        MessageKind::Edit => KIND_EDIT,
        MessageKind::Delete => KIND_DELETE,
        MessageKind::Reaction => KIND_REACTION,
        MessageKind::System => KIND_SYSTEM,
    }
}

fn action_code(a: SystemAction) -> u8 {
    match a {
        SystemAction::Created => 1,
        SystemAction::Added => 2,
        SystemAction::Removed => 3,
        SystemAction::Left => 4,
        SystemAction::Renamed => 5,
    }
}

fn ids(e: Enc, v: &[u64]) -> Enc {
    let mut e = e.var(v.len() as u64);
    for id in v {
        e = e.var(*id);
    }
    e
}

fn decode_ids(d: &mut Dec<'_>) -> Result<Vec<u64>, DecodeError> {
    let n = d.var()?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(d.var()?);
    }
    Ok(v)
}

/// The sealed record of a message.
pub fn encode(m: &StoredMessage) -> Vec<u8> {
    let x = &m.extra;
    let kind = if m.unreadable {
        KIND_LOST
    } else {
        kind_code(x.kind)
    };
    // An edit event's text is its target's (served from there), never a copy.
    let text = if x.kind == MessageKind::Edit {
        ""
    } else {
        &m.text
    };
    let flags = if x.edited { FLAG_EDITED } else { 0 }
        | if x.deleted { FLAG_DELETED } else { 0 }
        | if x.added { FLAG_ADDED } else { 0 };
    let mut e = Enc::new(4)
        .var(m.sender.0)
        .var(m.time_ms)
        .u8(kind)
        .vstr(&m.client_id)
        .vstr(text)
        .var(m.reply_to.unwrap_or(0))
        .u8(flags)
        .var(x.target.unwrap_or(0));
    e = ids(
        e,
        if x.kind == MessageKind::Edit {
            &[]
        } else {
            &x.mentions
        },
    );
    e = e.var(x.reactions.len() as u64);
    for r in &x.reactions {
        e = ids(e.vstr(&r.emoji), &r.users);
    }
    e = e.vstr(x.emoji.as_deref().unwrap_or(""));
    match &x.system {
        None => e = e.u8(0),
        Some(sys) => {
            e = ids(e.u8(action_code(sys.action)), &sys.users);
            e = e.var(sys.names.len() as u64);
            for n in &sys.names {
                e = e.vstr(n);
            }
            e = e.vstr(sys.title.as_deref().unwrap_or(""));
        }
    }
    codec::seal(&codec::key2(m.conversation.0, m.seq), e.0)
}

/// A message record's fields, borrowed from the page (the state beyond the text owned).
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    pub sender: u64,
    pub time_ms: u64,
    pub kind: u8,
    pub client_id: &'a str,
    pub text: &'a str,
    pub reply_to: Option<u64>,
    pub extra: MessageExtra,
}

/// Checks and decodes a sealed record at (conv, seq).
pub fn decode(conv: u64, seq: u64, raw: &[u8]) -> Result<Fields<'_>, DecodeError> {
    let rec = codec::unseal(&codec::key2(conv, seq), raw)?;
    let (version, mut d) = Dec::versioned(rec, 2..=4, "message record version")?;
    let mut f = Fields {
        sender: d.var()?,
        time_ms: d.var()?,
        kind: d.u8()?,
        client_id: d.vstr()?,
        text: d.vstr()?,
        reply_to: None,
        extra: MessageExtra::default(),
    };
    if version >= 3 {
        f.reply_to = Some(d.var()?).filter(|&s| s != 0);
    }
    f.extra.kind = match f.kind {
        KIND_TEXT | KIND_LOST => MessageKind::Text,
        KIND_EDIT => MessageKind::Edit,
        KIND_DELETE => MessageKind::Delete,
        KIND_REACTION => MessageKind::Reaction,
        KIND_SYSTEM => MessageKind::System,
        _ => return Err(DecodeError("unknown message kind")),
    };
    if version >= 4 {
        let x = &mut f.extra;
        let flags = d.u8()?;
        x.edited = flags & FLAG_EDITED != 0;
        x.deleted = flags & FLAG_DELETED != 0;
        x.added = flags & FLAG_ADDED != 0;
        x.target = Some(d.var()?).filter(|&s| s != 0);
        x.mentions = decode_ids(&mut d)?;
        let n = d.var()?;
        for _ in 0..n {
            let emoji = d.vstr()?.to_string();
            let users = decode_ids(&mut d)?;
            x.reactions.push(Reaction { emoji, users });
        }
        x.emoji = Some(d.vstr()?)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        let action = match d.u8()? {
            0 => None,
            1 => Some(SystemAction::Created),
            2 => Some(SystemAction::Added),
            3 => Some(SystemAction::Removed),
            4 => Some(SystemAction::Left),
            5 => Some(SystemAction::Renamed),
            _ => return Err(DecodeError("unknown system action")),
        };
        if let Some(action) = action {
            let users = decode_ids(&mut d)?;
            let n = d.var()?;
            let mut names = Vec::new();
            for _ in 0..n {
                names.push(d.vstr()?.to_string());
            }
            let title = Some(d.vstr()?)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            x.system = Some(SystemEvent {
                action,
                users,
                names,
                title,
            });
        }
    } else if f.kind != KIND_TEXT && f.kind != KIND_LOST {
        return Err(DecodeError("event kinds need record v4"));
    }
    if !d.done() {
        return Err(DecodeError("bytes after the message record"));
    }
    Ok(f)
}

/// A schema ≤ 3 record (v1, not sealed): sender, sender name, time, kind, client_id, text.
pub fn decode_v1(raw: &[u8]) -> Result<(u64, u64, &str, &str), DecodeError> {
    let mut d = Dec::new(raw, 1, "message record version")?;
    let sender = d.u64()?;
    let _name = d.str()?;
    let time_ms = d.u64()?;
    let _kind = d.u8()?;
    Ok((sender, time_ms, d.str()?, d.str()?))
}

/// What a reader shows at a seq it could not read.
pub fn marker(conv: u64, seq: u64) -> MessageRef<'static> {
    MessageRef {
        conversation: ConversationId(conv),
        seq,
        sender: UserId(0),
        sender_name: "",
        time_ms: 0,
        client_id: "",
        text: "",
        reply_to: None,
        unreadable: true,
        attachments: &[],
        extra: MessageExtra::default(),
    }
}

/// Sender names of the messages read in one transaction.
#[derive(Default)]
pub struct Names {
    map: HashMap<u64, String>,
}

impl Names {
    /// The name of user `id` ("" if the account's record is gone or damaged).
    pub fn get(&mut self, users: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> &str {
        self.map.entry(id).or_insert_with(|| {
            damage::catch(|| match users.get(id) {
                Ok(Some(v)) => decode_user(id, v.value()).map(|u| u.name).ok(),
                Ok(None) => None,
                Err(e) => {
                    damage::report(&format!("users {id}"), &e.to_string());
                    None
                }
            })
            .ok()
            .flatten()
            .unwrap_or_default()
        })
    }
}

/// The message at (conv, seq) as a reader shows it: a marker if it is damaged.
pub fn view<'a>(
    names: &'a mut Names,
    users: &impl ReadableTable<u64, &'static [u8]>,
    conv: u64,
    seq: u64,
    raw: &'a [u8],
) -> MessageRef<'a> {
    match decode(conv, seq, raw) {
        Ok(f) if f.kind != KIND_LOST => MessageRef {
            conversation: ConversationId(conv),
            seq,
            sender: UserId(f.sender),
            sender_name: names.get(users, f.sender),
            time_ms: f.time_ms,
            client_id: f.client_id,
            text: f.text,
            reply_to: f.reply_to,
            unreadable: false,
            attachments: &[],
            extra: f.extra,
        },
        // Lost before (a repair's marker): not new damage.
        Ok(_) => marker(conv, seq),
        Err(e) => {
            damage::report(&format!("messages {conv}/{seq}"), e.0);
            marker(conv, seq)
        }
    }
}

/// Records for seqs `gap.0..=gap.1` found by reading on from a little before them, in the
/// order the rows lie (which is what redb's searches assume and a damaged key breaks).
fn rescan(
    messages: &ReadOnlyTable<(u64, u64), &'static [u8]>,
    conv: u64,
    gap: (u64, u64),
) -> HashMap<u64, Vec<u8>> {
    const BEFORE: u64 = 64;
    let want = gap.1 - gap.0 + 1;
    let mut found = HashMap::new();
    let _ = damage::catch(|| -> Result<(), redb::StorageError> {
        let from = gap.0.saturating_sub(BEFORE);
        let budget = usize::try_from(want.min(4096) + 2 * BEFORE + 256).unwrap_or(usize::MAX);
        for row in messages
            .range((conv, from)..=(conv, u64::MAX))?
            .take(budget)
        {
            let (k, v) = row?;
            let seq = k.value().1;
            if (gap.0..=gap.1).contains(&seq) {
                found.insert(seq, v.value().to_vec());
                if found.len() as u64 == want {
                    break;
                }
            }
        }
        Ok(())
    });
    found
}

/// Visits seqs `lo..=hi` of `conv` in order (`forward`, or from `hi` down), each once, as a
/// message or a marker (see the module doc), until `visit` returns false.
pub fn walk(
    messages: &ReadOnlyTable<(u64, u64), &'static [u8]>,
    users: &ReadOnlyTable<u64, &'static [u8]>,
    conv: u64,
    lo: u64,
    hi: u64,
    forward: bool,
    mut visit: impl FnMut(&MessageRef<'_>) -> bool,
) {
    let mut names = Names::default();
    // The next seq to visit, `None` once past the end.
    let mut cur = (lo <= hi).then_some(if forward { lo } else { hi });
    let step = |s: u64| -> Option<u64> {
        if forward {
            (s < hi).then(|| s + 1)
        } else {
            (s > lo).then(|| s - 1)
        }
    };
    let mut stopped = false;
    while let (Some(start), false) = (cur, stopped) {
        let read = damage::catch(|| -> Result<(), redb::StorageError> {
            let mut rows = if forward {
                messages.range((conv, start)..=(conv, hi))?
            } else {
                messages.range((conv, lo)..=(conv, start))?
            };
            while let Some(row) = if forward {
                rows.next()
            } else {
                rows.next_back()
            } {
                let (k, v) = row?;
                let seq = k.value().1;
                if cur.is_some_and(|c| c != seq) {
                    // The range skipped seqs: their records are missing, or a damaged key
                    // (no longer in order) misled redb's search past them. Look again.
                    let gap = if forward {
                        (cur.unwrap_or(seq), seq - 1)
                    } else {
                        (seq + 1, cur.unwrap_or(seq))
                    };
                    let found = rescan(messages, conv, gap);
                    while let Some(c) = cur.filter(|c| *c != seq) {
                        let m = match found.get(&c) {
                            Some(raw) => view(&mut names, users, conv, c, raw),
                            None => {
                                damage::report(
                                    &format!("messages {conv}/{c}"),
                                    "no record at this seq",
                                );
                                marker(conv, c)
                            }
                        };
                        cur = step(c);
                        if !visit(&m) {
                            stopped = true;
                            return Ok(());
                        }
                    }
                }
                if cur.is_none() {
                    return Ok(());
                }
                let m = view(&mut names, users, conv, seq, v.value());
                cur = step(seq);
                if !visit(&m) {
                    stopped = true;
                    return Ok(());
                }
                if cur.is_none() {
                    return Ok(());
                }
            }
            // The range ended first (a damaged key beyond `hi` ends a bounded range early, and
            // some records may lie after it): look again, the rest have no record.
            if let Some(c0) = cur {
                let gap = if forward { (c0, hi) } else { (lo, c0) };
                let found = rescan(messages, conv, gap);
                while let Some(c) = cur {
                    let m = match found.get(&c) {
                        Some(raw) => view(&mut names, users, conv, c, raw),
                        None => {
                            damage::report(
                                &format!("messages {conv}/{c}"),
                                "no record at this seq",
                            );
                            marker(conv, c)
                        }
                    };
                    cur = step(c);
                    if !visit(&m) {
                        stopped = true;
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        let failed = match read {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!("the database library failed: {panic}")),
        };
        if let (Some(why), Some(c)) = (failed, cur) {
            // Unreadable from `c` on: mark it and go on after it.
            damage::report(&format!("messages {conv}/{c}"), &why);
            cur = step(c);
            if !visit(&marker(conv, c)) {
                stopped = true;
            }
        }
    }
}
