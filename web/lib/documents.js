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
 * Parse and verify a `homing://node/…` referral card: signed by the node it names.
 * @param {string} uri
 * @returns {Promise<NodeRef & {ts: number}>}
 */
export async function parseNodeCard(uri) {
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
  const card = { id: getId(body), ws: getWs(body), ts: getInt(body, "ts") };
  if (b64uEncode(card.id) !== b64uEncode(signer)) throw new DocumentError("card is not signed by the node it names");
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
