// Issue 23 in the web client: reply (quote bar, quoted original, a click scrolls to it even when
// it has to page in older history), edit (Up arrow in an empty composer, Esc cancels, "edited"),
// delete with a confirmation ("Message deleted"), reactions (picker, chips with counts, who in
// the title, toggle), the @mention picker (arrow keys + Enter, click) with the @ badge, mute
// (grey badge, no title count unless mentioned), group rename by the owner with system lines,
// the Chinese UI and the phone layout (a tap opens the message menu as a sheet).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, login, startDirect, send, convItem, msg, openId, seed, shot, switchableSocket } from "./helpers.js";

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

const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, deviceScaleFactor: 2 };

/** Sends one frame over a second raw WebSocket as the page's user; resolves with the ack (or rejects with the error). */
function rawRequest(page, frame) {
  return page.evaluate(
    (frame) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/ws`);
        ws.onmessage = (ev) => {
          if (ev.data === "pong") return;
          const f = JSON.parse(ev.data);
          if (f.type === "welcome") ws.send(JSON.stringify({ ...frame, ref: 77 }));
          else if (f.ref === 77) {
            ws.close();
            if (f.type === "error") reject(new Error(`${f.code}: ${f.message}`));
            else resolve(f);
          }
        };
        ws.onerror = () => reject(new Error("socket failed"));
      }),
    frame,
  );
}

/** Opens the message menu of the message with `text` (the ⋯ button beside it). */
async function menuOf(page, text) {
  const m = msg(page, text);
  await m.hover();
  await m.locator(".msg-more").click();
  await page.locator("#msg-menu:not([hidden])").waitFor();
}

/** A message bubble's text element (placeholder or text). */
const body = (page, text) => msg(page, text).locator(".text");

test("reply, edit with the Up arrow, delete with a confirmation", async () => {
  const { page: alice } = await openPage(browser, server.url);
  await register(alice, "alice");
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");

  await startDirect(alice, "bob");
  await alice.fill("#input", "first line of the plan");
  await alice.keyboard.press("Shift+Enter");
  await alice.keyboard.type("second line");
  await alice.keyboard.press("Enter");
  await send(alice, "message two");
  await msg(alice, "message two").and(alice.locator("[data-status=sent], [data-status=read]")).waitFor();

  // bob replies to the two-line message: the bar says to whom, the bubble quotes its first line.
  await convItem(bob, "alice").click();
  await menuOf(bob, "first line of the plan");
  await bob.click("#msg-reply");
  await bob.locator("#compose-bar:not([hidden])", { hasText: "Replying to alice" }).waitFor();
  assert.match(await bob.locator("#compose-bar-text").textContent(), /first line of the plan/);
  await send(bob, "sounds good");
  await bob.locator("#compose-bar").waitFor({ state: "hidden" });
  for (const p of [alice, bob]) {
    const q = msg(p, "sounds good").locator(".quote");
    await q.waitFor();
    assert.equal(await q.locator("strong").textContent(), "alice");
    assert.equal(await q.locator("span").textContent(), "first line of the plan");
  }
  // Esc drops a reply before it is sent.
  await menuOf(bob, "message two");
  await bob.click("#msg-reply");
  await bob.locator("#compose-bar:not([hidden])").waitFor();
  await bob.press("#input", "Escape");
  await bob.locator("#compose-bar").waitFor({ state: "hidden" });

  // alice: Up in the empty composer edits her last message; Esc gives up, the draft comes back.
  await alice.click("#input");
  await alice.keyboard.press("ArrowUp");
  await alice.locator("#compose-bar:not([hidden])", { hasText: "Editing" }).waitFor();
  assert.equal(await alice.inputValue("#input"), "message two");
  await alice.keyboard.press("Escape");
  await alice.locator("#compose-bar").waitFor({ state: "hidden" });
  assert.equal(await alice.inputValue("#input"), "");
  // Up again, fix the text, Enter: both sides see the new text marked "edited".
  await alice.keyboard.press("ArrowUp");
  await alice.fill("#input", "message two (fixed)");
  await alice.keyboard.press("Enter");
  assert.equal(await alice.inputValue("#input"), "");
  for (const p of [alice, bob]) {
    await body(p, "message two (fixed)").waitFor();
    await msg(p, "message two (fixed)").locator(".edited:not([hidden])", { hasText: "edited" }).waitFor();
  }
  assert.equal(await msg(bob, "message two").count(), 1);

  // Delete asks first; Cancel keeps the message.
  await menuOf(alice, "message two (fixed)");
  await alice.click("#msg-delete");
  await alice.locator("#dlg-confirm[open]", { hasText: "Delete this message for everyone?" }).waitFor();
  await alice.click("#confirm-no");
  await body(alice, "message two (fixed)").waitFor();
  // Edit and delete are offered only on one's own messages.
  await menuOf(bob, "message two (fixed)");
  assert.equal(await bob.locator("#msg-edit").isHidden(), true);
  assert.equal(await bob.locator("#msg-delete").isHidden(), true);
  await bob.keyboard.press("Escape");
  await bob.locator("#msg-menu").waitFor({ state: "hidden" });
  // Delete for real: "Message deleted" on both sides, and after a reload.
  await menuOf(alice, "message two (fixed)");
  await alice.click("#msg-delete");
  await alice.click("#confirm-yes");
  for (const p of [alice, bob]) {
    await p.locator("#msg-list li.msg.deleted .text", { hasText: "Message deleted" }).waitFor();
    assert.equal(await msg(p, "message two").count(), 0);
  }
  await bob.reload();
  await bob.locator("#msg-list li.msg.deleted .text", { hasText: "Message deleted" }).waitFor();
  await msg(bob, "message two").waitFor({ state: "detached" });
  await msg(bob, "sounds good").locator(".quote", { hasText: "first line of the plan" }).waitFor();
  // The list preview of a deleted last message says so.
  await send(alice, "after the deletion");
  await convItem(bob, "alice").locator(".conv-preview", { hasText: "after the deletion" }).waitFor();

  for (const p of [alice, bob]) assert.deepEqual(p.errors, []);
});

test("a reply to an old message: the quote loads, a click pages history back to it", async () => {
  const { page: dora } = await openPage(browser, server.url);
  await register(dora, "dora");
  const { page: emil } = await openPage(browser, server.url);
  await register(emil, "emil");
  await startDirect(dora, "emil");
  await send(dora, "the very first message");
  const id = await openId(dora);
  // emil reads along (so opening the chat later starts at the newest message, not the first).
  await convItem(emil, "dora").click();
  await seed(dora, id, Array.from({ length: 160 }, (_, i) => `filler ${i + 1}`));
  // emil answers the first message over the protocol (as another device would).
  await rawRequest(emil, { type: "send", client_id: "raw-reply-1", conversation: id, text: "replying to the start", reply_to: 1 });
  await msg(emil, "filler 160").waitFor();
  await emil.reload();
  const q = msg(emil, "replying to the start").locator(".quote");
  await q.locator("span", { hasText: "the very first message" }).waitFor(); // fetched on its own
  assert.equal(await msg(emil, "the very first message").count(), 0); // not in the loaded pages yet
  await q.click();
  const first = emil.locator('#msg-list li.msg[data-seq="1"]');
  await first.waitFor();
  await emil.waitForFunction(() => {
    const el = document.querySelector('#msg-list li.msg[data-seq="1"]');
    const box = document.querySelector("#messages").getBoundingClientRect();
    const r = el && el.getBoundingClientRect();
    return r && r.top >= box.top && r.bottom <= box.bottom;
  });
  assert.deepEqual(emil.errors, []);
});

test("reactions: the picker, chips with counts, who reacted, toggling", async () => {
  const { page: fay } = await openPage(browser, server.url);
  await register(fay, "fay");
  const { page: gus } = await openPage(browser, server.url);
  await register(gus, "gus");
  await startDirect(fay, "gus");
  await send(fay, "ship it?");
  await convItem(gus, "fay").click();

  await menuOf(gus, "ship it?");
  await gus.getByRole("menuitemcheckbox", { name: "React with 👍" }).click();
  for (const p of [fay, gus]) await msg(p, "ship it?").locator(".react", { hasText: "👍1" }).waitFor();
  const chip = msg(fay, "ship it?").locator(".react");
  assert.equal(await chip.getAttribute("aria-pressed"), "false");
  assert.match(await chip.getAttribute("title"), /gus reacted with 👍/);
  // fay adds hers by clicking the chip: 2, pressed, both names.
  await chip.click();
  await msg(fay, "ship it?").locator(".react[aria-pressed=true]", { hasText: "👍2" }).waitFor();
  await msg(gus, "ship it?").locator(".react", { hasText: "👍2" }).waitFor();
  assert.match(await chip.getAttribute("title"), /gus and you reacted with 👍/);
  // A second emoji from the menu, then gus takes his 👍 back.
  await menuOf(gus, "ship it?");
  await gus.getByRole("menuitemcheckbox", { name: "React with 🎉" }).click();
  await msg(gus, "ship it?").locator(".react[aria-pressed=true]", { hasText: "👍2" }).click();
  await msg(fay, "ship it?").locator(".react", { hasText: "👍1" }).waitFor();
  await msg(fay, "ship it?").locator(".react", { hasText: "🎉1" }).waitFor();
  // After a reload (history serves the folded state) the chips are the same.
  await fay.reload();
  await msg(fay, "ship it?").locator(".react[aria-pressed=true]", { hasText: "👍1" }).waitFor();
  await msg(fay, "ship it?").locator(".react[aria-pressed=false]", { hasText: "🎉1" }).waitFor();

  // A new device (nothing cached): the newest history page ends with events (the reactions
  // after "ship it?"); a new message after them must not drop what is shown (defect: it
  // started a new run and "ship it?" vanished until paged in again).
  const { page: fay2 } = await openPage(browser, server.url);
  await login(fay2, "fay");
  await convItem(fay2, "gus").click();
  await msg(fay2, "ship it?").locator(".react", { hasText: "🎉1" }).waitFor();
  await fay2.evaluate(() => {
    window.__dropped = 0;
    new MutationObserver((recs) => {
      for (const r of recs) for (const n of r.removedNodes) if (n.textContent.includes("ship it?")) window.__dropped += 1;
    }).observe(document.querySelector("#msg-list"), { childList: true });
  });
  await send(gus, "shipping now");
  await msg(fay2, "shipping now").waitFor();
  await fay2.waitForTimeout(300);
  assert.equal(await fay2.evaluate(() => window.__dropped), 0);
  assert.equal(await msg(fay2, "ship it?").count(), 1);
  for (const p of [fay, gus, fay2]) assert.deepEqual(p.errors, []);
});

test("offline during an edit, a delete and reactions: after reconnecting, the final state once", async () => {
  const { page: kim } = await openPage(browser, server.url);
  await register(kim, "kim");
  const { page: lou } = await openPage(browser, server.url);
  await register(lou, "lou");
  await startDirect(kim, "lou");
  for (const text of ["keep me", "fix me", "drop me"]) await send(kim, text);
  await msg(kim, "drop me").and(kim.locator("[data-status=sent], [data-status=read]")).waitFor();
  const net = await switchableSocket(lou);
  await lou.reload();
  await convItem(lou, "kim").click();
  await msg(lou, "drop me").waitFor();
  net.cut();
  await lou.locator("#banner:not([hidden])").waitFor();

  // While lou is away: an edit, a delete, a reaction added and one added then taken back.
  await kim.press("#input", "ArrowUp"); // the last own message: "drop me"
  await kim.press("#input", "Escape");
  await menuOf(kim, "fix me");
  await kim.click("#msg-edit");
  await kim.fill("#input", "fixed");
  await kim.press("#input", "Enter");
  await msg(kim, "fixed").locator(".edited:not([hidden])").waitFor();
  await menuOf(kim, "drop me");
  await kim.click("#msg-delete");
  await kim.click("#confirm-yes");
  await kim.locator("#msg-list li.msg.deleted").waitFor();
  await menuOf(kim, "keep me");
  await kim.getByRole("menuitemcheckbox", { name: "React with 🎉" }).click();
  await msg(kim, "keep me").locator(".react", { hasText: "🎉1" }).waitFor();
  await menuOf(kim, "keep me");
  await kim.getByRole("menuitemcheckbox", { name: "React with 😂" }).click();
  await msg(kim, "keep me").locator(".react", { hasText: "😂1" }).click();
  await msg(kim, "keep me").locator(".react", { hasText: "😂" }).waitFor({ state: "detached" });

  net.heal();
  await lou.locator("#banner").waitFor({ state: "hidden" });
  await msg(lou, "fixed").locator(".edited:not([hidden])").waitFor();
  await lou.locator("#msg-list li.msg.deleted .text", { hasText: "Message deleted" }).waitFor();
  await msg(lou, "keep me").locator(".react", { hasText: "🎉1" }).waitFor();
  assert.equal(await msg(lou, "keep me").locator(".react").count(), 1);
  assert.equal(await msg(lou, "drop me").count(), 0);
  assert.equal(await msg(lou, "fix me").count(), 0);
  assert.deepEqual(await lou.locator("#msg-list li.msg .body").allTextContents(), ["keep me", "fixed", "Message deleted"]);
  for (const p of [kim, lou]) assert.deepEqual(p.errors, []);
});

test("mentions, the @ badge, mute, rename and system lines; Chinese on a phone", async (t) => {
  // A server of its own: the first one has had its 10 registrations a minute from this address.
  const own = tempDir();
  const server = await startServer(own.dir);
  t.after(async () => {
    await server.stop();
    own.cleanup();
  });
  const { page: hal } = await openPage(browser, server.url);
  await register(hal, "hal");
  const { page: ida } = await openPage(browser, server.url);
  await register(ida, "ida");
  const { page: jon, context: jonCtx } = await openPage(browser, server.url, { ...PHONE, locale: "zh-CN" });
  await register(jon, "jon");
  // jon chats with ida, then goes back to the list (a phone shows one pane at a time).
  await startDirect(jon, "ida");
  await send(jon, "你好");
  await msg(jon, "你好").and(jon.locator("[data-status=sent], [data-status=read]")).waitFor();
  await jon.click("#btn-back");

  await hal.click("#btn-new-group");
  await hal.fill("#group-title", "Ops");
  await hal.locator("#group-people .person", { hasText: "ida" }).click();
  await hal.locator("#group-people .person", { hasText: "jon" }).click();
  await hal.click("#group-submit");
  await hal.locator("#chat-title", { hasText: "Ops" }).waitFor();
  await hal.locator("#msg-list li.system", { hasText: "You created the group “Ops”" }).waitFor();

  // ida: typing "@" offers the members; arrow keys and Enter pick one.
  await convItem(ida, "Ops").click();
  await ida.locator("#msg-list li.system", { hasText: "hal created the group “Ops”" }).waitFor();
  await ida.click("#input");
  await ida.keyboard.type("@");
  await ida.locator("#mention-list:not([hidden])").waitFor();
  assert.deepEqual(await ida.locator("#mention-list li strong").allTextContents(), ["hal", "jon"]);
  await ida.keyboard.type("j");
  assert.deepEqual(await ida.locator("#mention-list li strong").allTextContents(), ["jon"]);
  await ida.keyboard.press("Backspace");
  await ida.keyboard.press("ArrowDown");
  await ida.locator("#mention-list li[aria-selected=true]", { hasText: "jon" }).waitFor();
  await ida.keyboard.press("Enter");
  await ida.locator("#mention-list").waitFor({ state: "hidden" });
  assert.equal(await ida.inputValue("#input"), "@jon ");
  await ida.keyboard.type("can you look?");
  await ida.keyboard.press("Enter");
  await msg(ida, "can you look?").locator(".mention", { hasText: "@jon" }).waitFor();

  // jon (muted nothing yet): unread 1 with the @ badge; the title counts it.
  const jonOps = convItem(jon, "Ops");
  await jonOps.locator(".badge", { hasText: "1" }).waitFor();
  await jonOps.locator(".at-badge").waitFor();
  assert.equal(await jon.title(), "(1) chatd");
  // jon opens it, reads, and mutes it from the conversation menu.
  await jonOps.click();
  await msg(jon, "can you look?").locator(".mention.me", { hasText: "@jon" }).waitFor();
  await jonOps.locator(".at-badge").waitFor({ state: "hidden" });
  await jon.click("#btn-conv-menu");
  await jon.locator("#menu-mute", { hasText: "消息免打扰" }).click();
  await jon.locator("#conv-menu").waitFor({ state: "hidden" });
  await jon.click("#btn-back");
  await jonOps.locator(".muted-icon.shown").waitFor();
  // Without a mention: a grey badge and no title count.
  await send(hal, "deploy at noon");
  await jonOps.locator(".badge", { hasText: "1" }).waitFor();
  assert.equal(await jonOps.evaluate((el) => el.classList.contains("muted")), true);
  assert.equal(await jon.title(), "chatd");
  // With a mention (picked with the mouse): the @ badge, and the title counts it after all.
  await hal.click("#input");
  await hal.keyboard.type("@j");
  await hal.locator("#mention-list li", { hasText: "jon" }).click();
  await hal.keyboard.type("you too");
  await hal.keyboard.press("Enter");
  await jonOps.locator(".badge", { hasText: "2" }).waitFor();
  await jonOps.locator(".at-badge").waitFor();
  assert.equal(await jon.title(), "(1) chatd");
  // Mute holds on every device: the server keeps it.
  await jon.reload();
  await convItem(jon, "Ops").locator(".muted-icon.shown").waitFor();

  // Only the owner can rename; everyone sees the new title and the line saying so.
  await convItem(ida, "Ops").click();
  await ida.click("#btn-conv-menu");
  assert.equal(await ida.locator("#menu-rename").isHidden(), true);
  await ida.keyboard.press("Escape");
  await hal.click("#btn-conv-menu");
  await hal.click("#menu-rename");
  await hal.fill("#rename-input", "Ops team");
  await hal.click("#dlg-rename button[type=submit]");
  await hal.locator("#dlg-rename").waitFor({ state: "hidden" });
  await hal.locator("#chat-title", { hasText: "Ops team" }).waitFor();
  await ida.locator("#chat-title", { hasText: "Ops team" }).waitFor();
  await ida.locator("#msg-list li.system", { hasText: "hal renamed the group to “Ops team”" }).waitFor();
  // In Chinese, on the phone: the line, and a tap on a message opens its menu as a sheet.
  await convItem(jon, "Ops team").click();
  await jon.locator("#msg-list li.system", { hasText: "hal 将群组改名为“Ops team”" }).waitFor();
  await msg(jon, "deploy at noon").locator(".bubble").tap();
  await jon.locator("#msg-menu.sheet:not([hidden])").waitFor();
  await jon.locator("#msg-reply", { hasText: "回复" }).waitFor();
  await jon.getByRole("menuitemcheckbox", { name: "用 ❤️ 回应" }).click();
  await msg(hal, "deploy at noon").locator(".react", { hasText: "❤️1" }).waitFor();
  await shot(jon, "lifecycle-phone-zh");
  await jonCtx.close();

  // ida leaves: the others see the line.
  await ida.click("#btn-info");
  await ida.click("#info-leave");
  await ida.click("#confirm-yes");
  await hal.locator("#msg-list li.system", { hasText: "ida left" }).waitFor();
  // (for the screenshot: a reply and an edit in the same view)
  await menuOf(hal, "can you look?");
  await hal.click("#msg-reply");
  await send(hal, "on it, deploying after lunch");
  await hal.press("#input", "ArrowUp");
  await hal.fill("#input", "on it, deploying right after lunch");
  await hal.press("#input", "Enter");
  await msg(hal, "deploying right after lunch").locator(".edited:not([hidden])").waitFor();
  await hal.mouse.move(0, 799);
  await hal.evaluate(() => document.activeElement && document.activeElement.blur());
  await shot(hal, "lifecycle-desktop");
  for (const p of [hal, ida]) assert.deepEqual(p.errors, []);
});
