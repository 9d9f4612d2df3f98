// search: the message search box above the conversation list. Sends `search` (docs/PROTOCOL.md)
// a short pause after typing stops, shows the results grouped by conversation (groups in the
// order of their newest result, newest first inside), each with sender, time and a snippet
// whose matched words are <mark>ed (built from `highlights` with textContent, never markup),
// pages on with "More results", and opens a result with the `openAt` hook (ui.js: the
// conversation scrolled to that message). Ctrl+K (⌘K) or "/" focuses the box; Escape clears it.

import { $, h } from "./dom.js";
import { t, relTime, fullTime } from "./i18n.js";
import * as chat from "./chat.js";
import * as store from "./store.js";
import { S } from "./store.js";

const PAUSE_MS = 250;
const PAGE = 30;

/** Set by ui.js: opens conversation `id` at message `seq`. */
export const hooks = { openAt: () => {} };

const input = $("msearch");
const pane = $("search-pane");
const status = $("search-status");
const results = $("search-results");
const more = $("search-more");

let timer = null;
/** Bumped by every new query, so a late reply to an older one is dropped. */
let generation = 0;
/** The current query's results so far and its `next` cursor. */
let shown = [];
let next = null;
let query = "";

/** True while the search pane replaces the conversation list. */
export const active = () => !pane.hidden;

function setActive(on) {
  pane.hidden = !on;
  $("conv-list").hidden = on;
  if (on) $("conv-empty").hidden = true;
}

/** The snippet with its highlights as <mark> elements (character offsets, code points). */
function snippet(text, highlights) {
  const chars = Array.from(text);
  const out = [];
  let at = 0;
  for (const [a, b] of highlights || []) {
    if (a < at || b > chars.length || a >= b) continue;
    if (a > at) out.push(chars.slice(at, a).join(""));
    out.push(h("mark", { text: chars.slice(a, b).join("") }));
    at = b;
  }
  if (at < chars.length) out.push(chars.slice(at).join(""));
  return out;
}

function title(id) {
  const c = S.convs.get(id);
  return c ? c.title : `#${id}`;
}

function render() {
  results.replaceChildren();
  const groups = new Map();
  for (const r of shown) {
    if (!groups.has(r.conversation)) groups.set(r.conversation, []);
    groups.get(r.conversation).push(r);
  }
  for (const [id, hits] of groups) {
    const list = h("ul", { class: "conv-list" });
    for (const r of hits) {
      const when = h("time", { text: relTime(r.time), attrs: { datetime: new Date(r.time).toISOString(), title: fullTime(r.time) } });
      const btn = h(
        "button",
        { type: "button", class: "search-hit", on: { click: () => hooks.openAt(r.conversation, r.seq) } },
        h("span", { class: "hit-top" }, h("strong", { text: store.shownName(r.sender, r.sender_name) }), when),
        h("span", { class: "hit-text" }, snippet(r.snippet, r.highlights)),
      );
      btn.dataset.conversation = r.conversation;
      btn.dataset.seq = r.seq;
      list.append(h("li", {}, btn));
    }
    results.append(h("section", { class: "search-group" }, h("h2", { text: title(id) }), list));
  }
  more.hidden = !next;
}

async function run(append) {
  const gen = ++generation;
  const frame = { type: "search", query, limit: PAGE };
  if (append && next) frame.before = next;
  if (!append) {
    status.textContent = t("search.searching");
    more.hidden = true;
  }
  try {
    const f = await chat.search(frame);
    if (gen !== generation) return;
    shown = append ? shown.concat(f.results) : f.results;
    next = f.next || null;
    status.textContent = shown.length ? "" : t("search.none");
    render();
  } catch (e) {
    if (gen !== generation) return;
    shown = [];
    next = null;
    render();
    // bad_query carries the server's explanation (an unclosed quote, `from:` alone, ...).
    if (e.code === "bad_query") status.textContent = e.message;
    else if (e.code === "search_unavailable") status.textContent = t("search.starting");
    else status.textContent = t("search.error", { code: e.code || "?" });
  }
}

function onInput() {
  clearTimeout(timer);
  query = input.value;
  if (!query.trim()) {
    generation += 1;
    shown = [];
    next = null;
    results.replaceChildren();
    status.textContent = "";
    setActive(false);
    return;
  }
  setActive(true);
  timer = setTimeout(() => run(false), PAUSE_MS);
}

/** Puts `text` in the box and searches (the "search in this conversation" entry uses it). */
export function searchFor(text) {
  input.value = text;
  input.focus();
  onInput();
}

/** Re-renders after a language switch. */
export function relabel() {
  if (active()) render();
}

export function wire() {
  input.addEventListener("input", onInput);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      input.value = "";
      onInput();
    } else if (e.key === "Enter") {
      e.preventDefault();
      clearTimeout(timer);
      if (input.value.trim()) run(false);
    }
  });
  more.addEventListener("click", () => run(true));
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLElement && (e.target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName));
    if ((e.key === "k" || e.key === "K") && (e.ctrlKey || e.metaKey) && !e.altKey) {
      e.preventDefault();
      input.focus();
      input.select();
    } else if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      input.focus();
    }
  });
}
