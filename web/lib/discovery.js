// Finding a node (docs/discovery.md): registry, DNS-over-HTTPS TXT, a cache of nodes that proved their id, referral
// cards and manual entries, all raced under one deadline; the first node that proves its pinned id wins and its
// connection is kept. A cached node no trusted list named (a link's `node` or `card` of an earlier visit) waits
// while trusted lists may still answer (UNLISTED_HOLD_MS at most), so one hostile link does not keep the page on
// its node once the lists are readable; with the lists blocked it is still tried (docs/discovery.md "Racing and ranking").

import { b64uDecode, b64uEncode } from "./bytes.js";
import { connect } from "./connection.js";
import { decodeBounded, openNodeList, parseManualEntry, parseNodeCard, SIGNED_DOC_MAX_BYTES } from "./documents.js";
import { fetchTxtDocument, readBounded } from "./dns.js";

export const DEADLINE_MS = 8000;
export const HANDSHAKE_TIMEOUT_MS = 4000;
export const START_EVERY_MS = 250;
export const PARALLEL_MAX = 8;
export const ATTEMPTS_MAX = 24;
export const CACHE_MAX = 64;
export const URL_MAX = 512; // as node/protocol/nodelist.py: a longer `ws` in the cache marks a damaged entry
/** How long a cached node no trusted list named waits for trusted lists, at most (docs/discovery.md "Racing and
 * ranking"): a list and a handshake fit on most networks, and with the lists black-holed (a censor drops them) the
 * cached bridge or referral node is still reached within the 2 s discovery target. */
export const UNLISTED_HOLD_MS = 1000;
export const CACHE_KEY = "homing:discovery-cache";

/** @typedef {"registry"|"doh"|"cache"|"referral"|"manual"} Source */
/**
 * `list`: for a row of a signed list, its signer (base64url) and `issued`: a newer list of that signer replaces it.
 * `listed`: a list signed by a trusted key names it (on this visit, or for a cached node, on the last visit that read one).
 * @typedef {{id: Uint8Array, ws: string, source: Source, verified: boolean, rank: number, listed?: boolean, list?: {signer: string, issued: number}}} Candidate
 */
/**
 * @typedef {{id: string, ws: string, source: Source, verified: boolean, handshakeMs: number}} Found
 * @typedef {{registries?: string[], trust?: Uint8Array[], doh?: string[], names?: string[], cards?: string[],
 *   manual?: string[], deadlineMs?: number, handshakeTimeoutMs?: number, cache?: DiscoveryCache | null,
 *   json?: boolean, now?: () => number, unlistedHoldMs?: number}} DiscoveryConfig
 * @typedef {{connection: import("./connection.js").Connection, found: Found, errors: string[]}} Discovered
 */

/**
 * Nodes that proved their id, newest success first (localStorage or any Storage-like object):
 * `{"v": 1, "nodes": [{"id", "ws", "last_success", "listed"?: true}]}`. `listed` is written only when a trusted list
 * named the node with the same id and ws on the last visit that read one; an entry without it (a link's node, or any
 * entry stored before the field existed) is unlisted: the safe reading, so a node a link planted earlier does not
 * keep its rank.
 * @typedef {{id: string, ws: string, last_success: number, listed: boolean}} CachedNode
 */
export class DiscoveryCache {
  /** @param {{getItem(k: string): string | null, setItem(k: string, v: string): void}} storage @param {string} [key] */
  constructor(storage, key = CACHE_KEY) {
    this.storage = storage;
    this.key = key;
  }

  /** @returns {CachedNode[]} */
  load() {
    try {
      const doc = JSON.parse(this.storage.getItem(this.key) ?? "null");
      if (doc?.v !== 1 || !Array.isArray(doc.nodes)) return [];
      return doc.nodes
        .slice(0, CACHE_MAX)
        .filter((/** @type {any} */ n) => typeof n?.id === "string" && /^[A-Za-z0-9_-]{43}$/.test(n.id) && typeof n.ws === "string" && n.ws.length <= URL_MAX && /^wss?:\/\//.test(n.ws) && Number.isFinite(n.last_success))
        .map((/** @type {any} */ n) => ({ id: n.id, ws: n.ws, last_success: n.last_success, listed: n.listed === true }));
    } catch {
      return []; // a damaged cache is rewritten on the next success
    }
  }

  /**
   * Store a node that proved its id now. `named`: the "id ws" rows of the trusted lists this visit read, or null
   * when it read none; every entry's `listed` then follows them (null: each keeps its own).
   * @param {string} id @param {string} ws @param {number} nowS @param {Set<string> | null} [named]
   */
  remember(id, ws, nowS, named = null) {
    const old = this.load();
    const was = old.find((n) => n.id === id && n.ws === ws);
    const nodes = old.filter((n) => n !== was);
    nodes.unshift({ id, ws, last_success: Math.floor(nowS), listed: was?.listed ?? false });
    nodes.sort((a, b) => b.last_success - a.last_success);
    if (named) for (const n of nodes) n.listed = named.has(n.id + " " + n.ws);
    this.store(nodes);
  }

  /** Drop an entry that failed its id proof. @param {string} id @param {string} ws */
  forget(id, ws) {
    this.store(this.load().filter((n) => !(n.id === id && n.ws === ws)));
  }

  /** @param {CachedNode[]} nodes */
  store(nodes) {
    const rows = nodes.slice(0, CACHE_MAX).map((n) => ({ id: n.id, ws: n.ws, last_success: n.last_success, ...(n.listed ? { listed: true } : {}) }));
    this.storage.setItem(this.key, JSON.stringify({ v: 1, nodes: rows }));
  }
}

/**
 * GET <base>/v1/nodes: the signed list, verified against the trusted registry keys.
 * @param {string} base
 * @param {Uint8Array[]} trust
 * @param {number} nowS
 * @param {AbortSignal} signal
 */
export async function fetchRegistryList(base, trust, nowS, signal) {
  const url = base.replace(/\/+$/, "").endsWith("/v1/nodes") ? base : base.replace(/\/+$/, "") + "/v1/nodes";
  const resp = await fetch(url, { headers: { accept: "application/msgpack" }, signal, redirect: "error", cache: "no-store", credentials: "omit" });
  if (!resp.ok) throw new Error(`registry ${base} answered HTTP ${resp.status}`);
  const doc = decodeBounded(await readBounded(resp, SIGNED_DOC_MAX_BYTES + 1024));
  return openNodeList(doc, trust.length ? trust : null, nowS);
}

/**
 * Race every source; resolve with the first node that proves its id (its connection kept open).
 * Rejects with an Error listing every problem when none does before the deadline.
 * @param {DiscoveryConfig} cfg
 * @param {import("./identity.js").Identity} identity
 * @param {{onProgress?: (line: string) => void, connect?: typeof connect, fetchRegistryList?: typeof fetchRegistryList}} [hooks]
 *   `connect` and `fetchRegistryList` replace the network parts (tests drive the racing with their own)
 * @returns {Promise<Discovered>}
 */
export function discover(cfg, identity, hooks = {}) {
  const deadlineMs = cfg.deadlineMs ?? DEADLINE_MS;
  const now = cfg.now ?? (() => Date.now() / 1000);
  const trust = cfg.trust ?? [];
  const abort = new AbortController();
  /** @type {string[]} */
  const errors = [];
  /** @type {Candidate[]} */
  const queue = [];
  const seen = new Set();
  /** A node's key in `seen` and in a list's rows. @param {{id: Uint8Array, ws: string}} n */
  const keyOf = (n) => b64uEncode(n.id) + " " + n.ws;
  // the newest list read per signer (docs/discovery.md, "Newest list per registry"): its `issued` and its rows
  /** @type {Map<string, {issued: number, rows: Set<string>}>} */
  const newest = new Map();
  let running = 0;
  let started = 0;
  let pendingSources = 0;
  // trusted list sources (registries and DoH with `trust`): configured, and still pending
  const trustedSources = trust.length ? (cfg.registries ?? []).length + (cfg.doh ?? []).length * (cfg.names ?? []).length : 0;
  let trustedPending = trustedSources;
  const holdMs = cfg.unlistedHoldMs ?? UNLISTED_HOLD_MS;
  const startedAt = Date.now();
  let finished = false;
  const progress = hooks.onProgress ?? (() => {});
  const dial = hooks.connect ?? connect;
  const readRegistry = hooks.fetchRegistryList ?? fetchRegistryList;

  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => finish(null), deadlineMs);
    const ticker = setInterval(() => pump(), START_EVERY_MS);

    /** @param {Discovered | null} result */
    function finish(result) {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      clearInterval(ticker);
      abort.abort();
      if (result) resolve(result);
      else reject(Object.assign(new Error(`no node proved its id within ${deadlineMs} ms: ${errors.join("; ") || "no candidates"}`), { errors }));
    }

    /** A row a newer list of its signer no longer names. @param {Candidate} c */
    function superseded(c) {
      const held = c.list && newest.get(c.list.signer);
      return !!c.list && !!held && held.issued > c.list.issued && !held.rows.has(keyOf(c));
    }

    /** @param {Candidate} c */
    function add(c) {
      const key = keyOf(c);
      if (seen.has(key) || finished) return;
      seen.add(key);
      queue.push(c);
      queue.sort((a, b) => a.rank - b.rank);
      if (running === 0) pump();
    }

    /** @param {Candidate} c */
    const unlisted = (c) => c.source === "cache" && !c.listed;

    /**
     * Hold unlisted cached nodes back (docs/discovery.md "Racing and ranking")? While a trusted list source is
     * pending or another node is queued or being tried, for at most `holdMs` after the start.
     */
    function hold() {
      if (!trustedSources || Date.now() - startedAt >= holdMs) return false;
      return trustedPending > 0 || running > 0 || queue.some((c) => !unlisted(c));
    }

    function pump() {
      if (finished) return;
      const next = hold() ? queue.findIndex((c) => !unlisted(c)) : queue.length ? 0 : -1;
      if (next >= 0 && running < PARALLEL_MAX && started < ATTEMPTS_MAX) {
        const c = queue.splice(next, 1)[0];
        started++;
        running++;
        void attempt(c);
      } else if (!queue.length && running === 0 && pendingSources === 0) {
        finish(null);
      }
    }

    /** @param {Candidate} c */
    async function attempt(c) {
      const idText = b64uEncode(c.id);
      progress(`trying ${c.ws} (${c.source})`);
      try {
        const conn = await dial(c.ws, identity, c.id, { timeoutMs: cfg.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS, json: cfg.json });
        if (finished) {
          conn.close();
          return;
        }
        if (superseded(c)) {  // its list was replaced while it connected, by one that no longer names it
          conn.close();
          throw new Error("a newer list of its registry no longer names it");
        }
        cfg.cache?.remember(idText, c.ws, now(), namedByTrustedLists());
        finish({ connection: conn, found: { id: idText, ws: c.ws, source: c.source, verified: c.verified || c.source === "manual" || c.source === "cache", handshakeMs: conn.handshakeMs }, errors });
      } catch (e) {
        errors.push(`${c.ws} (${c.source}): ${e instanceof Error ? e.message : e}`);
        if (c.source === "cache" && e instanceof Error && e.name === "NodeIdMismatch") cfg.cache?.forget(idText, c.ws);
      } finally {
        running--;
        pump();
      }
    }

    /** The rows of the newest trusted list per signer read on this visit; null when none was. */
    function namedByTrustedLists() {
      if (!trust.length || !newest.size) return null;
      return new Set([...newest.values()].flatMap((held) => [...held.rows]));
    }

    /** @param {string} label @param {() => Promise<void>} fn @param {boolean} [trustedList] a trusted list source */
    function source(label, fn, trustedList = false) {
      pendingSources++;
      fn()
        .catch((e) => errors.push(`${label}: ${e instanceof Error ? e.message : e}`))
        .finally(() => {
          pendingSources--;
          if (trustedList) trustedPending--;
          pump();
        });
    }

    for (const entry of cfg.manual ?? []) {
      try {
        const { id, ws } = parseManualEntry(entry);
        add({ id, ws, source: "manual", verified: false, rank: 0 });
      } catch (e) {
        errors.push(`manual ${entry}: ${e instanceof Error ? e.message : e}`);
      }
    }
    for (const card of cfg.cards ?? []) source("referral card", async () => {
      const c = await parseNodeCard(card, { nowS: now() });
      add({ id: c.id, ws: c.ws, source: "referral", verified: true, rank: 0 });
    });
    (cfg.cache?.load() ?? []).forEach((n, i) => add({ id: b64uDecode(n.id), ws: n.ws, source: "cache", verified: false, rank: 1 + i / 1000, listed: n.listed }));
    /**
     * Queue a verified list's rows, unless a newer list of the same signer was read: an older one (a mirror or
     * resolver serving a list from before a ban) is refused, and a newer one drops the queued rows it no longer names.
     * @param {{nodes: {id: Uint8Array, ws: string}[], issued: number, signer: Uint8Array}} list @param {Source} src
     */
    const addList = (list, src) => {
      const signer = b64uEncode(list.signer);
      const rows = new Set(list.nodes.map(keyOf));
      const held = newest.get(signer);
      if (held && list.issued < held.issued) throw new Error(`a list older (issued ${list.issued}) than one already read (issued ${held.issued}) was refused`);
      if (held && list.issued === held.issued) rows.forEach((r) => held.rows.add(r)); // the same list from another source
      else newest.set(signer, { issued: list.issued, rows });
      for (let i = queue.length - 1; i >= 0; i--) if (superseded(queue[i])) queue.splice(i, 1);
      // a queued cached node this trusted list names is listed: no longer held back
      if (trust.length) for (const c of queue) if (rows.has(keyOf(c))) c.listed = true;
      const tag = { signer, issued: list.issued };
      list.nodes.forEach((n) => add({ id: n.id, ws: n.ws, source: src, verified: trust.length > 0, rank: 2 + Math.random(), list: tag, listed: trust.length > 0 }));
    };
    for (const base of cfg.registries ?? []) source(`registry ${base}`, async () => addList(await readRegistry(base, trust, now(), abort.signal), "registry"), trust.length > 0);
    for (const resolver of cfg.doh ?? [])
      for (const name of cfg.names ?? [])
        source(`doh ${resolver} ${name}`, async () => {
          const doc = await fetchTxtDocument(resolver, name, { signal: abort.signal });
          addList(await openNodeList(doc, trust.length ? trust : null, now()), "doh");
        }, trust.length > 0);
    pump();
  });
}
