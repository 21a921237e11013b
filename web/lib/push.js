// Push wake-ups in the browser (docs/client-protocol.md "Push wake-up", docs/web.md "Push wake-ups"): a Web Push
// subscription made with the VAPID key of the node we are connected to, registered with `push_register` on every
// connect and removed with `push_unregister` on opt-out. The service worker (app/sw.js) shows "incoming call" on a
// wake-up push and opens the page, which connects and gets the queued offer from the mailbox.
//
// The node hands out its VAPID key only in the answer to a `push_register`, and a browser subscribes only with a
// key. So the first registration on a node we know no key for registers a throw-away subscription (a fresh P-256 key,
// an endpoint under `.invalid`, which never resolves) to learn the key, then subscribes with it and registers the
// real subscription, which replaces the throw-away one (a node keeps one subscription per id). Keys are remembered
// per node id, so this happens once per node.

import { b64uDecode, b64uEncode, equal, randomBytes } from "./bytes.js";
import { P256_POINT_BYTES, PUSH_AUTH_BYTES } from "./codec.js";
import { Emitter } from "./emitter.js";

export const PROBE_ENDPOINT = "https://push.invalid/homing-vapid-probe";
export const VAPID_CACHE_KEY = "homing:push-vapid";
export const VAPID_CACHE_MAX = 64;
export const ROUNDS_MAX = 2;
/** A browser without a reachable push service may never settle `subscribe()` (headless Chromium offline does not). */
export const SUBSCRIBE_TIMEOUT_MS = 15_000;

/**
 * @template T
 * @param {Promise<T>} p
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
function within(p, ms, what) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what} did not finish within ${ms} ms`), { name: "TimeoutError" })), ms);
  });
  return /** @type {Promise<T>} */ (Promise.race([p, timeout])).finally(() => clearTimeout(timer));
}

/**
 * @typedef {{endpoint: string, p256dh: Uint8Array, auth: Uint8Array}} PushFields
 * @typedef {{endpoint: string, options?: {applicationServerKey?: ArrayBuffer | null}, toJSON(): any,
 *   unsubscribe(): Promise<boolean>}} SubscriptionLike
 * @typedef {{getSubscription(): Promise<SubscriptionLike | null>,
 *   subscribe(o: {userVisibleOnly: boolean, applicationServerKey: Uint8Array}): Promise<SubscriptionLike>}} PushManagerLike
 * @typedef {{getItem(k: string): string | null, setItem(k: string, v: string): void}} StorageLike
 * @typedef {"off"|"registering"|"registered"|"failed"} PushState
 * @typedef {{state: PushState, detail: string, node: string, vapid: string, endpoint: string, probed: boolean}} PushStatus
 */

/**
 * The fields of `push_register` from `PushSubscription.toJSON()` (`{endpoint, keys: {p256dh, auth}}`, unpadded
 * base64url keys). Throws RangeError when they are not what a node accepts.
 * @param {any} json
 * @returns {PushFields}
 */
export function subscriptionFields(json) {
  const endpoint = json?.endpoint;
  const keys = json?.keys;
  if (typeof endpoint !== "string" || typeof keys?.p256dh !== "string" || typeof keys?.auth !== "string")
    throw new RangeError("a push subscription needs an endpoint and keys p256dh and auth");
  let p256dh, auth;
  try {
    p256dh = b64uDecode(keys.p256dh);
    auth = b64uDecode(keys.auth);
  } catch {
    throw new RangeError("push subscription keys are not base64url");
  }
  if (p256dh.length !== P256_POINT_BYTES || p256dh[0] !== 4) throw new RangeError("p256dh must be a 65-byte uncompressed P-256 point");
  if (auth.length !== PUSH_AUTH_BYTES) throw new RangeError("auth must be 16 bytes");
  return { endpoint, p256dh, auth };
}

/**
 * A throw-away subscription that is only good for learning a node's VAPID key: a fresh P-256 public key (WebCrypto)
 * and a random auth secret, at an endpoint that never resolves.
 * @returns {Promise<PushFields>}
 */
export async function probeFields() {
  const pair = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]));
  const p256dh = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { endpoint: PROBE_ENDPOINT, p256dh, auth: randomBytes(PUSH_AUTH_BYTES) };
}

/** @extends {Emitter<{state: PushStatus}>} */
export class PushClient extends Emitter {
  /**
   * @param {import("./session.js").Session} session
   * @param {{pushManager: () => Promise<PushManagerLike>, storage: StorageLike, probe?: () => Promise<PushFields>,
   *   subscribeTimeoutMs?: number}} opts
   */
  constructor(session, opts) {
    super();
    this.session = session;
    this.pushManager = opts.pushManager;
    this.storage = opts.storage;
    this.probe = opts.probe ?? probeFields;
    this.subscribeTimeoutMs = opts.subscribeTimeoutMs ?? SUBSCRIBE_TIMEOUT_MS;
    this.enabled = false;
    /** @type {PushStatus} */
    this.status = { state: "off", detail: "", node: "", vapid: "", endpoint: "", probed: false };
    /** @type {Promise<unknown>} one operation at a time: the node answers push requests in order, without a ref */
    this.chain = Promise.resolve();
    this.off = session.on("state", ({ state }) => {
      if (state === "connected" && this.enabled) void this.registerNow();
    });
  }

  /** @param {Partial<PushStatus>} patch */
  set(patch) {
    this.status = { ...this.status, ...patch };
    this.emit("state", this.status);
  }

  /** Start: register now (if connected) and again on every connect. Resolves after this first registration. */
  enable() {
    this.enabled = true;
    return this.registerNow();
  }

  /** Opt out: `push_unregister` at the node, then drop the browser's subscription. */
  disable() {
    this.enabled = false;
    return this.serial(async () => {
      const conn = this.session.connection;
      if (conn) await conn.pushUnregister();
      const sub = await (await this.pushManager()).getSubscription();
      await sub?.unsubscribe();
      this.set({ state: "off", detail: "", endpoint: "" });
    });
  }

  /** @template T @param {() => Promise<T>} fn @returns {Promise<T | undefined>} */
  serial(fn) {
    const run = this.chain.then(fn).catch((e) => {
      this.set({ state: "failed", detail: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
      return undefined;
    });
    this.chain = run;
    return run;
  }

  registerNow() {
    return this.serial(async () => {
      const conn = this.session.connection;
      if (!conn || !this.enabled) return;
      this.set({ state: "registering", detail: "", node: conn.nodeIdText, probed: false });
      const { sub, vapid } = await this.register(conn);
      this.set({ state: "registered", vapid: b64uEncode(vapid), endpoint: sub.endpoint });
    });
  }

  /**
   * @param {import("./connection.js").Connection} conn
   * @returns {Promise<{sub: SubscriptionLike, vapid: Uint8Array}>}
   */
  async register(conn) {
    const pm = await this.pushManager();
    for (let round = 0; round < ROUNDS_MAX; round++) {
      let sub = await pm.getSubscription();
      let vapid = this.knownKey(conn.nodeIdText);
      if (sub && vapid && !this.keyMatches(sub, vapid)) {
        await sub.unsubscribe(); // made for another node's key: push services refuse a different key
        sub = null;
      }
      if (!sub) {
        let probed = false;
        if (!vapid) {
          vapid = await conn.pushRegister(await this.probe());
          probed = true;
          this.remember(conn.nodeIdText, vapid);
          this.set({ probed: true, vapid: b64uEncode(vapid) });
        }
        try {
          sub = await within(pm.subscribe({ userVisibleOnly: true, applicationServerKey: vapid }), this.subscribeTimeoutMs, "pushManager.subscribe");
        } catch (e) {
          if (probed) await conn.pushUnregister().catch(() => {}); // do not leave the throw-away one registered
          throw e;
        }
        this.storage.setItem(VAPID_CACHE_KEY + ":sub", JSON.stringify({ endpoint: sub.endpoint, key: b64uEncode(vapid) }));
      }
      const got = await conn.pushRegister(subscriptionFields(sub.toJSON()));
      this.remember(conn.nodeIdText, got);
      if (this.keyMatches(sub, got)) return { sub, vapid: got };
      await sub.unsubscribe(); // the node's key changed since we subscribed: subscribe again with the new one
    }
    throw new Error("the node's VAPID key does not match a subscription made with it");
  }

  /** @param {SubscriptionLike} sub @param {Uint8Array} vapid */
  keyMatches(sub, vapid) {
    const key = sub.options?.applicationServerKey;
    if (key) return equal(new Uint8Array(key), vapid);
    try {
      const saved = JSON.parse(this.storage.getItem(VAPID_CACHE_KEY + ":sub") ?? "null");
      return saved?.endpoint === sub.endpoint && saved?.key === b64uEncode(vapid);
    } catch {
      return false;
    }
  }

  /** @returns {Record<string, string>} node id → VAPID key (base64url) */
  loadKeys() {
    try {
      const m = JSON.parse(this.storage.getItem(VAPID_CACHE_KEY) ?? "{}");
      return m && typeof m === "object" && !Array.isArray(m) ? m : {};
    } catch {
      return {};
    }
  }

  /** @param {string} node */
  knownKey(node) {
    const v = this.loadKeys()[node];
    try {
      const key = typeof v === "string" ? b64uDecode(v) : null;
      return key && key.length === P256_POINT_BYTES ? key : null;
    } catch {
      return null;
    }
  }

  /** @param {string} node @param {Uint8Array} vapid */
  remember(node, vapid) {
    const keys = this.loadKeys();
    delete keys[node];
    keys[node] = b64uEncode(vapid);
    const entries = Object.entries(keys).slice(-VAPID_CACHE_MAX);
    this.storage.setItem(VAPID_CACHE_KEY, JSON.stringify(Object.fromEntries(entries)));
  }
}

/**
 * Wake-ups for this session in a browser: registers the service worker (`app/sw.js` unless `serviceWorkerUrl`),
 * subscribes with the node's VAPID key and registers the subscription now and on every connect.
 * Needs notification permission (ask with `Notification.requestPermission()` from a click first).
 * @param {import("./session.js").Session} session
 * @param {{serviceWorkerUrl?: string, storage?: StorageLike, subscribeTimeoutMs?: number}} [opts]
 * @returns {Promise<PushClient>} after the first registration (see `client.status`)
 */
export async function subscribePush(session, opts = {}) {
  if (!("serviceWorker" in navigator) || !("PushManager" in globalThis)) throw new Error("this browser has no Web Push");
  const url = opts.serviceWorkerUrl ?? new URL("../app/sw.js", import.meta.url).href;
  const pushManager = async () => {
    const reg = await navigator.serviceWorker.register(url);
    await navigator.serviceWorker.ready;
    return /** @type {PushManagerLike} */ (/** @type {unknown} */ (reg.pushManager));
  };
  const client = new PushClient(session, {
    pushManager,
    storage: opts.storage ?? localStorage,
    subscribeTimeoutMs: opts.subscribeTimeoutMs,
  });
  await client.enable();
  return client;
}
