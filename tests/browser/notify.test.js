// Notifications on a LAN over plain http, where browsers refuse desktop notifications: the page
// is opened as http://chat.lan:PORT (a name Chromium maps to 127.0.0.1, so not a secure context,
// like a LAN address). New messages in the background play a tone (WebAudio, recorded here) and
// draw the unread count on the tab's icon; the bell explains why desktop notifications are
// missing and links to the https help page. On localhost the desktop notifications still work.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, startDirect, send, msg, convItem } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  server = await startServer(tmp.dir);
  browser = await launch(["--host-resolver-rules=MAP chat.lan 127.0.0.1"]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

/** Records every oscillator started (the tone) and pretends the tab is in the background. */
function backgroundWithRecordedSound() {
  window.__tones = 0;
  const Real = window.AudioContext;
  window.AudioContext = class extends Real {
    createOscillator() {
      const osc = super.createOscillator();
      const start = osc.start.bind(osc);
      osc.start = (...a) => {
        window.__tones += 1;
        return start(...a);
      };
      return osc;
    }
  };
  window.__background = true;
  document.hasFocus = () => !window.__background;
}

const iconHref = (page) => page.evaluate(() => document.querySelector('link[rel="icon"]').getAttribute("href"));

test("plain http on a LAN name: sound and icon badge in the background, the bell explains https", async () => {
  const lan = server.url.replace("127.0.0.1", "chat.lan");
  const { page: ana, context } = await openPage(browser, lan);
  await context.addInitScript(backgroundWithRecordedSound);
  await ana.reload();
  assert.equal(await ana.evaluate(() => window.isSecureContext), false);
  await register(ana, "ana");
  const { page: bo } = await openPage(browser, server.url);
  await register(bo, "bo");
  const plainIcon = await iconHref(ana);
  assert.match(plainIcon, /^\/icon\.svg/);

  // The bell is there and says why desktop notifications are not.
  await ana.locator("#btn-notify").click();
  await ana.locator("#dlg-notify[open]").waitFor();
  assert.equal(await ana.locator("#notify-desktop-row").isVisible(), false);
  const why = await ana.locator("#notify-insecure-text").textContent();
  assert.match(why, /https/);
  assert.match(why, /http:\/\/chat\.lan:\d+/);
  const href = await ana.locator("#notify-help").getAttribute("href");
  const help = await fetch(new URL(href, server.url));
  assert.equal(help.status, 200);
  assert.match(await help.text(), /--tls-self-signed/);
  assert.equal(await ana.locator("#notify-sound").isChecked(), true, "the sound is on by default");
  await ana.keyboard.press("Escape");

  // A message while ana's tab is in the background: one tone, a badge on the icon, the title.
  await startDirect(bo, "ana");
  await send(bo, "lunch?");
  await convItem(ana, "bo").locator(".badge", { hasText: "1" }).waitFor();
  await ana.waitForFunction(() => window.__tones > 0);
  await ana.waitForFunction(() => document.querySelector('link[rel="icon"]').href.startsWith("data:image/png"));
  assert.equal(await ana.title(), "(1) chatd");
  const badge = await ana.evaluate(async () => {
    // The badge is drawn: the icon's top-right corner is red.
    const img = new Image();
    img.src = document.querySelector('link[rel="icon"]').href;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    return Array.from(g.getImageData(img.width - 30, 18, 1, 1).data);
  });
  assert.ok(badge[0] > 180 && badge[1] < 80 && badge[2] < 80, `red badge pixel, got ${badge}`);

  // Turned off in the dialog, the sound stays quiet (the dialog plays one sample when turned on).
  await ana.locator("#btn-notify").click();
  await ana.locator("#notify-sound").uncheck();
  await ana.keyboard.press("Escape");
  const tones = await ana.evaluate(() => window.__tones);
  await ana.waitForTimeout(2100); // past the 2 s between tones
  await send(bo, "12:30?");
  await convItem(ana, "bo").locator(".badge", { hasText: "2" }).waitFor();
  await ana.waitForTimeout(300);
  assert.equal(await ana.evaluate(() => window.__tones), tones);
  assert.equal(await ana.title(), "(2) chatd");

  // In front again and read: no badge, the plain icon.
  await ana.evaluate(() => (window.__background = false));
  await convItem(ana, "bo").click();
  await msg(ana, "12:30?").waitFor();
  await ana.waitForFunction(() => document.title === "chatd");
  await ana.waitForFunction((plain) => document.querySelector('link[rel="icon"]').getAttribute("href") === plain, plainIcon);
  assert.deepEqual(ana.errors, []);
});

test("in the foreground, a new message makes no sound", async () => {
  const { page: cy, context } = await openPage(browser, server.url);
  await context.addInitScript(backgroundWithRecordedSound);
  await context.addInitScript(() => (window.__background = false));
  await cy.reload();
  await register(cy, "cy");
  const { page: di } = await openPage(browser, server.url);
  await register(di, "di");
  await startDirect(di, "cy");
  await send(di, "hi cy");
  await convItem(cy, "di").locator(".badge", { hasText: "1" }).waitFor();
  await cy.waitForTimeout(300);
  assert.equal(await cy.evaluate(() => window.__tones), 0);
  assert.deepEqual(cy.errors, []);
});
