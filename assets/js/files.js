// files: owns attachments in the web client (docs/PROTOCOL.md, "Files"). The composer's staged
// files (attach button, drag-and-drop onto the conversation, paste), the upload of a queued
// message's files (XHR POST /api/files with progress, cancel and retry; each file uploaded once,
// its id remembered in the outbox entry so a retry or a reload never uploads it again), the
// files' bytes kept in IndexedDB while the message waits in the outbox (so it survives a reload
// or an offline stretch), and how attachments show in a bubble: images as thumbnails whose box
// has the image's aspect ratio before it loads, other files as name, size, type and a download
// link; plus the image viewer (Esc closes, arrow keys step through the conversation's images).
// It calls store.js (outbox entries), api.js (the limits in /api/server) and chat.js (send once every file of an entry has its id);
// ui.js calls its hooks. File names are user text: set with textContent / attributes only.

import { $, h, icon, toast } from "./dom.js";
import { t, locale, lang } from "./i18n.js";
import * as store from "./store.js";
import * as api from "./api.js";
import { S, on, emit } from "./store.js";

const IMAGE = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const THUMB_W = 240; // widest a thumbnail is shown in a bubble (CSS px)
const THUMB_H = 240;
/** Largest image shown in a bubble from its full bytes when it has no thumbnail. */
const FULL_MAX_PIXELS = 16e6;
/** Upload errors worth trying again later by themselves (the others need the user). */
const TRANSIENT = new Set(["network", "rate_limited", "storage_full", "storage_error", "internal", "http_502", "http_503", "http_504"]);

/** Hooks set by chat.js: kick() sends entries whose files are all uploaded. */
export const hooks = { kick: () => {}, online: () => false };

// ---- sizes and names --------------------------------------------------------------------------

/** "1.2 MB", "340 KB", "12 B" (decimal units, the locale's digits). */
export function formatSize(n) {
  const fmt = (v, d) => v.toLocaleString(locale(), { maximumFractionDigits: d });
  if (n < 1000) return `${fmt(n, 0)} B`;
  if (n < 1e6) return `${fmt(n / 1e3, n < 1e4 ? 1 : 0)} KB`;
  if (n < 1e9) return `${fmt(n / 1e6, n < 1e7 ? 1 : 0)} MB`;
  return `${fmt(n / 1e9, 1)} GB`;
}

/** A short type label: "PDF", "PNG", else the subtype, else the extension. */
export function typeLabel(mime, name) {
  const sub = (mime || "").split("/")[1] || "";
  const ext = (name.match(/\.([A-Za-z0-9]{1,8})$/) || [])[1] || "";
  if (sub && !/octet-stream|^x-/.test(sub)) return sub.replace(/^vnd\..*/, ext || sub).toUpperCase().slice(0, 12);
  return (ext || t("files.file")).toUpperCase();
}

/** The list preview of a message without text: "📎 report.pdf", "[Image]", "📎 3 files". */
export function previewText(atts) {
  if (!atts || !atts.length) return "";
  if (atts.length > 1) return `📎 ${t("files.count", { n: atts.length })}`;
  return IMAGE.has(atts[0].mime) ? t("files.imagePreview") : `📎 ${atts[0].name}`;
}

const isImage = (a) => IMAGE.has(a.mime) && a.width > 0 && a.height > 0;

// ---- IndexedDB: the bytes of files waiting in the outbox -----------------------------------

let dbp = null;
function db() {
  if (!dbp) {
    dbp = new Promise((resolve, reject) => {
      const req = indexedDB.open("chatd-files", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("blobs");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    dbp.catch(() => (dbp = null));
  }
  return dbp;
}

async function idb(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const tx = d.transaction("blobs", mode);
    const req = fn(tx.objectStore("blobs"));
    tx.oncomplete = () => resolve(req ? req.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

const blobKey = (clientId, key) => `u${S.me.id}/${clientId}/${key}`;
/** Blobs of this tab's entries, so an upload need not wait for IndexedDB. */
const mem = new Map();

async function keepBlob(k, blob) {
  mem.set(k, blob);
  try {
    await idb("readwrite", (os) => os.put(blob, k));
  } catch {
    // Private mode or quota: the message still goes out from memory while this tab lives.
  }
}

async function getBlob(k) {
  if (mem.has(k)) return mem.get(k);
  try {
    return (await idb("readonly", (os) => os.get(k))) || null;
  } catch {
    return null;
  }
}

function dropBlob(k) {
  mem.delete(k);
  idb("readwrite", (os) => os.delete(k)).catch(() => {});
}

// ---- the composer's staged files -----------------------------------------------------------

/** conversation key → [{key, file}] staged in the composer (kept per conversation, like drafts). */
const staged = new Map();
let curKey = "";
let onChange = () => {};

const stagedNow = () => staged.get(curKey) || [];

/** How many files are staged for the open conversation. */
export const count = () => stagedNow().length;

/** The open conversation changed (ui.js): show its staged files. */
export function showFor(key) {
  curKey = key;
  renderStrip();
}

/** Adds files (from the picker, a drop or a paste) to the composer, checking the server's limits. */
export function addFiles(list) {
  const files = Array.from(list || []).filter((f) => f instanceof Blob);
  if (!files.length || !curKey) return;
  const max = S.limits.max_upload_bytes || Infinity;
  const maxN = S.limits.max_attachments || 10;
  const now = stagedNow().slice();
  for (const f of files) {
    if (f.size > max) {
      toast(t("files.tooLarge", { name: f.name || t("files.pasted"), max: formatSize(max) }), "error");
      continue;
    }
    if (now.length >= maxN) {
      toast(t("files.tooMany", { n: maxN }), "error");
      break;
    }
    // A pasted screenshot has a generic name ("image.png"): give it a readable, unique one.
    let name = f.name || "";
    if (!name || (f.lastModified && /^image\.(png|jpe?g|gif|webp)$/i.test(name) && f._pasted)) name = pastedName(f.type);
    now.push({ key: Math.random().toString(36).slice(2, 10), file: f, name });
  }
  staged.set(curKey, now);
  renderStrip();
  $("strip-sr").textContent = t("files.staged", { n: now.length });
}

function pastedName(type) {
  const d = new Date();
  const p = (n) => String(n).padStart(2, "0");
  const ext = (type.split("/")[1] || "png").replace("jpeg", "jpg");
  return `screenshot-${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}.${ext}`;
}

function removeStaged(key) {
  staged.set(curKey, stagedNow().filter((s) => s.key !== key));
  renderStrip();
  $("input").focus();
}

function renderStrip() {
  const strip = $("att-strip");
  const items = stagedNow();
  strip.hidden = !items.length;
  strip.replaceChildren(
    ...items.map((s) =>
      h(
        "li",
        { class: "chip" },
        icon(IMAGE.has(s.file.type) ? "image" : "file", "icon small"),
        h("span", { class: "chip-name", text: s.name, title: s.name }),
        h("span", { class: "chip-size muted", text: formatSize(s.file.size) }),
        h(
          "button",
          { type: "button", class: "icon-btn tiny", attrs: { "aria-label": t("files.remove", { name: s.name }), title: t("files.remove", { name: s.name }) }, on: { click: () => removeStaged(s.key) } },
          icon("x", "icon small"),
        ),
      ),
    ),
  );
  onChange();
}

/**
 * Takes the staged files of the open conversation for a message being sent: stores their bytes
 * (IndexedDB) under the message's client_id and returns the outbox's `files` list
 * [{key, name, size, mime}] (no `id` yet: the upload adds it).
 */
export function take(clientId) {
  const items = stagedNow();
  staged.delete(curKey);
  renderStrip();
  return items.map((s) => {
    keepBlob(blobKey(clientId, s.key), s.file);
    return { key: s.key, name: s.name, size: s.file.size, mime: s.file.type || "application/octet-stream" };
  });
}

// ---- uploading the files of outbox entries -------------------------------------------------

/** "client_id/key" → {xhr, loaded, total} of uploads running in this tab. */
const running = new Map();
/** "client_id/key" → error code of the last failed attempt (shown with a Retry button). */
const failed = new Map();
/** DOM of pending files: "client_id/key" → {bar, label, row}. */
const views = new Map();

const fkey = (clientId, key) => `${clientId}/${key}`;

/** True when every file of `entry` has its id: the `send` may go. */
export const ready = (entry) => !entry.files || entry.files.every((f) => f.id);

/** The `attachments` of a `send` frame for `entry`. */
export const ids = (entry) => entry.files.map((f) => f.id);

/** What an acknowledged entry's message carries: the uploaded files' descriptions. */
export const described = (entry) => (entry && entry.files ? entry.files.map((f) => f.file) : undefined);

/**
 * Starts the uploads of every outbox entry that still has a file without an id (not those
 * running, or failed for a reason only the user can change). Called when an entry is added,
 * when the connection comes back, and on Retry.
 */
export function pump() {
  // Offline, the files wait (shown as waiting); the connection coming back starts them.
  if (!S.me || !hooks.online()) return;
  for (const e of S.outbox) {
    if (!e.files) continue;
    for (const f of e.files) {
      const k = fkey(e.client_id, f.key);
      if (f.id || running.has(k) || failed.has(k)) continue;
      upload(e.client_id, f);
    }
  }
}

let againTimer = null;

/** Forgets failures that may pass by themselves (network, server busy) and tries those again. */
function retryTransient() {
  clearTimeout(againTimer);
  againTimer = null;
  for (const [k, code] of failed) if (TRANSIENT.has(code)) failed.delete(k);
  pump();
}

async function upload(clientId, f) {
  const k = fkey(clientId, f.key);
  running.set(k, { xhr: null, loaded: 0, total: f.size });
  failed.delete(k);
  paint(clientId, f);
  // One tab uploads a file: others (sharing the outbox) skip it while the lock is held.
  const work = async () => {
    const blob = await getBlob(blobKey(clientId, f.key));
    if (!blob) return fail(clientId, f, "lost");
    const entry = S.outbox.find((e) => e.client_id === clientId);
    const cur = entry && entry.files.find((x) => x.key === f.key);
    if (!cur || cur.id) return done(k);
    await new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      running.get(k).xhr = xhr;
      xhr.open("POST", `/api/files?name=${encodeURIComponent(f.name)}`);
      xhr.responseType = "json";
      xhr.upload.onprogress = (ev) => {
        const r = running.get(k);
        if (!r) return;
        r.loaded = ev.loaded;
        r.total = ev.lengthComputable ? ev.total : f.size;
        paint(clientId, f);
      };
      xhr.onload = () => {
        const body = xhr.response;
        if (xhr.status === 201 && body && body.file && body.file.id) {
          store.outboxUpdate(clientId, (e) => {
            const x = e.files && e.files.find((y) => y.key === f.key);
            if (x) Object.assign(x, { id: body.file.id, file: body.file });
          });
          dropBlob(blobKey(clientId, f.key));
          done(k);
          hooks.kick();
        } else fail(clientId, f, (body && body.error) || `http_${xhr.status}`);
        resolve();
      };
      xhr.onerror = () => {
        fail(clientId, f, "network");
        resolve();
      };
      xhr.onabort = () => {
        done(k);
        resolve();
      };
      xhr.send(blob);
    });
  };
  try {
    if (navigator.locks) await navigator.locks.request(`chatd-upload-${k}`, { ifAvailable: true }, (lock) => (lock ? work() : done(k)));
    else await work();
  } catch {
    fail(clientId, f, "network");
  }
}

function done(k) {
  running.delete(k);
  emit("outbox");
}

function fail(clientId, f, code) {
  const k = fkey(clientId, f.key);
  running.delete(k);
  failed.set(k, code);
  emit("outbox");
  paint(clientId, f);
  // A busy server or a dropped connection: try again by itself in a while (and at reconnect).
  if (TRANSIENT.has(code) && !againTimer) againTimer = setTimeout(retryTransient, 5000 + Math.random() * 3000);
}

/** Cancel: stops the upload and removes the file from the message (the message goes if empty). */
function cancel(clientId, key) {
  const k = fkey(clientId, key);
  const r = running.get(k);
  if (r && r.xhr) r.xhr.abort();
  running.delete(k);
  failed.delete(k);
  dropBlob(blobKey(clientId, key));
  let empty = false;
  store.outboxUpdate(clientId, (e) => {
    e.files = e.files.filter((f) => f.key !== key);
    empty = !e.files.length && !e.text.trim();
  });
  if (empty) store.outboxTake(clientId);
  else hooks.kick();
  $("strip-sr").textContent = t("files.canceled");
}

function retry(clientId, key) {
  failed.delete(fkey(clientId, key));
  pump();
}

/** Forgets the bytes kept for an entry (acknowledged, or refused for good). */
export function forget(entry) {
  if (entry && entry.files) for (const f of entry.files) dropBlob(blobKey(entry.client_id, f.key));
}

// ---- attachments in a bubble ---------------------------------------------------------------

/** A signature of what the attachments block of `m` shows (ui.js rebuilds it when it changes). */
export function signature(m) {
  if (m.pending && m.pending.files) return "p" + m.pending.files.map((f) => f.key + (f.id ? "+" : "")).join(",");
  return m.attachments ? m.attachments.map((a) => a.id).join(",") : "";
}

/** The attachments block of message `m` (null when it has none). */
export function render(m) {
  if (m.pending && m.pending.files && m.pending.files.length) {
    return h("div", { class: "atts" }, ...m.pending.files.map((f) => pendingRow(m.pending.client_id, f)));
  }
  if (!m.attachments || !m.attachments.length) return null;
  return h("div", { class: "atts" }, ...m.attachments.map((a) => (isImage(a) ? imageBox(a) : fileRow(a))));
}

/** Display size of a thumbnail: the image's aspect ratio within THUMB_W × THUMB_H. */
function fit(w, hgt) {
  const s = Math.min(1, THUMB_W / w, THUMB_H / hgt);
  return [Math.max(48, Math.round(w * s)), Math.max(32, Math.round(hgt * s))];
}

function imageBox(a) {
  const [w, hh] = fit(a.width, a.height);
  const img = h("img", { alt: a.name, decoding: "async", loading: "lazy", width: w, height: hh, draggable: false });
  img.addEventListener("load", () => btn.classList.add("loaded"));
  img.addEventListener("error", () => {
    // No thumbnail (the server could not make one): the image itself, when it is of a size a
    // browser decodes without trouble; else a placeholder (the viewer and download still work).
    if (!img._full && a.width * a.height <= FULL_MAX_PIXELS) {
      img._full = true;
      img.src = `/files/${encodeURIComponent(a.id)}`;
    } else btn.classList.add("broken");
  });
  img.src = `/files/${encodeURIComponent(a.id)}/thumb`;
  const btn = h("button", { type: "button", class: "att-img", attrs: { "aria-label": t("files.open", { name: a.name }), title: a.name }, on: { click: () => openViewer(a.id) } }, img);
  // The box has its size before the thumbnail arrives: nothing below it moves when it loads.
  btn.style.width = `${w}px`;
  btn.style.aspectRatio = `${w} / ${hh}`;
  btn._att = a;
  btn.dataset.id = a.id;
  return btn;
}

function fileRow(a) {
  const meta = `${formatSize(a.size)} · ${typeLabel(a.mime, a.name)}`;
  const link = h(
    "a",
    { class: "att-file", href: `/files/${encodeURIComponent(a.id)}?download=1`, download: a.name, attrs: { "aria-label": t("files.download", { name: a.name, meta }) } },
    h("span", { class: "att-icon" }, icon(IMAGE.has(a.mime) ? "image" : "file")),
    h("span", { class: "att-body" }, h("span", { class: "att-name", text: a.name, title: a.name }), h("span", { class: "att-meta", text: meta })),
    icon("download", "icon small att-dl"),
  );
  return link;
}

function pendingRow(clientId, f) {
  const k = fkey(clientId, f.key);
  const bar = h("progress", { class: "att-bar", max: 1, value: 0, attrs: { "aria-label": t("files.progressOf", { name: f.name }) } });
  const label = h("span", { class: "att-meta" });
  const retryBtn = h("button", { type: "button", class: "btn tiny att-retry", text: t("files.retry"), hidden: true, on: { click: () => retry(clientId, f.key) } });
  const cancelBtn = h(
    "button",
    { type: "button", class: "icon-btn tiny att-cancel", attrs: { "aria-label": t("files.cancel", { name: f.name }), title: t("files.cancel", { name: f.name }) }, on: { click: () => cancel(clientId, f.key) } },
    icon("x", "icon small"),
  );
  const row = h(
    "div",
    { class: "att-file pending" },
    h("span", { class: "att-icon" }, icon(IMAGE.has(f.mime) ? "image" : "file")),
    h("span", { class: "att-body" }, h("span", { class: "att-name", text: f.name, title: f.name }), bar, label),
    retryBtn,
    cancelBtn,
  );
  row.dataset.key = f.key;
  views.set(k, { row, bar, label, retryBtn, cancelBtn });
  paint(clientId, f, views.get(k));
  return row;
}

/** Updates one pending file's progress bar and state. */
function paint(clientId, f, v = views.get(fkey(clientId, f.key))) {
  if (!v || (!v.row.isConnected && v.row.parentNode)) return;
  const k = fkey(clientId, f.key);
  const r = running.get(k);
  const err = failed.get(k);
  const entry = S.outbox.find((e) => e.client_id === clientId);
  const cur = (entry && entry.files && entry.files.find((x) => x.key === f.key)) || f;
  let state = "waiting";
  if (cur.id) state = "uploaded";
  else if (err) state = "failed";
  else if (r) state = "uploading";
  v.row.dataset.state = state;
  const frac = cur.id ? 1 : r && r.total ? Math.min(1, r.loaded / r.total) : 0;
  v.bar.value = frac;
  v.bar.hidden = state === "failed";
  const pct = Math.round(frac * 100).toLocaleString(locale());
  if (state === "failed") v.label.textContent = t("files.failed", { reason: t(`files.err.${err}`) === `files.err.${err}` ? err : t(`files.err.${err}`) });
  else if (state === "uploading") v.label.textContent = `${formatSize(r.loaded)} / ${formatSize(cur.size)} · ${pct}%`;
  else if (state === "uploaded") v.label.textContent = formatSize(cur.size);
  else v.label.textContent = `${formatSize(cur.size)} · ${t("files.waiting")}`;
  v.bar.setAttribute("aria-valuetext", `${pct}%`);
  v.retryBtn.hidden = state !== "failed";
  v.cancelBtn.hidden = state === "uploaded";
}

// ---- the viewer ----------------------------------------------------------------------------

let viewer = null;
let shown = [];
let at = 0;

function buildViewer() {
  const img = h("img", { class: "viewer-img", alt: "" });
  const name = h("p", { class: "viewer-name" });
  const pos = h("span", { class: "viewer-pos muted" });
  const dl = h("a", { class: "icon-btn", attrs: { "aria-label": t("files.downloadShort"), title: t("files.downloadShort") } }, icon("download"));
  const prev = h("button", { type: "button", class: "icon-btn viewer-prev", attrs: { "aria-label": t("files.prev"), title: t("files.prev") }, on: { click: () => step(-1) } }, icon("back"));
  const next = h("button", { type: "button", class: "icon-btn viewer-next", attrs: { "aria-label": t("files.next"), title: t("files.next") }, on: { click: () => step(1) } }, icon("back"));
  const close = h("button", { type: "button", class: "icon-btn", attrs: { "aria-label": t("dir.close"), title: t("dir.close") }, on: { click: () => viewer.close() } }, icon("x"));
  const dlg = h(
    "dialog",
    { class: "viewer", id: "viewer", attrs: { "aria-label": t("files.viewer") } },
    h("header", { class: "viewer-head" }, name, pos, dl, close),
    h("div", { class: "viewer-stage" }, prev, img, next),
  );
  dlg.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") step(-1);
    else if (e.key === "ArrowRight") step(1);
    else return;
    e.preventDefault();
  });
  dlg.addEventListener("click", (e) => {
    if (e.target === dlg || e.target.classList.contains("viewer-stage")) dlg.close();
  });
  dlg.addEventListener("close", () => {
    img.removeAttribute("src");
    const back = document.querySelector(`#msg-list .att-img[data-id="${CSS.escape(shown[at]?.id || "")}"]`);
    if (back) back.focus();
  });
  Object.assign(dlg, { _lang: lang, _img: img, _name: name, _pos: pos, _dl: dl, _prev: prev, _next: next });
  document.body.append(dlg);
  return dlg;
}

/** Opens the viewer on image `id`, with the open conversation's images to step through. */
export function openViewer(id) {
  shown = Array.from(document.querySelectorAll("#msg-list .att-img"), (b) => b._att).filter(Boolean);
  at = Math.max(0, shown.findIndex((a) => a.id === id));
  if (!shown.length) return;
  if (viewer && viewer._lang !== lang) {
    viewer.remove(); // built in another language: labels anew
    viewer = null;
  }
  if (!viewer) viewer = buildViewer();
  showAt();
  if (!viewer.open) viewer.showModal();
}

function step(d) {
  const n = at + d;
  if (n < 0 || n >= shown.length) return;
  at = n;
  showAt();
}

function showAt() {
  const a = shown[at];
  const v = viewer;
  v._img.alt = a.name;
  v._img.width = a.width;
  v._img.height = a.height;
  v._img.src = `/files/${encodeURIComponent(a.id)}`;
  v._name.textContent = a.name;
  v._pos.textContent = t("files.position", { i: at + 1, n: shown.length });
  v._dl.href = `/files/${encodeURIComponent(a.id)}?download=1`;
  v._dl.download = a.name;
  v._prev.disabled = at === 0;
  v._next.disabled = at === shown.length - 1;
  v.dataset.id = a.id;
}

// ---- wiring --------------------------------------------------------------------------------

/** Sets up the attach button, the file picker, drag-and-drop and paste. `changed()`: staged files changed. */
export function wire(changed) {
  onChange = changed;
  // The upload limits are in /api/server (not in welcome): a too large file is refused at once.
  api.server().then((info) => {
    if (info && info.max_upload_bytes) S.limits.max_upload_bytes = info.max_upload_bytes;
    if (info && info.max_attachments) S.limits.max_attachments = info.max_attachments;
  });
  const picker = $("file-pick");
  $("btn-attach").addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    addFiles(picker.files);
    picker.value = "";
    $("input").focus();
  });
  $("input").addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData ? e.clipboardData.files : []);
    if (!files.length) return;
    e.preventDefault(); // a pasted screenshot must not also paste its name as text
    for (const f of files) if (!f.name || /^image\.\w+$/i.test(f.name)) f._pasted = true;
    addFiles(files);
  });
  const zone = $("chat-main");
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  zone.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    zone.classList.add("dropping");
  });
  zone.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  zone.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dropping");
  });
  zone.addEventListener("drop", (e) => {
    depth = 0;
    zone.classList.remove("dropping");
    if (!hasFiles(e)) return;
    e.preventDefault();
    addFiles(e.dataTransfer.files);
    $("input").focus();
  });
  on("outbox", () => setTimeout(pump, 0));
  let was = false;
  on("conn", () => {
    const now = hooks.online();
    if (now && !was) retryTransient();
    was = now;
  });
  // Bytes of entries no tab has any more (acknowledged elsewhere, or the user logged out).
  setTimeout(sweep, 5000);
}

async function sweep() {
  try {
    const keys = await idb("readonly", (os) => os.getAllKeys());
    const live = new Set();
    for (const e of store.S.outbox) for (const f of e.files || []) live.add(blobKey(e.client_id, f.key));
    const mine = `u${S.me.id}/`;
    for (const k of keys) if (typeof k === "string" && k.startsWith(mine) && !live.has(k)) dropBlob(k);
  } catch {
    // No IndexedDB: nothing kept, nothing to sweep.
  }
}
