// Byte helpers shared by every module: base64url (RFC 4648 §5, unpadded), concatenation, comparison, UTF-8.

const B64U = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** @type {Int16Array} */
const B64U_REV = (() => {
  const t = new Int16Array(128).fill(-1);
  for (let i = 0; i < B64U.length; i++) t[B64U.charCodeAt(i)] = i;
  return t;
})();

/**
 * Unpadded base64url of `bytes`.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function b64uEncode(bytes) {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64U[n >> 18] + B64U[(n >> 12) & 63] + B64U[(n >> 6) & 63] + B64U[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64U[n >> 18] + B64U[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64U[n >> 18] + B64U[(n >> 12) & 63] + B64U[(n >> 6) & 63];
  }
  return out;
}

/**
 * Decode unpadded base64url (trailing "=" tolerated). Throws RangeError on any other character.
 * @param {string} text
 * @returns {Uint8Array}
 */
export function b64uDecode(text) {
  const s = text.replace(/=+$/, "");
  if (s.length % 4 === 1) throw new RangeError("base64url text has an impossible length");
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? B64U_REV[c] : -1;
    if (v < 0) throw new RangeError("not base64url");
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

/**
 * Standard base64 (with padding), as coturn's REST credentials and HTTP use.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function b64Encode(bytes) {
  const u = b64uEncode(bytes).replace(/-/g, "+").replace(/_/g, "/");
  return u + "=".repeat((4 - (u.length % 4)) % 4);
}

/**
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Constant-time-ish equality (length leaks, content does not).
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
export function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * `n` bytes from the platform's CSPRNG.
 * @param {number} n
 * @returns {Uint8Array}
 */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

const ENC = new TextEncoder();
const DEC = new TextDecoder("utf-8", { fatal: true });

/** @param {string} s @returns {Uint8Array} */
export function utf8(s) {
  return ENC.encode(s);
}

/** @param {Uint8Array} b @returns {string} */
export function fromUtf8(b) {
  return DEC.decode(b);
}

/** @param {Uint8Array} b @returns {string} */
export function toHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** @param {string} h @returns {Uint8Array} */
export function fromHex(h) {
  if (h.length % 2 || /[^0-9a-fA-F]/.test(h)) throw new RangeError("not hex");
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * A short printable form of an id (first 8 characters of its base64url text).
 * @param {Uint8Array} id
 * @returns {string}
 */
export function shortId(id) {
  return b64uEncode(id).slice(0, 8);
}

/**
 * A plain ArrayBuffer copy (WebCrypto wants BufferSource without a SharedArrayBuffer type).
 * @param {Uint8Array} b
 * @returns {ArrayBuffer}
 */
export function buf(b) {
  const out = new ArrayBuffer(b.length);
  new Uint8Array(out).set(b);
  return out;
}
