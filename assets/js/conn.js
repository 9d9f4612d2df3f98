// conn: owns the WebSocket. Connects to /ws on the page's own origin (the session cookie
// authenticates), parses frames and hands them to `onFrame`, matches replies to requests by
// `ref`, reconnects after any close with exponential backoff and jitter (0.5 s doubling to
// 30 s, reset once a connection has stayed up 10 s), and detects dead connections with the
// protocol's text `ping`/`pong`. It knows nothing about conversations: chat.js does.

const MIN_DELAY = 500;
const MAX_DELAY = 30000;
const HEALTHY_AFTER = 10000;
const PING_EVERY = 20000;
const PONG_WITHIN = 10000;

export class Conn {
  /**
   * `onFrame(frame)` for every JSON frame; `onOpen()` after `welcome` arrived (frame handled
   * first); `onStatus()` whenever `status` changes; `onDown(openedBefore)` after a failed or
   * closed connection.
   */
  constructor({ onFrame, onStatus, onDown }) {
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onDown = onDown;
    this.ws = null;
    this.attempt = 0;
    this.nextRef = 1;
    this.pending = new Map(); // ref → {resolve, reject, timer}
    this.stopped = false;
    this.retryTimer = null;
    /** phase: connecting | welcomed | ready | waiting (retryAt) | offline | stopped */
    this.status = { phase: "connecting", retryAt: 0, everConnected: false };
    this.lastRecv = 0;
    this.pingSentAt = 0;
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => {
      if (this.status.phase === "waiting") this.setStatus({ phase: "offline" });
    });
    document.addEventListener("visibilitychange", () => {
      // Coming back to the tab: do not make the user wait for a long backoff.
      if (!document.hidden && this.status.phase === "waiting") this.retryNow();
    });
  }

  url() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  }

  setStatus(patch) {
    this.status = { ...this.status, ...patch };
    this.onStatus();
  }

  /** True once `welcome` has arrived on the current socket. */
  get isOpen() {
    return this.status.phase === "welcomed" || this.status.phase === "ready";
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setStatus({ phase: "connecting", retryAt: 0 });
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    let opened = false;
    let healthy = null;
    let pinger = null;
    ws.onopen = () => {
      opened = true;
      this.lastRecv = Date.now();
      this.pingSentAt = 0;
      healthy = setTimeout(() => (this.attempt = 0), HEALTHY_AFTER);
      pinger = setInterval(() => this.heartbeat(ws), PING_EVERY);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastRecv = Date.now();
      if (ev.data === "pong") return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!frame || typeof frame.type !== "string") return;
      if (frame.type === "welcome") {
        this.setStatus({ phase: "welcomed", everConnected: true });
      }
      this.settle(frame);
      this.onFrame(frame);
    };
    ws.onclose = () => {
      clearTimeout(healthy);
      clearInterval(pinger);
      if (ws !== this.ws) return;
      this.ws = null;
      this.failPending();
      if (this.stopped) return;
      this.onDown(opened);
      this.scheduleRetry();
    };
  }

  /** Sends an application ping; if the previous one got no answer at all, the link is dead. */
  heartbeat(ws) {
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (this.pingSentAt && this.lastRecv < this.pingSentAt && now - this.pingSentAt > PONG_WITHIN) {
      ws.close(4000, "no pong");
      // onclose may be late on a dead link; retry right away.
      this.ws = null;
      ws.onclose = null;
      this.failPending();
      this.onDown(true);
      this.scheduleRetry();
      return;
    }
    this.pingSentAt = now;
    ws.send("ping");
  }

  scheduleRetry() {
    if (this.stopped) return;
    const base = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt);
    this.attempt += 1;
    // "Equal jitter": half fixed, half random, so many clients do not reconnect in lockstep.
    const delay = base / 2 + Math.random() * (base / 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
    if (navigator.onLine === false) this.setStatus({ phase: "offline", retryAt: Date.now() + delay });
    else this.setStatus({ phase: "waiting", retryAt: Date.now() + delay });
  }

  /** Reconnect now instead of waiting for the backoff timer (button, online event, focus). */
  retryNow() {
    if (this.stopped || this.ws) return;
    this.connect();
  }

  /** chat.js calls this when `synced` arrived: the connection is fully usable. */
  markReady() {
    if (this.isOpen) this.setStatus({ phase: "ready" });
  }

  /** Sends a frame if the socket is up (after welcome). Returns whether it was sent. */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a frame with a fresh `ref`; resolves with the first reply carrying that ref, rejects
   * with an `error` frame, on timeout, or when the connection drops.
   */
  request(frame, timeout = 20000) {
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, ref })) {
        reject(Object.assign(new Error("offline"), { code: "offline" }));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(Object.assign(new Error("timeout"), { code: "timeout" }));
      }, timeout);
      this.pending.set(ref, { resolve, reject, timer });
    });
  }

  settle(frame) {
    if (typeof frame.ref !== "number") return;
    const p = this.pending.get(frame.ref);
    if (!p) return;
    this.pending.delete(frame.ref);
    clearTimeout(p.timer);
    if (frame.type === "error") p.reject(Object.assign(new Error(frame.message), { code: frame.code }));
    else p.resolve(frame);
  }

  failPending() {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(Object.assign(new Error("disconnected"), { code: "offline" }));
    }
    this.pending.clear();
  }

  /** Closes for good (logout). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.failPending();
    this.setStatus({ phase: "stopped" });
  }
}
