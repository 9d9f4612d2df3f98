// chat: the protocol engine between conn.js (the socket) and store.js (the state). Applies every
// server frame to the store, runs the resume algorithm of docs/PROTOCOL.md on each (re)connect
// (epoch check, sync with cursors, re-send the outbox with the original client_ids), and offers
// the actions the UI needs: send (with reply_to and mentions), edit, delete, react, load
// history, mark read, typing, members, directory, groups, mute and rename.

import { Conn } from "./conn.js";
import * as store from "./store.js";
import { S, emit } from "./store.js";
import { randomId } from "./dom.js";
import * as files from "./files.js";

let conn = null;
/** client_ids sent on the current connection (so one connection sends each only once). */
let sentHere = new Set();
/** client_id → text of what this tab sent: another tab may empty the shared outbox first. */
const sentTexts = new Map();
let retryTimer = null;
let listTimer = null;
/**
 * Hooks set by the UI: onLive(message) for a new message from someone else after sync,
 * onSendFailed(code, entry) when the server refused a send for good, onRemoved(conversation,
 * self) when we left or were removed, onAuthLost() when a socket failed before opening.
 */
export const hooks = { onLive: () => {}, onSendFailed: () => {}, onRemoved: () => {}, onAuthLost: () => {} };

// Codes after which a send is dropped (docs/PROTOCOL.md, "Outbox"); others are retried.
const RETRYABLE = new Set(["rate_limited", "internal", "storage_full", "storage_error"]);

export function start(me) {
  files.hooks.kick = flushOutbox;
  files.hooks.online = () => !!conn && conn.isOpen;
  conn = new Conn({
    onFrame,
    onStatus: () => emit("conn"),
    onDown: (opened) => {
      S.synced = false;
      sentHere = new Set();
      if (S.presenceKnown) store.presenceUnknown();
      // A socket that never opened may mean the session expired (the upgrade got a 401).
      if (!opened) hooks.onAuthLost();
    },
  });
  store.init(me); // shows the cached snapshot while the socket connects
  conn.connect();
}

export const status = () => conn.status;
/** True once the socket is up (welcome received). */
export const connected = () => !!conn && conn.isOpen;
export const retryNow = () => conn.retryNow();
export const stop = () => conn && conn.stop();

function onFrame(f) {
  switch (f.type) {
    case "welcome":
      return onWelcome(f);
    case "synced":
      return;
    case "message":
      return onMessage(f);
    case "messages": // replayed after sync, a page at a time
      for (const m of f.messages) onMessage(m);
      return;
    case "ack":
      return onAck(f);
    case "history":
      return; // always a reply to loadHistory's request, merged there
    case "conversations":
      return store.setConversations(f.conversations);
    case "conversation":
      store.upsertConversation(f.conversation);
      return;
    case "removed": {
      const c = store.removeConversation(f.conversation);
      if (c) hooks.onRemoved(c, typeof f.ref === "number");
      return;
    }
    case "members":
      return store.setMembers(f.conversation, f.members);
    case "read":
      return store.applyRead(f);
    case "typing":
      return store.applyTyping(f);
    case "presence":
      return store.applyPresence(f.user, f.online);
    case "user_updated": // someone's display name or colour (ours too)
      return f.user && store.applyUserUpdate(f.user);
    case "error":
      return onError(f);
    default:
      return; // unknown frame types are ignored
  }
}

function onWelcome(w) {
  if (w.user.id !== S.me.id) {
    // The cookie now belongs to someone else (logged in again in another tab).
    location.reload();
    return;
  }
  S.limits = { ...S.limits, ...w.limits };
  // Our display name and colour may have changed on another device while we were away.
  store.applyUserUpdate(w.user);
  store.setEpoch(w.epoch);
  store.setConversations(w.conversations);
  const cursors = w.conversations.map((c) => ({ conversation: c.id, seq: S.have[c.id] ?? c.last_seq }));
  const caughtUp = () => {
    S.synced = true;
    conn.markReady();
  };
  // A long absence can mean a long catch-up; give up waiting (not the connection) after 5 min.
  conn.request({ type: "sync", cursors, batch: true }, 300000).then(caughtUp, (e) => e.code === "timeout" && caughtUp());
  flushOutbox();
  // Read receipts and presence may have changed while we were away.
  if (S.current && S.current.id) refreshOpen(S.current.id);
}

function onMessage(m) {
  if (!S.convs.has(m.conversation)) {
    // A conversation we do not know: ask for the list (then history fills in).
    clearTimeout(listTimer);
    listTimer = setTimeout(() => conn.send({ type: "conversations" }), 200);
    return;
  }
  if (m.sender === S.me.id && m.client_id) files.forget(store.outboxTake(m.client_id)); // another tab sent it
  const fresh = store.addMessage(m);
  if (fresh && S.synced && m.sender !== S.me.id && store.isText(m)) hooks.onLive(m);
}

function onAck(a) {
  sentHere.delete(a.client_id);
  const entry = store.outboxTake(a.client_id);
  const text = entry ? entry.text : (sentTexts.get(a.client_id) ?? null);
  sentTexts.delete(a.client_id);
  files.forget(entry);
  if (!S.convs.has(a.conversation)) {
    // The direct conversation created by this send is not known yet; ask for the list.
    conn.send({ type: "conversations" });
  }
  store.addOwn(a, text, files.described(entry), entry || {});
}

function onError(f) {
  if (!f.client_id) {
    if (f.code === "not_found" && typeof f.ref !== "number") conn.send({ type: "conversations" });
    return;
  }
  sentHere.delete(f.client_id);
  if (RETRYABLE.has(f.code)) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(flushOutbox, 3000 + Math.random() * 2000);
    return;
  }
  const entry = store.outboxTake(f.client_id);
  files.forget(entry);
  if (entry) hooks.onSendFailed(f.code, entry);
  if (f.code === "not_found") conn.send({ type: "conversations" });
}

/** (Re)sends every outbox entry not yet sent on this connection. */
function flushOutbox() {
  if (!conn || !conn.isOpen) return;
  for (const e of S.outbox) {
    if (sentHere.has(e.client_id)) continue;
    if (!files.ready(e)) continue; // sent once its files are uploaded (files.js calls back)
    const frame = { type: "send", client_id: e.client_id, text: e.text };
    if (e.files && e.files.length) frame.attachments = files.ids(e);
    if (e.reply_to) frame.reply_to = e.reply_to;
    if (e.mentions && e.mentions.length) frame.mentions = e.mentions;
    if (e.conversation) frame.conversation = e.conversation;
    else frame.to = e.to;
    if (conn.send(frame)) {
      sentHere.add(e.client_id);
      sentTexts.set(e.client_id, e.text);
    }
  }
}

/** UTF-8 length of one code point. */
const utf8 = (cp) => (cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4);

/**
 * How `text` stands against the server's message limit, in characters (Unicode code points,
 * what the server counts as `max_message_chars`): `{chars, max, over}`. A server that states its
 * limit only in UTF-8 bytes (`max_message_bytes`) is handled too: `over` is then exactly how many
 * characters do not fit, and `max` the number of characters of this kind of text that would
 * (the bytes left divided by the text's bytes per character).
 */
export function measure(text) {
  const maxChars = S.limits.max_message_chars || Infinity;
  const maxBytes = S.limits.max_message_bytes || Infinity;
  let chars = 0;
  let bytes = 0;
  let fit = 0; // leading characters within both limits
  for (const ch of text) {
    chars += 1;
    bytes += utf8(ch.codePointAt(0));
    if (bytes <= maxBytes && chars <= maxChars) fit = chars;
  }
  let max = maxChars;
  if (maxBytes !== Infinity) {
    const perChar = chars ? bytes / chars : 1;
    const byBytes = bytes > maxBytes ? fit : chars + Math.floor((maxBytes - bytes) / perChar);
    max = Math.min(max, byBytes);
  }
  return { chars, max, over: chars - fit };
}

/**
 * Queues a message for the open conversation (or a new direct chat) and sends it if connected.
 * It shows as "sending" until its ack.
 */
export function sendText(cur, text, withFiles = false, extra = {}) {
  const entry = { client_id: randomId(), text, created: Date.now() };
  if (extra.reply_to && cur.id) entry.reply_to = extra.reply_to;
  if (extra.mentions && extra.mentions.length) entry.mentions = extra.mentions;
  // The staged files' bytes go to IndexedDB; the entry names them until they are uploaded.
  if (withFiles) entry.files = files.take(entry.client_id);
  if (entry.files && !entry.files.length) delete entry.files;
  if (cur.draft) {
    const existing = store.directWith(cur.draft.id);
    if (existing) entry.conversation = existing.id;
    else {
      entry.to = cur.draft.id;
      entry.to_name = cur.draft.name;
    }
  } else entry.conversation = cur.id;
  store.outboxAdd(entry);
  if (conn.isOpen) flushOutbox();
  else if (conn.status.phase === "waiting" && conn.status.retryAt - Date.now() > 2000) conn.retryNow();
}

/**
 * Loads `limit` older messages of `id` (before the oldest cached one), or the newest page.
 * Resolves once merged (at once when there is nothing to load or a load is under way).
 */
export function loadHistory(id, limit = 50) {
  const c = store.cacheFor(id);
  if (c.loading || c.complete || !conn.isOpen) return Promise.resolve();
  const frame = { type: "history", conversation: id, limit };
  if (c.list.length) frame.before = c.list[0].seq;
  const top = frame.before === undefined ? S.convs.get(id)?.last_seq || 0 : 0;
  c.loading = true;
  emit("msgs", id);
  return conn
    .request(frame)
    .then((f) => {
      // Our own messages in it are stored: whatever their ack is doing, they leave the outbox.
      for (const m of f.messages) if (m.sender === S.me.id && m.client_id) files.forget(store.outboxTake(m.client_id));
      store.mergeHistory(id, f.messages, f.complete, frame.before, top);
    })
    .catch(() => {
      c.loading = false;
      emit("msgs", id);
    });
}

/** Loads the messages around `seq` of `id` (a search result) in place of the cached run. */
export function loadAround(id, seq) {
  const c = store.cacheFor(id);
  if (!conn.isOpen) return;
  c.loading = true;
  emit("msgs", id);
  const limit = 50;
  conn
    .request({ type: "history", conversation: id, around: seq, limit })
    .then((f) => store.jumpRun(id, f.messages, f.complete))
    .catch(() => {
      c.loading = false;
      emit("msgs", id);
    });
}

/** Loads the messages after the cached run of `id` when it ends before the newest (after a jump). */
export function loadNewer(id) {
  const c = store.cacheFor(id);
  const conv = S.convs.get(id);
  const last = c.list.length ? c.list[c.list.length - 1].seq : null;
  if (c.loading || !conn.isOpen || !conv || last === null || last >= conv.last_seq) return;
  const limit = 50;
  c.loading = true;
  emit("msgs", id);
  // Seqs have no gaps: the `limit` messages before last + limit + 1 are the next ones.
  conn
    .request({ type: "history", conversation: id, before: last + limit + 1, limit })
    .then((f) => store.mergeNewer(id, f.messages))
    .catch(() => {
      c.loading = false;
      emit("msgs", id);
    });
}

/** Runs a `search` frame; resolves with the `search_results` reply (rejects with its error). */
export function search(frame) {
  if (!conn || !conn.isOpen) return Promise.reject(Object.assign(new Error("offline"), { code: "offline" }));
  return conn.request(frame);
}

/** Marks everything up to `seq` of `id` as read (tells the server once per position). */
export function markRead(id, seq) {
  if (store.readUpTo(id, seq)) conn.send({ type: "read", conversation: id, seq });
}

let lastTyping = { id: null, at: 0 };

/** Tells the others we are typing in `id`: at most once every 2 s. */
export function typing(id) {
  const now = Date.now();
  if (lastTyping.id === id && now - lastTyping.at < 2000) return;
  if (conn.send({ type: "typing", conversation: id })) lastTyping = { id, at: now };
}

/** After opening (or reconnecting with) a conversation: members, read receipts, presence. */
export function refreshOpen(id) {
  conn.request({ type: "members", conversation: id }).catch(() => {});
}

/** The user directory (`users`), filtered by name. */
export async function users(query) {
  const f = await conn.request({ type: "users", query, limit: 50 });
  for (const u of f.users) {
    S.online.set(u.id, u.online);
    store.rememberPerson(u);
  }
  return f.users;
}

export async function createGroup(title, members) {
  const f = await conn.request({ type: "create_group", title, members });
  store.upsertConversation(f.conversation);
  return f.conversation;
}

export const addMembers = (id, members) => conn.request({ type: "add_members", conversation: id, members });
export const removeMember = (id, user) => conn.request({ type: "remove_member", conversation: id, user });
export const leave = (id) => conn.request({ type: "leave", conversation: id });

// ---- what one does to a message (issue 23): edit, delete, react; conversation settings ------

/**
 * Sends an edit/delete/react frame for message `seq` of `id` and folds the event locally once the
 * server acknowledged it (the event's own seq then joins the cache). Rejects with the error.
 */
async function event(frame, e) {
  const a = await conn.request(frame);
  store.addOwnEvent(a, e);
  return a;
}

export const edit = (id, seq, text, mentions) =>
  event({ type: "edit", conversation: id, seq, text, mentions }, { kind: "edit", target: seq, text, mentions });

export const remove = (id, seq) => event({ type: "delete", conversation: id, seq }, { kind: "delete", target: seq });

/** Toggles our `emoji` on message `seq`: shown at once, undone if the server refuses. */
export async function react(id, seq, emoji) {
  const m = store.findMessage(id, seq);
  const added = !(m && (m.reactions || []).some((r) => r.emoji === emoji && r.users.includes(S.me.id)));
  if (m) {
    store.toggleReaction(m, emoji, S.me.id, added);
    emit("msgs", id);
  }
  try {
    await event({ type: "react", conversation: id, seq, emoji }, { kind: "reaction", target: seq, emoji, added });
  } catch (err) {
    if (m) {
      store.toggleReaction(m, emoji, S.me.id, !added);
      emit("msgs", id);
    }
    throw err;
  }
}

/**
 * A message older than the cache, for a reply's quote: `history` just above it, limit 1
 * (at most one request per message; a deleted or missing one is remembered as such).
 */
const asked = new Set();
export function fetchQuote(id, seq) {
  const k = `${id}:${seq}`;
  if (asked.has(k) || !conn.isOpen) return;
  asked.add(k);
  conn.request({ type: "history", conversation: id, before: seq + 1, limit: 1 }).then(
    (f) => {
      const m = f.messages.find((x) => x.seq === seq);
      store.rememberQuote(id, m || { conversation: id, seq, missing: true });
    },
    () => asked.delete(k),
  );
}

/** Loads older history of `id` until message `seq` is in the cache (or the start is reached). */
export async function loadUntil(id, seq) {
  for (let i = 0; i < 1000; i++) {
    const c = store.cacheFor(id);
    if ((c.list.length && c.list[0].seq <= seq) || c.complete || !conn.isOpen) return;
    if (c.loading) await new Promise((r) => setTimeout(r, 50));
    else await loadHistory(id, S.limits.history_limit || 100);
  }
}

/** Mutes or unmutes `id` for us on every device (the server answers with a `conversation` frame too). */
export async function mute(id, muted) {
  const c = S.convs.get(id);
  const before = c ? c.muted : false;
  if (c) {
    c.muted = muted;
    emit("convs");
  }
  try {
    await conn.request({ type: "mute", conversation: id, muted });
  } catch (err) {
    if (c) {
      c.muted = before;
      emit("convs");
    }
    throw err;
  }
}

export const renameGroup = (id, title) => conn.request({ type: "rename_group", conversation: id, title });
