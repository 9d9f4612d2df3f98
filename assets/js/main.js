// main: the entry point. Translates the page, asks the server who is logged in, and shows
// either the screen before the chat (auth.js: log in, create account, first run, invites) or
// the chat (ui.js). Owns the language pickers, the footer's buttons (notifications, profile,
// administration, log out), noticing a session that ended, the offline start and the service
// worker's registration.

import * as api from "./api.js";
import { $, toast } from "./dom.js";
import { t, lang, setLang, LANGS, translatePage } from "./i18n.js";
import * as auth from "./auth.js";
import * as ui from "./ui.js";
import * as chat from "./chat.js";
import * as store from "./store.js";
import { S } from "./store.js";
import * as notify from "./notify.js";
import * as profile from "./profile.js";
import * as admin from "./admin.js";
import { confirm } from "./dialogs.js";

const EXPIRED = "chatd.expired";
/** The last user logged in here: lets the app start from its cache while the server is down. */
const LAST_USER = "chatd.lastUser";
let started = false;

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
    auth.relabel();
    notify.renderButton();
    if (started) {
      ui.relabel();
      admin.relabel();
      profile.relabel();
    }
  });
}
translatePage();

// ---- the chat -----------------------------------------------------------------------------

function rememberUser(me) {
  try {
    const { id, name, display_name, color, admin: isAdmin } = me;
    localStorage.setItem(LAST_USER, JSON.stringify({ id, name, display_name, color, admin: isAdmin }));
  } catch {
    // Storage disabled: no offline start, nothing else changes.
  }
}

function startApp(me) {
  started = true;
  sessionStorage.removeItem(EXPIRED);
  rememberUser(me);
  $("boot").hidden = true;
  $("auth").hidden = true;
  $("app").hidden = false;
  notify.renderButton();
  ui.start(me);
  store.on("me", () => rememberUser(S.me));
  admin.route();
}

$("btn-notify").addEventListener("click", () => notify.openSettings());
$("btn-profile").addEventListener("click", () => profile.open());
$("btn-admin").addEventListener("click", () => admin.open());

/** Logs out this browser (after a warning when unsent messages would be lost). */
export async function logout() {
  const n = S.outbox.length;
  if (n && !(await confirm(t("me.logoutOutbox", { n }), t("me.logout")))) return;
  chat.stop();
  await api.logout();
  store.wipe();
  localStorage.removeItem(LAST_USER);
  location.replace("/");
}

$("btn-logout").addEventListener("click", logout);

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
    else {
      $("boot-msg").hidden = false;
      setTimeout(boot, 3000);
    }
    return;
  }
  if (me) {
    // Logged in already: an invite link has nothing left to do.
    if (location.hash.startsWith("#invite=")) {
      history.replaceState(null, "", location.pathname);
      setTimeout(() => toast(t("auth.invite.loggedIn", { name: me.name })), 500);
    }
    startApp(me);
  } else {
    localStorage.removeItem(LAST_USER);
    auth.show(startApp, sessionStorage.getItem(EXPIRED) ? t("auth.expired") : "");
  }
}

// An invite link opened while logged in (it changes only the hash): nothing to do, say why.
window.addEventListener("hashchange", () => {
  if (!started || !location.hash.startsWith("#invite=")) return;
  history.replaceState(history.state, "", location.pathname);
  toast(t("auth.invite.loggedIn", { name: S.me.name }));
});

// The service worker caches the shell for the offline page (secure contexts only).
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => {});
}

boot();
