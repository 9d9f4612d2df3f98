// Two people in two browser contexts: register, chat both ways, unread badges, read receipts,
// typing, multi-line and emoji, a reload that keeps history and the open chat, and groups.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, startDirect, send, convItem, msg } from "./helpers.js";

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

test("two users chat both ways with unread badges, receipts, typing and groups", async () => {
  const { page: alice } = await openPage(browser, server.url);
  await register(alice, "alice");
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");
  const { page: carol } = await openPage(browser, server.url);
  await register(carol, "carol");

  // alice starts a direct chat with bob from the directory; the first send creates it.
  await startDirect(alice, "bob");
  await send(alice, "Hi Bob! 👋 Ready for the release?");
  const first = msg(alice, "Ready for the release?");
  await first.waitFor();
  await assert.doesNotReject(first.and(alice.locator("[data-status=sent], [data-status=read]")).waitFor());

  // bob sees the new conversation with an unread badge and the preview, without opening it.
  const bobItem = convItem(bob, "alice");
  await bobItem.locator(".badge", { hasText: "1" }).waitFor();
  assert.match(await bobItem.locator(".conv-preview").textContent(), /Ready for the release/);
  assert.equal(await bob.title(), "(1) chatd");

  // alice's message is "sent" until bob opens the chat; then it turns "read" live.
  assert.equal(await first.getAttribute("data-status"), "sent");
  await bobItem.click();
  await msg(bob, "Ready for the release?").waitFor();
  await alice.locator("#msg-list li.msg[data-status=read]", { hasText: "Ready for the release?" }).waitFor();
  await bobItem.locator(".badge").waitFor({ state: "hidden" });
  assert.equal(await bob.title(), "chatd");

  // bob types: alice sees the typing indicator; then a two-line reply (Shift+Enter).
  await bob.type("#input", "Yes");
  await alice.locator("#typing", { hasText: "bob is typing" }).waitFor();
  await bob.keyboard.press("Shift+Enter");
  await bob.keyboard.type("all green ✅ 发布吧");
  await bob.keyboard.press("Enter");
  const reply = msg(alice, "all green ✅ 发布吧");
  await reply.waitFor();
  assert.equal(await reply.locator(".text").textContent(), "Yes\nall green ✅ 发布吧");
  await alice.locator("#typing:empty").waitFor();
  await msg(bob, "all green").and(bob.locator("[data-status=read]")).waitFor();

  // A long unbroken line wraps inside the bubble instead of widening the page.
  await send(alice, "x".repeat(400));
  await msg(alice, "xxxxxxxx").waitFor();
  const overflow = await alice.evaluate(() => document.querySelector("#messages").scrollWidth - document.querySelector("#messages").clientWidth);
  assert.ok(overflow <= 0, `message list overflows horizontally by ${overflow}px`);

  // A link is clickable, safely; other schemes stay text.
  await send(bob, "docs at https://example.com/guide. not javascript:alert(1)");
  const link = msg(alice, "docs at").locator("a");
  await link.waitFor();
  assert.equal(await link.getAttribute("href"), "https://example.com/guide");
  assert.equal(await link.getAttribute("rel"), "noopener noreferrer");
  assert.equal(await link.getAttribute("target"), "_blank");
  assert.equal(await msg(alice, "docs at").locator("a").count(), 1);

  // The filter narrows the list by name.
  await startDirect(carol, "alice");
  await send(carol, "hello from carol");
  await convItem(alice, "carol").waitFor();
  // Newest activity first.
  assert.equal(await alice.locator("#conv-list .conv-title").first().textContent(), "carol");
  await alice.fill("#filter", "ca");
  await alice.locator("#conv-list .conv").first().waitFor();
  assert.deepEqual(await alice.locator("#conv-list .conv-title").allTextContents(), ["carol"]);
  await alice.fill("#filter", "");
  await convItem(alice, "bob").waitFor();

  // A reload keeps the session, the open chat and its history.
  await alice.reload();
  await alice.locator("#chat-title", { hasText: "bob" }).waitFor();
  await msg(alice, "Ready for the release?").waitFor();
  await msg(alice, "all green").waitFor();
  await alice.locator("#msg-list li.msg[data-status=read]", { hasText: "Ready for the release?" }).waitFor();

  // Groups: alice creates one with bob and carol.
  await alice.click("#btn-new-group");
  await alice.fill("#group-title", "Release crew");
  await alice.locator("#group-people .person", { hasText: "bob" }).click();
  await alice.locator("#group-people .person", { hasText: "carol" }).click();
  await alice.locator("#group-count", { hasText: "2" }).waitFor();
  await alice.click("#group-submit");
  await alice.locator("#chat-title", { hasText: "Release crew" }).waitFor();
  await alice.locator("#chat-sub", { hasText: "3 members" }).waitFor();
  await send(alice, "Kickoff in 5 minutes");
  await convItem(bob, "Release crew").click();
  await msg(bob, "Kickoff in 5 minutes").waitFor();
  await send(bob, "On my way");
  await send(bob, "Bringing coffee ☕");
  await convItem(carol, "Release crew").click();
  await send(carol, "Same here");
  // In a group, others' messages carry the sender's name.
  await msg(alice, "On my way").locator(".sender", { hasText: "bob" }).waitFor();
  await msg(alice, "Same here").locator(".sender", { hasText: "carol" }).waitFor();
  // Everyone read alice's message: "read".
  await alice.locator("#msg-list li.msg[data-status=read]", { hasText: "Kickoff" }).waitFor();

  // The owner removes carol; carol's list drops the group.
  await alice.click("#btn-info");
  await alice.locator("#info-members .person", { hasText: "carol" }).waitFor();
  await alice.locator("#info-members .person", { hasText: "carol" }).getByRole("button").click();
  await alice.locator("#info-members .person", { hasText: "carol" }).waitFor({ state: "detached" });
  await alice.locator("#info-sub", { hasText: "2 members" }).waitFor();
  await alice.keyboard.press("Escape");
  await convItem(carol, "Release crew").waitFor({ state: "detached" });
  // The owner adds her back.
  await alice.click("#btn-info");
  await alice.click("#info-add");
  await alice.locator("#group-people .person", { hasText: "carol" }).click();
  await alice.click("#group-submit");
  await convItem(carol, "Release crew").waitFor();
  // bob leaves.
  await bob.click("#btn-info");
  await bob.click("#info-leave");
  await bob.click("#confirm-yes");
  await convItem(bob, "Release crew").waitFor({ state: "detached" });
  await alice.locator("#chat-sub", { hasText: "2 members" }).waitFor();

  for (const p of [alice, bob, carol]) assert.deepEqual(p.errors, []);
});
