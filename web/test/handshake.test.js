import assert from "node:assert/strict";
import { test } from "node:test";
import { b64uEncode, toHex } from "../lib/bytes.js";
import { CHALLENGE_AHEAD_MAX_MS, CHALLENGE_DATE_HORIZON_MS, clientAuthBytes, connect, HandshakeError, nodeAuthBytes } from "../lib/connection.js";
import { hasWebCryptoEd25519, setWebCryptoEd25519, verify } from "../lib/ed25519.js";
import { Identity } from "../lib/identity.js";
import { fromHex, V } from "./vectors.js";

const H = V.handshake;

for (const webcrypto of [true, false]) {
  test(`handshake bytes and signatures match the Python node (${webcrypto ? "WebCrypto" : "@noble"} Ed25519)`, async () => {
    if (webcrypto) assert.ok(await hasWebCryptoEd25519(), "Node 20 has WebCrypto Ed25519");
    setWebCryptoEd25519(webcrypto);
    try {
      const client = await Identity.fromSeed(fromHex(H.client_seed));
      assert.equal(toHex(client.id), H.client_id);
      const msg = clientAuthBytes(fromHex(H.node_id), fromHex(H.node_nonce));
      assert.equal(toHex(msg), H.client_auth_message);
      assert.equal(msg.length, 85);
      assert.equal(toHex(await client.sign(msg)), H.hello_sig);
      const nmsg = nodeAuthBytes(fromHex(H.client_id), fromHex(H.client_nonce));
      assert.equal(toHex(nmsg), H.node_auth_message);
      assert.equal(nmsg.length, 83);
      assert.ok(await verify(fromHex(H.node_id), nmsg, fromHex(H.welcome_sig)));
      const forged = fromHex(H.welcome_sig);
      forged[0] ^= 1;
      assert.equal(await verify(fromHex(H.node_id), nmsg, forged), false);
      assert.equal(await verify(fromHex(H.client_id), nmsg, fromHex(H.welcome_sig)), false, "another key");
    } finally {
      setWebCryptoEd25519(true);
    }
  });
}

test("generated identities sign verifiable messages; non-extractable keys refuse a backup", async () => {
  const a = await Identity.generate();
  const sig = await a.sign(new Uint8Array([1, 2, 3]));
  assert.ok(await verify(a.id, new Uint8Array([1, 2, 3]), sig));
  assert.equal(a.idText.length, 43);
  assert.equal(a.exportable, false);
  await assert.rejects(a.exportBackup("correct horse battery"), /not extractable/);
});

test("a passphrase backup restores the same id; a wrong passphrase or tampering is refused", async () => {
  const a = await Identity.generate({ extractable: true });
  const backup = await a.exportBackup("correct horse battery", { iterations: 100_000 });
  assert.match(backup, /^homing-backup:/);
  const b = await Identity.importBackup(backup, "correct horse battery");
  assert.equal(b.idText, a.idText);
  await assert.rejects(Identity.importBackup(backup, "wrong horse battery"), /wrong passphrase/);
  const doc = JSON.parse(Buffer.from(backup.slice(14), "base64url").toString());
  doc.id = (await Identity.generate()).idText;
  const swapped = "homing-backup:" + Buffer.from(JSON.stringify(doc)).toString("base64url");
  await assert.rejects(Identity.importBackup(swapped, "correct horse battery"), /wrong passphrase/);
  await assert.rejects(Identity.importBackup("homing-backup:!!", "x"), /not a homing backup/);
});

/** A socket that never touches the network: the test plays a hostile node's side through its handlers. */
class HostileNodeSocket {
  /** @type {HostileNodeSocket[]} */
  static made = [];
  constructor() {
    /** @type {unknown[]} */
    this.sent = [];
    /** @type {((ev: any) => void) | null} */
    this.onmessage = null;
    /** @type {((ev: any) => void) | null} */
    this.onclose = null;
    /** @type {(() => void) | null} */
    this.onerror = null;
    HostileNodeSocket.made.push(this);
  }
  /** @param {unknown} data */
  send(data) {
    this.sent.push(data);
  }
  close() {}
}

/** A challenge nonce dated `aheadMs` after this machine's clock: 8 bytes of big-endian unix ms, 24 random. */
function nonceDated(/** @type {number} */ aheadMs) {
  const nonce = new Uint8Array(32);
  new DataView(nonce.buffer).setBigUint64(0, BigInt(Date.now() + aheadMs));
  return nonce;
}

// The hello signature is a home claim dated by the node's nonce (docs/protocol.md, "Home claims"). Before, the page
// signed any date, so a hostile node it met once could collect claims dated days ahead and use each when its date
// came, claiming to be the page's home long after it had left. The same bound as the Python client (10 minutes).
// Past CHALLENGE_DATE_HORIZON_MS is what a node that draws its whole nonce at random sends, as the client protocol
// allows, but for about 2 in 10 million: such a claim never becomes good, and such nodes must stay reachable.
for (const [aheadMs, signs] of /** @type {[number, boolean][]} */ ([[0, true], [CHALLENGE_AHEAD_MAX_MS - 60_000, true], [CHALLENGE_AHEAD_MAX_MS + 60_000, false], [86_400_000, false], [CHALLENGE_DATE_HORIZON_MS - 86_400_000, false], [CHALLENGE_DATE_HORIZON_MS + 86_400_000, true]])) {
  test(`the page ${signs ? "signs" : "does not sign"} a challenge dated ${aheadMs / 1000} s ahead of its clock`, async () => {
    const me = await Identity.generate();
    const node = new Uint8Array(32).fill(9);
    HostileNodeSocket.made = [];
    const pending = connect("ws://127.0.0.1:9/v1/client", me, node, { json: true, timeoutMs: 300, WebSocketImpl: /** @type {any} */ (HostileNodeSocket) });
    const ws = HostileNodeSocket.made[0];
    ws.onmessage?.({ data: JSON.stringify({ t: "challenge", v: 1, node: b64uEncode(node), nonce: b64uEncode(nonceDated(aheadMs)) }) });
    await assert.rejects(pending, HandshakeError); // the hostile node never welcomes: either way no connection
    const hellos = ws.sent.filter((s) => typeof s === "string" && JSON.parse(s).t === "hello");
    assert.equal(hellos.length, signs ? 1 : 0);
  });
}
