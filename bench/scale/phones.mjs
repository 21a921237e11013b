// Load generator for bench/scale: many authenticated idle phones (homing client protocol v1, msgpack), printing JSON.
// Uses bench/relay's node_modules (cd bench/relay && npm install) and its handshake helpers (common.mjs).
//   idle:  --url U --conns N [--batch 200] [--hold S] [--pid P]: open N clients in batches, hold them S seconds with
//          WebSocket keepalive at the node's defaults (the ws library answers the node's pings), then report.
//   storm: --url VICTIM --url OTHER... --conns N [--probers 4] [--rate R]: home N clients on the first url, print
//          "ready", wait for a line on stdin (the orchestrator killed or stopped the first node), then every client
//          reconnects as docs/client-protocol.md "Reconnecting" says; each re-homed client is sent one call_offer
//          by a prober (on a surviving node) until one is `delivered`. Background offers at --rate/s to random
//          clients test that every envelope gets exactly one terminal receipt. The output has per-second timelines
//          since the fault (goaways, reconnects started, challenges, re-homed, callable, the generator's own
//          event-loop lag) to tell a slow node from a slow load generator.
//          --local 1: the servers are bare relays that do not federate (bench/relay/ws_relay.mjs, the Node.js
//          anchor): one prober per surviving relay, each probe sent through the prober on the relay its callee
//          re-homed to, and no background offers (an offer to a client on another relay is answered `queued` and
//          dropped there, never delivered)
//   both:  --client ws|raw, --verify N (below)
import fs from "node:fs";
import { createRequire } from "node:module";
import readline from "node:readline";
import { newIdentity, verify, CLIENT_AUTH, NODE_AUTH } from "../relay/common.mjs";
import { RawWs, randomSlice } from "./rawws.mjs";

const require = createRequire(new URL("../relay/package.json", import.meta.url));
const WebSocket = require("ws");
const { decode, encode } = require("@msgpack/msgpack");

const args = { url: [], mode: "idle", conns: 100, batch: 200, hold: 5, pid: "", probers: 4, rate: 50, timeout: 60, grace: 75,
               client: "", verify: 0, local: 0 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ""), v = process.argv[i + 1];
  if (k === "url") args.url.push(v); else if (["pid", "mode", "client"].includes(k)) args[k] = v; else args[k] = Number(v);
}
// --client ws|raw: the `ws` library, or rawws.mjs (a bare-socket client: 0.93 against 1.19 ms of generator CPU per
// handshake in one idle run of 5,000 here); the storm defaults to raw, the idle runs keep ws (their earlier figures)
args.client ||= args.mode === "storm" ? "raw" : "ws";
args.local = Boolean(args.local);
// --verify N: check the node's welcome signature on every Nth handshake. A phone checks its own on its own CPU; on
// this machine one Ed25519 verification costs the generator ~300 µs, a quarter of its busy CPU in a 10,000-client storm,
// where its event loop then fell seconds behind (docs/performance.md). The storm checks one in 16 (a node that
// signed wrongly is still caught at once), idle every one.
args.verify ||= args.mode === "storm" ? 16 : 1;
let handshakes = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now() / 1000;
const TERMINAL = new Set(["delivered", "expired", "cancelled", "rejected"]);

// One handshake (docs/client-protocol.md "Handshake"); resolves {ws, id, me} after a verified welcome.
const trace = { attempts: [], challenges: [], t0: null }; // reconnect timeline (storm): seconds after the fault
function connect(url, me = newIdentity(), timeoutMs = 10000) {
  if (trace.t0 !== null) trace.attempts.push(now() - trace.t0);
  return new Promise((resolve, reject) => {
    let nodeId = null, done = false;
    const nonce = randomSlice(32);
    const fail = (e) => { if (!done) { done = true; ws.terminate(); reject(e); } };
    const refused = (status, retryAfterS) => { // a refused upgrade: keep its Retry-After (seconds)
      const e = new Error(`Unexpected server response: ${status}`);
      e.retryAfterS = retryAfterS;
      fail(e);
    };
    const ws = args.client === "raw" ? new RawWs(url, refused) : new WebSocket(url, { perMessageDeflate: false });
    if (args.client !== "raw") {
      ws.binaryType = "nodebuffer";
      ws.on("unexpected-response", (req, res) => refused(res.statusCode, Number(res.headers["retry-after"]) || 0));
    }
    ws.on("error", fail);
    ws.on("close", (code) => fail(new Error(`closed ${code} during the handshake`)));
    setTimeout(() => fail(new Error("handshake timed out")), timeoutMs).unref();
    ws.on("message", function first(data) {
      const m = decode(data);
      if (m.t === "challenge") {
        if (trace.t0 !== null) trace.challenges.push(now() - trace.t0);
        nodeId = Buffer.from(m.node);
        ws.send(encode({ t: "hello", id: me.id, nonce, sig: me.sign(Buffer.concat([CLIENT_AUTH, nodeId, Buffer.from(m.nonce)])) }));
      } else if (m.t === "welcome") {
        if (handshakes++ % args.verify === 0 && !verify(nodeId, Buffer.concat([NODE_AUTH, me.id, nonce]), Buffer.from(m.sig))) {
          return fail(new Error("bad welcome"));
        }
        ws.off("message", first); ws.removeAllListeners("error"); ws.removeAllListeners("close");
        ws.on("error", () => {});
        // what comes right behind the welcome (a queued offer the node pushes at once can share its read) is kept
        // until the caller listens: `early` (watch() replays it); the promise resolves a microtask later
        const early = [], hold = (d) => early.push(d);
        ws.on("message", hold);
        done = true;
        resolve({ ws, id: me.id, me, url, early, hold });
      } else fail(new Error(`handshake: got ${m.t}`));
    });
  });
}

function procCpu(pids) { // CPU seconds (user + system) of a comma-separated list of pids
  let total = 0;
  for (const pid of String(pids || "").split(",").filter(Boolean)) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    total += (Number(f[11]) + Number(f[12])) / 100;
  }
  return total;
}
function rssKiB(pid) { return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]); }
function myCpu() { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; }
// counts per whole second since the fault: [n in [0,1), n in [1,2), ...]
function perSecond(times) { const h = []; for (const t of times) { const i = Math.max(0, Math.floor(t)); while (h.length <= i) h.push(0); h[i]++; } return h; }
function pct(sorted, p) { return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null; }

// Open n clients on urls[i % urls.length], `batch` handshakes in flight at once; failures are retried once.
async function openMany(n, urls, batch) {
  const out = [], errors = {};
  let next = 0;
  // progress on stderr every 10 s, so that a run that never gets ready says how far it got (bench/scale/run.py
  // prints it when it gives up)
  const t0 = now(), progress = setInterval(() => console.error(
    `openMany: ${out.length} of ${n} open, ${next - out.length} in flight or failed, after ${(now() - t0).toFixed(0)} s; ` +
    `errors ${JSON.stringify(errors)}`), 10000);
  async function worker() {
    while (next < n) {
      const i = next++;
      for (let attempt = 0; attempt < 3; attempt++) {
        try { out.push(await connect(urls[i % urls.length])); break; } catch (e) {
          const k = String(e.message).slice(0, 60); errors[k] = (errors[k] || 0) + 1; await sleep(200);
        }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(batch, n) }, worker));
  clearInterval(progress);
  return { clients: out, errors };
}

async function idle() {
  const rss0 = args.pid ? rssKiB(args.pid) : 0, cpu0 = args.pid ? procCpu(args.pid) : 0, me0 = myCpu(), t0 = now();
  const { clients, errors } = await openMany(args.conns, args.url, args.batch);
  const t1 = now(), cpu1 = args.pid ? procCpu(args.pid) : 0, me1 = myCpu();
  const dropped = {};
  let drops = 0;
  for (const c of clients) c.ws.on("close", (code) => { drops++; dropped[code] = (dropped[code] || 0) + 1; });
  await sleep(2000); // let the node settle (its per-connection state after the handshake)
  const rss1 = args.pid ? rssKiB(args.pid) : 0, cpu2 = args.pid ? procCpu(args.pid) : 0, me2 = myCpu(), t2 = now();
  await sleep(args.hold * 1000);
  const t3 = now(), cpu3 = args.pid ? procCpu(args.pid) : 0, me3 = myCpu(), rss3 = args.pid ? rssKiB(args.pid) : 0;
  // ending the run is not a drop (rawws.mjs emits "close" at once on terminate(), ws later)
  for (const c of clients) { c.ws.removeAllListeners("close"); c.ws.terminate(); }
  const connectS = t1 - t0, n = clients.length;
  return {
    mode: "idle", conns: n, failed: args.conns - n, connect_errors: errors,
    connect_s: connectS, handshakes_per_s: n / connectS,
    server_cpu_us_per_handshake: args.pid ? ((cpu1 - cpu0) * 1e6) / n : null,
    server_cpu_pct_connecting: args.pid ? (100 * (cpu1 - cpu0)) / connectS : null,
    loadgen_cpu_pct_connecting: (100 * (me1 - me0)) / connectS,
    rss_before_kib: rss0, rss_after_kib: rss1, rss_end_kib: rss3, kib_per_client: args.pid ? (rss1 - rss0) / n : null,
    hold_s: t3 - t2, server_cpu_pct_idle: args.pid ? (100 * (cpu3 - cpu2)) / (t3 - t2) : null,
    loadgen_cpu_pct_idle: (100 * (me3 - me2)) / (t3 - t2), dropped: drops, dropped_by_code: dropped,
  };
}

// --- reconnect storm ----------------------------------------------------------------------------------------
// The policy of docs/client-protocol.md "Reconnecting": after `goaway`, to a node from its list after a random
// 0-1 s delay (counted from the goaway, not from the end of the closing handshake that follows it); after any
// other loss, exponential backoff 0.5 s doubling to 30 s, each delay x uniform(0.5, 1.5),
// trying the known nodes other than the one that failed (the discovery cache).
const BACKOFF_MIN_S = 0.5, BACKOFF_MAX_S = 30, GOAWAY_SPREAD_S = 1.0;

// Reconnects due are started at most START_CHUNK per event-loop turn, with I/O polled between turns. Node runs every
// expired timer in one go: once the generator fell behind, thousands of reconnects came due together and their
// connect() calls (a third of its busy CPU: loopback connects are synchronous in the kernel) held the loop for
// 1.3-2.2 s of CPU, 3.5-4.3 s of wall time, while the challenges of the connections already opened went unread and
// the nodes' handshake slots waited on them (docs/performance.md, "Fifth pass"). Ten thousand phones do not wait
// for each other's connects: the order and the delays are the same, only the generator's own queueing goes.
const START_CHUNK = 16;
const startQueue = [];
let startHead = 0, starting = false;
function startSoon(fn) {
  startQueue.push(fn);
  if (!starting) { starting = true; setImmediate(startSome); }
}
function startSome() {
  for (let i = 0; i < START_CHUNK && startHead < startQueue.length; i++) {
    const fn = startQueue[startHead];
    startQueue[startHead++] = undefined;
    fn();
  }
  if (startHead < startQueue.length) { setImmediate(startSome); return; }
  startQueue.length = 0; startHead = 0; starting = false;
}
const backoff = (attempt) => Math.min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** attempt) * (0.5 + Math.random());

const CARD_URLS = new Map(); // every client of a stopping node gets the same cards: decode each once
function cardUrl(uri) { // the ws URL of a homing://node/ card (signature not checked: a bench)
  if (!CARD_URLS.has(uri)) CARD_URLS.set(uri, decodeCardUrl(uri));
  return CARD_URLS.get(uri);
}
function decodeCardUrl(uri) {
  try {
    const doc = decode(Buffer.from(uri.slice("homing://node/".length), "base64url"));
    const find = (o) => (o && typeof o === "object" ? (typeof o.ws === "string" ? o.ws : Object.values(o).map(find).find(Boolean)) : null);
    const inner = doc.doc instanceof Uint8Array ? decode(doc.doc) : doc;
    return find(inner) || find(doc);
  } catch { return null; }
}

async function storm() {
  const [victim, ...others] = args.url;
  const { clients, errors } = await openMany(args.conns, [victim], args.batch);
  const nProbers = args.local ? others.length : args.probers;
  const probers = (await openMany(nProbers, others, nProbers)).clients;
  const proberAt = new Map(probers.map((p) => [p.url, p])); // --local: the prober on each relay
  const state = new Map(); // id hex -> {client, lostAt, rehomedAt, callableAt, attempts, goaway}
  const envelopes = new Map(); // prober ref key -> {terminal: [], kind: "probe"|"bg", id}
  let refSeq = 0, t0 = null, stopBg = false;
  const stats = { reconnect_attempts: 0, reconnect_failures: {}, goaways: 0, unexpected_before_kill: 0, probers_closed: {},
                  not_delivered: {} }; // terminal receipts other than delivered, by status and reason
  const probesOf = new Map(); // id hex -> refs of the probes sent to it, in order
  const offersReceived = new Set(); // call ids (hex) of the offers the clients were given
  const failTimes = []; // seconds after the fault of each failed reconnect attempt
  const goawayTimes = []; // seconds after the fault of each goaway received

  function send(idHex, kind) {
    const p = args.local ? proberAt.get(state.get(idHex).url) : probers[refSeq % probers.length];
    const ref = refSeq++, call = randomSlice(16);
    envelopes.set(ref, { terminal: [], kind, id: idHex, queued: 0, sentAt: now(), events: [], call: call.toString("hex") });
    if (kind === "probe") (probesOf.get(idHex) ?? probesOf.set(idHex, []).get(idHex)).push(ref);
    p.ws.send(encode({ t: "call_offer", to: Buffer.from(idHex, "hex"), call, body: Buffer.alloc(64), ref }));
  }
  for (const p of probers) {
    // a prober the node closed (e.g. a load generator too slow to read its receipts) loses what it sent after:
    // counted, so such a run is not read as envelopes lost by the nodes
    p.ws.on("close", (code) => { stats.probers_closed[code] = (stats.probers_closed[code] || 0) + 1; });
    p.ws.off("message", p.hold); // nothing comes before the prober sends
    p.ws.on("message", (data) => {
      const m = decode(data);
      if (m.t !== "receipt") return;
      const e = envelopes.get(Number(m.ref));
      if (!e) return;
      e.events.push(`${m.status}${m.reason ? ":" + m.reason : ""}@${(now() - e.sentAt).toFixed(1)}`);
      if (m.status === "queued") { e.queued++; return; }
      if (!TERMINAL.has(m.status)) return;
      e.terminal.push(m.status);
      if (m.status !== "delivered") { const k = `${m.status}:${m.reason ?? "-"}`; stats.not_delivered[k] = (stats.not_delivered[k] || 0) + 1; }
      if (e.kind !== "probe" || e.terminal.length !== 1) return;
      const s = state.get(e.id);
      if (m.status === "delivered") s.callableAt ??= now();
      // not callable yet (e.g. expired): probe again; after rate_limited (an owner's mailbox share of this node is
      // full, or a budget), back off a second as a client would, instead of adding to the load that refused it
      else setTimeout(() => send(e.id, "probe"), m.reason === "rate_limited" ? 1000 : 200);
    });
  }

  function lost(s, code, goawayUrls) {
    if (t0 === null) { stats.unexpected_before_kill++; }
    s.lostAt ??= now();
    s.rehomedAt = null;
    const delay = goawayUrls && goawayUrls.length ? Math.random() * GOAWAY_SPREAD_S : backoff(0);
    setTimeout(() => startSoon(() => reconnect(s, 0, goawayUrls && goawayUrls.length ? goawayUrls : others)), delay * 1000);
  }
  function watch(s) {
    let moved = false; // after a goaway the client moves at once; the old connection's close then changes nothing
    s.client.ws.off("message", s.client.hold);
    const onMessage = (data) => {
      const m = decode(data);
      if (m.t === "call_offer") { offersReceived.add(Buffer.from(m.call).toString("hex")); return; }
      if (m.t === "goaway" && !moved) {
        stats.goaways++;
        if (t0 !== null) goawayTimes.push(now() - t0);
        moved = true;
        const old = s.client.ws;
        lost(s, 1001, (m.nodes || []).map(cardUrl).filter(Boolean));
        old.terminate(); // the node closes anyway: no closing handshake to run for 10,000 sockets at once
      }
    };
    s.client.ws.on("message", onMessage);
    for (const data of s.client.early.splice(0)) onMessage(data);
    s.client.ws.on("close", (code) => { if (!moved) lost(s, code, null); });
  }
  async function reconnect(s, attempt, candidates) {
    const pool = candidates.filter((u) => u !== s.failed);
    const url = (pool.length ? pool : others)[Math.floor(Math.random() * (pool.length || others.length))];
    stats.reconnect_attempts++;
    try {
      s.client = await connect(url, s.client.me);
      s.rehomedAt = now();
      s.url = url;
      watch(s);
      send(s.client.id.toString("hex"), "probe");
    } catch (e) {
      const k = String(e.message).slice(0, 60);
      stats.reconnect_failures[k] = (stats.reconnect_failures[k] || 0) + 1;
      if (t0 !== null) failTimes.push(now() - t0);
      s.failed = url;
      // docs/client-protocol.md: wait the backoff, and at least a refusal's Retry-After
      setTimeout(() => startSoon(() => reconnect(s, attempt + 1, others)),
                 Math.max(backoff(attempt + 1), e.retryAfterS || 0) * 1000);
    }
  }
  for (const c of clients) { const s = { client: c }; state.set(c.id.toString("hex"), s); watch(s); }
  const ids = [...state.keys()];
  const bg = async () => { // background offers to random clients, before and through the storm
    while (!stopBg) { send(ids[Math.floor(Math.random() * ids.length)], "bg"); await sleep(1000 / args.rate); }
  };
  console.log(`ready ${clients.length}`);
  const bgDone = args.local ? Promise.resolve() : bg();
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((r) => rl.once("line", r));
  t0 = now();
  trace.t0 = t0;
  // the load generator's own event-loop lag, worst per second: how late its timers and I/O callbacks ran
  const lagMs = [];
  let tick = now();
  const lagTimer = setInterval(() => {
    const t = now(), i = Math.floor(t - t0), lag = (t - tick - 0.02) * 1000;
    tick = t;
    while (lagMs.length <= i) lagMs.push(0);
    lagMs[i] = Math.max(lagMs[i], Math.round(lag));
  }, 20);
  const cpuMe0 = myCpu();
  const deadline = t0 + args.timeout;
  const all = () => [...state.values()];
  while (now() < deadline && !all().every((s) => s.callableAt && s.callableAt >= t0 && s.rehomedAt)) await sleep(100);
  const tAll = now() - t0;
  clearInterval(lagTimer);
  stopBg = true;
  await bgDone;
  // every envelope must end with exactly one terminal receipt: wait for the last ones (bounded: a `queued` one
  // ends `delivered` or, after the mailbox TTL of 60 s, `expired`)
  const grace = now() + args.grace;
  while (now() < grace && [...envelopes.values()].some((e) => e.terminal.length === 0)) await sleep(200);
  await sleep(500); // a duplicate terminal receipt would arrive about now
  const rehome = all().filter((s) => s.rehomedAt && s.lostAt).map((s) => s.rehomedAt - t0).sort((a, b) => a - b);
  const callable = all().filter((s) => s.callableAt && s.callableAt >= t0).map((s) => s.callableAt - t0).sort((a, b) => a - b);
  const byStatus = {};
  let missing = 0, duplicate = 0, missingQueued = 0, deliveredUnseen = 0;
  const DNR = {};
  for (const e of envelopes.values()) {
    // a `delivered` receipt for an offer its callee never got: the node said so, but the phone would not ring
    // (by kind, its receipts, and whether it was sent before its callee last re-homed)
    if (e.terminal.includes("delivered") && !offersReceived.has(e.call)) {
      deliveredUnseen++;
      const st = state.get(e.id), when = st.rehomedAt && st.rehomedAt < e.sentAt ? "after" : "before";
      const k = `${e.kind}:${e.events.join(" ").replace(/@[0-9.]+/g, "")}:sent ${when} the callee re-homed`;
      DNR[k] = (DNR[k] || 0) + 1;
    }
    if (e.terminal.length === 0) { missing++; if (e.queued) missingQueued++; } else if (e.terminal.length > 1) duplicate++;
    const k = `${e.kind}:${e.terminal.join("+") || "none"}`; byStatus[k] = (byStatus[k] || 0) + 1;
  }
  // why a client was callable more than LATE_S after it re-homed: its probes' receipts, in order, each with the
  // seconds after that probe was sent (a pattern such as "rejected:rate_limited@0.0 > queued@0.0 delivered@4.2")
  const LATE_S = 1.5, late = {};
  let lateCount = 0;
  for (const [id, s] of state) {
    if (!s.callableAt || !s.rehomedAt || s.callableAt - s.rehomedAt <= LATE_S) continue;
    lateCount++;
    const pattern = (probesOf.get(id) || []).map((ref) => envelopes.get(ref).events.join(" ").replace(/@[0-9.]+/g, (t) =>
      Number(t.slice(1)) >= 1 ? "@" + Math.round(Number(t.slice(1))) + "s" : "")).join(" > ");
    late[pattern] = (late[pattern] || 0) + 1;
  }
  const lateTop = Object.fromEntries(Object.entries(late).sort((a, b) => b[1] - a[1]).slice(0, 8));
  const out = {
    late_callable: lateCount, late_callable_patterns: lateTop,
    delivered_not_received: deliveredUnseen, dnr_detail: DNR,
    mode: "storm", conns: clients.length, connect_errors: errors, rehomed: rehome.length, callable: callable.length,
    all_callable: callable.length === clients.length, all_callable_s: callable.length === clients.length ? tAll : null,
    rehome_p50_s: pct(rehome, 0.5), rehome_p99_s: pct(rehome, 0.99), rehome_max_s: rehome.at(-1) ?? null,
    rehomed_per_s: perSecond(rehome), callable_per_s: perSecond(callable), failures_per_s: perSecond(failTimes),
    goaways_per_s: perSecond(goawayTimes), attempts_per_s: perSecond(trace.attempts),
    challenges_per_s: perSecond(trace.challenges), loadgen_lag_ms_per_s: lagMs,
    callable_p50_s: pct(callable, 0.5), callable_p99_s: pct(callable, 0.99), callable_max_s: callable.at(-1) ?? null,
    envelopes: envelopes.size, without_one_terminal: missing + duplicate, missing_terminal: missing,
    missing_terminal_after_queued: missingQueued,
    duplicate_terminal: duplicate, receipts: byStatus, ...stats,
    loadgen_cpu_pct: (100 * (myCpu() - cpuMe0)) / Math.max(tAll, 1e-3),
  };
  for (const s of all()) s.client.ws.terminate();
  for (const p of probers) p.ws.terminate();
  return out;
}

const run = { idle, storm }[args.mode];
run().then((r) => { console.log(JSON.stringify(r)); process.exit(0); }, (e) => { console.error(String(e.stack || e)); process.exit(1); });
