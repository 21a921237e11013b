"""End-to-end encryption of call signalling bodies (docs/e2ee.md is the byte-exact statement; this is the code).

Rules
- A call is one Noise_KK_25519_ChaChaPoly_BLAKE2b handshake between the caller (initiator) and each answering
  callee device (responder); static keys are the X25519 forms of the two Ed25519 ids; the prologue binds the
  protocol label, the call id, the caller id and the callee id. `call_offer` carries message 1 (the caller's
  ephemeral), `call_answer` / `call_reject` message 2 (the device's ephemeral); every later body is a transport
  message of that session with an explicit sequence number.
- Before any answer the caller has no transport keys: its `call_ice` / `call_hangup` bodies are one-way
  Noise_K messages (EARLY), bound by the prologue to the offer (a hash of its body) and to their sequence number.
  A callee device tells its own other devices "answered/rejected elsewhere" with a Noise_K message to its own
  static key (SELF), bound to the offer the same way.
- Refused, changing no state: anything that does not authenticate (tampered bytes, a wrong `from`, a wrong call
  id), a body whose envelope kind does not fit it, a replayed offer (seen call id, or `ts` outside the window),
  a transport or early message whose sequence number is not above the last one accepted (a replay or a
  reorder), a second answer from the same device, a second SELF notice for a call.
- No I/O, no clock, no global randomness: the wall clock (`now_s`, unix seconds) and `random_bytes(n)` are given.

Theory of operation
Caller: `OutgoingCall(...)`, then `offer(Offer)` -> body of `call_offer`. Until an answer arrives it may send
`early(Ice | Hangup)`. Each `call_answer`/`call_reject` body from any device of the callee goes to `open(...)`,
which runs message 2 on a copy of the post-offer handshake state, so every device's answer becomes its own
session, named by `sid` (8 bytes of its handshake hash). The caller keeps the first answer; to every later one it
sends `seal(sid, Hangup(reason="answered_elsewhere"))`. Transport bodies name their session, so the devices of
one id that all receive a body can tell whose it is (`NotForThisDevice` for the others).
Callee device: `IncomingCall.from_offer(...)` opens message 1 (checking freshness against `OfferReplayCache`),
`answer(Answer | Reject)` writes message 2, and `elsewhere(how)` is the body of a `call_hangup` to its own id.
Both sides then use `seal(...)` / `open(...)`; `open` returns an `Opened(sid, msg)`.
"""

from __future__ import annotations

import attrs
import nacl.bindings as sodium

from node.errors import Expired, LocalProtocolError, Replayed
from node.identity import ID_BYTES, Identity, curve25519_public
from node.protocol.e2ee_plaintext import (
    Answer,
    BadPlaintext,
    E2eeError,
    Elsewhere,
    Hangup,
    Ice,
    NotForThisDevice,
    Offer,
    Plaintext,
    Reanswer,
    Reject,
    Reoffer,
    open_plaintext,
    seal_plaintext,
)
from node.protocol.e2ee_replay import OfferReplayCache
from node.protocol.noise import (
    CipherState,
    HandshakeState,
    Keypair,
    NoiseError,
    RandomBytes,
    ed25519_to_x25519_keypair,
)

__all__ = [
    "ANSWER",
    "EARLY",
    "ENVELOPE_KIND",
    "OFFER",
    "SELF",
    "TRANSPORT",
    "Answer",
    "BadPlaintext",
    "E2eeError",
    "Elsewhere",
    "Expired",
    "Hangup",
    "Ice",
    "IncomingCall",
    "NotForThisDevice",
    "Offer",
    "OfferReplayCache",
    "Opened",
    "OutgoingCall",
    "Plaintext",
    "Reanswer",
    "Reject",
    "Reoffer",
    "Replayed",
    "body_type",
]

VERSION = 1
OFFER, ANSWER, EARLY, TRANSPORT, SELF = 1, 2, 3, 4, 5
CALL_PROLOGUE = b"homing/v1/e2ee/call"
EARLY_PROLOGUE = b"homing/v1/e2ee/early"
SELF_PROLOGUE = b"homing/v1/e2ee/self"
CALL_ID_MAX_BYTES = 64
BODY_MAX_BYTES = 65536
SID_BYTES = 8
SEQ_BYTES = 8
OFFER_DIGEST_BYTES = 32
SEQ_MAX = 2**63 - 1
SESSIONS_MAX = 8  # answers (devices) a caller keeps per call

# Which plaintext kinds each body type carries, and the envelope kind (`t`) each plaintext kind travels in.
BODY_KINDS: dict[int, frozenset[str]] = {
    OFFER: frozenset({"offer"}),
    ANSWER: frozenset({"answer", "reject"}),
    EARLY: frozenset({"ice", "hangup"}),
    TRANSPORT: frozenset({"ice", "hangup", "reoffer", "reanswer"}),
    SELF: frozenset({"elsewhere"}),
}
ENVELOPE_KIND: dict[str, str] = {
    "offer": "call_offer",
    "answer": "call_answer",
    "reject": "call_reject",
    "ice": "call_ice",
    "hangup": "call_hangup",
    "reoffer": "call_offer",
    "reanswer": "call_answer",
    "elsewhere": "call_hangup",
}


@attrs.frozen(kw_only=True, slots=True)
class Opened:
    """An accepted body: `sid` names the session (None for OFFER, EARLY and SELF bodies), `msg` what it says."""

    sid: bytes | None
    msg: Plaintext


def body_type(body: bytes) -> int:
    """OFFER, ANSWER, EARLY, TRANSPORT or SELF; tells a new call's `call_offer` from a renegotiation."""
    if len(body) < 2 or body[0] != VERSION:
        raise E2eeError("not a homing e2ee v1 body")
    if body[1] not in BODY_KINDS:
        raise E2eeError(f"unknown body type {body[1]}")
    return body[1]


def call_prologue(call: bytes, caller: bytes, callee: bytes) -> bytes:
    return CALL_PROLOGUE + bytes([len(call)]) + call + caller + callee


def offer_digest(offer_body: bytes) -> bytes:
    """BLAKE2b-256 of the exact `call_offer` body: what EARLY and SELF messages are bound to."""
    return bytes(sodium.crypto_generichash_blake2b_salt_personal(offer_body, digest_size=OFFER_DIGEST_BYTES))


def early_prologue(call: bytes, caller: bytes, callee: bytes, digest: bytes, seq: int) -> bytes:
    return EARLY_PROLOGUE + bytes([len(call)]) + call + caller + callee + digest + seq.to_bytes(SEQ_BYTES, "big")


def self_prologue(call: bytes, caller: bytes, callee: bytes, digest: bytes) -> bytes:
    return SELF_PROLOGUE + bytes([len(call)]) + call + caller + callee + digest


def _check_call(call: bytes) -> None:
    if not isinstance(call, bytes) or not 1 <= len(call) <= CALL_ID_MAX_BYTES:
        raise LocalProtocolError(f"a call id is 1..{CALL_ID_MAX_BYTES} bytes")


def _check_envelope(body_kind: int, kind: str, msg: Plaintext) -> None:
    if msg.KIND not in BODY_KINDS[body_kind]:
        raise E2eeError(f"a {msg.KIND} cannot travel in body type {body_kind}")
    if ENVELOPE_KIND[msg.KIND] != kind:
        raise E2eeError(f"a {msg.KIND} travels in {ENVELOPE_KIND[msg.KIND]}, not {kind}")


def _header(body: bytes, kind: str, expected: int, size: int) -> None:
    if len(body) > BODY_MAX_BYTES:
        raise E2eeError(f"body over {BODY_MAX_BYTES} bytes")
    if body_type(body) != expected:
        raise E2eeError(f"expected body type {expected}, got {body[1]}")
    if len(body) < size:
        raise E2eeError("body truncated")
    if kind not in ENVELOPE_KIND.values():
        raise E2eeError(f"unknown envelope kind {kind!r}")


class _Direction:
    """One direction of a session: a key and the sequence numbers used (send) or accepted (receive)."""

    __slots__ = ("cipher", "last")

    def __init__(self, cipher: CipherState) -> None:
        self.cipher = cipher
        self.last = -1


class _Session:
    __slots__ = ("hash", "recv", "send", "sid")

    def __init__(self, hs: HandshakeState) -> None:
        send, recv = hs.split()
        self.hash = hs.handshake_hash
        self.sid = self.hash[:SID_BYTES]
        self.send, self.recv = _Direction(send), _Direction(recv)

    def seal(self, msg: Plaintext) -> bytes:
        if msg.KIND not in BODY_KINDS[TRANSPORT]:
            raise LocalProtocolError(f"a {msg.KIND} is not a transport message")
        seq = self.send.last + 1
        if seq > SEQ_MAX:
            raise LocalProtocolError("sequence numbers exhausted: start a new call")
        header = bytes([VERSION, TRANSPORT]) + self.sid + seq.to_bytes(SEQ_BYTES, "big")
        self.send.cipher.set_nonce(seq)
        out = header + self.send.cipher.encrypt_with_ad(header, seal_plaintext(msg))
        self.send.last = seq
        return out

    def open(self, body: bytes, kind: str) -> Opened:
        head = 2 + SID_BYTES + SEQ_BYTES
        _header(body, kind, TRANSPORT, head + 16)
        if body[2 : 2 + SID_BYTES] != self.sid:
            raise NotForThisDevice("transport body of another session")
        seq = int.from_bytes(body[2 + SID_BYTES : head], "big")
        if seq <= self.recv.last or seq > SEQ_MAX:
            raise Replayed(f"sequence {seq} not above {self.recv.last}: replayed or reordered")
        self.recv.cipher.set_nonce(seq)
        try:
            padded = self.recv.cipher.decrypt_with_ad(body[:head], body[head:])
        except NoiseError as exc:
            raise E2eeError("transport body does not authenticate") from exc
        msg = open_plaintext(padded)
        _check_envelope(TRANSPORT, kind, msg)
        self.recv.last = seq
        return Opened(sid=self.sid, msg=msg)


def _static(identity: Identity) -> Keypair:
    return ed25519_to_x25519_keypair(identity.seed)


def _peer_static(peer: bytes) -> bytes:
    if len(peer) != ID_BYTES:
        raise E2eeError("an id is 32 bytes")
    return curve25519_public(peer)


def _one_way(*, s: Keypair, rs: bytes, prologue: bytes, initiator: bool, random_bytes: RandomBytes) -> HandshakeState:
    return HandshakeState(pattern="K", initiator=initiator, prologue=prologue, s=s, rs=rs, random_bytes=random_bytes)


def _no_random(_n: int) -> bytes:
    raise LocalProtocolError("a reader draws no randomness")


def open_one_way(*, s: Keypair, rs: bytes, prologue: bytes, message: bytes) -> bytes:
    """Read a Noise_K message (EARLY or SELF) and return its padded payload."""
    hs = _one_way(s=s, rs=rs, prologue=prologue, initiator=False, random_bytes=_no_random)
    try:
        return hs.read_message(message)
    except NoiseError as exc:
        raise E2eeError("one-way body does not authenticate") from exc


class OutgoingCall:
    """The caller's side of one call (see the module docstring)."""

    def __init__(
        self,
        *,
        identity: Identity,
        callee: bytes,
        call: bytes,
        random_bytes: RandomBytes,
        sessions_max: int = SESSIONS_MAX,
    ) -> None:
        _check_call(call)
        self.call, self.caller, self.callee = call, identity.id, callee
        self._s = _static(identity)
        self._rs = _peer_static(callee)
        self._random = random_bytes
        self._hs = HandshakeState(
            pattern="KK",
            initiator=True,
            prologue=call_prologue(call, identity.id, callee),
            s=self._s,
            rs=self._rs,
            random_bytes=random_bytes,
        )
        self._digest: bytes | None = None
        self._early_seq = -1
        self._sessions: dict[bytes, _Session] = {}
        self._sessions_max = sessions_max

    @property
    def sessions(self) -> tuple[bytes, ...]:
        """The sids of the answers accepted so far, first answer first."""
        return tuple(self._sessions)

    def offer(self, offer: Offer) -> bytes:
        """The body of this call's `call_offer` (Noise KK message 1). Once."""
        if self._digest is not None:
            raise LocalProtocolError("the offer was already written")
        body = bytes([VERSION, OFFER]) + self._hs.write_message(seal_plaintext(offer))
        self._digest = offer_digest(body)
        return body

    def early(self, msg: Ice | Hangup) -> bytes:
        """A `call_ice` or `call_hangup` body before any answer (Noise K, bound to the offer and its sequence)."""
        if self._digest is None:
            raise LocalProtocolError("early messages follow the offer")
        if msg.KIND not in BODY_KINDS[EARLY]:
            raise LocalProtocolError(f"a {msg.KIND} is not an early message")
        seq = self._early_seq + 1
        prologue = early_prologue(self.call, self.caller, self.callee, self._digest, seq)
        hs = _one_way(s=self._s, rs=self._rs, prologue=prologue, initiator=True, random_bytes=self._random)
        body = bytes([VERSION, EARLY]) + seq.to_bytes(SEQ_BYTES, "big") + hs.write_message(seal_plaintext(msg))
        self._early_seq = seq
        return body

    def handshake_hash(self, sid: bytes) -> bytes:
        """The final Noise handshake hash of session `sid` (64 bytes; a channel binding, e.g. for DTLS)."""
        session = self._sessions.get(sid)
        if session is None:
            raise LocalProtocolError("no such session")
        return session.hash

    def seal(self, sid: bytes, msg: Plaintext) -> bytes:
        """A transport body for the answered session `sid`."""
        session = self._sessions.get(sid)
        if session is None:
            raise LocalProtocolError("no such session")
        return session.seal(msg)

    def open(self, *, sender: bytes, kind: str, body: bytes) -> Opened:
        """An ANSWER (a device's `call_answer`/`call_reject`) or a TRANSPORT body from the callee."""
        if sender != self.callee:
            raise E2eeError("body is not from the callee of this call")
        if self._digest is None:
            raise LocalProtocolError("no offer was sent")
        if body_type(body) == TRANSPORT:
            if len(body) < 2 + SID_BYTES:
                raise E2eeError("body truncated")
            session = self._sessions.get(body[2 : 2 + SID_BYTES])
            if session is None:
                raise NotForThisDevice("transport body of no session of this call")
            return session.open(body, kind)
        _header(body, kind, ANSWER, 2 + 32 + 16)
        hs = self._hs.copy()
        try:
            padded = hs.read_message(body[2:])
        except NoiseError as exc:
            raise E2eeError("answer does not authenticate") from exc
        msg = open_plaintext(padded)
        _check_envelope(ANSWER, kind, msg)
        session = _Session(hs)
        if session.sid in self._sessions:
            raise Replayed("this answer was already accepted")
        if len(self._sessions) >= self._sessions_max:
            raise E2eeError("too many answers for one call")
        self._sessions[session.sid] = session
        return Opened(sid=session.sid, msg=msg)


class IncomingCall:
    """One callee device's side of one call (see the module docstring). Made by `from_offer`."""

    def __init__(
        self,
        *,
        identity: Identity,
        caller: bytes,
        call: bytes,
        hs: HandshakeState,
        digest: bytes,
        random_bytes: RandomBytes,
    ) -> None:
        self.call, self.caller, self.callee = call, caller, identity.id
        self._random = random_bytes
        self._s = _static(identity)
        self._rs = _peer_static(caller)
        self._hs = hs
        self._digest = digest
        self._early_last = -1
        self._session: _Session | None = None
        self._elsewhere_seen = False

    @classmethod
    def from_offer(
        cls,
        *,
        identity: Identity,
        sender: bytes,
        call: bytes,
        kind: str,
        body: bytes,
        now_s: int,
        replay: OfferReplayCache,
        random_bytes: RandomBytes,
    ) -> tuple[IncomingCall, Offer]:
        """Open a `call_offer` body (Noise KK message 1) from `sender` for call id `call`."""
        if not isinstance(call, bytes) or not 1 <= len(call) <= CALL_ID_MAX_BYTES:
            raise E2eeError(f"a call id is 1..{CALL_ID_MAX_BYTES} bytes")
        _header(body, kind, OFFER, 2 + 32 + 16)
        hs = HandshakeState(
            pattern="KK",
            initiator=False,
            prologue=call_prologue(call, sender, identity.id),
            s=_static(identity),
            rs=_peer_static(sender),
            random_bytes=random_bytes,
        )
        try:
            padded = hs.read_message(body[2:])
        except NoiseError as exc:
            raise E2eeError("offer does not authenticate") from exc
        msg = open_plaintext(padded)
        _check_envelope(OFFER, kind, msg)
        if not isinstance(msg, Offer):  # _check_envelope makes this unreachable
            raise E2eeError("an offer body must hold an offer")
        replay.admit(caller=sender, call=call, ts=msg.ts, now_s=now_s)
        incoming = cls(
            identity=identity, caller=sender, call=call, hs=hs, digest=offer_digest(body), random_bytes=random_bytes
        )
        return incoming, msg

    @property
    def sid(self) -> bytes | None:
        """This device's session, once it has answered."""
        return None if self._session is None else self._session.sid

    @property
    def handshake_hash(self) -> bytes | None:
        """The final Noise handshake hash (64 bytes), once this device has answered."""
        return None if self._session is None else self._session.hash

    def answer(self, msg: Answer | Reject) -> bytes:
        """The body of this device's `call_answer` or `call_reject` (Noise KK message 2). Once."""
        if self._session is not None:
            raise LocalProtocolError("this device already answered")
        if msg.KIND not in BODY_KINDS[ANSWER]:
            raise LocalProtocolError(f"a {msg.KIND} is not an answer")
        body = bytes([VERSION, ANSWER]) + self._hs.write_message(seal_plaintext(msg))
        self._session = _Session(self._hs)
        return body

    def elsewhere(self, how: str) -> bytes:
        """The body of a `call_hangup` to this device's own id: "answered"/"rejected" elsewhere (Noise K to self)."""
        prologue = self_prologue(self.call, self.caller, self.callee, self._digest)
        hs = _one_way(s=self._s, rs=self._s.public, prologue=prologue, initiator=True, random_bytes=self._random)
        self._elsewhere_seen = True  # our own notice comes back to us too: it must not count
        return bytes([VERSION, SELF]) + hs.write_message(seal_plaintext(Elsewhere(how=how)))

    def seal(self, msg: Plaintext) -> bytes:
        """A transport body to the caller (after `answer`)."""
        if self._session is None:
            raise LocalProtocolError("answer first")
        return self._session.seal(msg)

    def open(self, *, sender: bytes, kind: str, body: bytes) -> Opened:
        """An EARLY or TRANSPORT body from the caller, or a SELF notice from this id's other devices."""
        btype = body_type(body)
        if btype == SELF:
            return self._open_self(sender, kind, body)
        if sender != self.caller:
            raise E2eeError("body is not from the caller of this call")
        if btype == TRANSPORT:
            if self._session is None:
                raise NotForThisDevice("this device has not answered")
            return self._session.open(body, kind)
        _header(body, kind, EARLY, 2 + SEQ_BYTES + 32 + 16)
        seq = int.from_bytes(body[2 : 2 + SEQ_BYTES], "big")
        if seq <= self._early_last or seq > SEQ_MAX:
            raise Replayed(f"early sequence {seq} not above {self._early_last}: replayed or reordered")
        prologue = early_prologue(self.call, self.caller, self.callee, self._digest, seq)
        padded = open_one_way(s=self._s, rs=self._rs, prologue=prologue, message=body[2 + SEQ_BYTES :])
        msg = open_plaintext(padded)
        _check_envelope(EARLY, kind, msg)
        self._early_last = seq
        return Opened(sid=None, msg=msg)

    def _open_self(self, sender: bytes, kind: str, body: bytes) -> Opened:
        if sender != self.callee:
            raise E2eeError("an elsewhere notice comes from our own id")
        _header(body, kind, SELF, 2 + 32 + 16)
        if self._elsewhere_seen:
            raise Replayed("an elsewhere notice for this call was already seen or sent")
        prologue = self_prologue(self.call, self.caller, self.callee, self._digest)
        msg = open_plaintext(open_one_way(s=self._s, rs=self._s.public, prologue=prologue, message=body[2:]))
        _check_envelope(SELF, kind, msg)
        self._elsewhere_seen = True
        return Opened(sid=None, msg=msg)
