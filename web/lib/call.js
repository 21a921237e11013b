// Calls over a session (the Call semantics of docs/web.md): RTCPeerConnection with the node's ICE servers, bodies
// sealed end to end through a pluggable BodyCrypto, states idle → outgoing/incoming → connecting → connected → ended.

import { decode, encode } from "@msgpack/msgpack";
import { b64uEncode, equal, randomBytes } from "./bytes.js";
import { Emitter } from "./emitter.js";

export const RING_TIMEOUT_MS = 60_000; // the mailbox TTL
export const ICE_GATHER_TIMEOUT_MS = 10_000;
export const RECONNECT_WINDOW_MS = 30_000;
export const CALL_ID_BYTES = 16;
export const SIGNAL_MAX_BYTES = 60_000;
export const BUFFERED_CANDIDATES_MAX = 200;

/**
 * @typedef {"idle"|"outgoing"|"incoming"|"connecting"|"connected"|"ended"} CallState
 * @typedef {"hangup"|"rejected"|"busy"|"missed"|"failed"|"answered_elsewhere"} EndReason
 * @typedef {{seal(peer: Uint8Array, call: Uint8Array, kind: string, plaintext: Uint8Array): Promise<Uint8Array>,
 *   open(peer: Uint8Array, call: Uint8Array, kind: string, body: Uint8Array): Promise<Uint8Array>}} BodyCrypto
 * @typedef {{alwaysRelay?: boolean, ringTimeoutMs?: number, iceGatherTimeoutMs?: number, reconnectWindowMs?: number,
 *   iceServers?: RTCIceServer[] | null, crypto?: BodyCrypto,
 *   media?: (constraints: MediaStreamConstraints) => Promise<MediaStream>}} CallSettings
 * @typedef {{state: {state: CallState, detail: string}, remoteStream: MediaStream, localStream: MediaStream}} CallEvents
 * @typedef {{incoming: Call, call: Call}} PhoneEvents
 */

/** Bodies passed through unchanged: for tests of the signalling only. The page uses the e2ee module. */
export const plainBodies = /** @type {BodyCrypto} */ ({
  seal: async (_p, _c, _k, plaintext) => plaintext,
  open: async (_p, _c, _k, body) => body,
});

/** @param {Record<string, unknown>} m */
function packSignal(m) {
  return encode({ v: 1, ...m });
}

/** @param {Uint8Array} b @returns {Record<string, any>} */
function unpackSignal(b) {
  if (b.length > SIGNAL_MAX_BYTES) throw new Error("signal too large");
  const m = decode(b, { maxStrLength: SIGNAL_MAX_BYTES, maxBinLength: 0, maxArrayLength: 64, maxMapLength: 16, maxExtLength: 0 });
  if (typeof m !== "object" || m === null || Array.isArray(m) || /** @type {any} */ (m).v !== 1) throw new Error("not a v1 signal");
  return /** @type {Record<string, any>} */ (m);
}

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
    /** @type {Map<string, Call>} */
    this.calls = new Map();
    session.on("deliver", (d) => void this.onDeliver(d).catch((e) => console.warn("dropped a signal", e)));
  }

  get crypto() {
    return this.settings.crypto ?? plainBodies;
  }

  /** The call in progress (not ended), if any. */
  active() {
    for (const c of this.calls.values()) if (c.state !== "ended" && c.state !== "incoming") return c;
    return null;
  }

  /**
   * @param {Uint8Array} peer
   * @param {{video?: boolean}} [opts]
   */
  async start(peer, opts = {}) {
    const call = new Call(this, peer, randomBytes(CALL_ID_BYTES), "outgoing", Boolean(opts.video));
    this.calls.set(call.key, call);
    this.emit("call", call);
    await call.dial();
    return call;
  }

  /**
   * @param {Uint8Array} peer @param {Uint8Array} callId
   * @param {import("./codec.js").Kind} kind @param {Record<string, unknown>} signal
   * @param {{onQueued?: () => void}} [opts]
   */
  async send(peer, callId, kind, signal, opts) {
    const body = await this.crypto.seal(peer, callId, kind, packSignal(signal));
    return this.session.send(kind, peer, callId, body, opts);
  }

  /** @param {import("./codec.js").Deliver} d */
  async onDeliver(d) {
    const plaintext = await this.crypto.open(d.from, d.call, d.kind, d.body);
    const signal = unpackSignal(plaintext);
    const key = b64uEncode(d.call);
    const existing = this.calls.get(key);
    const fromSelf = equal(d.from, this.session.identity.id);
    if (existing) {
      if (fromSelf && !equal(existing.peer, d.from)) existing.onOwnDevice(d.kind, signal);
      else if (equal(existing.peer, d.from)) await existing.onSignal(d.kind, signal);
      return;
    }
    if (d.kind !== "call_offer" || fromSelf) return;
    if (this.active()) {
      await this.send(d.from, d.call, "call_reject", { reason: "busy" }).catch(() => {});
      return;
    }
    const call = new Call(this, d.from, d.call, "incoming", Boolean(signal.video));
    call.remoteOffer = { type: "offer", sdp: String(signal.sdp ?? "") };
    this.calls.set(key, call);
    call.armRing();
    this.emit("call", call);
    this.emit("incoming", call);
  }
}

/** @extends {Emitter<CallEvents>} */
export class Call extends Emitter {
  /**
   * @param {Phone} phone @param {Uint8Array} peer @param {Uint8Array} id
   * @param {"outgoing"|"incoming"} direction @param {boolean} video
   */
  constructor(phone, peer, id, direction, video) {
    super();
    this.phone = phone;
    this.peer = peer;
    this.peerText = b64uEncode(peer);
    this.id = id;
    this.key = b64uEncode(id);
    this.direction = direction;
    this.video = video;
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
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.ringTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.recoverTimer = null;
    this.connectedAt = 0;
    this.muted = false;
    this.cameraOff = false;
    this.onOnline = () => void this.restartIce();
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
    this.emit("state", { state, detail });
  }

  /** @param {EndReason} reason @param {string} [detail] */
  end(reason, detail = "") {
    if (this.state === "ended") return;
    this.reason = reason;
    this.setState("ended", detail || reason);
    this.state = "ended";
    for (const t of [this.ringTimer, this.recoverTimer]) if (t) clearTimeout(t);
    globalThis.removeEventListener?.("online", this.onOnline);
    this.pc?.close();
    this.localStream?.getTracks().forEach((t) => t.stop());
  }

  armRing() {
    this.ringTimer = setTimeout(() => {
      if (this.state === "outgoing") void this.phone.send(this.peer, this.id, "call_hangup", {}).catch(() => {});
      if (this.state === "outgoing" || this.state === "incoming") this.end("missed", "no answer within the ring timeout");
    }, this.settings.ringTimeoutMs ?? RING_TIMEOUT_MS);
  }

  async setupPeerConnection() {
    const media = this.settings.media ?? ((c) => navigator.mediaDevices.getUserMedia(c));
    this.localStream = await media({ audio: true, video: this.video });
    this.emit("localStream", this.localStream);
    const servers = this.settings.iceServers ?? (await this.phone.session.iceServers().catch(() => []));
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: this.settings.alwaysRelay ? "relay" : "all" });
    this.pc = pc;
    for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
    pc.ontrack = (ev) => {
      if (!this.remoteStream.getTracks().includes(ev.track)) this.remoteStream.addTrack(ev.track);
      this.emit("remoteStream", this.remoteStream);
    };
    let gathered = 0;
    pc.onicecandidate = (ev) => {
      if (!ev.candidate) return;
      gathered++;
      void this.phone.send(this.peer, this.id, "call_ice", { c: [ev.candidate.toJSON()] }).catch(() => {});
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
      if (!this.recoverTimer)
        this.recoverTimer = setTimeout(() => this.end("failed", "the media path did not come back"), this.settings.reconnectWindowMs ?? RECONNECT_WINDOW_MS);
    }
  }

  async dial() {
    try {
      const pc = await this.setupPeerConnection();
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.armRing();
      const receipt = await this.phone.send(this.peer, this.id, "call_offer", { sdp: offer.sdp ?? "", video: this.video }, {
        onQueued: () => this.setState("outgoing", "ringing via mailbox (the callee is offline)"),
      });
      if (this.state !== "outgoing") return;
      if (receipt.status === "delivered") this.setState("outgoing", "ringing");
      else if (receipt.status === "expired") this.end("missed", "the callee did not come online");
      else if (receipt.status === "rejected") this.end("failed", `the node refused the offer (${receipt.reason})`);
    } catch (e) {
      this.end("failed", e instanceof Error ? e.message : String(e));
    }
  }

  async accept() {
    if (this.state !== "incoming" || !this.remoteOffer) return;
    this.setState("connecting");
    if (this.ringTimer) clearTimeout(this.ringTimer);
    try {
      const pc = await this.setupPeerConnection();
      await pc.setRemoteDescription(this.remoteOffer);
      await this.flushCandidates();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      await this.phone.send(this.peer, this.id, "call_answer", { sdp: answer.sdp ?? "" });
      // tell this identity's other devices to stop ringing
      void this.phone.send(this.phone.session.identity.id, this.id, "call_answer", { elsewhere: true, peer: this.peerText }).catch(() => {});
    } catch (e) {
      this.end("failed", e instanceof Error ? e.message : String(e));
    }
  }

  /** @param {"rejected"|"busy"} [reason] */
  async reject(reason = "rejected") {
    if (this.state !== "incoming") return;
    this.end("rejected", "you declined");
    await this.phone.send(this.peer, this.id, "call_reject", { reason }).catch(() => {});
  }

  async hangup() {
    if (this.state === "ended") return;
    const wasIncoming = this.state === "incoming";
    this.end(wasIncoming ? "rejected" : "hangup", "you hung up");
    await this.phone.send(this.peer, this.id, wasIncoming ? "call_reject" : "call_hangup", wasIncoming ? { reason: "rejected" } : {}).catch(() => {});
  }

  /** @param {string} kind @param {Record<string, any>} signal */
  onOwnDevice(kind, signal) {
    if (kind === "call_answer" && signal.elsewhere && this.state === "incoming") this.end("answered_elsewhere", "answered on another device");
  }

  /** @param {string} kind @param {Record<string, any>} signal */
  async onSignal(kind, signal) {
    if (this.state === "ended") return;
    switch (kind) {
      case "call_answer":
        if (this.direction !== "outgoing" || !this.pc || typeof signal.sdp !== "string") return;
        if (this.ringTimer) clearTimeout(this.ringTimer);
        if (this.state === "outgoing") this.setState("connecting");
        await this.pc.setRemoteDescription({ type: "answer", sdp: signal.sdp });
        await this.flushCandidates();
        break;
      case "call_offer": // an ICE restart in the same call
        if (this.direction !== "incoming" || !this.pc || typeof signal.sdp !== "string") return;
        await this.pc.setRemoteDescription({ type: "offer", sdp: signal.sdp });
        {
          const answer = await this.pc.createAnswer();
          await this.pc.setLocalDescription(answer);
          await this.phone.send(this.peer, this.id, "call_answer", { sdp: answer.sdp ?? "" });
        }
        break;
      case "call_ice":
        for (const c of Array.isArray(signal.c) ? signal.c.slice(0, 16) : []) {
          if (typeof c?.candidate !== "string") continue;
          if (this.pc?.remoteDescription) await this.pc.addIceCandidate(c).catch(() => {});
          else if (this.pendingCandidates.length < BUFFERED_CANDIDATES_MAX) this.pendingCandidates.push({ c, at: Date.now() });
        }
        break;
      case "call_reject":
        this.end(signal.reason === "busy" ? "busy" : "rejected", signal.reason === "busy" ? "the callee is in another call" : "the callee declined");
        break;
      case "call_hangup":
        this.end(this.state === "incoming" ? "missed" : "hangup", this.state === "incoming" ? "the caller gave up" : "the other side hung up");
        break;
    }
  }

  async flushCandidates() {
    const maxAge = this.settings.ringTimeoutMs ?? RING_TIMEOUT_MS;
    const fresh = this.pendingCandidates.filter((p) => Date.now() - p.at <= maxAge);
    this.pendingCandidates = [];
    for (const p of fresh) await this.pc?.addIceCandidate(p.c).catch(() => {});
  }

  /** ICE restart (the caller makes a new offer in the same call). */
  async restartIce() {
    if (!this.pc || this.state === "ended" || this.direction !== "outgoing") return;
    try {
      const offer = await this.pc.createOffer({ iceRestart: true });
      await this.pc.setLocalDescription(offer);
      await this.phone.send(this.peer, this.id, "call_offer", { sdp: offer.sdp ?? "", video: this.video, restart: true });
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
