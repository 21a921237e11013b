// Shared by loadgen.mjs and ws_relay.mjs: Ed25519 ids and the homing v1 client handshake (docs/client-protocol.md).
import crypto from "node:crypto";

const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
export const CLIENT_AUTH = Buffer.from("homing/v1/client-auth");
export const NODE_AUTH = Buffer.from("homing/v1/node-auth");

export function newIdentity() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
  return { id: raw, sign: (msg) => crypto.sign(null, msg, privateKey) };
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
