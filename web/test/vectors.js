// Loads the vectors the Python node's encoders wrote (tests/vectors/make_client_frames.py).
import { readFileSync } from "node:fs";
import { fromHex } from "../lib/bytes.js";

const url = new URL("../../tests/vectors/client_frames.json", import.meta.url);
/** @type {any} */
export const V = JSON.parse(readFileSync(url, "utf8"));

/**
 * A vector map with {"bytes": hex} values turned into Uint8Array.
 * @param {Record<string, any>} m
 * @returns {Record<string, any>}
 */
export function mapOf(m) {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v && typeof v === "object" && "bytes" in v ? fromHex(v.bytes) : v]));
}
export { fromHex };
