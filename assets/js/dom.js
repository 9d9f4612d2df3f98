// dom: small DOM-building helpers shared by the UI modules. SECURITY: everything here builds
// nodes with createElement / textContent; no function in this client assigns innerHTML, so user
// text (messages, names, titles) can never become markup.

/** $("id") → the element with that id. */
export const $ = (id) => document.getElementById(id);

/**
 * Builds an element. `props`: `class`, `text` (textContent), `attrs` (setAttribute), `on`
 * (event listeners), anything else is assigned as a property. Children: nodes or strings
 * (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "attrs") for (const [a, av] of Object.entries(v)) el.setAttribute(a, av);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** An icon from the sprite in index.html (`<symbol id="i-NAME">`). */
export function icon(name, cls = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", cls);
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

/** The avatar colours, as the server names them (`color` of a user; default palette[id % 12]). */
export const PALETTE = ["red", "orange", "amber", "lime", "green", "teal", "cyan", "blue", "indigo", "violet", "pink", "slate"];

/**
 * Avatar: a coloured circle with the first letter of `name`. `color` is a palette name (a
 * person's chosen colour); without one (groups) the colour is derived from the name.
 */
export function avatar(name, cls = "avatar", color) {
  const el = h("span", { class: cls, attrs: { "aria-hidden": "true" } });
  setAvatar(el, name, color);
  return el;
}

export function setAvatar(el, name, color) {
  const first = Array.from(String(name || "?").trim())[0] || "?";
  el.textContent = first.toUpperCase();
  if (PALETTE.includes(color)) {
    el.dataset.color = color;
    return;
  }
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  el.dataset.color = PALETTE[hash % PALETTE.length];
}

// http(s) URLs; trailing punctuation that usually ends a sentence is not part of the link.
const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?)\]}'"»”’。，；：！？）]+$/u;

/**
 * The message text as nodes: plain text nodes, with http/https URLs turned into links
 * (built with the DOM, rel="noopener noreferrer", target=_blank). Any other scheme stays text.
 */
export function linkify(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    let raw = m[0];
    const trail = raw.match(TRAILING);
    if (trail) raw = raw.slice(0, -trail[0].length);
    let url = null;
    try {
      url = new URL(raw);
    } catch {
      url = null;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) continue;
    if (m.index > last) frag.append(document.createTextNode(text.slice(last, m.index)));
    const a = document.createElement("a");
    a.href = url.href;
    a.textContent = raw;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    frag.append(a);
    last = m.index + raw.length;
  }
  if (last < text.length) frag.append(document.createTextNode(text.slice(last)));
  return frag;
}

/**
 * Makes `parent`'s children match `items` (each with a unique `key`), reusing the element made
 * earlier for a key: `make(item)` creates one, `update(el, item)` refreshes it. Elements whose
 * key is gone are removed. Reuse keeps focus, scroll anchors and transitions stable.
 */
export function reconcile(parent, items, make, update) {
  const old = parent._keyed || new Map();
  const next = new Map();
  let ref = parent.firstChild;
  for (const it of items) {
    if (next.has(it.key)) continue; // a key twice would leave an element no later call removes
    let el = old.get(it.key);
    if (!el) el = make(it);
    update(el, it);
    next.set(it.key, el);
    if (el === ref) ref = ref.nextSibling;
    else parent.insertBefore(el, ref);
  }
  for (const [k, el] of old) if (!next.has(k)) el.remove();
  parent._keyed = next;
}

/** Empties a keyed container. */
export function clearKeyed(parent) {
  parent.replaceChildren();
  parent._keyed = new Map();
}

/** A short message at the bottom of the screen. */
export function toast(text, kind = "info") {
  const box = $("toasts");
  const el = h("div", { class: `toast ${kind}`, text, attrs: { role: "status" } });
  box.append(el);
  setTimeout(() => el.classList.add("out"), 4000);
  setTimeout(() => el.remove(), 4500);
}

/** Random id for client_id: crypto.randomUUID exists only in secure contexts (not plain-HTTP LAN). */
export function randomId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
