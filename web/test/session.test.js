import assert from "node:assert/strict";
import { test } from "node:test";
import { b64uEncode } from "../lib/bytes.js";
import { Connection } from "../lib/connection.js";
import { DiscoveryCache } from "../lib/discovery.js";
import { backoffMs, BACKOFF_MAX_MS, isClaimRenewal, Session } from "../lib/session.js";
import { V } from "./vectors.js";

test("backoff doubles from 0.5 s to 30 s with ±50 % jitter", () => {
  assert.equal(backoffMs(0, () => 0.5), 500);
  assert.equal(backoffMs(1, () => 0.5), 1000);
  assert.equal(backoffMs(3, () => 0.5), 4000);
  assert.equal(backoffMs(50, () => 0.5), BACKOFF_MAX_MS);
  assert.equal(backoffMs(0, () => 0), 250);
  assert.equal(backoffMs(0, () => 1), 750);
  assert.equal(backoffMs(60, () => 1), BACKOFF_MAX_MS * 1.5);
});

test("the discovery cache keeps proven nodes newest first, at most 64, and survives damage", () => {
  /** @type {Map<string, string>} */
  const m = new Map();
  const storage = { getItem: (/** @type {string} */ k) => m.get(k) ?? null, setItem: (/** @type {string} */ k, /** @type {string} */ v) => void m.set(k, v) };
  const cache = new DiscoveryCache(storage);
  const id = (/** @type {number} */ i) => String(i).padStart(43, "A");
  for (let i = 0; i < 70; i++) cache.remember(id(i), `ws://127.0.0.1:${7000 + i}/v1/client`, 1000 + i);
  const nodes = cache.load();
  assert.equal(nodes.length, 64);
  assert.equal(nodes[0].id, id(69));
  cache.forget(id(69), "ws://127.0.0.1:7069/v1/client");
  assert.equal(cache.load()[0].id, id(68));
  m.set("homing:discovery-cache", "{not json");
  assert.deepEqual(cache.load(), []);
  m.set("homing:discovery-cache", JSON.stringify({ v: 1, nodes: [{ id: "short", ws: "ws://x", last_success: 1 }] }));
  assert.deepEqual(cache.load(), []);
});

/** A socket that never touches the network: the test plays the node's side through its handlers. */
class FakeSocket {
  constructor() {
    this.readyState = 1;
    /** @type {unknown[]} */
    this.sent = [];
    /** @type {((ev: any) => void) | null} */
    this.onmessage = null;
    /** @type {((ev: any) => void) | null} */
    this.onclose = null;
    /** @type {(() => void) | null} */
    this.onerror = null;
  }
  /** @param {unknown} data */
  send(data) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
  }
}

const NODE_A = { ws: "ws://127.0.0.1:7400/v1/client", id: new Uint8Array(32).fill(7) };
const NODE_B = { ws: "ws://127.0.0.1:7401/v1/client", id: new Uint8Array(32).fill(8) };

/** A Session whose discovery hands out real Connection objects on fake sockets, recording every config it got. */
function harness() {
  /** @type {{cfg: import("../lib/discovery.js").DiscoveryConfig, ws: FakeSocket}[]} */
  const calls = [];
  /** @type {(cfg: any) => Promise<any>} */
  const fakeDiscover = async (cfg) => {
    const ws = new FakeSocket();
    const first = (cfg.manual ?? [])[0] ?? "";
    const node = cfg.cards?.length || first.startsWith(NODE_B.ws) ? NODE_B : NODE_A;
    calls.push({ cfg, ws });
    const connection = new Connection(/** @type {any} */ (ws), { url: node.ws, nodeId: node.id, handshakeMs: 1, json: true, early: [] });
    const source = first ? "manual" : "registry";
    return { connection, found: { id: b64uEncode(node.id), ws: node.ws, source, verified: true, handshakeMs: 1 }, errors: [] };
  };
  const session = new Session(/** @type {any} */ ({}), { manual: [] }, { discover: fakeDiscover });
  /** @type {string[]} */
  const states = [];
  session.on("state", ({ state, detail }) => states.push(detail ? `${state}: ${detail}` : state));
  return { session, calls, states };
}

/** @param {() => boolean} pred @param {number} ms */
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 2));
  }
  return true;
}

test("1001 'home claim renewal: reconnect' makes the session reconnect at once, to the same node first", async () => {
  const { session, calls, states } = harness();
  session.start();
  assert.ok(await until(() => session.state === "connected", 1000));
  assert.equal(calls.length, 1);
  /** @type {FakeSocket} */ (calls[0].ws).onclose?.({ code: 1001, reason: "home claim renewal: reconnect" });
  // schedule(0): the next attempt starts on the next timer tick, far sooner than the 250 ms minimum backoff
  assert.ok(await until(() => calls.length === 2 && session.state === "connected", 100), `states: ${states}`);
  assert.equal(calls[1].cfg.manual?.[0], `${NODE_A.ws}#${b64uEncode(NODE_A.id)}`);
  assert.equal(session.found?.ws, NODE_A.ws);
  assert.ok(!states.includes("offline: connection lost"), `states: ${states}`);
  assert.ok(states.includes("connecting: home claim renewal"), `states: ${states}`);
  session.stop();
});

test("a lost connection (1006) waits for the backoff and does not pin the old node", async () => {
  const { session, calls, states } = harness();
  session.start();
  assert.ok(await until(() => session.state === "connected", 1000));
  /** @type {FakeSocket} */ (calls[0].ws).onclose?.({ code: 1006, reason: "" });
  assert.equal(session.state, "offline");
  assert.equal(await until(() => calls.length === 2, 150), false, "reconnected before the backoff");
  assert.ok(await until(() => calls.length === 2 && session.state === "connected", 2000), `states: ${states}`);
  assert.deepEqual(calls[1].cfg.manual, []);
  session.stop();
});

test("1001 after a goaway moves to a node the goaway listed (not a claim renewal)", async () => {
  const { session, calls } = harness();
  session.start();
  assert.ok(await until(() => session.state === "connected", 1000));
  const goaway = V.from_node.find((/** @type {any} */ f) => f.map.t === "goaway");
  const conn = /** @type {Connection} */ (session.connection);
  conn.onFrame(goaway.json);
  /** @type {FakeSocket} */ (calls[0].ws).onclose?.({ code: 1001, reason: "home claim renewal: reconnect" });
  assert.ok(await until(() => calls.length === 2 && session.state === "connected", 100));
  assert.deepEqual(calls[1].cfg.cards, goaway.map.nodes);
  assert.deepEqual(calls[1].cfg.manual, []);
  assert.equal(session.found?.ws, NODE_B.ws);
  session.stop();
});

test("a node that closes every connection at once with 'reconnect now' (renewal or goaway) gets the backoff, not a hot loop", async () => {
  const { session, calls, states } = harness();
  session.start();
  const goaway = V.from_node.find((/** @type {any} */ f) => f.map.t === "goaway");
  const end = Date.now() + 1000;
  let closed = 0;
  while (Date.now() < end) {
    if (session.state === "connected" && calls.length > closed) {
      const ws = /** @type {FakeSocket} */ (calls[calls.length - 1].ws);
      if (closed % 2) /** @type {Connection} */ (session.connection).onFrame(goaway.json);
      closed = calls.length;
      ws.onclose?.({ code: 1001, reason: "home claim renewal: reconnect" });
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  session.stop();
  // before: ~0 ms between attempts, hundreds of handshakes a second for as long as the node keeps it up
  assert.ok(calls.length <= 4, `${calls.length} connections in 1 s; states: ${states.slice(0, 8)}`);
});

test("isClaimRenewal: only 1001 with the renewal reason", () => {
  assert.equal(isClaimRenewal(1001, "home claim renewal: reconnect"), true);
  assert.equal(isClaimRenewal(1001, ""), false);
  assert.equal(isClaimRenewal(1000, "home claim renewal: reconnect"), false);
  assert.equal(isClaimRenewal(4408, "home claim renewal"), false);
});

test("kick() (a push wake-up) reconnects at once instead of waiting for the backoff", async () => {
  const { session, calls } = harness();
  session.start();
  assert.ok(await until(() => session.state === "connected", 1000));
  session.kick(); // connected: nothing to do
  /** @type {FakeSocket} */ (calls[0].ws).onclose?.({ code: 1006, reason: "" });
  session.failures = 10; // the next backoff would be about 30 s
  session.kick();
  assert.ok(await until(() => calls.length === 2 && session.state === "connected", 100));
  session.stop();
});
