// A client identity: an Ed25519 key pair kept in the browser. The signing key is a non-extractable WebCrypto key
// unless the user asked for a backup; a backup is the seed sealed with a passphrase (PBKDF2-SHA-256, AES-256-GCM).
// The X25519 static key of the end-to-end format (docs/e2ee.md) is derived from the seed when the identity is made
// and kept as bytes: the Noise code needs it for DH, so it is not protected by non-extractability.

import { b64uDecode, b64uEncode, buf, randomBytes, utf8 } from "./bytes.js";
import { exportSeed, keyFromSeed, sign } from "./ed25519.js";
import { ed25519SeedToX25519 } from "./noise.js";

export const BACKUP_VERSION = 1;
export const BACKUP_PBKDF2_ITERATIONS = 600_000; // OWASP 2023 figure for PBKDF2-HMAC-SHA256
export const BACKUP_MAX_CHARS = 4096;

export class Identity {
  /**
   * @param {import("./ed25519.js").SigningKey} key
   * @param {import("./noise.js").Keypair} x25519 the static key pair of docs/e2ee.md
   */
  constructor(key, x25519) {
    this.key = key;
    this.x25519 = x25519;
    /** The 32-byte id (the public key). */
    this.id = key.publicKey;
    /** The 43-character base64url id. */
    this.idText = b64uEncode(key.publicKey);
  }

  /** @param {{extractable?: boolean}} [opts] */
  static async generate(opts = {}) {
    return Identity.fromSeed(randomBytes(32), opts);
  }

  /**
   * @param {Uint8Array} seed
   * @param {{extractable?: boolean}} [opts]
   */
  static async fromSeed(seed, opts = {}) {
    return new Identity(await keyFromSeed(seed, opts), ed25519SeedToX25519(seed));
  }

  /** @param {Uint8Array} message */
  sign(message) {
    return sign(this.key, message);
  }

  /** Whether a passphrase backup can be made (the key was created extractable). */
  get exportable() {
    return this.key.extractable;
  }

  /**
   * A passphrase-protected backup: `homing-backup:` + base64url(JSON). Throws for a non-extractable key.
   * @param {string} passphrase
   * @param {{iterations?: number}} [opts]
   * @returns {Promise<string>}
   */
  async exportBackup(passphrase, opts = {}) {
    if (passphrase.length < 8) throw new RangeError("use a passphrase of at least 8 characters");
    const seed = await exportSeed(this.key);
    const iterations = opts.iterations ?? BACKUP_PBKDF2_ITERATIONS;
    const salt = randomBytes(16);
    const iv = randomBytes(12);
    const aesKey = await backupKey(passphrase, salt, iterations);
    const ad = utf8(`homing/v1/backup ${this.idText}`);
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv: buf(iv), additionalData: buf(ad) }, aesKey, buf(seed)));
    const doc = { v: BACKUP_VERSION, id: this.idText, kdf: "pbkdf2-sha256", iter: iterations, salt: b64uEncode(salt), iv: b64uEncode(iv), ct: b64uEncode(ct) };
    return "homing-backup:" + b64uEncode(utf8(JSON.stringify(doc)));
  }

  /**
   * Restore from `exportBackup` text. Throws "wrong passphrase or damaged backup" when it does not open.
   * @param {string} text
   * @param {string} passphrase
   * @param {{extractable?: boolean}} [opts]
   */
  static async importBackup(text, passphrase, opts = {}) {
    if (typeof text !== "string" || text.length > BACKUP_MAX_CHARS || !text.startsWith("homing-backup:")) throw new Error("not a homing backup");
    /** @type {any} */
    let doc;
    try {
      doc = JSON.parse(new TextDecoder().decode(b64uDecode(text.slice("homing-backup:".length))));
    } catch {
      throw new Error("not a homing backup");
    }
    if (doc?.v !== BACKUP_VERSION || doc.kdf !== "pbkdf2-sha256" || !Number.isSafeInteger(doc.iter) || doc.iter < 100_000 || doc.iter > 10_000_000)
      throw new Error("unsupported backup format");
    const aesKey = await backupKey(passphrase, b64uDecode(doc.salt), doc.iter);
    const ad = utf8(`homing/v1/backup ${doc.id}`);
    /** @type {Uint8Array} */
    let seed;
    try {
      seed = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: buf(b64uDecode(doc.iv)), additionalData: buf(ad) }, aesKey, buf(b64uDecode(doc.ct))));
    } catch {
      throw new Error("wrong passphrase or damaged backup");
    }
    const ident = await Identity.fromSeed(seed, { extractable: opts.extractable ?? true });
    if (ident.idText !== doc.id) throw new Error("backup does not match its id");
    return ident;
  }
}

/**
 * @param {string} passphrase
 * @param {Uint8Array} salt
 * @param {number} iterations
 */
async function backupKey(passphrase, salt, iterations) {
  const base = await crypto.subtle.importKey("raw", buf(utf8(passphrase)), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt: buf(salt), iterations }, base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}
