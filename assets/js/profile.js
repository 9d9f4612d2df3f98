// profile: owns the profile dialog (the button with your name in the sidebar's footer): the
// display name others see, the avatar colour (one of the server's 12), changing the password
// (the current one required; the server signs out every other session) and signing out the
// other devices. Talks to /api/me*; the server tells every connected client of a new display
// name or colour with `user_updated`, which store.js applies (here too, at once, from the reply).

import * as api from "./api.js";
import { $, h, setAvatar, toast, PALETTE } from "./dom.js";
import { t } from "./i18n.js";
import * as store from "./store.js";
import { S, on } from "./store.js";
import { confirm } from "./dialogs.js";

const dlg = $("dlg-profile");

/** Localized text for a failed call. */
function errorText(r) {
  const code = api.errorCode(r);
  const key = `err.${code}`;
  const s = t(key);
  return s === key ? (r.data && r.data.message) || t("err.generic", { code }) : s;
}

// The colour choices: real radio buttons (arrow keys, screen readers), drawn as swatches.
for (const color of PALETTE) {
  const input = h("input", { type: "radio", name: "color", value: color, class: "swatch-input" });
  const label = h("label", { class: "swatch-label" }, input, h("span", { class: "swatch", attrs: { "aria-hidden": "true" } }), h("span", { class: "sr-only swatch-name" }));
  label.querySelector(".swatch").dataset.color = color;
  label.title = "";
  $("profile-colors").append(label);
}

const chosenColor = () => ($("profile-colors").querySelector("input:checked") || {}).value;

/** The header (avatar preview, names) from S.me and what the form holds now. */
function renderHead() {
  const display = $("profile-display").value.trim();
  const shown = display || S.me.name;
  $("profile-title").textContent = shown;
  $("profile-sub").textContent = t("profile.account", { name: S.me.name });
  setAvatar($("profile-avatar"), shown, chosenColor() || S.me.color);
}

/** Color names in the current language (tooltips and screen readers). */
export function relabel() {
  for (const label of $("profile-colors").children) {
    const name = t(`color.${label.firstChild.value}`);
    label.title = name;
    label.querySelector(".swatch-name").textContent = name;
  }
  if (dlg.open) renderHead();
}
relabel();

/** Opens the dialog with the current profile. */
export function open() {
  $("profile-display").value = S.me.display_name || "";
  for (const input of $("profile-colors").querySelectorAll("input")) input.checked = input.value === S.me.color;
  $("pw-user").value = S.me.name;
  $("pw-current").value = "";
  $("pw-new").value = "";
  for (const id of ["profile-error", "password-error"]) $(id).textContent = "";
  renderHead();
  dlg.showModal();
  $("profile-display").focus();
}

$("profile-display").addEventListener("input", renderHead);
$("profile-colors").addEventListener("change", renderHead);
on("me", () => {
  if (dlg.open) renderHead();
});

$("profile-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const display = $("profile-display").value.trim();
  const patch = { display_name: display || null };
  if (chosenColor()) patch.color = chosenColor();
  $("profile-save").disabled = true;
  const r = await api.updateProfile(patch);
  $("profile-save").disabled = false;
  if (!r.ok) {
    $("profile-error").textContent = errorText(r);
    return;
  }
  $("profile-error").textContent = "";
  store.applyUserUpdate(r.data.user);
  toast(t("profile.saved"));
});

$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const current = $("pw-current").value;
  const next = $("pw-new").value;
  const err = $("password-error");
  if (!current) return $("pw-current").focus();
  if (next.length < 8) {
    err.textContent = t("err.invalid_password");
    return $("pw-new").focus();
  }
  $("pw-save").disabled = true;
  const r = await api.changePassword(current, next);
  $("pw-save").disabled = false;
  if (!r.ok) {
    err.textContent = api.errorCode(r) === "invalid_credentials" ? t("profile.wrongCurrent") : errorText(r);
    return;
  }
  err.textContent = "";
  $("pw-current").value = "";
  $("pw-new").value = "";
  toast(t("profile.passwordChanged"));
});

$("profile-logout-others").addEventListener("click", async () => {
  if (!(await confirm(t("profile.logoutOthersConfirm"), t("profile.logoutOthers")))) return;
  const r = await api.logoutOthers();
  toast(r.ok ? t("profile.loggedOutOthers") : errorText(r), r.ok ? "info" : "error");
});
