// store: owns the client's state and what of it survives a reload. In memory: the conversation
// list, a message cache per conversation (a contiguous run of seqs ending at the newest one
// seen), members and read positions, typing and presence. In localStorage, per user: the
// database `epoch`, the cursors (`have`: highest seq received per conversation), the outbox
// of messages written but not yet acknowledged, and a snapshot of the conversation list and
// recent messages (shown at once after a reload, even offline). The outbox is shared with other tabs through
// localStorage (its `storage` event), so a reload or a second tab never loses or doubles one.
// Events of the seq log (edit, delete, reaction: docs/PROTOCOL.md) are folded into the text
// message they target and kept in the cache as small stubs, so the run of seqs stays contiguous
// and the cursor moves over them; `system` lines are cached like messages. Unread and mention
// counts count only text messages from others.
// Changes are announced with `emit(topic)`; the UI re-renders what it shows.

export const S = {
  me: null, // {id, name, display_name, color, admin}
  /** user id → {id, name, display_name, color}: how people are shown (display name, colour). */
  people: new Map(),
  epoch: null,
  limits: { max_message_bytes: 16384, history_limit: 100 },
  /** id → Conversation as the server describes it, kept current from frames. */
  convs: new Map(),
  /** id → {list: Message[] ascending seq, complete: bool (seq 1 is in list), loading: bool} */
  msgs: new Map(),
  /** conversation id → highest seq received ("have" in docs/PROTOCOL.md). */
  have: {},
  /**
   * [{client_id, conversation?, to?, to_name?, text, created, files?}] oldest first; `files`:
   * [{key, name, size, mime, id?, file?}] (files.js: `id` once uploaded, bytes in IndexedDB).
   */
  outbox: [],
  /** conversation id → Map(user id → read_seq) of the other members (read receipts). */
  reads: new Map(),
  /**
   * conversation id → Map(seq → message): quoted messages fetched on their own (a reply whose
   * original is older than the cache), kept folded like the cache.
   */
  quotes: new Map(),
  /** conversation id → members array from the last `members` reply. */
  members: new Map(),
  /** conversation id → Map(user id → {name, until}) */
  typing: new Map(),
  /** user id → online, from presence frames, members, users and conversations. */
  online: new Map(),
  /** False while disconnected: nobody's presence is known then (shown grey, "unknown"). */
  presenceKnown: false,
  /** The open conversation: {id} or a direct chat not created yet {draft: {id, name}}; or null. */
  current: null,
  synced: false,
};

// ---- change notification ------------------------------------------------------------------

const listeners = new Map();

/** Calls `fn` after `emit(topic)`. Topics: convs, msgs, outbox, members, typing, conn, me. */
export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, []);
  listeners.get(topic).push(fn);
}

export function emit(topic, arg) {
  if (S.me && (topic === "convs" || topic === "msgs")) saveSoon();
  for (const fn of listeners.get(topic) || []) fn(arg);
}

// ---- persistence --------------------------------------------------------------------------

const key = (name) => `chatd.u${S.me.id}.${name}`;

function load(name, fallback) {
  try {
    const v = localStorage.getItem(key(name));
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}

function save(name, value) {
  try {
    localStorage.setItem(key(name), JSON.stringify(value));
  } catch {
    // Storage full or disabled: the client still works, it just forgets on reload.
  }
}

let saveTimer = null;

/**
 * Persists cursors, the conversation list and the newest messages of recent conversations soon
 * (one write for a burst: catch-up can deliver thousands of messages). They are written together
 * so the cached messages never run ahead of the cursors.
 */
function saveSoon() {
  if (saveTimer) return;
  saveTimer = setTimeout(flush, 500);
}

const KEEP_CONVS = 20;

/** Writes the snapshot now (also on pagehide). */
export function flush() {
  clearTimeout(saveTimer);
  saveTimer = null;
  if (!S.me) return;
  save("cursors", S.have);
  const convs = sortedConvs();
  save("convs", convs);
  // The newest messages of the most recent conversations, within a size budget.
  for (let per = 40; per >= 5; per = Math.floor(per / 2)) {
    const msgs = {};
    for (const c of convs.slice(0, KEEP_CONVS)) {
      const list = S.msgs.get(c.id)?.list;
      if (list && list.length) msgs[c.id] = list.slice(-per);
    }
    const json = JSON.stringify(msgs);
    if (json.length < 1500000 || per <= 5) {
      try {
        localStorage.setItem(key("msgs"), json);
      } catch {
        // Over quota: the client still works, it just shows less after a reload.
      }
      break;
    }
  }
}

/**
 * Loads what user `me` had in this browser: epoch, cursors and outbox, plus the last snapshot
 * of conversations and messages, so a reload shows the chats (and the outbox) before the
 * connection is up, or while the server is down.
 */
export function init(me) {
  S.me = me;
  S.epoch = load("epoch", null);
  S.have = load("cursors", {});
  S.outbox = load("outbox", []);
  rememberPerson(me);
  for (const c of load("convs", [])) {
    if (c.peer) {
      c.peer.online = false; // presence is unknown until welcome
      rememberPerson(c.peer);
    }
    S.convs.set(c.id, c);
  }
  for (const [id, list] of Object.entries(load("msgs", {}))) {
    if (S.convs.has(Number(id)) && list.length) {
      S.msgs.set(Number(id), { list, complete: list[0].seq === 1, loading: false });
    }
  }
  window.addEventListener("storage", (e) => {
    if (e.key === key("outbox")) {
      S.outbox = load("outbox", []);
      emit("outbox");
    }
  });
  window.addEventListener("pagehide", flush);
  if (S.convs.size) emit("convs");
}

/** Forgets everything this browser stored for the user (logout). */
export function wipe() {
  clearTimeout(saveTimer);
  for (const name of ["epoch", "cursors", "outbox", "convs", "msgs"]) localStorage.removeItem(key(name));
  S.have = {};
  S.outbox = [];
}

/** `welcome.epoch`: when it differs from the stored one, cached messages and cursors go. */
export function setEpoch(epoch) {
  if (S.epoch !== null && S.epoch !== epoch) {
    S.have = {};
    S.msgs.clear();
    S.reads.clear();
    S.members.clear();
  }
  S.epoch = epoch;
  save("epoch", epoch);
  flush();
}

// ---- outbox -------------------------------------------------------------------------------

/** Adds a message to the outbox (read-modify-write, so other tabs' entries survive). */
export function outboxAdd(entry) {
  const list = load("outbox", []);
  list.push(entry);
  save("outbox", list);
  S.outbox = list;
  emit("outbox");
}

/** Changes the entry with `client_id` in place with `fn(entry)` (read-modify-write, like outboxAdd). */
export function outboxUpdate(clientId, fn) {
  const list = load("outbox", []);
  const e = list.find((x) => x.client_id === clientId);
  if (!e) return false;
  fn(e);
  save("outbox", list);
  S.outbox = list;
  emit("outbox");
  return true;
}

/** Removes and returns the entry with `client_id` (null when no tab had it). */
export function outboxTake(clientId) {
  const list = load("outbox", []);
  const found = list.find((e) => e.client_id === clientId) ||
    S.outbox.find((e) => e.client_id === clientId) || null;
  if (found) {
    const rest = list.filter((e) => e.client_id !== clientId);
    save("outbox", rest);
    S.outbox = rest;
    emit("outbox");
  }
  return found;
}

/** Outbox entries shown in the conversation `cur` ({id} or {draft}). */
export function outboxFor(cur) {
  if (!cur) return [];
  if (cur.draft) return S.outbox.filter((e) => e.to === cur.draft.id);
  const c = S.convs.get(cur.id);
  const peer = c && c.peer ? c.peer.id : null;
  return S.outbox.filter((e) => e.conversation === cur.id || (peer !== null && e.to === peer));
}

// ---- conversations ------------------------------------------------------------------------

/** Conversations, newest activity first. */
export function sortedConvs() {
  return [...S.convs.values()].sort((a, b) => b.last_time - a.last_time || b.id - a.id);
}

/** Unread messages for the tab title: a muted conversation counts only its mentions. */
export function totalUnread() {
  let n = 0;
  for (const c of S.convs.values()) n += c.muted ? c.mentions || 0 : c.unread;
  return n;
}

/** Whether message `m` mentions us. */
export const mentionsMe = (m) => Array.isArray(m.mentions) && m.mentions.includes(S.me.id);

/** A text message (older servers send no `kind`). */
export const isText = (m) => !m.kind || m.kind === "text";

/**
 * Recomputes our unread and mention counts of `c` after our read position moved: everything
 * read → 0; else counted from the cache when it reaches back to the read position (otherwise
 * the server's last figures stay, never more than the seqs left).
 */
function recount(c) {
  if (c.read_seq >= c.last_seq) {
    c.unread = 0;
    c.mentions = 0;
    return;
  }
  const list = S.msgs.get(c.id)?.list || [];
  if (list.length && list[0].seq <= c.read_seq + 1) {
    let unread = 0;
    let mentions = 0;
    for (let i = indexOfSeq(list, c.read_seq + 1); i < list.length; i++) {
      const m = list[i];
      if (!isText(m) || m.sender === S.me.id) continue;
      unread += 1;
      if (mentionsMe(m)) mentions += 1;
    }
    c.unread = unread;
    c.mentions = mentions;
    return;
  }
  c.unread = Math.min(c.unread || 0, c.last_seq - c.read_seq);
  c.mentions = Math.min(c.mentions || 0, c.unread);
}

/** The direct conversation with user `uid`, if it exists. */
export function directWith(uid) {
  for (const c of S.convs.values()) if (c.kind === "direct" && c.peer && c.peer.id === uid) return c;
  return null;
}

function forget(id) {
  S.convs.delete(id);
  S.msgs.delete(id);
  S.quotes.delete(id);
  S.reads.delete(id);
  S.members.delete(id);
  S.typing.delete(id);
  delete S.have[id];
}

/**
 * Replaces the list (welcome, `conversations`): conversations missing from it are dropped with
 * their caches and cursors; a conversation with no cursor gets its last_seq, so old history is
 * not replayed (it loads on demand).
 */
export function setConversations(list) {
  S.presenceKnown = true; // welcome (or a fresh list) carries every peer's presence
  const ids = new Set(list.map((c) => c.id));
  for (const id of [...S.convs.keys()]) if (!ids.has(id)) forget(id);
  for (const id of Object.keys(S.have)) if (!ids.has(Number(id))) delete S.have[id];
  S.convs = new Map();
  for (const c of list) {
    c.mentions = c.mentions || 0;
    c.muted = !!c.muted;
    S.convs.set(c.id, c);
    if (!(c.id in S.have)) S.have[c.id] = c.last_seq;
    if (c.peer) {
      S.online.set(c.peer.id, c.peer.online);
      rememberPerson(c.peer);
    }
  }
  saveSoon();
  emit("convs");
}

/** A `conversation` frame: new to us, or changed (members, owner). Returns true when new. */
export function upsertConversation(c) {
  const old = S.convs.get(c.id);
  c.mentions = c.mentions || 0;
  c.muted = !!c.muted;
  c.unread = c.unread || 0;
  if (old && old.last_seq > c.last_seq) {
    // Our copy already saw newer messages than this snapshot.
    c.last_seq = old.last_seq;
    c.last_time = Math.max(old.last_time, c.last_time);
    c.last_message = old.last_message;
    c.unread = old.unread;
    c.mentions = old.mentions;
  }
  if (old && old.read_seq > c.read_seq) {
    c.read_seq = old.read_seq;
    recount(c);
  }
  S.convs.set(c.id, c);
  if (!(c.id in S.have)) {
    // New to us: later messages follow live; older ones come from `history`.
    S.have[c.id] = Math.max(0, c.last_seq - 1);
    saveSoon();
  }
  if (c.peer) {
    S.online.set(c.peer.id, c.peer.online);
    rememberPerson(c.peer);
  }
  emit("convs");
  return !old;
}

export function removeConversation(id) {
  const c = S.convs.get(id);
  forget(id);
  saveSoon();
  emit("convs");
  return c;
}

/** The list preview of text message `m` (shortened). */
function preview(m) {
  return {
    seq: m.seq,
    sender: m.sender,
    sender_name: m.sender_name,
    text: Array.from(m.text || "").slice(0, 120).join(""),
    time: m.time,
    attachments: m.attachments && m.attachments.map((a) => ({ name: a.name, mime: a.mime })),
    unreadable: !!m.unreadable,
    deleted: !!m.deleted,
    edited: !!m.edited,
  };
}

/**
 * Updates the list entry from a message or event (ours or someone's). Every seq moves
 * `last_seq`; only text messages move the time, the preview and (from others, past what the
 * summary counted) the unread and mention counts.
 */
function touchConversation(m) {
  const c = S.convs.get(m.conversation);
  if (!c) return;
  const newer = m.seq > c.last_seq;
  c.last_seq = Math.max(c.last_seq, m.seq);
  if (isText(m)) {
    if (newer || !c.last_message || c.last_message.seq <= m.seq) {
      c.last_time = Math.max(c.last_time, m.time);
      c.last_message = preview(m);
    }
    if (newer && m.sender !== S.me.id && m.seq > c.read_seq) {
      c.unread = (c.unread || 0) + 1;
      if (mentionsMe(m)) c.mentions = (c.mentions || 0) + 1;
    }
  } else if (c.last_message && c.last_message.seq === m.target) {
    const t = findMessage(m.conversation, m.target);
    if (t) c.last_message = preview(t);
  }
  // Sending moves the sender's read position to the new message.
  if (m.sender === S.me.id && m.seq > c.read_seq) {
    c.read_seq = m.seq;
    recount(c);
  }
}

// ---- messages -----------------------------------------------------------------------------

export function cacheFor(id) {
  let c = S.msgs.get(id);
  if (!c) {
    c = { list: [], complete: false, loading: false };
    S.msgs.set(id, c);
  }
  return c;
}

function indexOfSeq(list, seq) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The cached (or separately fetched) message `seq` of conversation `id`, or null. */
export function findMessage(id, seq) {
  const list = S.msgs.get(id)?.list;
  if (list) {
    const m = list[indexOfSeq(list, seq)];
    if (m && m.seq === seq) return m;
  }
  return S.quotes.get(id)?.get(seq) || null;
}

/**
 * Folds event `e` (edit, delete, reaction) into the text message it targets, if that one is
 * loaded (otherwise `history` serves it folded later). Idempotent: replaying an event onto a
 * target already in its current state changes nothing. Returns true when something changed.
 */
export function fold(e) {
  const targets = [];
  const list = S.msgs.get(e.conversation)?.list;
  if (list) {
    const m = list[indexOfSeq(list, e.target)];
    if (m && m.seq === e.target) targets.push(m);
  }
  const q = S.quotes.get(e.conversation)?.get(e.target);
  if (q) targets.push(q);
  let changed = false;
  for (const m of targets) {
    if (!isText(m) || m.deleted) continue; // a deleted message stays deleted
    changed = true;
    if (e.kind === "edit") {
      m.text = e.text;
      if (e.mentions && e.mentions.length) m.mentions = e.mentions;
      else delete m.mentions;
      m.edited = true;
    } else if (e.kind === "delete") {
      m.deleted = true;
      m.text = "";
      for (const k of ["attachments", "mentions", "reactions"]) delete m[k];
    } else if (e.kind === "reaction") {
      toggleReaction(m, e.emoji, e.sender, e.added !== false);
    }
  }
  return changed;
}

/** Adds (or removes) `user` under `emoji` on message `m`'s reactions (ordered by first reaction). */
export function toggleReaction(m, emoji, user, added) {
  const list = m.reactions || [];
  let r = list.find((x) => x.emoji === emoji);
  if (added) {
    if (!r) list.push((r = { emoji, users: [] }));
    if (!r.users.includes(user)) r.users.push(user);
  } else if (r) {
    r.users = r.users.filter((u) => u !== user);
  }
  const kept = list.filter((x) => x.users.length);
  if (kept.length) m.reactions = kept;
  else delete m.reactions;
}

/** Keeps a message fetched on its own for a reply's quote. */
export function rememberQuote(id, m) {
  if (!S.quotes.has(id)) S.quotes.set(id, new Map());
  S.quotes.get(id).set(m.seq, m);
  emit("msgs", id);
}

/** What the cache keeps of an event once folded: enough to keep the seqs contiguous. */
const stub = (m) => ({ conversation: m.conversation, seq: m.seq, kind: m.kind, sender: m.sender, time: m.time, target: m.target });

/** Inserts one message into the cache keeping it a contiguous run. True when it was new. */
function cacheMessage(m) {
  if (!isText(m) && m.kind !== "system") m = stub(m);
  const c = cacheFor(m.conversation);
  const list = c.list;
  const have = S.have[m.conversation] ?? 0;
  if (!list.length) {
    list.push(m);
    c.complete = m.seq === 1;
    return true;
  }
  const lo = list[0].seq;
  // `upTo`: a newest `history` page covers the events after its last message too (folded).
  const hi = Math.max(list[list.length - 1].seq, c.upTo || 0);
  if (m.seq > hi + 1 && m.seq - 1 <= have) {
    // The messages in between will never arrive live (we skipped them with a cursor): start a
    // new run here; scrolling up loads the rest with `history`.
    c.list = [m];
    c.upTo = 0;
    c.complete = m.seq === 1;
    return true;
  }
  if (m.seq < lo - 1) return false; // far older than the run: history brings it when needed
  const i = indexOfSeq(list, m.seq);
  if (list[i] && list[i].seq === m.seq) return false;
  list.splice(i, 0, m);
  if (m.seq === 1) c.complete = true;
  return true;
}

/** Moves the cursor over messages already cached right after it (acks that came early). */
function advanceCursor(id) {
  const list = S.msgs.get(id)?.list || [];
  let have = S.have[id] ?? 0;
  let i = indexOfSeq(list, have + 1);
  while (list[i] && list[i].seq === have + 1) {
    have += 1;
    i += 1;
  }
  S.have[id] = have;
  saveSoon();
}

/** A `message` frame. Returns true when it is new to this tab. */
export function addMessage(m) {
  if (!S.convs.has(m.conversation)) return false;
  if (m.kind === "edit" || m.kind === "delete" || m.kind === "reaction") fold(m);
  const fresh = cacheMessage(m);
  if (m.seq > (S.have[m.conversation] ?? 0)) S.have[m.conversation] = m.seq;
  advanceCursor(m.conversation);
  touchConversation(m);
  const typing = S.typing.get(m.conversation);
  if (typing && typing.delete(m.sender)) emit("typing");
  if (m.sender !== S.me.id) bumpRead(m.conversation, m.sender, m.seq);
  emit("msgs", m.conversation);
  emit("convs");
  return fresh;
}

/**
 * Our own message acknowledged as (conversation, seq); `attachments` as the files it carries,
 * `extra` its reply_to and mentions.
 */
export function addOwn(ack, text, attachments, extra = {}) {
  if (!S.convs.has(ack.conversation)) return;
  const m = {
    conversation: ack.conversation,
    seq: ack.seq,
    sender: S.me.id,
    sender_name: S.me.name,
    time: ack.time,
    client_id: ack.client_id,
    text,
  };
  if (attachments && attachments.length) m.attachments = attachments;
  if (extra.reply_to) m.reply_to = extra.reply_to;
  if (extra.mentions && extra.mentions.length) m.mentions = extra.mentions;
  if (text !== null) cacheMessage(m);
  const have = S.have[ack.conversation] ?? 0;
  if (ack.seq === have + 1) S.have[ack.conversation] = ack.seq;
  advanceCursor(ack.conversation);
  if (text !== null) touchConversation(m);
  emit("msgs", ack.conversation);
  emit("convs");
}

/**
 * Our own edit, delete or reaction acknowledged as (conversation, seq): `e` is the event
 * ({kind, target, text?, mentions?, emoji?, added?}), folded (again: harmless) and kept as a stub.
 */
export function addOwnEvent(ack, e) {
  if (!S.convs.has(ack.conversation)) return;
  addMessage({ ...e, conversation: ack.conversation, seq: ack.seq, sender: S.me.id, time: ack.time });
}

/**
 * A `history` reply: merges a block of older (or the newest) messages into the cache. `top`:
 * for the newest page, the conversation's last seq when it was asked for (the page covers every
 * seq up to there: events are folded into its messages and left out).
 */
export function mergeHistory(id, messages, complete, before, top = 0) {
  const c = cacheFor(id);
  c.loading = false;
  if (messages.length) {
    const a = messages[0].seq;
    const b = messages[messages.length - 1].seq;
    const list = c.list;
    if (!list.length || a > Math.max(list[list.length - 1].seq, c.upTo || 0) + 1) {
      c.list = messages.slice();
      c.upTo = before === undefined ? top : 0;
    } else if (b >= list[0].seq - 1 || (before !== undefined && before <= list[0].seq)) {
      // (A page asked for with `before` reaches up to it: the seqs it skips are events.)
      const bySeq = new Map(list.map((m) => [m.seq, m]));
      for (const m of messages) if (!bySeq.has(m.seq)) bySeq.set(m.seq, m);
      c.list = [...bySeq.values()].sort((x, y) => x.seq - y.seq);
    }
    for (const m of messages) if (m.sender !== S.me.id) bumpRead(id, m.sender, m.seq);
  }
  if (before === undefined && top) c.upTo = Math.max(c.upTo || 0, top);
  if (complete || (!messages.length && before !== undefined) || c.list[0]?.seq === 1) c.complete = true;
  if (!messages.length && before === undefined) c.complete = true;
  emit("msgs", id);
}

/** A `history` reply with `around` (a search result): it replaces the cached run of `id`. */
export function jumpRun(id, messages, complete) {
  const c = cacheFor(id);
  c.loading = false;
  if (messages.length) {
    c.list = messages.slice();
    c.complete = !!complete || messages[0].seq === 1;
    for (const m of messages) if (m.sender !== S.me.id) bumpRead(id, m.sender, m.seq);
  }
  emit("msgs", id);
}

/** Newer messages right after the cached run of `id` (scrolling down after a jump). */
export function mergeNewer(id, messages) {
  const c = cacheFor(id);
  c.loading = false;
  const last = c.list.length ? c.list[c.list.length - 1].seq : 0;
  for (const m of messages) if (m.seq > last && m.seq === (c.list.length ? c.list[c.list.length - 1].seq : 0) + 1) c.list.push(m);
  emit("msgs", id);
}

// ---- read positions -----------------------------------------------------------------------

/** Someone's read position only moves forward; sending a message implies reading up to it. */
function bumpRead(conv, user, seq) {
  let m = S.reads.get(conv);
  if (!m) S.reads.set(conv, (m = new Map()));
  if ((m.get(user) ?? 0) < seq) m.set(user, seq);
}

/** A server `read` frame: our other device read, or a read receipt from another member. */
export function applyRead(f) {
  const c = S.convs.get(f.conversation);
  if (!c) return;
  if (f.user === S.me.id) {
    c.read_seq = Math.max(c.read_seq, f.seq);
    recount(c);
    emit("convs");
  } else {
    bumpRead(f.conversation, f.user, f.seq);
  }
  emit("msgs", f.conversation);
}

/** Marks our own read position locally; returns true when it moved (caller tells the server). */
export function readUpTo(id, seq) {
  const c = S.convs.get(id);
  if (!c || seq <= c.read_seq) return false;
  c.read_seq = seq;
  recount(c);
  emit("convs");
  return true;
}

export function setMembers(id, members) {
  S.members.set(id, members);
  for (const m of members) {
    S.online.set(m.id, m.online);
    rememberPerson(m);
    if (m.id !== S.me.id) bumpRead(id, m.id, m.read_seq);
  }
  emit("members", id);
  emit("msgs", id);
}

/**
 * Delivery state of our message `seq` in conversation `id`: "read" when the peer (direct) or
 * every other member (group, members known) has read it, else "sent".
 */
export function receipt(id, seq) {
  const c = S.convs.get(id);
  const reads = S.reads.get(id);
  if (!c || !reads) return "sent";
  if (c.kind === "direct") return c.peer && (reads.get(c.peer.id) ?? 0) >= seq ? "read" : "sent";
  const members = S.members.get(id);
  if (!members || members.length < 2) return "sent";
  for (const m of members) if (m.id !== S.me.id && (reads.get(m.id) ?? 0) < seq) return "sent";
  return "read";
}

// ---- people: display names and colours ----------------------------------------------------

/**
 * Remembers how user `u` is shown: a user object from the server ({id, name, display_name?,
 * color}; the server omits display_name when none is set).
 */
export function rememberPerson(u) {
  if (!u || typeof u.id !== "number") return;
  const old = S.people.get(u.id) || {};
  S.people.set(u.id, { id: u.id, name: u.name || old.name, display_name: u.display_name || null, color: u.color || old.color });
}

/** How user `id` is shown: the display name, else the account name, else `fallback`. */
export function shownName(id, fallback = "") {
  const p = S.people.get(id);
  return (p && (p.display_name || p.name)) || fallback;
}

/** The avatar colour (palette name) of user `id`, if known. */
export const colorOf = (id) => S.people.get(id)?.color;

/**
 * A `user_updated` frame (or our own profile change): someone's display name or colour changed.
 * Updates the people map, ourselves, direct conversations with them (their title is the display
 * name) and member lists.
 */
export function applyUserUpdate(u) {
  const full = { ...u, display_name: u.display_name || null }; // omitted when none is set
  rememberPerson(full);
  if (S.me && u.id === S.me.id) {
    S.me = { ...S.me, name: u.name || S.me.name, display_name: full.display_name, color: u.color || S.me.color };
    emit("me");
  }
  for (const c of S.convs.values()) {
    if (c.peer && c.peer.id === u.id) {
      Object.assign(c.peer, { display_name: full.display_name, color: u.color || c.peer.color });
      c.title = full.display_name || c.peer.name;
    }
  }
  for (const list of S.members.values()) {
    for (const m of list) if (m.id === u.id) Object.assign(m, { display_name: full.display_name, color: u.color || m.color });
  }
  emit("convs");
  emit("members");
  emit("msgs");
}

// ---- presence and typing ------------------------------------------------------------------

/**
 * The connection is down: what we knew about who is online goes stale at once, so forget it
 * (the welcome and members replies of the next connection bring it back).
 */
export function presenceUnknown() {
  S.presenceKnown = false;
  S.online.clear();
  for (const c of S.convs.values()) if (c.peer) c.peer.online = false;
  for (const list of S.members.values()) for (const m of list) m.online = false;
  emit("convs");
  emit("members");
}

export function applyPresence(user, online) {
  S.online.set(user, online);
  for (const c of S.convs.values()) if (c.peer && c.peer.id === user) c.peer.online = online;
  for (const list of S.members.values()) for (const m of list) if (m.id === user) m.online = online;
  emit("convs");
  emit("members");
}

const TYPING_MS = 5000;
let typingTimer = null;

export function applyTyping(f) {
  if (f.user === S.me.id) return;
  let m = S.typing.get(f.conversation);
  if (!m) S.typing.set(f.conversation, (m = new Map()));
  m.set(f.user, { name: f.name, until: Date.now() + TYPING_MS });
  emit("typing");
  scheduleTypingExpiry();
}

function scheduleTypingExpiry() {
  clearTimeout(typingTimer);
  let next = Infinity;
  for (const m of S.typing.values()) for (const v of m.values()) next = Math.min(next, v.until);
  if (next === Infinity) return;
  typingTimer = setTimeout(() => {
    const now = Date.now();
    for (const m of S.typing.values()) for (const [u, v] of m) if (v.until <= now) m.delete(u);
    emit("typing");
    scheduleTypingExpiry();
  }, Math.max(50, next - Date.now()));
}

/** Names of people typing in conversation `id` now. */
export function typingNames(id) {
  const m = S.typing.get(id);
  if (!m) return [];
  const now = Date.now();
  return [...m.entries()].filter(([, v]) => v.until > now).map(([user, v]) => shownName(user, v.name));
}
