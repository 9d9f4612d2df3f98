//! The WebSocket wire contract, version `PROTOCOL_VERSION`: every frame a client may send
//! (`ClientFrame`) and every frame the server sends (`ServerFrame`), as typed serde enums tagged
//! by a `"type"` field, plus the error codes. `docs/PROTOCOL.md` documents exactly these types;
//! a change here is a change to that document.
//!
//! `decode` turns a client's text frame into a `ClientEnvelope` or the `error` it gets (after
//! `strict_json`'s checks: one object, no key twice, bounded depth, and a `type` that is a
//! string: serde alone would take `{"type":1}` as the second variant), and
//! `ClientFrame::check` validates the values the types cannot (lengths, ranges, exactly one
//! target).
//!
//! Only this module (and the HTTP API's request/response structs) derive serde for the wire.
//! Numbers that can exceed 2^53 (the database epoch) are sent as strings, so JavaScript clients
//! read them exactly.

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::model::{
    self, ConversationKind, ConversationSummary, MemberInfo, MessageRef, StoredMessage,
};
use crate::strict_json::{self, Problem, TypeField};

/// Bumped on any incompatible change to the frames below.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame from the client: an optional `ref` the server echoes in the reply or error, and the
/// typed request.
#[derive(Debug, Deserialize)]
pub struct ClientEnvelope {
    /// Any number the client picks to match replies to requests.
    #[serde(default, rename = "ref")]
    pub reference: Option<u64>,
    #[serde(flatten)]
    pub frame: ClientFrame,
}

/// Where a `send` goes: an existing conversation, or a user (the direct conversation with them,
/// created on first message).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Resume: for each listed conversation, deliver every message after `seq`; for every other
    /// conversation of the user, every message from the first. Messages flow only after this.
    Sync {
        #[serde(default)]
        cursors: Vec<Cursor>,
        /// Replayed messages come as `messages` frames (one per page of a conversation)
        /// instead of one `message` frame each. Live messages are `message` frames either way.
        #[serde(default)]
        batch: bool,
    },
    /// Post a text message. Exactly one of `conversation` and `to` must be given.
    Send {
        client_id: String,
        #[serde(default)]
        conversation: Option<u64>,
        #[serde(default)]
        to: Option<u64>,
        /// May be empty when `attachments` is not.
        text: String,
        /// The seq of a message of the same conversation this one answers.
        #[serde(default)]
        reply_to: Option<u64>,
        /// File ids from `POST /api/files` (at most `max_attachments`, no id twice).
        #[serde(default)]
        attachments: Vec<String>,
        /// Mentioned user ids (non-members are dropped; the text keeps "@name").
        #[serde(default)]
        mentions: Vec<u64>,
    },
    /// Change the text of your own message `seq`.
    Edit {
        conversation: u64,
        seq: u64,
        text: String,
        /// The mentions of the new text (absent: none).
        #[serde(default)]
        mentions: Vec<u64>,
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Delete message `seq` (yours; in a group the owner and admins may delete any).
    Delete {
        conversation: u64,
        seq: u64,
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Toggle your reaction `emoji` (one emoji) on message `seq`.
    React {
        conversation: u64,
        seq: u64,
        emoji: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Mute or unmute a conversation (for all your devices).
    Mute { conversation: u64, muted: bool },
    /// Owner only: give a group a new title.
    RenameGroup {
        conversation: u64,
        title: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Older messages: up to `limit` (1-100, default 50) messages with seq < `before`
    /// (default: from the newest), returned oldest first. Or, with `around` instead of
    /// `before`: the message at that seq with about half of `limit` before it and the rest
    /// after it (to open a search result).
    History {
        conversation: u64,
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        around: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Move the read position of `conversation` forward to `seq`.
    Read { conversation: u64, seq: u64 },
    /// "I am typing" in `conversation` (ephemeral).
    Typing { conversation: u64 },
    /// The user's conversations, newest activity first.
    Conversations,
    /// Members of a conversation with their read positions.
    Members { conversation: u64 },
    /// Create a group; the creator is its owner and a member.
    CreateGroup {
        title: String,
        #[serde(default)]
        members: Vec<u64>,
    },
    /// Owner only: add users to a group.
    AddMembers {
        conversation: u64,
        members: Vec<u64>,
    },
    /// Owner only: remove a user from a group.
    RemoveMember { conversation: u64, user: u64 },
    /// Leave a group.
    Leave { conversation: u64 },
    /// Full-text search of the messages of the user's conversations (see docs/PROTOCOL.md for
    /// the query syntax), newest first: up to `limit` (1-50, default 20) results, only in
    /// `conversation` if given; `before` is the `next` of a previous page.
    Search {
        query: String,
        #[serde(default)]
        conversation: Option<u64>,
        #[serde(default)]
        before: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The user directory: names containing `query` (case-insensitive), up to `limit` (1-100,
    /// default 50).
    Users {
        #[serde(default)]
        query: String,
        #[serde(default)]
        limit: Option<u32>,
    },
}

/// How far a client has a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub conversation: u64,
    pub seq: u64,
}

/// Only as an object: serde's derive would also take `[conversation, seq]` by position.
impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Cursor;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object {conversation, seq}")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Cursor, A::Error> {
                let (mut conversation, mut seq) = (None, None);
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "conversation" => conversation = Some(m.next_value()?),
                        "seq" => seq = Some(m.next_value()?),
                        _ => {
                            m.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Cursor {
                    conversation: conversation
                        .ok_or_else(|| de::Error::missing_field("conversation"))?,
                    seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A frame refused before it was handled: what its `error` reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The frame's `ref`, when it could be read (also from a frame that is not valid JSON, if
    /// the `ref` came before the fault).
    pub reference: Option<u64>,
    pub client_id: Option<String>,
    pub code: ErrorCode,
    pub message: String,
}

/// Decodes a client's text frame (not the application-level `ping`, which is not JSON).
///
/// - not JSON, or not a JSON object: `bad_json` (with the `ref` if it was read before the fault);
/// - a key twice in one object, or nested deeper than `strict_json::MAX_DEPTH`: `bad_frame`;
/// - `type` missing, not a string, or not a frame name: `unknown_type`;
/// - anything else serde refuses (missing field, wrong type): `bad_frame`.
pub fn decode(text: &str) -> Result<ClientEnvelope, Rejected> {
    let reject = |head: strict_json::Head, code, message: String| Rejected {
        reference: head.reference,
        client_id: head.client_id,
        code,
        message,
    };
    let head = match strict_json::scan(text) {
        Ok(head) => head,
        Err((p, head)) => {
            let code = match p {
                Problem::NotJson(_) | Problem::NotObject => ErrorCode::BadJson,
                Problem::DuplicateKey(_) | Problem::TooDeep => ErrorCode::BadFrame,
            };
            return Err(reject(head, code, format!("invalid frame: {p}")));
        }
    };
    match &head.kind {
        TypeField::Name(_) => {}
        TypeField::Missing => {
            return Err(reject(head, ErrorCode::UnknownType, "no frame type".into()))
        }
        TypeField::NotString => {
            return Err(reject(
                head,
                ErrorCode::UnknownType,
                "the frame type must be a string".into(),
            ))
        }
    }
    serde_json::from_str::<ClientEnvelope>(text).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.contains("unknown variant") {
            ErrorCode::UnknownType
        } else {
            ErrorCode::BadFrame
        };
        reject(head, code, format!("invalid frame: {msg}"))
    })
}

/// A frame whose values are out of range (see `ClientFrame::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: ErrorCode,
    pub message: String,
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid {
        code,
        message: message.into(),
    })
}

impl ClientFrame {
    /// Checks what the types cannot: lengths (a text in characters and in bytes), ranges,
    /// exactly one target. `me` is the
    /// requesting user. Membership and existence are the store's to check.
    pub fn check(
        &self,
        me: u64,
        max_message_chars: usize,
        max_message_bytes: usize,
        history_max: u32,
    ) -> Result<(), Invalid> {
        use ErrorCode::{BadFrame, EmptyText, TextTooLong};
        match self {
            ClientFrame::Send {
                client_id,
                conversation,
                to,
                text,
                reply_to,
                attachments,
                mentions,
            } => {
                if *reply_to == Some(0) {
                    return invalid(BadFrame, "reply_to must be the seq of a message (from 1)");
                }
                if mentions.len() > MAX_MENTIONS {
                    return invalid(BadFrame, "at most 100 mentions");
                }
                let n = client_id.chars().count();
                if n == 0 || n > model::MAX_CLIENT_ID_CHARS {
                    return invalid(BadFrame, "client_id must be 1-64 characters");
                }
                match (conversation, to) {
                    (Some(_), None) => {}
                    (None, Some(u)) if *u == me => {
                        return invalid(BadFrame, "to: you cannot send to yourself")
                    }
                    (None, Some(_)) => {}
                    _ => return invalid(BadFrame, "give exactly one of conversation and to"),
                }
                if let Err(why) = crate::files::check_ids(attachments) {
                    return invalid(BadFrame, why);
                }
                if text.trim().is_empty() && attachments.is_empty() {
                    return invalid(EmptyText, "the message text is empty");
                }
                // In characters, as people count (and the web client counts down); the byte
                // bound follows (at most 4 bytes a character).
                let chars = text.chars().count();
                if chars > max_message_chars || text.len() > max_message_bytes {
                    return invalid(
                        TextTooLong,
                        format!(
                            "the message is {chars} characters long; at most {max_message_chars} are allowed"
                        ),
                    );
                }
            }
            ClientFrame::Edit {
                text,
                mentions,
                client_id,
                ..
            } => {
                check_event_client_id(client_id)?;
                if mentions.len() > MAX_MENTIONS {
                    return invalid(BadFrame, "at most 100 mentions");
                }
                if text.trim().is_empty() {
                    return invalid(EmptyText, "the message text is empty");
                }
                let chars = text.chars().count();
                if chars > max_message_chars || text.len() > max_message_bytes {
                    return invalid(
                        TextTooLong,
                        format!(
                            "the message is {chars} characters long; at most {max_message_chars} are allowed"
                        ),
                    );
                }
            }
            ClientFrame::Delete { client_id, .. } => check_event_client_id(client_id)?,
            ClientFrame::React {
                emoji, client_id, ..
            } => {
                check_event_client_id(client_id)?;
                if !is_one_emoji(emoji) {
                    return invalid(
                        BadFrame,
                        "emoji must be one emoji (a single grapheme cluster of at most 32 bytes)",
                    );
                }
            }
            ClientFrame::RenameGroup {
                title, client_id, ..
            } => {
                check_event_client_id(client_id)?;
                let n = title.trim().chars().count();
                if n == 0 || n > model::MAX_TITLE_CHARS {
                    return invalid(BadFrame, "title must be 1-64 characters");
                }
            }
            ClientFrame::History {
                limit,
                before,
                around,
                ..
            } => {
                if limit.is_some_and(|l| l == 0 || l > history_max) {
                    return invalid(BadFrame, format!("limit must be 1-{history_max}"));
                }
                if before.is_some() && around.is_some() {
                    return invalid(BadFrame, "give at most one of before and around");
                }
            }
            ClientFrame::Search { limit, before, .. } => {
                let max = crate::search::MAX_LIMIT as u32;
                if limit.is_some_and(|l| l == 0 || l > max) {
                    return invalid(BadFrame, format!("limit must be 1-{max}"));
                }
                if before.as_ref().is_some_and(|b| b.len() > 64) {
                    return invalid(
                        BadFrame,
                        "before: not a cursor from a previous search_results",
                    );
                }
            }
            ClientFrame::CreateGroup { title, members } => {
                let n = title.trim().chars().count();
                if n == 0 || n > model::MAX_TITLE_CHARS {
                    return invalid(BadFrame, "title must be 1-64 characters");
                }
                if members.len() > model::MAX_GROUP_MEMBERS {
                    return invalid(BadFrame, "at most 1000 members");
                }
            }
            ClientFrame::AddMembers { members, .. } => {
                if members.is_empty() || members.len() > model::MAX_GROUP_MEMBERS {
                    return invalid(BadFrame, "members must list 1-1000 users");
                }
            }
            ClientFrame::RemoveMember { user, .. } => {
                if *user == me {
                    return invalid(BadFrame, "to remove yourself, use leave");
                }
            }
            ClientFrame::Users { query, limit } => {
                if limit.is_some_and(|l| l == 0 || l > 100)
                    || query.chars().count() > model::MAX_NAME_CHARS
                {
                    return invalid(
                        BadFrame,
                        "limit must be 1-100 and query at most 32 characters",
                    );
                }
            }
            ClientFrame::Sync { .. }
            | ClientFrame::Read { .. }
            | ClientFrame::Typing { .. }
            | ClientFrame::Conversations
            | ClientFrame::Members { .. }
            | ClientFrame::Mute { .. }
            | ClientFrame::Leave { .. } => {}
        }
        Ok(())
    }

    /// The `client_id` of a `send` (its errors carry it), or the one an event frame carries.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { client_id, .. } => Some(client_id),
            ClientFrame::Edit { client_id, .. }
            | ClientFrame::Delete { client_id, .. }
            | ClientFrame::React { client_id, .. }
            | ClientFrame::RenameGroup { client_id, .. } => client_id.as_deref(),
            _ => None,
        }
    }
}

/// Most mentions in one message.
pub const MAX_MENTIONS: usize = 100;
/// Longest reaction, in UTF-8 bytes.
pub const MAX_EMOJI_BYTES: usize = 32;

fn check_event_client_id(c: &Option<String>) -> Result<(), Invalid> {
    match c {
        Some(c) if c.chars().count() > model::MAX_CLIENT_ID_CHARS => {
            invalid(ErrorCode::BadFrame, "client_id must be 1-64 characters")
        }
        _ => Ok(()),
    }
}

/// One emoji: a single grapheme cluster of at most `MAX_EMOJI_BYTES` bytes that holds an
/// emoji code point (pictographs, symbols and dingbats, keycaps, flags) and no letter, space
/// or control character of its own ("a", "ab", "👍👍" and " 👍" are all refused).
pub fn is_one_emoji(s: &str) -> bool {
    use unicode_segmentation::UnicodeSegmentation;
    if s.is_empty() || s.len() > MAX_EMOJI_BYTES || s.graphemes(true).nth(1).is_some() {
        return false;
    }
    let emoji_like = |c: char| {
        matches!(c as u32,
            0xA9 | 0xAE | 0x203C | 0x2049 | 0x2122 | 0x2139
            | 0x20E3            // combining keycap (1️⃣)
            | 0x2190..=0x2BFF   // arrows, technical symbols, shapes, symbols, dingbats
            | 0x3030 | 0x303D | 0x3297 | 0x3299
            | 0x1F000..=0x1FAFF) // pictographs, emoticons, flags' regional indicators
    };
    let mut any = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            return false;
        }
        if emoji_like(c) {
            any = true;
        } else if c.is_alphabetic() {
            return false;
        }
    }
    any
}

/// A user as other users see them: the account name (unique, what one logs in with), the
/// display name they chose (absent when none) and their avatar colour (a palette name).
#[derive(Debug, Serialize, Clone)]
pub struct UserRef {
    pub id: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub color: &'static str,
}

impl UserRef {
    pub fn of(u: &crate::model::User) -> Self {
        UserRef {
            id: u.id.0,
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            color: u.color_name(),
        }
    }
}

/// A user in the directory.
#[derive(Debug, Serialize, Clone)]
pub struct DirectoryUser {
    pub id: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub color: &'static str,
    pub online: bool,
}

/// The peer of a direct conversation.
#[derive(Debug, Serialize, Clone)]
pub struct Peer {
    pub id: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub color: &'static str,
    pub online: bool,
}

/// The newest message of a conversation, shortened to `PREVIEW_CHARS`.
#[derive(Debug, Serialize, Clone)]
pub struct Preview {
    pub seq: u64,
    pub sender: u64,
    pub sender_name: String,
    pub text: String,
    pub time: u64,
    /// See `Message::unreadable`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// The message was deleted (`text` is "").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
}

/// Longest last-message preview, in characters.
pub const PREVIEW_CHARS: usize = 120;

/// One entry of the conversation list.
#[derive(Debug, Serialize, Clone)]
pub struct Conversation {
    pub id: u64,
    /// "direct" or "group".
    pub kind: &'static str,
    /// Group title; for direct conversations the peer's name.
    pub title: String,
    /// Direct conversations only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// Group owner (may add/remove members); absent for direct conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<u64>,
    pub member_count: u64,
    pub last_seq: u64,
    /// Time of the last activity (message or creation), ms since the Unix epoch.
    pub last_time: u64,
    pub read_seq: u64,
    /// Text messages from others after `read_seq` (events do not count).
    pub unread: u64,
    /// Text messages after `read_seq` that mention you.
    pub mentions: u64,
    /// You muted this conversation.
    pub muted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Preview>,
}

impl Conversation {
    /// Builds the wire form; `online` tells whether a user is connected.
    pub fn from_summary(s: &ConversationSummary, online: impl Fn(u64) -> bool) -> Self {
        let peer = s.peer.as_ref().map(|p| Peer {
            id: p.id.0,
            name: p.name.clone(),
            display_name: p.display_name.clone(),
            color: p.color,
            online: online(p.id.0),
        });
        Conversation {
            id: s.id.0,
            kind: match s.kind {
                ConversationKind::Direct => "direct",
                ConversationKind::Group => "group",
            },
            title: match &s.peer {
                Some(p) if s.kind == ConversationKind::Direct => {
                    p.display_name.clone().unwrap_or_else(|| p.name.clone())
                }
                _ => s.title.clone(),
            },
            owner: match s.kind {
                ConversationKind::Group => Some(s.owner.0),
                ConversationKind::Direct => None,
            },
            peer,
            member_count: s.member_count,
            last_seq: s.last_seq,
            last_time: s.last_ms,
            read_seq: s.read_seq,
            unread: s.unread,
            mentions: s.mentions,
            muted: s.muted,
            last_message: s.last_message.as_ref().map(|m| Preview {
                seq: m.seq,
                sender: m.sender.0,
                sender_name: m.sender_name.clone(),
                text: m.text.chars().take(PREVIEW_CHARS).collect(),
                time: m.time_ms,
                unreadable: m.unreadable,
                deleted: m.extra.deleted,
                edited: m.extra.edited,
            }),
        }
    }
}

/// A member as listed by `members`.
#[derive(Debug, Serialize, Clone)]
pub struct Member {
    pub id: u64,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub color: &'static str,
    /// "owner" or "member".
    pub role: &'static str,
    pub read_seq: u64,
    pub online: bool,
}

impl Member {
    pub fn from_info(m: &MemberInfo, online: bool) -> Self {
        Member {
            id: m.id.0,
            name: m.name.clone(),
            display_name: m.display_name.clone(),
            color: m.color,
            role: if m.owner { "owner" } else { "member" },
            read_seq: m.read_seq,
            online,
        }
    }
}

/// A chat message as delivered.
#[derive(Debug, Serialize, Clone)]
pub struct Message {
    pub conversation: u64,
    pub seq: u64,
    pub sender: u64,
    pub sender_name: String,
    /// Server time of the commit, ms since the Unix epoch.
    pub time: u64,
    pub client_id: String,
    pub text: String,
    /// The seq of the message this one answers (same conversation); absent if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Present (true) only on a marker: the server could not read the message at this seq
    /// (damaged storage); sender, time, client_id and text are empty. See docs/PROTOCOL.md.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// Files attached to the message (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::model::Attachment>,
    /// "text", "edit", "delete", "reaction" or "system".
    pub kind: &'static str,
    /// The seq an edit, delete or reaction applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<crate::model::Reaction>,
    /// Reaction events: the emoji, and whether the toggle added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::model::SystemEvent>,
}

impl Message {
    pub fn from_stored(m: &StoredMessage) -> Self {
        Message {
            conversation: m.conversation.0,
            seq: m.seq,
            sender: m.sender.0,
            sender_name: m.sender_name.clone(),
            time: m.time_ms,
            client_id: m.client_id.clone(),
            text: m.text.clone(),
            reply_to: m.reply_to,
            unreadable: m.unreadable,
            attachments: m.attachments.clone(),
            kind: m.extra.kind.name(),
            target: m.extra.target,
            edited: m.extra.edited,
            deleted: m.extra.deleted,
            mentions: m.extra.mentions.clone(),
            reactions: m.extra.reactions.clone(),
            emoji: m.extra.emoji.clone(),
            added: (m.extra.kind == crate::model::MessageKind::Reaction).then_some(m.extra.added),
            system: m.extra.system.clone(),
        }
    }
}

/// The `message` frame of a borrowed stored message: the same JSON as
/// `ServerFrame::Message { message: Message::from_stored(..) }`, without copying the strings
/// first (catch-up encodes every replayed message this way).
/// Without `type` it is one element of a `messages` frame's array.
#[derive(Serialize)]
pub struct MessageFrameRef<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    conversation: u64,
    seq: u64,
    sender: u64,
    sender_name: &'a str,
    time: u64,
    client_id: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unreadable: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attachments: &'a [crate::model::Attachment],
    #[serde(rename = "kind")]
    message_kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    edited: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    mentions: &'a [u64],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    reactions: &'a [crate::model::Reaction],
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    added: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a crate::model::SystemEvent>,
}

impl<'a> MessageFrameRef<'a> {
    pub fn new(m: &'a MessageRef<'_>) -> Self {
        MessageFrameRef {
            kind: Some("message"),
            ..Self::item(m)
        }
    }

    /// The same message as an element of a `messages` frame (no `type`).
    pub fn item(m: &'a MessageRef<'_>) -> Self {
        let x = &m.extra;
        MessageFrameRef {
            kind: None,
            conversation: m.conversation.0,
            seq: m.seq,
            sender: m.sender.0,
            sender_name: m.sender_name,
            time: m.time_ms,
            client_id: m.client_id,
            text: m.text,
            reply_to: m.reply_to,
            unreadable: m.unreadable,
            attachments: m.attachments,
            message_kind: x.kind.name(),
            target: x.target,
            edited: x.edited,
            deleted: x.deleted,
            mentions: &x.mentions,
            reactions: &x.reactions,
            emoji: x.emoji.as_deref(),
            added: (x.kind == crate::model::MessageKind::Reaction).then_some(x.added),
            system: x.system.as_ref(),
        }
    }
}

/// Limits a client should respect, sent in `welcome`.
#[derive(Debug, Serialize, Clone)]
pub struct ClientLimits {
    pub max_message_bytes: usize,
    /// Longest message text in characters (Unicode code points); longer gets `text_too_long`.
    pub max_message_chars: usize,
    pub max_frame_bytes: usize,
    pub history_limit: u32,
    pub ping_interval_ms: u64,
    pub idle_timeout_ms: u64,
}

/// Every frame the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every connection.
    Welcome {
        protocol: u32,
        server: &'static str,
        user: UserRef,
        /// Identifies this database's history; if it differs from the one a client remembers,
        /// the database was restored and the client should drop its cache and cursors.
        epoch: String,
        limits: ClientLimits,
        conversations: Vec<Conversation>,
    },
    /// A message in one of the user's conversations (live or replayed after `sync`).
    Message {
        #[serde(flatten)]
        message: Message,
    },
    /// Replayed messages of one conversation, ascending and continuing the client's cursor with
    /// no gap (after a `sync` with `batch: true`). Catch-up writes this frame itself
    /// (`hub::FrameBuf`) from the database pages; this variant is its typed form.
    Messages {
        conversation: u64,
        messages: Vec<Message>,
    },
    /// The sender's own device: the message with `client_id` (or the event a frame asked
    /// for) is stored durably as `seq`. A `mute` is answered without `seq` and `time`.
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        conversation: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        time: Option<u64>,
    },
    /// Everything missed before the `sync` has been delivered.
    Synced {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
    },
    /// Reply to `history`.
    History {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        conversation: u64,
        messages: Vec<Message>,
        /// True when the oldest message (seq 1) is included: nothing older exists.
        complete: bool,
    },
    /// Reply to `conversations`.
    Conversations {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        conversations: Vec<Conversation>,
    },
    /// A conversation was created, or the user was added to one, or its members changed.
    Conversation {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        conversation: Conversation,
    },
    /// The user is no longer a member of `conversation` (left or removed).
    Removed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        conversation: u64,
    },
    /// Reply to `members`.
    Members {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        conversation: u64,
        members: Vec<Member>,
    },
    /// Reply to `search`: results newest first; `next` (absent on the last page) is the
    /// `before` of the next page.
    SearchResults {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        results: Vec<SearchResult>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Reply to `users`.
    Users {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        users: Vec<DirectoryUser>,
    },
    /// `user` has read `conversation` up to `seq` (to the reader's other devices, and as a
    /// read receipt to the other members).
    Read {
        conversation: u64,
        user: u64,
        seq: u64,
    },
    /// `user` is typing in `conversation`; shows for a few seconds unless repeated.
    Typing {
        conversation: u64,
        user: u64,
        name: String,
    },
    /// A user who shares a conversation with you came online or went offline.
    Presence { user: u64, online: bool },
    /// A user changed their display name or avatar colour (sent to every connected user).
    UserUpdated { user: UserRef },
    /// A request failed; the connection stays open.
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        /// Set when the failed request was a `send`.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        code: ErrorCode,
        message: String,
        /// `cursor_ahead` only: the conversation whose cursor is ahead, and its `last_seq`.
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
    },
}

/// One search result: where the message is, who sent it when, and a snippet of its text
/// with the matched words marked by `highlights`: `[start, end)` offsets in characters
/// (Unicode code points) of `snippet`.
#[derive(Debug, Serialize, Clone)]
pub struct SearchResult {
    pub conversation: u64,
    pub seq: u64,
    pub sender: u64,
    pub sender_name: String,
    pub time: u64,
    pub snippet: String,
    pub highlights: Vec<[usize; 2]>,
}

/// Machine-readable error codes of `error` frames.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// The `type` is missing or not one listed in this document.
    UnknownType,
    /// A field is missing, has the wrong type, or a value is out of range.
    BadFrame,
    /// No such conversation, or you are not a member (the two are indistinguishable).
    NotFound,
    /// No such user.
    UserNotFound,
    /// Only the group owner may do that, or it is not allowed for this kind of conversation.
    Forbidden,
    /// The text is empty or only whitespace.
    EmptyText,
    /// The text is longer than `max_message_chars` characters.
    TextTooLong,
    /// Too many frames; slow down. Persisting floods close the connection (1008).
    RateLimited,
    /// A `sync` cursor is above the conversation's `last_seq` (a history the server does not
    /// have, e.g. from before a restore): the sync did not start.
    CursorAhead,
    /// The server failed; retry later (sends are safe to retry with the same client_id).
    Internal,
    /// A `search` query the server cannot run (empty, too long, an unclosed quote, a filter
    /// with no value, a bad date, only punctuation); the message says which.
    BadQuery,
    /// Search is not available yet (the index is opening); retry in a moment.
    SearchUnavailable,
    /// The server's disk is full: nothing was stored. Retry later (the server resumes writing
    /// by itself once space is free; reads keep working meanwhile).
    StorageFull,
    /// The server cannot write to its disk (an I/O error): nothing was stored. Retry later.
    StorageError,
}

impl ServerFrame {
    /// An error frame.
    pub fn error(
        reference: Option<u64>,
        client_id: Option<String>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        ServerFrame::Error {
            reference,
            client_id,
            code,
            message: message.into(),
            conversation: None,
            last_seq: None,
        }
    }

    /// The `cursor_ahead` error for `conversation`, whose newest message is `last_seq`.
    pub fn cursor_ahead(
        reference: Option<u64>,
        conversation: u64,
        cursor: u64,
        last_seq: u64,
    ) -> Self {
        ServerFrame::Error {
            reference,
            client_id: None,
            code: ErrorCode::CursorAhead,
            message: format!(
                "the cursor {cursor} of conversation {conversation} is past its last message \
                 ({last_seq}): this is another history (check the epoch); nothing was synced"
            ),
            conversation: Some(conversation),
            last_seq: Some(last_seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> (Option<u64>, Option<String>, ErrorCode) {
        let e = decode(text).unwrap_err();
        (e.reference, e.client_id, e.code)
    }

    #[test]
    fn frames_parse() {
        let e = decode(r#"{"type":"send","ref":1,"client_id":"a","to":2,"text":"hi"}"#).unwrap();
        assert_eq!(e.reference, Some(1));
        assert!(matches!(e.frame, ClientFrame::Send { to: Some(2), .. }));
        let e = decode(r#"{"type":"sync"}"#).unwrap();
        assert!(
            matches!(e.frame, ClientFrame::Sync { ref cursors, batch } if cursors.is_empty() && !batch)
        );
        let e =
            decode(r#"{"type":"sync","cursors":[{"conversation":7,"seq":2,"x":[1]}]}"#).unwrap();
        let ClientFrame::Sync { cursors, .. } = e.frame else {
            panic!("not a sync")
        };
        assert_eq!(
            cursors,
            vec![Cursor {
                conversation: 7,
                seq: 2
            }]
        );
        let e = decode(r#"{"type":"conversations"}"#).unwrap();
        assert!(matches!(e.frame, ClientFrame::Conversations));
    }

    #[test]
    fn parse_errors_are_classified() {
        assert_eq!(rejected("{oops").2, ErrorCode::BadJson);
        assert_eq!(rejected("[1,2]").2, ErrorCode::BadJson);
        assert_eq!(rejected(r#"{"text":"hi"}"#).2, ErrorCode::UnknownType);
        assert_eq!(
            rejected(r#"{"type":"dance","ref":3}"#),
            (Some(3), None, ErrorCode::UnknownType)
        );
        assert_eq!(
            rejected(r#"{"type":"send","ref":9,"client_id":"c1"}"#),
            (Some(9), Some("c1".into()), ErrorCode::BadFrame)
        );
        assert_eq!(
            rejected(r#"{"type":"read","conversation":"x","seq":1}"#).2,
            ErrorCode::BadFrame
        );
        // A ref that can be read before the JSON breaks is echoed with bad_json.
        assert_eq!(
            rejected(r#"{"type":"conversations","ref":60,}"#),
            (Some(60), None, ErrorCode::BadJson)
        );
        assert_eq!(
            rejected(r#"{"type":"send","ref":62,"client_id":"c62","text":"unterminated"#),
            (Some(62), Some("c62".into()), ErrorCode::BadJson)
        );
        // Duplicate keys and deep nesting: bad_frame.
        assert_eq!(
            rejected(r#"{"type":"send","ref":5,"client_id":"d","to":2,"text":"a","text":"b"}"#),
            (Some(5), Some("d".into()), ErrorCode::BadFrame)
        );
        let deep = format!(
            r#"{{"type":"sync","ref":6,"x":{}{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(rejected(&deep), (Some(6), None, ErrorCode::BadFrame));
    }

    /// serde matches a variant by its index too: `{"type":1}` was `send` (the second variant).
    #[test]
    fn an_integer_or_other_non_string_type_is_unknown() {
        for i in 0..=20 {
            let text = format!(
                r#"{{"type":{i},"ref":{i},"client_id":"x","to":2,"conversation":1,"seq":1,"user":3,"title":"t","members":[1],"text":"hi"}}"#
            );
            assert_eq!(
                rejected(&text),
                (Some(i), Some("x".into()), ErrorCode::UnknownType),
                "{text}"
            );
        }
        for t in [
            "-1",
            "1.0",
            "true",
            "null",
            "[\"send\"]",
            "{\"send\":1}",
            "\"Send\"",
            "\"\"",
        ] {
            let text = format!(r#"{{"type":{t}}}"#);
            assert_eq!(rejected(&text).2, ErrorCode::UnknownType, "{text}");
        }
    }

    /// serde's derive takes a struct given as an array, by position: not for us.
    #[test]
    fn a_cursor_given_by_position_is_refused() {
        let e = decode(r#"{"type":"sync","ref":4,"cursors":[[7,2]]}"#).unwrap_err();
        assert_eq!((e.reference, e.code), (Some(4), ErrorCode::BadFrame));
        let e = decode(r#"{"type":"sync","cursors":[{"conversation":7}]}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert!(e.message.contains("seq"), "{}", e.message);
    }

    fn check(text: &str) -> Result<(), ErrorCode> {
        decode(text)
            .unwrap()
            .frame
            .check(1, 100, 400, 100)
            .map_err(|e| e.code)
    }

    #[test]
    fn values_are_checked() {
        use ErrorCode::*;
        let ok = [
            r#"{"type":"send","client_id":"c","to":2,"text":"hi"}"#,
            r#"{"type":"send","client_id":"c","conversation":2,"text":"hi"}"#,
            r#"{"type":"history","conversation":2,"limit":100}"#,
            r#"{"type":"create_group","title":" t ","members":[]}"#,
            r#"{"type":"add_members","conversation":2,"members":[3]}"#,
            r#"{"type":"remove_member","conversation":2,"user":3}"#,
            r#"{"type":"users","query":"abc","limit":1}"#,
        ];
        for f in ok {
            assert_eq!(check(f), Ok(()), "{f}");
        }
        let long = format!(
            r#"{{"type":"send","client_id":"c","to":2,"text":"{}"}}"#,
            "x".repeat(101)
        );
        let bad = [
            (
                r#"{"type":"send","client_id":"","to":2,"text":"hi"}"#,
                BadFrame,
            ),
            (
                r#"{"type":"send","client_id":"c","to":1,"text":"hi"}"#,
                BadFrame,
            ),
            (r#"{"type":"send","client_id":"c","text":"hi"}"#, BadFrame),
            (
                r#"{"type":"send","client_id":"c","to":2,"conversation":2,"text":"hi"}"#,
                BadFrame,
            ),
            (
                r#"{"type":"send","client_id":"c","to":2,"text":" \n"}"#,
                EmptyText,
            ),
            (long.as_str(), TextTooLong),
            (r#"{"type":"history","conversation":2,"limit":0}"#, BadFrame),
            (
                r#"{"type":"history","conversation":2,"limit":101}"#,
                BadFrame,
            ),
            (r#"{"type":"create_group","title":"  "}"#, BadFrame),
            (
                r#"{"type":"add_members","conversation":2,"members":[]}"#,
                BadFrame,
            ),
            (
                r#"{"type":"remove_member","conversation":2,"user":1}"#,
                BadFrame,
            ),
            (r#"{"type":"users","limit":101}"#, BadFrame),
        ];
        for (f, code) in bad {
            assert_eq!(check(f), Err(code), "{f}");
        }
        let cid = "é".repeat(65);
        let f = format!(r#"{{"type":"send","client_id":"{cid}","to":2,"text":"hi"}}"#);
        assert_eq!(check(&f), Err(BadFrame));
        assert_eq!(check(&f.replace(&cid, &"é".repeat(64))), Ok(()));
        // The text is counted in characters: 100 four-byte characters pass, 101 do not.
        let text = |t: String| format!(r#"{{"type":"send","client_id":"c","to":2,"text":"{t}"}}"#);
        assert_eq!(check(&text("😀".repeat(100))), Ok(()));
        assert_eq!(check(&text("😀".repeat(101))), Err(TextTooLong));
    }
}
