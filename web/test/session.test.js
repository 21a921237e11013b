import assert from "node:assert/strict";
import { test } from "node:test";
import { DiscoveryCache } from "../lib/discovery.js";
import { backoffMs, BACKOFF_MAX_MS } from "../lib/session.js";

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
