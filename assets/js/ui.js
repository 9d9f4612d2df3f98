// ui: owns the chat screen. Renders the conversation list, the open conversation (messages,
// day separators, unread divider, receipts, typing), the composer and the connection banner
// from store.js, and turns clicks and keys into chat.js actions. Rendering is batched: store
// topics mark parts dirty, one timer renders them. Every piece of user text goes in through
// textContent (see dom.js). What one does to a message (reply, edit, delete, react) and how it
// shows in a bubble lives in msgactions.js; the @mention picker in mentions.js.

import { $, h, icon, avatar, setAvatar, reconcile, clearKeyed, toast } from "./dom.js";
import { t, relTime, clock, fullTime, dayLabel, dayKey, locale } from "./i18n.js";
import * as chat from "./chat.js";
import * as store from "./store.js";
import { S, on } from "./store.js";
import * as notify from "./notify.js";
import * as dialogs from "./dialogs.js";
import * as files from "./files.js";
import * as actions from "./msgactions.js";
import * as mentions from "./mentions.js";
import * as search from "./search.js";

const RUN_GAP = 5 * 60000; // messages closer than this from one sender form a visual run
const app = $("app");
const box = $("messages");
const list = $("msg-list");
const input = $("input");

/** Unread divider of the open conversation: show it before the first message after this seq. */
let dividerAfter = null;
/** Scroll intent for the next message render: "entry" (just opened), "bottom", or null. */
let scrollIntent = null;
/**
 * Whether the view follows the newest message: true while the user is at the bottom. Kept from
 * scroll events, so a pane that shrinks (the connection banner appears, the composer grows, the
 * phone keyboard opens) still shows the newest message instead of hiding it under the composer.
 */
let pinned = true;
/** The seq a search result asked to show (scrollIntent "jump"). */
let jumpSeq = null;
/** Composer drafts per conversation key. */
const drafts = new Map();

// ---- batched rendering --------------------------------------------------------------------

const dirty = new Set();
let renderTimer = null;

function schedule(...parts) {
  for (const p of parts) dirty.add(p);
  if (!renderTimer) renderTimer = setTimeout(render, 16);
}

function render() {
  renderTimer = null;
  const d = new Set(dirty);
  dirty.clear();
  if (d.has("list")) renderList();
  if (d.has("head")) renderHead();
  if (d.has("msgs")) renderMessages();
  if (d.has("typing")) renderTyping();
  if (d.has("banner")) renderBanner();
  notify.setTitleCount(store.totalUnread());
  maybeMarkRead();
}

const curKey = (cur) => (!cur ? "" : cur.draft ? `u${cur.draft.id}` : `c${cur.id}`);
const isOpen = (id) => S.current && S.current.id === id;

// ---- conversation list --------------------------------------------------------------------

function renderList() {
  const q = $("filter").value.trim().toLocaleLowerCase();
  const all = store.sortedConvs();
  const shown = q ? all.filter((c) => c.title.toLocaleLowerCase().includes(q)) : all;
  reconcile($("conv-list"), shown.map((c) => ({ key: c.id, c })), makeConv, updateConv);
  const empty = $("conv-empty");
  empty.hidden = shown.length > 0 || search.active();
  empty.textContent = all.length ? t("chats.nomatch") : t("chats.empty");
}

function makeConv({ c }) {
  const btn = h("button", { type: "button", class: "conv", on: { click: () => open({ id: c.id }) } });
  btn.dataset.id = c.id;
  const av = avatar(c.title, c.kind === "group" ? "avatar group" : "avatar", peerColor(c));
  const dot = h("span", { class: "dot", hidden: true });
  btn.append(
    h("span", { class: "avatar-wrap" }, av, dot),
    h(
      "span",
      { class: "conv-body" },
      h("span", { class: "conv-top" }, h("span", { class: "conv-title" }), h("time", { class: "conv-time" })),
      h(
        "span",
        { class: "conv-bottom" },
        h("span", { class: "conv-preview" }),
        h("span", { class: "sr-only unread-label" }),
        icon("bell-off", "icon small muted-icon"),
        h("span", { class: "at-badge", text: "@", attrs: { "aria-hidden": "true" } }),
        h("span", { class: "badge", attrs: { "aria-hidden": "true" } }),
      ),
    ),
  );
  btn._parts = {
    av,
    dot,
    title: btn.querySelector(".conv-title"),
    time: btn.querySelector(".conv-time"),
    preview: btn.querySelector(".conv-preview"),
    srUnread: btn.querySelector(".unread-label"),
    badge: btn.querySelector(".badge"),
    at: btn.querySelector(".at-badge"),
    mutedIcon: btn.querySelector(".muted-icon"),
  };
  return h("li", {}, btn);
}

function updateConv(li, { c }) {
  const btn = li.firstChild;
  const p = btn._parts;
  if (p.title.textContent !== c.title || p.av.dataset.color !== (peerColor(c) || p.av.dataset.color)) {
    p.title.textContent = c.title;
    setAvatar(p.av, c.title, peerColor(c));
  }
  p.dot.hidden = c.kind !== "direct";
  p.dot.classList.toggle("online", !!(c.peer && c.peer.online));
  p.time.textContent = relTime(c.last_time);
  p.time.dateTime = new Date(c.last_time).toISOString();
  p.time.title = fullTime(c.last_time);
  const typing = store.typingNames(c.id);
  p.preview.classList.toggle("typing-now", typing.length > 0);
  if (typing.length) p.preview.textContent = typingText(typing);
  else if (c.last_message) {
    const lm = c.last_message;
    // A message the server could not read (damaged storage) arrives as a marker.
    let text = lm.unreadable ? t("chat.unreadable") : lm.deleted ? t("msg.deleted") : lm.text.replace(/\s+/g, " ");
    if (!text.trim() && !lm.unreadable) text = files.previewText(lm.attachments) || t("files.attachment");
    if (lm.sender === S.me.id) p.preview.textContent = t("chats.you", { text });
    else if (c.kind === "group") p.preview.textContent = `${store.shownName(lm.sender, lm.sender_name)}: ${text}`;
    else p.preview.textContent = text;
  } else p.preview.textContent = t("chats.noMessages");
  btn.classList.toggle("unread", c.unread > 0);
  // Muted: a grey badge, and only a mention makes the entry stand out.
  btn.classList.toggle("muted", !!c.muted);
  p.mutedIcon.classList.toggle("shown", !!c.muted);
  p.badge.hidden = c.unread === 0;
  p.badge.textContent = c.unread > 99 ? "99+" : String(c.unread);
  p.at.hidden = !c.mentions;
  const sr = [];
  if (c.unread) sr.push(t("chats.unread", { n: c.unread }));
  if (c.mentions) sr.push(t("conv.mentions", { n: c.mentions }));
  if (c.muted) sr.push(t("conv.muted"));
  p.srUnread.textContent = sr.join(", ");
  if (isOpen(c.id)) btn.setAttribute("aria-current", "true");
  else btn.removeAttribute("aria-current");
}

/** The colour of a direct conversation's peer (their chosen avatar colour); groups have none. */
function peerColor(c) {
  return c && c.kind === "direct" && c.peer ? store.colorOf(c.peer.id) || c.peer.color : undefined;
}

function typingText(names) {
  if (names.length === 1) return t("chat.typing", { name: names[0] });
  if (names.length === 2) return t("chat.typing2", { a: names[0], b: names[1] });
  return t("chat.typingMany");
}

// ---- open / close -------------------------------------------------------------------------

/**
 * Opens a conversation ({id}) or a direct chat that does not exist yet ({draft: {id, name}}).
 * `nav`: "push" adds a history entry (so Back returns to the list), "replace", or "none".
 */
export function open(cur, nav = "push") {
  if (cur.id && !S.convs.has(cur.id)) return;
  const same = curKey(cur) === curKey(S.current);
  if (!same) {
    if (S.current) drafts.set(curKey(S.current), input.value);
    S.current = cur;
    const c = cur.id ? S.convs.get(cur.id) : null;
    dividerAfter = c && c.unread > 0 ? c.read_seq : null;
    scrollIntent = "entry";
    pinned = true;
    clearKeyed(list);
    actions.reset(cur.id);
    mentions.close();
    input.value = drafts.get(curKey(cur)) || "";
    files.showFor(curKey(cur));
    autosize();
    if (c) {
      const cache = S.msgs.get(c.id);
      if ((!cache || !cache.list.length) && c.last_seq > 0) chat.loadHistory(c.id, c.unread > 50 ? S.limits.history_limit || 100 : 50);
      chat.refreshOpen(c.id);
    }
  }
  const hash = cur.draft ? `#/u/${cur.draft.id}` : `#/c/${cur.id}`;
  if (nav === "push" && location.hash !== hash) {
    if (history.state && history.state.chatd) history.replaceState({ chatd: true }, "", hash);
    else history.pushState({ chatd: true }, "", hash);
  } else if (nav === "replace") history.replaceState(history.state, "", hash);
  app.classList.add("in-chat");
  $("chat-empty").hidden = true;
  $("chat-main").hidden = false;
  schedule("list", "head", "msgs", "typing");
  if (matchMedia("(min-width: 721px)").matches) input.focus();
}

/**
 * Opens conversation `id` at message `seq` (a search result): scrolled to it and highlighted,
 * with the messages around it loaded (`history` with `around`) when they are not cached.
 */
export function openAt(id, seq) {
  if (!S.convs.has(id)) return;
  const cache = store.cacheFor(id);
  const cached = cache.list.some((m) => m.seq === seq);
  // Before `open`: it would otherwise fetch the newest page, which would replace the jump.
  if (!cached) cache.loading = true;
  open({ id });
  for (const el of list.querySelectorAll(".msg.hit")) el.classList.remove("hit");
  jumpSeq = seq;
  scrollIntent = "jump";
  dividerAfter = null;
  pinned = false;
  if (!cached) {
    cache.loading = false;
    chat.loadAround(id, seq);
  }
  schedule("msgs");
}

/** True when the cached run of the open conversation ends before its newest message. */
function detached(c, cache) {
  return !!c && !!cache && cache.list.length > 0 && cache.list[cache.list.length - 1].seq < c.last_seq;
}

/** Back to the list (phone) / nothing selected. */
export function close(nav = "back") {
  actions.reset(null);
  mentions.close();
  if (S.current) drafts.set(curKey(S.current), input.value);
  S.current = null;
  dividerAfter = null;
  app.classList.remove("in-chat");
  $("chat-empty").hidden = false;
  $("chat-main").hidden = true;
  clearKeyed(list);
  if (nav === "back" && history.state && history.state.chatd) history.back();
  else if (nav !== "none") history.replaceState(null, "", location.pathname);
  schedule("list");
}

/** Follows the URL hash (#/c/ID, #/u/ID): reload, Back and Forward. */
export function route() {
  if (location.hash === "#/admin") return; // the admin screen (admin.js) lies over the chat
  const m = location.hash.match(/^#\/(c|u)\/(\d+)$/);
  if (m && m[1] === "c" && S.convs.has(Number(m[2]))) return open({ id: Number(m[2]) }, "none");
  if (m && m[1] === "u" && S.current && S.current.draft && S.current.draft.id === Number(m[2])) return;
  if (S.current) close("none");
}

// ---- chat header and typing ---------------------------------------------------------------

function renderHead() {
  const cur = S.current;
  if (!cur) return;
  const c = cur.id ? S.convs.get(cur.id) : null;
  const title = c ? c.title : cur.draft.name;
  $("chat-title").textContent = title;
  const av = $("chat-avatar");
  setAvatar(av, title, c ? peerColor(c) : store.colorOf(cur.draft.id));
  av.className = c && c.kind === "group" ? "avatar group" : "avatar";
  const dot = $("chat-dot");
  const sub = $("chat-sub");
  sub.classList.remove("online");
  if (!c) {
    dot.hidden = true;
    sub.textContent = t("chat.newDirect");
  } else if (c.kind === "direct") {
    const online = !!(c.peer && c.peer.online);
    dot.hidden = false;
    dot.classList.toggle("online", online);
    sub.textContent = !S.presenceKnown ? t("chat.presenceUnknown") : online ? t("chat.online") : t("chat.offline");
    sub.classList.toggle("online", online);
  } else {
    dot.hidden = true;
    sub.textContent = t("chat.members", { n: c.member_count });
  }
  $("btn-info").hidden = !c || c.kind !== "group";
  $("btn-conv-menu").hidden = !c;
  $("chat-title").classList.toggle("muted-title", !!(c && c.muted));
}

function renderTyping() {
  const el = $("typing");
  const c = S.current && S.current.id ? S.convs.get(S.current.id) : null;
  const names = c ? store.typingNames(c.id) : [];
  el.textContent = names.length ? typingText(names) : "";
}

// ---- messages -----------------------------------------------------------------------------

/** The items of the open conversation, in display order. */
function buildItems() {
  const cur = S.current;
  const me = S.me.id;
  const c = cur.id ? S.convs.get(cur.id) : null;
  const group = !!c && c.kind === "group";
  const items = [];
  let day = null;
  let prev = null;
  let divided = false;
  // A separator ends the run of messages before it.
  const separate = (item) => {
    if (prev) prev.last = true;
    prev = null;
    items.push(item);
  };
  const push = (m, status) => {
    const kind = m.kind || "text";
    if (kind !== "text" && kind !== "system") return; // events are folded into their targets
    // A marker has no time: it stays in the day of the message before it.
    const dk = m.unreadable ? day : dayKey(m.time);
    if (dk !== day) {
      separate({ key: `d${dk}`, kind: "day", time: m.time });
      day = dk;
    }
    if (dividerAfter !== null && !divided && kind === "text" && m.seq > dividerAfter && m.sender !== me && status === null) {
      separate({ key: "unread", kind: "unread" });
      divided = true;
    }
    if (kind === "system") {
      separate({ key: `s${m.seq}`, kind: "system", m });
      return;
    }
    const first = !prev || prev.m.sender !== m.sender || m.time - prev.m.time > RUN_GAP;
    if (prev && first) prev.last = true;
    const own = m.sender === me;
    const key = m.client_id ? `c${m.sender}:${m.client_id}` : `s${m.seq}`;
    const it = { key, kind: "msg", m, own, group, first, last: false, status: own ? status || store.receipt(c.id, m.seq) : null };
    items.push(it);
    prev = it;
  };
  const cache = c ? S.msgs.get(c.id) : null;
  if (cache) for (const m of cache.list) push(m, null);
  // A message can be in the cache and still in the outbox: its ack is late, but history already
  // brought it (the server stored it). Show it once, as stored.
  const stored = new Set(cache ? cache.list.filter((m) => m.sender === me && m.client_id).map((m) => m.client_id) : []);
  for (const e of store.outboxFor(cur)) {
    if (stored.has(e.client_id)) continue;
    const p = { seq: Infinity, conversation: c ? c.id : null, sender: me, sender_name: S.me.name, time: e.created, client_id: e.client_id, text: e.text, pending: e.files ? e : null };
    if (e.reply_to) p.reply_to = e.reply_to;
    if (e.mentions) p.mentions = e.mentions;
    push(p, "sending");
  }
  if (prev) prev.last = true;
  return items;
}

function makeItem(it) {
  if (it.kind === "day") return h("li", { class: "sep", attrs: { role: "separator" } }, h("span", { text: dayLabel(it.time) }));
  if (it.kind === "unread") return h("li", { class: "unread-sep", attrs: { role: "separator" }, text: t("chat.unread") });
  if (it.kind === "system") {
    const li = h("li", { class: "system" }, h("span"));
    li.dataset.seq = it.m.seq;
    return li;
  }
  const m = it.m;
  const li = h("li", { class: "msg" });
  if (Number.isFinite(m.seq)) li.dataset.seq = m.seq;
  const time = h("time");
  const status = h("span", { class: "status" });
  const edited = h("span", { class: "edited", hidden: true });
  const meta = h("span", { class: "meta" }, edited, time, status);
  const bubble = h("div", { class: "bubble" });
  if (it.group && !it.own) {
    const sender = h("div", { class: "sender" });
    bubble.append(sender);
    li._sender = sender;
    li._avatar = avatar("", "avatar sm");
    li._gutter = h("span", { class: "gutter" });
  } else {
    // Screen readers hear who wrote each message; sighted users see it from the side.
    li._srSender = h("span", { class: "sr-only" });
    bubble.append(li._srSender);
  }
  // An invisible copy of the time reserves room for the real one in the bottom-right corner.
  const pad = h("span", { class: "meta-pad", attrs: { "aria-hidden": "true" } });
  li._quote = h("div", { class: "quote-slot" });
  li._atts = h("div", { class: "atts-slot" });
  li._body = h("span", { class: "body" });
  const textDiv = h("div", { class: "text" }, li._body, pad);
  li._reacts = h("div", { class: "reactions-slot" });
  bubble.append(li._quote, li._atts, textDiv, meta, li._reacts);
  li.append(bubble);
  Object.assign(li, { _status: status, _time: time, _pad: pad, _edited: edited, _textDiv: textDiv, _m: m });
  // The message menu (react, reply, edit, delete): only for stored messages.
  li._more = actions.attach(li, bubble, () => li._m);
  li._more.hidden = !Number.isFinite(m.seq);
  li.append(li._more);
  return li;
}

/** Text, quote, edited mark, deleted placeholder and reactions of a message item, when changed. */
function updateBody(li, m) {
  li._m = m;
  const mentionSig = (m.mentions || []).map((id) => store.shownName(id)).join(",");
  const sig = `${m.unreadable ? "u" : ""}${m.deleted ? "d" : ""}|${m.text}|${mentionSig}`;
  if (li._textSig !== sig) {
    li._textSig = sig;
    let body;
    if (m.unreadable) body = h("em", { class: "unreadable", text: t("chat.unreadable") });
    else if (m.deleted) body = h("em", { class: "deleted", text: t("msg.deleted") });
    else body = mentions.richText(m);
    li._body.replaceChildren(body);
    li._textDiv.classList.toggle("no-text", !m.unreadable && !m.deleted && !m.text);
    li.classList.toggle("deleted", !!m.deleted);
    li.classList.toggle("mentions-me", !m.deleted && store.mentionsMe(m) && m.sender !== S.me.id);
  }
  const q = actions.quoteSig(m);
  if (li._quoteSig !== q) {
    li._quoteSig = q;
    const el = actions.quote(m);
    li._quote.replaceChildren(...(el ? [el] : []));
  }
  const r = actions.reactionsSig(m);
  if (li._reactSig !== r) {
    li._reactSig = r;
    const el = actions.reactions(m);
    li._reacts.replaceChildren(...(el ? [el] : []));
    li.classList.toggle("has-reactions", !!el);
  }
  li._edited.hidden = !m.edited || !!m.deleted;
  li._edited.textContent = t("msg.edited");
  li._more.hidden = !Number.isFinite(m.seq) || !!m.deleted || !!m.unreadable;
}

function updateItem(li, it) {
  if (it.kind === "day") li.firstChild.textContent = dayLabel(it.time); // "Today" becomes "Yesterday"
  if (it.kind === "system") li.firstChild.textContent = actions.systemText(it.m);
  if (it.kind !== "msg") return;
  if (Number.isFinite(it.m.seq)) li.dataset.seq = it.m.seq;
  updateBody(li, it.m);
  const sig = files.signature(it.m);
  if (li._attSig !== sig) {
    // Files: progress while uploading, then thumbnails and links once the message is stored.
    li._attSig = sig;
    const block = files.render(it.m);
    li._atts.replaceChildren(...(block ? [block] : []));
    li.classList.toggle("has-atts", !!block);
  }
  if (li._ms !== it.m.time) {
    // Set once, and again when the server's time replaces the time a pending message was written.
    li._ms = it.m.time;
    li._time.textContent = it.m.unreadable ? "" : clock(it.m.time);
    li._time.title = fullTime(it.m.time);
    li._time.dateTime = new Date(it.m.time).toISOString();
  }
  // The invisible copy reserves room for the time and the "edited" mark.
  const padText = it.m.edited && !it.m.deleted ? `${t("msg.edited")} ${li._time.textContent}` : li._time.textContent;
  if (li._pad.dataset.t !== padText) li._pad.dataset.t = padText;
  // Who wrote it, as they are shown now (a display name or colour can change any time).
  const who = store.shownName(it.m.sender, it.m.sender_name);
  const color = store.colorOf(it.m.sender);
  if (li._who !== who || li._color !== color) {
    li._who = who;
    li._color = color;
    if (li._sender) {
      li._sender.textContent = who;
      setAvatar(li._avatar, who, color);
      li._sender.dataset.color = li._avatar.dataset.color;
    } else li._srSender.textContent = `${who}: `;
  }
  li.classList.toggle("own", it.own);
  li.classList.toggle("first", it.first);
  li.classList.toggle("last", it.last);
  li.classList.toggle("sending", it.status === "sending");
  if (li._sender) {
    li._sender.classList.toggle("sr-only", !it.first);
    const lead = it.first ? li._avatar : li._gutter;
    if (li.firstChild !== lead) {
      if (li.firstChild === li._avatar || li.firstChild === li._gutter) li.firstChild.remove();
      li.prepend(lead);
    }
  }
  if (it.own && li.dataset.status !== it.status) {
    li.dataset.status = it.status;
    const name = it.status === "sending" ? "clock" : it.status === "read" ? "checks" : "check";
    li._status.replaceChildren(icon(name), h("span", { class: "sr-only", text: t(`status.${it.status}`) }));
    li._status.title = t(`status.${it.status}`);
  }
}

/**
 * True while a conversation opened with unread messages still has to page in history back to
 * its first unread one (defect: with more than a page unread, it opened near the bottom).
 */
function needsUnreadHistory(c, cache) {
  if (dividerAfter === null || scrollIntent !== "entry" || !c) return false;
  if (!chat.connected()) return false; // offline: show what is cached
  if (!cache || !cache.list.length) return c.last_seq > 0;
  return !cache.complete && cache.list[0].seq > dividerAfter + 1;
}

function renderMessages() {
  const cur = S.current;
  if (!cur) return;
  const c = cur.id ? S.convs.get(cur.id) : null;
  const cache = c ? S.msgs.get(c.id) : null;
  const status = $("history-status");
  if (needsUnreadHistory(c, cache)) {
    // Page in (100 at a time) until the first unread message is there; render once it is.
    status.textContent = t("chat.loading");
    chat.loadHistory(c.id, S.limits.history_limit || 100);
    return;
  }
  const atBottom = !detached(c, cache) && (pinned || box.scrollHeight - box.scrollTop - box.clientHeight < 60);
  // Remember the first visible message so older messages loaded above do not move the view.
  // (Not a separator: "Today" and the unread divider move up when older messages come in.)
  let anchor = null;
  let anchorTop = 0;
  if (!atBottom) {
    for (const el of list.children) {
      if (el.classList.contains("msg") && el.offsetTop + el.offsetHeight > box.scrollTop) {
        anchor = el;
        anchorTop = el.offsetTop - box.scrollTop;
        break;
      }
    }
  }
  reconcile(list, buildItems(), makeItem, updateItem);

  if (cache && cache.loading) status.textContent = t("chat.loading");
  else if (c && (c.last_seq === 0 || (cache && cache.complete))) status.textContent = t("chat.start");
  else status.textContent = "";

  if (scrollIntent === "jump") {
    const el = list.querySelector(`.msg[data-seq="${jumpSeq}"]`);
    if (el) {
      el.classList.add("hit");
      scrollTo(Math.max(0, el.offsetTop - box.clientHeight / 2 + el.offsetHeight / 2));
      scrollIntent = null;
    } else if (!cache || !cache.loading) scrollIntent = null; // not there (gone since): as opened
  } else if (scrollIntent === "entry") {
    const div = list.querySelector(".unread-sep");
    if (div) scrollTo(Math.max(0, div.offsetTop - 80));
    else scrollTo(box.scrollHeight);
    if (cache && cache.list.length) scrollIntent = null;
  } else if (scrollIntent === "bottom" || atBottom) {
    scrollTo(box.scrollHeight);
    scrollIntent = null;
  } else if (anchor && anchor.isConnected) {
    scrollTo(anchor.offsetTop - anchorTop);
  }
  // Nothing cached, or not enough to scroll yet? Fetch (older) messages so the pane fills up.
  if (c && c.last_seq > 0 && (!cache || (!cache.complete && !cache.loading)) && box.scrollHeight <= box.clientHeight + 120) {
    chat.loadHistory(c.id);
  }
}

/** Scrolls the message pane programmatically (and records whether that is the bottom). */
function scrollTo(top) {
  box.scrollTop = top;
  pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 2;
}

function onScroll() {
  pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  const c = S.current && S.current.id ? S.current.id : null;
  if (c && box.scrollTop < 240) chat.loadHistory(c);
  // After a jump to a search result the run may end before the newest message.
  if (c && box.scrollHeight - box.scrollTop - box.clientHeight < 240) chat.loadNewer(c);
  maybeMarkRead();
}

/**
 * Reads the open conversation up to its newest message when that is on screen; otherwise
 * offers the "jump to newest" button (with the unread count).
 */
function maybeMarkRead() {
  const c = S.current && S.current.id ? S.convs.get(S.current.id) : null;
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const behind = detached(c, c ? S.msgs.get(c.id) : null);
  $("btn-jump").hidden = !S.current || (nearBottom && !behind);
  const count = $("jump-count");
  count.hidden = !c || !c.unread;
  if (c) count.textContent = c.unread > 99 ? "99+" : String(c.unread);
  // Not while a conversation opened at its first unread message is still paging in.
  if (!c || document.hidden || !S.me || !nearBottom || scrollIntent === "entry" || scrollIntent === "jump") return;
  const cache = S.msgs.get(c.id);
  if (cache && cache.list.length) chat.markRead(c.id, cache.list[cache.list.length - 1].seq);
}

// ---- composer -----------------------------------------------------------------------------

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, 180)}px`;
  const over = renderCounter();
  $("btn-send").disabled = (!input.value.trim() && !files.count()) || over > 0;
}

let counterState = "";

/**
 * The length counter: hidden until the text is near the server's limit (the last 10%, at least
 * the last 100 characters), then "3,950 / 4,000", red past it. Screen readers hear it once when
 * it appears and once when the text gets too long. Returns how many characters are too many.
 */
function renderCounter() {
  const el = $("counter");
  const { chars, max, over } = chat.measure(input.value);
  const near = max !== Infinity && chars >= max - Math.max(100, Math.floor(max / 10));
  el.hidden = !near;
  const fmt = (n) => n.toLocaleString(locale());
  if (near) el.textContent = `${fmt(chars)} / ${fmt(max)}`;
  el.classList.toggle("over", over > 0);
  const state = over > 0 ? "over" : near ? "near" : "";
  if (state !== counterState) {
    counterState = state;
    $("counter-sr").textContent =
      state === "over" ? t("chat.counterOver", { n: over, max: fmt(max) }) : state === "near" ? t("chat.counterNear", { n: max - chars }) : "";
  }
  return over;
}

function submit() {
  const cur = S.current;
  // Blank lines before and after the text are dropped; everything else is sent as written.
  const text = input.value.replace(/^\s*\n/, "").replace(/\n\s*$/, "");
  const withFiles = files.count() > 0 && !(actions.current() && actions.current().kind === "edit");
  if (!cur || (!text.trim() && !withFiles)) return;
  const { chars, max, over } = chat.measure(text);
  if (over > 0) {
    toast(t("chat.tooLong", { n: over, chars: chars.toLocaleString(locale()), max: max.toLocaleString(locale()) }), "error");
    return;
  }
  const ids = cur.id ? mentions.idsIn(text, cur.id) : [];
  mentions.close();
  const extra = actions.onSubmit(text, ids);
  if (!extra) {
    // An edit was saved (the composer has its earlier draft back).
    schedule("msgs");
    return;
  }
  chat.sendText(cur, withFiles && !text.trim() ? "" : text, withFiles, { ...extra, mentions: ids });
  input.value = "";
  drafts.delete(curKey(cur));
  autosize();
  scrollIntent = "bottom";
  dividerAfter = null;
  schedule("msgs");
}

// ---- connection banner --------------------------------------------------------------------

let bannerTick = null;
const startedAt = Date.now();

function renderBanner() {
  const st = chat.status();
  const el = $("banner");
  const text = $("banner-text");
  const waiting = S.outbox.length;
  let msg = "";
  let kind = "";
  if (st.phase === "connecting") {
    // A quick first connect shows nothing; a slow one says so.
    if (st.everConnected || Date.now() - startedAt > 800) msg = t(st.everConnected ? "conn.reconnecting" : "conn.connecting");
    kind = "connecting";
    if (!msg) setTimeout(() => schedule("banner"), 850);
  } else if (st.phase === "waiting") {
    msg = t("conn.retryIn", { n: Math.max(1, Math.ceil((st.retryAt - Date.now()) / 1000)) });
  } else if (st.phase === "offline") {
    msg = t("conn.offline");
    kind = "offline";
  }
  if (msg && waiting) msg += ` · ${t("conn.outbox", { n: waiting })}`;
  el.hidden = !msg;
  el.className = `banner ${kind}`;
  text.textContent = msg;
  $("banner-retry").hidden = !(st.phase === "waiting" || st.phase === "offline");
  $("me-conn").textContent = st.phase === "ready" || st.phase === "welcomed" ? t("chat.online") : msg ? t("chat.offline") : "";
  clearInterval(bannerTick);
  if (st.phase === "waiting") bannerTick = setInterval(() => schedule("banner"), 1000);
}

// ---- wiring -------------------------------------------------------------------------------

/** The footer: own display name (else name) and avatar colour. */
function renderMe() {
  const name = S.me.display_name || S.me.name;
  $("me-name").textContent = name;
  setAvatar($("me-avatar"), name, S.me.color);
  $("btn-admin").hidden = !S.me.admin;
}

/** Shows the chat screen for `me` and connects. */
export function start(me) {
  on("me", renderMe);

  let routed = false;
  on("convs", () => {
    schedule("list", "head", "msgs");
    if (!routed) {
      // First list after connecting: open what the URL names (reload keeps the open chat).
      routed = true;
      route();
    }
    // The open conversation may have been deleted (left, removed, or gone after reconnect).
    if (S.current && S.current.id && !S.convs.has(S.current.id)) close("replace");
    // A new direct chat now exists (created by our first message, here or on another device).
    const made = S.current && S.current.draft && store.directWith(S.current.draft.id);
    if (made) {
      drafts.set(`c${made.id}`, input.value); // keep what is being typed
      open({ id: made.id }, "replace");
    }
  });
  on("msgs", (id) => {
    if (!S.current || !id || isOpen(id)) schedule("msgs");
  });
  on("outbox", () => schedule("msgs", "banner"));
  on("members", () => schedule("msgs", "head"));
  on("typing", () => schedule("typing", "list"));
  on("conn", () => schedule("banner"));

  chat.hooks.onLive = (m) => {
    const c = S.convs.get(m.conversation);
    // Muted: nothing, unless the message mentions us.
    if (c && c.muted && !store.mentionsMe(m)) return;
    notify.message(m, c, store.shownName(m.sender, m.sender_name));
  };
  chat.hooks.onSendFailed = (code, entry) => {
    toast(t("chat.notSent", { reason: t(`error.${code}`) }), "error");
    if (!input.value) {
      input.value = entry.text;
      autosize();
    }
  };
  chat.hooks.onRemoved = (c, self) => {
    if (!self) toast(t("chat.removed", { title: c.title }));
  };
  notify.onOpen((id) => open({ id }));

  $("filter").addEventListener("input", () => schedule("list"));
  $("filter").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      // Without preventDefault the Enter would also land in the composer that opening focuses.
      e.preventDefault();
      const first = $("conv-list").querySelector(".conv");
      if (first) first.click();
    }
  });
  $("btn-back").addEventListener("click", () => close("back"));
  $("btn-info").addEventListener("click", () => S.current && S.current.id && dialogs.info(S.current.id));
  $("btn-new-chat").addEventListener("click", () => dialogs.directory(open));
  $("btn-empty-new").addEventListener("click", () => dialogs.directory(open));
  $("btn-new-group").addEventListener("click", () => dialogs.group(null, (c) => open({ id: c.id })));
  $("banner-retry").addEventListener("click", () => chat.retryNow());
  $("btn-jump").addEventListener("click", () => {
    const c = S.current && S.current.id ? S.convs.get(S.current.id) : null;
    if (c && detached(c, S.msgs.get(c.id))) {
      // Showing older messages (a search result): back to the newest page.
      store.jumpRun(c.id, []);
      S.msgs.get(c.id).list = [];
      S.msgs.get(c.id).complete = false;
      scrollIntent = "bottom";
      chat.loadHistory(c.id);
    }
    // Instantly: a smooth scroll was cut short by any render on the way (receipts, typing).
    scrollTo(box.scrollHeight);
    schedule("msgs");
    input.focus();
  });
  box.addEventListener("scroll", onScroll, { passive: true });
  // The pane changes size (banner, composer, keyboard, window): stay at the newest message.
  new ResizeObserver(() => {
    if (pinned && S.current) box.scrollTop = box.scrollHeight;
  }).observe(box);
  input.addEventListener("input", () => {
    autosize();
    mentions.update(S.current && S.current.id);
    if (S.current && S.current.id && input.value.trim()) chat.typing(S.current.id);
  });
  input.addEventListener("blur", () => setTimeout(() => document.activeElement !== input && mentions.close(), 150));
  input.addEventListener("keydown", (e) => {
    // The mention picker's keys first, then Up (edit our last message) and Esc (stop replying).
    if (mentions.handleKey(e)) return;
    if (actions.handleKey(e, S.current && S.current.id, files.count() === 0)) return;
    // Enter sends; Shift+Enter is a newline; never while an IME is composing (Chinese input).
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    } else if (e.key === "Escape" && matchMedia("(max-width: 720px)").matches) close("back");
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
    input.focus();
  });
  document.addEventListener("visibilitychange", () => schedule("list"));
  window.addEventListener("focus", () => schedule("list"));
  window.addEventListener("popstate", route);
  // Relative times ("3 min ago") move on by themselves.
  setInterval(() => schedule("list", "msgs"), 30000);
  window.addEventListener("resize", () => schedule("msgs"));

  files.wire(autosize);
  actions.wire(autosize);
  dialogs.wireConvMenu();
  search.hooks.openAt = openAt;
  search.wire();
  chat.start(me);
  renderMe();
  schedule("list", "banner");
}

/** Re-renders everything after a language switch. */
export function relabel() {
  // (Removing the children of the live `children` collection in a for-of skipped every other
  // one: frozen duplicates stayed in the list.)
  clearKeyed($("conv-list"));
  clearKeyed(list);
  actions.relabel();
  search.relabel();
  schedule("list", "head", "msgs", "typing", "banner");
}
