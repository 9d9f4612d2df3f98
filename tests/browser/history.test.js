// Long conversations and stored state: older messages load when scrolling up without moving
// the view, the unread divider, a changed database epoch drops cached cursors, and background
// notifications (tab title, desktop notifications after the bell, never for own messages).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, login, startDirect, send, msg, convItem, seed, openId } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  server = await startServer(tmp.dir);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

test("scrolling up loads older messages without moving the view", async () => {
  const { page: alice } = await openPage(browser, server.url);
  await register(alice, "alice");
  const first = await openPage(browser, server.url);
  await register(first.page, "bob");
  await startDirect(alice, "bob");
  await send(alice, "message 1");
  await msg(alice, "message 1").waitFor();
  const id = await openId(alice);
  await seed(alice, id, Array.from({ length: 176 }, (_, i) => `message ${i + 2}`));
  await msg(alice, "message 177").waitFor();
  // bob reads them on his first device, then 3 more arrive.
  await convItem(first.page, "alice").click();
  await msg(first.page, "message 177").waitFor();
  await first.page.click("#btn-jump");
  await alice.locator('#msg-list li.msg[data-seq="177"][data-status=read]').waitFor();
  await first.context.close();
  await seed(alice, id, ["message 178", "message 179", "message 180"]);
  await msg(alice, "message 180").waitFor();

  // bob logs in on a new device: the conversation's history is not replayed, it is paged in.
  const { page: bob } = await openPage(browser, server.url);
  await login(bob, "bob");
  await convItem(bob, "alice").locator(".badge", { hasText: "3" }).waitFor();
  await convItem(bob, "alice").click();
  await msg(bob, "message 180").waitFor();
  // The first unread message is marked; not everything was loaded at once.
  await bob.locator(".unread-sep").waitFor();
  const box = bob.locator("#messages");
  await box.evaluate((b) => (b.scrollTop = b.scrollHeight));
  await bob.waitForTimeout(300);
  const loaded = await bob.locator("#msg-list li.msg").count();
  assert.ok(loaded < 180, `only a page of history is loaded at first (${loaded})`);

  // Scroll to the top repeatedly: older pages arrive, and the message that was at the top
  // stays where it was on screen (no jump).
  for (let round = 0; round < 8; round++) {
    const before = await bob.evaluate(() => {
      const b = document.querySelector("#messages");
      b.scrollTop = 0;
      const first = document.querySelector("#msg-list li.msg");
      return { seq: first.dataset.seq, top: first.getBoundingClientRect().top, count: document.querySelectorAll("#msg-list li.msg").length };
    });
    if (before.seq === "1") break;
    await bob.waitForFunction((n) => document.querySelectorAll("#msg-list li.msg").length > n, before.count);
    await bob.waitForTimeout(50);
    const top = await bob.evaluate((seq) => document.querySelector(`#msg-list li.msg[data-seq="${seq}"]`).getBoundingClientRect().top, before.seq);
    assert.ok(Math.abs(top - before.top) <= 2, `message ${before.seq} moved from ${before.top} to ${top}`);
  }
  await bob.locator('#msg-list li.msg[data-seq="1"]').waitFor();
  await bob.locator("#history-status", { hasText: "beginning of the conversation" }).waitFor();
  assert.equal(await bob.locator("#msg-list li.msg").count(), 180);
  // Each seq once, in order.
  const seqs = await bob.locator("#msg-list li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, Array.from({ length: 180 }, (_, i) => i + 1));
  await bob.locator("#msg-list .sep", { hasText: "Today" }).waitFor();

  // Scrolled up, a button jumps to the newest message; reading it sends a read receipt.
  await bob.click("#btn-jump");
  await bob.locator("#btn-jump").waitFor({ state: "hidden" });
  await alice.locator('#msg-list li.msg[data-seq="180"][data-status=read]').waitFor();
  await convItem(bob, "alice").locator(".badge").waitFor({ state: "hidden" });
  assert.deepEqual(bob.errors, []);
});

test("a different database epoch drops stored cursors and caches", async () => {
  const { page: carol } = await openPage(browser, server.url);
  await register(carol, "carol");
  const { page: dave } = await openPage(browser, server.url);
  await register(dave, "dave");
  await startDirect(dave, "carol");
  await send(dave, "first from dave");
  await convItem(carol, "dave").click();
  await msg(carol, "first from dave").waitFor();
  const id = await openId(carol);
  // Pretend the database was restored from a backup: another epoch, cursors far ahead.
  await carol.evaluate((id) => {
    for (const k of Object.keys(localStorage)) {
      if (k.endsWith(".epoch")) localStorage.setItem(k, JSON.stringify("restored-elsewhere"));
      if (k.endsWith(".cursors")) localStorage.setItem(k, JSON.stringify({ [id]: 9999 }));
    }
    window.addEventListener("pagehide", (e) => e.stopImmediatePropagation(), { capture: true });
  }, id);
  await carol.reload();
  await msg(carol, "first from dave").waitFor();
  // With the stale cursor (9999) new messages would never come; with it dropped they do.
  await send(dave, "second from dave");
  await msg(carol, "second from dave").waitFor();
  // The stored cursor is the real one again, and the stored epoch the server's.
  await carol.waitForFunction((id) => {
    const k = Object.keys(localStorage).find((k) => k.endsWith(".cursors"));
    return JSON.parse(localStorage.getItem(k))[id] === 2;
  }, id);
  const epoch = await carol.evaluate(() => JSON.parse(localStorage.getItem(Object.keys(localStorage).find((k) => k.endsWith(".epoch")))));
  assert.notEqual(epoch, "restored-elsewhere");
  assert.deepEqual(carol.errors, []);
});

test("unread count in the title and desktop notifications in the background", async () => {
  const { page: erin, context } = await openPage(browser, server.url);
  await context.grantPermissions(["notifications"], { origin: server.url });
  // Record notifications instead of showing them, and pretend the tab is in the background.
  await erin.addInitScript(() => {
    window.__shown = [];
    class FakeNotification {
      static permission = "granted";
      static requestPermission = async () => "granted";
      constructor(title, opts) {
        window.__shown.push({ title, body: opts && opts.body });
      }
      close() {}
    }
    window.Notification = FakeNotification;
    document.hasFocus = () => false;
  });
  await erin.reload();
  await register(erin, "erin");
  const { page: finn } = await openPage(browser, server.url);
  await register(finn, "finn");

  await erin.click("#btn-notify");
  await erin.locator("#dlg-notify[open]").waitFor();
  assert.equal(await erin.locator("#notify-insecure").isVisible(), false, "localhost is a secure context");
  await erin.locator("#notify-desktop").check();
  await erin.keyboard.press("Escape");
  assert.equal(await erin.evaluate(() => localStorage.getItem("chatd.notify")), "on");
  await startDirect(finn, "erin");
  await send(finn, "ping from finn");
  await convItem(erin, "finn").locator(".badge", { hasText: "1" }).waitFor();
  await erin.waitForFunction(() => document.title === "(1) chatd");
  await erin.waitForFunction(() => window.__shown.length === 1);
  assert.deepEqual(await erin.evaluate(() => window.__shown), [{ title: "New message from finn", body: "ping from finn" }]);
  // Own messages never notify.
  await convItem(erin, "finn").click();
  await send(erin, "my own reply");
  await msg(finn, "my own reply").waitFor();
  await erin.waitForTimeout(300);
  assert.equal(await erin.evaluate(() => window.__shown.length), 1);
  await erin.waitForFunction(() => document.title === "chatd");
  assert.deepEqual(erin.errors, []);
});
