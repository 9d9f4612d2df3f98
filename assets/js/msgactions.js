// msgactions: owns what one does to a message in the web client (issue 23) and how its results
// show in a bubble. The message menu (the "⋯" button beside a bubble, a right-click, or on a
// phone a tap or long-press on it): a row of common emoji to react with, Reply, Edit (own
// messages), Delete (own; in a group also the owner's and server admins', after a confirmation).
// The bar above the composer while replying or editing (Esc cancels; Up in an empty composer
// edits our last message). In a bubble: the quoted message of a reply (sender and first line;
// a click scrolls to it, loading older history if needed), the "edited" mark, the "message
// deleted" placeholder, reaction chips (count per emoji; who reacted in the title and label,
// or in a toast on long-press; a click toggles ours) and system lines. Calls chat.js and
// store.js; ui.js calls it. All user text goes in with textContent.

import { $, h, icon, toast } from "./dom.js";
import { t, locale } from "./i18n.js";
import * as chat from "./chat.js";
import * as store from "./store.js";
import { S, emit } from "./store.js";
import { confirm } from "./dialogs.js";

/** The emoji offered in the message menu. */
export const EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "✅"];
const LONG_PRESS = 500;

const input = $("input");
const menu = $("msg-menu");
const bar = $("compose-bar");
/** The composer's mode: null, {kind: "reply", conv, seq} or {kind: "edit", conv, seq, draft}. */
let mode = null;
/** {conv, seq, trigger} of the message whose menu is open. */
let menuFor = null;
let changed = () => {};

export const current = () => mode;

/** Localized text for a refused message action. */
function errText(e) {
  const code = e && e.code;
  if (code === "offline" || code === "timeout") return t("error.offline");
  for (const key of [`msg.err.${code}`, `error.${code}`]) {
    const s = t(key);
    if (s !== key) return s;
  }
  return t("err.generic", { code });
}

/** "alice, bob and you" in the language in use. */
function nameList(ids) {
  const names = ids.map((id) => (id === S.me.id ? t("msg.you") : store.shownName(id, `#${id}`)));
  try {
    return new Intl.ListFormat(locale(), { type: "conjunction" }).format(names);
  } catch {
    return names.join(", ");
  }
}

const firstLine = (text) => (text || "").split("\n").find((l) => l.trim()) || "";

// ---- permissions ----------------------------------------------------------------------------

const stored = (m) => Number.isFinite(m.seq) && store.isText(m) && !m.deleted && !m.unreadable;
const canEdit = (m) => stored(m) && m.sender === S.me.id;

function canDelete(m) {
  if (!stored(m)) return false;
  if (m.sender === S.me.id) return true;
  const c = S.convs.get(m.conversation);
  if (!c || c.kind !== "group") return false;
  if (c.owner === S.me.id || S.me.admin) return true;
  const me = (S.members.get(c.id) || []).find((u) => u.id === S.me.id);
  return !!me && me.role === "admin";
}

// ---- the composer's bar: replying / editing -------------------------------------------------

function renderBar() {
  if (!mode) {
    bar.hidden = true;
    return;
  }
  const m = store.findMessage(mode.conv, mode.seq);
  $("compose-bar-icon").setAttribute("href", mode.kind === "edit" ? "#i-edit" : "#i-reply");
  bar.dataset.kind = mode.kind;
  if (mode.kind === "edit") {
    $("compose-bar-title").textContent = t("msg.editing");
    $("compose-bar-text").textContent = t("msg.editHint");
  } else {
    $("compose-bar-title").textContent = t("msg.replyTo", { name: m ? store.shownName(m.sender, m.sender_name) : "" });
    $("compose-bar-text").textContent = m ? firstLine(m.text) || t("files.attachment") : "";
  }
  bar.hidden = false;
}

/** Replies to message `m`: the bar shows whom, the next message sent carries `reply_to`. */
export function startReply(m) {
  if (mode && mode.kind === "edit") cancel();
  mode = { kind: "reply", conv: m.conversation, seq: m.seq };
  renderBar();
  input.focus();
}

/** Edits our message `m` in the composer (what was being typed comes back afterwards). */
export function startEdit(m) {
  if (!canEdit(m)) return;
  const draft = mode && mode.kind === "edit" ? mode.draft : input.value;
  mode = { kind: "edit", conv: m.conversation, seq: m.seq, draft };
  input.value = m.text;
  renderBar();
  changed();
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

/** Leaves replying or editing (an edit's text goes; the draft from before comes back). */
export function cancel() {
  if (mode && mode.kind === "edit") {
    input.value = mode.draft;
    changed();
  }
  mode = null;
  renderBar();
}

/** Another conversation opened: a reply or an edit does not follow. */
export function reset(convId) {
  if (mode && mode.conv !== convId) cancel();
}

/** Our newest editable message in conversation `id`. */
function lastOwn(id) {
  const list = S.msgs.get(id)?.list || [];
  for (let i = list.length - 1; i >= 0; i--) if (canEdit(list[i])) return list[i];
  return null;
}

/**
 * The composer's keys before ui.js's: Up in an empty composer edits our last message; Escape
 * leaves replying or editing. Returns true when the key was handled here.
 */
export function handleKey(e, convId, empty) {
  if (e.isComposing) return false;
  if (e.key === "ArrowUp" && empty && !mode && convId && !input.value) {
    const m = lastOwn(convId);
    if (!m) return false;
    e.preventDefault();
    startEdit(m);
    return true;
  }
  if (e.key === "Escape" && mode) {
    e.preventDefault();
    e.stopPropagation();
    cancel();
    return true;
  }
  return false;
}

/**
 * Sending in the current mode. Editing: saves the edit (shown at once, undone if refused) and
 * returns null. Otherwise returns what the new message carries ({reply_to}) and ends the reply.
 */
export function onSubmit(text, mentions) {
  if (mode && mode.kind === "edit") {
    const { conv, seq, draft } = mode;
    const m = store.findMessage(conv, seq);
    mode = null;
    renderBar();
    input.value = draft;
    changed();
    if (!m || m.text === text) return null;
    const before = { text: m.text, edited: m.edited, mentions: m.mentions };
    Object.assign(m, { text, edited: true, mentions: mentions.length ? mentions : undefined });
    emit("msgs", conv);
    chat.edit(conv, seq, text, mentions).catch((e) => {
      if (!m.deleted) Object.assign(m, before); // (deleted meanwhile: it stays deleted)
      emit("msgs", conv);
      toast(t("chat.notSent", { reason: errText(e) }), "error");
    });
    return null;
  }
  const extra = mode && mode.kind === "reply" ? { reply_to: mode.seq } : {};
  mode = null;
  renderBar();
  return extra;
}

async function deleteMessage(m) {
  if (!(await confirm(t("msg.deleteConfirm"), t("msg.delete")))) return;
  try {
    await chat.remove(m.conversation, m.seq);
  } catch (e) {
    toast(errText(e), "error");
  }
}

function react(m, emoji) {
  chat.react(m.conversation, m.seq, emoji).catch((e) => toast(errText(e), "error"));
}

// ---- the message menu -----------------------------------------------------------------------

const phone = () => matchMedia("(max-width: 720px)").matches;

/** Opens the menu of message `m` next to `trigger` (the element focus returns to). */
export function openMenu(m, trigger) {
  if (!stored(m)) return;
  menuFor = { conv: m.conversation, seq: m.seq, trigger };
  $("msg-menu-emoji").replaceChildren(
    ...EMOJI.map((emoji) => {
      const mine = (m.reactions || []).some((r) => r.emoji === emoji && r.users.includes(S.me.id));
      const label = t("msg.reactWith", { emoji });
      return h(
        "button",
        {
          type: "button",
          class: "emoji",
          text: emoji,
          title: label,
          attrs: { role: "menuitemcheckbox", "aria-checked": String(mine), "aria-label": label },
          on: { click: () => (closeMenu(), react(m, emoji)) },
        },
      );
    }),
  );
  $("msg-edit").hidden = !canEdit(m);
  $("msg-delete").hidden = !canDelete(m);
  menu.hidden = false;
  menu.classList.toggle("sheet", phone());
  if (phone()) {
    for (const k of ["top", "left"]) menu.style[k] = "";
  } else {
    const r = trigger.getBoundingClientRect();
    const w = menu.offsetWidth;
    const hgt = menu.offsetHeight;
    const top = r.bottom + 4 + hgt > innerHeight ? Math.max(4, r.top - hgt - 4) : r.bottom + 4;
    const left = Math.min(Math.max(4, m.sender === S.me.id ? r.right - w : r.left), innerWidth - w - 4);
    menu.style.top = `${top}px`;
    menu.style.left = `${left}px`;
  }
  if (trigger.setAttribute) trigger.setAttribute("aria-expanded", "true");
  menu.querySelector("button").focus();
}

export function closeMenu(refocus = false) {
  if (menu.hidden) return;
  menu.hidden = true;
  const trig = menuFor && menuFor.trigger;
  if (trig && trig.setAttribute) trig.setAttribute("aria-expanded", "false");
  if (refocus && trig && trig.isConnected) trig.focus();
  menuFor = null;
}

const menuMessage = () => menuFor && store.findMessage(menuFor.conv, menuFor.seq);

function wireMenu() {
  $("msg-reply").addEventListener("click", () => {
    const m = menuMessage();
    closeMenu();
    if (m) startReply(m);
  });
  $("msg-edit").addEventListener("click", () => {
    const m = menuMessage();
    closeMenu();
    if (m) startEdit(m);
  });
  $("msg-delete").addEventListener("click", () => {
    const m = menuMessage();
    closeMenu(true);
    if (m) deleteMessage(m);
  });
  menu.addEventListener("keydown", (e) => {
    const items = [...menu.querySelectorAll("button:not([hidden])")];
    const i = items.indexOf(document.activeElement);
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[e.key];
    if (step) {
      e.preventDefault();
      items[(i + step + items.length) % items.length].focus();
    } else if (e.key === "Home" || e.key === "End") {
      e.preventDefault();
      items[e.key === "Home" ? 0 : items.length - 1].focus();
    } else if (e.key === "Escape" || e.key === "Tab") {
      e.preventDefault();
      closeMenu(true);
    }
  });
  document.addEventListener(
    "pointerdown",
    (e) => {
      if (!menu.hidden && !menu.contains(e.target) && !(menuFor && menuFor.trigger.contains && menuFor.trigger.contains(e.target))) closeMenu();
    },
    true,
  );
  $("messages").addEventListener("scroll", () => closeMenu(), { passive: true });
  window.addEventListener("resize", () => closeMenu());
}

/**
 * Long-press (touch): calls `fn` after LONG_PRESS ms held still; the click that follows is
 * swallowed. Returns nothing; listeners go on `el`.
 */
function onLongPress(el, fn) {
  let timer = null;
  let fired = false;
  const stop = () => clearTimeout(timer);
  el.addEventListener("pointerdown", (e) => {
    fired = false;
    if (e.pointerType !== "touch") return;
    timer = setTimeout(() => {
      fired = true;
      fn(e);
    }, LONG_PRESS);
  });
  for (const ev of ["pointerup", "pointercancel", "pointermove", "pointerleave"]) el.addEventListener(ev, stop);
  el.addEventListener(
    "click",
    (e) => {
      if (fired) {
        e.preventDefault();
        e.stopPropagation();
        fired = false;
      }
    },
    true,
  );
}

/**
 * Hooks the message `li` (made by ui.js) up to its menu: the "⋯" button, right-click, and on a
 * touch screen a tap or long-press on the bubble. `get()` returns the message it shows now.
 */
export function attach(li, bubble, get) {
  const more = h(
    "button",
    { type: "button", class: "msg-more", title: t("msg.more"), attrs: { "aria-label": t("msg.more"), "aria-haspopup": "menu", "aria-expanded": "false" } },
    icon("more", "icon small"),
  );
  more.addEventListener("click", () => (menu.hidden || !menuFor || menuFor.trigger !== more ? openMenu(get(), more) : closeMenu()));
  bubble.addEventListener("contextmenu", (e) => {
    if (e.target.closest("a, img, .reactions")) return;
    e.preventDefault();
    openMenu(get(), bubble);
  });
  onLongPress(bubble, (e) => {
    if (!e.target.closest("a, .reactions, .quote")) openMenu(get(), bubble);
  });
  bubble.addEventListener("click", (e) => {
    if (!matchMedia("(hover: none)").matches || e.target.closest("a, button, img, .att, input")) return;
    openMenu(get(), bubble);
  });
  return more;
}

// ---- inside a bubble ------------------------------------------------------------------------

/** Scrolls to message `seq` of conversation `id` (paging in older history first) and flashes it. */
export async function jumpTo(id, seq) {
  await chat.loadUntil(id, seq);
  for (let i = 0; i < 40; i++) {
    const el = $("msg-list").querySelector(`li.msg[data-seq="${seq}"]`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      el.classList.remove("flash");
      void el.offsetWidth; // restart the animation
      el.classList.add("flash");
      setTimeout(() => el.classList.remove("flash"), 1600);
      return true;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  toast(t("msg.quoteGone"));
  return false;
}

/** A signature of what `quote()` shows for `m` (so ui.js rebuilds it only when it changed). */
export function quoteSig(m) {
  if (!m.reply_to || m.deleted) return "";
  const q = store.findMessage(m.conversation, m.reply_to);
  if (!q) return `${m.reply_to}:?${chat.connected() ? 1 : 0}`; // fetched once connected
  return `${m.reply_to}:${q.deleted ? "d" : ""}${q.missing ? "m" : ""}:${q.sender}:${store.shownName(q.sender, q.sender_name)}:${firstLine(q.text)}`;
}

/** The quote of the message `m` replies to (a button scrolling to it), or null. */
export function quote(m) {
  if (!m.reply_to || m.deleted) return null;
  const q = store.findMessage(m.conversation, m.reply_to);
  if (!q && Number.isFinite(m.conversation)) chat.fetchQuote(m.conversation, m.reply_to);
  const who = q && !q.missing ? store.shownName(q.sender, q.sender_name) : "";
  const text = !q || q.missing ? t("msg.quoteMissing") : q.deleted ? t("msg.deleted") : firstLine(q.text) || t("files.attachment");
  const btn = h(
    "button",
    { type: "button", class: `quote${q && q.deleted ? " gone" : ""}`, attrs: { "aria-label": t("msg.quoteShow", { name: who, text }) } },
    who ? h("strong", { text: who }) : null,
    h("span", { text }),
  );
  btn.addEventListener("click", (e) => {
    e.stopPropagation();
    jumpTo(m.conversation, m.reply_to);
  });
  return btn;
}

/** A signature of the reactions of `m` (who under which emoji). */
export const reactionsSig = (m) => (m.reactions || []).map((r) => `${r.emoji}:${r.users.join(",")}`).join(";");

/** The reaction chips of `m` (count per emoji; click toggles ours), or null. */
export function reactions(m) {
  if (!m.reactions || !m.reactions.length || m.deleted) return null;
  const row = h("div", { class: "reactions" });
  for (const r of m.reactions) {
    const mine = r.users.includes(S.me.id);
    const names = nameList(r.users);
    const chip = h(
      "button",
      {
        type: "button",
        class: "react",
        title: t("msg.reacted", { names, emoji: r.emoji }),
        attrs: { "aria-pressed": String(mine), "aria-label": `${t(mine ? "msg.reactedSelf" : "msg.reactedAdd", { names, emoji: r.emoji })} (${r.users.length})` },
      },
      h("span", { class: "react-emoji", text: r.emoji, attrs: { "aria-hidden": "true" } }),
      h("span", { class: "react-count", text: String(r.users.length), attrs: { "aria-hidden": "true" } }),
    );
    chip.addEventListener("click", (e) => {
      e.stopPropagation();
      react(m, r.emoji);
    });
    onLongPress(chip, () => toast(t("msg.reacted", { names, emoji: r.emoji })));
    row.append(chip);
  }
  return row;
}

/** The localized line of a `system` message ("alice added bob"). */
export function systemText(m) {
  const s = m.system || {};
  const actor = m.sender === S.me.id ? t("sys.you") : store.shownName(m.sender, m.sender_name);
  const users = s.users || [];
  const names = users.map((id, i) => (id === S.me.id ? t("msg.you") : store.shownName(id, (s.names || [])[i] || `#${id}`)));
  let list = names.join(", ");
  try {
    list = new Intl.ListFormat(locale(), { type: "conjunction" }).format(names);
  } catch {
    // (older browsers: commas)
  }
  const key = { created: "sys.created", added: "sys.added", removed: "sys.removed", left: "sys.left", renamed: "sys.renamed" }[s.action];
  return key ? t(key, { actor, names: list, title: s.title || "" }) : "";
}

/** `changed()`: the composer's text was replaced (ui.js resizes it and updates Send). */
export function wire(onChanged) {
  changed = onChanged;
  $("compose-bar-cancel").addEventListener("click", () => {
    cancel();
    input.focus();
  });
  wireMenu();
}

/** Re-renders the bar after a language switch. */
export function relabel() {
  renderBar();
}
