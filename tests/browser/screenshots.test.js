// Screenshots of the main screens for README.md, saved to docs/screenshots/ when
// CHATD_SCREENSHOTS=1 (skipped otherwise): the first run (create the admin account, then where
// registration stands), log in, conversation list with an open chat, a group, the Chinese UI,
// dark mode, the phone layout (390x844), the admin screen (desktop, phone, dark) and the profile.

import { test, before, after } from "node:test";
import { startServer, tempDir, launch, openPage, register, login, startDirect, send, msg, convItem, shot, SHOTS, PASSWORD } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  if (!SHOTS) return;
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

/** Opens the conversation titled `title` and sends each text. */
async function say(page, title, ...texts) {
  await convItem(page, title).click();
  await page.locator("#chat-title", { hasText: title }).waitFor();
  for (const t of texts) {
    await send(page, t);
    await msg(page, t.slice(0, 20)).and(page.locator("[data-status=sent], [data-status=read]")).waitFor();
  }
}

/** Moves focus and the mouse out of the way so no hover or focus ring shows. */
async function settle(page) {
  await page.mouse.move(0, 799);
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
}

test("screenshots of the main screens", { skip: !SHOTS && "set CHATD_SCREENSHOTS=1" }, async () => {
  // The first run: the admin account, then where registration stands.
  const { page: alice } = await openPage(browser, server.url);
  await alice.locator("#auth-title", { hasText: "Create the admin account" }).waitFor();
  await alice.fill("#auth-name", "alice");
  await settle(alice);
  await shot(alice, "firstrun-desktop");
  await alice.fill("#auth-password", PASSWORD);
  await alice.click("#auth-submit");
  await alice.locator("#setup-reg-state", { hasText: "Registration is open" }).waitFor();
  await settle(alice);
  await shot(alice, "firstrun-setup");
  await alice.click("#setup-done");
  await alice.locator("#me-name", { hasText: "alice" }).waitFor();
  const login1 = await openPage(browser, server.url);
  await login1.page.locator("#auth-title", { hasText: "Welcome back" }).waitFor();
  await settle(login1.page);
  await shot(login1.page, "login-desktop");
  await login1.context.close();
  const people = {};
  for (const name of ["bob", "carol", "dave", "erin", "李雷"]) {
    const { page } = await openPage(browser, server.url, name === "李雷" ? { locale: "zh-CN" } : {});
    await register(page, name);
    people[name] = page;
  }
  const { bob, carol, dave, erin } = people;

  await startDirect(erin, "alice");
  await send(erin, "Welcome to the team, Alice! Ping me if you need access to anything.");
  await startDirect(people["李雷"], "alice");
  await send(people["李雷"], "你好 Alice！明天上午十点的评审会议室改到 3 楼了。");

  // The group.
  await alice.click("#btn-new-group");
  await alice.fill("#group-title", "Release crew");
  for (const n of ["bob", "carol", "dave"]) await alice.locator("#group-people .person", { hasText: n }).click();
  await alice.click("#group-submit");
  await alice.locator("#chat-title", { hasText: "Release crew" }).waitFor();
  await send(alice, "Morning team! Release 2.4 goes out today 🚀");
  await say(bob, "Release crew", "Backend is green. Migrations ran cleanly on staging.");
  await say(carol, "Release crew", "Frontend too ✅", "Changelog draft: https://example.com/changelog/2.4");
  await say(dave, "Release crew", "I'll watch the dashboards during the rollout.");
  await msg(alice, "watch the dashboards").waitFor();
  await send(alice, "Perfect. Let's start at 14:00 — I'll post updates here.");

  // Direct chats.
  await startDirect(bob, "alice");
  await send(bob, "Can you review my PR when you have a minute? It's the retry logic for the outbox.");
  await alice.locator("#conv-list .conv", { hasText: "bob" }).click();
  await msg(alice, "review my PR").waitFor();
  await send(alice, "Sure, looking now 👀");
  await send(alice, "Left two small comments.\nOtherwise looks great, ship it!");
  await send(bob, "Thanks! Fixed both 🙌");
  await startDirect(carol, "alice");
  await send(carol, "Lunch at 12?");
  await send(carol, "The new noodle place downstairs 🍜");
  await convItem(alice, "carol").locator(".badge", { hasText: "2" }).waitFor();
  await msg(alice, "Fixed both").waitFor();
  await settle(alice);
  await shot(alice, "chat-desktop");

  // The group with someone typing.
  await convItem(alice, "Release crew").click();
  await msg(alice, "I'll post updates").waitFor();
  await bob.locator("#conv-list .conv", { hasText: "Release crew" }).click();
  await bob.locator("#chat-title", { hasText: "Release crew" }).waitFor();
  const typing = alice.locator("#typing", { hasText: "bob is typing" });
  for (let i = 0; i < 5 && !(await typing.isVisible()); i++) {
    if (i) console.log(`typing indicator not shown yet (attempt ${i})`);
    await bob.type("#input", i ? " …" : "Tagging the release");
    await typing.waitFor({ timeout: 2500 }).catch(() => {});
  }
  await typing.waitFor();
  await settle(alice);
  await shot(alice, "group-desktop");

  // The Chinese UI.
  const zh = await openPage(browser, server.url, { locale: "zh-CN" });
  await login(zh.page, "alice");
  await convItem(zh.page, "李雷").click();
  await msg(zh.page, "评审会议室").waitFor();
  await send(zh.page, "收到，谢谢！我会准时到 👍");
  await msg(zh.page, "我会准时到").and(zh.page.locator("[data-status=sent], [data-status=read]")).waitFor();
  await settle(zh.page);
  await shot(zh.page, "chat-zh");

  // Dark mode.
  const dark = await openPage(browser, server.url, { colorScheme: "dark" });
  await login(dark.page, "alice");
  await convItem(dark.page, "Release crew").click();
  await msg(dark.page, "I'll post updates").waitFor();
  await settle(dark.page);
  await shot(dark.page, "group-dark");

  // Profiles: display names and colours.
  await carol.click("#btn-profile");
  await carol.fill("#profile-display", "Carol Jones");
  await carol.locator('#profile-colors input[value="teal"]').check();
  await carol.click("#profile-save");
  await carol.locator(".toast", { hasText: "Profile saved." }).waitFor();
  await settle(carol);
  await shot(carol, "profile-desktop");
  await carol.keyboard.press("Escape");
  await dave.click("#btn-profile");
  await dave.fill("#profile-display", "Dave Okafor");
  await dave.locator('#profile-colors input[value="amber"]').check();
  await dave.click("#profile-save");
  await dave.keyboard.press("Escape");
  await convItem(alice, "Carol Jones").waitFor();

  // The admin screen, with an invite link and someone who has not come yet.
  await alice.click("#btn-admin");
  await alice.click("#admin-tab-access");
  await alice.fill("#invite-uses", "5");
  await alice.click("#invite-submit");
  await alice.locator("#admin-invite-new").waitFor();
  await alice.click("#admin-tab-users");
  await alice.fill("#create-name", "frank");
  await alice.click("#create-submit");
  await alice.locator("#admin-created").waitFor();
  await alice.locator('#admin-user-list li[data-name="frank"]').waitFor();
  await settle(alice);
  await shot(alice, "admin-desktop");
  await alice.click("#admin-tab-access");
  await alice.locator("#admin-invite-list li").waitFor();
  await settle(alice);
  await shot(alice, "admin-invites");
  await alice.click("#admin-tab-server");
  await alice.locator("#admin-status .stat").first().waitFor();
  await settle(alice);
  await shot(alice, "admin-server");
  await alice.click("#admin-back");

  // Phone.
  const phone = await openPage(browser, server.url, PHONE);
  await shot(phone.page, "login-phone");
  await login(phone.page, "alice");
  await convItem(phone.page, "Release crew").waitFor();
  await startDirect(dave, "alice");
  await send(dave, "Dashboards look calm so far 📈");
  await convItem(phone.page, "dave").locator(".badge").waitFor();
  await settle(phone.page);
  await shot(phone.page, "list-phone");
  await convItem(phone.page, "bob").click();
  await msg(phone.page, "Fixed both").waitFor();
  await settle(phone.page);
  await shot(phone.page, "chat-phone");
  await phone.page.click("#btn-back");
  await phone.page.click("#btn-admin");
  await phone.page.locator('#admin-user-list li[data-name="frank"]').waitFor();
  await settle(phone.page);
  await shot(phone.page, "admin-phone");

  // The admin screen and the notification settings in dark mode.
  const darkAdmin = await openPage(browser, `${server.url}/#/admin`, { colorScheme: "dark" });
  await login(darkAdmin.page, "alice");
  await darkAdmin.page.locator('#admin-user-list li[data-name="frank"]').waitFor();
  await settle(darkAdmin.page);
  await shot(darkAdmin.page, "admin-dark");
  await darkAdmin.page.click("#admin-back");
  await darkAdmin.page.click("#btn-notify");
  await darkAdmin.page.locator("#dlg-notify[open]").waitFor();
  await settle(darkAdmin.page);
  await shot(darkAdmin.page, "notify-dark");
});
