// Defects of issue 21 found by trying the client as a new user; each test failed before its fix:
// 1. switching the language duplicated conversations in the list; 2. a conversation with more
// than 100 unread messages opened in the wrong place; 4. presence stayed green while the
// connection was down; 5. the connection banner hid the newest message.

import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  startServer,
  tempDir,
  launch,
  openPage,
  register,
  login,
  startDirect,
  send,
  msg,
  convItem,
  seed,
  openId,
  switchableSocket,
  setLanguage,
} from "./helpers.js";

let browser;
let server;
const servers = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

// Each test gets its own server: registrations are limited to 10 per address and minute.
beforeEach(async () => {
  const tmp = tempDir();
  const s = await startServer(tmp.dir);
  server = s;
  servers.push({ stop: async () => (await s.stop(), tmp.cleanup()) });
});

test("1. switching the language keeps one list entry per conversation", async () => {
  const { page: ann } = await openPage(browser, server.url);
  await register(ann, "ann");
  for (const name of ["ben", "cat", "dan"]) {
    const { page, context } = await openPage(browser, server.url);
    await register(page, name);
    await startDirect(page, "ann");
    await send(page, `hello from ${name}`);
    await msg(page, `hello from ${name}`).and(page.locator("[data-status=sent], [data-status=read]")).waitFor();
    await context.close();
  }
  await ann.locator("#conv-list .conv").nth(2).waitFor();
  assert.equal(await ann.locator("#conv-list .conv").count(), 3);

  await setLanguage(ann, "zh");
  await ann.locator(".side-head h1", { hasText: "聊天" }).waitFor();
  await ann.waitForTimeout(200);
  assert.deepEqual((await ann.locator("#conv-list .conv-title").allTextContents()).sort(), ["ben", "cat", "dan"]);
  // Every entry is live and in Chinese (a frozen copy would keep the English time).
  assert.equal(await ann.locator("#conv-list .conv-time", { hasText: /ago|just now/ }).count(), 0);
  await setLanguage(ann, "en");
  await ann.locator(".side-head h1", { hasText: "Chats" }).waitFor();
  await ann.waitForTimeout(200);
  assert.equal(await ann.locator("#conv-list .conv").count(), 3);
  assert.deepEqual(ann.errors, []);
});

/** Index of the first `li.msg` after the unread divider, its seq, and where both are on screen. */
const dividerState = (page) =>
  page.evaluate(() => {
    const box = document.querySelector("#messages").getBoundingClientRect();
    const sep = document.querySelector("#msg-list .unread-sep");
    if (!sep) return null;
    let next = sep.nextElementSibling;
    while (next && !next.classList.contains("msg")) next = next.nextElementSibling;
    const r = sep.getBoundingClientRect();
    return { seq: next ? Number(next.dataset.seq) : null, top: r.top - box.top, bottom: r.bottom - box.top, height: box.height };
  });

/** Checks the view of a conversation opened with unread messages from `firstUnread` to `last`. */
async function checkOpensAtFirstUnread(page, firstUnread, last) {
  await page.waitForFunction((seq) => {
    const sep = document.querySelector("#msg-list .unread-sep");
    const next = sep && sep.nextElementSibling;
    return next && Number(next.dataset.seq) === seq;
  }, firstUnread);
  await page.waitForTimeout(400); // any further paging or scrolling would happen now
  const d = await dividerState(page);
  assert.equal(d.seq, firstUnread, "the divider is right above the first unread message");
  assert.ok(d.top >= 0 && d.bottom <= d.height / 2, `the divider is in the top half of the view (${d.top}..${d.bottom} of ${d.height})`);
  // Nothing between the first unread and the newest is missing: scrolling down reaches the end.
  const seqs = await page.locator("#msg-list li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  const from = seqs.indexOf(firstUnread);
  assert.deepEqual(seqs.slice(from), Array.from({ length: last - firstUnread + 1 }, (_, i) => firstUnread + i));
  for (let i = 0; i < 40; i++) {
    const done = await page.evaluate(() => {
      const b = document.querySelector("#messages");
      b.scrollTop += b.clientHeight * 0.9;
      return b.scrollHeight - b.scrollTop - b.clientHeight < 2;
    });
    if (done) break;
    await page.waitForTimeout(30);
  }
  await msg(page, `message ${last}`).waitFor();
  const lastBox = await msg(page, `message ${last}`).boundingBox();
  const pane = await page.locator("#messages").boundingBox();
  assert.ok(lastBox.y + lastBox.height <= pane.y + pane.height + 1, "the newest message is in view at the end");
  // Read once the end is on screen.
  await convItem(page, "fay").locator(".badge").waitFor({ state: "hidden" });
}

test("2. a conversation with 250 unread messages opens at the first unread one", async () => {
  const { page: eve } = await openPage(browser, server.url);
  await register(eve, "eve");
  const { page: fay } = await openPage(browser, server.url);
  await register(fay, "fay");
  await startDirect(fay, "eve");
  for (let i = 1; i <= 20; i++) await send(fay, `message ${i}`);
  await msg(fay, "message 20").and(fay.locator("[data-status=sent], [data-status=read]")).waitFor();
  const id = await openId(fay);
  await convItem(eve, "fay").click();
  await msg(eve, "message 20").waitFor();
  await eve.click("#btn-jump");
  await convItem(eve, "fay").locator(".badge").waitFor({ state: "hidden" });

  // eve goes away (her tab is closed); 250 messages arrive; she comes back on the same browser.
  const ctx = eve.context();
  await eve.goto("about:blank");
  await seed(fay, id, Array.from({ length: 250 }, (_, i) => `message ${i + 21}`));
  const again = await ctx.newPage();
  again.errors = [];
  again.on("pageerror", (e) => again.errors.push(String(e)));
  await again.goto(server.url);
  await convItem(again, "fay").locator(".badge", { hasText: "99+" }).waitFor();
  await convItem(again, "fay").click();
  await checkOpensAtFirstUnread(again, 21, 270);
  assert.deepEqual(again.errors, []);
  await again.close();

  // On a new device (nothing cached), the history is paged in back to the first unread one.
  await seed(fay, id, Array.from({ length: 230 }, (_, i) => `message ${i + 271}`));
  const { page: phone } = await openPage(browser, server.url);
  await login(phone, "eve");
  await convItem(phone, "fay").locator(".badge", { hasText: "99+" }).waitFor();
  await convItem(phone, "fay").click();
  await checkOpensAtFirstUnread(phone, 271, 500);
  assert.deepEqual(phone.errors, []);
});

test("4. presence shows as unknown while the connection is down", async () => {
  const { page: gil } = await openPage(browser, server.url);
  await register(gil, "gil");
  const { page: hal } = await openPage(browser, server.url);
  await register(hal, "hal");
  await startDirect(hal, "gil");
  await send(hal, "are you there?");
  const sock = await switchableSocket(gil);
  await gil.reload();
  await convItem(gil, "hal").click();
  await msg(gil, "are you there?").waitFor();
  await convItem(gil, "hal").locator(".dot.online").waitFor();
  await gil.locator("#chat-sub", { hasText: "online" }).waitFor();

  sock.cut();
  await gil.locator("#banner:not([hidden])").waitFor();
  // hal is still connected, but gil cannot know: grey, not green, and not "online".
  await convItem(gil, "hal").locator(".dot:not(.online)").waitFor();
  await gil.locator("#chat-dot:not(.online)").waitFor();
  assert.notEqual((await gil.locator("#chat-sub").textContent()).trim(), "online");

  sock.heal();
  await gil.locator("#banner-retry").click({ timeout: 2000 }).catch(() => {});
  await gil.locator("#banner").waitFor({ state: "hidden", timeout: 15000 });
  await convItem(gil, "hal").locator(".dot.online").waitFor();
  await gil.locator("#chat-sub", { hasText: "online" }).waitFor();
  assert.deepEqual(gil.errors, []);
});

for (const [label, opts] of [
  ["desktop", {}],
  ["phone", { viewport: { width: 390, height: 844 }, isMobile: true, deviceScaleFactor: 2 }],
]) {
  test(`5. the connection banner does not hide the newest message (${label})`, async () => {
    const a = `ivy${label[0]}`;
    const b = `jon${label[0]}`;
    const { page: ivy } = await openPage(browser, server.url, opts);
    await register(ivy, a);
    const { page: jon } = await openPage(browser, server.url);
    await register(jon, b);
    await startDirect(jon, a);
    await send(jon, "message 1");
    await msg(jon, "message 1").waitFor();
    const id = await openId(jon);
    await seed(jon, id, Array.from({ length: 39 }, (_, i) => `message ${i + 2}`));
    const sock = await switchableSocket(ivy);
    await ivy.reload();
    await convItem(ivy, b).click();
    await msg(ivy, "message 40").waitFor();
    await ivy.click("#btn-jump");
    await convItem(ivy, b).locator(".badge").waitFor({ state: "hidden" });
    await ivy.waitForTimeout(500);
    const visible = async () => {
      const last = await msg(ivy, "message 40").boundingBox();
      const pane = await ivy.locator("#messages").boundingBox();
      return last.y + last.height <= pane.y + pane.height + 1;
    };
    assert.ok(await visible(), "the newest message is in view before");
    sock.cut();
    await ivy.locator("#banner:not([hidden])").waitFor();
    await ivy.waitForTimeout(300);
    assert.ok(await visible(), "the newest message is in view while the banner shows");
    sock.heal();
    await ivy.locator("#banner-retry").click({ timeout: 2000 }).catch(() => {});
    await ivy.locator("#banner").waitFor({ state: "hidden", timeout: 15000 });
    await ivy.waitForTimeout(300);
    assert.ok(await visible(), "the newest message is in view after");
    assert.deepEqual(ivy.errors, []);
  });
}
