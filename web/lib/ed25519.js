// Ed25519 through WebCrypto where the platform has it (Chromium, Firefox, Safari 17+, Node 20), else @noble/curves
// (loaded on first use only). Both paths produce and check the same RFC 8032 signatures.

import { b64uDecode, buf, concat } from "./bytes.js";

/** @type {Promise<boolean> | null} */
let webcryptoOk = null;

/** Whether WebCrypto implements Ed25519 here (probed once). @returns {Promise<boolean>} */
export function hasWebCryptoEd25519() {
  if (webcryptoOk === null) {
    webcryptoOk = (async () => {
      try {
        const subtle = globalThis.crypto?.subtle;
        if (!subtle) return false;
        const k = /** @type {CryptoKeyPair} */ (await subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]));
        const sig = await subtle.sign({ name: "Ed25519" }, k.privateKey, new Uint8Array(1));
        return sig.byteLength === 64;
      } catch {
        return false;
      }
    })();
  }
  return webcryptoOk;
}

/** Force the @noble fallback (tests use it to prove both paths agree). @param {boolean} ok */
export function setWebCryptoEd25519(ok) {
  webcryptoOk = Promise.resolve(ok);
}

async function noble() {
  const mod = await import("@noble/curves/ed25519.js");
  return mod.ed25519;
}

const PKCS8_ED25519_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

/**
 * A signing key: `publicKey` is the 32-byte id. `privateKey` is a WebCrypto key (non-extractable unless asked)
 * or, on the fallback path, the 32-byte seed.
 * @typedef {{publicKey: Uint8Array, privateKey: CryptoKey | Uint8Array, extractable: boolean}} SigningKey
 */

/**
 * @param {{extractable?: boolean}} [opts]
 * @returns {Promise<SigningKey>}
 */
export async function generateKey(opts = {}) {
  const extractable = Boolean(opts.extractable);
  if (await hasWebCryptoEd25519()) {
    const k = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: "Ed25519" }, extractable, ["sign", "verify"]));
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", k.publicKey));
    return { publicKey: pub, privateKey: k.privateKey, extractable };
  }
  const ed = await noble();
  const seed = ed.utils.randomSecretKey();
  return { publicKey: ed.getPublicKey(seed), privateKey: seed, extractable: true };
}

/**
 * A key from its 32-byte seed (RFC 8032 private key).
 * @param {Uint8Array} seed
 * @param {{extractable?: boolean}} [opts]
 * @returns {Promise<SigningKey>}
 */
export async function keyFromSeed(seed, opts = {}) {
  if (seed.length !== 32) throw new RangeError("an Ed25519 seed is 32 bytes");
  const extractable = Boolean(opts.extractable);
  if (await hasWebCryptoEd25519()) {
    const pkcs8 = buf(concat(PKCS8_ED25519_PREFIX, seed));
    const tmp = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", tmp);
    const pub = b64uDecode(/** @type {string} */ (jwk.x));
    const priv = extractable ? tmp : await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
    return { publicKey: pub, privateKey: priv, extractable };
  }
  const ed = await noble();
  return { publicKey: ed.getPublicKey(seed), privateKey: seed.slice(), extractable: true };
}

/**
 * The 32-byte seed of an extractable key. Throws for a non-extractable one.
 * @param {SigningKey} key
 * @returns {Promise<Uint8Array>}
 */
export async function exportSeed(key) {
  if (key.privateKey instanceof Uint8Array) return key.privateKey.slice();
  if (!key.extractable) throw new Error("this key is not extractable: it was made to stay in this browser");
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key.privateKey));
  return pkcs8.slice(pkcs8.length - 32);
}

/**
 * @param {SigningKey} key
 * @param {Uint8Array} message
 * @returns {Promise<Uint8Array>}
 */
export async function sign(key, message) {
  if (key.privateKey instanceof Uint8Array) return (await noble()).sign(message, key.privateKey);
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, buf(message)));
}

/**
 * Verify `sig` by `publicKey` over `message`. False for any malformed input, never throws.
 * @param {Uint8Array} publicKey
 * @param {Uint8Array} message
 * @param {Uint8Array} sig
 * @returns {Promise<boolean>}
 */
export async function verify(publicKey, message, sig) {
  if (publicKey.length !== 32 || sig.length !== 64) return false;
  try {
    if (await hasWebCryptoEd25519()) {
      const k = await crypto.subtle.importKey("raw", buf(publicKey), { name: "Ed25519" }, false, ["verify"]);
      return await crypto.subtle.verify({ name: "Ed25519" }, k, buf(sig), buf(message));
    }
    return (await noble()).verify(sig, message, publicKey);
  } catch {
    return false;
  }
}
