// Losing the connection: the server is stopped (SIGTERM) and restarted on the same port and data
// directory while a message waits in the outbox; the outbox survives a reload; a send whose ack
// was lost is retried with the same client_id and not doubled.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, freePort, tempDir, launch, openPage, register, startDirect, send, msg, convItem } from "./helpers.js";

let server;
let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

const delivered = (page, text) => page.locator("#msg-list li.msg:is([data-status=sent], [data-status=read])", { hasText: text });

test("messages written while offline are delivered once after reconnecting", async () => {
  // An explicit port: the restarted server must come back where the page expects it.
  const port = await freePort();
  server = await startServer(tmp.dir, port);
  const { page: alice } = await openPage(browser, server.url);
  await register(alice, "alice");
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");
  await startDirect(alice, "bob");
  await send(alice, "before the outage");
  await bob.locator("#conv-list .conv", { hasText: "alice" }).click();
  await msg(bob, "before the outage").waitFor();

  // 1. The server goes away: a banner says so, and a new message waits as "sending".
  await server.stop();
  await alice.locator("#banner:not([hidden])").waitFor();
  await send(alice, "written while the server was down");
  const pending = msg(alice, "written while the server was down");
  await pending.waitFor();
  assert.equal(await pending.getAttribute("data-status"), "sending");
  await alice.locator("#banner-text", { hasText: "1 message waiting" }).waitFor();
  const stored = await alice.evaluate(() => Object.keys(localStorage).filter((k) => k.endsWith(".outbox")).map((k) => localStorage.getItem(k)).join(""));
  assert.match(stored, /written while the server was down/);

  // The server comes back on the same port with the same data: the page reconnects by itself.
  server = await startServer(tmp.dir, port);
  await delivered(alice, "written while the server was down").waitFor({ timeout: 45000 });
  await msg(bob, "written while the server was down").waitFor({ timeout: 45000 });
  await alice.locator("#banner").waitFor({ state: "hidden" });
  // Messages bob missed while he was disconnected too arrive (sync with cursors).
  assert.equal(await msg(bob, "written while the server was down").count(), 1);

  // 2. The outbox survives a reload: keep alice's page from reaching /ws, write, reload.
  let block = true;
  await alice.routeWebSocket(/\/ws$/, (ws) => {
    if (block) ws.close({ code: 1011, reason: "blocked by test" });
    else ws.connectToServer();
  });
  await alice.reload();
  await alice.locator("#banner:not([hidden])").waitFor();
  await send(alice, "queued across a reload");
  await msg(alice, "queued across a reload").and(alice.locator("[data-status=sending]")).waitFor();
  await alice.reload();
  await msg(alice, "queued across a reload").and(alice.locator("[data-status=sending]")).waitFor();
  block = false;
  // "Retry now" skips the backoff wait (unless a retry already got through).
  await alice.locator("#banner-retry").click({ timeout: 2000 }).catch(() => {});
  await delivered(alice, "queued across a reload").waitFor({ timeout: 45000 });
  await msg(bob, "queued across a reload").waitFor();
  assert.equal(await msg(bob, "queued across a reload").count(), 1);
  await alice.unrouteAll();

  // 3. The ack is lost (connection drops right after the server stored the message): the
  // retry with the same client_id gets the original ack, so nobody sees it twice.
  await alice.reload();
  await alice.locator("#chat-title", { hasText: "bob" }).waitFor();
  let dropAck = true;
  await alice.routeWebSocket(/\/ws$/, (ws) => {
    const srv = ws.connectToServer();
    ws.onMessage((m) => srv.send(m));
    srv.onMessage((m) => {
      if (dropAck && typeof m === "string" && m.includes('"type":"ack"')) {
        dropAck = false;
        ws.close({ code: 1011, reason: "ack lost" });
        srv.close();
        return;
      }
      ws.send(m);
    });
  });
  await alice.reload();
  await alice.locator("#chat-title", { hasText: "bob" }).waitFor();
  await alice.locator("#banner").waitFor({ state: "hidden" });
  await send(alice, "ack lost once");
  await msg(bob, "ack lost once").waitFor();
  await delivered(alice, "ack lost once").waitFor({ timeout: 45000 });
  assert.equal(dropAck, false, "the test should have dropped one ack");
  await bob.waitForTimeout(500);
  assert.equal(await msg(bob, "ack lost once").count(), 1);
  assert.equal(await msg(alice, "ack lost once").count(), 1);
  await alice.reload();
  await msg(alice, "ack lost once").waitFor();
  assert.equal(await msg(alice, "ack lost once").count(), 1);
  await bob.reload();
  await msg(bob, "ack lost once").waitFor();
  assert.equal(await msg(bob, "ack lost once").count(), 1);

  assert.deepEqual(bob.errors, []);
});

/** Polls the async `fn` in the page until it returns true (waitForFunction does not await). */
async function until(page, fn, timeout = 15000) {
  const end = Date.now() + timeout;
  while (!(await page.evaluate(fn))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${fn}`);
    await page.waitForTimeout(100);
  }
}

test("with the server down, a reload shows the cached app and its outbox (service worker)", async () => {
  const own = tempDir();
  const port = await freePort();
  let srv = await startServer(own.dir, port);
  try {
    const { page: cleo } = await openPage(browser, srv.url);
    await register(cleo, "cleo");
    const { page: dirk } = await openPage(browser, srv.url);
    await register(dirk, "dirk");
    await startDirect(cleo, "dirk");
    await send(cleo, "sent while the server was up");
    await delivered(cleo, "sent while the server was up").waitFor();
    // The worker is installed and has cached the shell.
    await until(cleo, async () => (await caches.keys()).length > 0 && !!(await caches.match("/")));

    await srv.stop();
    await cleo.locator("#banner:not([hidden])").waitFor();
    await send(cleo, "waiting in the outbox");
    await msg(cleo, "waiting in the outbox").and(cleo.locator("[data-status=sending]")).waitFor();
    // Reload with nobody answering: the app, not the browser's error page.
    await cleo.reload();
    await cleo.locator("#app").waitFor();
    await cleo.locator("#chat-title", { hasText: "dirk" }).waitFor();
    await msg(cleo, "sent while the server was up").waitFor();
    await msg(cleo, "waiting in the outbox").and(cleo.locator("[data-status=sending]")).waitFor();
    await cleo.locator("#banner-text", { hasText: "1 message waiting" }).waitFor();
    // Only the shell is cached: no API answer, nothing of the socket.
    const cached = await cleo.evaluate(async () => {
      const out = [];
      for (const name of await caches.keys()) for (const r of await (await caches.open(name)).keys()) out.push(new URL(r.url).pathname);
      return out;
    });
    assert.ok(cached.includes("/") && cached.includes("/js/main.js") && cached.includes("/app.css"), cached.join(" "));
    assert.deepEqual(cached.filter((p) => /^\/(api|ws|healthz|metrics)/.test(p)), []);

    // The server is back: the outbox goes out, once.
    srv = await startServer(own.dir, port);
    await delivered(cleo, "waiting in the outbox").waitFor({ timeout: 15000 });
    // dirk's page may be in its backoff (a page the browser counts as hidden waits up to
    // 30 s between tries, conn.js MAX_DELAY): give it that long to be back.
    await convItem(dirk, "cleo").click();
    await msg(dirk, "waiting in the outbox").waitFor({ timeout: 45000 });
    assert.equal(await msg(dirk, "waiting in the outbox").count(), 1);

    // Online, the page comes from the network, not the cache: a stale cached copy is replaced.
    await cleo.evaluate(async () => {
      const cache = await caches.open((await caches.keys())[0]);
      await cache.put("/", new Response("<!doctype html><title>stale</title><p id=stale>old version</p>", { headers: { "content-type": "text/html" } }));
    });
    await cleo.reload();
    await cleo.locator("#app").waitFor();
    assert.equal(await cleo.locator("#stale").count(), 0);
    await until(cleo, async () => !(await (await caches.match("/")).text()).includes("old version"));
    assert.deepEqual(cleo.errors, []);
  } finally {
    await srv.stop();
    own.cleanup();
  }
});

test("an ack that comes after the history holding the message: the message shows once", async () => {
  const own = tempDir();
  const srv = await startServer(own.dir);
  try {
    const { page: eli } = await openPage(browser, srv.url);
    await register(eli, "eli");
    const { page: fox } = await openPage(browser, srv.url);
    await register(fox, "fox");
    // Hold every ack for half a second: the first message to fox creates the conversation, the
    // page opens it and loads its history (which already holds the message) before the ack.
    await eli.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        if (typeof m === "string" && m.startsWith('{"type":"ack"')) setTimeout(() => ws.send(m), 500);
        else ws.send(m);
      });
    });
    // And render lazily (the page batches renders with a 16 ms timer): the history reply then
    // lands before the first render of the new conversation, as on a fast LAN.
    await eli.addInitScript(() => {
      const later = window.setTimeout;
      window.setTimeout = (fn, ms, ...args) => later(fn, ms === 16 ? 300 : ms, ...args);
    });
    await eli.reload();
    await eli.locator("#me-name", { hasText: "eli" }).waitFor();
    await startDirect(eli, "fox");
    await send(eli, "first words");
    await eli.waitForFunction(() => /^#\/c\/\d+$/.test(location.hash));
    await eli.waitForTimeout(800);
    assert.equal(await msg(eli, "first words").count(), 1);
    await delivered(eli, "first words").waitFor();
    await send(eli, "second words");
    await delivered(eli, "second words").waitFor();
    await eli.waitForTimeout(600);
    assert.equal(await eli.locator("#msg-list li.msg").count(), 2);
    assert.deepEqual(eli.errors, []);
  } finally {
    await srv.stop();
    own.cleanup();
  }
});
