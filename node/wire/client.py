"""Client protocol v1 messages (CONTRACT §2).

The message classes here are shared by the client WebSocket server, the client library and the relay core.
The codec (msgpack binary frames and JSON text frames, with every limit from `node.wire.Limits`) lives in
this module too.
"""

from __future__ import annotations

import enum

import attrs


class Kind(enum.StrEnum):
    """Envelope kinds a client may send (CONTRACT §2)."""

    CALL_OFFER = "call_offer"
    CALL_ANSWER = "call_answer"
    CALL_REJECT = "call_reject"
    CALL_HANGUP = "call_hangup"
    CALL_ICE = "call_ice"


class Status(enum.StrEnum):
    """Receipt statuses. QUEUED is the only non-terminal one."""

    DELIVERED = "delivered"
    QUEUED = "queued"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Reason(enum.StrEnum):
    """Reasons of a `rejected` receipt."""

    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"


class ErrorCode(enum.StrEnum):
    """Codes of `{"t":"error"}` frames."""

    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_TYPE = "unknown_type"
    AUTH_FAILED = "auth_failed"


@attrs.frozen(kw_only=True, slots=True)
class Envelope:
    """client -> node: `{"t":KIND,"to","call","body","ref"}`."""

    kind: Kind
    to: bytes
    call: bytes
    body: bytes
    ref: int


@attrs.frozen(kw_only=True, slots=True)
class Deliver:
    """node -> recipient: `{"t":KIND,"from","call","body","eid"}`."""

    kind: Kind
    sender: bytes  # "from" on the wire
    call: bytes
    body: bytes
    eid: bytes  # 16 bytes, unique per envelope


@attrs.frozen(kw_only=True, slots=True)
class Receipt:
    """node -> sender: `{"t":"receipt","ref","status"[,"reason"]}`."""

    ref: int
    status: Status
    reason: Reason | None = None


@attrs.frozen(kw_only=True, slots=True)
class Error:
    """node -> client: `{"t":"error","code"[,"ref"]}`."""

    code: ErrorCode
    ref: int | None = None


@attrs.frozen(kw_only=True, slots=True)
class Challenge:
    node: bytes
    nonce: bytes


@attrs.frozen(kw_only=True, slots=True)
class Hello:
    id: bytes
    nonce: bytes
    sig: bytes


@attrs.frozen(kw_only=True, slots=True)
class Welcome:
    id: bytes
    sig: bytes


@attrs.frozen(kw_only=True, slots=True)
class Ping:
    pass


@attrs.frozen(kw_only=True, slots=True)
class Pong:
    pass


@attrs.frozen(kw_only=True, slots=True)
class GoAway:
    nodes: tuple[str, ...]  # referral URIs of other nodes


ClientMessage = Envelope | Deliver | Receipt | Error | Challenge | Hello | Welcome | Ping | Pong | GoAway
