// The Chinese UI (from the browser's language, and switched by hand, persisted), the phone
// layout at 390x844 (one pane at a time, no horizontal scrolling), dark mode, and keyboard use.
// (Closed registration and the first run: firstrun.test.js.)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, startDirect, send, msg, convItem, setLanguage, createAdmin } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  server = await startServer(tmp.dir);
  await createAdmin(server); // past the first run: pages open on "Log in"
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, deviceScaleFactor: 2 };

/** Width by which the page scrolls sideways (0 when it fits). */
const sideways = (page) => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);

test("Chinese UI from navigator.language, switchable and remembered", async () => {
  const { page } = await openPage(browser, server.url, { locale: "zh-CN" });
  await page.locator("#auth-submit", { hasText: "登录" }).waitFor();
  assert.equal(await page.getAttribute("html", "lang"), "zh-CN");
  assert.equal(await page.locator("#tab-register").textContent(), "注册");
  await register(page, "小明");
  await page.locator(".side-head h1", { hasText: "聊天" }).waitFor();
  assert.equal(await page.getAttribute("#filter", "placeholder"), "搜索会话");

  const { page: other } = await openPage(browser, server.url, { locale: "zh-CN" });
  await register(other, "李雷");
  await startDirect(other, "小明");
  await send(other, "你好！明天上午十点开会 🙂");
  await convItem(page, "李雷").click();
  await msg(page, "明天上午十点开会").waitFor();
  await send(page, "好的，收到 👍");
  const mine = page.locator("#msg-list li.msg[data-status=read]", { hasText: "好的，收到" });
  await mine.waitFor();
  assert.equal(await mine.locator(".status").getAttribute("title"), "已读");

  // Switch to English by hand; it sticks across a reload.
  await setLanguage(page, "en");
  await page.locator(".side-head h1", { hasText: "Chats" }).waitFor();
  await page.reload();
  await page.locator(".side-head h1", { hasText: "Chats" }).waitFor();
  assert.equal(await page.getAttribute("html", "lang"), "en");
  assert.deepEqual(page.errors, []);
});

test("phone layout: one pane at a time, nothing wider than the screen", async () => {
  const { page: desk } = await openPage(browser, server.url);
  await register(desk, "dana");
  const { page: phone } = await openPage(browser, server.url, PHONE);
  assert.equal(await sideways(phone), 0);
  await register(phone, "pat");
  // The list fills the screen; the chat pane is hidden.
  const side = await phone.locator(".sidebar").boundingBox();
  assert.equal(Math.round(side.width), 390);
  assert.equal(await phone.locator(".chat").isVisible(), false);

  await startDirect(desk, "pat");
  await send(desk, "Are you on your phone? This is a longer message to check that bubbles wrap nicely on a narrow screen.");
  await convItem(phone, "dana").locator(".badge", { hasText: "1" }).waitFor();
  await convItem(phone, "dana").click();
  // The chat replaces the list, with a back button.
  await msg(phone, "Are you on your phone?").waitFor();
  assert.equal(await phone.locator(".sidebar").isVisible(), false);
  assert.equal(await phone.locator("#btn-back").isVisible(), true);
  await send(phone, "Yes! Typing with my thumbs 👍");
  await send(desk, "Great, see you at https://example.com/standup");
  await msg(phone, "see you at").waitFor();
  await msg(phone, "Typing with my thumbs").and(phone.locator("[data-status=read]")).waitFor();
  assert.equal(await sideways(phone), 0);
  const bubble = await msg(phone, "Are you on your phone?").locator(".bubble").boundingBox();
  assert.ok(bubble.x >= 0 && bubble.x + bubble.width <= 390, "bubble inside the screen");
  const composer = await phone.locator("#input").boundingBox();
  assert.ok(composer.y + composer.height <= 844, "composer on screen");
  // Back returns to the list.
  await phone.click("#btn-back");
  await phone.locator(".sidebar").waitFor();
  assert.equal(await phone.locator(".chat").isVisible(), false);
  assert.deepEqual(phone.errors, []);
});

test("dark mode follows the system and the app works from the keyboard", async () => {
  const { page: a } = await openPage(browser, server.url, { colorScheme: "dark" });
  // Keyboard only: Tab to the fields, type, Enter submits.
  await a.click("#tab-register");
  await a.focus("#auth-name");
  await a.keyboard.type("kim");
  await a.keyboard.press("Tab");
  await a.keyboard.type("correct-horse-battery");
  await a.keyboard.press("Enter");
  await a.locator("#me-name", { hasText: "kim" }).waitFor();
  const bg = await a.evaluate(() => getComputedStyle(document.querySelector(".sidebar")).backgroundColor);
  assert.notEqual(bg, "rgb(255, 255, 255)", "dark sidebar");

  const { page: b } = await openPage(browser, server.url, { colorScheme: "dark" });
  await register(b, "lee");
  await startDirect(b, "kim");
  await send(b, "Morning! 🌙 Dark mode looks good?");
  await convItem(a, "lee").waitFor();
  // Focus the filter, type, Enter opens the first match; the composer gets focus.
  await a.focus("#filter");
  await a.keyboard.type("le");
  await a.keyboard.press("Enter");
  await msg(a, "Dark mode").waitFor();
  assert.equal(await a.evaluate(() => document.activeElement.id), "input");
  await a.keyboard.type("Very readable.");
  await a.keyboard.press("Enter");
  await msg(b, "Very readable.").waitFor();
  // The new-chat dialog opens, is searchable and closes with Escape.
  await a.click("#btn-new-chat");
  await a.locator("#dlg-dir[open]").waitFor();
  await a.keyboard.press("Escape");
  await a.locator("#dlg-dir[open]").waitFor({ state: "detached" });
  // Icon buttons have accessible names.
  for (const id of ["btn-new-chat", "btn-new-group", "btn-logout", "btn-send"]) {
    assert.ok(await a.getAttribute(`#${id}`, "aria-label"), `${id} has an aria-label`);
  }

  // Log out ends the session; a reload shows the login form.
  await a.click("#btn-logout");
  await a.locator("#auth").waitFor();
  await a.reload();
  await a.locator("#auth").waitFor();
  assert.deepEqual(a.errors, []);
});
