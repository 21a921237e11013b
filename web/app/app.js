// The call page: a small static app on the library (web/lib). Configuration comes from the URL fragment (never sent
// to any server): profile, node (manual entry, repeatable), card, registry + trust, doh + name, contact, relay, ring,
// push, push_wait.
// `key` (a 32-byte seed, base64url) is for the demo and the tests only; it is stored and removed from the address bar.

import { b64uDecode } from "../lib/bytes.js";
import { Phone } from "../lib/call.js";
import { ContactBook, contactLink, parseContact } from "../lib/contacts.js";
import { DiscoveryCache } from "../lib/discovery.js";
import { Identity } from "../lib/identity.js";
import { subscribePush } from "../lib/push.js";
import { Session } from "../lib/session.js";
import { loadIdentity, saveIdentity } from "./store.js";

const params = new URLSearchParams(location.hash.slice(1));
const profile = (params.get("profile") ?? "default").replace(/[^A-Za-z0-9_-]/g, "").slice(0, 32) || "default";
const ns = (/** @type {string} */ k) => `homing:${profile}:${k}`;
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** State the tests (and curious users, in the console) can read. */
const view = {
  profile,
  id: "",
  conn: "idle",
  connDetail: "",
  node: /** @type {import("../lib/discovery.js").Found | null} */ (null),
  call: /** @type {import("../lib/call.js").Call | null} */ (null),
  callState: "idle",
  callDetail: "",
  callReason: "",
  error: "",
  history: /** @type {string[]} */ ([]),
  connHistory: /** @type {string[]} */ ([]),
  /** Bodies the e2ee layer refused (tampered, replayed, not for this device): dropped, listed here. */
  refused: /** @type {string[]} */ ([]),
  /** Push wake-ups: the PushClient's status (state, detail, vapid, endpoint, probed). @type {any} */
  push: { state: "off", detail: "" },
  /** Wake-up pushes the service worker told this page about. */
  wakes: 0,
  async stats() {
    return view.call ? view.call.stats() : null;
  },
};
/** @type {any} */ (window).homing = view;

/** @param {string} text */
function showError(text) {
  view.error = text;
  $("error").textContent = text;
  $("error").hidden = !text;
}

/**
 * Is the page served from this machine (`homing demo --web`, the tests)? Only there may a link's `key` set the
 * identity: on any other origin a link is anyone's, and `key` would replace the user's key with one its author knows.
 * @param {string} host location.hostname
 */
function loopbackHost(host) {
  return host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

async function identity() {
  const seed = params.get("key");
  if (seed && !loopbackHost(location.hostname)) {
    params.delete("key");
    history.replaceState(null, "", "#" + params.toString());
    showError("ignored the key in this link: a link can set the identity only on a page served from this machine (the demo)");
  } else if (seed) {
    const ident = await Identity.fromSeed(b64uDecode(seed), { extractable: true });
    await saveIdentity(profile, ident).catch(() => {});
    params.delete("key");
    history.replaceState(null, "", "#" + params.toString());
    return ident;
  }
  const stored = await loadIdentity(profile);
  if (stored) return stored;
  const ident = await Identity.generate({ extractable: localStorage.getItem(ns("backup-ok")) === "1" });
  await saveIdentity(profile, ident);
  return ident;
}

function discoveryConfig() {
  const manual = [...params.getAll("node")];
  const savedManual = localStorage.getItem(ns("manual"));
  if (savedManual) manual.push(savedManual);
  return {
    manual,
    cards: params.getAll("card"),
    registries: params.getAll("registry"),
    trust: params.getAll("trust").map(b64uDecode),
    doh: params.getAll("doh"),
    names: params.getAll("name"),
    cache: params.get("cache") === "0" ? null : new DiscoveryCache(localStorage, ns("discovery-cache")),
    json: params.get("json") === "1",
  };
}

async function main() {
  const ident = await identity();
  view.id = ident.idText;
  $("my-id").textContent = ident.idText;
  $("copy-link").onclick = () => void navigator.clipboard?.writeText(contactLink(ident.idText, profile));

  const book = new ContactBook(localStorage, ns("contacts"));
  for (const c of params.getAll("contact")) {
    const colon = c.indexOf(":");
    try {
      book.add(colon > 0 && !c.startsWith("homing:") ? parseContact(c.slice(colon + 1), c.slice(0, colon)) : parseContact(c));
    } catch (e) {
      showError(String(e));
    }
  }

  const relay = /** @type {HTMLInputElement} */ ($("always-relay"));
  relay.checked = params.get("relay") === "1" || localStorage.getItem(ns("relay")) === "1";
  const ringS = Number(params.get("ring") ?? "60");
  const connectS = Number(params.get("connect") ?? "30");
  const iceOverride = params.get("ice");
  const settings = {
    alwaysRelay: relay.checked,
    ringTimeoutMs: Number.isFinite(ringS) && ringS > 0 ? ringS * 1000 : 60_000,
    connectTimeoutMs: Number.isFinite(connectS) && connectS > 0 ? connectS * 1000 : 30_000,
    iceServers: iceOverride ? JSON.parse(iceOverride) : null,
    replayStorage: { storage: localStorage, key: ns("offers-seen") },
  };
  relay.onchange = () => {
    settings.alwaysRelay = relay.checked;
    localStorage.setItem(ns("relay"), relay.checked ? "1" : "0");
  };

  const session = new Session(ident, discoveryConfig());
  session.on("state", ({ state, detail }) => {
    view.conn = state;
    view.connDetail = detail;
    view.connHistory.push(state);
    $("conn-state").dataset.state = state;
    $("conn-state").textContent = {
      idle: "idle",
      connecting: "looking for your node…",
      connected: "connected",
      offline: "node unreachable — retrying",
      refused: "node refused: it could not prove its id",
    }[state];
    if (state === "offline" || state === "refused") showError(`${$("conn-state").textContent}: ${detail}`);
    else if (state === "connected") showError("");
  });
  session.on("node", (found) => {
    view.node = found;
    $("node-info").textContent = `node ${found.id.slice(0, 8)}… at ${found.ws}, found via ${found.source}${found.verified ? " (verified)" : ""}, handshake ${found.handshakeMs.toFixed(0)} ms`;
  });

  const phone = new Phone(session, settings);
  phone.on("refused", (r) => view.refused.push(`${r.kind}: ${r.error}`));
  phone.on("call", (call) => bindCall(call, book));
  phone.on("incoming", (call) => {
    ringingShown = call;
    $("incoming-name").textContent = book.nameOf(call.peerText);
    $("incoming-id").textContent = call.peerText;
    $("incoming-kind").textContent = call.video ? "(video)" : "(audio)";
    $("incoming").hidden = false;
    $("accept").onclick = () => void call.accept();
    $("decline").onclick = () => void call.reject();
  });

  const renderContacts = () => {
    const ul = $("contacts");
    ul.replaceChildren();
    for (const c of book.list()) {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = c.name;
      name.title = c.id;
      const audio = document.createElement("button");
      audio.textContent = "Call";
      audio.className = "call-audio";
      audio.onclick = () => void dial(c.id, false);
      const video = document.createElement("button");
      video.textContent = "Video";
      video.className = "call-video";
      video.onclick = () => void dial(c.id, true);
      li.append(name, audio, video);
      ul.append(li);
    }
  };
  /** @param {string} id @param {boolean} video */
  const dial = async (id, video) => {
    if (phone.active()) return;
    showError("");
    await phone.start(b64uDecode(id), { video });
  };
  renderContacts();
  $("add-contact").onsubmit = (ev) => {
    ev.preventDefault();
    try {
      book.add(parseContact(/** @type {HTMLInputElement} */ ($("contact-input")).value, /** @type {HTMLInputElement} */ ($("contact-name")).value));
      /** @type {HTMLInputElement} */ ($("contact-input")).value = "";
      showError("");
      renderContacts();
    } catch (e) {
      showError(e instanceof Error ? e.message : String(e));
    }
  };
  const manual = /** @type {HTMLInputElement} */ ($("manual-node"));
  manual.value = localStorage.getItem(ns("manual")) ?? "";
  $("reconnect").onclick = () => {
    if (manual.value) localStorage.setItem(ns("manual"), manual.value.trim());
    else localStorage.removeItem(ns("manual"));
    session.stop();
    session.discovery = discoveryConfig();
    session.start();
  };
  $("export-backup").onclick = async () => {
    const pass = prompt("Passphrase for the backup (at least 8 characters)") ?? "";
    try {
      const text = await ident.exportBackup(pass);
      await navigator.clipboard?.writeText(text);
      alert("Backup copied to the clipboard. Keep it somewhere safe.");
    } catch (e) {
      localStorage.setItem(ns("backup-ok"), "1");
      showError(`${e instanceof Error ? e.message : e} (a new key made from now on in this profile will allow backups)`);
    }
  };
  $("import-backup").onclick = async () => {
    const text = prompt("Paste the backup") ?? "";
    const pass = prompt("Passphrase") ?? "";
    try {
      await saveIdentity(profile, await Identity.importBackup(text, pass));
      location.reload();
    } catch (e) {
      showError(e instanceof Error ? e.message : String(e));
    }
  };
  bindPush(session);
  session.start();
}

/**
 * `push_wait` (seconds, 1-60) in milliseconds: how long to wait for the browser's push service to answer a
 * subscription before *Wake me for calls* reports it failed. Absent or out of range: undefined, and the library's
 * own wait (SUBSCRIBE_TIMEOUT_MS) applies.
 * @param {string | null} text
 * @returns {number | undefined}
 */
function pushWaitMs(text) {
  const s = Number(text); // Number(null) is 0: out of range
  return Number.isFinite(s) && s >= 1 && s <= 60 ? s * 1000 : undefined;
}

/** The "Wake me for calls" setting: Web Push through app/sw.js (docs/web.md, "Push wake-ups"). @param {Session} session */
function bindPush(session) {
  const box = /** @type {HTMLInputElement} */ ($("push-wake"));
  /** @type {import("../lib/push.js").PushClient | null} */
  let client = null;
  /** @param {any} status */
  const show = (status) => {
    view.push = { ...status };
    $("push-state").textContent = status.state === "failed" ? `push: ${status.detail}` : status.state === "off" ? "" : `push: ${status.state}`;
  };
  const enable = async () => {
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) return show({ state: "failed", detail: "this browser has no Web Push" });
    const perm = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    if (perm !== "granted") return show({ state: "failed", detail: `notification permission ${perm}` });
    navigator.serviceWorker.onmessage = (ev) => {
      if (ev.data?.t !== "wake") return;
      view.wakes++;
      session.kick(); // a call is waiting: connect now if we were between attempts
    };
    if (client) return void (await client.enable());
    show({ state: "registering", detail: "" });
    client = await subscribePush(session, {
      serviceWorkerUrl: new URL("sw.js", location.href).href,
      subscribeTimeoutMs: pushWaitMs(params.get("push_wait")),
    });
    client.on("state", show);
    show(client.status);
    (await navigator.serviceWorker.ready).active?.postMessage({ t: "page", url: location.href });
  };
  box.checked = params.get("push") === "1" || localStorage.getItem(ns("push")) === "1";
  box.onchange = () => {
    localStorage.setItem(ns("push"), box.checked ? "1" : "0");
    if (box.checked) void enable().catch((e) => show({ state: "failed", detail: String(e) }));
    else void client?.disable();
  };
  if (box.checked) void enable().catch((e) => show({ state: "failed", detail: String(e) }));
}

/** The ringing call the incoming-call overlay shows. @type {import("../lib/call.js").Call | null} */
let ringingShown = null;

/** @param {import("../lib/call.js").Call} call @param {ContactBook} book */
function bindCall(call, book) {
  view.call = call;
  const timer = setInterval(() => {
    const s = call.durationS();
    $("timer").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }, 500);
  const render = () => {
    view.callState = call.state;
    view.callDetail = call.detail;
    view.callReason = call.reason ?? "";
    view.history.push(call.state + (call.detail ? ` (${call.detail})` : ""));
    $("call-peer").textContent = book.nameOf(call.peerText);
    const el = $("call-state");
    el.dataset.state = call.state;
    el.textContent = call.state === "ended" ? `ended: ${endText(call.reason, call.detail)}` : call.state + (call.detail ? ` — ${call.detail}` : "");
    $("call-view").hidden = call.state === "incoming" || call.state === "idle";
    // only this call's own overlay: another call that rang after it may be on show (a caller that gives up must not
    // hide another caller's ringing)
    if (call.state !== "incoming" && ringingShown === call) $("incoming").hidden = true;
    if (call.state === "ended") {
      clearInterval(timer);
      if (call.reason === "failed") showError(`call failed: ${call.detail}`);
    }
  };
  call.on("state", render);
  call.on("localStream", (s) => (/** @type {HTMLVideoElement} */ ($("local-video")).srcObject = s));
  call.on("remoteStream", (s) => (/** @type {HTMLVideoElement} */ ($("remote-video")).srcObject = s));
  $("mute").onclick = () => ($("mute").textContent = call.setMuted() ? "Unmute" : "Mute");
  $("camera").onclick = () => ($("camera").textContent = call.setCameraOff() ? "Camera on" : "Camera off");
  $("switch-camera").onclick = () => void call.switchCamera();
  $("hangup").onclick = () => void call.hangup();
  render();
}

/** @param {string | null} reason @param {string} detail */
function endText(reason, detail) {
  return (
    {
      hangup: "call ended",
      rejected: "declined",
      busy: "busy — in another call",
      missed: "missed — no answer",
      failed: "failed",
      answered_elsewhere: "answered on another device",
    }[reason ?? ""] ?? String(reason)
  ) + (detail && reason !== "hangup" ? ` (${detail})` : "");
}

main().catch((e) => showError(`could not start: ${e instanceof Error ? e.message : e}`));
