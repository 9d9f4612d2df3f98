// notify: owns the background signals: the unread count in the tab title and desktop
// notifications. Notifications are off until the user clicks the bell (the browser asks for
// permission then), only for other people's messages, and only while the tab is in the
// background or the message's conversation is not the open one.

import { $, toast } from "./dom.js";
import { t } from "./i18n.js";

const PREF = "chatd.notify";
let openConversation = () => {};

/** What a click on a notification opens. */
export function onOpen(fn) {
  openConversation = fn;
}

/** "(3) chatd" while 3 messages are unread. */
export function setTitleCount(n) {
  const title = n > 0 ? `(${n > 99 ? "99+" : n}) chatd` : "chatd";
  if (document.title !== title) document.title = title;
}

/** The Notification API exists only in secure contexts (https, localhost). */
export const supported = () => "Notification" in window && window.isSecureContext;

/** On only after the user turned them on with the bell (and the browser allows them). */
export const enabled = () =>
  supported() && Notification.permission === "granted" && localStorage.getItem(PREF) === "on";

/** The bell: asks for permission the first time, then toggles. */
export async function toggle() {
  if (!supported()) return;
  if (Notification.permission === "default") {
    const p = await Notification.requestPermission();
    if (p === "granted") {
      localStorage.setItem(PREF, "on");
      toast(t("notify.enabled"));
    }
  } else if (Notification.permission === "granted") {
    localStorage.setItem(PREF, enabled() ? "off" : "on");
  }
  renderButton();
}

export function renderButton() {
  const b = $("btn-notify");
  b.hidden = !supported();
  if (b.hidden) return;
  const key =
    Notification.permission === "denied"
      ? "me.notifyDenied"
      : Notification.permission === "default"
        ? "me.notify"
        : enabled()
          ? "me.notifyOn"
          : "me.notifyOff";
  b.setAttribute("aria-label", t(key));
  b.title = t(key);
  b.setAttribute("aria-pressed", String(enabled()));
  b.classList.toggle("on", enabled());
}

/** A new message from someone else arrived live. */
export function message(m, conv) {
  if (!enabled() || !conv) return;
  // In front, the open chat or the list's badge says enough.
  if (!document.hidden && document.hasFocus()) return;
  const title = conv.kind === "group" ? `${m.sender_name} · ${conv.title}` : t("notify.new", { name: m.sender_name });
  try {
    const n = new Notification(title, { body: m.text.slice(0, 240), tag: `chatd-${m.conversation}` });
    n.onclick = () => {
      window.focus();
      openConversation(m.conversation);
      n.close();
    };
  } catch {
    // Some platforms only allow notifications from a service worker; the title still counts.
  }
}
