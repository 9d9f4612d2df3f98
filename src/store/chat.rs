//! Conversations, members, messages and read positions: the batch API (`ChatBatch`, `Change`)
//! that applies many operations in one transaction — the message writer's logged batches
//! (`Store::apply_logged`) and durable `Store::chat_batch` — and the read queries (conversation
//! list, history, members, directory) that sessions run on the store reader threads (`readers`).
//!
//! Batch operations return `Result<Result<T, ChatError>, StoreError>`: the outer error is fatal to
//! the whole batch (nothing is committed), the inner one refuses just that operation (nothing of
//! it was written) while the rest of the batch goes on.

mod events;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::codec::{self, Dec, DecodeError, Enc};
use super::schema::*;
use super::{damage, decode_user, messages, Result, Store};
use crate::model::{
    ConversationId, ConversationKind, ConversationSummary, MemberInfo, MessageExtra, MessageKind,
    MessageRef, StoredMessage, SystemAction, SystemEvent, UserId,
};

/// Why one operation of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatError {
    /// No such conversation, or the user is not a member (deliberately indistinguishable).
    NotFound,
    /// A user id that does not exist (or is disabled).
    UserNotFound,
    /// Not allowed: only the owner may, or not for this kind of conversation.
    Forbidden(&'static str),
    /// A value is out of range.
    Invalid(&'static str),
    /// A member's request names a seq that is not a text message of the conversation (there
    /// is none, or it is an event): `not_found` with this message.
    Missing(&'static str),
}

/// Most different emoji on one message.
pub const MAX_REACTION_KINDS: usize = 64;

pub type Op<T> = Result<std::result::Result<T, ChatError>>;

/// Where a message goes.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Conversation(ConversationId),
    /// The direct conversation with this user, created if needed.
    User(UserId),
}

/// One mutation the message writer applies (requested by a session; logged in the WAL).
#[derive(Debug)]
pub enum Change {
    Send {
        target: Target,
        client_id: String,
        text: String,
        /// The seq of a message of the same conversation this one answers.
        reply_to: Option<u64>,
        /// File ids (`store::files`); each must be the sender's upload or already in the
        /// conversation, else the send is refused as `NotFound`.
        attachments: Vec<u128>,
        /// Mentioned users; those who are not members (or the sender) are dropped.
        mentions: Vec<UserId>,
    },
    /// The sender changes the text of their message `seq`.
    Edit {
        conversation: ConversationId,
        seq: u64,
        text: String,
        mentions: Vec<UserId>,
        /// Echoed in the ack only.
        client_id: Option<String>,
    },
    /// Deletes message `seq` (its sender; in a group also the owner or a server admin).
    Delete {
        conversation: ConversationId,
        seq: u64,
        client_id: Option<String>,
    },
    /// Toggles the actor's `emoji` reaction on message `seq`.
    React {
        conversation: ConversationId,
        seq: u64,
        emoji: String,
        client_id: Option<String>,
    },
    /// Mutes or unmutes the conversation for the actor (not a seq event).
    Mute {
        conversation: ConversationId,
        muted: bool,
    },
    /// The owner renames a group.
    RenameGroup {
        conversation: ConversationId,
        title: String,
        client_id: Option<String>,
    },
    Read {
        conversation: ConversationId,
        seq: u64,
    },
    CreateGroup {
        title: String,
        members: Vec<UserId>,
    },
    AddMembers {
        conversation: ConversationId,
        members: Vec<UserId>,
    },
    /// Removes `user`; `user == actor` means leaving.
    RemoveMember {
        conversation: ConversationId,
        user: UserId,
    },
}

impl Change {
    /// The `client_id` the request carried (a send's, or an event frame's optional one).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Change::Send { client_id, .. } => Some(client_id),
            Change::Edit { client_id, .. }
            | Change::Delete { client_id, .. }
            | Change::React { client_id, .. }
            | Change::RenameGroup { client_id, .. } => client_id.as_deref(),
            Change::Read { .. }
            | Change::CreateGroup { .. }
            | Change::AddMembers { .. }
            | Change::RemoveMember { .. }
            | Change::Mute { .. } => None,
        }
    }
}

/// What one applied `Change` did.
#[derive(Clone, Debug)]
pub enum Applied {
    Sent(SendOutcome),
    /// The new read position and the members, if it moved.
    Read(Option<(u64, Arc<[UserId]>)>),
    Membership(MembershipOutcome),
    /// An event appended to a conversation's log (edit, delete, reaction): acked and fanned
    /// out like a message.
    Event(SendOutcome),
    /// A group was renamed: the `system` event, then every member's conversation changed.
    Renamed(SendOutcome),
    /// The actor's mute of the conversation was set.
    Muted(ConversationId),
}

/// What `send` did.
#[derive(Clone, Debug)]
pub struct SendOutcome {
    pub message: StoredMessage,
    /// The client_id was seen before: this is the original message, nothing was written.
    pub duplicate: bool,
    /// A direct conversation was created for this message.
    pub created: bool,
    /// Every member, for fan-out.
    pub members: Arc<[UserId]>,
}

/// What a membership change did.
#[derive(Clone, Debug)]
pub struct MembershipOutcome {
    pub conversation: ConversationId,
    /// Members after the change.
    pub members: Arc<[UserId]>,
    /// Users who became members.
    pub added: Vec<UserId>,
    /// Users who stopped being members.
    pub removed: Vec<UserId>,
    /// The conversation's newest seq when the change was made (before its `event`).
    pub last_seq: u64,
    /// The `system` line the change appended (created, added, removed, left), for every
    /// member.
    pub event: Option<StoredMessage>,
}

/// Member lists the writer keeps between batches. Only the writer changes membership, so it can
/// keep this exact: entries are replaced when a batch changes a conversation's members, and the
/// whole cache is dropped when a batch fails.
#[derive(Default)]
pub struct MemberCache {
    map: HashMap<u64, Arc<[UserId]>>,
}

impl MemberCache {
    /// Most conversations cached; beyond this the cache is cleared (simple and bounded).
    const MAX: usize = 50_000;

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[derive(Clone, Debug)]
pub(super) struct ConvRecord {
    pub(super) kind: ConversationKind,
    pub(super) title: String,
    pub(super) owner: u64,
    pub(super) created_ms: u64,
    pub(super) last_seq: u64,
    pub(super) last_ms: u64,
    pub(super) member_count: u64,
    /// The newest text message (events do not count): the list's preview (record v2; a v1
    /// record predates events, so its `last_seq`).
    pub(super) last_text_seq: u64,
}

const ROLE_MEMBER: u8 = 1;
pub(super) const ROLE_OWNER: u8 = 2;

pub(super) fn encode_conv(id: u64, c: &ConvRecord) -> Vec<u8> {
    codec::seal(&codec::key1(id), encode_conv_record(c))
}

fn encode_conv_record(c: &ConvRecord) -> Vec<u8> {
    Enc::new(2)
        .u8(match c.kind {
            ConversationKind::Direct => 1,
            ConversationKind::Group => 2,
        })
        .str(&c.title)
        .u64(c.owner)
        .u64(c.created_ms)
        .u64(c.last_seq)
        .u64(c.last_ms)
        .u64(c.member_count)
        .var(c.last_text_seq)
        .0
}

/// A sealed conversation record; a damaged one is reported (`damage`) and an error.
pub(super) fn decode_conv(id: u64, raw: &[u8]) -> Result<ConvRecord> {
    let rec = super::unsealed("conversations", id, &codec::key1(id), raw)?;
    decode_conv_record(rec).map_err(|e| super::damaged("conversations", id, e))
}

pub(super) fn decode_conv_record(raw: &[u8]) -> std::result::Result<ConvRecord, DecodeError> {
    let (version, mut d) = Dec::versioned(raw, 1..=2, "conversation record version")?;
    let kind = match d.u8()? {
        1 => ConversationKind::Direct,
        2 => ConversationKind::Group,
        _ => return Err(DecodeError("unknown conversation kind")),
    };
    let mut c = ConvRecord {
        kind,
        title: d.str()?.to_string(),
        owner: d.u64()?,
        created_ms: d.u64()?,
        last_seq: d.u64()?,
        last_ms: d.u64()?,
        member_count: d.u64()?,
        last_text_seq: 0,
    };
    c.last_text_seq = if version >= 2 { d.var()? } else { c.last_seq };
    if !d.done() {
        return Err(DecodeError("bytes after the conversation record"));
    }
    Ok(c)
}

/// (direct?, last_seq, member_count) of a sealed conversation record, for `chatd check`.
pub(super) fn check_conv(
    id: u64,
    raw: &[u8],
) -> std::result::Result<(bool, u64, u64), DecodeError> {
    let c = decode_conv_record(codec::unseal(&codec::key1(id), raw)?)?;
    Ok((
        c.kind == ConversationKind::Direct,
        c.last_seq,
        c.member_count,
    ))
}

/// Re-seals a schema ≤ 3 conversation record (the 3 → 4 upgrade).
pub(super) fn upgrade_conv(id: u64, raw: &[u8]) -> Result<Vec<u8>> {
    let c = decode_conv_record(raw)?;
    Ok(encode_conv(id, &c))
}

/// The message at (conv, seq) as a reader shows it, owned (a marker if it is damaged).
fn read_message(
    users: &impl ReadableTable<u64, &'static [u8]>,
    conv: u64,
    seq: u64,
    raw: &[u8],
) -> StoredMessage {
    messages::view(&mut messages::Names::default(), users, conv, seq, raw).to_stored()
}

/// Reads the members of a conversation from any readable members table.
fn read_members(
    members: &impl ReadableTable<(u64, u64), u8>,
    conv: u64,
) -> Result<Vec<(UserId, u8)>> {
    let mut out = Vec::new();
    for row in members.range((conv, 0)..=(conv, u64::MAX))? {
        let (k, v) = row?;
        out.push((UserId(k.value().1), v.value()));
    }
    Ok(out)
}

/// The tables of one write transaction, opened once for a whole batch.
pub struct ChatBatch<'t> {
    users: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    conversations: Table<'t, u64, &'static [u8]>,
    members: Table<'t, (u64, u64), u8>,
    read_seqs: Table<'t, (u64, u64), u64>,
    direct_pairs: Table<'t, (u64, u64), u64>,
    messages: Table<'t, (u64, u64), &'static [u8]>,
    client_ids: Table<'t, (u64, u64), (u64, u64)>,
    files: super::files::FileTables<'t>,
    event_seqs: Table<'t, (u64, u64), ()>,
    mentions: Table<'t, (u64, u64, u64), ()>,
    mutes: Table<'t, (u64, u64), ()>,
    cache: &'t mut MemberCache,
}

impl<'t> ChatBatch<'t> {
    pub(super) fn open(tx: &'t WriteTransaction, cache: &'t mut MemberCache) -> Result<Self> {
        Ok(ChatBatch {
            users: tx.open_table(USERS)?,
            meta: tx.open_table(META)?,
            conversations: tx.open_table(CONVERSATIONS)?,
            members: tx.open_table(MEMBERS)?,
            read_seqs: tx.open_table(READ_SEQS)?,
            direct_pairs: tx.open_table(DIRECT_PAIRS)?,
            messages: tx.open_table(MESSAGES)?,
            client_ids: tx.open_table(CLIENT_IDS)?,
            files: super::files::FileTables::open(tx)?,
            event_seqs: tx.open_table(EVENT_SEQS)?,
            mentions: tx.open_table(MENTIONS)?,
            mutes: tx.open_table(MUTES)?,
            cache,
        })
    }

    /// The conversation's record; a damaged one (reported) counts as missing, so the ops on
    /// that conversation are refused and the rest of the batch goes on.
    fn conv(&self, id: u64) -> Result<Option<ConvRecord>> {
        match self.conversations.get(id)? {
            Some(v) => Ok(decode_conv(id, v.value()).ok()),
            None => Ok(None),
        }
    }

    fn put_conv(&mut self, id: u64, c: &ConvRecord) -> Result<()> {
        self.conversations
            .insert(id, encode_conv(id, c).as_slice())?;
        Ok(())
    }

    /// Members of a conversation, from the cache or the table.
    pub fn member_ids(&mut self, conv: u64) -> Result<Arc<[UserId]>> {
        if let Some(m) = self.cache.map.get(&conv) {
            return Ok(m.clone());
        }
        let list: Arc<[UserId]> = read_members(&self.members, conv)?
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        if self.cache.map.len() >= MemberCache::MAX {
            self.cache.map.clear();
        }
        self.cache.map.insert(conv, list.clone());
        Ok(list)
    }

    fn is_member(&mut self, conv: u64, user: UserId) -> Result<bool> {
        Ok(self.member_ids(conv)?.binary_search(&user).is_ok())
    }

    fn user_exists(&self, id: UserId) -> Result<bool> {
        match self.users.get(id.0)? {
            // A damaged account record (reported) counts as no account.
            Some(v) => Ok(decode_user(id.0, v.value()).is_ok_and(|u| !u.disabled)),
            None => Ok(false),
        }
    }

    fn next_conversation_id(&mut self) -> Result<u64> {
        let id = self
            .meta
            .get(META_NEXT_CONVERSATION)?
            .map(|v| v.value())
            .unwrap_or(1);
        self.meta.insert(META_NEXT_CONVERSATION, id + 1)?;
        Ok(id)
    }

    /// Makes `user` a member with the given role and read position.
    fn join(&mut self, conv: u64, user: UserId, role: u8, read_seq: u64) -> Result<()> {
        self.members.insert((conv, user.0), role)?;
        self.read_seqs.insert((user.0, conv), read_seq)?;
        Ok(())
    }

    fn part(&mut self, conv: u64, user: UserId) -> Result<()> {
        self.members.remove((conv, user.0))?;
        self.read_seqs.remove((user.0, conv))?;
        self.mutes.remove((user.0, conv))?;
        let mentioned: Vec<u64> = self
            .mentions
            .range((user.0, conv, 0)..=(user.0, conv, u64::MAX))?
            .map(|r| r.map(|(k, _)| k.value().2))
            .collect::<std::result::Result<_, _>>()?;
        for seq in mentioned {
            self.mentions.remove((user.0, conv, seq))?;
        }
        Ok(())
    }

    fn refresh_cache(&mut self, conv: u64) -> Result<Arc<[UserId]>> {
        self.cache.map.remove(&conv);
        self.member_ids(conv)
    }

    /// Records the number of the logged batch this transaction applies (see `store::wal`).
    pub(super) fn set_wal_applied(&mut self, number: u64) -> Result<()> {
        self.meta.insert(META_WAL_APPLIED, number)?;
        Ok(())
    }

    /// Applies one change requested by `actor` (named `actor_name`) at `now_ms`.
    pub fn apply(
        &mut self,
        actor: UserId,
        actor_name: &str,
        change: &Change,
        now_ms: u64,
    ) -> Op<Applied> {
        // An event records the client_id its request carried ("" if none).
        let cid = change.client_id().unwrap_or("");
        Ok(match change {
            Change::Send {
                target,
                client_id,
                text,
                reply_to,
                attachments,
                mentions,
            } => self
                .send_full(
                    actor,
                    actor_name,
                    *target,
                    client_id,
                    text,
                    *reply_to,
                    attachments,
                    mentions,
                    now_ms,
                )?
                .map(Applied::Sent),
            Change::Edit {
                conversation,
                seq,
                text,
                mentions,
                ..
            } => self
                .edit(
                    actor,
                    actor_name,
                    cid,
                    *conversation,
                    *seq,
                    text,
                    mentions,
                    now_ms,
                )?
                .map(Applied::Event),
            Change::Delete {
                conversation, seq, ..
            } => self
                .delete(actor, actor_name, cid, *conversation, *seq, now_ms)?
                .map(Applied::Event),
            Change::React {
                conversation,
                seq,
                emoji,
                ..
            } => self
                .react(actor, actor_name, cid, *conversation, *seq, emoji, now_ms)?
                .map(Applied::Event),
            Change::Mute {
                conversation,
                muted,
            } => self
                .mute(actor, *conversation, *muted)?
                .map(|()| Applied::Muted(*conversation)),
            Change::RenameGroup {
                conversation,
                title,
                ..
            } => self
                .rename_group(actor, actor_name, cid, *conversation, title, now_ms)?
                .map(Applied::Renamed),
            Change::Read { conversation, seq } => self
                .mark_read(actor, *conversation, *seq)?
                .map(Applied::Read),
            Change::CreateGroup { title, members } => self
                .create_group(actor, title, members, now_ms)?
                .map(Applied::Membership),
            Change::AddMembers {
                conversation,
                members,
            } => self
                .add_members(actor, *conversation, members, now_ms)?
                .map(Applied::Membership),
            Change::RemoveMember { conversation, user } => self
                .remove_member(actor, *conversation, *user, now_ms)?
                .map(Applied::Membership),
        })
    }

    /// Appends a message (or returns the original for a repeated client_id).
    pub fn send(
        &mut self,
        sender: UserId,
        sender_name: &str,
        target: Target,
        client_id: &str,
        text: &str,
        now_ms: u64,
    ) -> Op<SendOutcome> {
        self.send_full(
            sender,
            sender_name,
            target,
            client_id,
            text,
            None,
            &[],
            &[],
            now_ms,
        )
    }

    /// `send`, answering the message `reply_to` of the same conversation if given (refused as
    /// `Invalid` when that conversation has no such seq: another conversation's seq, a future
    /// one, or a first message that would create a direct conversation), with attachments
    /// (file ids, see `store::files`).
    #[allow(clippy::too_many_arguments)]
    pub fn send_full(
        &mut self,
        sender: UserId,
        sender_name: &str,
        target: Target,
        client_id: &str,
        text: &str,
        reply_to: Option<u64>,
        attachments: &[u128],
        mentions: &[UserId],
        now_ms: u64,
    ) -> Op<SendOutcome> {
        const NO_SUCH_REPLY: ChatError =
            ChatError::Invalid("reply_to is not a message of this conversation");
        // Idempotency first: a retry must get the original ack even if, say, the sender has
        // since left the conversation.
        let seen = self
            .client_ids
            .get((sender.0, client_id_hash(client_id)))?
            .map(|v| v.value());
        if let Some((conv, seq)) = seen {
            let raw = self.messages.get((conv, seq))?.map(|v| v.value().to_vec());
            // The same sender and client_id (another id with the same hash counts as new; a
            // damaged message counts as the original, shown as a marker).
            let same = raw.as_deref().is_some_and(|r| {
                messages::decode(conv, seq, r)
                    .map_or(true, |f| f.sender == sender.0 && f.client_id == client_id)
            });
            if let (Some(raw), true) = (raw, same) {
                let mut message = read_message(&self.users, conv, seq, &raw);
                message.attachments = self.files.of_message(conv, seq)?;
                let members = self.member_ids(conv)?;
                return Ok(Ok(SendOutcome {
                    message,
                    duplicate: true,
                    created: false,
                    members,
                }));
            }
        }
        // Attachments are checked before anything is written (a direct conversation that does
        // not exist yet can only get the sender's own uploads).
        let files = if attachments.is_empty() {
            Vec::new()
        } else {
            let conv = match target {
                Target::Conversation(c) => Some(c.0),
                Target::User(peer) => {
                    let pair = (sender.0.min(peer.0), sender.0.max(peer.0));
                    self.direct_pairs.get(pair)?.map(|v| v.value())
                }
            };
            match self.files.check_attachments(sender, conv, attachments)? {
                Some(f) => f,
                None => return Ok(Err(ChatError::NotFound)),
            }
        };
        let mut created = false;
        let conv_id = match target {
            Target::Conversation(c) => {
                if !self.is_member(c.0, sender)? {
                    return Ok(Err(ChatError::NotFound));
                }
                c.0
            }
            Target::User(peer) => {
                if peer == sender {
                    return Ok(Err(ChatError::Invalid(
                        "you cannot start a direct conversation with yourself",
                    )));
                }
                if !self.user_exists(peer)? {
                    return Ok(Err(ChatError::UserNotFound));
                }
                let pair = (sender.0.min(peer.0), sender.0.max(peer.0));
                let existing = self.direct_pairs.get(pair)?.map(|v| v.value());
                match existing {
                    Some(c) => c,
                    None if reply_to.is_some() => return Ok(Err(NO_SUCH_REPLY)),
                    None => {
                        let id = self.next_conversation_id()?;
                        let rec = ConvRecord {
                            kind: ConversationKind::Direct,
                            title: String::new(),
                            owner: sender.0,
                            created_ms: now_ms,
                            last_seq: 0,
                            last_ms: now_ms,
                            member_count: 2,
                            last_text_seq: 0,
                        };
                        self.put_conv(id, &rec)?;
                        self.join(id, sender, ROLE_MEMBER, 0)?;
                        self.join(id, peer, ROLE_MEMBER, 0)?;
                        self.direct_pairs.insert(pair, id)?;
                        self.refresh_cache(id)?;
                        created = true;
                        id
                    }
                }
            }
        };
        let Some(mut conv) = self.conv(conv_id)? else {
            return Ok(Err(ChatError::NotFound));
        };
        if let Some(r) = reply_to {
            // A text message of this conversation (an event's seq is not one).
            if r == 0 || r > conv.last_seq || self.event_seqs.get((conv_id, r))?.is_some() {
                return Ok(Err(NO_SUCH_REPLY));
            }
        }
        let mentions = self.member_mentions(conv_id, sender, mentions)?;
        conv.last_seq += 1;
        conv.last_text_seq = conv.last_seq;
        // Time never goes backwards within a conversation, even if the clock does.
        conv.last_ms = now_ms.max(conv.last_ms);
        let message = StoredMessage {
            conversation: ConversationId(conv_id),
            seq: conv.last_seq,
            sender,
            sender_name: sender_name.to_string(),
            time_ms: conv.last_ms,
            client_id: client_id.to_string(),
            text: text.to_string(),
            reply_to,
            unreadable: false,
            attachments: files.iter().map(|f| f.attachment()).collect(),
            extra: MessageExtra {
                mentions: mentions.iter().map(|u| u.0).collect(),
                ..MessageExtra::default()
            },
        };
        for u in &mentions {
            self.mentions.insert((u.0, conv_id, message.seq), ())?;
        }
        if !files.is_empty() {
            self.files.attach(conv_id, message.seq, &files)?;
        }
        self.messages.insert(
            (conv_id, message.seq),
            messages::encode(&message).as_slice(),
        )?;
        self.client_ids.insert(
            (sender.0, client_id_hash(client_id)),
            (conv_id, message.seq),
        )?;
        self.put_conv(conv_id, &conv)?;
        // The sender has read everything up to their own message (the newest one, so this
        // never moves the position backwards).
        self.read_seqs.insert((sender.0, conv_id), message.seq)?;
        let members = self.member_ids(conv_id)?;
        Ok(Ok(SendOutcome {
            message,
            duplicate: false,
            created,
            members,
        }))
    }

    /// Moves `user`'s read position forward to `seq` (clamped to the last message). Returns the
    /// new position if it moved, and the members for receipts.
    pub fn mark_read(
        &mut self,
        user: UserId,
        conv: ConversationId,
        seq: u64,
    ) -> Op<Option<(u64, Arc<[UserId]>)>> {
        let Some(pos) = self.read_seqs.get((user.0, conv.0))?.map(|v| v.value()) else {
            return Ok(Err(ChatError::NotFound));
        };
        let Some(rec) = self.conv(conv.0)? else {
            return Ok(Err(ChatError::NotFound));
        };
        let target = seq.min(rec.last_seq);
        if target <= pos {
            return Ok(Ok(None));
        }
        self.read_seqs.insert((user.0, conv.0), target)?;
        let members = self.member_ids(conv.0)?;
        Ok(Ok(Some((target, members))))
    }

    /// Creates a group owned by `owner` with the given other members.
    pub fn create_group(
        &mut self,
        owner: UserId,
        title: &str,
        members: &[UserId],
        now_ms: u64,
    ) -> Op<MembershipOutcome> {
        let mut all: Vec<UserId> = members.to_vec();
        all.push(owner);
        all.sort();
        all.dedup();
        if all.len() > crate::model::MAX_GROUP_MEMBERS {
            return Ok(Err(ChatError::Invalid("too many members")));
        }
        for u in &all {
            if !self.user_exists(*u)? {
                return Ok(Err(ChatError::UserNotFound));
            }
        }
        let id = self.next_conversation_id()?;
        let rec = ConvRecord {
            kind: ConversationKind::Group,
            title: title.to_string(),
            owner: owner.0,
            created_ms: now_ms,
            last_seq: 0,
            last_ms: now_ms,
            member_count: all.len() as u64,
            last_text_seq: 0,
        };
        let mut rec = rec;
        for u in &all {
            let role = if *u == owner { ROLE_OWNER } else { ROLE_MEMBER };
            self.join(id, *u, role, 0)?;
        }
        let event = SystemEvent {
            action: SystemAction::Created,
            users: Vec::new(),
            names: Vec::new(),
            title: Some(title.to_string()),
        };
        let event = self.append_system(id, &mut rec, owner, event, now_ms)?;
        let members = self.refresh_cache(id)?;
        Ok(Ok(MembershipOutcome {
            conversation: ConversationId(id),
            members,
            added: all,
            removed: Vec::new(),
            last_seq: 0,
            event: Some(event),
        }))
    }

    fn group_for(&mut self, actor: UserId, conv: ConversationId) -> Op<ConvRecord> {
        if !self.is_member(conv.0, actor)? {
            return Ok(Err(ChatError::NotFound));
        }
        let Some(rec) = self.conv(conv.0)? else {
            return Ok(Err(ChatError::NotFound));
        };
        if rec.kind != ConversationKind::Group {
            return Ok(Err(ChatError::Forbidden(
                "direct conversations have fixed members",
            )));
        }
        Ok(Ok(rec))
    }

    /// Owner only: adds users to a group (existing members are skipped).
    pub fn add_members(
        &mut self,
        actor: UserId,
        conv: ConversationId,
        users: &[UserId],
        now_ms: u64,
    ) -> Op<MembershipOutcome> {
        let mut rec = match self.group_for(actor, conv)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if rec.owner != actor.0 {
            return Ok(Err(ChatError::Forbidden(
                "only the group owner may add members",
            )));
        }
        let current = self.member_ids(conv.0)?;
        let mut added: Vec<UserId> = users
            .iter()
            .copied()
            .filter(|u| current.binary_search(u).is_err())
            .collect();
        added.sort();
        added.dedup();
        if current.len() + added.len() > crate::model::MAX_GROUP_MEMBERS {
            return Ok(Err(ChatError::Invalid("too many members")));
        }
        for u in &added {
            if !self.user_exists(*u)? {
                return Ok(Err(ChatError::UserNotFound));
            }
        }
        for u in &added {
            // Joining members start with the history marked read.
            self.join(conv.0, *u, ROLE_MEMBER, rec.last_seq)?;
        }
        rec.member_count += added.len() as u64;
        let last_seq = rec.last_seq;
        let event = SystemEvent {
            action: SystemAction::Added,
            names: added.iter().map(|u| self.display_name(*u)).collect(),
            users: added.iter().map(|u| u.0).collect(),
            title: None,
        };
        let event = self.append_system(conv.0, &mut rec, actor, event, now_ms)?;
        let members = self.refresh_cache(conv.0)?;
        Ok(Ok(MembershipOutcome {
            conversation: conv,
            members,
            added,
            removed: Vec::new(),
            last_seq,
            event: Some(event),
        }))
    }

    /// Owner removes a member, or (`user == actor`) a member leaves. When the owner leaves,
    /// the remaining member with the lowest id becomes owner.
    pub fn remove_member(
        &mut self,
        actor: UserId,
        conv: ConversationId,
        user: UserId,
        now_ms: u64,
    ) -> Op<MembershipOutcome> {
        let mut rec = match self.group_for(actor, conv)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if user != actor {
            if rec.owner != actor.0 {
                return Ok(Err(ChatError::Forbidden(
                    "only the group owner may remove members",
                )));
            }
            if !self.is_member(conv.0, user)? {
                return Ok(Err(ChatError::UserNotFound));
            }
        }
        self.part(conv.0, user)?;
        rec.member_count = rec.member_count.saturating_sub(1);
        let members = self.refresh_cache(conv.0)?;
        if rec.owner == user.0 {
            if let Some(next) = members.first() {
                rec.owner = next.0;
                self.members.insert((conv.0, next.0), ROLE_OWNER)?;
            }
        }
        let last_seq = rec.last_seq;
        let event = if members.is_empty() {
            // The last member left: nobody is there to read a line.
            self.put_conv(conv.0, &rec)?;
            None
        } else if user == actor {
            let event = SystemEvent {
                action: SystemAction::Left,
                users: Vec::new(),
                names: Vec::new(),
                title: None,
            };
            Some(self.append_system(conv.0, &mut rec, actor, event, now_ms)?)
        } else {
            let event = SystemEvent {
                action: SystemAction::Removed,
                users: vec![user.0],
                names: vec![self.display_name(user)],
                title: None,
            };
            Some(self.append_system(conv.0, &mut rec, actor, event, now_ms)?)
        };
        Ok(Ok(MembershipOutcome {
            conversation: conv,
            members,
            added: Vec::new(),
            removed: vec![user],
            last_seq,
            event,
        }))
    }
}

impl Store {
    /// Runs `f` on one write transaction and commits it durably (fsync) if `f` returns `Ok`.
    /// The group-commit writer calls this once per batch of operations.
    pub fn chat_batch<R>(
        &self,
        cache: &mut MemberCache,
        f: impl FnOnce(&mut ChatBatch<'_>) -> Result<R>,
    ) -> Result<R> {
        let tx = self.write()?;
        let result = {
            let mut batch = ChatBatch::open(&tx, cache)?;
            f(&mut batch)
        };
        match result {
            Ok(r) => {
                tx.commit()?;
                Ok(r)
            }
            Err(e) => {
                // Dropping the transaction aborts it; cached member lists may describe writes
                // that never happened.
                cache.clear();
                Err(e)
            }
        }
    }

    /// The user's conversations, newest activity first, at most `limit`.
    ///
    /// Reads every (conversation, read_seq) of the user and each conversation's record, sorts
    /// by last activity, and builds full summaries only for the first `limit`.
    pub fn conversations_of(&self, user: UserId, limit: usize) -> Result<Vec<ConversationSummary>> {
        conversations_in(&self.db.begin_read()?, user, limit)
    }

    /// What a new connection needs, from one snapshot: the user's conversations (as
    /// `conversations_of`) and contacts (as `contacts`, for the presence announcement).
    pub fn welcome_view(
        &self,
        user: UserId,
        limit: usize,
        max_group: u64,
    ) -> Result<(Vec<ConversationSummary>, Vec<UserId>)> {
        let tx = self.db.begin_read()?;
        let records = records_of(&tx, user)?;
        let contacts = contacts_among(&tx, user, &records, max_group)?;
        Ok((summaries_of(&tx, user, records, limit)?, contacts))
    }

    /// One conversation as `user` sees it; `None` if it does not exist or `user` is not a member.
    pub fn conversation_for(
        &self,
        user: UserId,
        conv: ConversationId,
    ) -> Result<Option<ConversationSummary>> {
        let tx = self.db.begin_read()?;
        summary_in(&tx, user, conv)
    }

    /// Messages with seq > `after`, oldest first, at most `limit`. Membership is checked.
    pub fn messages_after(
        &self,
        user: UserId,
        conv: ConversationId,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<StoredMessage>>> {
        Ok(self
            .messages_after_map(user, conv, after, limit, usize::MAX, |m| m.to_stored())?
            .map(|(messages, _)| messages))
    }

    /// Like `messages_after`, but hands each message to `f` as borrowed from the database page
    /// (no per-field copies) and returns what `f` made of them, and whether more messages follow
    /// the last one returned (so a caller paging through them needs no extra read to find the
    /// end). The page also ends once its texts add up to `text_bytes` (it always holds at least
    /// one message), so a page of long messages stays small enough for one frame.
    pub fn messages_after_map<T>(
        &self,
        user: UserId,
        conv: ConversationId,
        after: u64,
        limit: usize,
        text_bytes: usize,
        mut f: impl FnMut(&MessageRef<'_>) -> T,
    ) -> Result<Option<(Vec<T>, bool)>> {
        let tx = self.db.begin_read()?;
        if tx.open_table(MEMBERS)?.get((conv.0, user.0))?.is_none() {
            return Ok(None);
        }
        let last = last_seq_in(&tx, conv.0)?;
        let messages = tx.open_table(MESSAGES)?;
        let users = tx.open_table(USERS)?;
        let files = super::files::MessageFiles::open(&tx)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut bytes = 0usize;
        let mut seen = after;
        if limit > 0 && after < last {
            // Every seq after `after` in turn, a marker where a message cannot be read, so a
            // page always advances (see `messages::walk`).
            messages::walk(&messages, &users, conv.0, after + 1, last, true, |m| {
                seen = m.seq;
                let list = files.of(conv.0, m.seq);
                // An edit event is served with its target's current text and mentions.
                let current = match (m.extra.kind, m.extra.target) {
                    (MessageKind::Edit, Some(t)) => current_text(&messages, conv.0, t),
                    _ => None,
                };
                let mut m = MessageRef {
                    attachments: &list,
                    ..m.clone()
                };
                if let Some((_, mentions)) = &current {
                    m.extra.mentions.clone_from(mentions);
                }
                if let Some((text, _)) = &current {
                    m.text = text;
                }
                bytes = bytes.saturating_add(m.text.len());
                out.push(f(&m));
                out.len() < limit && bytes < text_bytes
            });
        }
        Ok(Some((out, seen < last)))
    }

    /// The newest `limit` messages with seq < `before`, oldest first; fewer once their texts add
    /// up to `text_bytes` (at least one). Membership is checked. Damaged messages are markers
    /// (see `messages::walk`).
    pub fn history(
        &self,
        user: UserId,
        conv: ConversationId,
        before: u64,
        limit: usize,
        text_bytes: usize,
    ) -> Result<Option<Vec<StoredMessage>>> {
        let tx = self.db.begin_read()?;
        if tx.open_table(MEMBERS)?.get((conv.0, user.0))?.is_none() {
            return Ok(None);
        }
        // Never past the conversation's last seq (a damaged key can sort after it).
        let top = last_seq_in(&tx, conv.0)?.min(before.saturating_sub(1));
        let messages = tx.open_table(MESSAGES)?;
        let users = tx.open_table(USERS)?;
        let files = super::files::MessageFiles::open(&tx)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if top >= 1 && limit > 0 {
            messages::walk(&messages, &users, conv.0, 1, top, false, |m| {
                // Edits, deletions and reactions are folded into their targets.
                if !matches!(m.extra.kind, MessageKind::Text | MessageKind::System) {
                    return true;
                }
                bytes = bytes.saturating_add(m.text.len());
                let mut stored = m.to_stored();
                stored.attachments = files.of(conv.0, m.seq);
                out.push(stored);
                out.len() < limit && bytes < text_bytes
            });
        }
        out.reverse();
        Ok(Some(out))
    }

    /// `(conversation, last_seq)` for every conversation of the user.
    pub fn last_seqs(&self, user: UserId) -> Result<Vec<(ConversationId, u64)>> {
        Ok(records_of(&self.db.begin_read()?, user)?
            .into_iter()
            .map(|(rec, id, _)| (ConversationId(id), rec.last_seq))
            .collect())
    }

    /// Members of a conversation with names and read positions; `None` if `user` is not one.
    pub fn members_of(
        &self,
        user: UserId,
        conv: ConversationId,
    ) -> Result<Option<Vec<MemberInfo>>> {
        let tx = self.db.begin_read()?;
        let members = tx.open_table(MEMBERS)?;
        if members.get((conv.0, user.0))?.is_none() {
            return Ok(None);
        }
        let users = tx.open_table(USERS)?;
        let positions = tx.open_table(READ_SEQS)?;
        let mut out = Vec::new();
        for (id, role) in read_members(&members, conv.0)? {
            let u = match users.get(id.0)? {
                Some(v) => match decode_user(id.0, v.value()) {
                    Ok(u) => u,
                    // A damaged account record (reported): shown without a name.
                    Err(_) => crate::model::User::unreadable(id),
                },
                None => continue,
            };
            let read_seq = positions
                .get((id.0, conv.0))?
                .map(|v| v.value())
                .unwrap_or(0);
            out.push(MemberInfo {
                id,
                color: u.color_name(),
                display_name: u.display_name,
                name: u.name,
                owner: role == ROLE_OWNER,
                read_seq,
            });
        }
        Ok(Some(out))
    }

    /// Member ids of a conversation if `user` is a member (for typing indicators).
    pub fn member_ids_for(
        &self,
        user: UserId,
        conv: ConversationId,
    ) -> Result<Option<Vec<UserId>>> {
        let tx = self.db.begin_read()?;
        let members = tx.open_table(MEMBERS)?;
        if members.get((conv.0, user.0))?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            read_members(&members, conv.0)?
                .into_iter()
                .map(|(u, _)| u)
                .collect(),
        ))
    }

    /// Everyone who shares a direct conversation, or a group of at most `max_group` members,
    /// with `user` (for presence).
    pub fn contacts(&self, user: UserId, max_group: u64) -> Result<Vec<UserId>> {
        contacts_in(&self.db.begin_read()?, user, max_group)
    }

    /// Enabled accounts whose name contains `query` (case-insensitive), by name, at most `limit`.
    pub fn search_users(&self, query: &str, limit: usize) -> Result<Vec<crate::model::User>> {
        let q = query.to_lowercase();
        let tx = self.db.begin_read()?;
        let names = tx.open_table(USER_NAMES)?;
        let users = tx.open_table(USERS)?;
        let mut out = Vec::new();
        for row in names.iter()? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row?;
            if !k.value().contains(q.as_str()) {
                continue;
            }
            let id = v.value();
            if let Some(raw) = users.get(id)? {
                let Ok(u) = decode_user(id, raw.value()) else {
                    continue; // damaged (reported)
                };
                if !u.disabled {
                    out.push(u);
                }
            }
        }
        Ok(out)
    }
}

/// The current text and mentions of text message `(conv, seq)` (an edit event's, as served).
fn current_text(
    messages: &impl ReadableTable<(u64, u64), &'static [u8]>,
    conv: u64,
    seq: u64,
) -> Option<(String, Vec<u64>)> {
    let raw = messages.get((conv, seq)).ok()??;
    let f = messages::decode(conv, seq, raw.value()).ok()?;
    Some((f.text.to_string(), f.extra.mentions))
}

/// The last seq of conversation `conv`: its record's, or if that is damaged, the highest seq
/// whose message record is intact (0 if none is found among the last few).
fn last_seq_in(tx: &redb::ReadTransaction, conv: u64) -> Result<u64> {
    if let Some(raw) = tx.open_table(CONVERSATIONS)?.get(conv)? {
        if let Ok(rec) = decode_conv(conv, raw.value()) {
            return Ok(rec.last_seq);
        }
    }
    let messages = tx.open_table(MESSAGES)?;
    let found = damage::catch(|| -> Result<u64> {
        for row in messages
            .range((conv, 0)..=(conv, u64::MAX))?
            .rev()
            .take(1000)
        {
            let (k, v) = row?;
            let seq = k.value().1;
            if messages::decode(conv, seq, v.value()).is_ok() {
                return Ok(seq);
            }
        }
        Ok(0)
    });
    Ok(found.ok().and_then(|r| r.ok()).unwrap_or(0))
}

fn summary_in(
    tx: &redb::ReadTransaction,
    user: UserId,
    conv: ConversationId,
) -> Result<Option<ConversationSummary>> {
    let positions = tx.open_table(READ_SEQS)?;
    let Some(read_seq) = positions.get((user.0, conv.0))?.map(|v| v.value()) else {
        return Ok(None);
    };
    let convs = tx.open_table(CONVERSATIONS)?;
    let Some(raw) = convs.get(conv.0)? else {
        return Ok(None);
    };
    let Ok(rec) = decode_conv(conv.0, raw.value()) else {
        return Ok(None);
    };
    summary_of(tx, user, conv, rec, read_seq).map(Some)
}

/// The summary of a conversation whose record and the user's read seq are already read.
fn summary_of(
    tx: &redb::ReadTransaction,
    user: UserId,
    conv: ConversationId,
    rec: ConvRecord,
    read_seq: u64,
) -> Result<ConversationSummary> {
    let peer = if rec.kind == ConversationKind::Direct {
        let members = tx.open_table(MEMBERS)?;
        let users = tx.open_table(USERS)?;
        let mut peer = None;
        for (m, _) in read_members(&members, conv.0)? {
            if m != user {
                if let Some(u) = users.get(m.0)? {
                    // A damaged account record (reported): shown without a peer name.
                    let peer_user = decode_user(m.0, u.value())
                        .unwrap_or_else(|_| crate::model::User::unreadable(m));
                    peer = Some(crate::model::Peer::of(&peer_user));
                }
            }
        }
        peer
    } else {
        None
    };
    let last_message = if rec.last_text_seq > 0 {
        let messages = tx.open_table(MESSAGES)?;
        let users = tx.open_table(USERS)?;
        match messages.get((conv.0, rec.last_text_seq))? {
            Some(v) => Some(read_message(&users, conv.0, rec.last_text_seq, v.value())),
            None => None,
        }
    } else {
        None
    };
    // Unread: the seqs after the read position less the events among them.
    let (unread, mentions) = if read_seq < rec.last_seq {
        let events = tx
            .open_table(EVENT_SEQS)?
            .range((conv.0, read_seq + 1)..=(conv.0, rec.last_seq))?
            .count() as u64;
        let mentions = tx
            .open_table(MENTIONS)?
            .range((user.0, conv.0, read_seq + 1)..=(user.0, conv.0, u64::MAX))?
            .count() as u64;
        ((rec.last_seq - read_seq).saturating_sub(events), mentions)
    } else {
        (0, 0)
    };
    let muted = tx.open_table(MUTES)?.get((user.0, conv.0))?.is_some();
    Ok(ConversationSummary {
        id: conv,
        kind: rec.kind,
        title: rec.title,
        owner: UserId(rec.owner),
        member_count: rec.member_count,
        last_seq: rec.last_seq,
        last_ms: rec.last_ms,
        read_seq,
        peer,
        last_message,
        unread,
        mentions,
        muted,
    })
}

/// Every conversation of `user`: its record, id and the user's read seq, in id order.
fn records_of(tx: &redb::ReadTransaction, user: UserId) -> Result<Vec<(ConvRecord, u64, u64)>> {
    let positions = tx.open_table(READ_SEQS)?;
    let convs = tx.open_table(CONVERSATIONS)?;
    let mut found = Vec::new();
    for row in positions.range((user.0, 0)..=(user.0, u64::MAX))? {
        let (k, v) = row?;
        let id = k.value().1;
        if let Some(raw) = convs.get(id)? {
            // A damaged record (reported) leaves the conversation out of the list, rather than
            // failing every list, welcome and sync of each of its members.
            if let Ok(rec) = decode_conv(id, raw.value()) {
                found.push((rec, id, v.value()));
            }
        }
    }
    Ok(found)
}

fn conversations_in(
    tx: &redb::ReadTransaction,
    user: UserId,
    limit: usize,
) -> Result<Vec<ConversationSummary>> {
    summaries_of(tx, user, records_of(tx, user)?, limit)
}

/// The first `limit` of `user`'s conversations (from `records_of`), newest activity first.
fn summaries_of(
    tx: &redb::ReadTransaction,
    user: UserId,
    mut found: Vec<(ConvRecord, u64, u64)>,
    limit: usize,
) -> Result<Vec<ConversationSummary>> {
    found.sort_unstable_by_key(|(rec, id, _)| std::cmp::Reverse((rec.last_ms, *id)));
    found.truncate(limit);
    let mut out = Vec::with_capacity(found.len());
    for (rec, id, read_seq) in found {
        out.push(summary_of(tx, user, ConversationId(id), rec, read_seq)?);
    }
    Ok(out)
}

fn contacts_in(tx: &redb::ReadTransaction, user: UserId, max_group: u64) -> Result<Vec<UserId>> {
    contacts_among(tx, user, &records_of(tx, user)?, max_group)
}

/// The other members of `user`'s conversations (from `records_of`) of at most `max_group`.
fn contacts_among(
    tx: &redb::ReadTransaction,
    user: UserId,
    records: &[(ConvRecord, u64, u64)],
    max_group: u64,
) -> Result<Vec<UserId>> {
    let members = tx.open_table(MEMBERS)?;
    let mut out = HashSet::new();
    for (rec, conv, _) in records {
        if rec.member_count > max_group {
            continue;
        }
        for (m, _) in read_members(&members, *conv)? {
            if m != user {
                out.insert(m);
            }
        }
    }
    let mut v: Vec<UserId> = out.into_iter().collect();
    v.sort();
    Ok(v)
}
