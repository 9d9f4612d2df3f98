//! The message writer: one dedicated thread that applies every chat mutation (send, read,
//! group membership) with group commit, then acknowledges and fans out.
//!
//! Sessions submit `WriteOp`s into a bounded queue. The thread takes the first waiting op, drains
//! whatever else is queued (up to `Limits::writer_batch_max`), appends them as one record to the
//! write-ahead log with one fsync and applies them in one redb transaction
//! (`Store::apply_logged`). Only then does it pass the batch to a second thread,
//! the fan-out, which sends each origin its ack or error and hands the results to the hub. So
//! throughput is not one fsync per message, nothing is acknowledged or delivered before it is
//! durable, and the next commit's fsync overlaps the previous batch's delivery. Ops that arrive
//! during a commit form the next batch; batches are delivered in commit order. A small batch
//! committed while the fan-out thread is idle is delivered by the writer itself (one thread
//! hand-off less for a lone message's ack; the order is the same since nothing is pending).
//!
//! It calls the store (`apply_logged`, `checkpoint_if_due`, plus reads for per-user conversation
//! summaries) and the hub; it never touches sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::hub::{encode, Hub, Outbound, RunItem, SessionHandle};
use crate::metrics::Metrics;
use crate::model::{now_ms, ConversationId, MessageKind, StoredMessage, UserId};
use crate::proto::{self, ErrorCode, ServerFrame};
use crate::store::chat::{ChatError, MemberCache, MembershipOutcome, SendOutcome};
use crate::store::health::Problem;
use crate::store::wal::LoggedOp;
use crate::store::{Store, StoreError};

pub use crate::store::chat::Change;

/// A change plus who asked for it.
pub struct WriteOp {
    pub actor: UserId,
    pub actor_name: String,
    pub reference: Option<u64>,
    pub origin: SessionHandle,
    pub change: Change,
}

use crate::store::chat::Applied as Done;

/// Handle to submit ops to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    /// Starts the writer thread.
    pub fn start(
        store: Store,
        hub: Arc<Hub>,
        queue: usize,
        batch_max: usize,
        broadcast_group_max: u64,
        stats: Arc<Metrics>,
        search: Option<crate::search::Hints>,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(queue);
        // Two committed batches may wait for delivery; beyond that the writer waits too, so
        // memory stays bounded when delivery is the bottleneck.
        let (fan_tx, fan_rx) = std::sync::mpsc::sync_channel(2);
        let fanout = Arc::new(Fanout {
            store: store.clone(),
            hub,
            broadcast_group_max,
            stats: stats.clone(),
            queued: AtomicUsize::new(0),
        });
        let fan = fanout.clone();
        let fan_thread = std::thread::Builder::new()
            .name("chatd-fanout".into())
            .spawn(move || fan.run(fan_rx))?;
        let thread = std::thread::Builder::new()
            .name("chatd-writer".into())
            .spawn(move || {
                let mut w = WriterThread {
                    store,
                    rx,
                    batch_max,
                    cache: MemberCache::default(),
                    stats,
                    fanout,
                    fan_tx,
                    search,
                };
                w.run();
                // Dropping the sender ends the fan-out thread once it has delivered everything.
                drop(w);
                let _ = fan_thread.join();
            })?;
        Ok((Writer { tx }, thread))
    }

    /// Queues an op, waiting if the queue is full (backpressure on the submitting session only).
    /// Fails only when the writer has stopped.
    pub async fn submit(&self, op: WriteOp) -> Result<(), WriteOp> {
        self.tx.send(op).await.map_err(|e| e.0)
    }
}

struct WriterThread {
    store: Store,
    rx: mpsc::Receiver<WriteOp>,
    batch_max: usize,
    cache: MemberCache,
    stats: Arc<Metrics>,
    fanout: Arc<Fanout>,
    /// Committed batches, in commit order, to the fan-out thread.
    fan_tx: std::sync::mpsc::SyncSender<Committed>,
    /// Told of every committed message (never waits: `search::Hints`).
    search: Option<crate::search::Hints>,
}

/// A batch whose fan-out reaches at most this many members is delivered by the writer itself
/// when the fan-out thread is idle: one thread hand-off less on the ack path when the server is
/// not busy. (Under load the fan-out thread is busy and overlaps delivery with the next commit.)
const INLINE_FANOUT_MAX: usize = 64;

/// Most messages handed to a session in one go (a run, see `Fanout::dispatch`). About what a
/// session writes per flush; longer runs would fill one outbox in a burst while the session
/// has no chance to drain it, and close a client that is keeping up.
const RUN_MAX: usize = 32;

/// A committed batch: each op with its outcome, or every op with the error code and message
/// of the failed commit.
enum Committed {
    Done(Vec<(WriteOp, Result<Done, ChatError>)>),
    Failed(Vec<WriteOp>, ErrorCode, String),
}

impl Committed {
    /// Roughly how many sessions' outboxes delivering this batch touches.
    fn reach(&self) -> usize {
        match self {
            Committed::Done(results) => results
                .iter()
                .map(|(_, r)| match r {
                    Ok(Done::Sent(s) | Done::Event(s) | Done::Renamed(s)) => s.members.len(),
                    Ok(Done::Read(Some((_, m)))) => m.len(),
                    Ok(Done::Membership(m)) => m.members.len() + m.removed.len(),
                    _ => 1,
                })
                .sum(),
            Committed::Failed(ops, ..) => ops.len(),
        }
    }
}

/// Sends acks, errors and fan-out for committed batches, on its own thread, so the writer can
/// start the next commit (and its fsync) while the previous batch is being delivered. Batches
/// arrive in commit order over one channel, so deliveries keep that order; the writer delivers a
/// small batch itself only when `queued` is 0 (nothing of an earlier batch is left to deliver).
struct Fanout {
    store: Store,
    hub: Arc<Hub>,
    broadcast_group_max: u64,
    stats: Arc<Metrics>,
    /// Batches handed to the fan-out thread and not yet delivered.
    queued: AtomicUsize,
}

/// What the clients of a failed commit are told. A refused write (full or failing disk) was
/// logged once by the store; anything else is logged here.
fn commit_error(e: &StoreError, ops: usize) -> (ErrorCode, String) {
    match e {
        StoreError::Unwritable(u) => (
            match u.problem {
                Problem::Full => ErrorCode::StorageFull,
                Problem::Io => ErrorCode::StorageError,
            },
            u.client_message().to_string(),
        ),
        e => {
            tracing::error!("commit of {ops} operations failed: {e}");
            (
                ErrorCode::Internal,
                "the server could not store this; retry later".into(),
            )
        }
    }
}

fn chat_error(e: &ChatError) -> (ErrorCode, String) {
    match e {
        ChatError::NotFound => (ErrorCode::NotFound, "no such conversation".into()),
        ChatError::UserNotFound => (ErrorCode::UserNotFound, "no such user".into()),
        ChatError::Forbidden(m) => (ErrorCode::Forbidden, (*m).into()),
        ChatError::Invalid(m) => (ErrorCode::BadFrame, (*m).into()),
        ChatError::Missing(m) => (ErrorCode::NotFound, (*m).into()),
    }
}

impl WriterThread {
    fn run(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut batch: Vec<WriteOp> = Vec::with_capacity(self.batch_max);
        // Ends when every Writer handle is dropped and the queue is empty.
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let now = now_ms();
            let started = std::time::Instant::now();
            let logged: Vec<LoggedOp<'_>> = batch
                .iter()
                .map(|op| LoggedOp {
                    actor: op.actor,
                    actor_name: &op.actor_name,
                    change: &op.change,
                })
                .collect();
            let result = self.store.apply_logged(&mut self.cache, now, &logged);
            drop(logged);
            self.stats
                .commit_seconds
                .observe_duration(started.elapsed());
            self.stats.commit_ops.observe(batch.len() as f64);
            self.stats.commits.fetch_add(1, Relaxed);
            self.stats.ops.fetch_add(batch.len() as u64, Relaxed);
            let committed = match result {
                Ok(results) => {
                    if let Some(search) = &self.search {
                        let mut last = None;
                        for r in &results {
                            match r {
                                Ok(Done::Sent(s)) => {
                                    let c = s.message.conversation;
                                    if !s.duplicate && last != Some(c) {
                                        search.send(crate::search::Hint::Appended(c));
                                        last = Some(c);
                                    }
                                }
                                // An edit or a deletion changes what its target's document
                                // must hold (nothing, once deleted).
                                Ok(Done::Event(s)) if !s.duplicate => {
                                    let m = &s.message;
                                    if let (MessageKind::Edit | MessageKind::Delete, Some(t)) =
                                        (m.extra.kind, m.extra.target)
                                    {
                                        search
                                            .send(crate::search::Hint::Changed(m.conversation, t));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Committed::Done(batch.drain(..).zip(results).collect())
                }
                Err(e) => {
                    let (code, message) = commit_error(&e, batch.len());
                    Committed::Failed(std::mem::take(&mut batch), code, message)
                }
            };
            // Only this thread adds to `queued`, so 0 stays 0 until it hands over a batch.
            if self.fanout.queued.load(Ordering::Acquire) == 0
                && committed.reach() <= INLINE_FANOUT_MAX
            {
                self.fanout.dispatch(vec![committed]);
            } else {
                self.fanout.queued.fetch_add(1, Ordering::AcqRel);
                if self.fan_tx.send(committed).is_err() {
                    tracing::error!("fan-out thread is gone; stopping the writer");
                    break;
                }
            }
            // After the hand-off: a checkpoint delays the next batch, never this one's acks.
            if let Some(took) = self.store.checkpoint_if_due() {
                self.stats.checkpoint_seconds.observe_duration(took);
            }
        }
        // A clean stop leaves an empty log (a crash leaves it for `Store::open` to replay).
        match self.store.checkpoint() {
            Ok(()) => {}
            Err(StoreError::Unwritable(e)) => tracing::warn!(
                "no final checkpoint: {e}; the log keeps every batch and the next start applies them"
            ),
            Err(e) => tracing::error!("final checkpoint failed (the log keeps every batch): {e}"),
        }
        tracing::debug!("writer stopped");
    }
}

impl Fanout {
    fn run(&self, rx: std::sync::mpsc::Receiver<Committed>) {
        while let Ok(first) = rx.recv() {
            // Batches committed while the previous one was being delivered are delivered
            // together (still in commit order), so their messages form longer runs.
            let mut batches = vec![first];
            while let Ok(more) = rx.try_recv() {
                batches.push(more);
            }
            let n = batches.len();
            self.dispatch(batches);
            self.queued.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Sends the acks, errors and fan-out of committed batches, in commit order.
    ///
    /// Consecutive new messages to the same conversation form a run that is handed to each
    /// member's sessions together, so a session woken by the first finds the rest already queued
    /// and writes them all with one flush (one syscall instead of one per message).
    fn dispatch(&self, batches: Vec<Committed>) {
        let mut run: Vec<(WriteOp, SendOutcome)> = Vec::new();
        for committed in batches {
            match committed {
                Committed::Done(results) => {
                    for (op, r) in results {
                        match r {
                            // Events (edit, delete, reaction) travel like new messages.
                            Ok(Done::Sent(s) | Done::Event(s)) if !s.created && !s.duplicate => {
                                if run.len() >= RUN_MAX
                                    || run.last().is_some_and(|(_, p)| {
                                        p.message.conversation != s.message.conversation
                                    })
                                {
                                    self.deliver_run(&mut run);
                                }
                                run.push((op, s));
                            }
                            Ok(done) => {
                                self.deliver_run(&mut run);
                                self.deliver(op, done);
                            }
                            Err(e) => {
                                self.deliver_run(&mut run);
                                let (code, msg) = chat_error(&e);
                                reply_error(&op, code, msg);
                            }
                        }
                    }
                }
                Committed::Failed(ops, code, message) => {
                    self.deliver_run(&mut run);
                    for op in ops {
                        reply_error(&op, code, message.clone());
                    }
                }
            }
        }
        self.deliver_run(&mut run);
    }

    fn deliver(&self, op: WriteOp, done: Done) {
        match done {
            Done::Sent(s) => self.deliver_send(&op, s),
            Done::Read(None) => {}
            Done::Read(Some((seq, members))) => {
                let Change::Read { conversation, .. } = op.change else {
                    return;
                };
                let frame = Outbound::Frame(encode(&ServerFrame::Read {
                    conversation: conversation.0,
                    user: op.actor.0,
                    seq,
                }));
                if members.len() as u64 <= self.broadcast_group_max {
                    self.hub.send_to_users(&members, &frame, Some(op.origin.id));
                } else {
                    self.hub.send_to_user(op.actor, &frame, Some(op.origin.id));
                }
            }
            Done::Membership(m) => self.deliver_membership(&op, m),
            Done::Event(s) => self.deliver_send(&op, s),
            Done::Renamed(s) => {
                let conv = s.message.conversation;
                let members = s.members.clone();
                self.deliver_send(&op, s);
                for u in members.iter() {
                    self.send_summary(*u, conv, None, None);
                }
            }
            Done::Muted(conv) => {
                op.origin.deliver(Outbound::Frame(encode(&ServerFrame::Ack {
                    reference: op.reference,
                    client_id: None,
                    conversation: conv.0,
                    seq: None,
                    time: None,
                })));
                // Every device of the user (this one too) shows the new state.
                self.send_summary(op.actor, conv, None, None);
            }
        }
    }

    /// Delivers a run of new messages to one conversation (see `dispatch`) and empties it.
    /// Nothing in a run changed membership, so every message has the same members.
    fn deliver_run(&self, run: &mut Vec<(WriteOp, SendOutcome)>) {
        use std::sync::atomic::Ordering::Relaxed;
        if run.len() <= 1 {
            if let Some((op, s)) = run.pop() {
                self.deliver_send(&op, s);
            }
            return;
        }
        let items: Vec<RunItem> = run
            .iter()
            .map(|(op, s)| RunItem {
                origin: op.origin.id,
                message: message_out(&s.message),
                ack: ack_out(op, &s.message),
            })
            .collect();
        let mut acked = vec![false; items.len()];
        let reached = self.hub.send_run(&run[0].1.members, &items, &mut acked);
        // An origin session the hub no longer lists still gets its ack (if it is there at all).
        for ((op, _), (item, done)) in run.iter().zip(items.into_iter().zip(acked)) {
            if !done {
                op.origin.deliver(item.ack);
            }
        }
        self.stats.messages.fetch_add(run.len() as u64, Relaxed);
        self.stats.deliveries.fetch_add(reached as u64, Relaxed);
        run.clear();
    }

    fn deliver_send(&self, op: &WriteOp, s: SendOutcome) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &s.message;
        if s.created {
            // Both users learn about the new direct conversation before its first message.
            for u in s.members.iter() {
                self.send_summary(*u, m.conversation, Some(m.seq - 1), None);
            }
        }
        op.origin.deliver(ack_out(op, m));
        if s.duplicate {
            return;
        }
        self.stats.messages.fetch_add(1, Relaxed);
        let out = message_out(m);
        let reached = self.hub.send_to_users(&s.members, &out, Some(op.origin.id));
        self.stats.deliveries.fetch_add(reached as u64, Relaxed);
    }

    /// Sends `user`'s sessions the conversation as `user` sees it. With `joined = Some(seq)` the
    /// user has just become a member and sessions start their cursor for it at `seq` (the
    /// conversation's newest message when the op ran); otherwise it is an update.
    fn send_summary(
        &self,
        user: UserId,
        conv: ConversationId,
        joined: Option<u64>,
        origin: Option<(&SessionHandle, Option<u64>)>,
    ) {
        if !self.hub.is_online(user) {
            return;
        }
        let summary = match self.store.conversation_for(user, conv) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("cannot read conversation {conv} for {user}: {e}");
                return;
            }
        };
        let mut wire =
            proto::Conversation::from_summary(&summary, |id| self.hub.is_online(UserId(id)));
        if let (Some(seq), crate::model::ConversationKind::Group) = (joined, summary.kind) {
            // A new member's copy ends before the `system` line that announces the change
            // ("created", "added"), which follows as a message: a client that starts its
            // cursor at `last_seq` gets that line too.
            wire.last_seq = wire.last_seq.min(seq);
        }
        let make = |reference| {
            let frame = encode(&ServerFrame::Conversation {
                reference,
                conversation: wire.clone(),
            });
            match joined {
                Some(last_seq) => Outbound::Joined {
                    conversation: conv.0,
                    last_seq,
                    frame,
                },
                None => Outbound::Frame(frame),
            }
        };
        match origin {
            Some((o, reference)) if o.user == user => {
                o.deliver(make(reference));
                self.hub.send_to_user(user, &make(None), Some(o.id));
            }
            _ => {
                self.hub.send_to_user(user, &make(None), None);
            }
        }
    }

    fn deliver_membership(&self, op: &WriteOp, m: MembershipOutcome) {
        let conv = m.conversation;
        let origin = Some((&op.origin, op.reference));
        // Removed users: every device hears `removed`.
        for u in &m.removed {
            let make = |reference| Outbound::Left {
                conversation: conv.0,
                frame: encode(&ServerFrame::Removed {
                    reference,
                    conversation: conv.0,
                }),
            };
            if *u == op.actor {
                op.origin.deliver(make(op.reference));
                self.hub.send_to_user(*u, &make(None), Some(op.origin.id));
            } else {
                self.hub.send_to_user(*u, &make(None), None);
            }
        }
        // Everyone still a member gets the conversation as they now see it (new members: it is
        // new to them; others: member count or owner changed).
        for u in m.members.iter() {
            let joined = m.added.binary_search(u).is_ok().then_some(m.last_seq);
            self.send_summary(*u, conv, joined, origin);
        }
        // An owner who removed someone got the answer (with ref) in the loop above; a leaving
        // actor got `removed` above.
        // Then the group's `system` line, to every member (the actor's devices too: it is not
        // acked, and their cursors need it).
        if let Some(event) = &m.event {
            use std::sync::atomic::Ordering::Relaxed;
            let reached = self
                .hub
                .send_to_users(&m.members, &message_out(event), None);
            self.stats.messages.fetch_add(1, Relaxed);
            self.stats.deliveries.fetch_add(reached as u64, Relaxed);
        }
    }
}

/// The `ack` of a stored message for the session that sent it.
fn ack_out(op: &WriteOp, m: &StoredMessage) -> Outbound {
    let client_id = op.change.client_id().map(str::to_string);
    Outbound::Ack {
        conversation: m.conversation.0,
        seq: m.seq,
        frame: encode(&ServerFrame::Ack {
            reference: op.reference,
            client_id,
            conversation: m.conversation.0,
            seq: Some(m.seq),
            time: Some(m.time_ms),
        }),
    }
}

/// A stored message as delivered to the other members' sessions.
fn message_out(m: &StoredMessage) -> Outbound {
    Outbound::Message {
        conversation: m.conversation.0,
        seq: m.seq,
        frame: encode(&ServerFrame::Message {
            message: proto::Message::from_stored(m),
        }),
    }
}

fn reply_error(op: &WriteOp, code: ErrorCode, message: String) {
    let client_id = op.change.client_id().map(str::to_string);
    op.origin
        .deliver(Outbound::Frame(encode(&ServerFrame::error(
            op.reference,
            client_id,
            code,
            message,
        ))));
}
