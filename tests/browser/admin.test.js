// The admin screen: only for admins; create an account (generated password shown once, and it
// works), disable (signed out at once) and enable, reset a password, make and revoke admin
// (never the last one), server status and the backup download; on a phone too.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { startServer, tempDir, launch, openPage, register, login, PASSWORD } from "./helpers.js";

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
const row = (page, name) => page.locator(`#admin-user-list li[data-name="${name}"]`);

/** Logs `name` in with `password` on a new page; resolves to the page. */
async function loginWith(name, password) {
  const { page } = await openPage(browser, server.url);
  await page.locator("#auth").waitFor();
  await page.fill("#auth-name", name);
  await page.fill("#auth-password", password);
  await page.click("#auth-submit");
  return page;
}

test("admins manage accounts, others never see the screen", async () => {
  const { page: root } = await openPage(browser, server.url);
  await register(root, "root"); // the first account: admin
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");

  // Not for bob: no button, #/admin shows nothing, the API says 403.
  assert.equal(await bob.locator("#btn-admin").isVisible(), false);
  await bob.goto(`${server.url}/#/admin`);
  await bob.locator("#me-name", { hasText: "bob" }).waitFor();
  assert.equal(await bob.locator("#admin").isVisible(), false);
  assert.equal(await bob.evaluate(async () => (await fetch("/api/admin/users")).status), 403);

  await root.click("#btn-admin");
  await root.locator("#admin").waitFor();
  assert.equal(await root.evaluate(() => location.hash), "#/admin");
  await row(root, "bob").waitFor();
  assert.match(await row(root, "root").textContent(), /admin/);
  assert.match(await row(root, "bob").locator(".row-seen").textContent(), /Online now/);

  // Create an account with a generated password; it works once given out.
  await root.fill("#create-name", "carol");
  await root.click("#create-submit");
  await root.locator("#admin-created-text", { hasText: "Account carol created" }).waitFor();
  const generated = await root.inputValue("#admin-created-pw");
  assert.ok(generated.length >= 12, `generated password ${generated}`);
  await row(root, "carol").locator(".row-seen", { hasText: "Never connected" }).waitFor();
  const carol = await loginWith("carol", generated);
  await carol.locator("#me-name", { hasText: "carol" }).waitFor();
  // A name that is taken (or looks like one) is refused with the server's words.
  await root.fill("#create-name", "Bob");
  await root.fill("#create-password", PASSWORD);
  await root.click("#create-submit");
  await root.locator("#admin-create-error", { hasText: /taken|looks like/ }).waitFor();

  // Disable carol: she is signed out at once and cannot log in; enable: she can.
  await row(root, "carol").getByRole("button", { name: "Disable: carol" }).click();
  await root.click("#confirm-yes");
  await row(root, "carol").locator(".tag", { hasText: "disabled" }).waitFor();
  await carol.locator("#auth").waitFor({ timeout: 15000 });
  await carol.fill("#auth-name", "carol");
  await carol.fill("#auth-password", generated);
  await carol.click("#auth-submit");
  await carol.locator("#auth-error", { hasText: "This account is disabled." }).waitFor();
  await row(root, "carol").getByRole("button", { name: "Enable: carol" }).click();
  await row(root, "carol").locator(".tag", { hasText: "disabled" }).waitFor({ state: "detached" });
  await carol.click("#auth-submit");
  await carol.locator("#me-name", { hasText: "carol" }).waitFor();

  // Reset bob's password: shown once; bob is signed out; the new one works.
  await row(root, "bob").getByRole("button", { name: "Reset password: bob" }).click();
  await root.click("#confirm-yes");
  await root.locator("#dlg-secret[open]").waitFor();
  assert.match(await root.locator("#secret-title").textContent(), /New password for bob/);
  const fresh = await root.inputValue("#secret-value");
  await root.locator("#dlg-secret .dlg-close").click();
  await bob.locator("#auth").waitFor({ timeout: 15000 });
  const bob2 = await loginWith("bob", fresh);
  await bob2.locator("#me-name", { hasText: "bob" }).waitFor();

  // Make bob an admin: he gets the screen (after a reload); revoke it again.
  await row(root, "bob").getByRole("button", { name: "Make admin: bob" }).click();
  await root.click("#confirm-yes");
  await row(root, "bob").locator(".tag", { hasText: "admin" }).waitFor();
  await bob2.reload();
  await bob2.locator("#btn-admin").waitFor();
  await row(root, "bob").getByRole("button", { name: "Remove admin: bob" }).click();
  await root.click("#confirm-yes");
  await row(root, "bob").locator(".tag", { hasText: "admin" }).waitFor({ state: "detached" });
  // The last admin cannot drop their own rights.
  await row(root, "root").getByRole("button", { name: "Remove admin: root" }).click();
  await root.click("#confirm-yes");
  await root.locator(".toast", { hasText: "without an admin" }).waitFor();
  await row(root, "root").locator(".tag", { hasText: "admin" }).waitFor();

  // Server status and a backup download.
  await root.click("#admin-tab-server");
  await root.locator("#admin-status .stat-users dd", { hasText: "3" }).waitFor();
  assert.match(await root.locator("#admin-status .stat-version dd").textContent(), /\d+\.\d+\.\d+/);
  assert.match(await root.locator("#admin-status .stat-database dd").textContent(), /\d+ (KB|MB)/);
  const [download] = await Promise.all([root.waitForEvent("download"), root.click("#admin-backup")]);
  assert.match(download.suggestedFilename(), /^chatd-backup-\d{8}-\d{6}\.redb$/);
  const file = readFileSync(await download.path());
  assert.ok(file.length > 4096, `backup of ${file.length} bytes`);
  assert.equal(file.subarray(0, 9).toString("latin1"), "redb\x1a\x0a\xa9\x0d\x0a".slice(0, 9), "a redb file");

  // Back (and the browser's Back) returns to the chat.
  await root.click("#admin-back");
  await root.locator("#admin").waitFor({ state: "hidden" });
  await root.click("#btn-admin");
  await root.locator("#admin").waitFor();
  await root.goBack();
  await root.locator("#admin").waitFor({ state: "hidden" });
  for (const p of [root, bob2, carol]) assert.deepEqual(p.errors, []);
});

test("the admin screen on a phone, in Chinese, from the keyboard", async () => {
  const { page } = await openPage(browser, server.url, { ...PHONE, locale: "zh-CN" });
  await login(page, "root");
  await page.click("#btn-admin");
  await page.locator("#admin-title", { hasText: "管理" }).waitFor();
  await page.locator('#admin-user-list li[data-name="carol"]').waitFor();
  const wide = await page.evaluate(() => document.querySelector(".admin-body").scrollWidth - document.querySelector(".admin-body").clientWidth);
  assert.equal(wide, 0, "nothing wider than the screen");
  for (const b of await page.locator("#admin-user-list .row-actions button").all()) {
    const box = await b.boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 390, "buttons on screen");
  }
  // Arrow keys move between the tabs.
  await page.focus("#admin-tab-users");
  await page.keyboard.press("ArrowRight");
  await page.locator("#admin-access:not([hidden])").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "admin-tab-access");
  await page.locator("#admin-reg-toggle", { hasText: "关闭注册" }).waitFor();
  await page.keyboard.press("End");
  await page.locator("#admin-server:not([hidden])").waitFor();
  await page.locator("#admin-status .stat").first().waitFor();
  // Escape goes back to the chat.
  await page.keyboard.press("Escape");
  await page.locator("#admin").waitFor({ state: "hidden" });
  assert.deepEqual(page.errors, []);
});
