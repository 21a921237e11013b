// A session keeps one authenticated connection up: discovery at start, then reconnects with exponential backoff and
// jitter (docs/client-protocol.md "Reconnecting"), preferring the nodes a `goaway` listed, then discovery again.
// Deliveries are de-duplicated by `eid`. A node closes a long connection with 1001 "home claim renewal: reconnect"
// before the signed hello ages out (docs/client-protocol.md, "Close codes"): the session reconnects at once,
// to the same node first.

import { b64uEncode } from "./bytes.js";
import { discover } from "./discovery.js";
import { Emitter } from "./emitter.js";

export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 30_000;
export const BACKOFF_JITTER = 0.5;
export const STABLE_AFTER_MS = 60_000;
export const SEEN_EIDS_MAX = 4096;
export const SEND_WAIT_MS = 10_000;
export const RENEWAL_REASON = "home claim renewal";

/**
 * Is this close the node's "your home claim is about to age out, reconnect now" (1001 without a goaway)?
 * @param {number} code
 * @param {string} reason
 */
export function isClaimRenewal(code, reason) {
  return code === 1001 && typeof reason === "string" && reason.startsWith(RENEWAL_REASON);
}

/**
 * The delay before reconnect attempt `n` (0-based): 0.5 s doubling to 30 s, ±50 %.
 * @param {number} n
 * @param {() => number} [random]
 */
export function backoffMs(n, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(n, 16));
  return base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * random());
}

/**
 * @typedef {"idle"|"connecting"|"connected"|"offline"|"refused"} SessionState
 * @typedef {{state: {state: SessionState, detail: string}, deliver: import("./codec.js").Deliver,
 *   node: import("./discovery.js").Found, error: import("./codec.js").ErrorMsg}} SessionEvents
 */

/** @extends {Emitter<SessionEvents>} */
export class Session extends Emitter {
  /**
   * @param {import("./identity.js").Identity} identity
   * @param {import("./discovery.js").DiscoveryConfig} discovery
   * @param {{discover?: typeof discover}} [opts] `discover` replaces discovery (tests)
   */
  constructor(identity, discovery, opts = {}) {
    super();
    this.identity = identity;
    this.discovery = discovery;
    this.discover = opts.discover ?? discover;
    /** A manual entry (`ws#id`) tried first on the next attempt: the node that asked us to renew our claim. */
    this.resume = "";
    this.attempting = false;
    /** @type {import("./connection.js").Connection | null} */
    this.connection = null;
    /** @type {import("./discovery.js").Found | null} */
    this.found = null;
    /** @type {SessionState} */
    this.state = "idle";
    this.failures = 0;
    /** @type {string[]} */
    this.goawayCards = [];
    /** @type {Set<string>} */
    this.seen = new Set();
    this.stopped = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {string[]} */
    this.lastErrors = [];
  }

  /** @param {SessionState} state @param {string} [detail] */
  setState(state, detail = "") {
    this.state = state;
    this.emit("state", { state, detail });
  }

  /** Connect (discovery) now; later losses reconnect on their own until stop(). */
  start() {
    this.stopped = false;
    void this.attempt();
  }

  /** Reconnect now if we are waiting for the next attempt (a push wake-up, the browser going online). */
  kick() {
    if (this.stopped || this.connection || this.attempting) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    void this.attempt();
  }

  async attempt() {
    if (this.stopped) return;
    this.attempting = true;
    try {
      await this.attemptOnce();
    } finally {
      this.attempting = false;
    }
  }

  async attemptOnce() {
    this.setState("connecting", this.failures ? `attempt ${this.failures + 1}` : "");
    const cards = this.goawayCards;
    const resume = this.resume;
    this.goawayCards = [];
    this.resume = "";
    try {
      let cfg = cards.length ? { ...this.discovery, cards: [...cards, ...(this.discovery.cards ?? [])] } : this.discovery;
      if (resume) cfg = { ...cfg, manual: [resume, ...(cfg.manual ?? [])] };
      const { connection, found, errors } = await this.discover(cfg, this.identity);
      this.lastErrors = errors;
      if (this.stopped) {
        connection.close();
        return;
      }
      this.adopt(connection, found);
    } catch (e) {
      const errs = /** @type {any} */ (e)?.errors;
      this.lastErrors = Array.isArray(errs) ? errs : [String(e)];
      const refused = this.lastErrors.length > 0 && this.lastErrors.every((x) => /could not prove|not the expected/.test(x));
      this.setState(refused ? "refused" : "offline", this.lastErrors.join("; "));
      this.schedule();
    }
  }

  /**
   * @param {import("./connection.js").Connection} conn
   * @param {import("./discovery.js").Found} found
   */
  adopt(conn, found) {
    const upSince = performance.now();
    this.connection = conn;
    this.found = found;
    conn.on("deliver", (d) => {
      const key = b64uEncode(d.eid);
      if (this.seen.has(key)) return;
      this.seen.add(key);
      if (this.seen.size > SEEN_EIDS_MAX) this.seen.delete(/** @type {string} */ (this.seen.values().next().value));
      this.emit("deliver", d);
    });
    conn.on("error", (err) => this.emit("error", err));
    conn.on("goaway", (nodes) => {
      this.goawayCards = nodes.filter((n) => n.startsWith("homing://node/"));
    });
    conn.on("close", ({ code, reason }) => {
      if (this.connection !== conn) return;
      this.connection = null;
      if (performance.now() - upSince > STABLE_AFTER_MS) this.failures = 0;
      if (this.stopped) return;
      // "reconnect now" (a renewal, a goaway) is honoured at once only when nothing failed since the last stable
      // connection: a node that says it on every connection gets the backoff, not a loop of handshakes
      const now = this.failures === 0 ? 0 : undefined;
      if (!this.goawayCards.length && isClaimRenewal(code, reason)) {
        this.resume = `${found.ws}#${found.id}`;
        this.setState("connecting", "home claim renewal");
        this.schedule(now);
        return;
      }
      this.setState("offline", "connection lost");
      this.schedule(this.goawayCards.length ? now : undefined);
    });
    this.emit("node", found);
    this.setState("connected", `${found.ws} (${found.source})`);
    conn.start();
  }

  /** @param {number} [delayMs] */
  schedule(delayMs) {
    if (this.stopped || this.timer) return;
    const d = delayMs ?? backoffMs(this.failures);
    this.failures++;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.attempt();
    }, d);
  }

  /** Wait (bounded) until connected. @param {number} [timeoutMs] */
  async ready(timeoutMs = SEND_WAIT_MS) {
    if (this.connection) return this.connection;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error("not connected to any node"));
      }, timeoutMs);
      const off = this.on("state", () => {
        if (this.connection) {
          clearTimeout(timer);
          off();
          resolve(this.connection);
        }
      });
    });
  }

  /**
   * @param {import("./codec.js").Kind} kind
   * @param {Uint8Array} to
   * @param {Uint8Array} call
   * @param {Uint8Array} body
   * @param {{onQueued?: () => void}} [opts]
   */
  async send(kind, to, call, body, opts) {
    const conn = await this.ready();
    return conn.sendEnvelope(kind, to, call, body, opts);
  }

  async iceServers() {
    const conn = await this.ready();
    return conn.iceServers();
  }

  stop() {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.connection?.close();
    this.connection = null;
    this.setState("idle");
  }
}
