// The first hour of a server: on a server with no account the page opens on "Create the admin
// account", says that account administers the server, then shows where registration stands
// with one click to change it. Registration closed is known up front (no "Create account", how
// to get one); invite links (/#invite=CODE) open the register form and work while closed.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, PASSWORD } from "./helpers.js";

let browser;
const cleanups = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const c of cleanups) await c();
});

/** A fresh server (registrations are limited per address and minute, so one per test). */
async function freshServer(args = []) {
  const tmp = tempDir();
  const server = await startServer(tmp.dir, 0, args);
  cleanups.push(async () => (await server.stop(), tmp.cleanup()));
  return server;
}

const serverInfo = async (server) => (await fetch(`${server.url}/api/server`)).json();

test("first run: the admin account, then registration at a click; closed is known up front", async () => {
  const server = await freshServer();
  const { page: root } = await openPage(browser, server.url);
  await root.locator("#auth-title", { hasText: "Create the admin account" }).waitFor();
  assert.equal(await root.locator("#auth-tabs").isVisible(), false, "nothing to log in to yet");
  assert.match(await root.locator("#auth-note").textContent(), /will administer this server/);
  assert.equal(await root.locator("#auth-submit").textContent(), "Create admin account");
  await root.fill("#auth-name", "root");
  await root.fill("#auth-password", PASSWORD);
  await root.click("#auth-submit");

  // Where registration stands, with one click to change it.
  await root.locator("#setup").waitFor();
  assert.match(await root.locator("#setup-admin").textContent(), /root.*administrator/);
  await root.locator("#setup-reg-state", { hasText: "Registration is open: anyone who can reach this page" }).waitFor();
  await root.click("#setup-reg-toggle");
  await root.locator("#setup-reg-state", { hasText: "Registration is closed" }).waitFor();
  assert.equal((await serverInfo(server)).registration, "closed");
  assert.equal(await root.locator("#setup-reg-toggle").textContent(), "Open registration to anyone");
  await root.click("#setup-reg-toggle");
  await root.locator("#setup-reg-state", { hasText: "Registration is open" }).waitFor();
  assert.equal((await serverInfo(server)).registration, "open");
  await root.click("#setup-reg-toggle");
  await root.locator("#setup-reg-state", { hasText: "Registration is closed" }).waitFor();
  await root.click("#setup-done");
  await root.locator("#me-name", { hasText: "root" }).waitFor();
  assert.equal(await root.locator("#btn-admin").isVisible(), true, "the admin has the admin screen");
  assert.equal((await serverInfo(server)).first_run, false);

  // Someone else: log in only, and how to get an account.
  const { page: guest } = await openPage(browser, server.url);
  await guest.locator("#auth-title", { hasText: "Welcome back" }).waitFor();
  assert.equal(await guest.locator("#tab-register").isVisible(), false);
  assert.match(await guest.locator("#auth-note").textContent(), /Registration is closed.*ask an admin for an invite link/);
  assert.equal(await guest.locator("#auth-submit").textContent(), "Log in");
  // Wrong password: a clear message, no session; the right one logs in.
  await guest.fill("#auth-name", "root");
  await guest.fill("#auth-password", "wrong-password");
  await guest.click("#auth-submit");
  await guest.locator("#auth-error", { hasText: "Wrong name or password" }).waitFor();
  await guest.fill("#auth-password", PASSWORD);
  await guest.click("#auth-submit");
  await guest.locator("#me-name", { hasText: "root" }).waitFor();

  // In Chinese too.
  const { page: zh } = await openPage(browser, server.url, { locale: "zh-CN" });
  await zh.locator("#auth-note", { hasText: "本服务器已关闭注册" }).waitFor();
  for (const p of [root, guest, zh]) assert.deepEqual(p.errors, []);
});

test("closed after the page loaded: the refusal says so and the form offers log in only", async () => {
  const server = await freshServer();
  const { page: root } = await openPage(browser, server.url);
  await register(root, "root");
  const { page } = await openPage(browser, server.url);
  await page.click("#tab-register");
  // The admin closes registration meanwhile.
  await root.click("#btn-admin");
  await root.click("#admin-tab-access");
  await root.locator("#admin-reg-toggle", { hasText: "Close registration" }).click();
  await root.locator("#admin-reg-state", { hasText: "Registration is closed" }).waitFor();
  await page.fill("#auth-name", "newcomer");
  await page.fill("#auth-password", PASSWORD);
  await page.click("#auth-submit");
  await page.locator("#auth-error", { hasText: "Registration is closed" }).waitFor();
  assert.equal(await page.locator("#tab-register").isVisible(), false);
  assert.equal(await page.locator("#auth-submit").textContent(), "Log in");
  assert.deepEqual(page.errors, []);
});

test("invite links open the register form and work while registration is closed", async () => {
  const server = await freshServer(["--registration", "closed"]);
  const { page: root } = await openPage(browser, server.url);
  await register(root, "root");
  await root.click("#btn-admin");
  await root.click("#admin-tab-access");
  await root.locator("#admin-reg-state", { hasText: "Registration is closed" }).waitFor();
  // A link for two people.
  await root.fill("#invite-uses", "2");
  await root.selectOption("#invite-expiry", "24");
  await root.click("#invite-submit");
  await root.locator("#admin-invite-new").waitFor();
  const link = await root.inputValue("#invite-link");
  assert.match(link, new RegExp(`^${server.url}/#invite=[A-Za-z0-9_-]{22,}$`));
  await root.locator("#admin-invite-list li", { hasText: "2 uses left" }).waitFor();

  const { page: ana } = await openPage(browser, link);
  await ana.locator("#auth-title", { hasText: "You're invited" }).waitFor();
  assert.equal(await ana.locator("#tab-register").getAttribute("aria-selected"), "true");
  assert.match(await ana.locator("#auth-note").textContent(), /invited you/);
  await ana.fill("#auth-name", "ana");
  await ana.fill("#auth-password", PASSWORD);
  await ana.click("#auth-submit");
  await ana.locator("#me-name", { hasText: "ana" }).waitFor();
  assert.equal(await ana.evaluate(() => location.hash), "", "the used link leaves the address bar");
  assert.equal(await ana.locator("#btn-admin").isVisible(), false, "not an admin");

  const { page: ben } = await openPage(browser, link);
  await register(ben, "ben");
  // Used up: the third person is told, in words.
  const { page: cy } = await openPage(browser, link);
  await cy.fill("#auth-name", "cy");
  await cy.fill("#auth-password", PASSWORD);
  await cy.click("#auth-submit");
  await cy.locator("#auth-error", { hasText: "This invite link is invalid, used up or expired" }).waitFor();

  // A revoked link stops working; the list updates.
  await root.click("#admin-tab-users");
  await root.click("#admin-tab-access");
  await root.locator("#admin-invite-empty").waitFor();
  await root.click("#invite-submit");
  await root.locator("#admin-invite-list li").waitFor();
  const second = await root.inputValue("#invite-link");
  await root.locator("#admin-invite-list li").getByRole("button", { name: "Revoke" }).click();
  await root.click("#confirm-yes");
  await root.locator("#admin-invite-empty").waitFor();
  const { page: dee } = await openPage(browser, second);
  await dee.fill("#auth-name", "dee");
  await dee.fill("#auth-password", PASSWORD);
  await dee.click("#auth-submit");
  await dee.locator("#auth-error", { hasText: "invalid, used up or expired" }).waitFor();

  // Opened while logged in, a link changes nothing.
  await ana.goto(link);
  await ana.locator(".toast", { hasText: "You are logged in as ana" }).waitFor();
  assert.equal(await ana.evaluate(() => location.hash), "");
  await ana.reload();
  await ana.goto(link.replace("/#", "/?x#")); // a real load with the link
  await ana.locator("#me-name", { hasText: "ana" }).waitFor();
  await ana.locator(".toast", { hasText: "You are logged in as ana" }).waitFor();
  for (const p of [root, ana, ben, cy, dee]) assert.deepEqual(p.errors, []);
});
