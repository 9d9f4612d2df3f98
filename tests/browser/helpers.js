// Shared helpers for the browser tests: run the real chatd binary (CHATD_BIN) on a temporary
// data directory, drive headless Chromium with playwright-core, register users through the
// page, and save screenshots to docs/screenshots/ when CHATD_SCREENSHOTS=1.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "..", "..");
export const BIN = process.env.CHATD_BIN || path.join(ROOT, "target", "debug", "chatd");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const PASSWORD = "correct-horse-battery";
export const SHOTS = process.env.CHATD_SCREENSHOTS === "1";

/** A fresh temporary data directory, removed by `cleanup()`. */
export function tempDir() {
  const dir = mkdtempSync(path.join(tmpdir(), "chatd-browser-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A TCP port that was free a moment ago (for a server that must come back on the same port). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `chatd serve` on 127.0.0.1:`port` (0 = any) with `dataDir` (and `extraArgs`); resolves once it logged
 * "listening on http://ADDR". `stop()` sends SIGTERM and waits for the exit.
 */
export function startServer(dataDir, port = 0, extraArgs = []) {
  return new Promise((resolve, reject) => {
    const args = ["serve", "--bind", "127.0.0.1", "--port", String(port), "--data-dir", dataDir, "--log-level", "info", ...extraArgs];
    const proc = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      proc.kill("SIGKILL");
      reject(new Error(`chatd did not start in time; log:\n${log}`));
    }, 30000);
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const m = log.match(/listening on http:\/\/(\S+)/);
      if (m && !done) {
        done = true;
        clearTimeout(timer);
        const addr = m[1];
        const exited = new Promise((r) => proc.once("exit", (code, signal) => r({ code, signal })));
        resolve({
          proc,
          addr,
          url: `http://${addr}`,
          port: Number(addr.split(":").pop()),
          log: () => log,
          exited,
          async stop() {
            if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
            return exited;
          },
        });
      }
    });
    proc.once("exit", (code) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(new Error(`chatd exited with ${code} before listening; log:\n${log}`));
      }
    });
    proc.once("error", (e) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(e);
      }
    });
  });
}

/** Headless Chromium with the flags CI needs (no sandbox as root, no network chatter), plus `extraArgs`. */
export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      ...extraArgs,
    ],
  });
}

/**
 * A new browser context (own cookies and storage, i.e. another person) with one page open at
 * `url`. Collects page errors and CSP violations so tests can assert there were none.
 */
export async function openPage(browser, url, opts = {}) {
  const context = await browser.newContext({
    viewport: opts.viewport || { width: 1280, height: 800 },
    locale: opts.locale || "en-US",
    colorScheme: opts.colorScheme || "light",
    deviceScaleFactor: opts.deviceScaleFactor || 1,
    isMobile: !!opts.isMobile,
    hasTouch: !!opts.isMobile,
  });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => {
    if (process.env.DEBUG_CONSOLE) console.log(`[console ${m.type()}] ${m.text()}`);
    // Not the page's errors: a refused connection while the server is down, and Chromium's note
    // that COOP is ignored on a plain-http LAN origin (the notification tests use one).
    if (m.type() === "error" && !/WebSocket|Failed to load resource|ERR_CONNECTION_REFUSED|Cross-Origin-Opener-Policy header has been ignored/.test(m.text())) {
      page.errors.push(m.text());
    }
  });
  await page.goto(url);
  return { context, page };
}

/**
 * Registers `name` through the page's "Create account" form and waits for the chat screen. On a
 * server with no account yet, that is the first-run form (the admin account), and its setup
 * step is passed with "Start chatting".
 */
export async function register(page, name) {
  await page.locator("#auth").waitFor();
  if (await page.locator("#tab-register").isVisible()) await page.click("#tab-register");
  await page.fill("#auth-name", name);
  await page.fill("#auth-password", PASSWORD);
  await page.click("#auth-submit");
  await page.locator("#app:not([hidden]), #setup:not([hidden])").waitFor();
  if (await page.locator("#setup").isVisible()) await page.click("#setup-done");
  await page.locator("#app").waitFor();
  await page.locator("#me-name", { hasText: name }).waitFor();
}

/** Logs `name` in through the form. */
export async function login(page, name) {
  await page.locator("#auth").waitFor();
  await page.fill("#auth-name", name);
  await page.fill("#auth-password", PASSWORD);
  await page.click("#auth-submit");
  await page.locator("#app").waitFor();
}

/** Opens the directory and starts (or opens) the direct chat with `name`. */
export async function startDirect(page, name) {
  await page.click("#btn-new-chat");
  await page.fill("#dir-search", name);
  await page.locator("#dir-list .person", { hasText: name }).first().click();
  try {
    await page.locator("#chat-title", { hasText: name }).waitFor();
  } catch (e) {
    // Say what the page showed instead (a failure here has been rare and unexplained).
    const state = await page.evaluate(() => ({
      hash: location.hash,
      title: document.querySelector("#chat-title").textContent,
      chatHidden: document.querySelector("#chat-main").hidden,
      dialogOpen: document.querySelector("#dlg-dir").open,
      dir: document.querySelector("#dir-list").textContent,
      banner: document.querySelector("#banner-text").textContent,
    }));
    throw new Error(`${e.message}\npage state: ${JSON.stringify(state)}; errors: ${JSON.stringify(page.errors)}`);
  }
}

/** Types `text` into the composer and presses Enter. */
export async function send(page, text) {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

/** The conversation list entry titled `title`. */
export const convItem = (page, title) => page.locator("#conv-list .conv", { has: page.locator(".conv-title", { hasText: title }) });

/** The message bubble (li.msg) whose text contains `text`. */
/**
 * The message whose text contains `text`. Matched on the text element only: the whole item also
 * holds the rendered time, so "message 18" followed by "01:20 PM" would otherwise match
 * "message 180".
 */
export const msg = (page, text) =>
  page.locator("#msg-list li.msg").filter({ has: page.locator(".text", { hasText: text }) });

/** Saves a PNG to docs/screenshots/NAME.png when CHATD_SCREENSHOTS=1. */
export async function shot(page, name) {
  if (!SHOTS) return;
  const dir = path.join(ROOT, "docs", "screenshots");
  mkdirSync(dir, { recursive: true });
  await page.waitForTimeout(150); // let the last render and transitions settle
  await page.screenshot({ path: path.join(dir, `${name}.png`) });
}

/**
 * Sends `texts` into conversation `id` as the page's user, over a second raw WebSocket, in chunks
 * that stay under the server's frame rate limit; resolves once every one is acknowledged.
 */
export async function seed(page, id, texts) {
  const tag = `seed-${Math.random().toString(36).slice(2)}`;
  for (let at = 0; at < texts.length; at += 100) {
    const chunk = texts.slice(at, at + 100);
    await page.evaluate(
      ({ id, chunk, at, tag }) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`ws://${location.host}/ws`);
          let acks = 0;
          ws.onmessage = (ev) => {
            if (ev.data === "pong") return;
            const f = JSON.parse(ev.data);
            if (f.type === "welcome") {
              chunk.forEach((text, i) => ws.send(JSON.stringify({ type: "send", client_id: `${tag}-${id}-${at + i}`, conversation: id, text })));
            } else if (f.type === "ack" && ++acks === chunk.length) {
              ws.close();
              resolve();
            } else if (f.type === "error") reject(new Error(f.message));
          };
          ws.onerror = () => reject(new Error("seed socket failed"));
        }),
      { id, chunk, at, tag },
    );
    if (at + 100 < texts.length) await page.waitForTimeout(1100);
  }
}

/** The id of the open conversation, once it has one (`#/c/ID`; a new direct chat is `#/u/PEER` until created). */
export async function openId(page) {
  await page.waitForFunction(() => /^#\/c\/\d+$/.test(location.hash));
  return page.evaluate(() => Number(location.hash.split("/").pop()));
}

/**
 * Routes the page's WebSockets through the test so it can cut them: `cut()` closes the current
 * one and refuses new ones (the page sees the server as gone), `heal()` lets them through again.
 * Takes effect for sockets opened after the call (reload the page once).
 */
export async function switchableSocket(page) {
  let blocked = false;
  let current = null;
  await page.routeWebSocket(/\/ws$/, (ws) => {
    if (blocked) {
      ws.close({ code: 1011, reason: "blocked by test" });
      return;
    }
    ws.connectToServer();
    current = ws;
  });
  return {
    cut() {
      blocked = true;
      if (current) current.close({ code: 1011, reason: "cut by test" });
      current = null;
    },
    heal() {
      blocked = false;
    },
  };
}

/** Switches the chat's language through the profile dialog ("en" or "zh") and closes it. */
export async function setLanguage(page, code) {
  await page.click("#btn-profile");
  await page.locator("#dlg-profile[open]").waitFor();
  await page.selectOption("#profile-lang", code);
  await page.keyboard.press("Escape");
  await page.locator("#dlg-profile[open]").waitFor({ state: "detached" });
}

/**
 * Creates the server's first account (the admin) through the API, so that pages opened later see
 * a server past its first run. Resolves to the session cookie's value.
 */
export async function createAdmin(server, name = "admin") {
  const res = await fetch(`${server.url}/api/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name, password: PASSWORD }),
  });
  if (res.status !== 201) throw new Error(`creating ${name}: ${res.status} ${await res.text()}`);
  return /chatd_session=([^;]+)/.exec(res.headers.get("set-cookie"))[1];
}
