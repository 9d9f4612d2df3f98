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

/// Looks up the credential, takes a per-user slot, registers the session with the hub and reads
/// the welcome, all in one job on a store reader. On `Ready` the caller either runs the
/// session (`run`) or gives it up (`abandon`).
pub async fn open(app: &Arc<App>, token_hash: [u8; 32]) -> Result<Open, crate::store::StoreError> {
    let l = &app.config.limits;
    let (tx, rx) = mpsc::channel(l.outbox_frames);
    let flags = Arc::new(SessionFlags {
        token_hash,
        ..SessionFlags::default()
    });
    let id = app.hub.next_session_id();
    let hub = app.hub.clone();
    let (per_user, max, group_max) = (
        l.max_connections_per_user,
        l.conversations_max,
        l.broadcast_group_max,
    );
    let opened = app
        .db(move |s| {
            let Some(user) = s.session_user(&token_hash, model::now_ms())? else {
                return Ok(Err(Open::NoSession));
            };
            let Some(slot) = hub.reserve(user.id, per_user) else {
                return Ok(Err(Open::TooMany));
            };
            let handle = SessionHandle {
                id,
                user: user.id,
                tx,
                flags,
            };
            // The first session of a user announces them online; the contacts for that come
            // from the same read as the welcome's conversation list.
            let first = hub.register(handle.clone());
            let registered = Registered {
                hub: hub.clone(),
                user: user.id,
                id,
                left: false,
            };
            let read = if first {
                s.welcome_view(user.id, max, group_max)
                    .map(|(c, k)| (c, Some(k)))
            } else {
                s.conversations_of(user.id, max).map(|c| (c, None))
            };
            // On an error `registered` is dropped here, which unregisters.
            let (conversations, contacts) = read?;
            Ok(Ok((
                user,
                handle,
                registered,
                slot,
                conversations,
                contacts,
            )))
        })
        .await?;
    Ok(match opened {
        Err(refused) => refused,
        Ok((user, handle, registered, slot, conversations, contacts)) => {
            Open::Ready(Box::new(Opened {
                user,
                handle,
                registered,
                rx,
                slot,
                contacts,
                conversations,
            }))
        }
    })
}

/// Undoes `open` for a session that will not run (the upgrade failed).
pub fn abandon(app: &Arc<App>, opened: Opened) {
    let user = opened.user.id;
    if opened.registered.leave() {
        announce_presence(app.clone(), user);
    }
}

/// Runs a session until the connection ends. `_permit` is held for the session's lifetime.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    app: Arc<App>,
    opened: Box<Opened>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Opened {
        user,
        handle,
        registered,
        rx,
        slot: _slot,
        contacts,
        conversations,
    } = *opened;
    tracing::debug!(user = %user.name, session = handle.id, "session started");
    let limits = &app.config.limits;
    let mut s = Session {
        bucket: TokenBucket::full(limits.frame_burst, Instant::now()),
        app: app.clone(),
        user,
        handle,
        ws,
        rx,
        synced: false,
        cursors: HashMap::new(),
        pending: BTreeSet::new(),
        sync_ref: None,
        batch: false,
        limited_streak: 0,
        typing_last: HashMap::new(),
        last_seen: Instant::now(),
        slow_deadline: None,
        welcome_seqs: None,
        welcome: Some((conversations, contacts)),
    };
    let end = s.run().await;
    let (id, uid) = (s.handle.id, s.user.id);
    let slow = match &end {
        End::Stalled => true,
        End::Close(1008, reason) => *reason == SLOW_REASON,
        _ => false,
    };
    let overflowed = s.handle.flags.overflowed.load(Ordering::Acquire);
    let closed = Box::pin(s.finish(end)).await;
    if slow {
        app.metrics.slow_closes.fetch_add(1, Ordering::Relaxed);
        let l = &app.config.limits;
        let how = if closed {
            "closed with 1008".to_string()
        } else if overflowed {
            format!(
                "it took no data for {:?}: dropped without a close frame",
                l.slow_close_grace
            )
        } else {
            format!(
                "a write made no progress for {:?}: dropped without a close frame",
                l.write_timeout
            )
        };
        let why = if overflowed {
            format!("its outbox of {} frames filled", l.outbox_frames)
        } else {
            "it stopped reading".to_string()
        };
        tracing::info!(user = uid.0, session = id, "slow client: {why}; {how}");
    }
    app.last_seen.touch(uid);
    if registered.leave() {
        announce_presence(app.clone(), uid);
    }
    tracing::debug!(user = uid.0, session = id, "session ended");
}

/// Tells the user's contacts whether the user is online now. Reads the current state when it
/// runs, so quick connect/disconnect flaps cannot leave a stale answer last.
fn announce_presence(app: Arc<App>, user: UserId) {
    tokio::spawn(async move {
        let max = app.config.limits.broadcast_group_max;
        match app.db(move |s| s.contacts(user, max)).await {
            Ok(contacts) => send_presence(&app, user, &contacts),
            Err(e) => tracing::error!("presence of {user}: {e}"),
        }
    });
}

fn send_presence(app: &App, user: UserId, contacts: &[UserId]) {
    let online = app.hub.is_online(user);
    let frame = Outbound::Frame(encode(&ServerFrame::Presence {
        user: user.0,
        online,
    }));
    app.hub.send_to_users(contacts, &frame, None);
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

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn run(&mut self) -> End {
        let limits = self.app.config.limits.clone();
        if let Err(end) = Box::pin(self.welcome()).await {
            return end;
        }
        let mut ping = tokio::time::interval(limits.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut shutdown = self.app.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return End::Close(1001, "server shutting down");
        }
        let flags = self.handle.flags.clone();
        // Made once and re-armed only when they fire: creating and dropping them on every
        // outbox wake-up costs a lock each on the Notify waiter lists.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        let wake = flags.wake.notified();
        tokio::pin!(wake);
        // `wake` hears only what is signalled from now on (`notify_waiters`).
        if let Err(end) = self.check_flags(&flags) {
            return end;
        }
        // Fires at the idle deadline of the last frame seen when it was set; re-armed from the
        // newest one instead of being reset on every frame.
        let idle = tokio::time::sleep_until((self.last_seen + limits.idle_timeout).into());
        tokio::pin!(idle);
        loop {
            let step = tokio::select! {
                msg = self.ws.next() => match msg {
                    None => Err(End::Gone),
                    Some(Ok(m)) => Box::pin(self.on_ws(m)).await,
                    Some(Err(e)) => Err(ws_error(e)),
                },
                Some(out) = self.rx.recv() => Box::pin(self.on_outbound(out)).await,
                _ = &mut wake => {
                    wake.set(flags.wake.notified());
                    self.check_flags(&flags)
                }
                _ = ping.tick() => Box::pin(self.write(Message::Ping(Default::default()))).await,
                _ = &mut idle => {
                    let deadline = self.last_seen + limits.idle_timeout;
                    if Instant::now() >= deadline {
                        Err(End::Close(1000, "idle timeout"))
                    } else {
                        idle.as_mut().reset(deadline.into());
                        Ok(())
                    }
                }
                _ = &mut stop => Err(End::Close(1001, "server shutting down")),
                _ = std::future::ready(()), if !self.pending.is_empty() => Box::pin(self.catch_up_page()).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Ends the session if an administrator revoked it or its outbox overflowed.
    fn check_flags(&mut self, flags: &SessionFlags) -> Step {
        if flags.revoked.load(Ordering::Acquire) {
            Err(End::Close(1008, "signed out by an administrator"))
        } else if flags.overflowed.load(Ordering::Acquire) {
            let grace = self.app.config.limits.slow_close_grace;
            self.slow_deadline
                .get_or_insert_with(|| Instant::now() + grace);
            Err(End::Close(1008, SLOW_REASON))
        } else {
            Ok(())
        }
    }

    /// Sends the close frame (if any) and waits briefly for the client's: at most
    /// `close_wait`, and for a slow client only until its `slow_deadline`. Returns whether the
    /// close frame was handed to the socket.
    async fn finish(&mut self, end: End) -> bool {
        let End::Close(code, reason) = end else {
            return false;
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        let l = &self.app.config.limits;
        let mut deadline = Instant::now() + l.close_wait;
        if let Some(d) = self.slow_deadline {
            deadline = deadline.min(d);
        }
        let mut sent = false;
        let _ = tokio::time::timeout_at(deadline.into(), async {
            if self.ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            sent = true;
            while let Some(Ok(m)) = self.ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
        sent
    }

    /// Runs a socket write or flush under its deadline (see `guard`).
    async fn io(
        &mut self,
        f: impl AsyncFnOnce(&mut WebSocketStream<S>) -> Result<(), WsError>,
    ) -> Step {
        let l = &self.app.config.limits;
        let (timeout, grace) = (l.write_timeout, l.slow_close_grace);
        guard(
            &self.handle.flags,
            &mut self.slow_deadline,
            timeout,
            grace,
            f(&mut self.ws),
        )
        .await
    }

    async fn write(&mut self, msg: Message) -> Step {
        self.io(async |ws| ws.send(msg).await).await
    }

    async fn send_frame(&mut self, frame: &ServerFrame) -> Step {
        let text = encode(frame);
        if text.len() >= DIRECT_FRAME_BYTES {
            self.feed_text(text).await?;
            return self.flush().await;
        }
        self.write(Message::Text(text)).await
    }

    /// Queues a text frame (a short one in tungstenite's write buffer, a long one written out
    /// at once, see `DIRECT_FRAME_BYTES`); `flush` sends what is queued.
    async fn feed_text(&mut self, text: Utf8Bytes) -> Step {
        if text.len() < DIRECT_FRAME_BYTES {
            self.io(async |ws| ws.feed(Message::Text(text)).await).await
        } else {
            self.io(async |ws| write_direct(ws, text).await).await
        }
    }

    async fn flush(&mut self) -> Step {
        self.io(async |ws| ws.flush().await).await
    }

    async fn send_error(
        &mut self,
        reference: Option<u64>,
        client_id: Option<String>,
        code: ErrorCode,
        message: &str,
    ) -> Step {
        self.send_frame(&ServerFrame::error(reference, client_id, code, message))
            .await
    }

    async fn welcome(&mut self) -> Step {
        let user = self.user.id;
        let max = self.app.config.limits.conversations_max;
        let (conversations, contacts) = self.welcome.take().unwrap_or_default();
        if let Some(contacts) = contacts {
            send_presence(&self.app, user, &contacts);
        }
        // The first sync can start from these instead of reading them again: anything newer
        // reaches this session live as a gap and is caught up from the store.
        if conversations.len() < max {
            self.welcome_seqs = Some(conversations.iter().map(|c| (c.id, c.last_seq)).collect());
        }
        let l = &self.app.config.limits;
        let frame = ServerFrame::Welcome {
            protocol: proto::PROTOCOL_VERSION,
            server: crate::VERSION,
            user: proto::UserRef::of(&self.user),
            epoch: format!("{:016x}", self.app.store.epoch()),
            limits: proto::ClientLimits {
                max_message_bytes: l.max_message_bytes,
                max_message_chars: l.max_message_chars,
                max_frame_bytes: l.max_frame_bytes,
                history_limit: l.history_max,
                ping_interval_ms: l.ping_interval.as_millis() as u64,
                idle_timeout_ms: l.idle_timeout.as_millis() as u64,
            },
            conversations: self.wire_conversations(&conversations),
        };
        self.send_frame(&frame).await
    }

    fn wire_conversations(&self, list: &[model::ConversationSummary]) -> Vec<proto::Conversation> {
        let hub = &self.app.hub;
        list.iter()
            .map(|c| proto::Conversation::from_summary(c, |id| hub.is_online(UserId(id))))
            .collect()
    }

    // ---- outbox ---------------------------------------------------------------------------

    /// Handles one outbox item and whatever else is already queued, with one flush.
    async fn on_outbound(&mut self, first: Outbound) -> Step {
        let mut item = Some(first);
        let mut n = 0;
        while let Some(out) = item.take() {
            if let Some(text) = self.admit(out) {
                self.feed_text(text).await?;
            }
            n += 1;
            if n < WRITE_BATCH {
                item = self.rx.try_recv().ok();
            }
        }
        self.flush().await
    }

    /// Decides whether an outbox item is written, updating cursors. Returns the text to write.
    fn admit(&mut self, out: Outbound) -> Option<Utf8Bytes> {
        match out {
            Outbound::Frame(f) => Some(f),
            Outbound::Message {
                conversation,
                seq,
                frame,
            } => {
                if !self.synced {
                    return None;
                }
                let cursor = self.cursors.entry(conversation).or_insert(0);
                if seq == *cursor + 1 {
                    *cursor = seq;
                    Some(frame)
                } else {
                    if seq > *cursor + 1 {
                        self.pending.insert(conversation);
                    }
                    None
                }
            }
            Outbound::Ack {
                conversation,
                seq,
                frame,
            } => {
                if self.synced {
                    let cursor = self.cursors.entry(conversation).or_insert(0);
                    if seq == *cursor + 1 {
                        *cursor = seq;
                    } else if seq > *cursor + 1 {
                        self.pending.insert(conversation);
                    }
                }
                Some(frame)
            }
            Outbound::Joined {
                conversation,
                last_seq,
                frame,
            } => {
                if self.synced {
                    self.cursors.entry(conversation).or_insert(last_seq);
                }
                Some(frame)
            }
            Outbound::Left {
                conversation,
                frame,
            } => {
                self.cursors.remove(&conversation);
                self.pending.remove(&conversation);
                Some(frame)
            }
        }
    }

    /// Reads and writes one page of missed messages for one pending conversation.
    async fn catch_up_page(&mut self) -> Step {
        let Some(&conv) = self.pending.iter().next() else {
            return Ok(());
        };
        let after = self.cursors.get(&conv).copied().unwrap_or(0);
        let page = self.app.config.limits.catchup_page;
        let text_bytes = self.app.config.limits.page_text_bytes;
        let user = self.user.id;
        let batch = self.batch;
        // Encoded on a store reader straight from the database pages, into one buffer: one
        // `message` frame each, or one `messages` frame of those that continue the cursor.
        let read = self
            .app
            .db(move |s| {
                let mut buf = FrameBuf::with_capacity(page, 256);
                let mut next = after + 1;
                if batch {
                    buf.begin_batch(conv);
                }
                let conv_id = ConversationId(conv);
                let more = s.messages_after_map(user, conv_id, after, page, text_bytes, |m| {
                    if !batch {
                        buf.push_message(m);
                    } else if m.seq == next {
                        buf.push_batch_item(m);
                        next += 1;
                    }
                })?;
                Ok(more.map(|(_, more)| (buf.into_frames(), more)))
            })
            .await;
        let (msgs, more) = match read {
            Ok(Some(m)) => m,
            Ok(None) => {
                // No longer a member.
                self.pending.remove(&conv);
                self.cursors.remove(&conv);
                (Vec::new(), false)
            }
            Err(e) => {
                tracing::error!("catch-up of {conv} for {user}: {e}");
                return Err(End::Close(1011, "internal error"));
            }
        };
        for (seq, text) in msgs {
            let cursor = self.cursors.entry(conv).or_insert(0);
            // A `messages` frame is keyed by its last seq (its first continues the cursor).
            if (!batch && seq != *cursor + 1) || seq <= *cursor {
                continue;
            }
            *cursor = seq;
            self.feed_text(text).await?;
        }
        let stuck = more && self.cursors.get(&conv).copied().unwrap_or(0) == after;
        if stuck {
            // The store gives every seq in turn (a marker where it cannot read one), so this
            // is a bug; never loop on it, and never end the catch-up without saying so.
            tracing::error!(
                user = user.0,
                "catch-up of conversation {conv} made no progress after seq {after}; stopped"
            );
            self.pending.remove(&conv);
            self.send_error(
                None,
                None,
                ErrorCode::Internal,
                "cannot read the rest of a conversation; sync again later",
            )
            .await?;
        } else if !more {
            self.pending.remove(&conv);
        }
        if self.pending.is_empty() {
            if let Some(reference) = self.sync_ref.take() {
                self.feed_text(encode(&ServerFrame::Synced { reference }))
                    .await?;
            }
        }
        self.flush().await
    }

    // ---- client frames --------------------------------------------------------------------

    async fn on_ws(&mut self, msg: Message) -> Step {
        self.last_seen = Instant::now();
        match msg {
            Message::Text(text) => self.on_text(text).await,
            Message::Binary(_) => Err(End::Close(1003, "binary frames are not supported")),
            // tungstenite queues the pong; flushing sends it now.
            Message::Ping(_) => self.flush().await,
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => {
                // tungstenite answers the close; flush it out and end.
                let _ = self.flush().await;
                Err(End::Gone)
            }
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Step {
        // Every text frame counts against the rate limit, application pings included.
        let l = &self.app.config.limits;
        if self
            .bucket
            .take(l.frame_burst, l.frame_refill, Instant::now())
            .is_err()
        {
            self.limited_streak += 1;
            if self.limited_streak >= l.flood_close_after {
                return Err(End::Close(1008, "too many frames"));
            }
            // Name the refused request so the client can retry exactly that one.
            let (reference, client_id) = request_names(text.as_str());
            return self
                .send_error(
                    reference,
                    client_id,
                    ErrorCode::RateLimited,
                    "too many frames; this one was not processed",
                )
                .await;
        }
        self.limited_streak = 0;
        if text.as_str() == "ping" {
            return self
                .write(Message::Text(Utf8Bytes::from_static("pong")))
                .await;
        }
        let envelope = match proto::decode(text.as_str()) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .send_error(e.reference, e.client_id, e.code, &e.message)
                    .await;
            }
        };
        // Boxed: request handling needs a large future, and keeping it inline would make every
        // idle connection's task carry that size (measured 4 KB per connection).
        Box::pin(self.on_frame(envelope.reference, envelope.frame)).await
    }

    async fn submit(&mut self, reference: Option<u64>, change: Change) -> Step {
        let op = WriteOp {
            actor: self.user.id,
            actor_name: self.user.name.clone(),
            reference,
            origin: self.handle.clone(),
            change,
        };
        if let Err(op) = self.app.writer.submit(op).await {
            let client_id = match op.change {
                Change::Send { client_id, .. } => Some(client_id),
                _ => None,
            };
            return self
                .send_error(
                    reference,
                    client_id,
                    ErrorCode::Internal,
                    "the server is shutting down",
                )
                .await;
        }
        Ok(())
    }

    async fn on_frame(&mut self, r: Option<u64>, frame: ClientFrame) -> Step {
        let limits = self.app.config.limits.clone();
        let user = self.user.id;
        if let Err(bad) = frame.check(
            user.0,
            limits.max_message_chars,
            limits.max_message_bytes,
            limits.history_max,
        ) {
            let client_id = frame.client_id().map(str::to_string);
            return self.send_error(r, client_id, bad.code, &bad.message).await;
        }
        match frame {
            ClientFrame::Sync { cursors, batch } => {
                self.batch = batch;
                self.start_sync(r, cursors).await
            }
            ClientFrame::Send {
                client_id,
                conversation,
                to,
                text,
                attachments,
            } => {
                let attachments = match crate::files::send_ids(&attachments, &limits) {
                    Ok(ids) => ids,
                    Err(why) => {
                        let code = ErrorCode::BadFrame;
                        return self.send_error(r, Some(client_id), code, &why).await;
                    }
                };
                let target = match (conversation, to) {
                    (Some(c), None) => Target::Conversation(ConversationId(c)),
                    (None, Some(u)) => Target::User(UserId(u)),
                    // `check` refused both and neither.
                    _ => return Ok(()),
                };
                self.submit(
                    r,
                    Change::Send {
                        target,
                        client_id,
                        text,
                        attachments,
                    },
                )
                .await
            }
            ClientFrame::History {
                conversation,
                before,
                around,
                limit,
            } => {
                let limit = limit.unwrap_or(50);
                let before = before.unwrap_or(u64::MAX);
                let conv = ConversationId(conversation);
                let text_bytes = limits.page_text_bytes;
                let res = self
                    .app
                    .db(move |s| match around {
                        Some(seq) => crate::search::history_around(
                            s,
                            user,
                            conv,
                            seq,
                            limit as usize,
                            text_bytes,
                        ),
                        None => s.history(user, conv, before, limit as usize, text_bytes),
                    })
                    .await;
                match res {
                    Ok(Some(msgs)) => {
                        let complete = msgs.first().is_none_or(|m| m.seq == 1);
                        let messages = msgs.iter().map(proto::Message::from_stored).collect();
                        self.send_frame(&ServerFrame::History {
                            reference: r,
                            conversation,
                            messages,
                            complete,
                        })
                        .await
                    }
                    Ok(None) => self.fail(r, not_found()).await,
                    Err(e) => self.internal(r, &e).await,
                }
            }
            ClientFrame::Read { conversation, seq } => {
                self.submit(
                    r,
                    Change::Read {
                        conversation: ConversationId(conversation),
                        seq,
                    },
                )
                .await
            }
            ClientFrame::Typing { conversation } => self.typing(r, conversation).await,
            ClientFrame::Conversations => {
                let max = limits.conversations_max;
                match self.app.db(move |s| s.conversations_of(user, max)).await {
                    Ok(list) => {
                        let conversations = self.wire_conversations(&list);
                        self.send_frame(&ServerFrame::Conversations {
                            reference: r,
                            conversations,
                        })
                        .await
                    }
                    Err(e) => self.internal(r, &e).await,
                }
            }
            ClientFrame::Members { conversation } => {
                let conv = ConversationId(conversation);
                match self.app.db(move |s| s.members_of(user, conv)).await {
                    Ok(Some(list)) => {
                        let hub = &self.app.hub;
                        let members = list
                            .iter()
                            .map(|m| proto::Member::from_info(m, hub.is_online(m.id)))
                            .collect();
                        self.send_frame(&ServerFrame::Members {
                            reference: r,
                            conversation,
                            members,
                        })
                        .await
                    }
                    Ok(None) => self.fail(r, not_found()).await,
                    Err(e) => self.internal(r, &e).await,
                }
            }
            ClientFrame::CreateGroup { title, members } => {
                let title = title.trim().to_string();
                let members = members.into_iter().map(UserId).collect();
                self.submit(r, Change::CreateGroup { title, members }).await
            }
            ClientFrame::AddMembers {
                conversation,
                members,
            } => {
                let members = members.into_iter().map(UserId).collect();
                self.submit(
                    r,
                    Change::AddMembers {
                        conversation: ConversationId(conversation),
                        members,
                    },
                )
                .await
            }
            ClientFrame::RemoveMember {
                conversation,
                user: target,
            } => {
                self.submit(
                    r,
                    Change::RemoveMember {
                        conversation: ConversationId(conversation),
                        user: UserId(target),
                    },
                )
                .await
            }
            ClientFrame::Leave { conversation } => {
                self.submit(
                    r,
                    Change::RemoveMember {
                        conversation: ConversationId(conversation),
                        user,
                    },
                )
                .await
            }
            ClientFrame::Search {
                query,
                conversation,
                before,
                limit,
            } => {
                let limit = limit.map_or(crate::search::DEFAULT_LIMIT, |l| l as usize);
                let req = crate::search::Request {
                    query,
                    conversation,
                    before,
                    limit,
                };
                let reply = crate::search::respond(&self.app, user, r, req).await;
                self.send_frame(&reply).await
            }
            ClientFrame::Users { query, limit } => {
                let limit = limit.unwrap_or(50);
                match self
                    .app
                    .db(move |s| s.search_users(&query, limit as usize))
                    .await
                {
                    Ok(list) => {
                        let hub = &self.app.hub;
                        let users = list
                            .into_iter()
                            .map(|u| proto::DirectoryUser {
                                id: u.id.0,
                                color: u.color_name(),
                                online: hub.is_online(u.id),
                                display_name: u.display_name,
                                name: u.name,
                            })
                            .collect();
                        self.send_frame(&ServerFrame::Users {
                            reference: r,
                            users,
                        })
                        .await
                    }
                    Err(e) => self.internal(r, &e).await,
                }
            }
        }
    }

    async fn fail(&mut self, r: Option<u64>, (code, msg): (ErrorCode, &'static str)) -> Step {
        self.send_error(r, None, code, msg).await
    }

    async fn internal(&mut self, r: Option<u64>, e: &(dyn std::fmt::Display + Sync)) -> Step {
        tracing::error!(user = self.user.id.0, "request failed: {e}");
        self.send_error(r, None, ErrorCode::Internal, "internal error; retry later")
            .await
    }

    async fn start_sync(&mut self, r: Option<u64>, cursors: Vec<proto::Cursor>) -> Step {
        let given: HashMap<u64, u64> = cursors.iter().map(|c| (c.conversation, c.seq)).collect();
        let user = self.user.id;
        let ahead = |last: &[(ConversationId, u64)]| {
            last.iter()
                .filter_map(|&(conv, last_seq)| {
                    let c = given.get(&conv.0).copied()?;
                    (c > last_seq).then_some((conv.0, c, last_seq))
                })
                .min()
        };
        let mut last = self.welcome_seqs.take();
        if last.as_deref().is_some_and(|l| ahead(l).is_some()) {
            // The welcome's seqs may be older than what the client has seen since (on another
            // connection): only the current ones can say a cursor is ahead.
            last = None;
        }
        let last = match last {
            Some(seqs) => seqs,
            None => match self.app.db(move |s| s.last_seqs(user)).await {
                Ok(l) => l,
                Err(e) => return self.internal(r, &e).await,
            },
        };
        // A cursor past the last message is from another history (a restore gave the database
        // a new epoch): syncing from it would skip every message up to it, silently.
        if let Some((conv, cursor, last_seq)) = ahead(&last) {
            return self
                .send_frame(&ServerFrame::cursor_ahead(r, conv, cursor, last_seq))
                .await;
        }
        self.cursors.clear();
        self.pending.clear();
        for (conv, last_seq) in last {
            let c = given.get(&conv.0).copied().unwrap_or(0);
            self.cursors.insert(conv.0, c);
            if last_seq > c {
                self.pending.insert(conv.0);
            }
        }
        self.synced = true;
        if self.pending.is_empty() {
            self.send_frame(&ServerFrame::Synced { reference: r }).await
        } else {
            self.sync_ref = Some(r);
            Ok(())
        }
    }

    async fn typing(&mut self, r: Option<u64>, conversation: u64) -> Step {
        let interval = self.app.config.limits.typing_interval;
        let now = Instant::now();
        if self
            .typing_last
            .get(&conversation)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return Ok(());
        }
        let user = self.user.id;
        let conv = ConversationId(conversation);
        match self.app.db(move |s| s.member_ids_for(user, conv)).await {
            Ok(Some(members)) => {
                // Throttle only what was forwarded, so a non-member is told every time.
                if self.typing_last.len() > 256 {
                    self.typing_last.clear();
                }
                self.typing_last.insert(conversation, now);
                let others: Vec<UserId> = members.into_iter().filter(|m| *m != user).collect();
                let frame = Outbound::Frame(encode(&ServerFrame::Typing {
                    conversation,
                    user: user.0,
                    name: self.user.name.clone(),
                }));
                self.app.hub.send_to_users(&others, &frame, None);
                Ok(())
            }
            Ok(None) => self.fail(r, not_found()).await,
            Err(e) => self.internal(r, &e).await,
        }
    }
}

/// The `ref` and `client_id` of a frame, if it is a JSON object that has them.
fn request_names(text: &str) -> (Option<u64>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Names {
        #[serde(default, rename = "ref")]
        reference: Option<u64>,
        #[serde(default)]
        client_id: Option<String>,
    }
    match serde_json::from_str::<Names>(text) {
        Ok(n) => (n.reference, n.client_id),
        Err(_) => (None, None),
    }
}

/// Runs a socket write to completion unless the client stops taking data: it ends as
/// `Stalled` after `timeout` without completing, or by the session's `slow_deadline` once the
/// outbox has overflowed (the hub says so through `flags.wake`; the deadline is then set to
/// `grace` from that moment, for this and every later write). A write that is ready at once
/// costs no timer.
async fn guard(
    flags: &SessionFlags,
    slow_deadline: &mut Option<Instant>,
    timeout: std::time::Duration,
    grace: std::time::Duration,
    write: impl std::future::Future<Output = Result<(), WsError>>,
) -> Step {
    // Created before the flag is read, so an overflow after the read still wakes it.
    let overflow = flags.wake.notified();
    tokio::pin!(overflow, write);
    let deadline = |slow: &Option<Instant>, start: Instant| {
        let d = start + timeout;
        slow.map_or(d, |s| d.min(s))
    };
    let start = Instant::now();
    if flags.overflowed.load(Ordering::Acquire) {
        slow_deadline.get_or_insert_with(|| start + grace);
    }
    let sleep = tokio::time::sleep_until(deadline(slow_deadline, start).into());
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            r = &mut write => return r.map_err(ws_error),
            _ = &mut sleep => return Err(End::Stalled),
            _ = &mut overflow => {
                overflow.set(flags.wake.notified());
                if flags.overflowed.load(Ordering::Acquire) && slow_deadline.is_none() {
                    *slow_deadline = Some(Instant::now() + grace);
                    sleep.as_mut().reset(deadline(slow_deadline, start).into());
                }
            }
        }
    }
}

/// Writes one text frame to the socket under the WebSocket, after everything tungstenite has
/// queued (so frames keep their order), with the header from tungstenite's own `FrameHeader`
/// and one vectored write for header and payload. A server's frames are unmasked and this one
/// is whole (FIN), so the bytes are exactly what tungstenite would have written. Only called
/// from the session's own task, between frames, while the connection is open (a received close
/// ends the session loop before anything else is written).
async fn write_direct<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    text: Utf8Bytes,
) -> Result<(), WsError> {
    use bytes::Buf;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    ws.flush().await?;
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let payload = bytes::Bytes::from(text);
    let mut head = [0u8; 14];
    let head_len = header.len(payload.len() as u64);
    header.format(payload.len() as u64, &mut &mut head[..])?;
    let mut out = (&head[..head_len]).chain(payload);
    let stream = ws.get_mut();
    stream.write_all_buf(&mut out).await?;
    Ok(())
}

/// Maps a read/write error to how the connection ends.
fn ws_error(e: WsError) -> End {
    match e {
        WsError::Capacity(_) => End::Close(1009, "frame too large"),
        WsError::Utf8(_) => End::Close(1007, "invalid UTF-8"),
        WsError::Protocol(_) => End::Close(1002, "protocol error"),
        WsError::WriteBufferFull(m) => {
            // Frames wait for the previous one to be written, so only a frame bigger than
            // `ws_max_write_buffer` gets here: a server bug, not the client's doing.
            tracing::error!(
                bytes = m.len(),
                "a frame is larger than the write buffer limit; closing the connection"
            );
            End::Gone
        }
        _ => End::Gone,
    }
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
