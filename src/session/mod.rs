//! One task per WebSocket connection: it owns the socket and one `select!` loop over the
//! client's frames, the session's outbox (frames from the writer and the hub), the heartbeat, the
//! shutdown signal, and catch-up from the store.
//!
//! Delivery keeps, per conversation, the highest seq this connection has been given (its
//! cursor). A message is written only if it is exactly the next one; a gap (say the message was
//! committed while the client was replaying) makes the session read the missing ones from the
//! store; a duplicate is skipped. So a client sees each conversation in order, with no gap and no
//! duplicate, whether messages come live or from catch-up.
//!
//! It decodes `proto` frames, answers reads through `App::db`, submits mutations to the writer,
//! sends typing to the hub. Bad input gets an error frame; protocol violations get a close frame
//! with the matching code. It never touches redb directly.
//!
//! The folder splits the session by concern: `connection` (the task, its select loop and socket
//! writes), `opening` (open, welcome, presence), `catchup` (outbox admission, `sync` and catch-up
//! pages), `dispatch` (decoding, rate limit, the frame `match`), and one file per family of
//! client frames: `messages`, `events` (edit, delete, react, mute, rename), `groups`,
//! `directory`. This file holds the types they share; the
//! handlers may call each other only through `Session` methods.

mod catchup;
mod connection;
mod directory;
mod dispatch;
mod events;
mod groups;
mod messages;
mod opening;

pub use connection::run;
pub use opening::{abandon, open};

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::app::App;
use crate::hub::{encode, FrameBuf, Outbound, Reservation, SessionFlags, SessionHandle};
use crate::model::{self, ConversationId, User, UserId};
use crate::proto::{self, ClientFrame, ErrorCode, ServerFrame};
use crate::ratelimit::TokenBucket;
use crate::store::chat::Target;
use crate::writer::{Change, WriteOp};

/// Why the loop ended.
enum End {
    /// Close with this code and reason, then wait briefly for the client's close.
    Close(u16, &'static str),
    /// The connection is gone (client closed, or the network failed): nothing to send.
    Gone,
    /// The client stopped taking data: a socket write made no progress before its deadline
    /// (`write_timeout`, or `slow_close_grace` after the outbox overflowed). Nothing more can
    /// be written (a frame may be cut off mid-way), so the connection is dropped.
    Stalled,
}

/// The close reason of a client whose outbox overflowed.
const SLOW_REASON: &str = "slow consumer: reconnect and sync";

type Step = Result<(), End>;

/// Most outbox items written before one flush.
const WRITE_BATCH: usize = 64;

/// Text frames at least this long (catch-up pages, `history` replies, a large `welcome`) go
/// from their encoded buffer straight to the socket instead of through tungstenite's write
/// buffer. That buffer copies every frame and keeps its largest size for as long as the
/// connection lives: after a catch-up of 15–20 KB pages, 10,000 connections held ~160 MB that
/// was written once (page faults on fresh memory, heap growth) and never used again.
const DIRECT_FRAME_BYTES: usize = 4096;

/// A session registered with the hub, and what its `welcome` needs, made before the upgrade is
/// answered in one store-reader job: the credential lookup, the per-user limit, the
/// registration, then the welcome read. Registering before that read means every message
/// committed after it reaches the outbox, so none falls between the two.
pub struct Opened {
    user: User,
    handle: SessionHandle,
    registered: Registered,
    rx: mpsc::Receiver<Outbound>,
    slot: Reservation,
    /// The user's first session: `welcome` announces them to `contacts`.
    contacts: Option<Vec<UserId>>,
    conversations: Vec<model::ConversationSummary>,
}

/// A session's entry in the hub. Dropped without `leave` (the request was dropped while its
/// store job ran, the job failed or panicked, the upgrade failed) it still removes the entry, so
/// no dead session stays "online".
struct Registered {
    hub: Arc<crate::hub::Hub>,
    user: UserId,
    id: u64,
    left: bool,
}

impl Registered {
    /// Removes the entry; true if it was the user's last session.
    fn leave(mut self) -> bool {
        self.left = true;
        self.hub.unregister(self.user, self.id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if !self.left {
            self.hub.unregister(self.user, self.id);
        }
    }
}

/// The outcome of `open`.
pub enum Open {
    Ready(Box<Opened>),
    /// No valid session for the credential.
    NoSession,
    /// The user is at `Limits::max_connections_per_user`.
    TooMany,
}

struct Session<S> {
    app: Arc<App>,
    user: User,
    handle: SessionHandle,
    ws: WebSocketStream<S>,
    rx: mpsc::Receiver<Outbound>,
    /// The client has sent `sync`: messages flow.
    synced: bool,
    /// conversation → highest seq delivered to this connection.
    cursors: HashMap<u64, u64>,
    /// Conversations with messages still to read from the store.
    pending: BTreeSet<u64>,
    /// `Some(ref)` while the first catch-up after a `sync` is running.
    sync_ref: Option<Option<u64>>,
    /// The client asked for replayed messages in `messages` frames.
    batch: bool,
    bucket: TokenBucket,
    limited_streak: u32,
    /// conversation → when this connection last forwarded typing for it.
    typing_last: HashMap<u64, Instant>,
    /// Last time anything arrived from the client.
    last_seen: Instant,
    /// Set when the session learns its outbox overflowed: every write must be done by then,
    /// the close frame included (`Limits::slow_close_grace` later).
    slow_deadline: Option<Instant>,
    /// `(conversation, last_seq)` of every conversation as read for `welcome`, when complete;
    /// used by the first `sync`.
    welcome_seqs: Option<Vec<(ConversationId, u64)>>,
    /// What `open` read for the welcome (taken when it is sent).
    welcome: Option<WelcomeRead>,
}

/// The conversation list and, for a user's first session, the contacts to announce to.
type WelcomeRead = (Vec<model::ConversationSummary>, Option<Vec<UserId>>);

fn not_found() -> (ErrorCode, &'static str) {
    (ErrorCode::NotFound, "no such conversation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_dropped_unused_leaves_no_one_online() {
        let hub = Arc::new(crate::hub::Hub::default());
        let reg = |id| {
            let (tx, _rx) = mpsc::channel(1);
            hub.register(SessionHandle {
                id,
                user: UserId(5),
                tx,
                flags: Arc::new(SessionFlags::default()),
            });
            Registered {
                hub: hub.clone(),
                user: UserId(5),
                id,
                left: false,
            }
        };
        // An open whose request went away: dropped, not left.
        let (a, b) = (reg(1), reg(2));
        drop(a);
        assert!(hub.is_online(UserId(5)));
        // The last one leaving says so; nothing is removed twice.
        assert!(b.leave());
        assert!(!hub.is_online(UserId(5)));
        drop(reg(3));
        assert!(!hub.is_online(UserId(5)));
    }
}
