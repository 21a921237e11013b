// Signed documents (docs/bootstrap.md, docs/discovery.md): `{"body": msgpack bytes, "key": 32 B, "sig": 64 B}` with
// `sig = Ed25519(key, "homing/v1/" + PURPOSE + body)`. Node lists (PURPOSE node-list, by a registry key) and node
// cards (`homing://node/…`, PURPOSE node-card, by the node itself) are verified here, in the browser.

import { decode } from "@msgpack/msgpack";
import { b64uDecode, b64uEncode, concat, utf8 } from "./bytes.js";
import { verify } from "./ed25519.js";

export const SIGNED_DOC_MAX_BYTES = 256 * 1024;
export const CARD_PREFIX = "homing://node/";
export const CARD_MAX_CHARS = 2048;
export const NODES_MAX = 5000;
export const URL_MAX_CHARS = 512;
export const CLOCK_SKEW_S = 300;

export class DocumentError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "DocumentError";
  }
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isMap(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/**
 * @param {Uint8Array} bytes
 * @returns {unknown}
 */
export function decodeBounded(bytes) {
  if (bytes.length > SIGNED_DOC_MAX_BYTES + 1024) throw new DocumentError("document too large");
  try {
    return decode(bytes, { maxStrLength: SIGNED_DOC_MAX_BYTES, maxBinLength: SIGNED_DOC_MAX_BYTES, maxArrayLength: NODES_MAX, maxMapLength: 64, maxExtLength: 0 });
  } catch {
    throw new DocumentError("not msgpack");
  }
}

/**
 * Verify a signed document; `trusted` null accepts any signer (the caller checks who it is).
 * @param {unknown} doc
 * @param {string} purpose
 * @param {Uint8Array[] | null} trusted
 * @returns {Promise<{body: Record<string, unknown>, signer: Uint8Array}>}
 */
export async function openDocument(doc, purpose, trusted) {
  if (!isMap(doc)) throw new DocumentError("signed document is not a map");
  const { body, key, sig } = doc;
  if (!(body instanceof Uint8Array) || !(key instanceof Uint8Array) || !(sig instanceof Uint8Array)) throw new DocumentError("signed document needs bytes body, key and sig");
  if (body.length > SIGNED_DOC_MAX_BYTES) throw new DocumentError("signed document body too large");
  if (key.length !== 32 || sig.length !== 64) throw new DocumentError("signed document key or sig has the wrong length");
  if (trusted !== null && !trusted.some((t) => b64uEncode(t) === b64uEncode(key))) throw new DocumentError("signed by a key that is not trusted");
  if (!(await verify(key, concat(utf8("homing/v1/" + purpose), body), sig))) throw new DocumentError(`${purpose} signature does not verify`);
  const decoded = decodeBounded(body);
  if (!isMap(decoded)) throw new DocumentError("signed document body is not a map");
  return { body: decoded, signer: key };
}

/**
 * @param {Record<string, unknown>} m
 * @returns {Uint8Array}
 */
function getId(m) {
  const v = m.id;
  if (!(v instanceof Uint8Array) || v.length !== 32) throw new DocumentError("field 'id' must be 32 bytes");
  return v;
}

/**
 * @param {Record<string, unknown>} m
 * @returns {string}
 */
function getWs(m) {
  const v = m.ws;
  if (typeof v !== "string" || v.length > URL_MAX_CHARS || !/^wss?:\/\//.test(v)) throw new DocumentError("field 'ws' must be a ws:// or wss:// URL");
  return v;
}

/**
 * @param {Record<string, unknown>} m
 * @param {string} key
 * @returns {number}
 */
function getInt(m, key) {
  const v = m[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new DocumentError(`field '${key}' must be an unsigned integer`);
  return v;
}

/** @typedef {{id: Uint8Array, ws: string}} NodeRef */

/**
 * Verify a registry's node list and check it is current.
 * @param {unknown} doc
 * @param {Uint8Array[] | null} trusted registry keys; null: the list only has to match its own key (unverified rows)
 * @param {number} nowS unix seconds
 * @returns {Promise<{nodes: NodeRef[], issued: number, expires: number, signer: Uint8Array}>}
 */
export async function openNodeList(doc, trusted, nowS) {
  const { body, signer } = await openDocument(doc, "node-list", trusted);
  if (body.v !== 1) throw new DocumentError("node list version unsupported");
  const issued = getInt(body, "issued");
  const expires = getInt(body, "expires");
  if (expires < issued) throw new DocumentError("node list expires before it was issued");
  if (nowS > expires) throw new DocumentError(`node list expired ${Math.floor(nowS - expires)} s ago`);
  if (issued > nowS + CLOCK_SKEW_S) throw new DocumentError("node list issued in the future");
  const raw = body.nodes;
  if (!Array.isArray(raw) || raw.length > NODES_MAX) throw new DocumentError("node list 'nodes' must be a list");
  const nodes = raw.map((item) => {
    if (!isMap(item)) throw new DocumentError("node list entry is not a map");
    return { id: getId(item), ws: getWs(item) };
  });
  return { nodes, issued, expires, signer };
}

/**
 * Is `host` (a URL's hostname, as WHATWG URL gives it) loopback, private or link-local, or `localhost`? The list of
 * docs/discovery.md: 127/8, ::1, 10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7, fe80::/10 (an IPv4-mapped IPv6
 * address counts as its IPv4 address). A name other than `localhost` is public: the reader cannot know where it points.
 * @param {string} host
 */
export function isPrivateHost(host) {
  const h = host.toLowerCase();
  if (h === "localhost" || h === "localhost.") return true;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  if (v4) return privateV4(v4.slice(1).map(Number));
  if (!h.startsWith("[") || !h.endsWith("]")) return false;
  const groups = ipv6Groups(h.slice(1, -1));
  if (!groups) return false;
  if (groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1) return true; // ::1
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return privateV4([groups[6] >> 8, groups[6] & 255, groups[7] >> 8, groups[7] & 255]); // ::ffff:a.b.c.d
  }
  return (groups[0] & 0xfe00) === 0xfc00 || (groups[0] & 0xffc0) === 0xfe80;
}

/** @param {number[]} b */
function privateV4(b) {
  if (b.some((x) => x > 255)) return false;
  return b[0] === 127 || b[0] === 10 || (b[0] === 172 && (b[1] & 0xf0) === 16) || (b[0] === 192 && b[1] === 168) || (b[0] === 169 && b[1] === 254);
}

/**
 * The eight 16-bit groups of an IPv6 literal (the canonical form WHATWG URL writes: hex groups and `::`), or null.
 * @param {string} text
 * @returns {number[] | null}
 */
function ipv6Groups(text) {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parse = (/** @type {string} */ s) => (s ? s.split(":").map((g) => (/^[0-9a-f]{1,4}$/.test(g) ? parseInt(g, 16) : NaN)) : []);
  const head = parse(halves[0]);
  const tail = halves.length === 2 ? parse(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  const groups = [...head, ...Array(halves.length === 2 ? fill : 0).fill(0), ...tail];
  return groups.some(Number.isNaN) ? null : groups;
}

/**
 * Why a card's URL is not acceptable (a plain ws:// URL to a public host), or "" when it is.
 * @param {string} ws
 */
export function plainWsProblem(ws) {
  if (!ws.startsWith("ws://")) return "";
  let host = "";
  try {
    host = new URL(ws).hostname;
  } catch {
    host = "";
  }
  if (host && isPrivateHost(host)) return "";
  return `card URL '${ws.slice(0, 80)}' is plain ws:// to a public host: cards must be wss:// (or a private address)`;
}

/**
 * Parse and verify a `homing://node/…` referral card (docs/discovery.md, "Referral card and QR"): signed by the node
 * it names, not past its `exp`, and `wss://` unless its host is loopback/private (or `allowPlainWs`).
 * @param {string} uri
 * @param {{nowS?: number, allowPlainWs?: boolean}} [opts] `nowS` defaults to the clock (unix seconds)
 * @returns {Promise<NodeRef & {ts: number, exp: number}>}
 */
export async function parseNodeCard(uri, opts = {}) {
  const nowS = opts.nowS ?? Date.now() / 1000;
  if (typeof uri !== "string" || !uri.startsWith(CARD_PREFIX)) throw new DocumentError(`a referral URI starts with ${CARD_PREFIX}`);
  if (uri.length > CARD_MAX_CHARS) throw new DocumentError("referral URI too long");
  /** @type {Uint8Array} */
  let raw;
  try {
    raw = b64uDecode(uri.slice(CARD_PREFIX.length));
  } catch {
    throw new DocumentError("referral URI is not base64url");
  }
  const { body, signer } = await openDocument(decodeBounded(raw), "node-card", null);
  const card = { id: getId(body), ws: getWs(body), ts: getInt(body, "ts"), exp: getInt(body, "exp") };
  if (b64uEncode(card.id) !== b64uEncode(signer)) throw new DocumentError("card is not signed by the node it names");
  if (nowS > card.exp) throw new DocumentError(`card expired ${Math.floor(nowS - card.exp)} s ago`);
  const problem = opts.allowPlainWs ? "" : plainWsProblem(card.ws);
  if (problem) throw new DocumentError(problem);
  return card;
}

/**
 * Parse a manual entry `wss://host[:port][/path]#<node id>` (path defaults to /v1/client). The id is required.
 * @param {string} entry
 * @returns {NodeRef}
 */
export function parseManualEntry(entry) {
  const m = /^(wss?:\/\/[^/#?]+)(\/[^#]*)?#([A-Za-z0-9_-]{43})$/.exec(entry.trim());
  if (!m) throw new DocumentError("a manual entry is ws[s]://host[:port][/path]#<43-character node id>");
  const id = b64uDecode(m[3]);
  if (id.length !== 32) throw new DocumentError("the node id must be 32 bytes");
  return { ws: m[1] + (m[2] || "/v1/client"), id };
}
