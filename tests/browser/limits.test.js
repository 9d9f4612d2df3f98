// The message length limit, counted in characters before Enter: a live counter near the limit,
// a refusal that says characters, nothing sent that the server would refuse; and against an
// older server that states only a byte limit, still characters (Chinese: 3 bytes each).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, tempDir, launch, openPage, register, startDirect, send, msg } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  server = await startServer(tmp.dir, 0, ["--max-message-bytes", "1200"]);
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

  // Characters, not bytes or UTF-16 units: 300 Chinese characters (900 bytes) or emoji fit.
  await amy.fill("#input", "字".repeat(300));
  assert.equal(await counter.textContent(), "300 / 300");
  await amy.fill("#input", "🙂".repeat(301));
  assert.equal(await counter.textContent(), "301 / 300");
  await amy.press("#input", "Enter");
  await amy.locator(".toast", { hasText: "Remove 1 character." }).waitFor();

  // Within the limit it goes out, and the counter goes away.
  await amy.fill("#input", "字".repeat(300));
  await amy.press("#input", "Enter");
  await msg(amy, "字".repeat(300)).and(amy.locator("[data-status=sent], [data-status=read]")).waitFor();
  assert.equal(await counter.isVisible(), false);
  assert.deepEqual(amy.errors, []);
});

test("an older server with only a byte limit: still counted in characters", async () => {
  const { page: cid } = await openPage(browser, server.url);
  // Take max_message_chars out of the welcome, as a server from before it would send.
  await cid.routeWebSocket(/\/ws$/, (ws) => {
    const srv = ws.connectToServer();
    ws.onMessage((m) => srv.send(m));
    srv.onMessage((m) => {
      if (typeof m === "string" && m.startsWith('{"type":"welcome"')) {
        const w = JSON.parse(m);
        delete w.limits.max_message_chars;
        m = JSON.stringify(w);
      }
      ws.send(m);
    });
  });
  await register(cid, "cid");
  await startDirect(cid, "amy");
  // 1200 bytes: 1200 ASCII characters, or 400 Chinese ones.
  await cid.fill("#input", "a".repeat(1150));
  assert.equal(await cid.locator("#counter").textContent(), "1,150 / 1,200");
  await cid.fill("#input", "字".repeat(401));
  assert.equal(await cid.locator("#counter").textContent(), "401 / 400");
  await cid.press("#input", "Enter");
  await cid.locator(".toast", { hasText: "401 characters, at most 400. Remove 1 character." }).waitFor();
  assert.deepEqual(cid.errors, []);
});
