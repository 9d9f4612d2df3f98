//! The WebSocket wire contract, version `PROTOCOL_VERSION`: every frame a client may send
//! (`ClientFrame`) and every frame the server sends (`ServerFrame`), as typed serde enums tagged
//! by a `"type"` field, plus the error codes. `docs/PROTOCOL.md` documents exactly these types;
//! a change here is a change to that document.
//!
//! Only this module (and the HTTP API's request/response structs) derive serde for the wire.
//! Numbers that can exceed 2^53 (the database epoch) are sent as strings, so JavaScript clients
//! read them exactly.

use serde::{Deserialize, Serialize};

use crate::model::{ConversationKind, ConversationSummary, MemberInfo, MessageRef, StoredMessage};

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
        text: String,
    },
    /// Older messages: up to `limit` (1-100, default 50) messages with seq < `before`
    /// (default: from the newest), returned oldest first.
    History {
        conversation: u64,
        #[serde(default)]
        before: Option<u64>,
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
#[derive(Debug, Deserialize, Clone, Copy)]
pub struct Cursor {
    pub conversation: u64,
    pub seq: u64,
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
    /// Messages from others after `read_seq`.
    pub unread: u64,
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
            unread: s.last_seq.saturating_sub(s.read_seq),
            last_message: s.last_message.as_ref().map(|m| Preview {
                seq: m.seq,
                sender: m.sender.0,
                sender_name: m.sender_name.clone(),
                text: m.text.chars().take(PREVIEW_CHARS).collect(),
                time: m.time_ms,
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
}

impl<'a> MessageFrameRef<'a> {
    pub fn new(m: &MessageRef<'a>) -> Self {
        MessageFrameRef {
            kind: Some("message"),
            ..Self::item(m)
        }
    }

    /// The same message as an element of a `messages` frame (no `type`).
    pub fn item(m: &MessageRef<'a>) -> Self {
        MessageFrameRef {
            kind: None,
            conversation: m.conversation.0,
            seq: m.seq,
            sender: m.sender.0,
            sender_name: m.sender_name,
            time: m.time_ms,
            client_id: m.client_id,
            text: m.text,
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
    /// The sender's own device: the message with `client_id` is stored durably as `seq`.
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        client_id: String,
        conversation: u64,
        seq: u64,
        time: u64,
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
    },
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
    /// The server failed; retry later (sends are safe to retry with the same client_id).
    Internal,
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
        }
    }
}
