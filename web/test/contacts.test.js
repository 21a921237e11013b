import assert from "node:assert/strict";
import { test } from "node:test";
import { ContactBook, contactLink, parseContact } from "../lib/contacts.js";

const ID = "iojj3XQJ8ZX9Utstpq5dcspnCb8dlBIb83SIAbQPb1w";

test("contacts come from a pasted id, a contact link or its QR payload", () => {
  assert.deepEqual(parseContact(ID, "Bob"), { id: ID, name: "Bob" });
  assert.deepEqual(parseContact(contactLink(ID, "Zoë B")), { id: ID, name: "Zoë B" });
  assert.deepEqual(parseContact(` ${contactLink(ID)} `), { id: ID, name: ID.slice(0, 8) });
  assert.throws(() => parseContact("homing://contact/short"));
  assert.throws(() => parseContact(ID + "A"));
  assert.equal(parseContact(ID, "a\u0000b\nc").name, "abc");
});

test("the contact book stores, replaces and removes contacts and skips damaged entries", () => {
  /** @type {Map<string, string>} */
  const m = new Map();
  const book = new ContactBook({ getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v) }, "c");
  book.add({ id: ID, name: "Bob" });
  book.add({ id: ID, name: "Robert" });
  assert.deepEqual(book.list(), [{ id: ID, name: "Robert" }]);
  assert.equal(book.nameOf(ID), "Robert");
  m.set("c", JSON.stringify([{ id: "bad" }, { id: ID, name: "B" }]));
  assert.deepEqual(book.list(), [{ id: ID, name: "B" }]);
  book.remove(ID);
  assert.deepEqual(book.list(), []);
});
