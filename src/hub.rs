//! The hub: who is online right now (user → their connected sessions) and fan-out of encoded
//! frames to them. In memory only; the store is the source of truth, so nothing here needs to
//! survive a restart.
//!
//! Fan-out never waits: each session has a bounded outbox and `try_send` either queues the frame
//! or, when the outbox is full, flags the session as too slow and wakes it so it closes itself
//! (its client resumes from the store with `sync`; nothing is lost). The shard locks are plain
//! mutexes held only for a map lookup and the `try_send`s, never across an `.await`.
//! A frame is encoded once per fan-out and shared by reference count with every recipient.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::model::UserId;
use crate::proto::ServerFrame;

/// A server frame encoded as JSON once; cloning shares the bytes.
pub type Encoded = Utf8Bytes;

/// Encodes a frame. Serializing our own types cannot fail; if it somehow did, the error is
/// logged and an `internal` error frame goes out instead (never a silent drop).
pub fn encode(frame: &ServerFrame) -> Encoded {
    encode_json(frame)
}

fn encode_json(frame: &impl serde::Serialize) -> Encoded {
    match serde_json::to_string(frame) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!("cannot encode a frame: {e}");
            Utf8Bytes::from_static(INTERNAL_FRAME)
        }
    }
}

const INTERNAL_FRAME: &str = r#"{"type":"error","code":"internal","message":"internal error"}"#;

/// Frames encoded one after another into one buffer and handed out as slices of it: catch-up
/// encodes a page of stored messages straight from the database pages with one allocation for
/// the whole page (one per frame, plus the buffer's regrowth, cost ~12 % of a reconnect storm's
/// server CPU).
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Where each frame ends in `buf`, with its key: a message's seq (for a `messages` frame,
    /// its last message's).
    ends: Vec<(u64, usize)>,
    /// The `messages` frame being written, if any.
    batch: Option<Batch>,
}

struct Batch {
    conversation: u64,
    /// Where the frame starts in `buf`.
    start: usize,
    items: usize,
    last_seq: u64,
}

impl FrameBuf {
    /// Room for about `frames` frames of `bytes_each`.
    pub fn with_capacity(frames: usize, bytes_each: usize) -> FrameBuf {
        FrameBuf {
            buf: Vec::with_capacity(frames.saturating_mul(bytes_each)),
            ends: Vec::with_capacity(frames),
            batch: None,
        }
    }

    /// Starts a `messages` frame of `conversation` (ending any open one).
    pub fn begin_batch(&mut self, conversation: u64) {
        self.end_batch();
        let start = self.buf.len();
        // Writing to a Vec cannot fail.
        let _ = write!(
            self.buf,
            r#"{{"type":"messages","conversation":{conversation},"messages":["#
        );
        self.batch = Some(Batch {
            conversation,
            start,
            items: 0,
            last_seq: 0,
        });
    }

    /// Appends a message to the open `messages` frame (without one, it is a `message` frame).
    pub fn push_batch_item(&mut self, m: &crate::model::MessageRef<'_>) {
        let Some(b) = self.batch.as_mut() else {
            return self.push_message(m);
        };
        let start = self.buf.len();
        if b.items > 0 {
            self.buf.push(b',');
        }
        match serde_json::to_writer(&mut self.buf, &crate::proto::MessageFrameRef::item(m)) {
            Ok(()) => {
                b.items += 1;
                b.last_seq = m.seq;
            }
            Err(e) => {
                // Never a silent gap: the messages so far, this error in place of the message
                // (its seq, so the cursor moves past it, as with `push_message`), then the rest.
                tracing::error!("cannot encode a frame: {e}");
                self.buf.truncate(start);
                let conversation = b.conversation;
                self.end_batch();
                self.buf.extend_from_slice(INTERNAL_FRAME.as_bytes());
                self.ends.push((m.seq, self.buf.len()));
                self.begin_batch(conversation);
            }
        }
    }

    /// Closes the open `messages` frame; one with no messages is dropped.
    pub fn end_batch(&mut self) {
        let Some(b) = self.batch.take() else {
            return;
        };
        if b.items == 0 {
            self.buf.truncate(b.start);
        } else {
            self.buf.extend_from_slice(b"]}");
            self.ends.push((b.last_seq, self.buf.len()));
        }
    }

    /// Appends the `message` frame of a borrowed stored message, keyed by its seq.
    pub fn push_message(&mut self, m: &crate::model::MessageRef<'_>) {
        let start = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, &crate::proto::MessageFrameRef::new(m))
        {
            tracing::error!("cannot encode a frame: {e}");
            self.buf.truncate(start);
            self.buf.extend_from_slice(INTERNAL_FRAME.as_bytes());
        }
        self.ends.push((m.seq, self.buf.len()));
    }

    /// The frames in order, each with its key; they share the one buffer.
    pub fn into_frames(mut self) -> Vec<(u64, Encoded)> {
        self.end_batch();
        let bytes = bytes::Bytes::from(self.buf);
        let mut start = 0;
        self.ends
            .into_iter()
            .map(|(key, end)| {
                // serde_json writes UTF-8 only, so this cannot fail; if it did, the client gets
                // an error frame rather than nothing.
                let frame = Utf8Bytes::try_from(bytes.slice(start..end))
                    .unwrap_or_else(|_| Utf8Bytes::from_static(INTERNAL_FRAME));
                start = end;
                (key, frame)
            })
            .collect()
    }
}

/// What travels through a session's outbox.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// Forward as is.
    Frame(Encoded),
    /// A message of `conversation` with `seq`: the session forwards it only if it continues the
    /// client's cursor (no gap, no duplicate).
    Message {
        conversation: u64,
        seq: u64,
        frame: Encoded,
    },
    /// The ack of this session's own send (advances its cursor like a message).
    Ack {
        conversation: u64,
        seq: u64,
        frame: Encoded,
    },
    /// The user became a member of `conversation`, whose newest message is `last_seq`.
    Joined {
        conversation: u64,
        last_seq: u64,
        frame: Encoded,
    },
    /// The user is no longer a member of `conversation`.
    Left { conversation: u64, frame: Encoded },
}

/// One message of a run handed to a conversation's members together (`Hub::send_run`).
pub struct RunItem {
    /// The session that sent it: it gets `ack` instead of `message`.
    pub origin: u64,
    pub message: Outbound,
    pub ack: Outbound,
}

/// State shared between a session task and the hub.
#[derive(Default)]
pub struct SessionFlags {
    /// Set when the outbox overflowed: the session must close (1008).
    pub overflowed: AtomicBool,
    /// Set when an administrator signed the user out (disable, password change): the session
    /// must close (1008) and its credentials no longer work.
    pub revoked: AtomicBool,
    /// Wakes the session (its loop, and a socket write it is waiting on) when a flag is set.
    pub wake: Notify,
    /// The hash of the login (session cookie or token) the connection was opened with, so a
    /// user can sign out their other devices and keep this one (`Hub::revoke_others`).
    pub token_hash: [u8; 32],
}

impl SessionFlags {
    /// Wakes everything waiting on `wake` now, and every `wake.notified()` already made. No
    /// permit is kept for later: the session reads the flags after making its waiter.
    pub fn signal(&self) {
        self.wake.notify_waiters();
    }
}

/// How the hub and the writer reach one connected session.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub user: UserId,
    pub tx: mpsc::Sender<Outbound>,
    pub flags: Arc<SessionFlags>,
}

impl SessionHandle {
    /// Queues a frame without waiting; on a full outbox flags the session as too slow.
    pub fn deliver(&self, out: Outbound) {
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.flags.overflowed.swap(true, Ordering::AcqRel) {
                    // The session logs how it actually ends (closed, or dropped).
                    tracing::info!(
                        user = self.user.0,
                        session = self.id,
                        "outbox full: the client does not read fast enough; closing it"
                    );
                    self.flags.signal();
                }
            }
            // The session is ending; it resumes from the store next time.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

const SHARDS: usize = 64;

#[derive(Default)]
struct Shard {
    /// Connected sessions per user.
    online: HashMap<UserId, Vec<SessionHandle>>,
    /// Connection slots taken per user, from the upgrade until the session ends.
    reserved: HashMap<UserId, usize>,
}

/// Who is online, sharded by user id to keep lock contention low.
pub struct Hub {
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            next_id: AtomicU64::new(1),
        }
    }
}

/// One of a user's connection slots, taken before the WebSocket upgrade is answered and given
/// back when dropped (session ended, or the upgrade never completed).
pub struct Reservation {
    hub: Arc<Hub>,
    user: UserId,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut shard = self.hub.shard_of(self.user);
        if let Some(n) = shard.reserved.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                shard.reserved.remove(&self.user);
            }
        }
    }
}

impl Hub {
    fn shard_of(&self, user: UserId) -> std::sync::MutexGuard<'_, Shard> {
        // A poisoned shard only means a panic elsewhere mid-update of a map; the data is usable.
        self.shards[(user.0 as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one of `user`'s connection slots if fewer than `max` are taken. Checked and taken
    /// under one lock, so simultaneous upgrades cannot overshoot the limit.
    pub fn reserve(self: &Arc<Self>, user: UserId, max: usize) -> Option<Reservation> {
        let mut shard = self.shard_of(user);
        let taken = shard.reserved.get(&user).copied().unwrap_or(0);
        if taken >= max {
            return None;
        }
        shard.reserved.insert(user, taken + 1);
        Some(Reservation {
            hub: self.clone(),
            user,
        })
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a session; returns true if it is the user's first (the user just came online).
    pub fn register(&self, handle: SessionHandle) -> bool {
        let mut shard = self.shard_of(handle.user);
        let list = shard.online.entry(handle.user).or_default();
        list.push(handle);
        list.len() == 1
    }

    /// Removes a session; returns true if it was the user's last (the user went offline).
    pub fn unregister(&self, user: UserId, session: u64) -> bool {
        let mut shard = self.shard_of(user);
        let Some(list) = shard.online.get_mut(&user) else {
            return false;
        };
        list.retain(|h| h.id != session);
        if list.is_empty() {
            shard.online.remove(&user);
            true
        } else {
            false
        }
    }

    pub fn is_online(&self, user: UserId) -> bool {
        self.shard_of(user).online.contains_key(&user)
    }

    /// Number of connected sessions of a user.
    pub fn sessions_of(&self, user: UserId) -> usize {
        self.shard_of(user).online.get(&user).map_or(0, Vec::len)
    }

    /// Number of users online.
    pub fn users_online(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).online.len())
            .sum()
    }

    /// Delivers `out` to every session of `user` except `except` (a session id); returns how
    /// many sessions it was queued to.
    pub fn send_to_user(&self, user: UserId, out: &Outbound, except: Option<u64>) -> usize {
        let shard = self.shard_of(user);
        let mut n = 0;
        if let Some(list) = shard.online.get(&user) {
            for h in list.iter().filter(|h| Some(h.id) != except) {
                h.deliver(out.clone());
                n += 1;
            }
        }
        n
    }

    /// Delivers `out` to every session of every user in `users` except session `except`;
    /// returns how many sessions it was queued to.
    pub fn send_to_users(&self, users: &[UserId], out: &Outbound, except: Option<u64>) -> usize {
        users
            .iter()
            .map(|u| self.send_to_user(*u, out, except))
            .sum()
    }

    /// Delivers a run of messages to one conversation's members: each session gets every item in
    /// order, as the `message` or, for the session that sent it, as the `ack` (marked in
    /// `acked`). Returns how many `message`s were queued.
    pub fn send_run(&self, users: &[UserId], items: &[RunItem], acked: &mut [bool]) -> usize {
        let mut n = 0;
        for u in users {
            let shard = self.shard_of(*u);
            let Some(list) = shard.online.get(u) else {
                continue;
            };
            for h in list {
                for (item, done) in items.iter().zip(acked.iter_mut()) {
                    if h.id == item.origin {
                        h.deliver(item.ack.clone());
                        *done = true;
                    } else {
                        h.deliver(item.message.clone());
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Tells every session of `user` to close because its login was revoked; returns how many.
    pub fn revoke_user(&self, user: UserId) -> usize {
        let shard = self.shard_of(user);
        let Some(list) = shard.online.get(&user) else {
            return 0;
        };
        for h in list {
            h.flags.revoked.store(true, Ordering::Release);
            h.flags.signal();
        }
        list.len()
    }

    /// Tells every session of `user` not opened with the login `keep` to close (1008), as
    /// `revoke_user` does; returns how many.
    pub fn revoke_others(&self, user: UserId, keep: &[u8; 32]) -> usize {
        let shard = self.shard_of(user);
        let Some(list) = shard.online.get(&user) else {
            return 0;
        };
        let mut n = 0;
        for h in list.iter().filter(|h| &h.flags.token_hash != keep) {
            h.flags.revoked.store(true, Ordering::Release);
            h.flags.wake.notify_one();
            n += 1;
        }
        n
    }

    /// Delivers `out` to every connected session; returns how many.
    pub fn send_to_all(&self, out: &Outbound) -> usize {
        let mut n = 0;
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for h in shard.online.values().flatten() {
                h.deliver(out.clone());
                n += 1;
            }
        }
        n
    }

    /// Number of connected sessions.
    pub fn session_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .online
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(hub: &Hub, user: u64, cap: usize) -> (SessionHandle, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(cap);
        (
            SessionHandle {
                id: hub.next_session_id(),
                user: UserId(user),
                tx,
                flags: Arc::new(SessionFlags::default()),
            },
            rx,
        )
    }

    #[test]
    fn presence_transitions_and_fan_out() {
        let hub = Hub::default();
        let (a1, mut r1) = handle(&hub, 1, 4);
        let (a2, mut r2) = handle(&hub, 1, 4);
        assert!(hub.register(a1.clone()));
        assert!(!hub.register(a2.clone()));
        assert!(hub.is_online(UserId(1)));
        assert_eq!(hub.sessions_of(UserId(1)), 2);
        let f = Outbound::Frame(Utf8Bytes::from_static("{}"));
        hub.send_to_users(&[UserId(1), UserId(2)], &f, Some(a1.id));
        assert!(r1.try_recv().is_err(), "excluded session gets nothing");
        assert!(r2.try_recv().is_ok());
        assert!(!hub.unregister(UserId(1), a1.id));
        assert!(hub.unregister(UserId(1), a2.id));
        assert!(!hub.is_online(UserId(1)));
        assert_eq!(hub.users_online(), 0);
    }

    #[test]
    fn reservations_are_exact_and_released_on_drop() {
        let hub = Arc::new(Hub::default());
        let a = hub.reserve(UserId(3), 2).unwrap();
        let b = hub.reserve(UserId(3), 2).unwrap();
        assert!(hub.reserve(UserId(3), 2).is_none());
        assert!(hub.reserve(UserId(4), 2).is_some(), "per user");
        drop(a);
        let _c = hub.reserve(UserId(3), 2).unwrap();
        drop(b);
    }

    #[test]
    fn a_run_reaches_each_session_in_order_with_acks_for_the_sender() {
        let hub = Hub::default();
        let (a, mut ra) = handle(&hub, 1, 8);
        let (b, mut rb) = handle(&hub, 2, 8);
        hub.register(a.clone());
        hub.register(b.clone());
        let item = |origin: u64, seq: u64| RunItem {
            origin,
            message: Outbound::Message {
                conversation: 9,
                seq,
                frame: Utf8Bytes::from(format!("m{seq}")),
            },
            ack: Outbound::Ack {
                conversation: 9,
                seq,
                frame: Utf8Bytes::from(format!("a{seq}")),
            },
        };
        let items = [item(a.id, 1), item(b.id, 2), item(a.id, 3)];
        let mut acked = [false; 3];
        // User 3 is offline; its origin (none here) is simply not reached.
        let n = hub.send_run(&[UserId(1), UserId(2), UserId(3)], &items, &mut acked);
        assert_eq!(n, 3, "messages to the non-senders");
        assert_eq!(acked, [true, true, true]);
        let texts = |r: &mut mpsc::Receiver<Outbound>| {
            let mut v = Vec::new();
            while let Ok(o) = r.try_recv() {
                v.push(match o {
                    Outbound::Message { frame, .. } | Outbound::Ack { frame, .. } => {
                        frame.to_string()
                    }
                    _ => String::new(),
                });
            }
            v
        };
        assert_eq!(texts(&mut ra), ["a1", "m2", "a3"]);
        assert_eq!(texts(&mut rb), ["m1", "a2", "m3"]);
    }

    #[test]
    fn borrowed_message_frames_match_the_owned_encoding() {
        use crate::model::{ConversationId, MessageRef, StoredMessage};
        let owned = StoredMessage {
            reply_to: None,
            conversation: ConversationId(4),
            seq: 17,
            sender: UserId(2),
            sender_name: "bob \"the\" builder".into(),
            time_ms: 1_700_000_000_123,
            client_id: "c-9".into(),
            text: "<b>hi</b>\n\u{1F600} 你好".into(),
            unreadable: false,
            attachments: Vec::new(),
            extra: Default::default(),
        };
        let borrowed = MessageRef {
            reply_to: None,
            conversation: owned.conversation,
            seq: owned.seq,
            sender: owned.sender,
            sender_name: &owned.sender_name,
            time_ms: owned.time_ms,
            client_id: &owned.client_id,
            text: &owned.text,
            unreadable: false,
            attachments: &[],
            extra: Default::default(),
        };
        let a = encode(&ServerFrame::Message {
            message: crate::proto::Message::from_stored(&owned),
        });
        // Several frames in one buffer come out as separate, complete frames.
        let mut next = borrowed.clone();
        next.seq = 18;
        next.text = "";
        let mut buf = FrameBuf::with_capacity(1, 16);
        buf.push_message(&borrowed);
        buf.push_message(&next);
        buf.push_message(&borrowed);
        let frames = buf.into_frames();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].0, 17);
        assert_eq!(frames[0].1.as_str(), a.as_str());
        assert_eq!(frames[1].0, 18);
        let v: serde_json::Value = serde_json::from_str(frames[1].1.as_str()).unwrap();
        assert_eq!(
            (v["seq"].as_u64(), v["text"].as_str()),
            (Some(18), Some(""))
        );
        assert_eq!(frames[2].1.as_str(), a.as_str());

        // A `messages` frame is exactly the typed frame's JSON, keyed by its last seq; an empty
        // one is left out.
        let typed = encode(&ServerFrame::Messages {
            conversation: 4,
            messages: vec![
                crate::proto::Message::from_stored(&owned),
                crate::proto::Message::from_stored(&StoredMessage {
                    seq: 18,
                    text: String::new(),
                    ..owned.clone()
                }),
            ],
        });
        let mut buf = FrameBuf::with_capacity(2, 64);
        buf.begin_batch(4);
        buf.end_batch();
        buf.begin_batch(4);
        buf.push_batch_item(&borrowed);
        buf.push_batch_item(&next);
        let frames = buf.into_frames();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 18);
        assert_eq!(frames[0].1.as_str(), typed.as_str());
    }

    #[test]
    fn full_outbox_flags_the_session_instead_of_growing() {
        let hub = Hub::default();
        let (h, _rx) = handle(&hub, 7, 2);
        hub.register(h.clone());
        let f = Outbound::Frame(Utf8Bytes::from_static("{}"));
        for _ in 0..10 {
            hub.send_to_user(UserId(7), &f, None);
        }
        assert!(h.flags.overflowed.load(Ordering::Acquire));
        assert_eq!(h.tx.capacity(), 0);
    }
}
