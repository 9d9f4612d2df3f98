// A message the server cannot read (its record damaged on disk) shows as "This message could
// not be read" at its place, between the messages around it, and in the conversation list's
// preview when it is the last one; never as a blank bubble from nobody, never a stuck view.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { startServer, tempDir, launch, openPage, register, login, startDirect, send, msg, convItem } from "./helpers.js";

let browser;
let tmp;

before(async () => {
  tmp = tempDir();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  tmp?.cleanup();
});

/** Changes one byte of every copy of `needle` in the stopped server's database. */
function damage(dir, needle) {
  const file = path.join(dir, "chatd.redb");
  const bytes = readFileSync(file);
  const n = Buffer.from(needle);
  let hits = 0;
  for (let i = bytes.indexOf(n); i >= 0; i = bytes.indexOf(n, i + 1)) {
    bytes[i + 1] ^= 0x20;
    hits++;
  }
  assert.ok(hits > 0, "the text is in the file");
  writeFileSync(file, bytes);
}

test("a damaged message is shown as could-not-be-read at its place", async () => {
  let server = await startServer(tmp.dir);
  const { page: alice, context } = await openPage(browser, server.url);
  await register(alice, "alice");
  const b = await openPage(browser, server.url);
  await register(b.page, "bob");
  await b.context.close();
  await startDirect(alice, "bob");
  for (const text of ["before the damage", "this one gets damaged", "after the damage", "the last one gets damaged too"]) {
    await send(alice, text);
    await msg(alice, text).waitFor();
  }
  await context.close();
  await server.stop();
  damage(tmp.dir, "this one gets damaged");
  damage(tmp.dir, "the last one gets damaged too");
  server = await startServer(tmp.dir);
  try {
    const { page: bob } = await openPage(browser, server.url);
    await login(bob, "bob");
    const item = convItem(bob, "alice");
    await item.locator(".conv-preview", { hasText: "This message could not be read" }).first().waitFor();
    await item.click();
    await msg(bob, "after the damage").waitFor();
    const texts = await bob.locator("#msg-list li.msg .text").evaluateAll((els) => els.map((e) => e.textContent.trim()));
    assert.deepEqual(texts.map((t) => t.replace(/\d{1,2}:\d{2}.*$/, "").trim()), [
      "before the damage",
      "This message could not be read",
      "after the damage",
      "This message could not be read",
    ]);
    const seqs = await bob.locator("#msg-list li.msg").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, [1, 2, 3, 4]);
    assert.equal(await bob.locator("#msg-list .sep").count(), 1, "one day separator, none for the markers' missing time");
    assert.deepEqual(bob.errors, []);
  } finally {
    await server.stop();
  }
});
