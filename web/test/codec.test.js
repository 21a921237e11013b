import assert from "node:assert/strict";
import { test } from "node:test";
import { b64uDecode, b64uEncode, toHex } from "../lib/bytes.js";
import { decodeNodeFrame, encodeFrame, envelope, FrameError, pushRegister, pushUnregister } from "../lib/codec.js";
import { fromHex, mapOf, V } from "./vectors.js";

/** @param {Record<string, any>} m */
function expected(m) {
  if (["call_offer", "call_answer", "call_reject", "call_hangup", "call_ice"].includes(m.t)) {
    const { t, from, ...rest } = m;
    return { t: "deliver", kind: t, from, ...rest };
  }
  if (m.t === "receipt") return { t: "receipt", ref: m.ref, status: m.status, reason: m.reason ?? null };
  if (m.t === "error") return { t: "error", code: m.code, ref: m.ref ?? null };
  if (m.t === "challenge") return { t: "challenge", node: m.node, nonce: m.nonce };
  if (m.t === "ok") return { t: "ok", of: m.of, vapid: m.vapid ?? null };
  return m;
}

test("every node frame the Python encoder makes decodes to the same message, msgpack and JSON", () => {
  assert.ok(V.from_node.length >= 20);
  for (const f of V.from_node) {
    const want = expected(mapOf(f.map));
    assert.deepEqual(decodeNodeFrame(fromHex(f.msgpack)), want, `msgpack ${f.map.t}`);
    assert.deepEqual(decodeNodeFrame(f.json), want, `json ${f.map.t}`);
  }
});

test("client frames encode to exactly the Python encoder's bytes (msgpack) and text (JSON)", () => {
  for (const f of V.to_node) {
    const m = mapOf(f.map);
    const map =
      m.t === "hello" || m.t === "ping"
        ? m
        : m.t === "push_register"
          ? pushRegister({ endpoint: m.endpoint, p256dh: m.p256dh, auth: m.auth })
          : m.t === "push_unregister"
            ? pushUnregister()
            : envelope(m.t, m.to, m.call, m.body, m.ref);
    assert.equal(toHex(/** @type {Uint8Array} */ (encodeFrame(map))), f.msgpack, `msgpack ${m.t}`);
    assert.equal(encodeFrame(map, { json: true }), f.json, `json ${m.t}`);
  }
});

test("malformed node frames raise FrameError, never anything else", () => {
  const bad = [
    new Uint8Array([0xc1]),
    new Uint8Array([0x93, 1, 2, 3]),
    "not json",
    "[1,2]",
    '{"t":1}',
    '{"t":"receipt","ref":-1,"status":"delivered"}',
    '{"t":"receipt","ref":1,"status":"bogus"}',
    '{"t":"challenge","node":"AAAA","nonce":"AAAA"}',
    '{"t":"call_offer","from":"AAAA","call":"","body":"","eid":""}',
    '{"t":"goaway","nodes":[1]}',
    '{"t":"ice_servers","ttl":1,"servers":[{"urls":["http://x"]}]}',
    "x".repeat(200_000),
  ];
  for (const b of bad) assert.throws(() => decodeNodeFrame(b), FrameError, String(b).slice(0, 40));
});

test("unknown message types are passed over, not fatal (forward compatibility)", () => {
  assert.deepEqual(decodeNodeFrame('{"t":"future_thing","x":1}'), { t: "unknown", type: "future_thing" });
});

test("ice_servers answers decode", () => {
  const m = decodeNodeFrame(JSON.stringify({ t: "ice_servers", ttl: 3600, servers: [{ urls: ["turn:127.0.0.1:3478?transport=udp"], username: "1:abc", credential: "c2VjcmV0" }] }));
  assert.deepEqual(m, { t: "ice_servers", ttl: 3600, servers: [{ urls: ["turn:127.0.0.1:3478?transport=udp"], username: "1:abc", credential: "c2VjcmV0" }] });
});

test("envelopes over the limits are refused before they are sent", () => {
  const to = new Uint8Array(32);
  assert.throws(() => envelope("call_offer", to, new Uint8Array(0), new Uint8Array(0), 1));
  assert.throws(() => envelope("call_offer", to, new Uint8Array(65), new Uint8Array(0), 1));
  assert.throws(() => envelope("call_offer", to, new Uint8Array(1), new Uint8Array(65537), 1));
  assert.throws(() => envelope("call_offer", to, new Uint8Array(1), new Uint8Array(0), 2 ** 53));
  assert.throws(() => envelope(/** @type {any} */ ("call_bogus"), to, new Uint8Array(1), new Uint8Array(0), 1));
  assert.ok(envelope("call_ice", to, new Uint8Array(64), new Uint8Array(65536), 2 ** 53 - 1));
});

test("base64url round-trips every length", () => {
  for (let n = 0; n < 70; n++) {
    const b = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 255);
    assert.deepEqual(b64uDecode(b64uEncode(b)), b);
    assert.equal(b64uEncode(b), Buffer.from(b).toString("base64url"));
  }
  assert.throws(() => b64uDecode("a+b/"));
});

test("push_register is checked like the node checks it before it is sent", () => {
  const sub = { endpoint: "https://push.example.test/x", p256dh: new Uint8Array(65).fill(4), auth: new Uint8Array(16) };
  assert.ok(pushRegister(sub));
  for (const endpoint of ["http://push.example.test/x", "https://user@push.example.test/x", "https://push.example.test/x#f", "https://push.example.test/ x", "https://" + "a".repeat(1000), "not a url"])
    assert.throws(() => pushRegister({ ...sub, endpoint }), RangeError, endpoint.slice(0, 40));
  assert.throws(() => pushRegister({ ...sub, p256dh: new Uint8Array(64).fill(4) }), RangeError);
  assert.throws(() => pushRegister({ ...sub, p256dh: new Uint8Array(65).fill(2) }), RangeError);
  assert.throws(() => pushRegister({ ...sub, auth: new Uint8Array(15) }), RangeError);
  assert.throws(() => decodeNodeFrame('{"t":"ok","of":"push_register","vapid":"AAAA"}'), FrameError);
});
