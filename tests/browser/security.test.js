// Hostile text: markup sent as a message, a name or a group title shows as literal text and
// runs nothing; the strict CSP of the server holds (no violations, no inline script needed).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startServer, tempDir, launch, openPage, register, startDirect, send, msg, convItem } from "./helpers.js";

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

const PAYLOADS = [
  "<img src=x onerror=alert(1)>",
  "<script>alert(1)</script>",
  '"><svg onload=alert(1)>',
  "[click](javascript:alert(1)) javascript:alert(1) data:text/html,<b>x</b>",
];

test("markup in messages and titles is shown as text and never runs", async () => {
  const { page: mallory } = await openPage(browser, server.url);
  await register(mallory, "mallory");
  const { page: victim } = await openPage(browser, server.url);
  await register(victim, "victim");
  const dialogs = [];
  const violations = [];
  for (const p of [mallory, victim]) {
    p.on("dialog", (d) => {
      dialogs.push(d.message());
      d.dismiss().catch(() => {});
    });
    p.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
    });
  }
  // A global the payloads would have to call: set by nothing but an executed script.
  await victim.evaluate(() => (window.__pwned = false));

  await startDirect(mallory, "victim");
  for (const p of PAYLOADS) await send(mallory, p);
  // The group title is hostile too.
  await mallory.click("#btn-new-group");
  await mallory.fill("#group-title", "<img src=x onerror=alert(2)>");
  await mallory.locator("#group-people .person", { hasText: "victim" }).click();
  await mallory.click("#group-submit");
  await mallory.locator("#chat-title", { hasText: "<img src=x onerror=alert(2)>" }).waitFor();
  await send(mallory, "<b>bold?</b>");

  await convItem(victim, "mallory").click();
  for (const p of PAYLOADS) {
    const el = msg(victim, p);
    await el.waitFor();
    assert.equal(await el.locator(".text").evaluate((n) => n.firstChild.textContent), p);
  }
  // No element came out of the text: only text nodes (and no links for non-http schemes).
  const injected = await victim.evaluate(() =>
    [...document.querySelectorAll("#msg-list .text")].flatMap((t) => [...t.querySelectorAll("img, script, svg, b, a, iframe")].map((e) => e.outerHTML)),
  );
  assert.deepEqual(injected, []);

  await convItem(victim, "<img src=x onerror=alert(2)>").click();
  await victim.locator("#chat-title", { hasText: "<img src=x onerror=alert(2)>" }).waitFor();
  await msg(victim, "<b>bold?</b>").waitFor();
  assert.equal(await victim.locator("#conv-list img, #chat-main img, #msg-list b").count(), 0);

  await victim.waitForTimeout(300);
  assert.deepEqual(dialogs, []);
  assert.equal(await victim.evaluate(() => window.__pwned), false);
  assert.deepEqual(violations, []);
  assert.deepEqual(victim.errors, []);
});

test("the server's security headers are in place for the client", async () => {
  const res = await fetch(server.url + "/");
  const csp = res.headers.get("content-security-policy");
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  const html = await res.text();
  // The one inline script is the import map build.rs adds (hashed URLs for the modules); the
  // policy allows it by its SHA-256, not with 'unsafe-inline'.
  const maps = [...html.matchAll(/<script type="importmap">([^<]*)<\/script>/g)].map((m) => m[1]);
  assert.equal(maps.length, 1, "one import map");
  const digest = createHash("sha256").update(maps[0]).digest("base64");
  assert.ok(csp.includes(`'sha256-${digest}'`), `the import map's hash is in the CSP: ${csp}`);
  const rest = html.replace(/<script type="importmap">[^<]*<\/script>/, "");
  assert.doesNotMatch(rest, /<script(?![^>]*\bsrc=)/i, "no other inline script");
  assert.doesNotMatch(html, /\sstyle=/i, "no inline style attributes");
  assert.doesNotMatch(html, /\son[a-z]+=/i, "no inline event handlers");
  const js = await fetch(server.url + "/js/main.js");
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type"), /javascript/);
});
