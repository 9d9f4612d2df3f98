// mentions: owns @mentions in the web client. The picker under the composer (typing `@` offers
// the open conversation's members; arrow keys, Enter or Tab, or a click pick one and insert
// `@name`), the ids a message mentions (every `@name` of a current member in the text, picked
// or typed), and how a message's text shows its mentions (highlighted, ours stronger). Names
// are account names (no spaces), so the text keeps `@name` as written. Reads store.js (members,
// people); ui.js calls it. User text goes in with textContent only.

import { $, h, linkify } from "./dom.js";
import { S } from "./store.js";
import * as store from "./store.js";

const NAME = /@([\p{L}\p{N}_.-]+)/gu;
const input = $("input");
const listEl = $("mention-list");
/** {start, query, items, active} while the picker is open, else null. */
let state = null;

/** The members of conversation `id` one can mention (everyone but us). */
function candidates(id) {
  return (S.members.get(id) || []).filter((m) => m.id !== S.me.id);
}

/** Closes the picker. */
export function close() {
  state = null;
  listEl.hidden = true;
  listEl.replaceChildren();
  input.setAttribute("aria-expanded", "false");
  input.removeAttribute("aria-activedescendant");
}

/** After each input: opens, filters or closes the picker from the `@word` before the caret. */
export function update(convId) {
  const before = input.value.slice(0, input.selectionStart ?? input.value.length);
  const m = convId ? before.match(/(^|\s)@([\p{L}\p{N}_.-]{0,32})$/u) : null;
  if (!m) return close();
  const q = m[2].toLocaleLowerCase();
  const items = candidates(convId)
    .filter((u) => u.name.toLocaleLowerCase().startsWith(q) || store.shownName(u.id, u.name).toLocaleLowerCase().includes(q))
    .slice(0, 8);
  if (!items.length) return close();
  const active = state && state.query === q ? Math.min(state.active, items.length - 1) : 0;
  state = { start: before.length - m[2].length - 1, query: q, items, active };
  render();
}

function render() {
  listEl.replaceChildren(
    ...state.items.map((u, i) => {
      const shown = store.shownName(u.id, u.name);
      const li = h(
        "li",
        { id: `mention-${u.id}`, attrs: { role: "option", "aria-selected": String(i === state.active) } },
        h("strong", { text: shown }),
        shown !== u.name ? h("span", { class: "muted small", text: `@${u.name}` }) : null,
      );
      // pointerdown, not click: the composer keeps focus (and the caret) while picking.
      li.addEventListener("pointerdown", (e) => {
        e.preventDefault();
        pick(u);
      });
      return li;
    }),
  );
  listEl.hidden = false;
  input.setAttribute("aria-expanded", "true");
  input.setAttribute("aria-activedescendant", `mention-${state.items[state.active].id}`);
}

/** Replaces the `@query` being typed with `@name ` and closes the picker. */
function pick(u) {
  if (!state) return;
  const caret = input.selectionStart ?? input.value.length;
  const text = `@${u.name} `;
  input.value = input.value.slice(0, state.start) + text + input.value.slice(caret);
  const at = state.start + text.length;
  input.setSelectionRange(at, at);
  close();
  input.dispatchEvent(new Event("input"));
  input.focus();
}

/** The composer's keydown while the picker is open: returns true when the key was the picker's. */
export function handleKey(e) {
  if (!state || e.isComposing) return false;
  const n = state.items.length;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    state.active = (state.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
    render();
  } else if (e.key === "Enter" || e.key === "Tab") {
    pick(state.items[state.active]);
  } else if (e.key === "Escape") {
    close();
  } else return false;
  e.preventDefault();
  e.stopPropagation();
  return true;
}

/** The ids of the current members of `convId` that `text` mentions as `@name` (not us). */
export function idsIn(text, convId) {
  const byName = new Map(candidates(convId).map((u) => [u.name, u.id]));
  const ids = [];
  for (const m of text.matchAll(NAME)) {
    let name = m[1];
    while (name && !byName.has(name) && /[.-]$/.test(name)) name = name.slice(0, -1);
    const id = byName.get(name);
    if (id !== undefined && !ids.includes(id)) ids.push(id);
  }
  return ids;
}

/**
 * The text of message `m` as nodes: links (dom.js linkify) and, for the users it mentions,
 * `@name` in a highlight (`mention`, and `me` when it is us).
 */
export function richText(m) {
  const ids = Array.isArray(m.mentions) ? m.mentions : [];
  if (!ids.length) return linkify(m.text);
  const names = new Map();
  for (const id of ids) {
    const p = S.people.get(id);
    const member = (S.members.get(m.conversation) || []).find((u) => u.id === id);
    const name = (member && member.name) || (p && p.name);
    if (name) names.set(name, id);
  }
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of m.text.matchAll(NAME)) {
    let name = match[1];
    while (name && !names.has(name) && /[.-]$/.test(name)) name = name.slice(0, -1);
    if (!names.has(name)) continue;
    if (match.index > last) frag.append(linkify(m.text.slice(last, match.index)));
    const mine = names.get(name) === S.me.id;
    frag.append(h("span", { class: mine ? "mention me" : "mention", text: `@${name}` }));
    last = match.index + name.length + 1;
  }
  if (last < m.text.length) frag.append(linkify(m.text.slice(last)));
  return frag;
}
