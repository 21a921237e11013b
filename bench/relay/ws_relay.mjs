// A minimal Node.js `ws` relay speaking the same protocol subset as homing's client server
// (handshake, envelopes, deliveries with eid, receipts delivered/queued, ping/pong), for bench/relay only.
// Usage: node ws_relay.mjs PORT [PING_S]   (prints "listening PORT" when ready). With PING_S, every client is sent
// a WebSocket ping every PING_S seconds (the usual `ws` heartbeat; bench/scale compares it with homing's keepalive).
// With WS_RELAY_GOAWAY=URL,URL... in its environment, SIGTERM sends every client a homing `goaway` naming those
// relays (each as a referral card holding only its `ws` URL, which is all bench/scale's load generator reads) and
// closes it with 1001, as a stopping homing node does: bench/scale's goaway storm on bare relays, its anchor.
import crypto from "node:crypto";
import { WebSocketServer } from "ws";
import { decode, encode } from "@msgpack/msgpack";
import { newIdentity, verify, CLIENT_AUTH, NODE_AUTH } from "./common.mjs";

const KINDS = new Set(["call_offer", "call_answer", "call_reject", "call_hangup", "call_ice"]);
const node = newIdentity();
const homes = new Map(); // id hex -> Set(ws)
const wss = new WebSocketServer({ port: Number(process.argv[2] || 0), host: "127.0.0.1", path: "/v1/client",
                                  maxPayload: 128 * 1024, perMessageDeflate: false });

wss.on("connection", (ws) => {
  const nonce = crypto.randomBytes(32);
  let client = null;
  ws.send(encode({ t: "challenge", v: 1, node: node.id, nonce }));
  ws.on("message", (data, isBinary) => {
    let m;
    try { m = decode(data); } catch { ws.send(encode({ t: "error", code: "bad_request" })); return; }
    if (client === null) {
      const id = Buffer.from(m.id || []);
      if (m.t !== "hello" || !verify(id, Buffer.concat([CLIENT_AUTH, node.id, nonce]), Buffer.from(m.sig || []))) {
        ws.send(encode({ t: "error", code: "auth_failed" })); ws.close(4401); return;
      }
      client = id.toString("hex");
      if (!homes.has(client)) homes.set(client, new Set());
      homes.get(client).add(ws);
      ws.send(encode({ t: "welcome", id, sig: node.sign(Buffer.concat([NODE_AUTH, id, Buffer.from(m.nonce)])) }));
      return;
    }
    if (m.t === "ping") { ws.send(encode({ t: "pong" })); return; }
    if (!KINDS.has(m.t) || !(m.to instanceof Uint8Array) || m.to.length !== 32 || typeof m.ref !== "number") {
      ws.send(encode({ t: "error", code: "bad_request" })); return;
    }
    const targets = homes.get(Buffer.from(m.to).toString("hex"));
    const out = encode({ t: m.t, from: Buffer.from(client, "hex"), call: m.call, body: m.body, eid: crypto.randomBytes(16) });
    if (targets) for (const t of targets) t.send(out);
    ws.send(encode({ t: "receipt", ref: m.ref, status: targets ? "delivered" : "queued" }));
  });
  ws.on("close", () => {
    if (client === null) return;
    const s = homes.get(client); s.delete(ws); if (s.size === 0) homes.delete(client);
  });
});
const pingS = Number(process.argv[3] || 0);
if (pingS > 0) setInterval(() => { for (const ws of wss.clients) ws.ping(); }, pingS * 1000).unref();
wss.on("listening", () => console.log(`listening ${wss.address().port}`));
const goawayTo = (process.env.WS_RELAY_GOAWAY || "").split(",").filter(Boolean);
if (goawayTo.length) {
  const nodes = goawayTo.map((ws) => "homing://node/" + Buffer.from(encode({ ws })).toString("base64url"));
  const goaway = encode({ t: "goaway", nodes });
  process.on("SIGTERM", () => {
    wss.close(); // no new connections
    for (const ws of wss.clients) { ws.send(goaway); ws.close(1001, "relay shutting down"); }
    const done = () => process.exit(0);
    setTimeout(done, 5000).unref();
    const poll = setInterval(() => { if (wss.clients.size === 0) { clearInterval(poll); done(); } }, 100);
  });
}
