// Contacts: an id (43-character base64url Ed25519 public key) and a name, from a pasted id, a contact card link or
// the same link scanned from a QR code: `homing://contact/<id>[#<name>]`. The id is the whole trust anchor: calls
// to it are end-to-end encrypted to that key, so a wrong name can mislabel a contact but not redirect a call.

import { b64uDecode } from "./bytes.js";

export const CONTACT_PREFIX = "homing://contact/";
export const NAME_MAX_CHARS = 64;
export const CONTACTS_MAX = 500;

/** @typedef {{id: string, name: string}} Contact */

/**
 * @param {string} text a pasted id, a `homing://contact/…` link or a QR payload
 * @param {string} [name]
 * @returns {Contact}
 */
export function parseContact(text, name = "") {
  let s = text.trim();
  let n = name;
  if (s.startsWith(CONTACT_PREFIX)) {
    s = s.slice(CONTACT_PREFIX.length);
    const hash = s.indexOf("#");
    if (hash >= 0) {
      n = n || decodeURIComponent(s.slice(hash + 1));
      s = s.slice(0, hash);
    }
  }
  if (!/^[A-Za-z0-9_-]{43}$/.test(s) || b64uDecode(s).length !== 32) throw new Error("not a homing id (43 base64url characters) or contact link");
  const clean = Array.from(n).filter((ch) => ch.charCodeAt(0) >= 32 && ch.charCodeAt(0) !== 127).join("").trim().slice(0, NAME_MAX_CHARS);
  return { id: s, name: clean || s.slice(0, 8) };
}

/**
 * The link (and QR payload) others use to add you.
 * @param {string} id
 * @param {string} [name]
 */
export function contactLink(id, name = "") {
  return CONTACT_PREFIX + id + (name ? "#" + encodeURIComponent(name.slice(0, NAME_MAX_CHARS)) : "");
}

/** Contacts kept in a Storage-like object (localStorage in the page). */
export class ContactBook {
  /** @param {{getItem(k: string): string | null, setItem(k: string, v: string): void}} storage @param {string} key */
  constructor(storage, key) {
    this.storage = storage;
    this.key = key;
  }

  /** @returns {Contact[]} */
  list() {
    try {
      const raw = JSON.parse(this.storage.getItem(this.key) ?? "[]");
      if (!Array.isArray(raw)) return [];
      /** @type {Contact[]} */
      const out = [];
      for (const c of raw.slice(0, CONTACTS_MAX)) {
        try {
          out.push(parseContact(String(c?.id ?? ""), String(c?.name ?? "")));
        } catch {
          /* a damaged entry is skipped */
        }
      }
      return out;
    } catch {
      return [];
    }
  }

  /** @param {Contact} c */
  add(c) {
    const list = this.list().filter((x) => x.id !== c.id);
    list.push(c);
    this.storage.setItem(this.key, JSON.stringify(list.slice(-CONTACTS_MAX)));
  }

  /** @param {string} id */
  remove(id) {
    this.storage.setItem(this.key, JSON.stringify(this.list().filter((x) => x.id !== id)));
  }

  /** @param {string} id */
  nameOf(id) {
    return this.list().find((c) => c.id === id)?.name ?? id.slice(0, 8);
  }
}
