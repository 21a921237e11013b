// Calls over a session: RTCPeerConnection with the node's ICE servers; every body end-to-end encrypted in the format
// of docs/e2ee.md (lib/e2ee.js); states idle → outgoing/incoming → connecting → connected → ended.

import { b64uEncode, equal, randomBytes } from "./bytes.js";
import { Emitter } from "./emitter.js";
import { bodyType, IncomingCall, OFFER, OfferReplayCache, OutgoingCall, StoredOfferReplayCache } from "./e2ee.js";

export const RING_TIMEOUT_MS = 60_000; // the mailbox TTL
export const ICE_GATHER_TIMEOUT_MS = 10_000;
export const RECONNECT_WINDOW_MS = 30_000;
export const CONNECT_TIMEOUT_MS = 30_000; // from the answer (sent or received) to a media path
export const CALL_ID_BYTES = 16;
export const BUFFERED_CANDIDATES_MAX = 200;
export const CALLS_KEPT_MAX = 64;
export const EARLY_HOLD_MS = 5_000; // bodies that arrive before their call's offer are kept this long (docs/e2ee.md step 3)
export const EARLY_HOLD_MAX = 64;
/** Calls ringing at once: offers beyond are dropped unread (any key pair can make valid offers, as many as it likes). */
export const RINGING_MAX = 8;
/** Automatic `busy` answers while in a call: a token bucket, so strangers' offers cannot spend the connection's budget. */
export const BUSY_REPLIES_BURST = 4;
export const BUSY_REPLIES_PER_S = 0.5;

/**
 * @typedef {"idle"|"outgoing"|"incoming"|"connecting"|"connected"|"ended"} CallState
 * @typedef {"hangup"|"rejected"|"busy"|"missed"|"failed"|"answered_elsewhere"} EndReason
 * @typedef {import("./e2ee_plaintext.js").Plaintext} Plaintext
 * @typedef {{alwaysRelay?: boolean, ringTimeoutMs?: number, iceGatherTimeoutMs?: number, reconnectWindowMs?: number, connectTimeoutMs?: number,
 *   iceServers?: RTCIceServer[] | null, nowS?: () => number,
 *   replayStorage?: {storage: {getItem(k: string): string | null, setItem(k: string, v: string): void}, key: string},
 *   media?: (constraints: MediaStreamConstraints) => Promise<MediaStream>}} CallSettings
 * @typedef {{state: {state: CallState, detail: string}, remoteStream: MediaStream, localStream: MediaStream}} CallEvents
 * @typedef {"dial"|"media"|"pc"|"offer_sent"|"offer_delivered"|"offer_received"|"ringing"|"accept"|"answer_created"
 *   |"answer_sent"|"answer_received"|"connected"} Mark
 * @typedef {{incoming: Call, call: Call, refused: {kind: string, error: string}}} PhoneEvents
 */

/**
 * The VoIP service: one per session. Routes deliveries to calls, answers "busy" while in a call.
 * @extends {Emitter<PhoneEvents>}
 */
export class Phone extends Emitter {
  /**
   * @param {import("./session.js").Session} session
   * @param {CallSettings} [settings]
   */
  constructor(session, settings = {}) {
    super();
    this.session = session;
    this.settings = settings;
    // kept in storage when the page gives one, so that a reload does not forget which offers rang (docs/e2ee.md step 2)
    const rs = settings.replayStorage;
    this.replay = rs ? new StoredOfferReplayCache(rs.storage, rs.key) : new OfferReplayCache();
    /** @type {Map<string, Call>} */
    this.calls = new Map();
    /** Bodies for calls we do not know yet (an EARLY body overtaking its offer): retried when the offer comes. */
    /** @type {{d: import("./codec.js").Deliver, at: number}[]} */
    this.held = [];
    this.busyTokens = BUSY_REPLIES_BURST;
    this.busyAt = Date.now();
    session.on("deliver", (d) => {
      try {
        this.onDeliver(d);
      } catch (e) {
        // a body that does not decrypt, a replay, a body for a call we do not hold: drop it, change nothing
        this.emit("refused", { kind: d.kind, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
      }
    });
  }

  get identity() {
    return this.session.identity;
  }

  nowS() {
    return Math.floor(this.settings.nowS ? this.settings.nowS() : Date.now() / 1000);
  }

  /** The call in progress (not ended, not merely ringing), if any. */
  active() {
    for (const c of this.calls.values()) if (c.state !== "ended" && c.state !== "incoming") return c;
    return null;
  }

  /** @param {Call} call */
  keep(call) {
    this.calls.set(call.key, call);
    if (this.calls.size > CALLS_KEPT_MAX) {
      for (const [k, c] of this.calls) {
        if (c.state === "ended") this.calls.delete(k);
        if (this.calls.size <= CALLS_KEPT_MAX) break;
      }
    }
  }

  /**
   * @param {Uint8Array} peer
   * @param {{video?: boolean}} [opts]
   */
  async start(peer, opts = {}) {
    const at = performance.now();
    const id = randomBytes(CALL_ID_BYTES);
    const e2e = new OutgoingCall({ identity: this.identity, callee: peer, call: id, randomBytes });
    const call = new Call(this, peer, id, "outgoing", Boolean(opts.video), e2e);
    call.mark("dial", at);
    this.keep(call);
    this.emit("call", call);
    await call.dial();
    return call;
  }

  /**
   * @param {Uint8Array} to @param {Uint8Array} callId @param {import("./codec.js").Kind} kind @param {Uint8Array} body
   * @param {{onQueued?: () => void}} [opts]
   */
  send(to, callId, kind, body, opts) {
    return this.session.send(kind, to, callId, body, opts);
  }

  /** @param {import("./codec.js").Deliver} d */
  onDeliver(d) {
    const at = performance.now();
    const existing = this.calls.get(b64uEncode(d.call));
    if (existing) {
      existing.onBody(d, at);
      return;
    }
    if (d.kind !== "call_offer" || equal(d.from, this.identity.id) || bodyType(d.body) !== OFFER) {
      this.hold(d);
      return;
    }
    let ringing = 0;
    for (const c of this.calls.values()) if (c.state === "incoming") ringing++;
    if (ringing >= RINGING_MAX) throw new Error(`${ringing} calls are ringing already: offer dropped`);
    const [e2e, offer] = IncomingCall.fromOffer({ identity: this.identity, sender: d.from, call: d.call, kind: d.kind, body: d.body, nowS: this.nowS(), replay: this.replay, randomBytes });
    const call = new Call(this, d.from, d.call, "incoming", offer.video, e2e);
    call.remoteOffer = { type: "offer", sdp: offer.sdp };
    call.mark("offer_received", at);
    this.keep(call);
    if (this.active()) {
      call.end("busy", "we were in another call");
      if (!this.takeBusyToken()) throw new Error("busy answers over their budget: offer left unanswered");
      void this.send(d.from, d.call, "call_reject", e2e.answer({ k: "reject", reason: "busy" })).catch(() => {});
      return;
    }
    call.armRing();
    this.emit("call", call);
    this.emit("incoming", call);
    call.mark("ringing");
    this.release(call);
  }

  /** May we send one more automatic `busy` answer now? */
  takeBusyToken() {
    const now = Date.now();
    this.busyTokens = Math.min(BUSY_REPLIES_BURST, this.busyTokens + ((now - this.busyAt) / 1000) * BUSY_REPLIES_PER_S);
    this.busyAt = now;
    if (this.busyTokens < 1) return false;
    this.busyTokens -= 1;
    return true;
  }

  /** @param {import("./codec.js").Deliver} d */
  hold(d) {
    const now = Date.now();
    this.held = this.held.filter((h) => now - h.at < EARLY_HOLD_MS).slice(-(EARLY_HOLD_MAX - 1));
    this.held.push({ d, at: now });
  }

  /** Retry the held bodies of a call that now exists. @param {Call} call */
  release(call) {
    const mine = this.held.filter((h) => equal(h.d.call, call.id));
    this.held = this.held.filter((h) => !equal(h.d.call, call.id));
    for (const h of mine) {
      try {
        call.onBody(h.d);
      } catch (e) {
        this.emit("refused", { kind: h.d.kind, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
      }
    }
  }
}

/** @extends {Emitter<CallEvents>} */
export class Call extends Emitter {
  /**
   * @param {Phone} phone @param {Uint8Array} peer @param {Uint8Array} id
   * @param {"outgoing"|"incoming"} direction @param {boolean} video
   * @param {OutgoingCall | IncomingCall} e2e
   */
  constructor(phone, peer, id, direction, video, e2e) {
    super();
    this.phone = phone;
    this.peer = peer;
    this.peerText = b64uEncode(peer);
    this.id = id;
    this.key = b64uEncode(id);
    this.direction = direction;
    this.video = video;
    this.e2e = e2e;
    /** The answered session (caller side: the first answer's sid). @type {Uint8Array | null} */
    this.sid = null;
    /** @type {CallState} */
    this.state = direction;
    this.detail = "";
    /** @type {EndReason | null} */
    this.reason = null;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {MediaStream | null} */
    this.localStream = null;
    /** @type {MediaStream} */
    this.remoteStream = new MediaStream();
    /** @type {RTCSessionDescriptionInit | null} */
    this.remoteOffer = null;
    /** @type {{c: RTCIceCandidateInit, at: number}[]} */
    this.pendingCandidates = [];
    /** Local candidates gathered before the caller has a session (sent as EARLY bodies meanwhile). */
    this.sentEarly = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.ringTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.recoverTimer = null;
    /** Ends a call whose media path never comes up after the answer (a silent or hostile peer). @type {ReturnType<typeof setTimeout> | null} */
    this.connectTimer = null;
    this.connectedAt = 0;
    this.muted = false;
    this.cameraOff = false;
    this.onOnline = () => void this.restartIce();
    /** performance.now() at each step of the setup, first time only (bench/calls reads them). @type {Partial<Record<Mark, number>>} */
    this.marks = {};
    /** @type {{from: "node" | "settings", urls: string[], withCredential: boolean} | null} */
    this.ice = null;
  }

  /** @param {Mark} name @param {number} [at] */
  mark(name, at = performance.now()) {
    this.marks[name] ??= at;
  }

  get settings() {
    return this.phone.settings;
  }

  /** @param {CallState} state @param {string} [detail] */
  setState(state, detail = "") {
    if (this.state === "ended") return;
    this.state = state;
    this.detail = detail;
    if (state === "connected" && !this.connectedAt) this.connectedAt = Date.now();
    if (state === "connected") this.mark("connected");
    if (state === "connecting" && !this.connectedAt && !this.connectTimer) {
      this.connectTimer = setTimeout(() => {
        if (!this.connectedAt) this.end("failed", "no media path within the connect timeout");
      }, this.settings.connectTimeoutMs ?? CONNECT_TIMEOUT_MS);
    }
    this.emit("state", { state, detail });
  }

  /** @param {EndReason} reason @param {string} [detail] */
  end(reason, detail = "") {
    if (this.state === "ended") return;
    this.reason = reason;
    this.setState("ended", detail || reason);
    for (const t of [this.ringTimer, this.recoverTimer, this.connectTimer]) if (t) clearTimeout(t);
    globalThis.removeEventListener?.("online", this.onOnline);
    this.pc?.close();
    this.localStream?.getTracks().forEach((t) => t.stop());
  }

  /**
   * Seal `msg` for the peer in whatever form fits now (EARLY before an answer, else TRANSPORT) and send it.
   * @param {Plaintext} msg @param {{onQueued?: () => void}} [opts]
   */
  sendMsg(msg, opts) {
    /** @type {Record<string, import("./codec.js").Kind>} */
    const kinds = { ice: "call_ice", hangup: "call_hangup", reoffer: "call_offer", reanswer: "call_answer" };
    const kind = kinds[msg.k] ?? "call_hangup";
    /** @type {Uint8Array} */
    let body;
    if (this.e2e instanceof OutgoingCall) body = this.sid ? this.e2e.seal(this.sid, msg) : this.e2e.early(msg);
    else body = this.e2e.seal(msg);
    return this.phone.send(this.peer, this.id, kind, body, opts);
  }

  armRing() {
    this.ringTimer = setTimeout(() => {
      if (this.state === "outgoing") this.withdrawOffer("no answer within the ring timeout");
      else if (this.state === "incoming") this.end("missed", "no answer within the ring timeout");
    }, this.settings.ringTimeoutMs ?? RING_TIMEOUT_MS);
  }

  /**
   * Ends an unanswered outgoing call as missed and withdraws its offer (hangup `timeout`): at the ring timeout, and
   * at the offer's `expired` receipt, which is the first mailbox replica's word only. Another replica may still hold
   * the offer (the hangup cancels it), and where the delivery receipts were lost the callee may be ringing (the
   * hangup ends that ring as missed): docs/protocol.md, "Cancel by hangup".
   * @param {string} detail
   */
  withdrawOffer(detail) {
    void this.sendMsg({ k: "hangup", reason: "timeout" }).catch(() => {});
    this.end("missed", detail);
  }

  async setupPeerConnection() {
    const media = this.settings.media ?? ((c) => navigator.mediaDevices.getUserMedia(c));
    this.localStream = await media({ audio: true, video: this.video });
    this.mark("media");
    this.emit("localStream", this.localStream);
    const fromPage = this.settings.iceServers != null;
    /** @type {RTCIceServer[]} */
    const servers = fromPage ? this.settings.iceServers ?? [] : await this.phone.session.iceServers().catch(() => []);
    /** Where the ICE servers came from ("node": `ice_servers`, "settings": the page's override) and their URLs. */
    this.ice = { from: fromPage ? "settings" : "node", urls: servers.flatMap((s) => (Array.isArray(s.urls) ? s.urls : [s.urls])), withCredential: servers.some((s) => Boolean(s.credential)) };
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: this.settings.alwaysRelay ? "relay" : "all" });
    this.pc = pc;
    this.mark("pc");
    for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
    pc.ontrack = (ev) => {
      if (!this.remoteStream.getTracks().includes(ev.track)) this.remoteStream.addTrack(ev.track);
      this.emit("remoteStream", this.remoteStream);
    };
    let gathered = 0;
    pc.onicecandidate = (ev) => {
      if (!ev.candidate || this.state === "ended") return;
      gathered++;
      const c = ev.candidate;
      /** @type {Plaintext} */
      const msg = { k: "ice", cand: c.candidate };
      if (c.sdpMid != null) msg.mid = c.sdpMid;
      if (c.sdpMLineIndex != null) msg.mline = c.sdpMLineIndex;
      if (c.usernameFragment != null) msg.ufrag = c.usernameFragment;
      void this.sendMsg(msg).catch(() => {});
    };
    setTimeout(() => {
      if (gathered === 0 && this.state !== "ended" && this.state !== "connected") this.end("failed", "no ICE candidate within the gathering timeout (is a TURN server reachable?)");
    }, this.settings.iceGatherTimeoutMs ?? ICE_GATHER_TIMEOUT_MS);
    pc.onconnectionstatechange = () => this.onConnectionState(pc.connectionState);
    globalThis.addEventListener?.("online", this.onOnline);
    return pc;
  }

  /** @param {RTCPeerConnectionState} s */
  onConnectionState(s) {
    if (this.state === "ended") return;
    if (s === "connected") {
      if (this.recoverTimer) clearTimeout(this.recoverTimer);
      this.recoverTimer = null;
      this.setState("connected");
    } else if (s === "disconnected" || s === "failed") {
      if (this.state === "connected") this.setState("connecting", "reconnecting");
      if (s === "failed") void this.restartIce();
      if (!this.recoverTimer) this.recoverTimer = setTimeout(() => this.end("failed", "the media path did not come back"), this.settings.reconnectWindowMs ?? RECONNECT_WINDOW_MS);
    }
  }

  async dial() {
    try {
      const e2e = /** @type {OutgoingCall} */ (this.e2e);
      const pc = await this.setupPeerConnection();
      const offer = await pc.createOffer();
      // the offer body must exist before the first candidate is sealed as EARLY: write it, then set the description
      const body = e2e.offer({ k: "offer", sdp: offer.sdp ?? "", video: this.video, ts: this.phone.nowS() });
      await pc.setLocalDescription(offer);
      this.armRing();
      this.mark("offer_sent");
      const receipt = await this.phone.send(this.peer, this.id, "call_offer", body, {
        onQueued: () => this.setState("outgoing", "ringing via mailbox (the callee is offline)"),
      });
      if (this.state !== "outgoing") return;
      if (receipt.status === "delivered") {
        this.mark("offer_delivered");
        this.setState("outgoing", "ringing");
      } else if (receipt.status === "expired") this.withdrawOffer("the callee did not come online");
      else if (receipt.status === "rejected") this.end("failed", `the node refused the offer (${receipt.reason})`);
    } catch (e) {
      this.end("failed", e instanceof Error ? e.message : String(e));
    }
  }

  async accept() {
    if (this.state !== "incoming" || !this.remoteOffer) return;
    const e2e = /** @type {IncomingCall} */ (this.e2e);
    this.mark("accept");
    this.setState("connecting");
    if (this.ringTimer) clearTimeout(this.ringTimer);
    try {
      const pc = await this.setupPeerConnection();
      await pc.setRemoteDescription(this.remoteOffer);
      const answer = await pc.createAnswer();
      const body = e2e.answer({ k: "answer", sdp: answer.sdp ?? "", video: this.video });
      this.sid = e2e.sid;
      await pc.setLocalDescription(answer);
      this.mark("answer_created");
      await this.flushCandidates();
      this.mark("answer_sent");
      await this.phone.send(this.peer, this.id, "call_answer", body);
      // tell this identity's other devices to stop ringing
      void this.phone.send(this.phone.identity.id, this.id, "call_hangup", e2e.elsewhere("answered")).catch(() => {});
    } catch (e) {
      this.end("failed", e instanceof Error ? e.message : String(e));
    }
  }

  async reject() {
    if (this.state !== "incoming") return;
    const e2e = /** @type {IncomingCall} */ (this.e2e);
    this.end("rejected", "you declined");
    await this.phone.send(this.peer, this.id, "call_reject", e2e.answer({ k: "reject", reason: "declined" })).catch(() => {});
    void this.phone.send(this.phone.identity.id, this.id, "call_hangup", e2e.elsewhere("rejected")).catch(() => {});
  }

  async hangup() {
    if (this.state === "ended") return;
    if (this.state === "incoming") return this.reject();
    const before = this.direction === "outgoing" && !this.sid;
    this.end("hangup", "you hung up");
    await this.sendMsg({ k: "hangup", reason: before ? "cancelled" : "ended" }).catch(() => {});
  }

  /**
   * A body for this call (already routed by call id). Throws for a body that must be refused.
   * @param {import("./codec.js").Deliver} d @param {number} [at] when the page received it (performance.now())
   */
  onBody(d, at = performance.now()) {
    if (this.state === "ended") return;
    const opened = this.e2e.open({ sender: d.from, kind: d.kind, body: d.body });
    const msg = opened.msg;
    if (this.e2e instanceof OutgoingCall && (msg.k === "answer" || msg.k === "reject")) {
      if (this.sid && opened.sid && !equal(opened.sid, this.sid)) {
        // another device answered after the first one: tell it the call was answered elsewhere
        void this.phone.send(this.peer, this.id, "call_hangup", this.e2e.seal(opened.sid, { k: "hangup", reason: "answered_elsewhere" })).catch(() => {});
        return;
      }
      if (msg.k === "reject") {
        this.end(msg.reason === "busy" ? "busy" : "rejected", msg.reason === "busy" ? "the callee is in another call" : "the callee declined");
        return;
      }
      this.sid = opened.sid;
      this.mark("answer_received", at);
      if (this.ringTimer) clearTimeout(this.ringTimer);
      if (this.state === "outgoing") this.setState("connecting");
      const sdp = /** @type {import("./e2ee_plaintext.js").SdpMsg} */ (msg).sdp;
      void this.pc
        ?.setRemoteDescription({ type: "answer", sdp })
        .then(() => this.flushCandidates())
        .catch((e) => this.end("failed", `the answer could not be used: ${e instanceof Error ? e.message : e}`));
      return;
    }
    switch (msg.k) {
      case "elsewhere":
        if (this.state === "incoming") this.end("answered_elsewhere", msg.how === "answered" ? "answered on another device" : "declined on another device");
        break;
      case "ice":
        this.addCandidate({ candidate: msg.cand, sdpMid: msg.mid ?? null, sdpMLineIndex: msg.mline ?? null, usernameFragment: msg.ufrag ?? null });
        break;
      case "hangup":
        if (msg.reason === "answered_elsewhere") this.end("answered_elsewhere", "answered on another device");
        else if (msg.reason === "busy") this.end("busy", "the callee is in another call");
        else if (this.state === "incoming") this.end("missed", "the caller gave up");
        else this.end("hangup", "the other side hung up");
        break;
      case "reoffer":
        void this.onReoffer(msg.sdp);
        break;
      case "reanswer":
        void this.pc?.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        break;
      default:
        break;
    }
  }

  /** @param {RTCIceCandidateInit} c */
  addCandidate(c) {
    if (this.pc?.remoteDescription) void this.pc.addIceCandidate(c).catch(() => {});
    else if (this.pendingCandidates.length < BUFFERED_CANDIDATES_MAX) this.pendingCandidates.push({ c, at: Date.now() });
  }

  /** @param {string} sdp */
  async onReoffer(sdp) {
    if (!this.pc) return;
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this.sendMsg({ k: "reanswer", sdp: answer.sdp ?? "", video: this.video });
  }

  async flushCandidates() {
    const maxAge = this.settings.ringTimeoutMs ?? RING_TIMEOUT_MS;
    const fresh = this.pendingCandidates.filter((p) => Date.now() - p.at <= maxAge);
    this.pendingCandidates = [];
    for (const p of fresh) await this.pc?.addIceCandidate(p.c).catch(() => {});
  }

  /** ICE restart: the caller renegotiates (a `reoffer` in the same call's session). */
  async restartIce() {
    if (!this.pc || this.state === "ended" || this.direction !== "outgoing" || !this.sid) return;
    try {
      const offer = await this.pc.createOffer({ iceRestart: true });
      await this.pc.setLocalDescription(offer);
      await this.sendMsg({ k: "reoffer", sdp: offer.sdp ?? "", video: this.video });
    } catch {
      /* the recovery timer ends the call if this does not help */
    }
  }

  setMuted(muted = !this.muted) {
    this.muted = muted;
    this.localStream?.getAudioTracks().forEach((t) => (t.enabled = !muted));
    return muted;
  }

  setCameraOff(off = !this.cameraOff) {
    this.cameraOff = off;
    this.localStream?.getVideoTracks().forEach((t) => (t.enabled = !off));
    return off;
  }

  /** Switch to the next camera (if there is more than one). Returns the new camera's label. */
  async switchCamera() {
    if (!this.pc || !this.localStream) return "";
    const cams = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
    const current = this.localStream.getVideoTracks()[0];
    if (!current || cams.length < 2) return current?.label ?? "";
    const idx = cams.findIndex((c) => c.deviceId === current.getSettings().deviceId);
    const next = cams[(idx + 1) % cams.length];
    const stream = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: next.deviceId } } });
    const track = stream.getVideoTracks()[0];
    const sender = this.pc.getSenders().find((s) => s.track?.kind === "video");
    await sender?.replaceTrack(track);
    this.localStream.removeTrack(current);
    current.stop();
    this.localStream.addTrack(track);
    this.emit("localStream", this.localStream);
    return track.label;
  }

  /** Seconds since connected (0 before). */
  durationS() {
    return this.connectedAt ? Math.floor((Date.now() - this.connectedAt) / 1000) : 0;
  }

  /** Inbound packets per media kind and the selected candidate pair's types, from getStats(). */
  async stats() {
    /** @type {{audio: number, video: number, local: string, remote: string}} */
    const out = { audio: 0, video: 0, local: "", remote: "" };
    if (!this.pc) return out;
    const report = await this.pc.getStats();
    /** @type {Map<string, any>} */
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    for (const s of byId.values()) {
      if (s.type === "inbound-rtp" && (s.kind === "audio" || s.kind === "video")) out[/** @type {"audio"|"video"} */ (s.kind)] += s.packetsReceived ?? 0;
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        out.local = byId.get(pair?.localCandidateId)?.candidateType ?? "";
        out.remote = byId.get(pair?.remoteCandidateId)?.candidateType ?? "";
      }
    }
    return out;
  }
}

