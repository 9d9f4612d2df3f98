// auth: owns the screen before the chat. Asks the server (`GET /api/server`) how it stands and
// shows one of: the first run ("Create the admin account", then where registration stands with
// one click to change it), an invite link (`/#invite=CODE`: the register form, which works even
// while registration is closed), log in with "Create account" while registration is open, or
// log in only with a note on how to get an account while it is closed. Calls `done(user)` once
// someone is logged in.

import * as api from "./api.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";

const KNOWN_ERRORS = new Set([
  "invalid_credentials",
  "account_disabled",
  "rate_limited",
  "registration_closed",
  "name_taken",
  "invalid_name",
  "invalid_password",
  "invalid_invite",
  "storage_full",
  "storage_error",
  "network",
]);

/** "login" | "register" | "first" (the first account, which becomes the admin). */
let mode = "login";
/** The server's facts from /api/server (null: unknown, e.g. an older server). */
let info = null;
/** The invite code from the link the page was opened with. */
let invite = null;
let notice = "";
let done = () => {};

/** The note under the title: first run, invite, closed registration, or nothing. */
function noteText() {
  if (mode === "first") return t("auth.first.note");
  if (invite) return t("auth.invite.note");
  if (info && info.registration === "closed") return t("auth.closed.note");
  return "";
}

function render() {
  const reg = mode !== "login";
  const first = mode === "first";
  const canRegister = first || !!invite || !info || info.registration === "open";
  $("auth-tabs").hidden = first || !canRegister;
  $("tab-register").hidden = !canRegister;
  $("tab-login").setAttribute("aria-selected", String(!reg));
  $("tab-register").setAttribute("aria-selected", String(reg));
  const title = first ? "auth.first.title" : invite && reg ? "auth.invite.title" : reg ? "auth.register.title" : "auth.login.title";
  $("auth-title").textContent = t(title);
  $("auth-sub").textContent = first ? t("auth.first.sub") : t("auth.subtitle");
  const note = noteText();
  $("auth-note").hidden = !note;
  $("auth-note").textContent = note;
  $("auth-submit").textContent = t(first ? "auth.submit.first" : reg ? "auth.submit.register" : "auth.submit.login");
  $("auth-password").autocomplete = reg ? "new-password" : "current-password";
  $("auth-hint").hidden = !reg;
}

function setMode(m) {
  mode = m;
  render();
}

/** Re-translates what this screen shows (language switch). */
export function relabel() {
  render();
  if (!$("setup").hidden) renderSetup();
}

/**
 * Shows the screen; `notice` is a message for the error line (e.g. "your session ended").
 * `onDone(user)` runs when someone has logged in (after the first-run setup step, if any).
 */
export async function show(onDone, notice_ = "") {
  done = onDone;
  notice = notice_;
  const m = location.hash.match(/^#invite=([A-Za-z0-9_-]{1,64})$/);
  invite = m ? m[1] : null;
  info = await api.server();
  mode = info && info.first_run ? "first" : invite ? "register" : "login";
  $("boot").hidden = true;
  $("app").hidden = true;
  $("auth").hidden = false;
  $("auth-main").hidden = false;
  $("setup").hidden = true;
  render();
  $("auth-error").textContent = notice;
  $("auth-name").focus();
}

$("tab-login").addEventListener("click", () => setMode("login"));
$("tab-register").addEventListener("click", () => setMode("register"));
// Arrow keys move between the two tabs (WAI-ARIA tabs pattern).
$("auth-tabs").addEventListener("keydown", (e) => {
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
  const reg = mode !== "login";
  if (reg && password.length < 8) {
    err.textContent = t("err.invalid_password");
    return;
  }
  err.textContent = "";
  $("auth-submit").disabled = true;
  const r = await (reg ? api.register(name, password, mode === "register" ? invite : null) : api.login(name, password));
  $("auth-submit").disabled = false;
  if (r.ok) {
    $("auth-password").value = "";
    if (invite) history.replaceState(null, "", location.pathname); // used: not again on reload
    const user = r.data.user;
    if (mode === "first" && user.admin) showSetup(user);
    else done(user);
    return;
  }
  const code = api.errorCode(r);
  if (code === "registration_closed") {
    // Closed since the page asked: say so, and offer log in only.
    info = { ...(info || {}), registration: "closed" };
    setMode("login");
  }
  err.textContent = KNOWN_ERRORS.has(code) ? t(`err.${code}`) : (r.data && r.data.message) || t("err.generic", { code });
});

// ---- first run: where registration stands ---------------------------------------------------

let setupUser = null;
let registration = null; // "open" | "closed" as the server has it

function renderSetup() {
  $("setup-admin").textContent = t("setup.admin", { name: setupUser.name });
  const open = registration === "open";
  $("setup-reg-state").textContent = registration ? t(open ? "setup.regOpen" : "setup.regClosed") : "";
  $("setup-reg-toggle").textContent = t(open ? "setup.close" : "setup.open");
  $("setup-reg-toggle").hidden = !registration;
}

async function showSetup(user) {
  setupUser = user;
  const r = await api.admin.settings();
  registration = r.ok ? r.data.registration : (info && info.registration) || null;
  $("auth-main").hidden = true;
  $("setup").hidden = false;
  renderSetup();
  $("setup-title").focus();
}

$("setup-reg-toggle").addEventListener("click", async () => {
  const next = registration === "open" ? "closed" : "open";
  $("setup-reg-toggle").disabled = true;
  const r = await api.admin.setRegistration(next);
  $("setup-reg-toggle").disabled = false;
  if (r.ok) registration = r.data.registration;
  $("setup-error").textContent = r.ok ? "" : t("err.generic", { code: api.errorCode(r) });
  renderSetup();
});

$("setup-done").addEventListener("click", () => done(setupUser));
