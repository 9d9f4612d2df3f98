//! Storage faults in process, at the level of the store and the message writer: the test file
//! layer under redb and the write-ahead log (`store::fault`) fails the Nth write or fsync, or
//! cuts the power, and these tests check what docs/RELIABILITY.md promises.
//!
//! - `*_heals_after_every_failed_write_or_fsync`: for a send, a send followed by a checkpoint,
//!   creating a group, adding a member and a login (an immediate durable commit), every write
//!   and fsync the operation makes is failed in turn (with `ENOSPC` until the disk is "freed",
//!   with `EIO` once, with `EIO` until freed). After each: the writer thread is alive and
//!   answered; an acknowledgement means the change is in what a power cut right then would
//!   leave; a refusal carries `storage_full` or `storage_error`; once the fault stops, writes
//!   resume by themselves and a new message is acknowledged; and a restart, like a power cut
//!   after healing, finds every acknowledged change, each message exactly once at its seq.
//! - `power_cuts_keep_every_acknowledged_message_once_at_its_seq`: many cycles of pipelined
//!   sends from two users with frequent checkpoints, a power cut at a random moment (every
//!   write not fsync'd dropped, or the unsynced writes kept and each file's last one torn), and
//!   a restart that must find every message ever acknowledged exactly once at its seq, with no
//!   gap.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::hub::{Hub, Outbound, SessionFlags, SessionHandle};
use crate::metrics::Metrics;
use crate::model::{ConversationId, Session, SessionKind, UserId};
use crate::store::chat::{Change, Target};
use crate::store::fault::{Cut, Fault, Plan};
use crate::store::{wal, AdminGrant, Store, StoreError, DB_FILE};
use crate::writer::{WriteOp, Writer};

const ALICE: UserId = UserId(1);
const BOB: UserId = UserId(2);
const CAROL: UserId = UserId(3);
/// The direct conversation of alice and bob, and a group of the two (from `template`).
const DIRECT: ConversationId = ConversationId(1);
const GROUP: ConversationId = ConversationId(2);
/// How long a test waits for a reply or for writes to resume.
const WAIT: Duration = Duration::from_secs(10);

/// A change acknowledged to its client (or, for a login, reported done).
#[derive(Clone, Debug)]
enum Acked {
    Message(ConversationId, u64, String),
    Group(ConversationId),
    Member(ConversationId, UserId),
    Session([u8; 32]),
}

/// The operations walked over.
#[derive(Clone, Copy, Debug)]
enum Op {
    Send,
    /// A send, then the checkpoint the writer makes after it (its page writes and fsync on the
    /// sync thread, then the covered log file emptied).
    SendAndCheckpoint,
    CreateGroup,
    AddMember,
    /// A login's session record: a durable redb commit outside the log.
    Login,
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn copy_dir(from: &Path, to: &Path) {
    for f in [DB_FILE, wal::WAL_FILES[0], wal::WAL_FILES[1]] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).expect("copy");
        }
    }
}

/// Opens a store, waiting while the previous one's sync thread still holds the file.
fn open(dir: &Path) -> Store {
    let deadline = Instant::now() + WAIT;
    loop {
        match Store::open(dir) {
            Ok(s) => return s,
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
}

/// alice, bob and carol; alice and bob's direct conversation with 3 messages, and a group of
/// the two; checkpointed and closed.
fn template() -> tempfile::TempDir {
    let t = tmp();
    let s = open(t.path());
    for name in ["alice", "bob", "carol"] {
        s.create_user(name, "h", AdminGrant::No, false, 1).unwrap();
    }
    let mut cache = crate::store::chat::MemberCache::default();
    let changes: Vec<Change> = (0..3)
        .map(|i| Change::Send {
            reply_to: None,
            target: Target::User(BOB),
            client_id: format!("t{i}"),
            text: format!("template {i}"),
            attachments: Vec::new(),
            mentions: Vec::new(),
        })
        .chain([Change::CreateGroup {
            title: "g".into(),
            members: vec![BOB],
        }])
        .collect();
    for c in &changes {
        let op = [wal::LoggedOp {
            actor: ALICE,
            actor_name: "alice",
            change: c,
        }];
        let r = s.apply_logged(&mut cache, 1000, &op).unwrap();
        assert!(r[0].is_ok());
    }
    s.checkpoint().unwrap();
    t
}

/// A store with the fault layer under it, the message writer, and sessions of alice and bob
/// whose outboxes the test reads.
struct Rig {
    plan: Arc<Plan>,
    store: Store,
    writer: Option<Writer>,
    thread: Option<JoinHandle<()>>,
    rt: tokio::runtime::Runtime,
    sessions: Vec<(SessionHandle, mpsc::Receiver<Outbound>)>,
    next_ref: u64,
}

impl Rig {
    fn open(dir: &Path) -> Rig {
        let plan = Plan::install(dir);
        let store = open(dir);
        store.set_timings_for_tests(Duration::from_secs(3600), Duration::from_millis(20));
        let hub = Arc::new(Hub::default());
        let (writer, thread) = Writer::start(
            store.clone(),
            hub.clone(),
            256,
            64,
            1000,
            Arc::new(Metrics::default()),
            None,
        )
        .expect("writer");
        let sessions = [ALICE, BOB]
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let (tx, rx) = mpsc::channel(100_000);
                let h = SessionHandle {
                    id: i as u64 + 1,
                    user: *u,
                    tx,
                    flags: Arc::new(SessionFlags::default()),
                };
                // Online, so group changes answer it.
                hub.register(h.clone());
                (h, rx)
            })
            .collect();
        Rig {
            plan,
            store,
            writer: Some(writer),
            thread: Some(thread),
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            sessions,
            next_ref: 1,
        }
    }

    fn submit(&mut self, who: usize, change: Change) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        let (h, _) = &self.sessions[who];
        let op = WriteOp {
            actor: h.user,
            actor_name: if who == 0 { "alice" } else { "bob" }.into(),
            reference: Some(r),
            origin: h.clone(),
            change,
        };
        let w = self.writer.as_ref().expect("writer");
        assert!(self.rt.block_on(w.submit(op)).is_ok(), "the writer stopped");
        r
    }

    /// The next frame in `who`'s outbox, as JSON.
    fn frame(&mut self, who: usize) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.sessions[who].1.try_recv() {
                Ok(out) => {
                    let f = match &out {
                        Outbound::Frame(f) => f,
                        Outbound::Message { frame, .. }
                        | Outbound::Ack { frame, .. }
                        | Outbound::Joined { frame, .. }
                        | Outbound::Left { frame, .. } => frame,
                    };
                    return serde_json::from_str(f.as_str()).expect("JSON frame");
                }
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "no reply within {WAIT:?}; writer finished: {}; {}",
                        self.writer_finished(),
                        self.store.describe_for_tests()
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// The reply to request `r` of `who` (skipping frames that answer nothing).
    fn reply(&mut self, who: usize, r: u64) -> Value {
        loop {
            let f = self.frame(who);
            if f["ref"] == r {
                return f;
            }
        }
    }

    fn writer_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Runs `op` as alice; `Ok` with what was acknowledged, or `Err` with the error code.
    fn run(&mut self, op: Op, tag: &str) -> Result<Acked, String> {
        let send = |tag: &str| Change::Send {
            reply_to: None,
            target: Target::Conversation(DIRECT),
            client_id: tag.to_string(),
            text: format!("text of {tag}"),
            attachments: Vec::new(),
            mentions: Vec::new(),
        };
        let f = match op {
            Op::Send => {
                let r = self.submit(0, send(tag));
                self.reply(0, r)
            }
            Op::SendAndCheckpoint => {
                self.store
                    .set_timings_for_tests(Duration::ZERO, Duration::from_millis(20));
                let r = self.submit(0, send(tag));
                let f = self.reply(0, r);
                self.store.wait_checkpoint_settled();
                self.store
                    .set_timings_for_tests(Duration::from_secs(3600), Duration::from_millis(20));
                f
            }
            Op::CreateGroup => {
                let change = Change::CreateGroup {
                    title: tag.to_string(),
                    members: vec![BOB],
                };
                let r = self.submit(0, change);
                self.reply(0, r)
            }
            Op::AddMember => {
                let change = Change::AddMembers {
                    conversation: GROUP,
                    members: vec![CAROL],
                };
                let r = self.submit(0, change);
                self.reply(0, r)
            }
            Op::Login => {
                let mut hash = [0u8; 32];
                hash[..tag.len().min(32)].copy_from_slice(&tag.as_bytes()[..tag.len().min(32)]);
                let session = Session {
                    user: ALICE,
                    kind: SessionKind::Cookie,
                    created_ms: 1,
                    expires_ms: 0,
                    label: String::new(),
                };
                return match self.store.create_session(&hash, &session) {
                    Ok(()) => Ok(Acked::Session(hash)),
                    Err(StoreError::Unwritable(u)) => Err(u.problem.code().to_string()),
                    Err(e) => panic!("login: {e}"),
                };
            }
        };
        match f["type"].as_str() {
            Some("ack") => Ok(Acked::Message(
                ConversationId(f["conversation"].as_u64().unwrap()),
                f["seq"].as_u64().unwrap(),
                f["client_id"].as_str().unwrap().to_string(),
            )),
            Some("conversation") => {
                let id = ConversationId(f["conversation"]["id"].as_u64().unwrap());
                Ok(match op {
                    Op::AddMember => Acked::Member(id, CAROL),
                    _ => Acked::Group(id),
                })
            }
            Some("error") => Err(f["code"].as_str().unwrap().to_string()),
            _ => panic!("unexpected reply {f}"),
        }
    }

    /// Waits until writes are accepted again.
    fn wait_writable(&self, what: &str) -> Duration {
        let t = Instant::now();
        while self.store.write_health().is_some() {
            assert!(
                t.elapsed() < WAIT,
                "writes did not resume ({what}): {}",
                self.store.describe_for_tests()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        t.elapsed()
    }

    /// What a power cut now would leave, as a directory of its own.
    fn snapshot(&self, cut: Cut) -> tempfile::TempDir {
        let d = tmp();
        self.plan.snapshot_to(d.path(), cut);
        d
    }

    /// Stops the writer (its final checkpoint included) and closes the store.
    fn stop(mut self) {
        drop(self.writer.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer thread panicked");
        }
        self.plan.uninstall();
    }
}

/// Opens `dir` and checks that it holds every change in `acked`: the direct conversation's
/// messages are seq 1..n without a gap, each client_id once, each acknowledged one at its seq.
fn verify(dir: &Path, acked: &[Acked], what: &str) {
    let s = open(dir);
    let msgs = s
        .messages_after(ALICE, DIRECT, 0, 1_000_000)
        .unwrap()
        .expect("alice is in the direct conversation");
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=msgs.len() as u64).collect::<Vec<_>>(),
        "no gap ({what})"
    );
    let mut ids: Vec<&str> = msgs.iter().map(|m| m.client_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "every message once ({what})");
    for a in acked {
        match a {
            Acked::Message(conv, seq, id) => {
                assert_eq!(*conv, DIRECT);
                let m = msgs.get(*seq as usize - 1);
                assert_eq!(
                    m.map(|m| m.client_id.as_str()),
                    Some(id.as_str()),
                    "acknowledged {id} at {seq} ({what})"
                );
            }
            Acked::Group(conv) => assert!(
                s.conversation_for(BOB, *conv).unwrap().is_some(),
                "acknowledged group {conv} ({what})"
            ),
            Acked::Member(conv, u) => assert!(
                s.conversation_for(*u, *conv).unwrap().is_some(),
                "acknowledged member {u} of {conv} ({what})"
            ),
            Acked::Session(hash) => assert!(
                s.session_user(hash, 2).unwrap().is_some(),
                "a login reported done ({what})"
            ),
        }
    }
}

/// Walks a failure over every write and fsync of `op` (see the module doc).
fn walk(op: Op) {
    let template = template();
    // How many writes and fsyncs the operation makes, and what they are.
    let (k, trace) = {
        let d = tmp();
        copy_dir(template.path(), d.path());
        let mut rig = Rig::open(d.path());
        rig.plan.trace();
        let before = rig.plan.ops();
        let done = rig.run(op, "count");
        assert!(done.is_ok(), "{op:?} without faults: {done:?}");
        let k = rig.plan.ops() - before;
        let trace = rig.plan.take_trace();
        rig.stop();
        (k, trace)
    };
    assert!(k >= 2, "{op:?} made {k} writes/fsyncs: {trace:?}");
    let mut resume = Duration::ZERO;
    for (fault, sticky) in [(Fault::Full, true), (Fault::Eio, false), (Fault::Eio, true)] {
        for n in 1..=k {
            let what = format!(
                "{op:?}, {fault:?}{} at write/fsync {n} of {k}: {}",
                if sticky { " until freed" } else { " once" },
                trace.get(n as usize - 1).map_or("", |s| s.as_str())
            );
            let d = tmp();
            copy_dir(template.path(), d.path());
            let mut rig = Rig::open(d.path());
            rig.plan.fail_nth(n, fault, sticky);
            let mut acked = Vec::new();
            match rig.run(op, "under-fault") {
                Ok(a) => acked.push(a),
                Err(code) => {
                    let want = match fault {
                        Fault::Full => "storage_full",
                        Fault::Eio => "storage_error",
                    };
                    assert_eq!(code, want, "{what}");
                }
            }
            assert!(rig.plan.injected() > 0, "the fault was not reached: {what}");
            assert!(!rig.writer_finished(), "the writer stopped: {what}");
            if sticky {
                assert!(
                    rig.store.write_health().is_some(),
                    "writes are refused while the disk fails: {what}"
                );
                // Refused at once, without touching the disk.
                let ops = rig.plan.ops();
                let refused = rig.run(Op::Send, "refused");
                assert!(refused.is_err(), "{what}: {refused:?}");
                assert!(
                    rig.plan.ops() - ops < 16,
                    "a refused write is not attempted: {what}"
                );
            }
            // A power cut right now keeps everything acknowledged.
            let cut = rig.snapshot(Cut::DropUnsynced);
            // The disk takes writes again: they resume without a restart.
            rig.plan.heal();
            resume = resume.max(rig.wait_writable(&what));
            // New changes are acknowledged, and durable: a message with its checkpoint (a
            // durable commit built on whatever the failed one left in redb: its pages must be
            // on disk by now), then a login.
            let after = rig.run(Op::SendAndCheckpoint, "after-heal");
            acked.push(after.unwrap_or_else(|e| panic!("{what}: a send after healing got {e}")));
            let cut_after = rig.snapshot(Cut::DropUnsynced);
            let login = rig.run(Op::Login, "login-after-heal");
            acked.push(login.unwrap_or_else(|e| panic!("{what}: a login after healing got {e}")));
            rig.stop();
            let n = acked.len();
            verify(
                cut.path(),
                &acked[..n - 2],
                &format!("power cut under the fault, {what}"),
            );
            verify(
                cut_after.path(),
                &acked[..n - 1],
                &format!("power cut after healing, {what}"),
            );
            verify(d.path(), &acked, &format!("restart, {what}"));
        }
    }
    eprintln!("{op:?}: {k} writes/fsyncs walked 3 ways; writes resumed at most {resume:?} after the fault stopped");
}

#[test]
fn a_send_heals_after_every_failed_write_or_fsync() {
    walk(Op::Send);
}

#[test]
fn a_send_and_its_checkpoint_heal_after_every_failed_write_or_fsync() {
    walk(Op::SendAndCheckpoint);
}

#[test]
fn creating_a_group_heals_after_every_failed_write_or_fsync() {
    walk(Op::CreateGroup);
}

#[test]
fn adding_a_member_heals_after_every_failed_write_or_fsync() {
    walk(Op::AddMember);
}

#[test]
fn a_login_heals_after_every_failed_write_or_fsync() {
    walk(Op::Login);
}

/// See the module doc.
#[test]
fn power_cuts_keep_every_acknowledged_message_once_at_its_seq() {
    const CYCLES: u64 = 60;
    const SENDS: usize = 150;
    let template = template();
    let d = tmp();
    copy_dir(template.path(), d.path());
    let mut acked: Vec<Acked> = Vec::new();
    let mut cut_inside = 0;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    for cycle in 0..CYCLES {
        let cut = if cycle % 2 == 0 {
            Cut::DropUnsynced
        } else {
            Cut::TearLast
        };
        let mut rig = Rig::open(d.path());
        rig.plan.seed(cycle + 1);
        // Checkpoints as often as the writer can make them, so cuts land in them too.
        rig.store
            .set_timings_for_tests(Duration::from_millis(2), Duration::from_millis(20));
        // Where to cut: at a pseudo-random write or fsync of this cycle's (a cycle makes some
        // 50-90: the sends are group-committed), so every window between two of them (in a
        // checkpoint too) is hit sooner or later.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rig.plan.cut_at(1 + rng % 70, cut);
        let mut pending = std::collections::HashSet::new();
        let mut absorb = |rig: &mut Rig, pending: &mut std::collections::HashSet<u64>| {
            for w in 0..2 {
                while let Ok(out) = rig.sessions[w].1.try_recv() {
                    let (Outbound::Ack { frame, .. } | Outbound::Frame(frame)) = out else {
                        continue;
                    };
                    let f: Value = serde_json::from_str(frame.as_str()).unwrap();
                    if let Some(r) = f["ref"].as_u64() {
                        pending.remove(&r);
                    }
                    if f["type"] == "ack" {
                        acked.push(Acked::Message(
                            ConversationId(f["conversation"].as_u64().unwrap()),
                            f["seq"].as_u64().unwrap(),
                            f["client_id"].as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        };
        for i in 0..SENDS {
            let who = i % 2;
            let tag = format!("c{cycle}-{i}");
            let change = Change::Send {
                reply_to: None,
                target: Target::Conversation(DIRECT),
                client_id: tag.clone(),
                text: tag,
                attachments: Vec::new(),
                mentions: Vec::new(),
            };
            pending.insert(rig.submit(who, change));
            absorb(&mut rig, &mut pending);
            if i % 8 == 0 {
                // Let checkpoints and their fsyncs interleave with the sends.
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        // Every request is answered: acks that arrive after the cut count too (they come from
        // fsyncs that completed before it).
        let deadline = Instant::now() + WAIT;
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} requests unanswered",
                pending.len()
            );
            absorb(&mut rig, &mut pending);
            std::thread::sleep(Duration::from_micros(200));
        }
        if rig.plan.is_dead() {
            cut_inside += 1;
        } else {
            rig.plan.power_cut(cut);
        }
        rig.stop();
        verify(d.path(), &acked, &format!("cycle {cycle}, {cut:?}"));
    }
    let n = acked.len();
    assert!(
        n > 500,
        "only {n} messages acknowledged over {CYCLES} cycles"
    );
    eprintln!(
        "{CYCLES} power cuts ({cut_inside} at a write or fsync while sends were in flight), {n} acknowledged messages all present once at their seq"
    );
}
