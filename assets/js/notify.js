// notify: owns the background signals for new messages: the unread count in the tab title and
// as a badge drawn on the tab's icon, a short tone (generated with WebAudio, no sound file),
// and desktop notifications. The bell opens the settings: the sound (on by default) and desktop
// notifications (off until turned on; the browser asks for permission then). Browsers allow
// desktop notifications only in a secure context (https, localhost): on a plain-http LAN
// address the dialog says why they are missing and links to the https help page, and the sound
// and the badge still work. Only other people's live messages count, and only while the tab
// is in the background (hidden or without focus).

import { $, toast } from "./dom.js";
import { t } from "./i18n.js";

const PREF = "chatd.notify";
const SOUND = "chatd.sound";
let openConversation = () => {};

/** What a click on a notification opens. */
export function onOpen(fn) {
  openConversation = fn;
}

// ---- title and icon badge -----------------------------------------------------------------

const iconLink = document.querySelector('link[rel="icon"]');
const iconHref = iconLink ? iconLink.getAttribute("href") : "/icon.svg";
let iconImage = null;
let badgeShown = 0;

/** The app icon as an image for the canvas (loaded once; the badge waits for it). */
function loadIcon() {
  if (iconImage) return iconImage;
  iconImage = new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = iconHref;
  });
  return iconImage;
}

/** Draws the icon with a red badge carrying `n` and makes it the tab's icon. */
async function drawBadge(n) {
  const img = await loadIcon();
  if (n !== badgeShown || !iconLink) return; // changed meanwhile
  const size = 64;
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  const g = canvas.getContext("2d");
  if (!g) return;
  if (img) g.drawImage(img, 0, 0, size, size);
  else {
    g.fillStyle = "#4f46e5";
    g.beginPath();
    g.roundRect(0, 0, size, size, 14);
    g.fill();
  }
  const label = n > 99 ? "99+" : String(n);
  const r = label.length > 2 ? 21 : 18;
  const cx = size - r;
  const cy = r;
  g.fillStyle = "#dc2626";
  g.beginPath();
  if (label.length > 2) g.roundRect(size - 2 * r - 8, 0, 2 * r + 8, 2 * r, r);
  else g.arc(cx, cy, r, 0, Math.PI * 2);
  g.fill();
  g.lineWidth = 3;
  g.strokeStyle = "#ffffff";
  g.stroke();
  g.fillStyle = "#ffffff";
  g.font = `bold ${label.length > 2 ? 20 : label.length > 1 ? 22 : 26}px system-ui, sans-serif`;
  g.textAlign = "center";
  g.textBaseline = "middle";
  g.fillText(label, label.length > 2 ? size - r - 4 : cx, cy + 1);
  iconLink.type = "image/png";
  iconLink.href = canvas.toDataURL("image/png");
}

/** "(3) chatd" and a badge with 3 on the tab's icon while 3 messages are unread. */
export function setTitleCount(n) {
  const title = n > 0 ? `(${n > 99 ? "99+" : n}) chatd` : "chatd";
  if (document.title !== title) document.title = title;
  if (n === badgeShown || !iconLink) return;
  badgeShown = n;
  if (n > 0) drawBadge(n);
  else {
    iconLink.type = "image/svg+xml";
    iconLink.href = iconHref;
  }
}

// ---- sound --------------------------------------------------------------------------------

let audio = null;
let lastTone = 0;

export const soundOn = () => localStorage.getItem(SOUND) !== "off";

/** The AudioContext, created on the first user gesture (browsers keep it silent until then). */
function audioContext() {
  if (!audio) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    try {
      audio = new Ctx();
    } catch {
      return null;
    }
  }
  if (audio.state === "suspended") audio.resume().catch(() => {});
  return audio;
}

for (const ev of ["pointerdown", "keydown"]) {
  window.addEventListener(ev, () => audioContext(), { once: true, capture: true, passive: true });
}

/** Two short soft notes (A5, E6): about a third of a second. At most one every 2 s. */
export function tone(force = false) {
  const now = Date.now();
  if (!force && now - lastTone < 2000) return;
  const ctx = audioContext();
  if (!ctx) return;
  lastTone = now;
  const t0 = ctx.currentTime + 0.02;
  for (const [freq, at] of [
    [880, 0],
    [1318.5, 0.12],
  ]) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "sine";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t0 + at);
    gain.gain.exponentialRampToValueAtTime(0.2, t0 + at + 0.015);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.18);
    osc.connect(gain);
    gain.connect(ctx.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + 0.2);
  }
}

// ---- desktop notifications ----------------------------------------------------------------

/** The Notification API exists only in secure contexts (https, localhost). */
export const supported = () => "Notification" in window && window.isSecureContext;

/** On only after the user turned them on (and the browser allows them). */
export const enabled = () =>
  supported() && Notification.permission === "granted" && localStorage.getItem(PREF) === "on";

/** Turns desktop notifications on (asking the browser the first time) or off. */
async function setDesktop(on) {
  if (!supported()) return;
  if (!on) localStorage.setItem(PREF, "off");
  else if (Notification.permission === "granted") localStorage.setItem(PREF, "on");
  else if (Notification.permission === "default") {
    const p = await Notification.requestPermission();
    if (p === "granted") {
      localStorage.setItem(PREF, "on");
      toast(t("notify.enabled"));
    }
  }
  renderButton();
  renderDialog();
}

// ---- the bell and its dialog --------------------------------------------------------------

export function renderButton() {
  const b = $("btn-notify");
  b.hidden = false;
  b.setAttribute("aria-label", t("notify.title"));
  b.title = t("notify.title");
  b.setAttribute("aria-haspopup", "dialog");
  b.classList.toggle("on", enabled());
}

function renderDialog() {
  $("notify-sound").checked = soundOn();
  const secure = supported();
  $("notify-insecure").hidden = secure;
  $("notify-desktop-row").hidden = !secure;
  if (!secure) {
    $("notify-insecure-text").textContent = t("notify.insecure", { origin: location.origin });
    return;
  }
  const desktop = $("notify-desktop");
  const denied = Notification.permission === "denied";
  desktop.checked = enabled();
  desktop.disabled = denied;
  $("notify-desktop-state").textContent = denied ? t("notify.denied") : "";
}

/** The bell: the notification settings. */
export function openSettings() {
  renderDialog();
  $("dlg-notify").showModal();
  $("notify-sound").focus();
}

$("notify-sound").addEventListener("change", (e) => {
  localStorage.setItem(SOUND, e.target.checked ? "on" : "off");
  if (e.target.checked) tone(true);
  renderButton();
});
$("notify-desktop").addEventListener("change", (e) => setDesktop(e.target.checked));
$("notify-test").addEventListener("click", () => tone(true));

// ---- a new message ------------------------------------------------------------------------

/** The tab is not what the user is looking at. */
const inBackground = () => document.hidden || !document.hasFocus();

/** A new message from someone else arrived live. `title`: the conversation's shown title. */
export function message(m, conv, senderName = m.sender_name) {
  if (!conv || !inBackground()) return; // in front, the open chat or the list's badge says enough
  if (soundOn()) tone();
  if (!enabled()) return;
  const title = conv.kind === "group" ? `${senderName} · ${conv.title}` : t("notify.new", { name: senderName });
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
