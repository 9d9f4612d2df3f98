// dialogs: owns the modal dialogs: the user directory (start a direct chat), new group / add
// members, group details (members, remove, leave), renaming a group, a confirmation prompt,
// and the open conversation's menu (mute, rename, details). Uses native
// <dialog> (focus trap and Escape for free); lists are built with DOM calls and textContent.

import { $, h, icon, avatar, toast } from "./dom.js";
import { t } from "./i18n.js";
import * as chat from "./chat.js";
import * as store from "./store.js";
import { S, on } from "./store.js";

for (const b of document.querySelectorAll(".dlg-close")) {
  b.addEventListener("click", () => b.closest("dialog").close());
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

/** Localized text for a failed request. */
function errorText(e) {
  const code = e && e.code;
  if (code === "offline" || code === "timeout") return t("error.offline");
  const key = `error.${code}`;
  const s = t(key);
  return s === key ? t("err.generic", { code }) : s;
}

/** How a person is shown: their display name, else their account name. */
const shown = (u) => store.shownName(u.id, u.display_name || u.name);

/**
 * One person row: avatar (their colour) with presence dot, the shown name and a second line
 * (with the account name when a display name hides it).
 */
function personContent(u, second) {
  const dot = h("span", { class: `dot${u.online ? " online" : ""}` });
  const name = shown(u);
  const line = name !== u.name ? `${second} · ${u.name}` : second;
  return [
    h("span", { class: "avatar-wrap" }, avatar(name, "avatar", store.colorOf(u.id) || u.color), dot),
    h("span", { class: "person-name" }, h("strong", { text: name }), h("span", { class: "muted small", text: line })),
  ];
}

const presence = (u) => (u.online ? t("chat.online") : t("chat.offline"));

// ---- new chat: the directory ----------------------------------------------------------------

/** Lists users; picking one opens the direct chat with them (created by the first message). */
export function directory(openChat) {
  const dlg = $("dlg-dir");
  const search = $("dir-search");
  const listEl = $("dir-list");
  const empty = $("dir-empty");
  search.value = "";
  listEl.replaceChildren();
  const load = async () => {
    try {
      const users = (await chat.users(search.value.trim())).filter((u) => u.id !== S.me.id);
      empty.textContent = t("dir.none");
      empty.hidden = users.length > 0;
      listEl.replaceChildren(
        ...users.map((u) => {
          const pick = () => {
            dlg.close();
            const c = store.directWith(u.id);
            openChat(c ? { id: c.id } : { draft: { id: u.id, name: shown(u) } });
          };
          return h("li", {}, h("button", { type: "button", class: "person", on: { click: pick } }, personContent(u, presence(u))));
        }),
      );
    } catch (e) {
      listEl.replaceChildren();
      empty.textContent = errorText(e);
      empty.hidden = false;
    }
  };
  search.oninput = debounce(load, 200);
  search.onkeydown = (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      const first = listEl.querySelector("button");
      if (first) first.click();
    }
  };
  load();
  dlg.showModal();
  search.focus();
}

// ---- new group / add members ----------------------------------------------------------------

/**
 * With `convId` null: create a group (title + members), then `done(conversation)`.
 * With a group id: add members to it.
 */
export function group(convId, done) {
  const dlg = $("dlg-group");
  const search = $("group-search");
  const listEl = $("group-people");
  const err = $("group-error");
  const title = $("group-title");
  const adding = convId !== null;
  const existing = new Set(adding ? (S.members.get(convId) || []).map((m) => m.id) : []);
  const selected = new Map();
  $("dlg-group-title").textContent = t(adding ? "group.addTitle" : "group.title");
  $("group-title-field").hidden = adding;
  $("group-submit").textContent = t(adding ? "group.add" : "group.create");
  title.value = "";
  search.value = "";
  err.textContent = "";
  listEl.replaceChildren();

  const count = () => {
    $("group-count").textContent = selected.size ? t("group.selected", { n: selected.size }) : "";
    $("group-submit").disabled = adding && selected.size === 0;
  };
  const load = async () => {
    try {
      const users = (await chat.users(search.value.trim())).filter((u) => u.id !== S.me.id && !existing.has(u.id));
      listEl.replaceChildren(
        ...users.map((u) => {
          const btn = h("button", { type: "button", class: "person", attrs: { "aria-pressed": String(selected.has(u.id)) } });
          btn.append(...personContent(u, presence(u)), h("span", { class: "pick" }, icon("check")));
          btn.addEventListener("click", () => {
            if (selected.has(u.id)) selected.delete(u.id);
            else selected.set(u.id, u);
            btn.setAttribute("aria-pressed", String(selected.has(u.id)));
            count();
          });
          return h("li", {}, btn);
        }),
      );
      if (!users.length) listEl.append(h("li", { class: "list-empty", text: t("dir.none") }));
    } catch (e) {
      err.textContent = errorText(e);
    }
  };
  search.oninput = debounce(load, 200);
  search.onkeydown = (e) => {
    if (e.key === "Enter") e.preventDefault();
  };
  $("group-form").onsubmit = async (e) => {
    e.preventDefault();
    err.textContent = "";
    const ids = [...selected.keys()];
    try {
      if (adding) {
        await chat.addMembers(convId, ids);
        chat.refreshOpen(convId);
        dlg.close();
      } else {
        const name = title.value.trim();
        if (!name) {
          err.textContent = t("group.needTitle");
          title.focus();
          return;
        }
        const c = await chat.createGroup(name, ids);
        dlg.close();
        done(c);
      }
    } catch (ex) {
      err.textContent = errorText(ex);
    }
  };
  count();
  load();
  dlg.showModal();
  (adding ? search : title).focus();
}

// ---- group details ------------------------------------------------------------------------

let infoId = null;

function renderInfo() {
  const c = S.convs.get(infoId);
  const dlg = $("dlg-info");
  if (!c) {
    dlg.close();
    return;
  }
  const owner = c.owner === S.me.id;
  $("info-title").textContent = c.title;
  $("info-sub").textContent = t("chat.members", { n: c.member_count });
  const av = $("info-avatar");
  av.replaceWith(Object.assign(avatar(c.title, "avatar group"), { id: "info-avatar" }));
  const members = S.members.get(infoId) || [];
  $("info-members").replaceChildren(
    ...members.map((m) => {
      const second = m.id === S.me.id ? t("info.you") : presence(m);
      const row = h("div", { class: "person" }, personContent(m, second));
      if (m.role === "owner") row.append(h("span", { class: "role", text: t("info.owner") }));
      if (owner && m.id !== S.me.id) {
        const label = t("info.remove", { name: shown(m) });
        const rm = h("button", { type: "button", class: "icon-btn", title: label, attrs: { "aria-label": label } }, icon("x"));
        rm.addEventListener("click", () => chat.removeMember(infoId, m.id).then(() => chat.refreshOpen(infoId), (e) => toast(errorText(e), "error")));
        row.append(rm);
      }
      return h("li", {}, row);
    }),
  );
  $("info-add").hidden = !owner;
}

/** Members of group `id`, with add/remove for the owner and leave for everyone. */
export function info(id) {
  infoId = id;
  chat.refreshOpen(id);
  renderInfo();
  $("dlg-info").showModal();
}

on("members", () => {
  if ($("dlg-info").open) renderInfo();
});
on("convs", () => {
  if ($("dlg-info").open) renderInfo();
});

$("info-add").addEventListener("click", () => {
  $("dlg-info").close();
  group(infoId, () => {});
});

$("info-leave").addEventListener("click", async () => {
  const c = S.convs.get(infoId);
  if (!c || !(await confirm(t("info.leaveConfirm", { title: c.title }), t("info.leave")))) return;
  $("dlg-info").close();
  chat.leave(c.id).catch((e) => toast(errorText(e), "error"));
});

// ---- the conversation menu: mute, rename, details ---------------------------------------------

const convMenu = $("conv-menu");
const convBtn = $("btn-conv-menu");

function closeConvMenu(refocus = false) {
  if (convMenu.hidden) return;
  convMenu.hidden = true;
  convBtn.setAttribute("aria-expanded", "false");
  if (refocus) convBtn.focus();
}

function openConvMenu() {
  const c = S.current && S.current.id ? S.convs.get(S.current.id) : null;
  if (!c) return;
  $("menu-mute").setAttribute("aria-checked", String(!!c.muted));
  $("menu-rename").hidden = !(c.kind === "group" && c.owner === S.me.id);
  $("menu-info").hidden = c.kind !== "group";
  convMenu.hidden = false;
  convBtn.setAttribute("aria-expanded", "true");
  convMenu.querySelector("button:not([hidden])").focus();
}

/** Renames group `id` (its owner): a dialog with the current title. */
export function rename(id) {
  const c = S.convs.get(id);
  if (!c) return;
  const dlg = $("dlg-rename");
  const field = $("rename-input");
  const err = $("rename-error");
  field.value = c.title;
  err.textContent = "";
  $("rename-form").onsubmit = async (e) => {
    e.preventDefault();
    const title = field.value.trim();
    if (!title) {
      err.textContent = t("group.needTitle");
      return;
    }
    if (title === c.title) return dlg.close();
    try {
      await chat.renameGroup(id, title);
      dlg.close();
    } catch (ex) {
      err.textContent = errorText(ex);
    }
  };
  dlg.showModal();
  field.select();
}

/** Wires the header's menu button (ui.js shows it for a conversation that exists). */
export function wireConvMenu() {
  convBtn.addEventListener("click", () => (convMenu.hidden ? openConvMenu() : closeConvMenu()));
  $("menu-mute").addEventListener("click", () => {
    const c = S.convs.get(S.current && S.current.id);
    closeConvMenu(true);
    if (!c) return;
    const muted = !c.muted;
    chat.mute(c.id, muted).then(
      () => toast(t(muted ? "conv.mutedOn" : "conv.mutedOff", { title: c.title })),
      (e) => toast(errorText(e), "error"),
    );
  });
  $("menu-rename").addEventListener("click", () => {
    closeConvMenu();
    if (S.current && S.current.id) rename(S.current.id);
  });
  $("menu-info").addEventListener("click", () => {
    closeConvMenu();
    if (S.current && S.current.id) info(S.current.id);
  });
  convMenu.addEventListener("keydown", (e) => {
    const items = [...convMenu.querySelectorAll("button:not([hidden])")];
    const i = items.indexOf(document.activeElement);
    const step = { ArrowDown: 1, ArrowUp: -1 }[e.key];
    if (step) {
      e.preventDefault();
      items[(i + step + items.length) % items.length].focus();
    } else if (e.key === "Escape" || e.key === "Tab") {
      e.preventDefault();
      closeConvMenu(true);
    }
  });
  document.addEventListener(
    "pointerdown",
    (e) => {
      if (!convMenu.contains(e.target) && !convBtn.contains(e.target)) closeConvMenu();
    },
    true,
  );
}

// ---- confirmation -------------------------------------------------------------------------

/** Asks a yes/no question in a dialog; resolves true on the OK button. */
export function confirm(text, okLabel) {
  const dlg = $("dlg-confirm");
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = okLabel;
  return new Promise((resolve) => {
    const finish = (v) => {
      dlg.onclose = null;
      dlg.close();
      resolve(v);
    };
    $("confirm-yes").onclick = () => finish(true);
    $("confirm-no").onclick = () => finish(false);
    dlg.onclose = () => resolve(false);
    dlg.showModal();
    $("confirm-no").focus();
  });
}
