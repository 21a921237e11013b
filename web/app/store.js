// The page's identity store: the key pair in IndexedDB (a WebCrypto CryptoKey can be stored there without ever
// being extractable), one record per profile.

import { Identity } from "../lib/identity.js";
import { keypairFromPrivate } from "../lib/noise.js";

const DB = "homing";
const STORE = "identities";

/** @returns {Promise<IDBDatabase>} */
function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/**
 * @param {"readonly"|"readwrite"} mode
 * @param {(s: IDBObjectStore) => IDBRequest} fn
 * @returns {Promise<any>}
 */
async function tx(mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const req = fn(db.transaction(STORE, mode).objectStore(STORE));
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** @param {string} profile @returns {Promise<Identity | null>} */
export async function loadIdentity(profile) {
  const rec = await tx("readonly", (s) => s.get(profile)).catch(() => null);
  if (!rec || !(rec.publicKey instanceof Uint8Array) || !(rec.x25519 instanceof Uint8Array)) return null;
  return new Identity({ publicKey: rec.publicKey, privateKey: rec.privateKey, extractable: Boolean(rec.extractable) }, keypairFromPrivate(rec.x25519));
}

/** @param {string} profile @param {Identity} ident */
export async function saveIdentity(profile, ident) {
  await tx("readwrite", (s) => s.put({ publicKey: ident.key.publicKey, privateKey: ident.key.privateKey, extractable: ident.key.extractable, x25519: ident.x25519.priv }, profile));
}
