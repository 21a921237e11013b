// One authenticated WebSocket connection to a node (docs/client-protocol.md): the mutual Ed25519 handshake
// (the node must prove the id we expected), envelopes with their receipts, ping, ice_servers, push and goaway.

import { b64uEncode, concat, equal, randomBytes, utf8 } from "./bytes.js";
import { decodeNodeFrame, encodeFrame, envelope, FrameError, hello, pushRegister, pushUnregister } from "./codec.js";
import { verify } from "./ed25519.js";
import { Emitter } from "./emitter.js";

export const HANDSHAKE_TIMEOUT_MS = 10_000;
export const PING_TIMEOUT_MS = 10_000;
export const ICE_SERVERS_TIMEOUT_MS = 5_000;
export const PUSH_TIMEOUT_MS = 10_000;
export const CONTROL_WAITING_MAX = 64;
export const PENDING_REFS_MAX = 4096;
/**
 * The page signs a challenge only when its date (the nonce's first 8 bytes, unix ms) is at most this far ahead of
 * its own clock: its hello is a home claim good from that date for 12 h, so a node could otherwise collect claims
 * dated days ahead and use each when its date came (node/protocol/relay/claims.py, CHALLENGE_AHEAD_MAX_S).
 */
export const CHALLENGE_AHEAD_MAX_MS = 600_000;
/**
 * ... up to this far ahead: a node may draw its whole nonce at random (docs/client-protocol.md), and 8 random bytes
 * read as unix ms are a date past this horizon but for about 2 in 10 million; a claim dated beyond it never becomes
 * good anywhere (node/protocol/relay/claims.py, CHALLENGE_DATE_HORIZON_S).
 */
export const CHALLENGE_DATE_HORIZON_MS = 100 * 365.25 * 86_400_000;
const CLIENT_AUTH = utf8("homing/v1/client-auth");
const NODE_AUTH = utf8("homing/v1/node-auth");

export class HandshakeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "HandshakeError";
  }
}

/** The node could not prove the id we pinned: it is not that node. */
export class NodeIdMismatch extends HandshakeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "NodeIdMismatch";
  }
}

/** The node answered a push request with an error (`unknown_type`: no push there; `rate_limited`; `bad_request`). */
export class PushRefused extends Error {
  /** @param {string} code */
  constructor(code) {
    super(`the node refused the push request (${code})`);
    this.name = "PushRefused";
    this.code = code;
  }
}

export class ConnectionClosed extends Error {
  /** @param {number} code @param {string} reason */
  constructor(code, reason) {
    super(`connection closed (${code}${reason ? " " + reason : ""})`);
    this.name = "ConnectionClosed";
    this.code = code;
  }
}

/**
 * @typedef {import("./codec.js").Receipt} Receipt
 * @typedef {import("./codec.js").Deliver} Deliver
 * @typedef {import("./codec.js").IceServer} IceServer
 * @typedef {{deliver: Deliver, goaway: string[], close: {code: number, reason: string}, error: import("./codec.js").ErrorMsg}} ConnectionEvents
 */

/**
 * Is a challenge nonce dated more than CHALLENGE_AHEAD_MAX_MS after `nowMs` (this machine's clock), yet within
 * CHALLENGE_DATE_HORIZON_MS of it (a date a claim could one day be used at)?
 * @param {Uint8Array} nodeNonce
 * @param {number} nowMs
 */
export function challengeTooFarAhead(nodeNonce, nowMs) {
  if (nodeNonce.length !== 32) return true;
  const aheadMs = Number(new DataView(nodeNonce.buffer, nodeNonce.byteOffset, 8).getBigUint64(0)) - nowMs;
  return aheadMs > CHALLENGE_AHEAD_MAX_MS && aheadMs <= CHALLENGE_DATE_HORIZON_MS;
}

/**
 * Bytes the client signs in `hello`: "homing/v1/client-auth" || node id || node nonce (85 bytes).
 * @param {Uint8Array} node
 * @param {Uint8Array} nodeNonce
 */
export function clientAuthBytes(node, nodeNonce) {
  return concat(CLIENT_AUTH, node, nodeNonce);
}

/**
 * Bytes the node signs in `welcome`: "homing/v1/node-auth" || client id || client nonce (83 bytes).
 * @param {Uint8Array} clientId
 * @param {Uint8Array} clientNonce
 */
export function nodeAuthBytes(clientId, clientNonce) {
  return concat(NODE_AUTH, clientId, clientNonce);
}

/** @extends {Emitter<ConnectionEvents>} */
export class Connection extends Emitter {
  /**
   * @param {WebSocket} ws an open, authenticated socket
   * @param {{url: string, nodeId: Uint8Array, handshakeMs: number, json: boolean, early: unknown[]}} info
   */
  constructor(ws, info) {
    super();
    this.ws = ws;
    this.url = info.url;
    this.nodeId = info.nodeId;
    this.nodeIdText = b64uEncode(info.nodeId);
    this.handshakeMs = info.handshakeMs;
    this.json = info.json;
    this.nextRef = 1;
    this.closed = false;
    /** @type {Map<number, {resolve: (r: Receipt) => void, reject: (e: Error) => void, onQueued?: () => void}>} */
    this.pending = new Map();
    /** @type {((ms: number) => void)[]} */
    this.pongWaiters = [];
    /**
     * Requests without a `ref` (ice_servers, push_register, push_unregister), oldest first: the node answers them in
     * order, so each answer (or ref-less error) settles the oldest. One that timed out stays as `gone` to swallow its
     * late answer. @type {{settle: (m: import("./codec.js").NodeMessage | null) => void, gone: boolean}[]}
     */
    this.control = [];
    /** Frames that arrived right after `welcome` (mailbox deliveries): handled by `start()`. @type {unknown[] | null} */
    this.early = info.early;
    ws.onmessage = (ev) => (this.early ? this.early.push(ev.data) : this.onFrame(ev.data));
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
    ws.onerror = () => {};
  }

  /** Attach your handlers first, then call start(): frames that arrived meanwhile are handled now, in order. */
  start() {
    const early = this.early ?? /** @type {unknown[]} */ ([]);
    this.early = null;
    for (const data of early) this.onFrame(data);
  }

  /** @param {unknown} data */
  onFrame(data) {
    /** @type {import("./codec.js").NodeMessage} */
    let msg;
    try {
      msg = decodeNodeFrame(/** @type {any} */ (data));
    } catch (e) {
      if (e instanceof FrameError) return; // a malformed frame from the node is dropped, never fatal
      throw e;
    }
    switch (msg.t) {
      case "deliver":
        this.emit("deliver", msg);
        break;
      case "receipt": {
        const p = this.pending.get(msg.ref);
        if (!p) break;
        if (msg.status === "queued") {
          p.onQueued?.();
          break;
        }
        this.pending.delete(msg.ref);
        p.resolve(msg);
        break;
      }
      case "pong":
        this.pongWaiters.shift()?.(performance.now());
        break;
      case "ice_servers":
      case "ok":
        this.control.shift()?.settle(msg);
        break;
      case "error":
        if (msg.ref === null && this.control.length && ["unknown_type", "rate_limited", "bad_request"].includes(msg.code)) {
          this.control.shift()?.settle(msg);
          break;
        }
        if (msg.ref !== null && this.pending.has(msg.ref)) {
          const p = this.pending.get(msg.ref);
          this.pending.delete(msg.ref);
          p?.resolve({ t: "receipt", ref: msg.ref, status: "rejected", reason: null });
        }
        this.emit("error", msg);
        break;
      case "goaway":
        this.emit("goaway", msg.nodes);
        break;
      case "ping":
        this.sendMap({ t: "pong" });
        break;
      default:
        break;
    }
  }

  /** @param {number} code @param {string} reason */
  onClose(code, reason) {
    if (this.closed) return;
    this.closed = true;
    const err = new ConnectionClosed(code, reason);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.control) w.settle(null);
    this.control = [];
    this.emit("close", { code, reason });
  }

  /** @param {Record<string, unknown>} map */
  sendMap(map) {
    if (this.closed || this.ws.readyState !== 1) throw new ConnectionClosed(1006, "not connected");
    this.ws.send(/** @type {any} */ (encodeFrame(map, { json: this.json })));
  }

  /**
   * Send one envelope; resolves with its terminal receipt (`onQueued` runs when the callee is offline and the
   * envelope waits in its mailbox). Rejects with ConnectionClosed if the connection ends first.
   * @param {import("./codec.js").Kind} kind
   * @param {Uint8Array} to
   * @param {Uint8Array} call
   * @param {Uint8Array} body
   * @param {{onQueued?: () => void}} [opts]
   * @returns {Promise<Receipt>}
   */
  sendEnvelope(kind, to, call, body, opts = {}) {
    if (this.pending.size >= PENDING_REFS_MAX) return Promise.reject(new Error("too many envelopes waiting for receipts"));
    const ref = this.nextRef++;
    const map = envelope(kind, to, call, body, ref);
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject, onQueued: opts.onQueued });
      try {
        this.sendMap(map);
      } catch (e) {
        this.pending.delete(ref);
        reject(e);
      }
    });
  }

  /** Round-trip time of an application ping, in ms. @returns {Promise<number>} */
  ping() {
    const start = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no pong")), PING_TIMEOUT_MS);
      this.pongWaiters.push((t) => {
        clearTimeout(timer);
        resolve(t - start);
      });
      try {
        this.sendMap({ t: "ping" });
      } catch (e) {
        clearTimeout(timer);
        reject(e);
      }
    });
  }

  /**
   * Send a ref-less request and wait (bounded) for its answer: the message, or null on timeout or close.
   * @param {Record<string, unknown>} map
   * @param {number} timeoutMs
   * @returns {Promise<import("./codec.js").NodeMessage | null>}
   */
  request(map, timeoutMs) {
    return new Promise((resolve) => {
      if (this.control.length >= CONTROL_WAITING_MAX) return resolve(null);
      /** @type {{settle: (m: import("./codec.js").NodeMessage | null) => void, gone: boolean}} */
      const waiter = {
        gone: false,
        settle: (m) => {
          clearTimeout(timer);
          if (!waiter.gone) resolve(m);
          waiter.gone = true;
        },
      };
      const timer = setTimeout(() => {
        waiter.gone = true; // stays queued: its late answer must not settle the next request
        resolve(null);
      }, timeoutMs);
      this.control.push(waiter);
      try {
        this.sendMap(map);
      } catch {
        this.control.splice(this.control.indexOf(waiter), 1);
        waiter.settle(null);
      }
    });
  }

  /**
   * The node's STUN/TURN servers (`{"t":"ice_servers"}`). A node that does not know the message (`unknown_type`),
   * refuses it, does not answer in time, or closes gives an empty list: the call still works between reachable hosts.
   * @returns {Promise<IceServer[]>}
   */
  async iceServers() {
    const m = await this.request({ t: "ice_servers" }, ICE_SERVERS_TIMEOUT_MS);
    return m?.t === "ice_servers" ? m.servers : [];
  }

  /**
   * Register a push subscription (docs/client-protocol.md, "Push wake-up"); resolves with the node's 65-byte VAPID
   * public key. Rejects with PushRefused on an error answer, Error on a timeout or close.
   * @param {{endpoint: string, p256dh: Uint8Array, auth: Uint8Array}} sub
   * @returns {Promise<Uint8Array>}
   */
  async pushRegister(sub) {
    const m = await this.request(pushRegister(sub), PUSH_TIMEOUT_MS);
    if (m?.t === "ok" && m.of === "push_register" && m.vapid) return m.vapid;
    if (m?.t === "error") throw new PushRefused(m.code);
    throw new Error(m ? `unexpected answer to push_register: ${m.t}` : "no answer to push_register");
  }

  /** Remove this id's push subscription at the node. @returns {Promise<void>} */
  async pushUnregister() {
    const m = await this.request(pushUnregister(), PUSH_TIMEOUT_MS);
    if (m?.t === "ok" && m.of === "push_unregister") return;
    if (m?.t === "error") throw new PushRefused(m.code);
    throw new Error(m ? `unexpected answer to push_unregister: ${m.t}` : "no answer to push_unregister");
  }

  close(code = 1000) {
    try {
      this.ws.close(code);
    } catch {
      /* already closing */
    }
    this.onClose(code, "closed by client");
  }
}

/**
 * Open a connection and run the handshake: the node must name `expectedId` in its challenge and sign our nonce
 * with that key. Rejects with NodeIdMismatch when it cannot, HandshakeError for anything else.
 * @param {string} url
 * @param {import("./identity.js").Identity} identity
 * @param {Uint8Array} expectedId
 * @param {{timeoutMs?: number, json?: boolean, WebSocketImpl?: typeof WebSocket}} [opts]
 * @returns {Promise<Connection>}
 */
export function connect(url, identity, expectedId, opts = {}) {
  const timeoutMs = opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const json = Boolean(opts.json);
  const WS = opts.WebSocketImpl ?? globalThis.WebSocket;
  const start = performance.now();
  return new Promise((resolve, reject) => {
    /** @type {WebSocket} */
    let ws;
    try {
      ws = json ? new WS(url, "homing.v1.json") : new WS(url);
    } catch (e) {
      reject(new HandshakeError(`cannot open ${url}: ${e instanceof Error ? e.message : e}`));
      return;
    }
    ws.binaryType = "arraybuffer";
    let done = false;
    /** @param {Error} err */
    const fail = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
        /* ignore */
      }
      reject(err);
    };
    const timer = setTimeout(() => fail(new HandshakeError(`no handshake with ${url} within ${timeoutMs} ms`)), timeoutMs);
    const nonce = randomBytes(32);
    let stage = "challenge";
    /** @type {unknown[]} */
    const early = [];
    ws.onerror = () => fail(new HandshakeError(`cannot connect to ${url}`));
    ws.onclose = (ev) => fail(new HandshakeError(`${url} closed during the handshake (${ev.code})`));
    ws.onmessage = async (ev) => {
      if (done) return;
      if (stage === "verifying") {
        early.push(ev.data);
        return;
      }
      /** @type {import("./codec.js").NodeMessage} */
      let msg;
      try {
        msg = decodeNodeFrame(ev.data);
      } catch (e) {
        fail(new HandshakeError(`bad frame in the handshake: ${e instanceof Error ? e.message : e}`));
        return;
      }
      if (stage === "challenge") {
        if (msg.t !== "challenge") return fail(new HandshakeError(`expected challenge, got ${msg.t}`));
        if (!equal(msg.node, expectedId)) return fail(new NodeIdMismatch(`the node at ${url} is ${b64uEncode(msg.node)}, not the expected ${b64uEncode(expectedId)}`));
        if (challengeTooFarAhead(msg.nonce, Date.now())) return fail(new HandshakeError(`the node at ${url} dated its challenge ahead of our clock: not signing it (is our clock right?)`));
        stage = "welcome";
        const sig = await identity.sign(clientAuthBytes(msg.node, msg.nonce));
        if (!done) ws.send(/** @type {any} */ (encodeFrame(hello(identity.id, nonce, sig), { json })));
        return;
      }
      if (msg.t === "error") return fail(new HandshakeError(`the node refused our hello (${msg.code})`));
      if (msg.t !== "welcome") return fail(new HandshakeError(`expected welcome, got ${msg.t}`));
      stage = "verifying";
      const ok = equal(msg.id, identity.id) && (await verify(expectedId, nodeAuthBytes(identity.id, nonce), msg.sig));
      if (!ok) return fail(new NodeIdMismatch(`the node at ${url} could not prove the id ${b64uEncode(expectedId)}`));
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(new Connection(ws, { url, nodeId: expectedId, handshakeMs: performance.now() - start, json, early }));
    };
  });
}
