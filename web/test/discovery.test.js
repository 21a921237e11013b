// Discovery ranking on the page (docs/discovery.md "Racing and ranking"): a node a link named once is remembered in
// the cache, but on later visits it waits for the trusted lists and their nodes go first; with the lists blocked it
// is still found. The network parts are replaced through discover's hooks: the racing, the ranking and the cache
// (a Storage-like map) are the page's own code.

import assert from "node:assert/strict";
import { test } from "node:test";
import { b64uEncode } from "../lib/bytes.js";
import { CACHE_KEY, DiscoveryCache, discover } from "../lib/discovery.js";

const KEY = new Uint8Array(32).fill(7); // the trusted registry key (the signature is the hook's business here)
const HONEST = { id: new Uint8Array(32).fill(1), ws: "wss://listed.example/v1/client" };
const LINKED = { id: new Uint8Array(32).fill(2), ws: "wss://linked.example/v1/client" };
const me = /** @type {import("../lib/identity.js").Identity} */ (/** @type {unknown} */ ({}));

function memoryStorage() {
  /** @type {Map<string, string>} */
  const m = new Map();
  return { m, getItem: (/** @type {string} */ k) => m.get(k) ?? null, setItem: (/** @type {string} */ k, /** @type {string} */ v) => void m.set(k, v) };
}

/** Every node answers and proves its id at once; `dialled` records the order. @param {string[]} dialled */
function answering(dialled) {
  return /** @type {typeof import("../lib/connection.js").connect} */ (
    async (url) => {
      dialled.push(url);
      return /** @type {import("../lib/connection.js").Connection} */ (/** @type {unknown} */ ({ handshakeMs: 1, close() {} }));
    }
  );
}

/** A registry answering the trusted list naming HONEST after `ms`. @param {number} ms */
function registryAfter(ms) {
  return /** @type {typeof import("../lib/discovery.js").fetchRegistryList} */ (
    async () => {
      await new Promise((r) => setTimeout(r, ms));
      return { nodes: [HONEST], issued: 1000, expires: 9_999_999_999, signer: KEY, members: [] };
    }
  );
}

const blocked = /** @type {typeof import("../lib/discovery.js").fetchRegistryList} */ (async () => {
  throw new Error("connection reset");
});

/** A registry that never answers until discovery gives up on it. */
const blackHoled = /** @type {typeof import("../lib/discovery.js").fetchRegistryList} */ (
  (_base, _trust, _now, signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted"))))
);

/** The visit a hostile link gave (`#node=…`): its node proves its id and is remembered. @param {DiscoveryCache} cache */
async function linkOnce(cache) {
  const { found, connection } = await discover({ manual: [`${LINKED.ws}#${b64uEncode(LINKED.id)}`], cache }, me, { connect: answering([]) });
  connection.close();
  assert.equal(found.source, "manual");
}

const later = { registries: ["https://registry.example"], trust: [KEY], deadlineMs: 4000 };

test("a node a link named once ranks after a trusted list on later visits", async () => {
  const storage = memoryStorage();
  const cache = new DiscoveryCache(storage);
  await linkOnce(cache);
  const dialled = /** @type {string[]} */ ([]);
  const { found } = await discover({ ...later, cache }, me, { connect: answering(dialled), fetchRegistryList: registryAfter(50) });
  assert.equal(found.ws, HONEST.ws, `the link's node won; dialled: ${dialled}`);
  assert.equal(found.source, "registry");
  assert.deepEqual(dialled, [HONEST.ws]);
  // the listed node is remembered as listed, the link's node is not
  const stored = cache.load();
  assert.deepEqual(stored.map((n) => [n.ws, n.listed]).sort(), [[LINKED.ws, false], [HONEST.ws, true]]);
});

test("a cache entry written before the field existed is read as unlisted", async () => {
  const storage = memoryStorage();
  storage.setItem(CACHE_KEY, JSON.stringify({ v: 1, nodes: [{ id: b64uEncode(LINKED.id), ws: LINKED.ws, last_success: 2_000_000_000 }] }));
  const cache = new DiscoveryCache(storage);
  assert.equal(cache.load()[0].listed, false);
  const { found } = await discover({ ...later, cache }, me, { connect: answering([]), fetchRegistryList: registryAfter(50) });
  assert.equal(found.ws, HONEST.ws);
});

test("with the lists blocked the link's node is still found: at once when they fail, after the hold when they hang", async () => {
  const cache = new DiscoveryCache(memoryStorage());
  await linkOnce(cache);
  let t0 = Date.now();
  let { found } = await discover({ ...later, cache }, me, { connect: answering([]), fetchRegistryList: blocked });
  assert.equal(found.ws, LINKED.ws);
  assert.equal(found.source, "cache");
  assert.ok(Date.now() - t0 < 1000, "a failed list held the cached node back");
  t0 = Date.now();
  ({ found } = await discover({ ...later, cache, unlistedHoldMs: 600 }, me, { connect: answering([]), fetchRegistryList: blackHoled }));
  assert.equal(found.ws, LINKED.ws);
  const waited = Date.now() - t0;
  assert.ok(waited >= 550 && waited < 2000, `waited ${waited} ms`);
});

test("a cached node a trusted list named is tried at once, and a link given on this visit still goes first", async () => {
  const cache = new DiscoveryCache(memoryStorage());
  await discover({ ...later, cache }, me, { connect: answering([]), fetchRegistryList: registryAfter(0) });
  assert.equal(cache.load()[0].listed, true);
  const t0 = Date.now();
  let { found } = await discover({ ...later, cache }, me, { connect: answering([]), fetchRegistryList: blackHoled });
  assert.equal(found.ws, HONEST.ws);
  assert.ok(Date.now() - t0 < 500);
  ({ found } = await discover({ ...later, cache, manual: [`${LINKED.ws}#${b64uEncode(LINKED.id)}`] }, me, { connect: answering([]), fetchRegistryList: registryAfter(50) }));
  assert.equal(found.source, "manual");
});

test("the cache refuses oversized URLs and reads only a literal true as listed", () => {
  const storage = memoryStorage();
  const id = b64uEncode(HONEST.id);
  const long = "wss://a.example/" + "x".repeat(600);
  storage.setItem(CACHE_KEY, JSON.stringify({ v: 1, nodes: [{ id, ws: long, last_success: 1, listed: true }, { id, ws: HONEST.ws, last_success: 1, listed: "yes" }] }));
  assert.deepEqual(new DiscoveryCache(storage).load(), [{ id, ws: HONEST.ws, last_success: 1, listed: false }]);
});
