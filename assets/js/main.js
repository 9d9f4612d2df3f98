// main: the entry point. Translates the page, asks the server who is logged in, and shows
// either the log-in / create-account form or the chat (ui.js). Owns the auth form, the
// language pickers, the notification bell and log out.

import * as api from "./api.js";
import { $ } from "./dom.js";
import { t, lang, setLang, LANGS, translatePage } from "./i18n.js";
import * as ui from "./ui.js";
import * as chat from "./chat.js";
import * as store from "./store.js";
import { S } from "./store.js";
import * as notify from "./notify.js";
import { confirm } from "./dialogs.js";

const EXPIRED = "chatd.expired";
/** The last user logged in here: lets the app start from its cache while the server is down. */
const LAST_USER = "chatd.lastUser";
let started = false;
let mode = "login";

// ---- language -----------------------------------------------------------------------------

for (const sel of document.querySelectorAll(".lang-select")) {
  for (const [code, name] of Object.entries(LANGS)) {
    const o = document.createElement("option");
    o.value = code;
    o.textContent = name;
    sel.append(o);
  }
  sel.value = lang;
  sel.addEventListener("change", () => {
    setLang(sel.value);
    for (const other of document.querySelectorAll(".lang-select")) other.value = sel.value;
    setMode(mode);
    notify.renderButton();
    if (started) ui.relabel();
  });
}
translatePage();

// ---- log in / create account --------------------------------------------------------------

const KNOWN_ERRORS = new Set([
  "invalid_credentials",
  "account_disabled",
  "rate_limited",
  "registration_closed",
  "name_taken",
  "invalid_name",
  "invalid_password",
  "network",
]);

function setMode(m) {
  mode = m;
  const reg = m === "register";
  $("tab-login").setAttribute("aria-selected", String(!reg));
  $("tab-register").setAttribute("aria-selected", String(reg));
  $("auth-title").textContent = t(reg ? "auth.register.title" : "auth.login.title");
  $("auth-submit").textContent = t(reg ? "auth.submit.register" : "auth.submit.login");
  $("auth-password").autocomplete = reg ? "new-password" : "current-password";
  $("auth-hint").hidden = !reg;
}

function showAuth(notice = "") {
  $("boot").hidden = true;
  $("app").hidden = true;
  $("auth").hidden = false;
  if (sessionStorage.getItem("chatd.regClosed")) $("tab-register").hidden = true;
  setMode(mode);
  $("auth-error").textContent = notice;
  $("auth-name").focus();
}

$("tab-login").addEventListener("click", () => setMode("login"));
$("tab-register").addEventListener("click", () => setMode("register"));
// Arrow keys move between the two tabs (WAI-ARIA tabs pattern).
$("auth").querySelector(".tabs").addEventListener("keydown", (e) => {
  if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
  const next = mode === "login" && !$("tab-register").hidden ? "register" : "login";
  setMode(next);
  $(next === "login" ? "tab-login" : "tab-register").focus();
});

$("auth-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("auth-name").value.trim();
  const password = $("auth-password").value;
  const err = $("auth-error");
  if (!name) return $("auth-name").focus();
  if (!password) return $("auth-password").focus();
  if (mode === "register" && password.length < 8) {
    err.textContent = t("err.invalid_password");
    return;
  }
  err.textContent = "";
  $("auth-submit").disabled = true;
  const r = await (mode === "register" ? api.register(name, password) : api.login(name, password));
  $("auth-submit").disabled = false;
  if (r.ok) {
    $("auth-password").value = "";
    startApp(r.data.user);
    return;
  }
  const code = (r.data && r.data.error) || `http_${r.status}`;
  if (code === "registration_closed") {
    sessionStorage.setItem("chatd.regClosed", "1");
    $("tab-register").hidden = true;
    setMode("login");
  }
  err.textContent = KNOWN_ERRORS.has(code) ? t(`err.${code}`) : (r.data && r.data.message) || t("err.generic", { code });
});

// ---- the chat -----------------------------------------------------------------------------

function startApp(me) {
  started = true;
  sessionStorage.removeItem(EXPIRED);
  try {
    localStorage.setItem(LAST_USER, JSON.stringify({ id: me.id, name: me.name }));
  } catch {
    // Storage disabled: no offline start, nothing else changes.
  }
  $("boot").hidden = true;
  $("auth").hidden = true;
  $("app").hidden = false;
  notify.renderButton();
  ui.start(me);
}

$("btn-notify").addEventListener("click", () => notify.openSettings());

$("btn-logout").addEventListener("click", async () => {
  const n = S.outbox.length;
  if (n && !(await confirm(t("me.logoutOutbox", { n }), t("me.logout")))) return;
  chat.stop();
  await api.logout();
  store.wipe();
  localStorage.removeItem(LAST_USER);
  location.replace("/");
});

// The socket failed before opening: maybe the session ended (expired, password changed).
let checking = false;
chat.hooks.onAuthLost = async () => {
  if (checking) return;
  checking = true;
  try {
    if ((await api.me()) === null) {
      chat.stop();
      localStorage.removeItem(LAST_USER);
      sessionStorage.setItem(EXPIRED, "1");
      location.replace("/");
    }
  } catch {
    // Server unreachable: the reconnect loop goes on.
  } finally {
    setTimeout(() => (checking = false), 10000);
  }
};

/** The user who was logged in here last, or null. */
function lastUser() {
  try {
    const u = JSON.parse(localStorage.getItem(LAST_USER) || "null");
    return u && typeof u.id === "number" && typeof u.name === "string" ? u : null;
  } catch {
    return null;
  }
}

async function boot() {
  let me;
  try {
    me = await api.me();
  } catch {
    // The server cannot be reached (the service worker served the page from its cache). Start
    // with what this browser has: conversations, messages and the outbox; the connection comes
    // back by itself, and a session that ended meanwhile is noticed then.
    const last = lastUser();
    if (last) startApp(last);
    else setTimeout(boot, 3000);
    return;
  }
  if (me) startApp(me);
  else {
    localStorage.removeItem(LAST_USER);
    showAuth(sessionStorage.getItem(EXPIRED) ? t("auth.expired") : "");
  }
}

// The service worker caches the shell for the offline page (secure contexts only).
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}

boot();
