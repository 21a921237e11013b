// Client protocol v1 codec (docs/client-protocol.md): one map per WebSocket message, msgpack in binary frames
// (bytes as `bin`, text as `str`), JSON in text frames (bytes as unpadded base64url strings). Everything a node
// sends is untrusted: sizes and types are checked here, and a frame that fails a check raises FrameError.

import { encode, decode } from "@msgpack/msgpack";
import { b64uDecode, b64uEncode } from "./bytes.js";

export const FRAME_MAX_BYTES = 128 * 1024;
export const BODY_MAX_BYTES = 65536;
export const CALL_ID_MIN_BYTES = 1;
export const CALL_ID_MAX_BYTES = 64;
export const ID_BYTES = 32;
export const SIG_BYTES = 64;
export const NONCE_BYTES = 32;
export const EID_BYTES = 16;
export const STR_MAX_CHARS = 4096;
export const GOAWAY_NODES_MAX = 64;
export const ICE_SERVERS_MAX = 16;
export const REF_MAX = Number.MAX_SAFE_INTEGER; // JavaScript clients keep refs below 2^53

/** @typedef {"call_offer"|"call_answer"|"call_reject"|"call_hangup"|"call_ice"} Kind */
export const KINDS = /** @type {const} */ (["call_offer", "call_answer", "call_reject", "call_hangup", "call_ice"]);
export const STATUSES = /** @type {const} */ (["delivered", "queued", "expired", "cancelled", "rejected"]);
export const REASONS = /** @type {const} */ (["bad_request", "too_large", "rate_limited"]);
export const ERROR_CODES = /** @type {const} */ (["bad_request", "too_large", "rate_limited", "unknown_type", "auth_failed"]);
export const PUSH_ENDPOINT_MAX_BYTES = 1000;
export const P256_POINT_BYTES = 65;
export const PUSH_AUTH_BYTES = 16;
const BYTES_FIELDS = new Set(["to", "from", "call", "body", "eid", "id", "nonce", "sig", "node", "vapid"]);

/**
 * @typedef {{t: "challenge", node: Uint8Array, nonce: Uint8Array}} Challenge
 * @typedef {{t: "welcome", id: Uint8Array, sig: Uint8Array}} Welcome
 * @typedef {{t: "deliver", kind: Kind, from: Uint8Array, call: Uint8Array, body: Uint8Array, eid: Uint8Array}} Deliver
 * @typedef {{t: "receipt", ref: number, status: typeof STATUSES[number], reason: typeof REASONS[number] | null}} Receipt
 * @typedef {{t: "error", code: string, ref: number | null}} ErrorMsg
 * @typedef {{t: "goaway", nodes: string[]}} GoAway
 * @typedef {{t: "ping"}} Ping
 * @typedef {{t: "pong"}} Pong
 * @typedef {{urls: string[], username?: string, credential?: string}} IceServer
 * @typedef {{t: "ice_servers", ttl: number, servers: IceServer[]}} IceServers
 * @typedef {{t: "ok", of: string, vapid: Uint8Array | null}} Ok
 * @typedef {{t: "unknown", type: string}} Unknown
 * @typedef {Challenge|Welcome|Deliver|Receipt|ErrorMsg|GoAway|Ping|Pong|IceServers|Ok|Unknown} NodeMessage
 */

export class FrameError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "FrameError";
  }
}

/**
 * Encode a client → node map: msgpack bytes (binary frame) or a JSON string (text frame).
 * Key order is the caller's; the node does not care, the test vectors do.
 * @param {Record<string, unknown>} map
 * @param {{json?: boolean}} [opts]
 * @returns {Uint8Array | string}
 */
export function encodeFrame(map, opts = {}) {
  if (!opts.json) return encode(map);
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, v] of Object.entries(map)) out[k] = v instanceof Uint8Array ? b64uEncode(v) : v;
  return JSON.stringify(out);
}

/**
 * @param {Uint8Array} id
 * @param {Uint8Array} nonce
 * @param {Uint8Array} sig
 */
export function hello(id, nonce, sig) {
  return { t: "hello", id, nonce, sig };
}

/**
 * `push_register` (docs/client-protocol.md, "Push wake-up") from a subscription's endpoint and keys, checked like the
 * node checks it: an https:// URL of at most 1000 bytes (printable ASCII, a host, no user info, no fragment), a 65-byte
 * uncompressed P-256 point, a 16-byte auth secret. Bytes stay bytes: msgpack sends bin, JSON base64url strings.
 * @param {{endpoint: string, p256dh: Uint8Array, auth: Uint8Array}} sub
 */
export function pushRegister(sub) {
  const { endpoint, p256dh, auth } = sub;
  if (typeof endpoint !== "string" || endpoint.length > PUSH_ENDPOINT_MAX_BYTES || !/^[\x21-\x7e]+$/.test(endpoint))
    throw new RangeError(`push endpoint must be printable ASCII of at most ${PUSH_ENDPOINT_MAX_BYTES} bytes`);
  /** @type {URL} */
  let url;
  try {
    url = new URL(endpoint);
  } catch {
    throw new RangeError("push endpoint is not a URL");
  }
  if (url.protocol !== "https:" || !url.hostname || url.username || url.password || endpoint.includes("#"))
    throw new RangeError("push endpoint must be an https:// URL with a host, without user info or fragment");
  if (!(p256dh instanceof Uint8Array) || p256dh.length !== P256_POINT_BYTES || p256dh[0] !== 4)
    throw new RangeError("p256dh must be a 65-byte uncompressed P-256 point");
  if (!(auth instanceof Uint8Array) || auth.length !== PUSH_AUTH_BYTES) throw new RangeError("auth must be 16 bytes");
  return { t: "push_register", endpoint, p256dh, auth };
}

export function pushUnregister() {
  return { t: "push_unregister" };
}

/**
 * An envelope map, checked before it is sent (the node would refuse it anyway).
 * @param {Kind} kind
 * @param {Uint8Array} to
 * @param {Uint8Array} call
 * @param {Uint8Array} body
 * @param {number} ref
 */
export function envelope(kind, to, call, body, ref) {
  if (!KINDS.includes(kind)) throw new TypeError(`unknown envelope kind ${kind}`);
  if (to.length !== ID_BYTES) throw new RangeError("'to' must be 32 bytes");
  if (call.length < CALL_ID_MIN_BYTES || call.length > CALL_ID_MAX_BYTES) throw new RangeError("'call' must be 1..64 bytes");
  if (body.length > BODY_MAX_BYTES) throw new RangeError("'body' over 65536 bytes");
  if (!Number.isSafeInteger(ref) || ref < 0) throw new RangeError("'ref' must be an integer in 0..2^53-1");
  return { t: kind, to, call, body, ref };
}

/**
 * @param {Record<string, unknown>} m
 * @param {string} key
 * @param {number} min
 * @param {number} max
 * @returns {Uint8Array}
 */
function getBytes(m, key, min, max) {
  const v = m[key];
  if (!(v instanceof Uint8Array)) throw new FrameError(`field '${key}' must be bytes`);
  if (v.length < min || v.length > max) throw new FrameError(`field '${key}' must be ${min}..${max} bytes`);
  return v;
}

/**
 * @param {Record<string, unknown>} m
 * @param {string} key
 * @returns {string}
 */
function getStr(m, key) {
  const v = m[key];
  if (typeof v !== "string" || v.length > STR_MAX_CHARS) throw new FrameError(`field '${key}' must be a string`);
  return v;
}

/**
 * @param {Record<string, unknown>} m
 * @param {string} key
 * @returns {number}
 */
function getUint(m, key) {
  const v = m[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new FrameError(`field '${key}' must be an unsigned integer`);
  return v;
}

/**
 * @template {string} T
 * @param {Record<string, unknown>} m
 * @param {string} key
 * @param {readonly T[]} allowed
 * @returns {T}
 */
function getEnum(m, key, allowed) {
  const v = getStr(m, key);
  const found = allowed.find((a) => a === v);
  if (found === undefined) throw new FrameError(`field '${key}' has unknown value ${JSON.stringify(v.slice(0, 32))}`);
  return found;
}

/**
 * Parse one frame into a plain map (bytes fields as Uint8Array in both encodings).
 * @param {Uint8Array | ArrayBuffer | string} data
 * @returns {Record<string, unknown>}
 */
export function parseFrame(data) {
  /** @type {unknown} */
  let obj;
  if (typeof data === "string") {
    if (data.length > FRAME_MAX_BYTES) throw new FrameError("frame too large");
    try {
      obj = JSON.parse(data);
    } catch {
      throw new FrameError("not JSON");
    }
    if (!isMap(obj)) throw new FrameError("frame is not a map");
    /** @type {Record<string, unknown>} */
    const out = {};
    for (const [k, v] of Object.entries(obj)) {
      if (BYTES_FIELDS.has(k) && typeof v === "string") {
        try {
          out[k] = b64uDecode(v);
        } catch {
          out[k] = v;
        }
      } else out[k] = v;
    }
    return out;
  }
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length > FRAME_MAX_BYTES) throw new FrameError("frame too large");
  try {
    obj = decode(bytes, {
      maxStrLength: FRAME_MAX_BYTES,
      maxBinLength: FRAME_MAX_BYTES,
      maxArrayLength: 1024,
      maxMapLength: 64,
      maxExtLength: 0,
    });
  } catch (e) {
    throw new FrameError(`not valid msgpack: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isMap(obj)) throw new FrameError("frame is not a map");
  return obj;
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isMap(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/**
 * Decode one frame a node sent. Unknown keys are ignored; an unknown `t` gives `{t: "unknown"}` (forward
 * compatibility); anything malformed throws FrameError.
 * @param {Uint8Array | ArrayBuffer | string} data
 * @returns {NodeMessage}
 */
export function decodeNodeFrame(data) {
  const m = parseFrame(data);
  const t = m.t;
  if (typeof t !== "string") throw new FrameError("frame has no string field 't'");
  const kind = KINDS.find((k) => k === t);
  if (kind !== undefined) {
    return {
      t: "deliver",
      kind,
      from: getBytes(m, "from", ID_BYTES, ID_BYTES),
      call: getBytes(m, "call", CALL_ID_MIN_BYTES, CALL_ID_MAX_BYTES),
      body: getBytes(m, "body", 0, BODY_MAX_BYTES),
      eid: getBytes(m, "eid", EID_BYTES, EID_BYTES),
    };
  }
  switch (t) {
    case "challenge":
      return { t, node: getBytes(m, "node", ID_BYTES, ID_BYTES), nonce: getBytes(m, "nonce", NONCE_BYTES, NONCE_BYTES) };
    case "welcome":
      return { t, id: getBytes(m, "id", ID_BYTES, ID_BYTES), sig: getBytes(m, "sig", SIG_BYTES, SIG_BYTES) };
    case "receipt":
      return {
        t,
        ref: getUint(m, "ref"),
        status: getEnum(m, "status", STATUSES),
        reason: m.reason == null ? null : getEnum(m, "reason", REASONS),
      };
    case "error":
      return { t, code: getStr(m, "code"), ref: typeof m.ref === "number" && Number.isSafeInteger(m.ref) ? m.ref : null };
    case "goaway": {
      const nodes = m.nodes ?? [];
      if (!Array.isArray(nodes) || nodes.length > GOAWAY_NODES_MAX || !nodes.every((n) => typeof n === "string" && n.length <= STR_MAX_CHARS))
        throw new FrameError("goaway 'nodes' must be a list of strings");
      return { t, nodes };
    }
    case "ping":
    case "pong":
      return { t };
    case "ice_servers":
      return { t, ttl: getUint(m, "ttl"), servers: iceServerList(m.servers) };
    case "ok":
      return { t, of: getStr(m, "of").slice(0, 32), vapid: m.vapid == null ? null : getBytes(m, "vapid", P256_POINT_BYTES, P256_POINT_BYTES) };
    default:
      return { t: "unknown", type: t.slice(0, 32) };
  }
}

/**
 * @param {unknown} raw
 * @returns {IceServer[]}
 */
function iceServerList(raw) {
  if (!Array.isArray(raw) || raw.length > ICE_SERVERS_MAX) throw new FrameError("'servers' must be a list");
  return raw.map((s) => {
    if (!isMap(s)) throw new FrameError("an ice server is not a map");
    const urls = typeof s.urls === "string" ? [s.urls] : s.urls;
    if (!Array.isArray(urls) || urls.length === 0 || urls.length > ICE_SERVERS_MAX) throw new FrameError("'urls' must be a list");
    /** @type {IceServer} */
    const out = {
      urls: urls.map((u) => {
        if (typeof u !== "string" || u.length > 512 || !/^(stuns?|turns?):/.test(u)) throw new FrameError("bad ice server url");
        return u;
      }),
    };
    if (s.username != null) out.username = getStr(s, "username");
    if (s.credential != null) out.credential = getStr(s, "credential");
    return out;
  });
}
