// Message search in the web client: Ctrl+K and "/" focus the box, results follow typing
// (English prefix, a Chinese word inside a sentence, a filter), grouped by conversation with the
// match marked, errors shown; a result opens its conversation scrolled to the message,
// highlighted, with older and newer messages loaded by scrolling; the UI in Chinese.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, login, startDirect, send, msg, seed, openId, setLanguage, shot } from "./helpers.js";

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

const hits = (page) => page.locator("#search-results .search-hit");

test("search as you type, grouped results, filters, and jumping to a result", async () => {
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");
  const { page: first } = await openPage(browser, server.url);
  await register(first, "alice");
  await startDirect(first, "bob");
  await send(first, "kickoff");
  await msg(first, "kickoff").waitFor();
  const id = await openId(first);
  // A long history: the result to jump to (message 40) is far above the newest page.
  const texts = Array.from({ length: 200 }, (_, i) => `filler ${i + 2}`);
  texts[38] = "明天上午十点的评审会议";
  texts[120] = "The Café deployment is done";
  await seed(first, id, texts);
  await msg(first, "filler 201").waitFor();
  // A new device: it has only what it loads (the newest page once the chat is opened).
  const { page: alice } = await openPage(browser, server.url);
  await login(alice, "alice");
  await alice.locator("#conv-list .conv").first().click();
  await msg(alice, "filler 201").waitFor();

  // Ctrl+K focuses the search box from anywhere (here: the composer).
  await alice.focus("#input");
  await alice.keyboard.press("Control+k");
  assert.equal(await alice.evaluate(() => document.activeElement.id), "msearch");
  // English: case- and accent-insensitive, the last word as a prefix while typing.
  await alice.keyboard.type("cafe depl");
  await hits(alice).first().waitFor();
  assert.equal(await hits(alice).count(), 1);
  assert.equal(await alice.locator("#search-results mark").first().textContent(), "Café");
  assert.equal(await alice.locator("#search-results .search-group h2").textContent(), "bob");
  assert.ok(await alice.locator("#conv-list").isHidden(), "results replace the conversation list");

  // Chinese: a word inside a sentence without spaces.
  await alice.fill("#msearch", "评审");
  await alice.locator("#search-results mark", { hasText: "评审" }).waitFor();
  assert.equal(await hits(alice).count(), 1);
  await shot(alice, "search-results");

  // A filter alone: everything bob sent (nothing), then alice's messages.
  await alice.fill("#msearch", "from:bob");
  await alice.locator("#search-status", { hasText: "No messages found." }).waitFor();
  await alice.fill("#msearch", "评审 from:alice");
  await hits(alice).first().waitFor();
  // A bad query: the server's explanation, no crash.
  await alice.fill("#msearch", '"unclosed');
  await alice.locator("#search-status", { hasText: "quote" }).waitFor();
  assert.equal(await hits(alice).count(), 0);

  // Open a result: the conversation at that message, highlighted, with messages around it.
  await alice.fill("#msearch", "评审");
  await hits(alice).first().waitFor();
  await hits(alice).first().click();
  const hit = alice.locator('#msg-list li.msg.hit[data-seq="40"]');
  await hit.waitFor();
  assert.ok(await hit.isVisible());
  await shot(alice, "search-jump");
  await msg(alice, "filler 39").waitFor();
  await msg(alice, "filler 41").waitFor();
  assert.equal(await msg(alice, "filler 201").count(), 0, "the newest page is not what is shown");
  // Scrolling down loads newer messages, up loads older ones.
  for (let i = 0; i < 10 && !(await msg(alice, "filler 120").count()); i++) {
    await alice.evaluate(() => {
      const b = document.querySelector("#messages");
      b.scrollTop = b.scrollHeight;
    });
    await alice.waitForTimeout(150);
  }
  await msg(alice, "filler 120").waitFor();
  for (let i = 0; i < 10 && !(await msg(alice, "kickoff").count()); i++) {
    await alice.evaluate(() => (document.querySelector("#messages").scrollTop = 0));
    await alice.waitForTimeout(150);
  }
  await msg(alice, "kickoff").waitFor();
  const seqs = await alice.locator("#msg-list li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "one contiguous run, each message once");
  // "Jump to newest" goes back to the newest page.
  await alice.click("#btn-jump");
  await msg(alice, "filler 201").waitFor();

  // "/" focuses the box when not typing; Escape clears it and brings the list back.
  await alice.locator("#msearch").evaluate((el) => el.blur());
  await alice.focus("#btn-profile");
  await alice.keyboard.press("/");
  assert.equal(await alice.evaluate(() => document.activeElement.id), "msearch");
  await alice.keyboard.press("Escape");
  await alice.locator("#conv-list").waitFor();
  assert.equal(await alice.inputValue("#msearch"), "");
});

test("search in Chinese UI", async () => {
  const { page: carol } = await openPage(browser, server.url);
  await register(carol, "carol");
  await startDirect(carol, "alice");
  await send(carol, "发布说明已经准备好了");
  await msg(carol, "发布说明已经准备好了").waitFor();
  await setLanguage(carol, "zh");
  assert.equal(await carol.getAttribute("#msearch", "placeholder"), "搜索消息 (Ctrl+K)");
  await carol.fill("#msearch", "说明");
  await carol.locator("#search-results mark", { hasText: "说明" }).waitFor();
  await carol.fill("#msearch", "没有这个词");
  await carol.locator("#search-status", { hasText: "没有找到消息。" }).waitFor();
});
