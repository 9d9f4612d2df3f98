// Profiles: a display name and avatar colour reach the other people live (list, header, group
// senders, directory), a password change needs the current one and signs out the other devices
// but not this one, and "sign out other devices" does what it says.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, login, startDirect, send, msg, convItem, PASSWORD } from "./helpers.js";

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

test("display name and colour reach the others live", async () => {
  const { page: alice } = await openPage(browser, server.url);
  await register(alice, "alice");
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");
  const { page: carol } = await openPage(browser, server.url);
  await register(carol, "carol");
  await startDirect(bob, "alice");
  await send(bob, "hi alice");
  await convItem(alice, "bob").waitFor();
  // A group with all three, where alice's messages carry her name.
  await alice.click("#btn-new-group");
  await alice.fill("#group-title", "Book club");
  for (const n of ["bob", "carol"]) await alice.locator("#group-people .person", { hasText: n }).click();
  await alice.click("#group-submit");
  await send(alice, "first chapter tonight");
  await convItem(carol, "Book club").click();
  await msg(carol, "first chapter tonight").locator(".sender", { hasText: "alice" }).waitFor();

  await alice.click("#btn-profile");
  await alice.locator("#dlg-profile[open]").waitFor();
  assert.equal(await alice.locator("#profile-sub").textContent(), "Account name: alice");
  await alice.fill("#profile-display", "Alice Liddell");
  await alice.locator('#profile-colors input[value="teal"]').check();
  // The preview follows the form.
  assert.equal(await alice.locator("#profile-title").textContent(), "Alice Liddell");
  assert.equal(await alice.locator("#profile-avatar").getAttribute("data-color"), "teal");
  await alice.click("#profile-save");
  await alice.locator(".toast", { hasText: "Profile saved." }).waitFor();
  await alice.keyboard.press("Escape");
  await alice.locator("#me-name", { hasText: "Alice Liddell" }).waitFor();
  assert.equal(await alice.locator("#me-avatar").getAttribute("data-color"), "teal");

  // bob's direct conversation is titled with the display name, in her colour, live.
  await convItem(bob, "Alice Liddell").waitFor();
  await bob.locator("#chat-title", { hasText: "Alice Liddell" }).waitFor();
  assert.equal(await convItem(bob, "Alice Liddell").locator(".avatar").getAttribute("data-color"), "teal");
  // carol sees it on the message already on screen, and in the directory.
  await msg(carol, "first chapter tonight").locator(".sender", { hasText: "Alice Liddell" }).waitFor();
  assert.equal(await msg(carol, "first chapter tonight").locator(".avatar").getAttribute("data-color"), "teal");
  await carol.click("#btn-new-chat");
  await carol.fill("#dir-search", "ali");
  await carol.locator("#dir-list .person", { hasText: "Alice Liddell" }).waitFor();
  await carol.keyboard.press("Escape");
  // A reload keeps it (it comes from the server).
  await bob.reload();
  await convItem(bob, "Alice Liddell").waitFor();

  // Cleared, the account name is shown again.
  await alice.click("#btn-profile");
  await alice.fill("#profile-display", "");
  await alice.click("#profile-save");
  await alice.locator(".toast", { hasText: "Profile saved." }).last().waitFor();
  await alice.keyboard.press("Escape");
  await convItem(bob, "alice").waitFor();
  await alice.locator("#me-name", { hasText: /^alice$/ }).waitFor();
  for (const p of [alice, bob, carol]) assert.deepEqual(p.errors, []);
});

test("a password change signs out the other devices but not this one", async () => {
  const { page: dan } = await openPage(browser, server.url);
  await register(dan, "dan");
  const { page: danPhone } = await openPage(browser, server.url);
  await login(danPhone, "dan");
  const { page: eve } = await openPage(browser, server.url);
  await register(eve, "eve");
  await startDirect(eve, "dan");
  await send(eve, "hello dan");
  await convItem(danPhone, "eve").waitFor();

  await dan.click("#btn-profile");
  await dan.fill("#pw-current", "not-my-password");
  await dan.fill("#pw-new", "a-new-password-1");
  await dan.click("#pw-save");
  await dan.locator("#password-error", { hasText: "The current password is wrong." }).waitFor();
  await dan.fill("#pw-current", PASSWORD);
  await dan.fill("#pw-new", "short");
  await dan.click("#pw-save");
  await dan.locator("#password-error", { hasText: "at least 8 characters" }).waitFor();
  await dan.fill("#pw-new", "a-new-password-1");
  await dan.click("#pw-save");
  await dan.locator(".toast", { hasText: "Password changed" }).waitFor();
  await dan.keyboard.press("Escape");

  // The other device is sent to the log-in page; this one keeps chatting.
  await danPhone.locator("#auth").waitFor({ timeout: 15000 });
  await danPhone.locator("#auth-error", { hasText: "Your session has ended" }).waitFor();
  await convItem(dan, "eve").click();
  await send(dan, "still here");
  await msg(eve, "still here").waitFor();
  await dan.reload();
  await dan.locator("#me-name", { hasText: "dan" }).waitFor();
  // The new password works, the old one does not.
  await danPhone.fill("#auth-name", "dan");
  await danPhone.fill("#auth-password", PASSWORD);
  await danPhone.click("#auth-submit");
  await danPhone.locator("#auth-error", { hasText: "Wrong name or password" }).waitFor();
  await danPhone.fill("#auth-password", "a-new-password-1");
  await danPhone.click("#auth-submit");
  await danPhone.locator("#me-name", { hasText: "dan" }).waitFor();

  // Sign out other devices: the phone goes, this browser stays.
  await dan.click("#btn-profile");
  await dan.click("#profile-logout-others");
  await dan.click("#confirm-yes");
  await dan.locator(".toast", { hasText: "Your other devices were signed out." }).waitFor();
  await dan.keyboard.press("Escape");
  await danPhone.locator("#auth").waitFor({ timeout: 15000 });
  await send(dan, "and still here");
  await msg(eve, "and still here").waitFor();
  for (const p of [dan, eve]) assert.deepEqual(p.errors, []);
});
