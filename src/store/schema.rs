//! Every redb table chatd keeps, its key and value layout, and the schema version.
//!
//! This file is the database's contract with itself: `docs/ARCHITECTURE.md` copies the table list.
//! Values that are records (`&[u8]`) are encoded by `store::codec`, starting with a record-version
//! byte. Keys are redb's native tuple types, which sort field by field, so range scans give
//! "all messages of a conversation in seq order" or "a user's conversations" without key tricks.
//! Changing a layout means bumping `SCHEMA_VERSION` and adding a step to `store::migrate`.

use redb::TableDefinition;

/// The schema this build writes. Databases with a higher number are refused; lower ones are
/// migrated forward on open.
pub const SCHEMA_VERSION: u64 = 5;
// What each schema version changed, oldest first (`store::migrate` applies the steps):
// 1. The first release layout.
// 2. `META_MESSAGE_COUNT` (messages stored, kept by every send; counted once on upgrade).
// 3. `read_positions` (read_seq, activity_ms) + `activity` index replaced by `read_seqs`
//    (read_seq only): the recent-conversations order is computed from `conversations.last_ms`
//    when a list is read, so a message no longer rewrites one index entry per member. And
//    `message_count` is gone again: redb keeps every table's length in its header.
// 4. Every record (users, sessions, conversations, messages) is sealed with a CRC-32C of its
//    key and bytes (`codec::seal`), checked on every read. Message records v2: varints, no
//    sender name (looked up in `users`), kind 2 = a lost message's marker (`chatd repair`).
// 5. Message records v3 (`reply_to`) and v4 (kinds edit/delete/reaction/system, edited and
//    deleted flags, mentions, reactions); conversation records v2 (`last_text_seq`); tables
//    `event_seqs`, `mentions`, `mutes`. Older records read as they are: nothing is rewritten.

/// Small counters and settings: `schema_version`, `epoch` (random, set when the database is
/// created or restored, so clients can tell a restored database from the one they knew),
/// `next_user_id`, `next_conversation_id` (and, in schema 2 only, `message_count`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_EPOCH: &str = "epoch";
pub const META_NEXT_USER: &str = "next_user_id";
pub const META_NEXT_CONVERSATION: &str = "next_conversation_id";
/// The number of the last write-ahead-log batch applied to this database (see `store::wal`).
/// Written by every logged batch; recovery re-applies only later batches.
pub const META_WAL_APPLIED: &str = "wal_applied";

/// 1 while the log in the data directory may hold batches this database lacks: set by a
/// durable commit when the store opens the log (and before the first batch after a clean stop's
/// checkpoint), cleared by that checkpoint. A start that finds it set while a log file is
/// missing refuses (`store::recover`). A backup's copy has it cleared.
pub const META_WAL_OPEN: &str = "wal_open";

/// Schema 2 only (set by the 1 → 2 step, removed by 2 → 3).
pub const META_MESSAGE_COUNT: &str = "message_count";

/// user id → user record v1: name, password PHC string, flags (1 = admin, 2 = disabled),
/// created_ms; or v2: the same, then display name (empty = none) and avatar colour (0 = the
/// default for the id, else a palette index + 1). v1 is still written while both are unset.
/// Sealed (schema 4: the record, then CRC-32C of key and record; `codec::seal`).
pub const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");

/// lowercase name → user id. Makes names unique regardless of case.
pub const USER_NAMES: TableDefinition<&str, u64> = TableDefinition::new("user_names");

/// BLAKE2b-256(token) → session record v1: user id, kind (1 = cookie, 2 = bearer token),
/// created_ms, expires_ms (0 = never), label. Only the hash is stored, so a copy of the
/// database does not hand out live sessions. Sealed.
pub const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");

/// (user id, token hash) → (). Finds every session of a user, to revoke them on disable or
/// password change.
pub const USER_SESSIONS: TableDefinition<(u64, &[u8; 32]), ()> =
    TableDefinition::new("user_sessions");

/// conversation id → conversation record v1: kind (1 = direct, 2 = group), title, owner id,
/// created_ms, last_seq (highest message seq, 0 = none yet), last_ms (time of last activity),
/// member_count. Sealed.
pub const CONVERSATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("conversations");

/// (conversation id, user id) → role (1 = member, 2 = owner). The members of a conversation,
/// in user-id order: used for membership checks and fan-out.
pub const MEMBERS: TableDefinition<(u64, u64), u8> = TableDefinition::new("members");

/// (user id, conversation id) → read_seq: the conversations of a user and how far the user has
/// read each one (never moves backwards; sending moves it to the sent message, so unread =
/// last_seq - read_seq counts only others' messages). A user's conversation list is a range
/// scan here; its "newest activity first" order comes from each conversation's `last_ms`.
pub const READ_SEQS: TableDefinition<(u64, u64), u64> = TableDefinition::new("read_seqs");

/// Schema ≤ 2 only (read by the upgrade step, then deleted): (user id, conversation id) →
/// (read_seq, activity_ms).
pub const OLD_READ_POSITIONS: TableDefinition<(u64, u64), (u64, u64)> =
    TableDefinition::new("read_positions");

/// Schema ≤ 2 only (deleted by the upgrade step): (user id, last_ms, conversation id) → ().
pub const OLD_ACTIVITY: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("activity");

/// (lower user id, higher user id) → conversation id: the one direct conversation per pair.
pub const DIRECT_PAIRS: TableDefinition<(u64, u64), u64> = TableDefinition::new("direct_pairs");

/// (conversation id, seq) → message record v2 (see `store::messages`): sender id, server time
/// ms, kind (1 = text, 2 = a lost message's marker), client_id, text; sealed. Seqs start at 1
/// and have no gaps within a conversation. (v1, schema ≤ 3: fixed-width integers and the
/// sender's name in every record.)
pub const MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages");

/// (conversation id, seq) → (): the seqs that are events (edit, delete, reaction, system), not
/// text messages (schema 5, issue 23): unread counts are the seqs after the read position less
/// these.
pub const EVENT_SEQS: TableDefinition<(u64, u64), ()> = TableDefinition::new("event_seqs");

/// (user id, conversation id, seq) → (): text message `seq` mentions the user (schema 5).
pub const MENTIONS: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("mentions");

/// (user id, conversation id) → (): the user muted the conversation (schema 5).
pub const MUTES: TableDefinition<(u64, u64), ()> = TableDefinition::new("mutes");

/// (sender id, `client_id_hash(client_id)`) → (conversation id, seq): makes sends idempotent.
/// Kept as long as the message it points to. Fixed-width keys (schema 4): 32 bytes per message
/// where the `client_id` string itself made ~46 plus the offsets of a variable-width key; a hit
/// is checked against the message's own sender and client_id, so a collision of two of one
/// sender's ids (2^-64) only makes the later send count as new.
pub const CLIENT_IDS: TableDefinition<(u64, u64), (u64, u64)> =
    TableDefinition::new("client_id_hashes");

/// Schema ≤ 3 only (replaced by `CLIENT_IDS` in the 3 → 4 step): (sender id, client_id) →
/// (conversation id, seq).
pub const OLD_CLIENT_IDS: TableDefinition<(u64, &str), (u64, u64)> =
    TableDefinition::new("client_ids");

/// The key part of a `client_id` in `CLIENT_IDS`: FNV-1a 64 of its UTF-8 bytes (stable: it
/// is on disk).
pub fn client_id_hash(client_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// ---- Tables added without a schema version change (created when missing on open; an older
// chatd of the same schema ignores them) ----------------------------------------------------

/// Runtime settings an admin changes from the web: `registration` (1 = open, 2 = closed; absent:
/// the `--registration` flag decides), `name_skeleton_version` (the `model::skeleton_version`
/// the skeleton index was built with).
pub const SETTINGS: TableDefinition<&str, u64> = TableDefinition::new("settings");

pub const SETTING_REGISTRATION: &str = "registration";
pub const SETTING_SKELETON_VERSION: &str = "name_skeleton_version";

/// invite code → invite record v1: uses_left, expires_ms, created_by (user id), created_ms. A
/// used-up invite is deleted; an expired one is deleted when the next invite is created.
pub const INVITES: TableDefinition<&str, &[u8]> = TableDefinition::new("invites");

/// (confusable skeleton of the name, user id) → (): look-alike names (`model::name_skeleton`)
/// are refused with one lookup. Rebuilt on open when it does not cover every user or was built
/// with another skeleton version.
pub const USER_SKELETONS: TableDefinition<(&str, u64), ()> = TableDefinition::new("user_skeletons");

/// user id → last time (ms) the user had a connection open, as of their last disconnect (the
/// server keeps newer times in memory and writes them in batches, `lastseen`).
pub const LAST_SEEN: TableDefinition<u64, u64> = TableDefinition::new("last_seen");
