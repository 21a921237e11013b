"""Call semantics of one device (docs/client-protocol.md, "Calls"): a pure state machine over node/protocol/e2ee.

Rules
- States `idle -> outgoing | incoming -> connecting -> connected -> ended`; `ended` carries one `End` reason:
  hangup, rejected, busy, missed, failed, answered_elsewhere. An ended call takes no more input.
- Every body is an e2ee body (docs/e2ee.md); one that does not open is dropped and changes nothing.
- Every device of the callee rings. The device that accepts (or declines) tells its own other devices with an
  e2ee SELF notice to its own id, and they end `answered_elsewhere` (or `rejected`). A device already in a call
  answers `call_reject` "busy" and sends no notice, so the other devices keep ringing; the caller keeps ringing
  too and, if nobody answers within the ring timeout, ends `busy` (some device was busy) or `missed`.
- The caller keeps the first answer; every later device's answer gets a hangup "answered_elsewhere".
- Timers: ring (60 s, the mailbox TTL), ICE gathering (10 s: then end-of-candidates is sent for the app), connect
  and reconnect window (30 s: a call that does not reach or regain `connected` in it fails). When media is lost the
  caller is asked (`RestartIce`) for a new offer in the same call (a Reoffer with new ICE credentials).
- Glare: when both sides renegotiate at once the lower id wins (its reoffer stands); the other drops its own and
  answers.
- Candidates that arrive before the callee accepts are buffered, and bodies that arrive before their offer too;
  both are dropped when older than the ring timeout, and candidates of an old ICE generation (`ufrag`) are dropped.
- Bounded: CALLS_MAX live calls, PENDING_MAX early bodies, BUFFER_MAX buffered candidates per call.

Pure: `now` (monotonic seconds) and `wall_s` (unix seconds, for offer freshness) are given; randomness is injected.
Outputs are commands: `Send` (an envelope to send), `Changed`, `Description`, `Candidate`, `RestartIce`.
"""

from __future__ import annotations

import enum
from collections import OrderedDict

import attrs

from node.protocol.e2ee import (
    EARLY,
    OFFER,
    SELF,
    Answer,
    Elsewhere,
    Hangup,
    Ice,
    IncomingCall,
    Offer,
    OfferReplayCache,
    OutgoingCall,
    Plaintext,
    Reanswer,
    Reject,
    Reoffer,
    body_type,
)
from node.protocol.errors import LocalProtocolError, RemoteProtocolError
from node.protocol.identity import Identity
from node.protocol.noise import RandomBytes

CALLS_MAX = 8
PENDING_MAX = 64
BUFFER_MAX = 64
ENDED_REMEMBERED_MAX = 256
CALL_ID_BYTES = 16


class State(enum.StrEnum):
    IDLE = "idle"
    OUTGOING = "outgoing"
    INCOMING = "incoming"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ENDED = "ended"


class End(enum.StrEnum):
    HANGUP = "hangup"
    REJECTED = "rejected"
    BUSY = "busy"
    MISSED = "missed"
    FAILED = "failed"
    ANSWERED_ELSEWHERE = "answered_elsewhere"


# a remote hangup's reason -> how the call ends here
_HANGUP_END = {"answered_elsewhere": End.ANSWERED_ELSEWHERE, "timeout": End.MISSED, "failed": End.FAILED,
               "busy": End.BUSY}  # fmt: skip


@attrs.frozen(kw_only=True, slots=True)
class Timers:
    ring_timeout_s: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    gather_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    reconnect_window_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True, slots=True)
class Send:
    kind: str
    to: bytes
    call: bytes
    body: bytes


@attrs.frozen(kw_only=True, slots=True)
class Changed:
    call: bytes
    peer: bytes
    state: State
    end: End | None = None


@attrs.frozen(kw_only=True, slots=True)
class Description:
    """An SDP for the app: `what` is offer, answer, reoffer or reanswer."""

    call: bytes
    peer: bytes
    what: str
    sdp: str
    video: bool


@attrs.frozen(kw_only=True, slots=True)
class Candidate:
    call: bytes
    peer: bytes
    ice: Ice


@attrs.frozen(kw_only=True, slots=True)
class RestartIce:
    """Media was lost: make a new offer with new ICE credentials and pass it to `renegotiate`."""

    call: bytes
    peer: bytes


Command = Send | Changed | Description | Candidate | RestartIce


def sdp_ufrag(sdp: str) -> str | None:
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:") :].strip()
    return None


class Call:
    """One call on this device (made by Phone)."""

    def __init__(self, *, call: bytes, peer: bytes, outgoing: bool, e2ee: OutgoingCall | IncomingCall, video: bool):
        self.call, self.peer, self.outgoing, self.video = call, peer, outgoing, video
        self.e2ee = e2ee
        self.state = State.IDLE
        self.end: End | None = None
        self.sid: bytes | None = None  # the caller's chosen session
        self.deadline = float("inf")  # ring, connect or reconnect
        self.gather_deadline = float("inf")
        self.buffer: list[tuple[float, Ice]] = []
        self.reoffer_pending = False
        self.remote_ufrag: str | None = None
        self.busy_seen = False
        self.connected_once = False


class Phone:
    """Every call of one device. Methods return the commands to carry out, in order."""

    def __init__(self, *, identity: Identity, random_bytes: RandomBytes, timers: Timers | None = None) -> None:
        self.identity = identity
        self.timers = timers or Timers()
        self._random = random_bytes
        self._replay = OfferReplayCache()
        self.calls: dict[bytes, Call] = {}
        self._pending: OrderedDict[tuple[bytes, bytes, int], tuple[float, str, bytes]] = OrderedDict()
        self._pending_seq = 0
        self._ended: OrderedDict[bytes, None] = OrderedDict()

    # --- queries -------------------------------------------------------------------------------------------

    def busy(self) -> bool:
        return any(c.state in (State.OUTGOING, State.CONNECTING, State.CONNECTED) for c in self.calls.values())

    def next_deadline(self) -> float:
        return min([c.deadline for c in self.calls.values()] + [c.gather_deadline for c in self.calls.values()],
                   default=float("inf"))  # fmt: skip

    def _get(self, call: bytes) -> Call:
        c = self.calls.get(call)
        if c is None:
            raise LocalProtocolError("no such call")
        return c

    # --- local actions -------------------------------------------------------------------------------------

    def start_call(
        self, *, peer: bytes, sdp: str, video: bool, now: float, wall_s: float
    ) -> tuple[bytes, list[Command]]:
        if len(self.calls) >= CALLS_MAX:
            raise LocalProtocolError("too many calls")
        call = self._random(CALL_ID_BYTES)
        e2ee = OutgoingCall(identity=self.identity, callee=peer, call=call, random_bytes=self._random)
        c = self.calls[call] = Call(call=call, peer=peer, outgoing=True, e2ee=e2ee, video=video)
        body = e2ee.offer(Offer(sdp=sdp, video=video, ts=int(wall_s)))
        c.deadline = now + self.timers.ring_timeout_s
        c.gather_deadline = now + self.timers.gather_timeout_s
        return call, [Send(kind="call_offer", to=peer, call=call, body=body), self._set(c, State.OUTGOING)]

    def accept(self, call: bytes, *, sdp: str, video: bool, now: float) -> list[Command]:
        c = self._get(call)
        if c.state is not State.INCOMING or not isinstance(c.e2ee, IncomingCall):
            raise LocalProtocolError(f"cannot accept a call in state {c.state}")
        c.video = video
        out: list[Command] = [
            Send(kind="call_answer", to=c.peer, call=call, body=c.e2ee.answer(Answer(sdp=sdp, video=video))),
            Send(kind="call_hangup", to=self.identity.id, call=call, body=c.e2ee.elsewhere("answered")),
        ]
        c.deadline = now + self.timers.reconnect_window_s
        c.gather_deadline = now + self.timers.gather_timeout_s
        out.append(self._set(c, State.CONNECTING))
        for at, ice in c.buffer:
            if now - at <= self.timers.ring_timeout_s and self._fresh(c, ice):
                out.append(Candidate(call=call, peer=c.peer, ice=ice))
        c.buffer.clear()
        return out

    def reject(self, call: bytes, *, reason: str = "declined", now: float) -> list[Command]:
        c = self._get(call)
        if c.state is not State.INCOMING or not isinstance(c.e2ee, IncomingCall):
            raise LocalProtocolError(f"cannot reject a call in state {c.state}")
        out: list[Command] = [Send(kind="call_reject", to=c.peer, call=call, body=c.e2ee.answer(Reject(reason=reason)))]
        out.append(Send(kind="call_hangup", to=self.identity.id, call=call, body=c.e2ee.elsewhere("rejected")))
        out.append(self._finish(c, End.REJECTED))
        return out

    def hangup(self, call: bytes, *, now: float) -> list[Command]:
        c = self._get(call)
        if c.state is State.INCOMING:
            return self.reject(call, reason="declined", now=now)
        reason = "cancelled" if c.state is State.OUTGOING else "ended"
        return [*self._sends(c, Hangup(reason=reason)), self._finish(c, End.HANGUP)]

    def local_candidate(self, call: bytes, ice: Ice, *, now: float) -> list[Command]:
        c = self._get(call)
        if c.state in (State.ENDED, State.INCOMING):
            return []
        if not ice.cand:
            c.gather_deadline = float("inf")
        return self._sends(c, ice)

    def gathering_done(self, call: bytes, *, now: float) -> list[Command]:
        return self.local_candidate(call, Ice(cand=""), now=now)

    def media_connected(self, call: bytes, *, now: float) -> list[Command]:
        c = self._get(call)
        if c.state is not State.CONNECTING:
            return []
        c.deadline = float("inf")
        c.connected_once = True
        return [self._set(c, State.CONNECTED)]

    def media_lost(self, call: bytes, *, now: float) -> list[Command]:
        """ICE failed or disconnected: the reconnect window starts; the caller restarts ICE."""
        c = self._get(call)
        if c.state is not State.CONNECTED:
            return []
        c.deadline = now + self.timers.reconnect_window_s
        out: list[Command] = [self._set(c, State.CONNECTING)]
        if c.outgoing:
            out.append(RestartIce(call=call, peer=c.peer))
        return out

    def renegotiate(self, call: bytes, *, sdp: str, video: bool, now: float) -> list[Command]:
        """A new offer in the same call (an ICE restart, or video on/off)."""
        c = self._get(call)
        if c.state not in (State.CONNECTING, State.CONNECTED) or (c.outgoing and c.sid is None):
            raise LocalProtocolError(f"cannot renegotiate a call in state {c.state}")
        c.reoffer_pending = True
        c.gather_deadline = now + self.timers.gather_timeout_s
        return self._sends(c, Reoffer(sdp=sdp, video=video))

    def reanswer(self, call: bytes, *, sdp: str, video: bool, now: float) -> list[Command]:
        c = self._get(call)
        c.gather_deadline = now + self.timers.gather_timeout_s
        return self._sends(c, Reanswer(sdp=sdp, video=video))

    def offer_expired(self, call: bytes, *, now: float) -> list[Command]:
        """The node's `expired` receipt for our offer: no device of the callee came online in time.

        The offer is withdrawn as at the ring timeout (hangup `timeout`). `expired` is the first owner's word: the
        other mailbox replicas expire a little later (each counts from its own copy's arrival), and where the
        delivery receipts were lost the callee may even be ringing (docs/protocol.md, "Cancel by hangup"). The
        hangup cancels a copy still queued, and ends a ring that got through as missed."""
        c = self.calls.get(call)
        if c is None or c.state is not State.OUTGOING:
            return []
        return self._withdraw(c)

    def offer_refused(self, call: bytes, *, now: float) -> list[Command]:
        """A `rejected` receipt for our offer (rate limited, too large): the call cannot be placed."""
        c = self.calls.get(call)
        if c is None or c.state is not State.OUTGOING:
            return []
        return [self._finish(c, End.FAILED)]

    def tick(self, now: float) -> list[Command]:
        out: list[Command] = []
        for c in list(self.calls.values()):
            if now >= c.gather_deadline:
                out += self.local_candidate(c.call, Ice(cand=""), now=now)
            if now < c.deadline:
                continue
            if c.state is State.OUTGOING:
                out += self._withdraw(c)
            elif c.state is State.INCOMING:
                out.append(self._finish(c, End.MISSED))
            elif c.state is State.CONNECTING:
                out += [*self._sends(c, Hangup(reason="failed")), self._finish(c, End.FAILED)]
        return out

    # --- the network ---------------------------------------------------------------------------------------

    def on_envelope(
        self, *, kind: str, sender: bytes, call: bytes, body: bytes, now: float, wall_s: float
    ) -> list[Command]:
        """A delivered envelope. Bodies that do not open (or do not fit) are dropped: no commands."""
        try:
            btype = body_type(body)
            c = self.calls.get(call)
            if c is None:
                if call in self._ended:
                    return []
                if btype == OFFER and kind == "call_offer":
                    return self._on_offer(sender, call, kind, body, now, wall_s)
                if btype in (EARLY, SELF):
                    self._remember(sender, call, kind, body, now)
                return []
            if c.state is State.ENDED:
                return []
            opened = c.e2ee.open(sender=sender, kind=kind, body=body)
        except (RemoteProtocolError, LocalProtocolError):
            return []
        return self._on_plaintext(c, opened.sid, opened.msg, now)

    def _on_offer(self, sender: bytes, call: bytes, kind: str, body: bytes, now: float, wall_s: float) -> list[Command]:
        incoming, offer = IncomingCall.from_offer(
            identity=self.identity, sender=sender, call=call, kind=kind, body=body, now_s=int(wall_s),
            replay=self._replay, random_bytes=self._random,
        )  # fmt: skip
        c = Call(call=call, peer=sender, outgoing=False, e2ee=incoming, video=offer.video)
        age = max(0.0, wall_s - offer.ts)
        if age >= self.timers.ring_timeout_s or len(self.calls) >= CALLS_MAX:
            self._remember_ended(call)
            return [Changed(call=call, peer=sender, state=State.ENDED, end=End.MISSED)]
        if self.busy():
            self._remember_ended(call)
            reply = incoming.answer(Reject(reason="busy"))
            return [Send(kind="call_reject", to=sender, call=call, body=reply),
                    Changed(call=call, peer=sender, state=State.ENDED, end=End.BUSY)]  # fmt: skip
        self.calls[call] = c
        c.deadline = now + self.timers.ring_timeout_s - age
        c.remote_ufrag = sdp_ufrag(offer.sdp)
        out: list[Command] = [self._set(c, State.INCOMING)]
        out.append(Description(call=call, peer=sender, what="offer", sdp=offer.sdp, video=offer.video))
        for key in [k for k in self._pending if k[0] in (sender, self.identity.id) and k[1] == call]:
            at, pkind, pbody = self._pending.pop(key)
            if now - at <= self.timers.ring_timeout_s:
                out += self.on_envelope(kind=pkind, sender=key[0], call=call, body=pbody, now=now, wall_s=wall_s)
        return out

    def _on_plaintext(self, c: Call, sid: bytes | None, msg: Plaintext, now: float) -> list[Command]:
        if isinstance(msg, Answer):
            return self._on_answer(c, sid, msg, now)
        if isinstance(msg, Reject):
            if c.state is not State.OUTGOING:
                return []
            if msg.reason == "busy":
                c.busy_seen = True
                return []
            return [self._finish(c, End.REJECTED)]
        if isinstance(msg, Elsewhere):
            if c.state is not State.INCOMING:
                return []
            return [self._finish(c, End.ANSWERED_ELSEWHERE if msg.how == "answered" else End.REJECTED)]
        if c.outgoing and c.sid is not None and sid not in (None, c.sid):
            return []  # a transport body of a session we hung up (another device's)
        if isinstance(msg, Ice):
            return self._on_ice(c, msg, now)
        if isinstance(msg, Hangup):
            return [self._finish(c, _HANGUP_END.get(msg.reason, End.HANGUP))]
        if isinstance(msg, Reoffer):
            return self._on_reoffer(c, msg)
        if isinstance(msg, Reanswer) and c.reoffer_pending:
            c.reoffer_pending = False
            c.remote_ufrag = sdp_ufrag(msg.sdp) or c.remote_ufrag
            return [Description(call=c.call, peer=c.peer, what="reanswer", sdp=msg.sdp, video=msg.video)]
        return []

    def _on_answer(self, c: Call, sid: bytes | None, msg: Answer, now: float) -> list[Command]:
        if c.state is not State.OUTGOING:
            assert isinstance(c.e2ee, OutgoingCall) and sid is not None
            return [Send(kind="call_hangup", to=c.peer, call=c.call,
                         body=c.e2ee.seal(sid, Hangup(reason="answered_elsewhere")))]  # fmt: skip
        c.sid = sid
        c.remote_ufrag = sdp_ufrag(msg.sdp)
        c.deadline = now + self.timers.reconnect_window_s
        return [self._set(c, State.CONNECTING),
                Description(call=c.call, peer=c.peer, what="answer", sdp=msg.sdp, video=msg.video)]  # fmt: skip

    def _on_ice(self, c: Call, ice: Ice, now: float) -> list[Command]:
        if c.state is State.INCOMING:
            if len(c.buffer) < BUFFER_MAX:
                c.buffer.append((now, ice))
            return []
        if c.state is State.OUTGOING or not self._fresh(c, ice):
            return []
        return [Candidate(call=c.call, peer=c.peer, ice=ice)]

    def _on_reoffer(self, c: Call, msg: Reoffer) -> list[Command]:
        if c.state not in (State.CONNECTING, State.CONNECTED):
            return []
        if c.reoffer_pending and self.identity.id < c.peer:
            return []  # glare: the lower id's reoffer wins; the peer drops its own and answers ours
        c.reoffer_pending = False
        c.remote_ufrag = sdp_ufrag(msg.sdp) or c.remote_ufrag
        return [Description(call=c.call, peer=c.peer, what="reoffer", sdp=msg.sdp, video=msg.video)]

    # --- helpers -------------------------------------------------------------------------------------------

    @staticmethod
    def _fresh(c: Call, ice: Ice) -> bool:
        """False for a candidate of an older ICE generation than the current remote description."""
        return ice.ufrag is None or c.remote_ufrag is None or ice.ufrag == c.remote_ufrag

    def _sends(self, c: Call, msg: Plaintext) -> list[Command]:
        """`msg` to the peer: an EARLY body before the answer, a transport body after it."""
        e2ee = c.e2ee
        if isinstance(e2ee, OutgoingCall):
            if c.sid is None:
                if not isinstance(msg, (Ice, Hangup)):
                    return []
                body = e2ee.early(msg)
            else:
                body = e2ee.seal(c.sid, msg)
        elif e2ee.sid is None:
            return []  # a callee that has not answered sends nothing but its answer
        else:
            body = e2ee.seal(msg)
        kind = {"ice": "call_ice", "hangup": "call_hangup", "reoffer": "call_offer", "reanswer": "call_answer"}
        return [Send(kind=kind[msg.KIND], to=c.peer, call=c.call, body=body)]

    def _set(self, c: Call, state: State) -> Changed:
        c.state = state
        return Changed(call=c.call, peer=c.peer, state=state)

    def _withdraw(self, c: Call) -> list[Command]:
        """An unanswered outgoing call ends (`busy` if a device said so, else `missed`) and its offer is withdrawn
        (hangup `timeout`): at the ring timeout and at the offer's `expired` receipt."""
        return [*self._sends(c, Hangup(reason="timeout")), self._finish(c, End.BUSY if c.busy_seen else End.MISSED)]

    def _finish(self, c: Call, end: End) -> Changed:
        c.state, c.end = State.ENDED, end
        c.deadline = c.gather_deadline = float("inf")
        self.calls.pop(c.call, None)
        self._remember_ended(c.call)
        return Changed(call=c.call, peer=c.peer, state=State.ENDED, end=end)

    def _remember_ended(self, call: bytes) -> None:
        self._ended[call] = None
        while len(self._ended) > ENDED_REMEMBERED_MAX:
            self._ended.popitem(last=False)

    def _remember(self, sender: bytes, call: bytes, kind: str, body: bytes, now: float) -> None:
        self._pending_seq += 1
        self._pending[(sender, call, self._pending_seq)] = (now, kind, body)
        while len(self._pending) > PENDING_MAX:
            self._pending.popitem(last=False)
