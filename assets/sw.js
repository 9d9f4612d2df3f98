// sw: the service worker. Keeps the web client's shell (the page, its stylesheet, icon and
// JavaScript modules) in a cache so that, when the server cannot be reached, a reload shows the
// app (with its cached conversations and the outbox of unsent messages) instead of the
// browser's error page. Registered by main.js as /sw.js (scope /); browsers run service workers
// only in secure contexts (https, localhost), so over plain http on a LAN there is none.
//
// - Never cached, never answered from the cache: /api/*, /files/* (private, per user), /ws, /metrics, /healthz, non-GET requests
//   and other origins (they go to the network untouched).
// - The page ("/"): network first (so an update takes effect at the next load), the cached copy
//   only when the network fails or takes over 4 s. Each fresh copy is stored with its headers
//   (its CSP carries the hash of the import map inside it).
// - Files whose URL carries a content hash (?v=…, see build.rs): cache first (they never change).
//   Other files: network first, cache as fallback.
// - On install, the shell the page names (src/href attributes and the import map) is fetched and
//   cached; after each fresh copy of the page, entries it no longer names are deleted.
// - The cache's name carries a version: a new sw.js with a new name drops the old cache when it
//   activates, and takes over open pages at once.

const CACHE = "chatd-shell-v1";
const NEVER = /^\/(api\/|files\/|ws$|metrics$|healthz$)/;
const NAV_TIMEOUT = 4000;

/** Same-origin URLs of the shell named in index.html, the import map's modules included. */
function shellUrls(html) {
  const urls = new Set(["/"]);
  for (const m of html.matchAll(/\b(?:src|href)="(\/[^"/][^"]*)"/g)) urls.add(m[1]);
  const map = html.match(/<script type="importmap"[^>]*>([\s\S]*?)<\/script>/);
  if (map) {
    try {
      for (const u of Object.values(JSON.parse(map[1]).imports || {})) if (u.startsWith("/")) urls.add(u);
    } catch {
      // A broken import map: the modules are cached as the page loads them.
    }
  }
  return [...urls].filter((u) => !NEVER.test(new URL(u, self.location.origin).pathname));
}

/** Stores a fresh copy of the page and the files it names; drops what it no longer names. */
async function refreshShell(pageResponse) {
  const cache = await caches.open(CACHE);
  const html = await pageResponse.clone().text();
  await cache.put("/", pageResponse);
  const wanted = shellUrls(html);
  const keep = new Set(wanted.map((u) => new URL(u, self.location.origin).href));
  await Promise.all(
    wanted
      .filter((u) => u !== "/")
      .map(async (u) => {
        if (await cache.match(u)) return;
        try {
          const r = await fetch(u);
          if (r.ok) await cache.put(u, r);
        } catch {
          // Offline again: this one is cached when the page next loads it.
        }
      }),
  );
  for (const req of await cache.keys()) {
    const url = new URL(req.url);
    // Hashed files the page no longer names are an old version's.
    if (url.searchParams.has("v") && !keep.has(url.href)) await cache.delete(req);
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      try {
        const res = await fetch("/", { cache: "no-cache" });
        if (res.ok) await refreshShell(res);
      } catch {
        // Installed while offline: the shell is cached at the next load.
      }
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

/** fetch() that gives up after `ms` (a server that is down may not even refuse). */
function fetchWithin(request, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timeout")), ms);
    fetch(request).then(
      (r) => {
        clearTimeout(timer);
        resolve(r);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

async function page(event) {
  const url = new URL(event.request.url);
  try {
    const res = await fetchWithin(event.request, NAV_TIMEOUT);
    if (url.pathname === "/" && res.ok) event.waitUntil(refreshShell(res.clone()));
    return res;
  } catch (e) {
    const cached = await caches.match(url.pathname === "/" ? "/" : event.request, { ignoreSearch: url.pathname === "/" });
    if (cached) return cached;
    throw e;
  }
}

async function file(event) {
  const req = event.request;
  const url = new URL(req.url);
  const cache = await caches.open(CACHE);
  if (url.searchParams.has("v")) {
    const hit = await cache.match(req);
    if (hit) return hit;
  }
  try {
    const res = await fetch(req);
    if (res.status === 200 && res.type === "basic") event.waitUntil(cache.put(req, res.clone()));
    return res;
  } catch (e) {
    const hit = await cache.match(req);
    if (hit) return hit;
    throw e;
  }
}

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin || NEVER.test(url.pathname)) return;
  event.respondWith(req.mode === "navigate" ? page(event) : file(event));
});
