import assert from "node:assert/strict";
import { test } from "node:test";
import { b64uDecode, b64uEncode } from "../lib/bytes.js";
import { Connection } from "../lib/connection.js";
import { Emitter } from "../lib/emitter.js";
import { PROBE_ENDPOINT, PushClient, subscriptionFields } from "../lib/push.js";
import { V } from "./vectors.js";

const VAPID_A = b64uDecode(JSON.parse(V.from_node.find((/** @type {any} */ f) => f.map.t === "ok" && f.map.vapid).json).vapid);
const VAPID_B = Uint8Array.from(VAPID_A, (b, i) => (i === 0 ? 4 : b ^ 0x55)); // another node's key (only compared)
const PUSH_REGISTER_JSON = V.to_node.find((/** @type {any} */ f) => f.map.t === "push_register").json;

/** A node's side of a connection, in-process: answers push requests like node/net/relay.py client_push. */
class NodeSocket {
  /** @param {Uint8Array} vapid @param {string} [refuse] an error code to answer push_register with */
  constructor(vapid, refuse = "") {
    this.vapid = vapid;
    this.refuse = refuse;
    this.readyState = 1;
    /** @type {any[]} */
    this.sent = [];
    /** @type {((ev: any) => void) | null} */
    this.onmessage = null;
    /** @type {((ev: any) => void) | null} */
    this.onclose = null;
    /** @type {(() => void) | null} */
    this.onerror = null;
  }
  /** @param {string} data */
  send(data) {
    const m = JSON.parse(data);
    this.sent.push(m);
    /** @type {Record<string, unknown>} */
    let reply = { t: "error", code: "unknown_type" };
    if (m.t === "push_register") reply = this.refuse ? { t: "error", code: this.refuse } : { t: "ok", of: "push_register", vapid: b64uEncode(this.vapid) };
    if (m.t === "push_unregister") reply = { t: "ok", of: "push_unregister" };
    setTimeout(() => this.onmessage?.({ data: JSON.stringify(reply) }), 1);
  }
  close() {
    this.readyState = 3;
  }
}

/** The browser's PushManager, in-process: one subscription at a time, with the key it was made with. */
class FakePushManager {
  /** @param {Error | null} [failWith] */
  constructor(failWith = null) {
    this.failWith = failWith;
    /** @type {any} */
    this.current = null;
    /** @type {{userVisibleOnly: boolean, applicationServerKey: Uint8Array}[]} */
    this.subscribeCalls = [];
    this.n = 0;
  }
  async getSubscription() {
    return this.current;
  }
  /** @param {{userVisibleOnly: boolean, applicationServerKey: Uint8Array}} opts */
  async subscribe(opts) {
    this.subscribeCalls.push(opts);
    if (this.failWith) throw this.failWith;
    const n = this.n++;
    const json = n === 0 ? V.push_subscription : { ...V.push_subscription, endpoint: `${V.push_subscription.endpoint}-${n}` };
    const pm = this;
    this.current = {
      endpoint: json.endpoint,
      options: { userVisibleOnly: true, applicationServerKey: opts.applicationServerKey.slice().buffer },
      toJSON: () => json,
      async unsubscribe() {
        pm.current = null;
        return true;
      },
    };
    return this.current;
  }
}

/** @param {Uint8Array} vapid @param {string} [refuse] */
function connectionTo(vapid, refuse) {
  const ws = new NodeSocket(vapid, refuse);
  const id = new Uint8Array(32).fill(vapid[1]);
  const conn = new Connection(/** @type {any} */ (ws), { url: "ws://127.0.0.1:7400/v1/client", nodeId: id, handshakeMs: 1, json: true, early: [] });
  conn.start();
  return { ws, conn };
}

function setup(/** @type {FakePushManager} */ pm) {
  /** @type {Map<string, string>} */
  const m = new Map();
  const storage = { getItem: (/** @type {string} */ k) => m.get(k) ?? null, setItem: (/** @type {string} */ k, /** @type {string} */ v) => void m.set(k, v) };
  const session = /** @type {any} */ (new Emitter());
  session.connection = null;
  const client = new PushClient(session, { pushManager: async () => /** @type {any} */ (pm), storage });
  /** @param {Connection} conn */
  const connectTo = (conn) => {
    session.connection = conn;
    session.emit("state", { state: "connected", detail: "" });
  };
  return { session, client, connectTo };
}

test("subscriptionFields reads PushSubscription.toJSON() and builds exactly the Python encoder's push_register", async () => {
  const fields = subscriptionFields(V.push_subscription);
  const { conn, ws } = connectionTo(VAPID_A);
  assert.deepEqual(await conn.pushRegister(fields), VAPID_A);
  assert.equal(JSON.stringify(ws.sent[0]), PUSH_REGISTER_JSON);
  assert.throws(() => subscriptionFields({ endpoint: "https://x", keys: { p256dh: "AAAA", auth: V.push_subscription.keys.auth } }), RangeError);
  assert.throws(() => subscriptionFields({ endpoint: "https://x" }), RangeError);
});

test("first time on a node: learn its VAPID key, subscribe with it, register the real subscription", async () => {
  const pm = new FakePushManager();
  const { client } = setup(pm);
  const { conn, ws } = connectionTo(VAPID_A);
  client.session.connection = conn;
  await client.enable();
  assert.equal(client.status.state, "registered", client.status.detail);
  assert.equal(client.status.vapid, b64uEncode(VAPID_A));
  assert.equal(client.status.probed, true);
  assert.deepEqual(pm.subscribeCalls.map((c) => [c.userVisibleOnly, b64uEncode(c.applicationServerKey)]), [[true, b64uEncode(VAPID_A)]]);
  assert.deepEqual(ws.sent.map((m) => [m.t, m.endpoint]), [["push_register", PROBE_ENDPOINT], ["push_register", V.push_subscription.endpoint]]);
  assert.equal(b64uDecode(ws.sent[0].p256dh).length, 65);
  assert.equal(JSON.stringify(ws.sent[1]), PUSH_REGISTER_JSON);
});

test("every connect registers again, without a probe or a new subscription; opt-out unregisters", async () => {
  const pm = new FakePushManager();
  const { client, connectTo } = setup(pm);
  connectTo(connectionTo(VAPID_A).conn);
  await client.enable();
  const again = connectionTo(VAPID_A);
  connectTo(again.conn);
  await client.chain;
  assert.deepEqual(again.ws.sent.map((m) => JSON.stringify(m)), [PUSH_REGISTER_JSON]);
  assert.equal(pm.subscribeCalls.length, 1);
  await client.disable();
  assert.deepEqual(again.ws.sent.slice(1), [{ t: "push_unregister" }]);
  assert.equal(pm.current, null);
  assert.equal(client.status.state, "off");
  const later = connectionTo(VAPID_A);
  connectTo(later.conn);
  await client.chain;
  assert.deepEqual(later.ws.sent, [], "registered again after opting out");
});

test("moving to a node with another VAPID key: unsubscribe, subscribe with its key, register", async () => {
  const pm = new FakePushManager();
  const { client, connectTo } = setup(pm);
  connectTo(connectionTo(VAPID_A).conn);
  await client.enable();
  const b = connectionTo(VAPID_B);
  connectTo(b.conn);
  await client.chain;
  assert.equal(client.status.state, "registered", client.status.detail);
  assert.equal(client.status.vapid, b64uEncode(VAPID_B));
  assert.deepEqual(pm.subscribeCalls.map((c) => b64uEncode(c.applicationServerKey)), [b64uEncode(VAPID_A), b64uEncode(VAPID_B)]);
  // the old subscription told us B's key; the new one (made with B's key) is what B holds last
  assert.deepEqual(b.ws.sent.map((m) => m.endpoint), [V.push_subscription.endpoint, `${V.push_subscription.endpoint}-1`]);
});

test("a browser that refuses to subscribe leaves no throw-away subscription at the node", async () => {
  const pm = new FakePushManager(Object.assign(new Error("Registration failed - push service not available"), { name: "AbortError" }));
  const { client } = setup(pm);
  const { conn, ws } = connectionTo(VAPID_A);
  client.session.connection = conn;
  await client.enable();
  assert.equal(client.status.state, "failed");
  assert.match(client.status.detail, /AbortError: Registration failed/);
  assert.equal(client.status.vapid, b64uEncode(VAPID_A));
  assert.deepEqual(ws.sent.map((m) => m.t), ["push_register", "push_unregister"]);
});

test("a subscribe() that never settles times out and withdraws the throw-away registration", async () => {
  const pm = new FakePushManager();
  pm.subscribe = () => new Promise(() => {}); // what headless Chromium without a push service does
  /** @type {Map<string, string>} */
  const m = new Map();
  const storage = { getItem: (/** @type {string} */ k) => m.get(k) ?? null, setItem: (/** @type {string} */ k, /** @type {string} */ v) => void m.set(k, v) };
  const session = /** @type {any} */ (new Emitter());
  const { conn, ws } = connectionTo(VAPID_A);
  session.connection = conn;
  const client = new PushClient(session, { pushManager: async () => /** @type {any} */ (pm), storage, subscribeTimeoutMs: 50 });
  await client.enable();
  assert.equal(client.status.state, "failed");
  assert.match(client.status.detail, /TimeoutError: pushManager.subscribe did not finish/);
  assert.deepEqual(ws.sent.map((x) => x.t), ["push_register", "push_unregister"]);
});

test("a node without push (unknown_type) or with a full table (rate_limited) is reported, not fatal", async () => {
  for (const code of ["unknown_type", "rate_limited"]) {
    const { client } = setup(new FakePushManager());
    const { conn } = connectionTo(VAPID_A, code);
    client.session.connection = conn;
    await client.enable();
    assert.equal(client.status.state, "failed");
    assert.match(client.status.detail, new RegExp(`PushRefused: .*${code}`));
    assert.deepEqual(await conn.iceServers(), [], "the ref-less answers stay in order after a refusal");
  }
});
