// End-to-end encryption of call bodies, docs/e2ee.md byte for byte: Noise_KK per call (offer = message 1,
// answer/reject = message 2, then transport bodies with explicit sequence numbers), Noise_K for the caller's early
// bodies and for "elsewhere" notices to one's own devices, fixed padded sizes, an offer replay cache.
// Pure: the clock (`nowS`) and `randomBytes` are passed in.

import { concat, equal, utf8 } from "./bytes.js";
import { ed25519IdToX25519, HandshakeState, hashN, NoiseError } from "./noise.js";
import { BadPlaintext, E2eeError, Expired, NotForThisDevice, openPlaintext, Replayed, sealPlaintext } from "./e2ee_plaintext.js";

export { BadPlaintext, E2eeError, Expired, NotForThisDevice, Replayed };
export const VERSION = 1;
export const OFFER = 1;
export const ANSWER = 2;
export const EARLY = 3;
export const TRANSPORT = 4;
export const SELF = 5;
export const CALL_ID_MAX_BYTES = 64;
export const BODY_MAX_BYTES = 65536;
export const SID_BYTES = 8;
export const SEQ_BYTES = 8;
export const SESSIONS_MAX = 8;
export const OFFER_MAX_AGE_S = 300;
export const OFFER_MAX_FUTURE_S = 120;
export const OFFER_CACHE_ENTRIES_MAX = 4096;
const SEQ_MAX = 2n ** 63n - 1n;
const CALL_PROLOGUE = utf8("homing/v1/e2ee/call");
const EARLY_PROLOGUE = utf8("homing/v1/e2ee/early");
const SELF_PROLOGUE = utf8("homing/v1/e2ee/self");

/** @type {Record<number, Set<string>>} */
export const BODY_KINDS = {
  [OFFER]: new Set(["offer"]),
  [ANSWER]: new Set(["answer", "reject"]),
  [EARLY]: new Set(["ice", "hangup"]),
  [TRANSPORT]: new Set(["ice", "hangup", "reoffer", "reanswer"]),
  [SELF]: new Set(["elsewhere"]),
};
/** @type {Record<string, string>} */
export const ENVELOPE_KIND = {
  offer: "call_offer",
  answer: "call_answer",
  reject: "call_reject",
  ice: "call_ice",
  hangup: "call_hangup",
  reoffer: "call_offer",
  reanswer: "call_answer",
  elsewhere: "call_hangup",
};

/**
 * @typedef {import("./e2ee_plaintext.js").Plaintext} Plaintext
 * @typedef {import("./noise.js").Keypair} Keypair
 * @typedef {import("./noise.js").RandomBytes} RandomBytes
 * @typedef {{sid: Uint8Array | null, msg: Plaintext}} Opened
 */

/** @param {Uint8Array} body */
export function bodyType(body) {
  if (body.length < 2 || body[0] !== VERSION) throw new E2eeError("not a homing e2ee v1 body");
  if (!(body[1] in BODY_KINDS)) throw new E2eeError(`unknown body type ${body[1]}`);
  return body[1];
}

/** @param {Uint8Array} call */
const L = (call) => concat(new Uint8Array([call.length]), call);
/** @param {bigint | number} seq */
function seqBytes(seq) {
  const out = new Uint8Array(SEQ_BYTES);
  new DataView(out.buffer).setBigUint64(0, BigInt(seq));
  return out;
}
/** @param {Uint8Array} b @param {number} off */
const readSeq = (b, off) => new DataView(b.buffer, b.byteOffset + off, SEQ_BYTES).getBigUint64(0);

/** @param {Uint8Array} call @param {Uint8Array} caller @param {Uint8Array} callee */
export const callPrologue = (call, caller, callee) => concat(CALL_PROLOGUE, L(call), caller, callee);
/** @param {Uint8Array} offerBody */
export const offerDigest = (offerBody) => hashN(offerBody, 32);
/** @param {Uint8Array} call @param {Uint8Array} caller @param {Uint8Array} callee @param {Uint8Array} digest @param {bigint | number} seq */
export const earlyPrologue = (call, caller, callee, digest, seq) => concat(EARLY_PROLOGUE, L(call), caller, callee, digest, seqBytes(seq));
/** @param {Uint8Array} call @param {Uint8Array} caller @param {Uint8Array} callee @param {Uint8Array} digest */
export const selfPrologue = (call, caller, callee, digest) => concat(SELF_PROLOGUE, L(call), caller, callee, digest);

/** @param {Uint8Array} call */
function checkCall(call) {
  if (!(call instanceof Uint8Array) || call.length < 1 || call.length > CALL_ID_MAX_BYTES) throw new E2eeError(`a call id is 1..${CALL_ID_MAX_BYTES} bytes`);
}

/** @param {number} bodyKind @param {string} kind @param {Plaintext} msg */
function checkEnvelope(bodyKind, kind, msg) {
  if (!BODY_KINDS[bodyKind].has(msg.k)) throw new E2eeError(`a ${msg.k} cannot travel in body type ${bodyKind}`);
  if (ENVELOPE_KIND[msg.k] !== kind) throw new E2eeError(`a ${msg.k} travels in ${ENVELOPE_KIND[msg.k]}, not ${kind}`);
}

/** @param {Uint8Array} body @param {string} kind @param {number} expected @param {number} size */
function header(body, kind, expected, size) {
  if (body.length > BODY_MAX_BYTES) throw new E2eeError(`body over ${BODY_MAX_BYTES} bytes`);
  if (bodyType(body) !== expected) throw new E2eeError(`expected body type ${expected}, got ${body[1]}`);
  if (body.length < size) throw new E2eeError("body truncated");
  if (!Object.values(ENVELOPE_KIND).includes(kind)) throw new E2eeError(`unknown envelope kind ${kind}`);
}

/** @param {string} what @param {() => Uint8Array} fn */
function authenticated(what, fn) {
  try {
    return fn();
  } catch (e) {
    if (e instanceof NoiseError) throw new E2eeError(`${what} does not authenticate`);
    throw e;
  }
}

class Session {
  /** @param {HandshakeState} hs */
  constructor(hs) {
    const [send, recv] = hs.split();
    this.hash = hs.handshakeHash;
    this.sid = this.hash.slice(0, SID_BYTES);
    this.send = { cipher: send, last: -1n };
    this.recv = { cipher: recv, last: -1n };
  }

  /** @param {Plaintext} msg */
  seal(msg) {
    if (!BODY_KINDS[TRANSPORT].has(msg.k)) throw new Error(`a ${msg.k} is not a transport message`);
    const seq = this.send.last + 1n;
    if (seq > SEQ_MAX) throw new Error("sequence numbers exhausted: start a new call");
    const head = concat(new Uint8Array([VERSION, TRANSPORT]), this.sid, seqBytes(seq));
    this.send.cipher.setNonce(seq);
    const out = concat(head, this.send.cipher.encryptWithAd(head, sealPlaintext(msg)));
    this.send.last = seq;
    return out;
  }

  /** @param {Uint8Array} body @param {string} kind @returns {Opened} */
  open(body, kind) {
    const head = 2 + SID_BYTES + SEQ_BYTES;
    header(body, kind, TRANSPORT, head + 16);
    if (!equal(body.subarray(2, 2 + SID_BYTES), this.sid)) throw new NotForThisDevice("transport body of another session");
    const seq = readSeq(body, 2 + SID_BYTES);
    if (seq <= this.recv.last || seq > SEQ_MAX) throw new Replayed(`sequence ${seq} not above ${this.recv.last}: replayed or reordered`);
    const cipher = this.recv.cipher.copy();
    cipher.setNonce(seq);
    const padded = authenticated("transport body", () => cipher.decryptWithAd(body.subarray(0, head), body.subarray(head)));
    const msg = openPlaintext(padded);
    checkEnvelope(TRANSPORT, kind, msg);
    this.recv.last = seq;
    return { sid: this.sid, msg };
  }
}

/** @param {Uint8Array} id */
function peerStatic(id) {
  if (id.length !== 32) throw new E2eeError("an id is 32 bytes");
  try {
    return ed25519IdToX25519(id);
  } catch {
    throw new E2eeError("the peer id has no X25519 form");
  }
}

/** @type {RandomBytes} */
const noRandom = () => {
  throw new Error("a reader draws no randomness");
};

/** @param {{s: Keypair, rs: Uint8Array, prologue: Uint8Array, message: Uint8Array}} o */
function openOneWay(o) {
  const hs = new HandshakeState({ pattern: "K", initiator: false, prologue: o.prologue, s: o.s, rs: o.rs, randomBytes: noRandom });
  return authenticated("one-way body", () => hs.readMessage(o.message));
}

/** Offers admitted recently (docs/e2ee.md "The call", step 2): a time window and a cache of (caller, call). */
export class OfferReplayCache {
  constructor({ entriesMax = OFFER_CACHE_ENTRIES_MAX, maxAgeS = OFFER_MAX_AGE_S, maxFutureS = OFFER_MAX_FUTURE_S } = {}) {
    this.entriesMax = entriesMax;
    this.maxAgeS = maxAgeS;
    this.maxFutureS = maxFutureS;
    this.watermark = -1;
    /** @type {Map<string, number>} */
    this.seen = new Map();
  }

  /** @param {{caller: Uint8Array, call: Uint8Array, ts: number, nowS: number}} o */
  check({ caller, call, ts, nowS }) {
    if (ts < nowS - this.maxAgeS || ts > nowS + this.maxFutureS) throw new Expired(`offer ts ${ts} outside the window`);
    if (ts <= this.watermark) throw new Replayed("offer older than the replay cache remembers");
    if (this.seen.has(key(caller, call))) throw new Replayed("offer for this call was already received");
  }

  /** @param {{caller: Uint8Array, call: Uint8Array, ts: number, nowS: number}} o */
  admit(o) {
    this.check(o);
    for (const [k, ts] of this.seen) if (ts < o.nowS - this.maxAgeS) this.seen.delete(k);
    while (this.seen.size >= this.entriesMax) {
      let oldest = "";
      let oldestTs = Infinity;
      for (const [k, ts] of this.seen) if (ts < oldestTs) [oldest, oldestTs] = [k, ts];
      this.seen.delete(oldest);
      this.watermark = Math.max(this.watermark, oldestTs);
    }
    this.seen.set(key(o.caller, o.call), o.ts);
  }
}

/**
 * Keep an OfferReplayCache across page loads in a Storage-like object (localStorage): a reload must not forget
 * which offers were admitted, or a node could deliver one again within its window and it would ring again.
 * An admission is written at once, unless the last write was less than `writeDelayMs` ago (a flood): then the writes
 * are coalesced, and the page's `pagehide` writes what is pending.
 */
export class StoredOfferReplayCache extends OfferReplayCache {
  /**
   * @param {{getItem(k: string): string | null, setItem(k: string, v: string): void}} storage
   * @param {string} storageKey
   * @param {{entriesMax?: number, maxAgeS?: number, maxFutureS?: number, writeDelayMs?: number}} [opts]
   */
  constructor(storage, storageKey, opts = {}) {
    super(opts);
    this.storage = storage;
    this.storageKey = storageKey;
    this.writeDelayMs = opts.writeDelayMs ?? 250;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.writeTimer = null;
    this.writtenAt = -Infinity;
    globalThis.addEventListener?.("pagehide", () => this.writeTimer && this.flush());
    try {
      const doc = JSON.parse(storage.getItem(storageKey) ?? "null");
      if (Number.isSafeInteger(doc?.watermark)) this.watermark = doc.watermark;
      if (Array.isArray(doc?.seen))
        for (const e of doc.seen.slice(-this.entriesMax))
          if (Array.isArray(e) && typeof e[0] === "string" && e[0].length <= 2 * (32 + 64) + 1 && Number.isSafeInteger(e[1])) this.seen.set(e[0], e[1]);
    } catch {
      // damaged: start empty, but refuse every offer of the window it may have covered
      this.watermark = Math.floor(Date.now() / 1000);
    }
  }

  /** @param {{caller: Uint8Array, call: Uint8Array, ts: number, nowS: number}} o */
  admit(o) {
    super.admit(o);
    if (Date.now() - this.writtenAt >= this.writeDelayMs) this.flush();
    else this.writeTimer ??= setTimeout(() => this.flush(), this.writeDelayMs);
  }

  flush() {
    if (this.writeTimer) clearTimeout(this.writeTimer);
    this.writeTimer = null;
    this.writtenAt = Date.now();
    try {
      this.storage.setItem(this.storageKey, JSON.stringify({ watermark: this.watermark, seen: [...this.seen] }));
    } catch {
      /* storage full or gone: the cache still works for this page's life */
    }
  }
}

/** @param {Uint8Array} a @param {Uint8Array} b */
const key = (a, b) => Array.from(a, (x) => x.toString(16).padStart(2, "0")).join("") + "/" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The caller's side of one call. */
export class OutgoingCall {
  /** @param {{identity: {id: Uint8Array, x25519: Keypair}, callee: Uint8Array, call: Uint8Array, randomBytes: RandomBytes, sessionsMax?: number}} o */
  constructor(o) {
    checkCall(o.call);
    this.call = o.call;
    this.caller = o.identity.id;
    this.callee = o.callee;
    this.s = o.identity.x25519;
    this.rs = peerStatic(o.callee);
    this.randomBytes = o.randomBytes;
    this.hs = new HandshakeState({ pattern: "KK", initiator: true, prologue: callPrologue(o.call, this.caller, o.callee), s: this.s, rs: this.rs, randomBytes: o.randomBytes });
    /** @type {Uint8Array | null} */
    this.digest = null;
    this.earlySeq = -1n;
    /** @type {Map<string, Session>} */
    this.sessions = new Map();
    this.sessionsMax = o.sessionsMax ?? SESSIONS_MAX;
  }

  /** @param {import("./e2ee_plaintext.js").OfferMsg} offer */
  offer(offer) {
    if (this.digest) throw new Error("the offer was already written");
    const body = concat(new Uint8Array([VERSION, OFFER]), this.hs.writeMessage(sealPlaintext(offer)));
    this.digest = offerDigest(body);
    return body;
  }

  /** @param {Plaintext} msg an ice or hangup before any answer */
  early(msg) {
    if (!this.digest) throw new Error("early messages follow the offer");
    if (!BODY_KINDS[EARLY].has(msg.k)) throw new Error(`a ${msg.k} is not an early message`);
    const seq = this.earlySeq + 1n;
    const prologue = earlyPrologue(this.call, this.caller, this.callee, this.digest, seq);
    const hs = new HandshakeState({ pattern: "K", initiator: true, prologue, s: this.s, rs: this.rs, randomBytes: this.randomBytes });
    const body = concat(new Uint8Array([VERSION, EARLY]), seqBytes(seq), hs.writeMessage(sealPlaintext(msg)));
    this.earlySeq = seq;
    return body;
  }

  /** @param {Uint8Array} sid @param {Plaintext} msg */
  seal(sid, msg) {
    const s = this.sessions.get(key(sid, new Uint8Array(0)));
    if (!s) throw new Error("no such session");
    return s.seal(msg);
  }

  /** @param {{sender: Uint8Array, kind: string, body: Uint8Array}} o @returns {Opened} */
  open({ sender, kind, body }) {
    if (!equal(sender, this.callee)) throw new E2eeError("body is not from the callee of this call");
    if (!this.digest) throw new Error("no offer was sent");
    if (bodyType(body) === TRANSPORT) {
      if (body.length < 2 + SID_BYTES) throw new E2eeError("body truncated");
      const s = this.sessions.get(key(body.subarray(2, 2 + SID_BYTES), new Uint8Array(0)));
      if (!s) throw new NotForThisDevice("transport body of no session of this call");
      return s.open(body, kind);
    }
    header(body, kind, ANSWER, 2 + 32 + 16);
    const hs = this.hs.copy();
    const padded = authenticated("answer", () => hs.readMessage(body.subarray(2)));
    const msg = openPlaintext(padded);
    checkEnvelope(ANSWER, kind, msg);
    const session = new Session(hs);
    const k = key(session.sid, new Uint8Array(0));
    if (this.sessions.has(k)) throw new Replayed("this answer was already accepted");
    if (this.sessions.size >= this.sessionsMax) throw new E2eeError("too many answers for one call");
    this.sessions.set(k, session);
    return { sid: session.sid, msg };
  }
}

/** One callee device's side of one call. Made by `IncomingCall.fromOffer`. */
export class IncomingCall {
  /** @param {{identity: {id: Uint8Array, x25519: Keypair}, caller: Uint8Array, call: Uint8Array, hs: HandshakeState, digest: Uint8Array, randomBytes: RandomBytes}} o */
  constructor(o) {
    this.call = o.call;
    this.caller = o.caller;
    this.callee = o.identity.id;
    this.s = o.identity.x25519;
    this.rs = peerStatic(o.caller);
    this.hs = o.hs;
    this.digest = o.digest;
    this.randomBytes = o.randomBytes;
    this.earlyLast = -1n;
    /** @type {Session | null} */
    this.session = null;
    this.elsewhereSeen = false;
  }

  /**
   * @param {{identity: {id: Uint8Array, x25519: Keypair}, sender: Uint8Array, call: Uint8Array, kind: string, body: Uint8Array,
   *   nowS: number, replay: OfferReplayCache, randomBytes: RandomBytes}} o
   * @returns {[IncomingCall, import("./e2ee_plaintext.js").OfferMsg]}
   */
  static fromOffer(o) {
    checkCall(o.call);
    header(o.body, o.kind, OFFER, 2 + 32 + 16);
    const hs = new HandshakeState({ pattern: "KK", initiator: false, prologue: callPrologue(o.call, o.sender, o.identity.id), s: o.identity.x25519, rs: peerStatic(o.sender), randomBytes: o.randomBytes });
    const padded = authenticated("offer", () => hs.readMessage(o.body.subarray(2)));
    const msg = openPlaintext(padded);
    checkEnvelope(OFFER, o.kind, msg);
    const offer = /** @type {import("./e2ee_plaintext.js").OfferMsg} */ (msg);
    o.replay.admit({ caller: o.sender, call: o.call, ts: offer.ts, nowS: o.nowS });
    return [new IncomingCall({ identity: o.identity, caller: o.sender, call: o.call, hs, digest: offerDigest(o.body), randomBytes: o.randomBytes }), offer];
  }

  get sid() {
    return this.session?.sid ?? null;
  }

  /** @param {Plaintext} msg an answer or reject */
  answer(msg) {
    if (this.session) throw new Error("this device already answered");
    if (!BODY_KINDS[ANSWER].has(msg.k)) throw new Error(`a ${msg.k} is not an answer`);
    const body = concat(new Uint8Array([VERSION, ANSWER]), this.hs.writeMessage(sealPlaintext(msg)));
    this.session = new Session(this.hs);
    return body;
  }

  /** The body of a `call_hangup` to this device's own id. @param {"answered"|"rejected"} how */
  elsewhere(how) {
    const prologue = selfPrologue(this.call, this.caller, this.callee, this.digest);
    const hs = new HandshakeState({ pattern: "K", initiator: true, prologue, s: this.s, rs: this.s.pub, randomBytes: this.randomBytes });
    this.elsewhereSeen = true;
    return concat(new Uint8Array([VERSION, SELF]), hs.writeMessage(sealPlaintext({ k: "elsewhere", how })));
  }

  /** @param {Plaintext} msg */
  seal(msg) {
    if (!this.session) throw new Error("answer first");
    return this.session.seal(msg);
  }

  /** @param {{sender: Uint8Array, kind: string, body: Uint8Array}} o @returns {Opened} */
  open({ sender, kind, body }) {
    const btype = bodyType(body);
    if (btype === SELF) return this.openSelf(sender, kind, body);
    if (!equal(sender, this.caller)) throw new E2eeError("body is not from the caller of this call");
    if (btype === TRANSPORT) {
      if (!this.session) throw new NotForThisDevice("this device has not answered");
      return this.session.open(body, kind);
    }
    header(body, kind, EARLY, 2 + SEQ_BYTES + 32 + 16);
    const seq = readSeq(body, 2);
    if (seq <= this.earlyLast || seq > SEQ_MAX) throw new Replayed(`early sequence ${seq} not above ${this.earlyLast}`);
    const prologue = earlyPrologue(this.call, this.caller, this.callee, this.digest, seq);
    const msg = openPlaintext(openOneWay({ s: this.s, rs: this.rs, prologue, message: body.subarray(2 + SEQ_BYTES) }));
    checkEnvelope(EARLY, kind, msg);
    this.earlyLast = seq;
    return { sid: null, msg };
  }

  /** @param {Uint8Array} sender @param {string} kind @param {Uint8Array} body @returns {Opened} */
  openSelf(sender, kind, body) {
    if (!equal(sender, this.callee)) throw new E2eeError("an elsewhere notice comes from our own id");
    header(body, kind, SELF, 2 + 32 + 16);
    if (this.elsewhereSeen) throw new Replayed("an elsewhere notice for this call was already seen or sent");
    const prologue = selfPrologue(this.call, this.caller, this.callee, this.digest);
    const msg = openPlaintext(openOneWay({ s: this.s, rs: this.s.pub, prologue, message: body.subarray(2) }));
    checkEnvelope(SELF, kind, msg);
    this.elsewhereSeen = true;
    return { sid: null, msg };
  }
}
