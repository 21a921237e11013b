// Load generator for bench/relay: connects homing v1 clients (msgpack) and measures one mode, printing JSON.
//   latency:    1 pair, the caller sends at --rate msg/s for --duration s; one-way latency p50/p99 (ms)
//   throughput: --pairs pairs, each caller keeps --window envelopes in flight; delivered msg/s
//   idle:       --conns authenticated idle connections; RSS of --pid before and after (KiB per connection)
// --url may be repeated: pair i's caller uses url[i % n] and its callee url[(i + 1) % n] (cross-node runs).
import fs from "node:fs";
import WebSocket from "ws";
import { decode, encode } from "@msgpack/msgpack";
import { newIdentity, verify, CLIENT_AUTH, NODE_AUTH } from "./common.mjs";

const args = { url: [], mode: "throughput", pairs: 50, rate: 1000, duration: 5, window: 64, conns: 1000, pid: 0, body: 1000 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ""), v = process.argv[i + 1];
  if (k === "url") args.url.push(v); else if (k === "pid") args.pid = v; else args[k] = ["mode", "stamps"].includes(k) ? v : Number(v);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(url) {
  return new Promise((resolve, reject) => {
    const me = newIdentity();
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.binaryType = "nodebuffer";
    let nodeId = null;
    const nonce = Buffer.alloc(32, 7);
    ws.on("error", reject);
    ws.on("close", (code) => reject(new Error(`closed ${code} during the handshake`)));
    setTimeout(() => reject(new Error("handshake timed out")), 30000).unref();
    ws.on("message", function first(data) {
      const m = decode(data);
      if (m.t === "challenge") {
        nodeId = Buffer.from(m.node);
        ws.send(encode({ t: "hello", id: me.id, nonce, sig: me.sign(Buffer.concat([CLIENT_AUTH, nodeId, Buffer.from(m.nonce)])) }));
      } else if (m.t === "welcome") {
        if (!verify(nodeId, Buffer.concat([NODE_AUTH, me.id, nonce]), Buffer.from(m.sig))) reject(new Error("bad welcome"));
        ws.off("message", first);
        resolve({ ws, id: me.id });
      } else reject(new Error(`handshake: got ${m.t}`));
    });
  });
}

function percentile(sorted, p) { return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null; }

async function pairs(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const callee = await connect(args.url[(i + 1) % args.url.length]);
    const caller = await connect(args.url[i % args.url.length]);
    out.push({ caller, callee });
  }
  await sleep(200);
  return out;
}

async function latency() {
  // The clock is read as late as possible before the frame is written (the stamp is patched into the encoded
  // frame) and as early as possible when it arrives (before decoding), and the pacing loop yields to the event
  // loop before every send, so deliveries are never left waiting behind a burst of sends: what is measured is
  // the server, not this process.
  const [{ caller, callee }] = await pairs(1);
  const samples = [], stamps = []; // --stamps FILE: each envelope's send and receive times (ns, CLOCK_MONOTONIC)
  callee.ws.on("message", (data) => {
    const now = process.hrtime.bigint();
    const m = decode(data);
    const sent = Buffer.from(m.body).readBigUInt64BE(0);
    samples.push(Number(now - sent) / 1e6);
    if (args.stamps) stamps.push(`${sent} ${now}`);
  });
  caller.ws.on("message", () => {});
  const marker = Buffer.from("homing:stamp-at!");
  const body = Buffer.alloc(args.body);
  marker.copy(body, 0);
  const total = args.rate * args.duration, start = performance.now();
  const immediate = () => new Promise((r) => setImmediate(r));
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / args.rate;
    const wait = due - performance.now();
    await (wait >= 1 ? sleep(wait) : immediate());
    const frame = encode({ t: "call_ice", to: callee.id, call: Buffer.from("c1"), body, ref: i });
    const at = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    at.writeBigUInt64BE(process.hrtime.bigint(), at.indexOf(marker));
    caller.ws.send(at);
  }
  await sleep(500);
  if (args.stamps) fs.writeFileSync(args.stamps, stamps.join("\n") + "\n");
  samples.sort((a, b) => a - b);
  return { mode: "latency", rate: args.rate, sent: total, received: samples.length,
           p50_ms: percentile(samples, 0.5), p90_ms: percentile(samples, 0.9), p99_ms: percentile(samples, 0.99),
           p999_ms: percentile(samples, 0.999), max_ms: samples.length ? samples[samples.length - 1] : null };
}

async function throughput() {
  const ps = await pairs(args.pairs);
  let delivered = 0, measuring = false, stop = false;
  const body = Buffer.alloc(args.body);
  for (const { caller, callee } of ps) {
    let ref = 0, inflight = 0;
    const frame = () => encode({ t: "call_ice", to: callee.id, call: Buffer.from("c1"), body, ref: ref++ });
    const pump = () => { while (!stop && inflight < args.window) { inflight++; caller.ws.send(frame()); } };
    callee.ws.on("message", () => { if (measuring) delivered++; });
    caller.ws.on("message", (data) => { const m = decode(data); if (m.t === "receipt") { inflight--; pump(); } });
    pump();
  }
  await sleep(1000); // warm up
  const cpu0 = procCpu(args.pid);
  measuring = true;
  const t0 = performance.now();
  await sleep(args.duration * 1000);
  measuring = false;
  const secs = (performance.now() - t0) / 1000, cpu = (procCpu(args.pid) - cpu0) / secs;
  stop = true;
  for (const { caller, callee } of ps) { caller.ws.terminate(); callee.ws.terminate(); }
  const rate = delivered / secs;
  return { mode: "throughput", pairs: args.pairs, msg_per_s: rate, server_cpu: cpu,
           server_cpu_us_per_msg: args.pid && args.pid !== "0" ? (cpu * 1e6) / rate : null };
}

function procCpu(pids) { // seconds of CPU (user + system) used by a pid, or by a comma-separated list of pids
  let total = 0;
  for (const pid of String(pids || "").split(",").filter((p) => p && p !== "0")) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    total += (Number(f[11]) + Number(f[12])) / 100;
  }
  return total;
}
function rssKiB(pids) {
  const pid = String(pids).split(",")[0];
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]);
}

async function idle() {
  const before = rssKiB(args.pid);
  const conns = [];
  for (let i = 0; i < args.conns; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(args.conns, i + 100); j++) batch.push(connect(args.url[j % args.url.length]));
    conns.push(...(await Promise.all(batch)));
  }
  await sleep(2000);
  const after = rssKiB(args.pid);
  await sleep((args.hold || 0) * 1000); // keep them open (for inspection of the server)
  for (const c of conns) c.ws.terminate();
  return { mode: "idle", conns: conns.length, rss_before_kib: before, rss_after_kib: after,
           kib_per_conn: (after - before) / conns.length };
}

const run = { latency, throughput, idle }[args.mode];
run().then((r) => { console.log(JSON.stringify(r)); process.exit(0); }, (e) => { console.error(String(e)); process.exit(1); });
