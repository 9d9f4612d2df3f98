// admin: owns the administration screen (admins only; the shield button in the sidebar's footer,
// URL #/admin), a full-screen page over the chat with three tabs: People (create an account,
// the accounts with last seen, disable/enable, reset a password, make or revoke admin),
// Joining (the registration mode, invite links: create, copy, revoke) and Server (status and a
// backup download). Every action is a call to /api/admin/ (api.js); the server checks that the
// caller is an admin and writes the audit log. User text goes in through textContent.

import * as api from "./api.js";
import { $, h, icon, avatar, toast, clearKeyed, reconcile } from "./dom.js";
import { t, relTime, fullTime, locale } from "./i18n.js";
import * as store from "./store.js";
import { S } from "./store.js";
import { confirm } from "./dialogs.js";

const page = $("admin");
const TABS = ["users", "access", "server"];
let tab = "users";
/** The last lists from the server. */
let users = [];
let invites = [];
let registration = null;
let status = null;
/** Renders relative times again while the screen is open. */
let ticker = null;

/** Localized text for a failed call. */
function errorText(r) {
  const code = api.errorCode(r);
  if (code === "forbidden") return t("admin.err.forbidden");
  const key = `err.${code}`;
  const s = t(key);
  return s === key ? (r.data && r.data.message) || t("err.generic", { code }) : s;
}

/** Copies `text`; over plain http (no Clipboard API) through the selected input `input`. */
async function copy(text, input) {
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else {
      input.focus();
      input.select();
      if (!document.execCommand("copy")) throw new Error("copy refused");
    }
    toast(t("admin.copied"));
  } catch {
    input.focus();
    input.select();
    toast(t("admin.copyByHand"));
  }
}

// ---- open, close, tabs ----------------------------------------------------------------------

/** Opens the screen (pushes #/admin so Back closes it). */
export function open() {
  if (location.hash !== "#/admin") history.pushState({ chatd: true, admin: true }, "", "#/admin");
  show();
}

function show() {
  if (!S.me || !S.me.admin) {
    page.hidden = true;
    return;
  }
  if (!page.hidden) return;
  page.hidden = false;
  $("app").setAttribute("aria-hidden", "true");
  $("app").inert = true;
  selectTab(tab, false);
  $("admin-title").focus();
  clearInterval(ticker);
  ticker = setInterval(() => (tab === "users" ? renderUsers() : tab === "access" ? renderInvites() : null), 30000);
}

function hide() {
  if (page.hidden) return;
  page.hidden = true;
  $("app").removeAttribute("aria-hidden");
  $("app").inert = false;
  clearInterval(ticker);
  $("btn-admin").focus();
}

/** Back to the chat. */
function close() {
  if (history.state && history.state.admin) history.back();
  else {
    history.replaceState(null, "", location.pathname);
    hide();
  }
}

/** Follows the URL (reload on #/admin, Back and Forward). */
export function route() {
  if (location.hash === "#/admin") show();
  else hide();
}
window.addEventListener("popstate", route);

function selectTab(name, focus = true) {
  tab = name;
  for (const n of TABS) {
    const b = $(`admin-tab-${n}`);
    b.setAttribute("aria-selected", String(n === name));
    b.tabIndex = n === name ? 0 : -1;
    $(`admin-${n}`).hidden = n !== name;
  }
  if (focus) $(`admin-tab-${name}`).focus();
  if (name === "users") loadUsers();
  else if (name === "access") loadAccess();
  else loadStatus();
}

$("admin-back").addEventListener("click", close);
for (const n of TABS) $(`admin-tab-${n}`).addEventListener("click", () => selectTab(n));
$("admin-tabs").addEventListener("keydown", (e) => {
  const i = TABS.indexOf(tab);
  if (e.key === "ArrowRight") selectTab(TABS[(i + 1) % TABS.length]);
  else if (e.key === "ArrowLeft") selectTab(TABS[(i + TABS.length - 1) % TABS.length]);
  else if (e.key === "Home") selectTab(TABS[0]);
  else if (e.key === "End") selectTab(TABS[TABS.length - 1]);
  else return;
  e.preventDefault();
});
page.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !document.querySelector("dialog[open]")) close();
});

/** Re-translates what the screen shows (language switch). */
export function relabel() {
  if (page.hidden) return;
  clearKeyed($("admin-user-list"));
  renderUsers();
  renderAccess();
  renderInvites();
  renderStatus();
}

// ---- people -------------------------------------------------------------------------------

async function loadUsers() {
  const r = await api.admin.users();
  $("admin-users-error").textContent = r.ok ? "" : errorText(r);
  if (!r.ok) return;
  users = r.data.users;
  for (const u of users) store.rememberPerson(u);
  renderUsers();
}

function lastSeenText(u) {
  if (u.online) return t("admin.users.online");
  if (u.last_seen === null || u.last_seen === undefined) return t("admin.users.never");
  return t("admin.users.seen", { when: relTime(u.last_seen) });
}

function renderUsers() {
  const q = $("admin-user-filter").value.trim().toLocaleLowerCase();
  const shown = users
    .filter((u) => !q || u.name.toLocaleLowerCase().includes(q) || (u.display_name || "").toLocaleLowerCase().includes(q))
    .sort((a, b) => Number(a.disabled) - Number(b.disabled) || (b.last_seen || 0) - (a.last_seen || 0) || a.name.localeCompare(b.name));
  $("admin-user-count").textContent = `(${users.length})`;
  reconcile($("admin-user-list"), shown.map((u) => ({ key: u.id, u })), makeUser, updateUser);
}

function makeUser() {
  const li = h("li", { class: "admin-row" });
  const av = avatar("", "avatar");
  const name = h("strong", { class: "row-name" });
  const account = h("span", { class: "muted small row-account" });
  const badges = h("span", { class: "badges" });
  const seen = h("span", { class: "small row-seen" });
  const created = h("span", { class: "muted small" });
  const actions = h("div", { class: "row-actions" });
  li.append(
    av,
    h("div", { class: "row-main" }, h("div", { class: "row-title" }, name, account, badges), h("div", { class: "row-sub" }, seen, created)),
    actions,
  );
  Object.assign(li, { _av: av, _name: name, _account: account, _badges: badges, _seen: seen, _created: created, _actions: actions });
  return li;
}

function badge(text, kind) {
  return h("span", { class: `tag ${kind}`, text });
}

function actionButton(label, onClick, kind = "") {
  return h("button", { type: "button", class: `btn small ${kind}`, text: label, on: { click: onClick } });
}

function updateUser(li, { u }) {
  const shown = u.display_name || u.name;
  const self = S.me && u.id === S.me.id;
  li.classList.toggle("disabled", u.disabled);
  li.dataset.name = u.name;
  li._av.replaceWith((li._av = avatar(shown, "avatar", u.color)));
  li._name.textContent = shown;
  li._account.textContent = u.display_name ? `@${u.name}` : "";
  li._badges.replaceChildren(
    ...[
      self && badge(t("info.you"), "you"),
      u.admin && badge(t("admin.users.admin"), "is-admin"),
      u.disabled && badge(t("admin.users.disabled"), "off"),
    ].filter(Boolean),
  );
  li._seen.textContent = lastSeenText(u);
  li._seen.classList.toggle("online", !!u.online);
  li._seen.title = u.last_seen ? fullTime(u.last_seen) : "";
  li._created.textContent = t("admin.users.created", { date: new Intl.DateTimeFormat(locale(), { dateStyle: "medium" }).format(u.created) });
  const buttons = [actionButton(t("admin.users.reset"), () => resetPassword(u))];
  if (!self || u.admin) {
    buttons.push(actionButton(t(u.admin ? "admin.users.revoke" : "admin.users.make"), () => setAdmin(u, !u.admin)));
  }
  if (!self) {
    buttons.push(
      u.disabled
        ? actionButton(t("admin.users.enable"), () => setDisabled(u, false))
        : actionButton(t("admin.users.disable"), () => setDisabled(u, true), "danger"),
    );
  }
  for (const b of buttons) b.setAttribute("aria-label", `${b.textContent}: ${shown}`);
  li._actions.replaceChildren(...buttons);
}

/** Replaces user `u` in the list with the server's new copy. */
function replaceUser(u) {
  users = users.map((x) => (x.id === u.id ? { ...x, ...u } : x));
  renderUsers();
}

async function setDisabled(u, disabled) {
  const shown = u.display_name || u.name;
  if (disabled && !(await confirm(t("admin.users.disableConfirm", { name: shown }), t("admin.users.disable")))) return;
  const r = await api.admin.setDisabled(u.id, disabled);
  if (!r.ok) return toast(errorText(r), "error");
  replaceUser(r.data.user);
  toast(t(disabled ? "admin.users.disabledDone" : "admin.users.enabledDone", { name: shown }));
}

async function setAdmin(u, flag) {
  const shown = u.display_name || u.name;
  const self = S.me && u.id === S.me.id;
  const question = flag ? "admin.users.makeConfirm" : self ? "admin.users.revokeSelfConfirm" : "admin.users.revokeConfirm";
  if (!(await confirm(t(question, { name: shown }), t(flag ? "admin.users.make" : "admin.users.revoke")))) return;
  const r = await api.admin.setAdmin(u.id, flag);
  if (!r.ok) return toast(api.errorCode(r) === "last_admin" ? t("admin.err.lastAdmin") : errorText(r), "error");
  replaceUser(r.data.user);
  if (self && !flag) {
    S.me = { ...S.me, admin: false };
    store.emit("me");
    close();
  }
}

async function resetPassword(u) {
  const shown = u.display_name || u.name;
  if (!(await confirm(t("admin.users.resetConfirm", { name: shown }), t("admin.users.reset")))) return;
  const r = await api.admin.resetPassword(u.id);
  if (!r.ok) return toast(errorText(r), "error");
  showSecret(t("admin.users.resetTitle", { name: shown }), t("admin.users.resetText", { name: u.name }), r.data.password);
}

/** The one-time password dialog. */
function showSecret(title, text, secret) {
  $("secret-title").textContent = title;
  $("secret-text").textContent = text;
  $("secret-value").value = secret;
  $("dlg-secret").showModal();
  $("secret-value").select();
}
$("secret-copy").addEventListener("click", () => copy($("secret-value").value, $("secret-value")));

$("admin-user-filter").addEventListener("input", renderUsers);

$("admin-create").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("create-name").value.trim();
  const password = $("create-password").value;
  const err = $("admin-create-error");
  $("admin-created").hidden = true;
  if (!name) return $("create-name").focus();
  if (password && password.length < 8) {
    err.textContent = t("err.invalid_password");
    return $("create-password").focus();
  }
  const body = { name, admin: $("create-admin").checked };
  if (password) body.password = password;
  $("create-submit").disabled = true;
  const r = await api.admin.createUser(body);
  $("create-submit").disabled = false;
  if (!r.ok) {
    err.textContent = api.errorCode(r) === "name_taken" ? (r.data && r.data.message) || t("err.name_taken") : errorText(r);
    return;
  }
  err.textContent = "";
  $("create-name").value = "";
  $("create-password").value = "";
  $("create-admin").checked = false;
  const generated = r.data.password;
  $("admin-created-text").textContent = t(generated ? "admin.create.doneGenerated" : "admin.create.done", { name: r.data.user.name });
  $("admin-created-pw-row").hidden = !generated;
  $("admin-created-pw").value = generated || "";
  $("admin-created").hidden = false;
  users = [...users.filter((u) => u.id !== r.data.user.id), r.data.user];
  renderUsers();
});
$("admin-created-copy").addEventListener("click", () => copy($("admin-created-pw").value, $("admin-created-pw")));

// ---- joining: registration and invites ------------------------------------------------------

async function loadAccess() {
  const [s, i] = await Promise.all([api.admin.settings(), api.admin.invites()]);
  $("admin-reg-error").textContent = s.ok ? "" : errorText(s);
  $("admin-invite-error").textContent = i.ok ? "" : errorText(i);
  if (s.ok) registration = s.data.registration;
  if (i.ok) invites = i.data.invites;
  if (!users.length) {
    // Names of the invites' creators.
    const u = await api.admin.users();
    if (u.ok) users = u.data.users;
  }
  renderAccess();
  renderInvites();
}

function renderAccess() {
  const open = registration === "open";
  $("admin-reg-state").textContent = registration ? t(open ? "setup.regOpen" : "setup.regClosed") : "";
  $("admin-reg-toggle").textContent = t(open ? "setup.close" : "setup.open");
  $("admin-reg-toggle").hidden = !registration;
}

$("admin-reg-toggle").addEventListener("click", async () => {
  const next = registration === "open" ? "closed" : "open";
  $("admin-reg-toggle").disabled = true;
  const r = await api.admin.setRegistration(next);
  $("admin-reg-toggle").disabled = false;
  $("admin-reg-error").textContent = r.ok ? "" : errorText(r);
  if (r.ok) registration = r.data.registration;
  renderAccess();
});

const inviteUrl = (i) => new URL(i.url || `/#invite=${i.code}`, location.origin).href;

function renderInvites() {
  const now = Date.now();
  const live = invites.filter((i) => i.expires > now && i.uses_left > 0).sort((a, b) => b.created - a.created);
  $("admin-invite-empty").hidden = live.length > 0;
  $("admin-invite-list").replaceChildren(
    ...live.map((i) => {
      const by = users.find((u) => u.id === i.created_by);
      const link = h("input", { class: "invite-url", readOnly: true, value: inviteUrl(i), attrs: { "aria-label": t("admin.invites.link") } });
      const copyBtn = h("button", { type: "button", class: "btn small", on: { click: () => copy(link.value, link) } }, icon("copy", "icon small"), h("span", { text: t("admin.copy") }));
      const revoke = h("button", { type: "button", class: "btn small danger", text: t("admin.invites.revoke"), on: { click: () => revokeInvite(i) } });
      const facts = [
        t("admin.invites.usesLeft", { n: i.uses_left }),
        t("admin.invites.expires", { when: new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short" }).format(i.expires) }),
        by ? t("admin.invites.by", { name: by.display_name || by.name }) : "",
      ].filter(Boolean);
      return h(
        "li",
        { class: "admin-row invite" },
        h("div", { class: "row-main" }, h("div", { class: "copy-row" }, link, copyBtn), h("div", { class: "muted small", text: facts.join(" · ") })),
        h("div", { class: "row-actions" }, revoke),
      );
    }),
  );
}

async function revokeInvite(i) {
  if (!(await confirm(t("admin.invites.revokeConfirm"), t("admin.invites.revoke")))) return;
  const r = await api.admin.deleteInvite(i.code);
  if (!r.ok && r.status !== 404) return toast(errorText(r), "error");
  invites = invites.filter((x) => x.code !== i.code);
  if ($("invite-link").value === inviteUrl(i)) $("admin-invite-new").hidden = true;
  renderInvites();
}

$("admin-invite-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const uses = Number($("invite-uses").value);
  const err = $("admin-invite-error");
  if (!Number.isInteger(uses) || uses < 1 || uses > 1000) {
    err.textContent = t("admin.invites.usesRange");
    return $("invite-uses").focus();
  }
  $("invite-submit").disabled = true;
  const r = await api.admin.createInvite(uses, Number($("invite-expiry").value));
  $("invite-submit").disabled = false;
  err.textContent = r.ok ? "" : errorText(r);
  if (!r.ok) return;
  const inv = { created_by: S.me.id, created: Date.now(), ...r.data.invite };
  invites = [inv, ...invites.filter((x) => x.code !== inv.code)];
  $("invite-link").value = inviteUrl(inv);
  $("admin-invite-new").hidden = false;
  renderInvites();
  $("invite-link").select();
});
$("invite-copy").addEventListener("click", () => copy($("invite-link").value, $("invite-link")));

// ---- server ---------------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return t("admin.status.unknown");
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toLocaleString(locale(), { maximumFractionDigits: v < 10 && i ? 1 : 0 })} ${units[i]}`;
}

function duration(secs) {
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  if (d) return t("admin.status.dh", { d, h: hh });
  if (hh) return t("admin.status.hm", { h: hh, m });
  return t("admin.status.m", { m });
}

async function loadStatus() {
  const r = await api.admin.status();
  $("admin-status-error").textContent = r.ok ? "" : errorText(r);
  if (r.ok) status = r.data;
  renderStatus();
}

function renderStatus() {
  if (!status) return;
  const n = (v) => Number(v).toLocaleString(locale());
  const rows = [
    ["version", status.version],
    ["uptime", duration(status.uptime_secs)],
    ["connections", n(status.connections)],
    ["online", n(status.users_online)],
    ["users", n(status.users)],
    ["messages", n(status.messages)],
    ["database", bytes(status.database_bytes)],
    ["disk", bytes(status.disk_free_bytes)],
    ["dataDir", status.data_dir],
  ];
  $("admin-status").replaceChildren(
    ...rows.map(([k, v]) => h("div", { class: `stat stat-${k}` }, h("dt", { text: t(`admin.status.${k}`) }), h("dd", { text: String(v) }))),
  );
}

$("admin-status-refresh").addEventListener("click", loadStatus);
