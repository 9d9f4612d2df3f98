// Reconnecting fast: after a server restart, a visible page is connected again within a second
// of the server accepting, without probing a down server more than about once a second.

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

test("after a server restart the page is back within 1 s of the server accepting", async () => {
  const port = await freePort();
  server = await startServer(tmp.dir, port);
  const { page: alice } = await openPage(browser, server.url);
  await register(alice, "alice");
  const { page: bob } = await openPage(browser, server.url);
  await register(bob, "bob");
  await startDirect(alice, "bob");
  await send(alice, "hello");
  await convItem(bob, "alice").click();
  await msg(bob, "hello").waitFor();

  // Count what the page sends towards the server while it is down.
  let probes = 0;
  alice.on("request", (r) => {
    if (r.url().endsWith("/healthz")) probes += 1;
  });
  const times = [];
  for (const downFor of [3000, 6000, 1500]) {
    await server.stop();
    await alice.locator("#banner:not([hidden])").waitFor();
    probes = 0;
    await alice.waitForTimeout(downFor);
    const probed = probes;
    // Bounded: a visible page probes a down server about every 0.3-0.6 s.
    assert.ok(probed <= Math.ceil(downFor / 300) + 1, `${probed} probes in ${downFor} ms`);
    assert.ok(probed >= Math.floor(downFor / 1000), `${probed} probes in ${downFor} ms`);
    server = await startServer(tmp.dir, port);
    const accepting = Date.now();
    await alice.locator("#banner").waitFor({ state: "hidden", timeout: 10000 });
    const back = Date.now() - accepting;
    times.push(back);
    // Connected and synced: a message sent now arrives.
    await send(bob, `after ${downFor} ms down`);
    await msg(alice, `after ${downFor} ms down`).waitFor();
  }
  console.log(`reconnected after ${times.join(", ")} ms (server down 3 s, 6 s, 1.5 s)`);
  for (const t of times) assert.ok(t < 1000, `reconnected ${t} ms after the server accepted`);
  assert.deepEqual(alice.errors, []);
});
