// Shared by loadgen.mjs and ws_relay.mjs: Ed25519 ids and the homing v1 client handshake (docs/client-protocol.md).
import crypto from "node:crypto";

const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
export const CLIENT_AUTH = Buffer.from("homing/v1/client-auth");
export const NODE_AUTH = Buffer.from("homing/v1/node-auth");

// A fresh identity. The public key is encoded as JWK inside generateKeyPairSync, not exported afterwards: Node.js 20
// deadlocked on publicKey.export({format: "jwk"}) in a 10,000-client storm. gdb showed ExportJWKEdKey holding the
// key's mutex while it allocated a string; the allocation ran a GC, and the GC's weak callback ~KeyGenJob (the job
// that had just made this key, already garbage) took the same mutex (docs/performance.md, "Sixth pass"). Inside
// the call, that job is still alive. Importing a seed instead (createPrivateKey, PKCS#8 DER) costs ~625 µs against
// ~70 µs here.
export function newIdentity() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519", { publicKeyEncoding: { format: "jwk" } });
  return { id: Buffer.from(publicKey.x, "base64url"), sign: (msg) => crypto.sign(null, msg, privateKey) };
}

// Public keys already parsed, by id (hex): a load generator checks the same few nodes' welcomes thousands of
// times, and parsing the key costs as much as the verification itself (~100 µs each on the bench machine).
const KEYS = new Map();
const KEYS_MAX = 64;

export function verify(id, msg, sig) {
  try {
    const hex = Buffer.from(id).toString("hex");
    let key = KEYS.get(hex);
    if (!key) {
      key = crypto.createPublicKey({ key: Buffer.concat([SPKI_PREFIX, id]), format: "der", type: "spki" });
      if (KEYS.size < KEYS_MAX) KEYS.set(hex, key);
    }
    return crypto.verify(null, msg, key, sig);
  } catch {
    return false;
  }
}
