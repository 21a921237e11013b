import assert from "node:assert/strict";
import { test } from "node:test";
import { b64uDecode, b64uEncode, toHex } from "../lib/bytes.js";
import { buildTxtQuery, decodeTxt, parseTxtAnswer } from "../lib/dns.js";
import { decodeBounded, DocumentError, isPrivateHost, openNodeList, parseManualEntry, parseNodeCard, plainWsProblem } from "../lib/documents.js";
import { fromHex, V } from "./vectors.js";

const D = V.documents;
const registry = b64uDecode(D.registry_id);

test("a node list signed by the Python registry code verifies in the client", async () => {
  const list = await openNodeList(decodeBounded(fromHex(D.node_list)), [registry], D.now + 10);
  assert.deepEqual(list.nodes.map((n) => b64uEncode(n.id)), D.node_list_ids);
  assert.deepEqual(list.nodes.map((n) => n.ws), D.node_list_ws);
});

test("a node list is refused: untrusted key, expired, issued in the future, one flipped byte", async () => {
  const doc = /** @type {any} */ (decodeBounded(fromHex(D.node_list)));
  await assert.rejects(openNodeList(doc, [new Uint8Array(32)], D.now), /not trusted/);
  await assert.rejects(openNodeList(doc, [registry], D.now + 3601), /expired/);
  await assert.rejects(openNodeList(doc, [registry], D.now - 400), /future/);
  const body = doc.body.slice();
  body[body.length - 3] ^= 1;
  await assert.rejects(openNodeList({ ...doc, body }, [registry], D.now), /does not verify/);
  const sig = doc.sig.slice();
  sig[5] ^= 1;
  await assert.rejects(openNodeList({ ...doc, sig }, [registry], D.now), DocumentError);
});

test("a referral card made by the Python node verifies; a tampered one does not", async () => {
  const card = await parseNodeCard(D.node_card, { nowS: D.now });
  assert.equal(b64uEncode(card.id), D.node_card_id);
  assert.equal(card.ws, "wss://sig.example.test/v1/client");
  assert.equal(card.exp, D.now + 30 * 86400);
  const raw = b64uDecode(D.node_card.slice("homing://node/".length));
  raw[raw.length - 10] ^= 1;
  await assert.rejects(parseNodeCard("homing://node/" + b64uEncode(raw), { nowS: D.now }), DocumentError);
  await assert.rejects(parseNodeCard("https://example.org"), DocumentError);
});

test("cards: expiry and wss:// rules agree with the Python reader on every vector (parse_card)", async () => {
  assert.ok(D.cards.length >= 20);
  for (const v of D.cards) {
    const what = `${v.ok ? "accept" : "refuse"} ${v.error ?? v.ws} at now=${v.now}`;
    if (v.ok) {
      const card = await parseNodeCard(v.uri, { nowS: v.now });
      assert.equal(card.ws, v.ws, what);
      assert.equal(card.exp, v.exp, what);
    } else if (/^card /.test(v.error)) {
      await assert.rejects(parseNodeCard(v.uri, { nowS: v.now }), (e) => e instanceof DocumentError && e.message === v.error, what);
    } else {
      await assert.rejects(parseNodeCard(v.uri, { nowS: v.now }), (e) => e instanceof DocumentError && /'exp'/.test(e.message), what);
    }
  }
});

test("a plain ws:// card to a public host is accepted only when the caller allows it; private hosts as the docs list", async () => {
  const pub = D.cards.find((/** @type {any} */ v) => !v.ok && /plain ws/.test(v.error));
  assert.ok(await parseNodeCard(pub.uri, { nowS: pub.now, allowPlainWs: true }));
  for (const h of ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "10.0.0.1", "172.20.1.1", "192.168.0.1", "169.254.0.1", "[fd00::1]", "[fe80::1:2]", "[::ffff:7f00:1]", "[::ffff:c0a8:101]"])
    assert.equal(isPrivateHost(h), true, h);
  for (const h of ["8.8.8.8", "172.32.0.1", "192.169.0.1", "[2001:db8::1]", "[::ffff:808:808]", "[::]", "example.org", "10.0.0.1.nip.io", "[fc00::1::2]"])
    assert.equal(isPrivateHost(h), false, h);
  assert.equal(plainWsProblem("wss://8.8.8.8/v1/client"), "");
  assert.equal(plainWsProblem("ws://0x7f.1/v1/client"), ""); // URL parsing: the browser would connect to 127.0.0.1
  assert.match(plainWsProblem("ws://[::ffff:8.8.8.8]/v1/client"), /public host/);
});

test("manual entries need a pinned id and default the path", () => {
  const id = D.node_card_id;
  assert.deepEqual(parseManualEntry(`wss://sig.example.org#${id}`), { ws: "wss://sig.example.org/v1/client", id: b64uDecode(id) });
  assert.equal(parseManualEntry(`ws://127.0.0.1:7400/v1/client#${id}`).ws, "ws://127.0.0.1:7400/v1/client");
  assert.throws(() => parseManualEntry("wss://sig.example.org"), DocumentError);
  assert.throws(() => parseManualEntry(`https://sig.example.org#${id}`), DocumentError);
});

test("the DoH query is byte for byte what the node's discovery (dnspython, pad=128) sends", () => {
  const q = buildTxtQuery(D.doh_query_name);
  assert.equal(toHex(q), D.doh_query);
  assert.equal(q.length % 128, 0);
});

test("a DoH answer with a CNAME and foreign TXT records yields the signed list", async () => {
  const records = parseTxtAnswer(fromHex(D.doh_answer), D.doh_query_name);
  assert.equal(records.length, D.txt_records.length + 1);
  const doc = await decodeTxt(records);
  const list = await openNodeList(doc, [registry], D.now);
  assert.deepEqual(list.nodes.map((n) => b64uEncode(n.id)), D.node_list_ids);
});

test("TXT chunks: missing, duplicated, mixed or tampered chunks are refused", async () => {
  /** @type {Uint8Array[][]} */
  const recs = D.txt_records.map((/** @type {string[]} */ r) => r.map(fromHex));
  await decodeTxt(recs);
  await assert.rejects(decodeTxt([]), /no homing TXT/);
  await assert.rejects(decodeTxt([...recs, recs[0]]), /twice/);
  if (recs.length > 1) await assert.rejects(decodeTxt(recs.slice(1)), /missing/);
  const tampered = recs.map((r) => r.map((s) => s.slice()));
  const first = tampered[0][0];
  first[40] = first[40] === 65 ? 66 : 65; // one base64url character of the payload
  await assert.rejects(decodeTxt(tampered), DocumentError);
});

/**
 * A DNS answer: header (qd 1, `answers` TXT records with empty data), then `question` (a name's wire bytes and its
 * type/class) and each answer record owned by `owner` (wire bytes, usually a compression pointer).
 * @param {Uint8Array} question @param {Uint8Array} owner @param {number} answers
 */
function dnsAnswer(question, owner, answers) {
  const head = new Uint8Array([0, 0, 0x81, 0x80, 0, 1, answers >> 8, answers & 255, 0, 0, 0, 0]);
  const typeClass = new Uint8Array([0, 16, 0, 1]);
  const record = new Uint8Array([...owner, 0, 16, 0, 1, 0, 0, 1, 44, 0, 0]);
  return new Uint8Array([...head, ...question, ...typeClass, ...Array.from({ length: answers }, () => [...record]).flat()]);
}

test("DNS names longer than 255 bytes or with forward compression pointers are refused, not walked", () => {
  // A resolver's 64 KiB answer whose ~2,700 records each point at a 32 KiB name kept the page's only thread busy
  // for about 10 s (past discovery's 8 s deadline, every other source frozen meanwhile); dnspython refuses both.
  const long = new Uint8Array(8001);
  for (let i = 0; i < 4000; i++) long.set([1, 97], 2 * i); // 4,000 labels "a", then the root
  const started = performance.now();
  assert.throws(() => parseTxtAnswer(dnsAnswer(long, new Uint8Array([0xc0, 12]), 200), "a"), /longer than 255 bytes/);
  assert.ok(performance.now() - started < 1000);
  // the question's name is a pointer to a name after it (the first answer's owner): forward, refused
  const forward = new Uint8Array([0xc0, 12 + 2 + 4]);
  assert.throws(() => parseTxtAnswer(dnsAnswer(forward, new Uint8Array([1, 97, 0]), 1), "a"), /compression pointer/);
  // 255 bytes on the wire is the most a name may have: 127 labels "a" and the root
  const most = new Uint8Array(255);
  for (let i = 0; i < 127; i++) most.set([1, 97], 2 * i);
  assert.equal(parseTxtAnswer(dnsAnswer(most, new Uint8Array([0xc0, 12]), 1), Array(127).fill("a").join(".")).length, 1);
  const over = new Uint8Array(257);
  for (let i = 0; i < 128; i++) over.set([1, 97], 2 * i);
  assert.throws(() => parseTxtAnswer(dnsAnswer(over, new Uint8Array([0xc0, 12]), 1), "a"), /longer than 255 bytes/);
});
