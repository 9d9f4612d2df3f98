//! Domain types shared by every layer: identifiers and the records the store hands out.
//!
//! These are not wire types (see `proto` and `http::api` for those) and not storage encodings
//! (see `store::codec`): renaming a field here changes neither the protocol nor the database.

use std::fmt;

/// A user's permanent numeric id (never reused, assigned from a counter in the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// A conversation's permanent numeric id (direct or group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(pub u64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// The name as the user typed it; uniqueness is by `name_key(name)`.
    pub name: String,
    /// Argon2id PHC string (`$argon2id$v=19$m=...`), so parameters can be raised later.
    pub password_hash: String,
    pub admin: bool,
    pub disabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// What the user chose to be called; `None`: shown by `name`.
    pub display_name: Option<String>,
    /// Avatar colour: an index into `COLORS` plus one; 0 = the default for the id
    /// (`User::color_name`).
    pub color: u8,
}

impl User {
    /// What readers see of an account whose record is damaged (reported by the store): its id,
    /// no name, disabled.
    pub fn unreadable(id: UserId) -> User {
        User {
            id,
            name: String::new(),
            password_hash: String::new(),
            admin: false,
            disabled: true,
            created_ms: 0,
            display_name: None,
            color: 0,
        }
    }

    /// The avatar colour's name (`COLORS`): the chosen one, else one derived from the id.
    pub fn color_name(&self) -> &'static str {
        color_name(self.id, self.color)
    }

    /// How other people see this user: the display name, else the account name.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// The avatar colour palette, by name (the web client maps each name to its shade).
pub const COLORS: [&str; 12] = [
    "red", "orange", "amber", "lime", "green", "teal", "cyan", "blue", "indigo", "violet", "pink",
    "slate",
];

/// The name of colour `color` (`User::color`) for `id`.
pub fn color_name(id: UserId, color: u8) -> &'static str {
    match color
        .checked_sub(1)
        .and_then(|i| COLORS.get(usize::from(i)))
    {
        Some(c) => c,
        None => COLORS[(id.0 % COLORS.len() as u64) as usize],
    }
}

/// The stored value (`User::color`) of a colour name, if it is in the palette.
pub fn color_index(name: &str) -> Option<u8> {
    COLORS
        .iter()
        .position(|c| *c == name)
        .and_then(|i| u8::try_from(i + 1).ok())
}

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Checks and normalizes a display name: trimmed, 1–64 characters, no control characters
/// (and none of the invisible formatting characters that could hide or reorder text).
pub fn validate_display_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 {
        return Err("display name must not be empty (send null to clear it)");
    }
    if count > MAX_DISPLAY_NAME_CHARS {
        return Err("display name must be at most 64 characters");
    }
    if name.chars().any(|c| {
        c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    }) {
        return Err("display name must not contain control or invisible formatting characters");
    }
    Ok(name.to_string())
}

/// The key look-alike names collide under: the Unicode TR39 confusable skeleton, taken
/// case-insensitively (skeleton, lowercase, skeleton again), so `аlice` (Cyrillic а), `aIice`
/// (capital I for the l), `a1ice` and `Alice` meet `alice`. Names are unique by this key as
/// well as by `name_key` (which catches `ALICE`). The confusables data is the
/// `unicode-security` crate's (Unicode's confusables.txt).
pub fn name_skeleton(name: &str) -> String {
    let once: String = unicode_security::skeleton(name).collect();
    unicode_security::skeleton(&once.to_lowercase()).collect()
}

/// Identifies the skeleton function (the Unicode version of its data, and the steps above): a
/// stored skeleton index made with another one is rebuilt.
pub fn skeleton_version() -> u64 {
    let (a, b, c) = unicode_security::UNICODE_VERSION;
    // Bump the first factor when `name_skeleton` changes.
    1_000_000_000 + a * 1_000_000 + b * 1000 + c
}

/// What a session token was issued as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// A browser login cookie; expires.
    Cookie,
    /// A bearer token for scripts and bots (`chatd token create`).
    Token,
}

/// A stored session (looked up by the hash of its token; the token itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: UserId,
    pub kind: SessionKind,
    pub created_ms: u64,
    /// 0 = never expires (bearer tokens).
    pub expires_ms: u64,
    /// Free text for tokens ("ci bot"); empty for cookies.
    pub label: String,
}

/// The key a user name is unique under: Unicode lowercase, so "Alice" and "alice" collide.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// Checks a user name: 1–32 characters, letters (any script), digits, `_`, `-`, `.`.
pub fn validate_user_name(name: &str) -> Result<(), &'static str> {
    let count = name.chars().count();
    if count == 0 {
        return Err("name must not be empty");
    }
    if count > MAX_NAME_CHARS {
        return Err("name must be at most 32 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("name may contain only letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest accepted password, in bytes (argon2 cost does not depend on it, but parsing does).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a password's length.
pub fn validate_password(pw: &str) -> Result<(), &'static str> {
    if pw.len() < MIN_PASSWORD_BYTES {
        return Err("password must be at least 8 bytes");
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err("password must be at most 1024 bytes");
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("张伟").is_ok());
        assert!(validate_user_name("a.b-c_d9").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("a b").is_err());
        assert!(validate_user_name("<script>").is_err());
        assert!(validate_user_name(&"x".repeat(33)).is_err());
        assert!(validate_user_name(&"字".repeat(32)).is_ok());
        assert_eq!(name_key("Alice"), name_key("aLICE"));
    }

    #[test]
    fn look_alike_names_share_a_skeleton() {
        let alice = name_skeleton("alice");
        for fake in [
            "\u{430}lice",
            "aIice",
            "a1ice",
            "Alice",
            "al\u{456}ce",
            "\u{251}lice",
        ] {
            assert_eq!(name_skeleton(fake), alice, "{fake:?}");
        }
        for other in ["alicia", "bob", "malice", "\u{5f20}\u{4f1f}"] {
            assert_ne!(name_skeleton(other), alice, "{other:?}");
        }
        assert_eq!(name_skeleton("rn"), name_skeleton("m"));
        assert_eq!(name_skeleton("paypa1"), name_skeleton("PayPal"));
    }

    #[test]
    fn display_names_and_colors() {
        assert_eq!(validate_display_name("  Alice A.  ").unwrap(), "Alice A.");
        assert!(validate_display_name("   ").is_err());
        assert!(validate_display_name(&"x".repeat(65)).is_err());
        assert!(validate_display_name(&"字".repeat(64)).is_ok());
        assert!(validate_display_name("a\u{7}b").is_err());
        assert!(validate_display_name("evil\u{202e}gnp.exe").is_err());
        assert_eq!(color_index("blue"), Some(8));
        assert_eq!(color_index("mauve"), None);
        assert_eq!(color_name(UserId(5), 8), "blue");
        assert_eq!(color_name(UserId(1), 0), COLORS[1]);
        assert_eq!(color_name(UserId(1), 200), COLORS[1]);
    }
}

/// Direct (exactly two members, one per pair) or group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversationKind {
    Direct,
    Group,
}

/// A stored chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub conversation: ConversationId,
    pub seq: u64,
    pub sender: UserId,
    /// The sender's name (names never change; looked up when the message is read).
    pub sender_name: String,
    pub time_ms: u64,
    pub client_id: String,
    pub text: String,
    /// The seq (same conversation) this message answers, if it is a reply.
    pub reply_to: Option<u64>,
    /// The store could not read this message (its record is damaged or was lost): only the
    /// conversation and seq are real, the rest is empty.
    pub unreadable: bool,
    /// Files attached to the message (kept in `store::files`, not in the message record).
    pub attachments: Vec<Attachment>,
    /// Its kind and what goes with it (events, edits, reactions, mentions).
    pub extra: MessageExtra,
}

/// What a seq of a conversation's log is: a text message, or an event (issue 23).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageKind {
    #[default]
    Text,
    /// Changed the text of message `target`.
    Edit,
    /// Deleted message `target`.
    Delete,
    /// Toggled a reaction on message `target`.
    Reaction,
    /// A group line: created, added, removed, left, renamed.
    System,
}

impl MessageKind {
    /// The wire name (`kind` in message frames).
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Edit => "edit",
            MessageKind::Delete => "delete",
            MessageKind::Reaction => "reaction",
            MessageKind::System => "system",
        }
    }
}

/// The users who reacted to a message with one emoji, in the order they did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reaction {
    pub emoji: String,
    pub users: Vec<u64>,
}

/// What a system line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemAction {
    Created,
    Added,
    Removed,
    Left,
    Renamed,
}

/// The body of a `system` message (`system` in its frame).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SystemEvent {
    pub action: SystemAction,
    /// Added or removed users.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<u64>,
    /// Their display names when it happened, in the same order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The group title (created, renamed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A message's kind and current state beyond its text (all empty for a plain text message,
/// which costs no allocation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageExtra {
    pub kind: MessageKind,
    /// The seq an edit, delete or reaction applies to.
    pub target: Option<u64>,
    /// A text message whose text was changed.
    pub edited: bool,
    /// A text message that was deleted (its text, attachments, mentions and reactions are gone).
    pub deleted: bool,
    /// Mentioned users (members when mentioned).
    pub mentions: Vec<u64>,
    /// A text message's reactions, ordered by first reaction.
    pub reactions: Vec<Reaction>,
    /// A reaction event's emoji and whether it added (else removed) the reaction.
    pub emoji: Option<String>,
    pub added: bool,
    pub system: Option<SystemEvent>,
}

/// A stored message borrowed from the database page it was read from (no copies): what
/// catch-up turns straight into wire frames.
#[derive(Clone, Debug)]
pub struct MessageRef<'a> {
    pub conversation: ConversationId,
    pub seq: u64,
    pub sender: UserId,
    pub sender_name: &'a str,
    pub time_ms: u64,
    pub client_id: &'a str,
    pub text: &'a str,
    /// See `StoredMessage::reply_to`.
    pub reply_to: Option<u64>,
    /// See `StoredMessage::unreadable`.
    pub unreadable: bool,
    /// See `StoredMessage::attachments`.
    pub attachments: &'a [Attachment],
    /// See `StoredMessage::extra`.
    pub extra: MessageExtra,
}

impl MessageRef<'_> {
    pub fn to_stored(&self) -> StoredMessage {
        StoredMessage {
            conversation: self.conversation,
            seq: self.seq,
            sender: self.sender,
            sender_name: self.sender_name.to_string(),
            time_ms: self.time_ms,
            client_id: self.client_id.to_string(),
            text: self.text.to_string(),
            reply_to: self.reply_to,
            unreadable: self.unreadable,
            attachments: self.attachments.to_vec(),
            extra: self.extra.clone(),
        }
    }
}

/// A conversation as one user sees it in their list.
#[derive(Clone, Debug)]
pub struct ConversationSummary {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub title: String,
    pub owner: UserId,
    pub member_count: u64,
    pub last_seq: u64,
    pub last_ms: u64,
    /// The viewing user's read position.
    pub read_seq: u64,
    /// Direct conversations: the other user.
    pub peer: Option<Peer>,
    /// The newest text message (current state).
    pub last_message: Option<StoredMessage>,
    /// Text messages after `read_seq` (events do not count).
    pub unread: u64,
    /// Text messages after `read_seq` that mention the viewing user.
    pub mentions: u64,
    /// The viewing user muted the conversation.
    pub muted: bool,
}

/// The other user of a direct conversation, as the list shows them.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: UserId,
    pub name: String,
    pub display_name: Option<String>,
    /// The colour's name (`User::color_name`).
    pub color: &'static str,
}

impl Peer {
    pub fn of(u: &User) -> Peer {
        Peer {
            id: u.id,
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            color: u.color_name(),
        }
    }
}

/// An invite link's code and what is left of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// Random, URL-safe, at least 128 bits.
    pub code: String,
    pub uses_left: u64,
    /// Milliseconds since the Unix epoch; the invite no longer works from then on.
    pub expires_ms: u64,
    pub created_by: UserId,
    pub created_ms: u64,
}

/// A member of a conversation.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub id: UserId,
    pub name: String,
    pub display_name: Option<String>,
    /// The colour's name (`User::color_name`).
    pub color: &'static str,
    pub owner: bool,
    pub read_seq: u64,
}

/// Longest group title, in characters.
pub const MAX_TITLE_CHARS: usize = 64;
/// Longest client_id, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 1000;

/// A file attached to a message, as every message frame carries it (`attachments`), and the
/// upload reply's `file`. `id` is 32 lowercase hex characters (128 random bits).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub mime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// A file id as text: 32 lowercase hex characters.
pub fn file_id_text(id: u128) -> String {
    format!("{id:032x}")
}

/// Parses a file id (`file_id_text`); anything else is `None`.
pub fn parse_file_id(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}
