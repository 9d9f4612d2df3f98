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
    /// The store could not read this message (its record is damaged or was lost): only the
    /// conversation and seq are real, the rest is empty.
    pub unreadable: bool,
}

/// A stored message borrowed from the database page it was read from (no copies): what
/// catch-up turns straight into wire frames.
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    pub conversation: ConversationId,
    pub seq: u64,
    pub sender: UserId,
    pub sender_name: &'a str,
    pub time_ms: u64,
    pub client_id: &'a str,
    pub text: &'a str,
    /// See `StoredMessage::unreadable`.
    pub unreadable: bool,
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
            unreadable: self.unreadable,
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
    pub peer: Option<(UserId, String)>,
    pub last_message: Option<StoredMessage>,
}

/// A member of a conversation.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub id: UserId,
    pub name: String,
    pub owner: bool,
    pub read_seq: u64,
}

/// Longest group title, in characters.
pub const MAX_TITLE_CHARS: usize = 64;
/// Longest client_id, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 1000;
