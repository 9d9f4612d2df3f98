// The message length limit, counted in characters before Enter: a live counter near the limit,
// a refusal that says characters (also for Chinese text, 3 UTF-8 bytes a character, against a
// server whose limit is in bytes), and nothing sent that the server would refuse.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, startDirect, send, msg } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  server = await startServer(tmp.dir, 0, ["--max-message-bytes", "300"]);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

test("a live counter near the limit and a refusal in characters", async () => {
  const { page: amy } = await openPage(browser, server.url);
  await register(amy, "amy");
  const { page: bea } = await openPage(browser, server.url);
  await register(bea, "bea");
  await startDirect(amy, "bea");
  const counter = amy.locator("#counter");

  await amy.fill("#input", "a".repeat(150));
  assert.equal(await counter.isVisible(), false, "far from the limit: no counter");
  await amy.fill("#input", "a".repeat(250));
  await counter.waitFor();
  assert.equal(await counter.textContent(), "250 / 300");
  assert.equal(await amy.locator("#counter-sr").textContent(), "50 characters left");
  await amy.fill("#input", "a".repeat(300));
  assert.equal(await counter.textContent(), "300 / 300");
  assert.equal(await amy.locator("#btn-send").isDisabled(), false);

  await amy.fill("#input", "a".repeat(310));
  assert.equal(await counter.textContent(), "310 / 300");
  assert.match(await counter.getAttribute("class"), /over/);
  assert.equal(await amy.locator("#btn-send").isDisabled(), true);
  assert.equal(await amy.locator("#counter-sr").textContent(), "10 characters too many (at most 300)");
  await amy.press("#input", "Enter");
  await amy.locator(".toast", { hasText: "This message is too long: 310 characters, at most 300. Remove 10 characters." }).waitFor();
  assert.equal(await amy.inputValue("#input"), "a".repeat(310), "the text stays for editing");
  assert.equal(await amy.locator("#msg-list li.msg").count(), 0);

  // Chinese: 3 bytes a character, so 100 characters fit in this server's 300 bytes.
  await amy.fill("#input", "字".repeat(100));
  assert.equal(await counter.textContent(), "100 / 100");
  await amy.fill("#input", "字".repeat(101));
  assert.equal(await counter.textContent(), "101 / 100");
  await amy.press("#input", "Enter");
  await amy.locator(".toast", { hasText: "Remove 1 character." }).waitFor();

  // Within the limit it goes out, and the counter goes away.
  await amy.fill("#input", "字".repeat(100));
  await amy.press("#input", "Enter");
  await msg(amy, "字".repeat(100)).and(amy.locator("[data-status=sent], [data-status=read]")).waitFor();
  assert.equal(await counter.isVisible(), false);
  assert.deepEqual(amy.errors, []);
});
