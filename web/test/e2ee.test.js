// tests/vectors/e2ee.json (docs/e2ee.md), replayed from the JSON alone, as tests/unit/test_e2ee_vectors.py does:
// every body is reproduced byte for byte by its writer and opened (or refused) by its receivers.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fromHex, toHex } from "../lib/bytes.js";
import * as e2ee from "../lib/e2ee.js";
import { encodePlaintext, sealPlaintext } from "../lib/e2ee_plaintext.js";
import { ed25519IdToX25519, ed25519SeedToX25519 } from "../lib/noise.js";

/** @type {any} */
const V = JSON.parse(readFileSync(new URL("../../tests/vectors/e2ee.json", import.meta.url), "utf8"));
const REFUSALS = { bad_body: e2ee.E2eeError, replayed: e2ee.Replayed, expired: e2ee.Expired, not_for_this_device: e2ee.NotForThisDevice };

/** @param {string} who */
function ident(who) {
  const i = V.identities[who];
  return { id: fromHex(i.id), x25519: ed25519SeedToX25519(fromHex(i.seed)) };
}

class World {
  constructor() {
    this.caller = ident("caller");
    this.callee = ident("callee");
    /** @type {Uint8Array | null} */
    this.next = null;
    this.feed = (/** @type {number} */ n) => {
      assert.ok(n === 32 && this.next, "the writer drew an ephemeral the vector does not list");
      const v = this.next;
      this.next = null;
      return v;
    };
    /** @type {Map<string, e2ee.OutgoingCall>} */
    this.outgoing = new Map();
    /** @type {Map<string, e2ee.IncomingCall>} */
    this.incoming = new Map();
    this.caches = { callee_a: new e2ee.OfferReplayCache(), callee_b: new e2ee.OfferReplayCache() };
    this.refusalsByName = Object.fromEntries(V.refusals.map((/** @type {any} */ r) => [r.name, r]));
  }

  /** @param {any} step */
  write(step) {
    const call = fromHex(step.call);
    const msg = step.plaintext;
    if (step.ephemeral_private) this.next = fromHex(step.ephemeral_private);
    if (step.writer === "caller") {
      if (step.body_type === e2ee.OFFER) {
        const out = new e2ee.OutgoingCall({ identity: this.caller, callee: this.callee.id, call, randomBytes: this.feed });
        this.outgoing.set(step.call, out);
        return out.offer(msg);
      }
      const out = /** @type {e2ee.OutgoingCall} */ (this.outgoing.get(step.call));
      if (step.body_type === e2ee.EARLY) return out.early(msg);
      return out.seal(fromHex(step.sid), msg);
    }
    const dev = /** @type {e2ee.IncomingCall} */ (this.incoming.get(`${step.writer} ${step.call}`));
    if (step.body_type === e2ee.ANSWER) return dev.answer(msg);
    if (step.body_type === e2ee.SELF) return dev.elsewhere(msg.how);
    for (const name of step.written_before ?? []) {
      const held = this.refusalsByName[name];
      assert.equal(toHex(dev.seal(held.plaintext)), held.body);
    }
    return dev.seal(msg);
  }

  /** @param {string} device @param {Uint8Array} sender @param {string} callHex @param {string} kind @param {Uint8Array} body */
  receive(device, sender, callHex, kind, body) {
    if (device === "caller") return /** @type {e2ee.OutgoingCall} */ (this.outgoing.get(callHex)).open({ sender, kind, body });
    if (e2ee.bodyType(body) === e2ee.OFFER) {
      const [dev, offer] = e2ee.IncomingCall.fromOffer({
        identity: this.callee, sender, call: fromHex(callHex), kind, body, nowS: V.now_s,
        replay: /** @type {any} */ (this.caches)[device], randomBytes: this.feed,
      });
      this.incoming.set(`${device} ${callHex}`, dev);
      return { sid: null, msg: offer };
    }
    const dev = this.incoming.get(`${device} ${callHex}`);
    if (!dev) throw new e2ee.E2eeError("no state for this call");
    return dev.open({ sender, kind, body });
  }

  /** @param {string} name */
  refusalsAfter(name) {
    for (const r of V.refusals) {
      if (r.after !== name) continue;
      assert.throws(
        () => this.receive(r.receiver, fromHex(r.from), r.call, r.envelope, fromHex(r.body)),
        (/** @type {unknown} */ e) => e instanceof /** @type {any} */ (REFUSALS)[r.refusal] && !(r.refusal === "bad_body" && e instanceof e2ee.NotForThisDevice),
        r.name,
      );
    }
  }
}

test("the identities' X25519 keys are libsodium's conversions", () => {
  for (const who of ["caller", "callee"]) {
    const i = V.identities[who];
    const kp = ed25519SeedToX25519(fromHex(i.seed));
    assert.equal(toHex(kp.priv), i.x25519_private);
    assert.equal(toHex(kp.pub), i.x25519_public);
    assert.equal(toHex(ed25519IdToX25519(fromHex(i.id))), i.x25519_public);
  }
});

test("the shared e2ee vectors replay byte for byte: every body written, opened or refused as the Python code does", () => {
  const world = new World();
  world.refusalsAfter("start");
  for (const step of V.steps) {
    assert.equal(toHex(encodePlaintext(step.plaintext)), step.plaintext_msgpack, step.name);
    assert.equal(sealPlaintext(step.plaintext).length, step.padded_bytes, step.name);
    const body = world.write(step);
    assert.equal(toHex(body), step.body, step.name);
    for (const [device, outcome] of Object.entries(step.receivers)) {
      const args = /** @type {const} */ ([device, fromHex(step.from), step.call, step.envelope, body]);
      if (outcome === "accept") {
        const opened = world.receive(...args);
        assert.deepEqual(opened.msg, step.plaintext, `${step.name} at ${device}`);
        if (step.sid && (step.body_type === e2ee.ANSWER || step.body_type === e2ee.TRANSPORT)) assert.equal(toHex(/** @type {Uint8Array} */ (opened.sid)), step.sid);
      } else {
        assert.throws(() => world.receive(...args), /** @type {any} */ (REFUSALS)[outcome], `${step.name} at ${device}`);
      }
    }
    world.refusalsAfter(step.name);
  }
});

test("any flipped bit in a body is refused and leaves the session usable", () => {
  const world = new World();
  const steps = V.steps.slice(0, 4); // offer, two early ice, answer a
  for (const step of steps) {
    const body = world.write(step);
    for (const [device, outcome] of Object.entries(step.receivers)) if (outcome === "accept") world.receive(device, fromHex(step.from), step.call, step.envelope, body);
  }
  const t = V.steps.find((/** @type {any} */ s) => s.name === "call1 transport caller ice seq 0") ?? V.steps.find((/** @type {any} */ s) => s.body_type === e2ee.TRANSPORT && s.writer === "caller");
  const body = fromHex(t.body);
  for (const i of [0, 1, 2, 10, 18, 40, body.length - 1]) {
    const bad = body.slice();
    bad[i] ^= 0x01;
    assert.throws(() => world.receive("callee_a", fromHex(t.from), t.call, t.envelope, bad), e2ee.E2eeError, `byte ${i}`);
  }
  assert.deepEqual(world.receive("callee_a", fromHex(t.from), t.call, t.envelope, body).msg, t.plaintext);
});

test("a stored offer replay cache remembers admitted offers across page loads, and a damaged one refuses its window", () => {
  /** @type {Map<string, string>} */
  const m = new Map();
  const storage = { getItem: (/** @type {string} */ k) => m.get(k) ?? null, setItem: (/** @type {string} */ k, /** @type {string} */ v) => void m.set(k, v) };
  const o = { caller: new Uint8Array(32).fill(1), call: new Uint8Array(16).fill(2), ts: 1_000_000, nowS: 1_000_010 };
  new e2ee.StoredOfferReplayCache(storage, "seen").admit(o);
  assert.throws(() => new e2ee.StoredOfferReplayCache(storage, "seen").check(o), e2ee.Replayed);
  assert.doesNotThrow(() => new e2ee.StoredOfferReplayCache(storage, "other").check(o));
  m.set("seen", "{damaged");
  const now = Math.floor(Date.now() / 1000);
  assert.throws(() => new e2ee.StoredOfferReplayCache(storage, "seen").check({ ...o, ts: now - 1, nowS: now }), e2ee.Replayed);
});
