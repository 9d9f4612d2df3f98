// Files and images (issue 22), against the real server: attach (file picker), paste (a pasted
// screenshot), drag-and-drop onto the conversation, several files with a text in one message,
// upload progress and cancel, retry after a failed upload without retyping, images inline with
// their box sized before the thumbnail loads, the viewer (Esc, arrow keys, alt text = file
// name), a non-image as name, size, type and a download link, the phone layout, and a message
// with a file written offline (and across a reload) sent exactly once with each file uploaded once.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, freePort, tempDir, launch, openPage, register, startDirect, msg, openId, shot } from "./helpers.js";

let server;
let browser;
let tmp;
let port;
let alice;
let bob;

before(async () => {
  tmp = tempDir();
  browser = await launch();
  port = await freePort();
  server = await startServer(tmp.dir, port);
  ({ page: alice } = await openPage(browser, server.url));
  await register(alice, "alice");
  ({ page: bob } = await openPage(browser, server.url));
  await register(bob, "bob");
  await startDirect(alice, "bob");
  await alice.fill("#input", "hello bob");
  await alice.press("#input", "Enter");
  await bob.locator("#conv-list .conv", { hasText: "alice" }).click();
  await msg(bob, "hello bob").waitFor();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

/** A PNG of w × h pixels drawn in the page (real image bytes for the server to read). */
async function png(page, w, h, color) {
  const b64 = await page.evaluate(
    async ({ w, h, color }) => {
      const c = new OffscreenCanvas(w, h);
      const x = c.getContext("2d");
      x.fillStyle = color;
      x.fillRect(0, 0, w, h);
      x.fillStyle = "#fff";
      x.fillRect(w / 4, h / 4, w / 2, h / 2);
      const blob = await c.convertToBlob({ type: "image/png" });
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let s = "";
      for (const b of bytes) s += String.fromCharCode(b);
      return btoa(s);
    },
    { w, h, color },
  );
  return Buffer.from(b64, "base64");
}

/** Dispatches a paste (kind "paste") or a drop (kind "drop") carrying files made in the page. */
async function dataTransfer(page, kind, files) {
  await page.evaluate(
    ({ kind, files }) => {
      const dt = new DataTransfer();
      for (const f of files) {
        const bytes = Uint8Array.from(atob(f.b64), (ch) => ch.charCodeAt(0));
        dt.items.add(new File([bytes], f.name, { type: f.type }));
      }
      if (kind === "paste") {
        document.querySelector("#input").dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
      } else {
        const zone = document.querySelector("#messages");
        for (const type of ["dragenter", "dragover", "drop"]) zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    },
    { kind, files: files.map((f) => ({ ...f, b64: f.bytes.toString("base64") })) },
  );
}

/** Counts the page's upload requests (POST /api/files). */
function countUploads(page) {
  const c = { n: 0 };
  page.on("request", (r) => {
    if (r.method() === "POST" && new URL(r.url()).pathname === "/api/files") c.n += 1;
  });
  return c;
}

const bubbleWith = (page, name) => page.locator("#msg-list li.msg", { has: page.locator(`.att-name:text-is("${name}"), .att-img img[alt="${name}"]`) });

test("attach, paste and drop: several files with a text in one message; images inline with their size reserved; a file as a download link", async () => {
  const wide = await png(alice, 800, 400, "#4f46e5");
  const tall = await png(alice, 300, 600, "#16a34a");
  const shotPng = await png(alice, 640, 360, "#dc2626");
  const pdf = Buffer.from("%PDF-1.4\n% a tiny document for the test\n%%EOF\n");

  // Attach button → file picker.
  const chooser = alice.waitForEvent("filechooser");
  await alice.click("#btn-attach");
  await (await chooser).setFiles([
    { name: "wide photo.png", mimeType: "image/png", buffer: wide },
    { name: "report <1>.pdf", mimeType: "application/pdf", buffer: pdf },
  ]);
  await alice.locator("#att-strip .chip").nth(1).waitFor();
  // Paste a screenshot into the composer: it becomes a file, not text.
  await dataTransfer(alice, "paste", [{ name: "image.png", type: "image/png", bytes: shotPng }]);
  await alice.locator("#att-strip .chip").nth(2).waitFor();
  assert.equal(await alice.inputValue("#input"), "");
  assert.match(await alice.locator("#att-strip .chip").nth(2).textContent(), /^screenshot-\d{4}-\d\d-\d\d-\d{6}\.png/);
  // Drop a file onto the conversation.
  await dataTransfer(alice, "drop", [{ name: "tall.png", type: "image/png", bytes: tall }]);
  await alice.locator("#att-strip .chip").nth(3).waitFor();
  // Bob's thumbnails are held back until the boxes are measured: they must be sized without them.
  let release;
  const held = new Promise((r) => (release = r));
  await bob.route("**/files/*/thumb", async (route) => {
    await held;
    await route.continue();
  });
  // Remove one again (the pasted one), then send with a text.
  await alice.locator("#att-strip .chip").nth(2).getByRole("button").click();
  assert.equal(await alice.locator("#att-strip .chip").count(), 3);
  await alice.fill("#input", "the files from today");
  await alice.press("#input", "Enter");
  await alice.locator("#att-strip").waitFor({ state: "hidden" });

  const got = msg(bob, "the files from today");
  await got.waitFor({ timeout: 20000 });
  // Images: a box with the image's aspect ratio, sized before the thumbnail has loaded.
  const boxes = got.locator(".att-img");
  assert.equal(await boxes.count(), 2);
  const sizes = await boxes.evaluateAll((els) =>
    els.map((b) => ({
      w: b.getBoundingClientRect().width,
      h: b.getBoundingClientRect().height,
      alt: b.querySelector("img").alt,
      src: b.querySelector("img").getAttribute("src"),
      loaded: b.querySelector("img").naturalWidth,
    })),
  );
  assert.deepEqual(sizes.map((s) => s.loaded), [0, 0]);
  release();
  assert.equal(sizes[0].alt, "wide photo.png");
  assert.equal(sizes[1].alt, "tall.png");
  assert.ok(Math.abs(sizes[0].w / sizes[0].h - 2) < 0.05, `wide box ${JSON.stringify(sizes[0])}`);
  assert.ok(Math.abs(sizes[1].w / sizes[1].h - 0.5) < 0.05, `tall box ${JSON.stringify(sizes[1])}`);
  assert.match(sizes[0].src, /^\/files\/[A-Za-z0-9_-]{16,64}\/thumb$/);
  // The thumbnails load, and loading them changes no box.
  await got.locator(".att-img.loaded").nth(1).waitFor();
  await bob.unrouteAll();
  const after = await boxes.evaluateAll((els) => els.map((b) => [b.getBoundingClientRect().width, b.getBoundingClientRect().height]));
  assert.deepEqual(after, sizes.map((s) => [s.w, s.h]));
  // The PDF: name, size and type, and a link that downloads the same bytes.
  const file = got.locator("a.att-file");
  assert.equal(await file.locator(".att-name").textContent(), "report <1>.pdf");
  assert.match(await file.locator(".att-meta").textContent(), /^\d+ B · PDF$/);
  const href = await file.getAttribute("href");
  assert.match(href, /^\/files\/[A-Za-z0-9_-]{16,64}\?download=1$/);
  const bytes = await bob.evaluate(async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer())), href);
  assert.deepEqual(Buffer.from(bytes), pdf);
  // On alice's side the same message shows the same attachments once stored.
  await msg(alice, "the files from today").locator(".att-img").nth(1).waitFor();
  await msg(alice, "the files from today").and(alice.locator("[data-status=sent], [data-status=read]")).waitFor();
  // A message of only a file: the list preview names it.
  const chooser2 = alice.waitForEvent("filechooser");
  await alice.click("#btn-attach");
  await (await chooser2).setFiles([{ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("just a file\n") }]);
  assert.equal(await alice.locator("#btn-send").isDisabled(), false);
  await alice.click("#btn-send");
  await bubbleWith(bob, "notes.txt").waitFor({ timeout: 20000 });
  await bob.locator("#conv-list .conv .conv-preview", { hasText: "notes.txt" }).waitFor();
  await shot(bob, "files-desktop");
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
});

test("the viewer: click opens the full image, arrow keys step through the conversation's images, Esc closes", async () => {
  const imgs = bob.locator("#msg-list .att-img");
  const n = await imgs.count();
  assert.ok(n >= 2);
  await imgs.first().click();
  const viewer = bob.locator("dialog.viewer[open]");
  await viewer.waitFor();
  const shown = () => viewer.locator(".viewer-img").getAttribute("alt");
  assert.equal(await shown(), "wide photo.png");
  assert.match(await viewer.locator(".viewer-img").getAttribute("src"), /^\/files\/[A-Za-z0-9_-]{16,64}$/);
  await bob.waitForFunction(() => document.querySelector("dialog.viewer .viewer-img").naturalWidth === 800);
  assert.equal(await viewer.locator(".viewer-pos").textContent(), `1 of ${n}`);
  await bob.keyboard.press("ArrowRight");
  assert.equal(await shown(), "tall.png");
  await bob.keyboard.press("ArrowRight"); // the last one: stays
  assert.equal(await shown(), "tall.png");
  await bob.keyboard.press("ArrowLeft");
  assert.equal(await shown(), "wide photo.png");
  await bob.keyboard.press("Escape");
  await bob.locator("dialog.viewer").waitFor({ state: "hidden" });
  // Focus returns to the image that was shown, so a keyboard user goes on where they were.
  assert.equal(await bob.evaluate(() => document.activeElement.classList.contains("att-img")), true);
  // Keyboard only: Enter on a focused thumbnail opens it too.
  await bob.keyboard.press("Enter");
  await viewer.waitFor();
  await bob.keyboard.press("Escape");
});

test("progress bar while uploading, and cancel drops the file but sends the text", async () => {
  const cdp = await alice.context().newCDPSession(alice);
  await cdp.send("Network.enable");
  // About 400 KB/s up: a 3 MB file takes several seconds.
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 400 * 1024 });
  const chooser = alice.waitForEvent("filechooser");
  await alice.click("#btn-attach");
  await (await chooser).setFiles([{ name: "big.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(3 * 1024 * 1024, 7) }]);
  await alice.fill("#input", "big file coming");
  await alice.press("#input", "Enter");
  const row = msg(alice, "big file coming").locator(".att-file.pending");
  await row.and(alice.locator("[data-state=uploading]")).waitFor();
  await alice.waitForFunction(() => {
    const bar = document.querySelector("#msg-list .att-file.pending .att-bar");
    return bar && bar.value > 0.02 && bar.value < 0.9;
  });
  assert.match(await row.locator(".att-meta").textContent(), /%$/);
  await row.getByRole("button", { name: "Cancel upload of big.bin" }).click();
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  // The text goes on alone.
  await msg(bob, "big file coming").waitFor({ timeout: 20000 });
  assert.equal(await msg(bob, "big file coming").locator(".atts").count(), 0);
  await msg(alice, "big file coming").and(alice.locator("[data-status=sent], [data-status=read]")).waitFor();
  assert.equal(await msg(alice, "big file coming").locator(".atts").count(), 0);
});

test("a failed upload shows why and is retried without retyping", async () => {
  const uploads = countUploads(alice);
  // The first attempts fail at the network (the server is not reached).
  let fail = true;
  await alice.route("**/api/files?*", (route) => (fail ? route.abort("connectionreset") : route.continue()));
  const chooser = alice.waitForEvent("filechooser");
  await alice.click("#btn-attach");
  await (await chooser).setFiles([{ name: "retry me.txt", mimeType: "text/plain", buffer: Buffer.from("second time lucky\n") }]);
  await alice.fill("#input", "with a retried file");
  await alice.press("#input", "Enter");
  const row = msg(alice, "with a retried file").locator(".att-file.pending");
  await row.and(alice.locator("[data-state=failed]")).waitFor();
  assert.match(await row.locator(".att-meta").textContent(), /Not uploaded: cannot reach the server/);
  assert.equal(await msg(alice, "with a retried file").getAttribute("data-status"), "sending");
  fail = false;
  await row.getByRole("button", { name: "Retry", exact: true }).click();
  await bubbleWith(bob, "retry me.txt").waitFor({ timeout: 20000 });
  assert.equal(await msg(bob, "with a retried file").count(), 1);
  await alice.unrouteAll();
  assert.ok(uploads.n >= 2);
});

test("offline: a message with a file waits in the outbox (across a reload) and is sent exactly once, each file uploaded once", async () => {
  const img = await png(alice, 200, 100, "#0891b2");
  const uploads = countUploads(alice);
  await server.stop();
  await alice.locator("#banner:not([hidden])").waitFor();
  const chooser = alice.waitForEvent("filechooser");
  await alice.click("#btn-attach");
  await (await chooser).setFiles([
    { name: "offline.png", mimeType: "image/png", buffer: img },
    { name: "offline.txt", mimeType: "text/plain", buffer: Buffer.from("written offline\n") },
  ]);
  await alice.fill("#input", "sent from offline");
  await alice.press("#input", "Enter");
  const pending = msg(alice, "sent from offline");
  await pending.locator(".att-file.pending[data-state=waiting]").nth(1).waitFor();
  assert.equal(await pending.getAttribute("data-status"), "sending");
  assert.equal(uploads.n, 0);

  // Reload while the server is still down (the socket is kept from connecting): the message and
  // its files' bytes (IndexedDB) survive.
  let block = true;
  await alice.routeWebSocket(/\/ws$/, (ws) => {
    if (block) ws.close({ code: 1011, reason: "blocked by test" });
    else ws.connectToServer();
  });
  server = await startServer(tmp.dir, port);
  await alice.reload();
  await msg(alice, "sent from offline").locator(".att-file.pending[data-state=waiting]").nth(1).waitFor();
  assert.equal(uploads.n, 0);
  block = false;
  await alice.locator("#banner-retry").click({ timeout: 2000 }).catch(() => {});
  await msg(bob, "sent from offline").locator(".att-img.loaded").waitFor({ timeout: 45000 });
  await msg(alice, "sent from offline").and(alice.locator("[data-status=sent], [data-status=read]")).waitFor({ timeout: 20000 });
  await bob.waitForTimeout(500);
  assert.equal(await msg(bob, "sent from offline").count(), 1);
  assert.equal(await msg(bob, "sent from offline").locator("a.att-file .att-name").textContent(), "offline.txt");
  assert.equal(uploads.n, 2);
  // Nothing is left behind in IndexedDB.
  const left = await alice.evaluate(
    () =>
      new Promise((resolve) => {
        const r = indexedDB.open("chatd-files", 1);
        r.onsuccess = () => {
          const q = r.result.transaction("blobs").objectStore("blobs").count();
          q.onsuccess = () => resolve(q.result);
        };
      }),
  );
  assert.equal(left, 0);
  await alice.unrouteAll();
});

test("phone layout: attach button, thumbnails within the screen, viewer full screen", async () => {
  const { page } = await openPage(browser, server.url, { viewport: { width: 390, height: 844 }, isMobile: true, deviceScaleFactor: 2 });
  await page.locator("#auth").waitFor();
  await page.fill("#auth-name", "bob");
  await page.fill("#auth-password", "correct-horse-battery");
  await page.click("#auth-submit");
  await page.locator("#conv-list .conv", { hasText: "alice" }).click();
  await openId(page);
  await page.locator("#btn-attach").waitFor();
  await page.locator("#msg-list .att-img.loaded").first().waitFor({ timeout: 20000 });
  const overflow = await page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    return Array.from(document.querySelectorAll("#msg-list .att-img, #msg-list .att-file")).filter((e) => e.getBoundingClientRect().right > vw + 0.5).length;
  });
  assert.equal(overflow, 0);
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth), true);
  await shot(page, "files-phone");
  await page.locator("#msg-list .att-img").first().click();
  const box = await page.locator("dialog.viewer[open]").boundingBox();
  assert.ok(box.width >= 389 && box.height >= 800, JSON.stringify(box));
  await page.keyboard.press("Escape");
  assert.deepEqual(page.errors, []);
});
