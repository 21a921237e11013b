// What is inside an end-to-end encrypted call body (docs/e2ee.md, "Plaintext"): one msgpack map with `k` naming its
// kind, keys sorted, optional keys left out; ISO/IEC 7816-4 padding to one of five fixed sizes.

import { decode, encode } from "@msgpack/msgpack";

export const PAD_SIZES_BYTES = [512, 2048, 8192, 32768, 65024];
export const SDP_PAD_MIN_BYTES = 8192;
export const SDP_MAX_BYTES = 60000;
export const REASON_MAX_BYTES = 64;
export const CANDIDATE_MAX_BYTES = 2048;
export const MID_MAX_BYTES = 64;
export const UFRAG_MAX_BYTES = 256;
export const MLINE_MAX = 1023;
export const TS_MAX = 2 ** 40;
export const PLAINTEXT_KEYS_MAX = 16;
export const SDP_KINDS = new Set(["offer", "answer", "reoffer", "reanswer"]);

/**
 * @typedef {{k: "offer", sdp: string, video: boolean, ts: number}} OfferMsg
 * @typedef {{k: "answer"|"reoffer"|"reanswer", sdp: string, video: boolean}} SdpMsg
 * @typedef {{k: "reject"|"hangup", reason: string}} ReasonMsg
 * @typedef {{k: "ice", cand: string, mid?: string, mline?: number, ufrag?: string}} IceMsg
 * @typedef {{k: "elsewhere", how: "answered"|"rejected"}} ElsewhereMsg
 * @typedef {OfferMsg|SdpMsg|ReasonMsg|IceMsg|ElsewhereMsg} Plaintext
 */

export class E2eeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "E2eeError";
  }
}
export class BadPlaintext extends E2eeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "BadPlaintext";
  }
}
export class NotForThisDevice extends E2eeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "NotForThisDevice";
  }
}
export class Replayed extends E2eeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "Replayed";
  }
}
export class Expired extends E2eeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "Expired";
  }
}

const ENC = new TextEncoder();

/** @param {unknown} v @param {number} max @param {number} [min] */
function utf8Max(v, max, min = 0) {
  if (typeof v !== "string") return false;
  const n = ENC.encode(v).length;
  return n >= min && n <= max;
}
/** @param {unknown} v */
const token = (v) => typeof v === "string" && v.length >= 1 && v.length <= REASON_MAX_BYTES && /^[a-z0-9_]+$/.test(v);
/** @param {unknown} v @param {number} lo @param {number} hi */
const intIn = (v, lo, hi) => typeof v === "number" && Number.isSafeInteger(v) && v >= lo && v <= hi;

/** Field checks per kind: [name, required, check]. @type {Record<string, [string, boolean, (v: unknown) => boolean][]>} */
const SCHEMA = {
  offer: [["sdp", true, (v) => utf8Max(v, SDP_MAX_BYTES, 1)], ["video", true, (v) => typeof v === "boolean"], ["ts", true, (v) => intIn(v, 0, TS_MAX)]],
  answer: [["sdp", true, (v) => utf8Max(v, SDP_MAX_BYTES, 1)], ["video", true, (v) => typeof v === "boolean"]],
  reoffer: [["sdp", true, (v) => utf8Max(v, SDP_MAX_BYTES, 1)], ["video", true, (v) => typeof v === "boolean"]],
  reanswer: [["sdp", true, (v) => utf8Max(v, SDP_MAX_BYTES, 1)], ["video", true, (v) => typeof v === "boolean"]],
  reject: [["reason", true, token]],
  hangup: [["reason", true, token]],
  ice: [
    ["cand", true, (v) => utf8Max(v, CANDIDATE_MAX_BYTES)],
    ["mid", false, (v) => utf8Max(v, MID_MAX_BYTES)],
    ["mline", false, (v) => intIn(v, 0, MLINE_MAX)],
    ["ufrag", false, (v) => utf8Max(v, UFRAG_MAX_BYTES)],
  ],
  elsewhere: [["how", true, (v) => v === "answered" || v === "rejected"]],
};

/**
 * Check a plaintext against its kind's schema; returns a clean copy (known keys only). Throws BadPlaintext.
 * @param {Record<string, unknown>} m
 * @returns {Plaintext}
 */
export function checkPlaintext(m) {
  const schema = typeof m.k === "string" ? SCHEMA[m.k] : undefined;
  if (!schema) throw new BadPlaintext("plaintext kind missing or unknown");
  /** @type {Record<string, unknown>} */
  const out = { k: m.k };
  for (const [name, required, ok] of schema) {
    const v = m[name];
    if (v === undefined || v === null) {
      if (required) throw new BadPlaintext(`${m.k}: ${name} is missing`);
      continue;
    }
    if (!ok(v)) throw new BadPlaintext(`${m.k}: ${name} is out of bounds`);
    out[name] = v;
  }
  return /** @type {Plaintext} */ (out);
}

/** The canonical msgpack map of a plaintext (keys sorted, optional keys left out). @param {Plaintext} msg */
export function encodePlaintext(msg) {
  const clean = checkPlaintext(/** @type {Record<string, unknown>} */ (msg));
  return encode(clean, { sortKeys: true });
}

/** @param {Uint8Array} data @returns {Plaintext} */
export function decodePlaintext(data) {
  let obj;
  try {
    obj = decode(data, { maxStrLength: PAD_SIZES_BYTES[4], maxBinLength: 0, maxArrayLength: 0, maxMapLength: PLAINTEXT_KEYS_MAX, maxExtLength: 0 });
  } catch {
    throw new BadPlaintext("plaintext is not msgpack");
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj) || obj instanceof Uint8Array) throw new BadPlaintext("plaintext is not a map");
  return checkPlaintext(/** @type {Record<string, unknown>} */ (obj));
}

/** @param {number} length @param {number} [floor] */
export function padSize(length, floor = 0) {
  const size = PAD_SIZES_BYTES.find((s) => s >= length + 1 && s >= floor);
  if (size === undefined) throw new Error(`plaintext of ${length} bytes does not fit the largest padded size`);
  return size;
}

/** ISO/IEC 7816-4 padding (sodium_pad). @param {Uint8Array} encoded @param {number} [floor] */
export function pad(encoded, floor = 0) {
  const out = new Uint8Array(padSize(encoded.length, floor));
  out.set(encoded);
  out[encoded.length] = 0x80;
  return out;
}

/** @param {Uint8Array} padded */
export function unpad(padded) {
  if (!PAD_SIZES_BYTES.includes(padded.length)) throw new BadPlaintext(`padded plaintext of ${padded.length} bytes is not one of the fixed sizes`);
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0 || padded[i] !== 0x80) throw new BadPlaintext("bad padding");
  return padded.subarray(0, i);
}

/** @param {Plaintext} msg */
export function sealPlaintext(msg) {
  return pad(encodePlaintext(msg), SDP_KINDS.has(msg.k) ? SDP_PAD_MIN_BYTES : 0);
}

/** @param {Uint8Array} padded @returns {Plaintext} */
export function openPlaintext(padded) {
  const msg = decodePlaintext(unpad(padded));
  if (SDP_KINDS.has(msg.k) && padded.length < SDP_PAD_MIN_BYTES) throw new BadPlaintext(`${msg.k} padded below ${SDP_PAD_MIN_BYTES}`);
  return msg;
}
