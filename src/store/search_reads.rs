//! Reads for the message search (`crate::search`), which keeps a derived full-text index of the
//! messages stored here: every conversation's last seq (how far the index must reach), pages of
//! text messages to index, the conversations a user may search now, and the messages that
//! search hits point to (read again from here, with membership checked in the same snapshot,
//! so a result never shows what the index alone says).

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use super::chat::decode_conv;
use super::schema::*;
use super::{decode_user, messages, Result, Store};
use crate::model::{
    ConversationId, ConversationKind, MessageKind, MessageRef, StoredMessage, UserId,
};

/// A text message as the index needs it.
#[derive(Clone, Debug)]
pub struct IndexMessage {
    pub seq: u64,
    pub sender: UserId,
    pub time_ms: u64,
    pub text: String,
}

/// One of a user's conversations, with the names `in:` matches.
#[derive(Clone, Debug)]
pub struct ScopeConversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    /// The group's title (empty for a direct conversation).
    pub title: String,
    /// Direct conversations: the other member's account name and display name.
    pub peer_names: Vec<String>,
}

impl Store {
    /// `(conversation, last_seq)` of every conversation (one with a damaged record is left
    /// out; it was reported).
    pub fn conversation_heads(&self) -> Result<Vec<(ConversationId, u64)>> {
        let tx = self.db.begin_read()?;
        let convs = tx.open_table(CONVERSATIONS)?;
        let mut out = Vec::new();
        for row in convs.iter()? {
            let (k, v) = row?;
            if let Ok(rec) = decode_conv(k.value(), v.value()) {
                out.push((ConversationId(k.value()), rec.last_seq));
            }
        }
        Ok(out)
    }

    /// The text messages of `conv` after seq `after`, oldest first, until `limit` seqs are
    /// covered, and the last seq covered (messages that cannot be read, and other kinds of
    /// record, are covered but not returned). Covers nothing past the conversation's last seq.
    pub fn index_page(
        &self,
        conv: ConversationId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<IndexMessage>, u64)> {
        let tx = self.db.begin_read()?;
        let last = match tx.open_table(CONVERSATIONS)?.get(conv.0)? {
            Some(raw) => match decode_conv(conv.0, raw.value()) {
                Ok(rec) => rec.last_seq,
                Err(_) => return Ok((Vec::new(), after)),
            },
            None => return Ok((Vec::new(), after)),
        };
        let mut out = Vec::new();
        let mut covered = after;
        if after < last && limit > 0 {
            let messages = tx.open_table(MESSAGES)?;
            let users = tx.open_table(USERS)?;
            let hi = last.min(after.saturating_add(limit as u64));
            messages::walk(&messages, &users, conv.0, after + 1, hi, true, |m| {
                covered = m.seq;
                if searchable(m) {
                    out.push(IndexMessage {
                        seq: m.seq,
                        sender: m.sender,
                        time_ms: m.time_ms,
                        text: m.text.to_string(),
                    });
                }
                true
            });
        }
        Ok((out, covered))
    }

    /// The conversations `user` is a member of now.
    pub fn search_scope(&self, user: UserId) -> Result<Vec<ScopeConversation>> {
        let tx = self.db.begin_read()?;
        let positions = tx.open_table(READ_SEQS)?;
        let members = tx.open_table(MEMBERS)?;
        let convs = tx.open_table(CONVERSATIONS)?;
        let users = tx.open_table(USERS)?;
        let mut out = Vec::new();
        for row in positions.range((user.0, 0)..=(user.0, u64::MAX))? {
            let (k, _) = row?;
            let id = k.value().1;
            if members.get((id, user.0))?.is_none() {
                continue;
            }
            let Some(raw) = convs.get(id)? else { continue };
            let Ok(rec) = decode_conv(id, raw.value()) else {
                continue;
            };
            let mut peer_names = Vec::new();
            if rec.kind == ConversationKind::Direct {
                for m in members.range((id, 0)..=(id, u64::MAX))? {
                    let other = m?.0.value().1;
                    if other == user.0 {
                        continue;
                    }
                    if let Some(u) = users.get(other)? {
                        if let Ok(u) = decode_user(other, u.value()) {
                            peer_names.push(u.name);
                            peer_names.extend(u.display_name);
                        }
                    }
                }
            }
            out.push(ScopeConversation {
                id: ConversationId(id),
                kind: rec.kind,
                title: rec.title,
                peer_names,
            });
        }
        Ok(out)
    }

    /// The messages at `at` (conversation, seq) as `user` may read them now: `None` where the
    /// user is not a member of the conversation, or the message is missing or unreadable.
    pub fn messages_at(
        &self,
        user: UserId,
        at: &[(u64, u64)],
    ) -> Result<Vec<Option<StoredMessage>>> {
        let tx = self.db.begin_read()?;
        let members = tx.open_table(MEMBERS)?;
        let table = tx.open_table(MESSAGES)?;
        let users = tx.open_table(USERS)?;
        let mut names = messages::Names::default();
        let mut member: HashMap<u64, bool> = HashMap::new();
        let mut out = Vec::with_capacity(at.len());
        for &(conv, seq) in at {
            let ok = match member.get(&conv) {
                Some(ok) => *ok,
                None => {
                    let ok = members.get((conv, user.0))?.is_some();
                    member.insert(conv, ok);
                    ok
                }
            };
            let found = if ok {
                table.get((conv, seq))?.and_then(|raw| {
                    let m = messages::view(&mut names, &users, conv, seq, raw.value());
                    searchable(&m).then(|| m.to_stored())
                })
            } else {
                None
            };
            out.push(found);
        }
        Ok(out)
    }
}

/// Only live text messages are searchable: not events or system lines (issue 23), not a
/// deleted message, not one the store cannot read.
fn searchable(m: &MessageRef<'_>) -> bool {
    !m.unreadable && m.extra.kind == MessageKind::Text && !m.extra.deleted
}
