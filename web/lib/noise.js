// The Noise Protocol Framework (rev 34) for Noise_KK and Noise_K with 25519_ChaChaPoly_BLAKE2b only, as
// docs/e2ee.md states it: X25519 (an all-zero result is refused), ChaCha20-Poly1305 IETF with the nonce
// 4 zero bytes || 64-bit little-endian counter, BLAKE2b-512, HMAC over BLAKE2b (128-byte block), the spec's HKDF.
// Randomness (ephemeral private keys) is injected. Every failure on peer input throws NoiseError and changes no state.

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { blake2b } from "@noble/hashes/blake2.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concat, utf8 } from "./bytes.js";

export const DH_BYTES = 32;
export const HASH_BYTES = 64;
export const BLOCK_BYTES = 128;
export const KEY_BYTES = 32;
export const TAG_BYTES = 16;
export const MAX_MESSAGE_BYTES = 65535;

/** @typedef {(n: number) => Uint8Array} RandomBytes */
/** @typedef {{priv: Uint8Array, pub: Uint8Array}} Keypair */

export class NoiseError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "NoiseError";
  }
}

/** @param {Uint8Array} data */
export function hash(data) {
  return blake2b(data, { dkLen: HASH_BYTES });
}

/** @param {Uint8Array} data @param {number} n */
export function hashN(data, n) {
  return blake2b(data, { dkLen: n });
}

/** @param {Uint8Array} key @param {Uint8Array} data */
function hmac(key, data) {
  const k = new Uint8Array(BLOCK_BYTES);
  k.set(key.length > BLOCK_BYTES ? hash(key) : key);
  const ipad = k.map((b) => b ^ 0x36);
  const opad = k.map((b) => b ^ 0x5c);
  return hash(concat(opad, hash(concat(ipad, data))));
}

/** @param {Uint8Array} ck @param {Uint8Array} ikm @returns {[Uint8Array, Uint8Array]} */
function hkdf2(ck, ikm) {
  const t = hmac(ck, ikm);
  const o1 = hmac(t, new Uint8Array([1]));
  const o2 = hmac(t, concat(o1, new Uint8Array([2])));
  return [o1, o2];
}

/** @param {number | bigint} n */
function nonce(n) {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(n), true);
  return out;
}

/** @param {Uint8Array} priv @param {Uint8Array} pub */
export function dh(priv, pub) {
  let out;
  try {
    out = x25519.getSharedSecret(priv, pub);
  } catch {
    throw new NoiseError("X25519 failed (bad public key)");
  }
  if (out.every((b) => b === 0)) throw new NoiseError("X25519 public key has low order (all-zero shared secret)");
  return out;
}

/** @param {Uint8Array} priv @returns {Keypair} */
export function keypairFromPrivate(priv) {
  return { priv: priv.slice(), pub: x25519.getPublicKey(priv) };
}

/**
 * The X25519 static key pair of an Ed25519 identity from its seed (libsodium crypto_sign_ed25519_sk_to_curve25519).
 * @param {Uint8Array} seed
 */
export function ed25519SeedToX25519(seed) {
  const h = sha512(seed).slice(0, 32);
  h[0] &= 248;
  h[31] &= 127;
  h[31] |= 64;
  return keypairFromPrivate(h);
}

/**
 * A peer's X25519 public key from its Ed25519 id (crypto_sign_ed25519_pk_to_curve25519). Throws NoiseError.
 * @param {Uint8Array} id
 */
export function ed25519IdToX25519(id) {
  if (id.length !== 32) throw new NoiseError("an id is 32 bytes");
  try {
    const point = ed25519.Point.fromBytes(id);
    if (point.is0() || !point.isTorsionFree() || point.isSmallOrder()) throw new Error("small order");
    return ed25519.utils.toMontgomery(id);
  } catch {
    throw new NoiseError("the id is not a usable Ed25519 public key");
  }
}

export class CipherState {
  /** @param {Uint8Array | null} [k] @param {bigint} [n] */
  constructor(k = null, n = 0n) {
    this.k = k;
    this.n = n;
  }

  /** @param {number | bigint} n */
  setNonce(n) {
    this.n = BigInt(n);
  }

  /** @param {Uint8Array} ad @param {Uint8Array} plaintext */
  encryptWithAd(ad, plaintext) {
    if (!this.k) return plaintext;
    const out = chacha20poly1305(this.k, nonce(this.n), ad).encrypt(plaintext);
    this.n += 1n;
    return out;
  }

  /** @param {Uint8Array} ad @param {Uint8Array} ciphertext */
  decryptWithAd(ad, ciphertext) {
    if (!this.k) return ciphertext;
    if (ciphertext.length < TAG_BYTES) throw new NoiseError("ciphertext shorter than its tag");
    let out;
    try {
      out = chacha20poly1305(this.k, nonce(this.n), ad).decrypt(ciphertext);
    } catch {
      throw new NoiseError("ciphertext does not authenticate");
    }
    this.n += 1n;
    return out;
  }

  copy() {
    return new CipherState(this.k ? this.k.slice() : null, this.n);
  }
}

/** @type {Record<string, {pre: [string[], string[]], messages: string[][]}>} */
const PATTERNS = {
  K: { pre: [["s"], ["s"]], messages: [["e", "es", "ss"]] },
  KK: { pre: [["s"], ["s"]], messages: [["e", "es", "ss"], ["e", "ee", "se"]] },
};

export class HandshakeState {
  /**
   * @param {{pattern: "K"|"KK", initiator: boolean, prologue: Uint8Array, s: Keypair, rs: Uint8Array, randomBytes: RandomBytes}} o
   */
  constructor(o) {
    const name = utf8(`Noise_${o.pattern}_25519_ChaChaPoly_BLAKE2b`);
    this.pattern = PATTERNS[o.pattern];
    this.initiator = o.initiator;
    this.s = o.s;
    this.rs = o.rs;
    /** @type {Keypair | null} */
    this.e = null;
    /** @type {Uint8Array | null} */
    this.re = null;
    this.randomBytes = o.randomBytes;
    /** @type {Uint8Array} */
    this.h = new Uint8Array(HASH_BYTES);
    this.h.set(name);
    /** @type {Uint8Array} */
    this.ck = this.h.slice();
    this.cipher = new CipherState();
    this.index = 0;
    this.mixHash(o.prologue);
    const [initiatorStatic, responderStatic] = o.initiator ? [o.s.pub, o.rs] : [o.rs, o.s.pub];
    this.mixHash(initiatorStatic);
    this.mixHash(responderStatic);
  }

  /** @param {Uint8Array} data */
  mixHash(data) {
    this.h = hash(concat(this.h, data));
  }

  /** @param {Uint8Array} ikm */
  mixKey(ikm) {
    const [ck, t] = hkdf2(this.ck, ikm);
    this.ck = ck;
    this.cipher = new CipherState(t.slice(0, KEY_BYTES));
  }

  /** @param {Uint8Array} p */
  encryptAndHash(p) {
    const c = this.cipher.encryptWithAd(this.h, p);
    this.mixHash(c);
    return c;
  }

  /** @param {Uint8Array} c */
  decryptAndHash(c) {
    const p = this.cipher.decryptWithAd(this.h, c);
    this.mixHash(c);
    return p;
  }

  get complete() {
    return this.index >= this.pattern.messages.length;
  }

  get myTurn() {
    return !this.complete && (this.index % 2 === 0) === this.initiator;
  }

  /** @param {string} token @returns {Uint8Array} */
  dhToken(token) {
    const e = /** @type {Keypair} */ (this.e);
    const re = /** @type {Uint8Array} */ (this.re);
    switch (token) {
      case "ee":
        return dh(e.priv, re);
      case "es":
        return this.initiator ? dh(e.priv, this.rs) : dh(this.s.priv, re);
      case "se":
        return this.initiator ? dh(this.s.priv, re) : dh(e.priv, this.rs);
      case "ss":
        return dh(this.s.priv, this.rs);
      default:
        throw new Error(`unsupported token ${token}`);
    }
  }

  /** @param {Uint8Array} payload */
  writeMessage(payload) {
    if (!this.myTurn) throw new Error("not our turn to write");
    /** @type {Uint8Array[]} */
    const out = [];
    for (const token of this.pattern.messages[this.index]) {
      if (token === "e") {
        const priv = this.randomBytes(DH_BYTES);
        if (priv.length !== DH_BYTES) throw new Error("randomBytes(32) must return 32 bytes");
        this.e = keypairFromPrivate(priv);
        out.push(this.e.pub);
        this.mixHash(this.e.pub);
      } else this.mixKey(this.dhToken(token));
    }
    out.push(this.encryptAndHash(payload));
    this.index++;
    const msg = concat(...out);
    if (msg.length > MAX_MESSAGE_BYTES) throw new Error("Noise message over 65535 bytes");
    return msg;
  }

  /**
   * Read the peer's message; all-or-nothing (a failure leaves this state unchanged).
   * @param {Uint8Array} message
   */
  readMessage(message) {
    if (this.myTurn || this.complete) throw new NoiseError("not the peer's turn");
    if (message.length > MAX_MESSAGE_BYTES) throw new NoiseError("Noise message over 65535 bytes");
    const trial = this.copy();
    let off = 0;
    for (const token of trial.pattern.messages[trial.index]) {
      if (token === "e") {
        if (message.length < off + DH_BYTES) throw new NoiseError("message too short");
        trial.re = message.slice(off, off + DH_BYTES);
        off += DH_BYTES;
        trial.mixHash(trial.re);
      } else trial.mixKey(trial.dhToken(token));
    }
    const payload = trial.decryptAndHash(message.slice(off));
    trial.index++;
    Object.assign(this, trial);
    return payload;
  }

  /** @returns {[CipherState, CipherState]} (send, receive) for this side */
  split() {
    const [t1, t2] = hkdf2(this.ck, new Uint8Array(0));
    const c1 = new CipherState(t1.slice(0, KEY_BYTES));
    const c2 = new CipherState(t2.slice(0, KEY_BYTES));
    return this.initiator ? [c1, c2] : [c2, c1];
  }

  get handshakeHash() {
    return this.h;
  }

  copy() {
    const out = Object.create(HandshakeState.prototype);
    Object.assign(out, this);
    out.cipher = this.cipher.copy();
    return /** @type {HandshakeState} */ (out);
  }
}
