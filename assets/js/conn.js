// conn: owns the WebSocket. Connects to /ws on the page's own origin (the session cookie
// authenticates), parses frames and hands them to `onFrame`, matches replies to requests by
// `ref`, reconnects after any close, and detects dead connections with the protocol's text
// `ping`/`pong`. It knows nothing about conversations: chat.js does.
//
// Reconnecting: while the page is visible and the server is unreachable (a probe of /healthz
// fails at the network level), it probes often (every 0.3-0.6 s after a quick first try, every
// 2.5-5 s once the outage has lasted 5 minutes), and opens the WebSocket as soon as a probe gets
// any answer: after a server restart the page is back within a second of the server accepting.
// A refused connection costs a down server nothing. When the server answers but the WebSocket
// still fails (busy, overloaded, session gone), and always while the page is hidden, it backs
// off exponentially with jitter (0.5 s doubling to 30 s, reset once a connection has stayed up
// 10 s), so a struggling server is not hammered. The browser's `online` event, focus and the
// page becoming visible retry at once.

const MIN_DELAY = 500;
const MAX_DELAY = 30000;
const PROBE_FIRST = 200;
const PROBE_MAX = 600;
const PROBE_MAX_LONG = 5000;
const LONG_OUTAGE = 5 * 60000;
const HEALTHY_AFTER = 10000;
const PING_EVERY = 20000;
const PONG_WITHIN = 10000;

/** "Equal jitter": half fixed, half random, so many clients do not reconnect in lockstep. */
const jitter = (base) => base / 2 + Math.random() * (base / 2);

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
    /** When the current outage began (0 while connected). */
    this.downSince = 0;
    /** Probes of /healthz since the last answer (sets the probe interval). */
    this.probes = 0;
    /** The server answered a probe but the WebSocket then failed: back off, do not probe. */
    this.refused = false;
    window.addEventListener("online", () => this.retryNow());
    window.addEventListener("offline", () => {
      if (this.status.phase === "waiting") this.setStatus({ phase: "offline" });
    });
    // Coming back to the tab: do not make the user wait for a long backoff.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.retryNow();
    });
    window.addEventListener("focus", () => this.retryNow());
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
      this.downSince = 0;
      this.probes = 0;
      this.refused = false;
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

  /** Waits, then tries again: a quick probe while visible and unreachable, else backoff. */
  scheduleRetry() {
    if (this.stopped) return;
    if (!this.downSince) this.downSince = Date.now();
    const probing = !document.hidden && !this.refused && navigator.onLine !== false;
    let delay;
    if (probing) {
      const cap = Date.now() - this.downSince > LONG_OUTAGE ? PROBE_MAX_LONG : PROBE_MAX;
      delay = jitter(Math.min(cap, PROBE_FIRST * 2 ** this.probes));
      this.probes += 1;
    } else {
      delay = jitter(Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt));
      this.attempt += 1;
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => (probing ? this.probe() : this.connect()), delay);
    if (navigator.onLine === false) this.setStatus({ phase: "offline", retryAt: Date.now() + delay });
    else this.setStatus({ phase: "waiting", retryAt: Date.now() + delay });
  }

  /**
   * Asks /healthz whether the server is there. No answer at all (connection refused, network
   * down): probe again soon. Any answer: connect now; if the WebSocket then fails anyway, the
   * server is up but refusing us, and the next tries back off instead of probing.
   */
  async probe() {
    if (this.stopped || this.ws) return;
    this.retryTimer = null;
    let answered = false;
    try {
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), 3000);
      await fetch("/healthz", { cache: "no-store", signal: ctl.signal });
      clearTimeout(timer);
      answered = true;
    } catch {
      answered = false;
    }
    if (this.stopped || this.ws || this.retryTimer) return; // retryNow() went first
    if (!answered) {
      this.scheduleRetry();
      return;
    }
    this.refused = true; // cleared when the socket opens
    this.connect();
  }

  /** Reconnect now instead of waiting for the backoff timer (button, online event, focus). */
  retryNow() {
    if (this.stopped || this.ws) return;
    if (this.status.phase !== "waiting" && this.status.phase !== "offline") return;
    this.refused = false;
    this.probes = 0;
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
