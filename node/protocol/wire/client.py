"""Client protocol v1 messages (docs/client-protocol.md).

The message classes here are shared by the client WebSocket server, the client library and the relay core.
The codec (msgpack binary frames and JSON text frames, with every limit from `node.protocol.wire.Limits`) lives in
this module too.
"""

from __future__ import annotations

import enum
import json as _json
from collections.abc import Callable
from typing import Any, Final, TypeVar

from node.protocol.errors import RemoteProtocolError, TooLarge
from node.protocol.identity import ID_BYTES, SIG_BYTES, b64u_decode, b64u_encode
from node.protocol.records import record
from node.protocol.webpush import BadSubscription, Subscription, check_subscription
from node.protocol.wire import Limits, get_bytes, get_int, get_str, packb, unpackb


class Kind(enum.StrEnum):
    """Envelope kinds a client may send (docs/client-protocol.md)."""

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


@record(kw_only=True, slots=True)
class Envelope:
    """client -> node: `{"t":KIND,"to","call","body","ref"}`."""

    kind: Kind
    to: bytes
    call: bytes
    body: bytes
    ref: int


@record(kw_only=True, slots=True)
class Deliver:
    """node -> recipient: `{"t":KIND,"from","call","body","eid"}`."""

    kind: Kind
    sender: bytes  # "from" on the wire
    call: bytes
    body: bytes
    eid: bytes  # 16 bytes, unique per envelope


@record(kw_only=True, slots=True)
class Receipt:
    """node -> sender: `{"t":"receipt","ref","status"[,"reason"]}`."""

    ref: int
    status: Status
    reason: Reason | None = None


@record(kw_only=True, slots=True)
class Error:
    """node -> client: `{"t":"error","code"[,"ref"]}`."""

    code: ErrorCode
    ref: int | None = None


@record(kw_only=True, slots=True)
class Challenge:
    node: bytes
    nonce: bytes


@record(kw_only=True, slots=True)
class Hello:
    id: bytes
    nonce: bytes
    sig: bytes


@record(kw_only=True, slots=True)
class Welcome:
    id: bytes
    sig: bytes


@record(kw_only=True, slots=True)
class Ping:
    pass


@record(kw_only=True, slots=True)
class Pong:
    pass


@record(kw_only=True, slots=True)
class GoAway:
    nodes: tuple[str, ...]  # referral URIs of other nodes


# --- push wake-up (docs/client-protocol.md, "Push wake-up"): additive -------------------------------------
@record(kw_only=True, slots=True)
class PushRegister:
    """client -> node: `{"t":"push_register","endpoint","p256dh","auth"}` (a Web Push subscription)."""

    endpoint: str
    p256dh: bytes  # 65-byte uncompressed P-256 point (base64url in JSON)
    auth: bytes  # 16 bytes (base64url in JSON)


@record(kw_only=True, slots=True)
class PushUnregister:
    """client -> node: `{"t":"push_unregister"}`."""


@record(kw_only=True, slots=True)
class Ok:
    """node -> client: `{"t":"ok","of":<t>}`; for push_register also `"vapid"`: the node's VAPID public key."""

    of: str
    vapid: bytes | None = None
@record(kw_only=True, slots=True)
class CardRequest:
    """client -> node: `{"t":"card"}`: the node's own referral card, signed now (cards expire: docs/discovery.md)."""


@record(kw_only=True, slots=True)
class CardReply:
    """node -> client: `{"t":"card","card":<homing://node/… URI>}`."""

    card: str


@record(kw_only=True, slots=True)
class IceServersRequest:
    """client -> node: `{"t":"ice_servers"}` (after the handshake)."""


@record(kw_only=True, slots=True)
class IceServerEntry:
    """One RTCIceServer: `{"urls":[…]}`, with `"username"` and `"credential"` for TURN."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@record(kw_only=True, slots=True)
class IceServers:
    """node -> client: `{"t":"ice_servers","ttl":<s>,"servers":[…]}`."""

    ttl: int
    servers: tuple[IceServerEntry, ...]


_E = TypeVar("_E", bound=enum.Enum)

ClientMessage = (
    Envelope
    | Deliver
    | Receipt
    | Error
    | Challenge
    | Hello
    | Welcome
    | Ping
    | Pong
    | GoAway
    | PushRegister
    | PushUnregister
    | Ok
    | CardRequest
    | CardReply
    | IceServersRequest
    | IceServers
)
ICE_SERVERS_MAX: Final = 8
ICE_URLS_MAX: Final = 16
ICE_STRING_MAX: Final = 512


# --- codec -----------------------------------------------------------------------------------------------
#
# One map per WebSocket message. Binary frames carry msgpack (bytes as msgpack bin), text frames carry JSON
# (bytes as unpadded base64url strings). The decoder is strict about what it needs and ignores unknown keys
# (forward compatibility). Every failure is a ClientFrameError carrying the client protocol's error code
# (docs/client-protocol.md), the `ref` when one was readable, and whether the answer is a `rejected` receipt
# (an envelope with a usable ref) or an `error` frame.

REF_MAX: Final = 2**64 - 1  # "ref":<uint>; JavaScript clients should stay below 2**53
EID_BYTES: Final = 16
NONCE_BYTES: Final = 32
_BYTES_FIELDS: Final = frozenset({"to", "from", "call", "body", "eid", "id", "nonce", "sig", "node"})
_KINDS: Final = {k.value: k for k in Kind}


class ClientFrameError(RemoteProtocolError):
    """A client frame that cannot be accepted. `code` is the client protocol's (`bad_request`, `too_large`, ...).

    `ref` is the envelope's ref when it was readable; `receipt` is True when the answer is a terminal
    `{"t":"receipt","status":"rejected","reason":code}` (an envelope with a usable ref), else an error frame.
    """

    code = ErrorCode.BAD_REQUEST.value

    def __init__(self, message: str, *, ref: int | None = None, receipt: bool = False) -> None:
        super().__init__(message)
        self.ref = ref
        self.receipt = receipt and ref is not None


class BadFrame(ClientFrameError):
    code = ErrorCode.BAD_REQUEST.value


class FrameTooLarge(ClientFrameError):
    code = ErrorCode.TOO_LARGE.value


class UnknownType(ClientFrameError):
    code = ErrorCode.UNKNOWN_TYPE.value


def _parse(data: bytes | str) -> dict[str, Any]:
    if isinstance(data, str):
        if len(data) > Limits.CLIENT_FRAME_MAX:
            raise FrameTooLarge(f"frame of {len(data)} characters exceeds {Limits.CLIENT_FRAME_MAX}")
        try:
            obj = _json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BadFrame(f"not JSON: {type(exc).__name__}") from exc
        if not isinstance(obj, dict):
            raise BadFrame("frame is not a map")
        return _from_json(obj)
    try:
        obj = unpackb(bytes(data), max_bytes=Limits.CLIENT_FRAME_MAX)
    except TooLarge as exc:
        raise FrameTooLarge(str(exc)) from exc
    except RemoteProtocolError as exc:
        raise BadFrame(str(exc)) from exc
    if not isinstance(obj, dict):
        raise BadFrame("frame is not a map")
    return obj


def _from_json(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _BYTES_FIELDS and isinstance(value, str):
            try:
                out[key] = b64u_decode(value)
            except ValueError:
                out[key] = value  # left as a string: the field check below names it
        else:
            out[key] = value
    return out


def _ref_of(m: dict[str, Any]) -> int | None:
    v = m.get("ref")
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= REF_MAX:
        return v
    return None


def decode_client_frame(data: bytes | str, *, from_node: bool = False) -> ClientMessage:
    """Decode one WebSocket message (bytes: msgpack, str: JSON) into a message class.

    By default it decodes what a client may send to a node (`hello`, `ping`, `pong`, envelopes);
    `from_node=True` decodes what a node sends to a client (the client library's side).
    Raises ClientFrameError (a RemoteProtocolError) with the client protocol's code; never anything else.
    """
    m = _parse(data)
    t = m.get("t")
    if not isinstance(t, str):
        raise BadFrame("frame has no string field 't'", ref=_ref_of(m))
    kind = _KINDS.get(t)
    try:
        if from_node:
            return _decode_from_node(t, kind, m)
        return _decode_from_client(t, kind, m)
    except ClientFrameError:
        raise
    except RemoteProtocolError as exc:  # a field getter refused a value
        raise BadFrame(str(exc), ref=_ref_of(m), receipt=kind is not None) from exc


def _decode_from_client(t: str, kind: Kind | None, m: dict[str, Any]) -> ClientMessage:
    if kind is not None:
        return _decode_envelope(kind, m)
    if t == "ping":
        return Ping()
    if t == "pong":
        return Pong()
    if t == "push_register":
        return _decode_push_register(m)
    if t == "push_unregister":
        return PushUnregister()
    if t == "ice_servers":
        return IceServersRequest()
    if t == "card":
        return CardRequest()
    if t == "hello":
        return Hello(
            id=get_bytes(m, "id", min_len=ID_BYTES, max_len=ID_BYTES),
            nonce=get_bytes(m, "nonce", min_len=NONCE_BYTES, max_len=NONCE_BYTES),
            sig=get_bytes(m, "sig", min_len=SIG_BYTES, max_len=SIG_BYTES),
        )
    raise UnknownType(f"unknown message type {t[:32]!r}", ref=_ref_of(m))


def _decode_envelope(kind: Kind, m: dict[str, Any]) -> Envelope:
    ref = _ref_of(m)
    if ref is None:
        raise BadFrame("envelope without a usable 'ref' (an unsigned integer)")
    body = m.get("body")
    if isinstance(body, bytes) and len(body) > Limits.CLIENT_BODY_MAX:
        raise FrameTooLarge(f"body of {len(body)} bytes exceeds {Limits.CLIENT_BODY_MAX}", ref=ref, receipt=True)
    if isinstance(body, str) and len(body) > (Limits.CLIENT_BODY_MAX * 4 + 2) // 3:
        raise FrameTooLarge("body exceeds 65536 bytes", ref=ref, receipt=True)
    to, call = m.get("to"), m.get("call")
    # the usual envelope in one test (0.3 µs less than the getters); anything else takes them, which name the field
    if (
        type(to) is bytes
        and len(to) == ID_BYTES
        and type(call) is bytes
        and Limits.CALL_ID_MIN <= len(call) <= Limits.CALL_ID_MAX
        and type(body) is bytes  # its size checked above
    ):
        return Envelope(kind=kind, to=to, call=call, body=body, ref=ref)
    return Envelope(
        kind=kind,
        to=get_bytes(m, "to", min_len=ID_BYTES, max_len=ID_BYTES),
        call=get_bytes(m, "call", min_len=Limits.CALL_ID_MIN, max_len=Limits.CALL_ID_MAX),
        body=get_bytes(m, "body", max_len=Limits.CLIENT_BODY_MAX),
        ref=ref,
    )


def _decode_from_node(t: str, kind: Kind | None, m: dict[str, Any]) -> ClientMessage:
    if kind is not None:
        return Deliver(
            kind=kind,
            sender=get_bytes(m, "from", min_len=ID_BYTES, max_len=ID_BYTES),
            call=get_bytes(m, "call", min_len=Limits.CALL_ID_MIN, max_len=Limits.CALL_ID_MAX),
            body=get_bytes(m, "body", max_len=Limits.CLIENT_BODY_MAX),
            eid=get_bytes(m, "eid", min_len=EID_BYTES, max_len=EID_BYTES),
        )
    decoder = _NODE_DECODERS.get(t)
    if decoder is None:
        raise UnknownType(f"unknown message type {t[:32]!r}", ref=_ref_of(m))
    return decoder(m)


def _enum(cls: type[_E], m: dict[str, Any], key: str) -> _E:
    value = get_str(m, key, max_len=32)
    try:
        return cls(value)
    except ValueError as exc:
        raise BadFrame(f"field {key!r} has unknown value {value!r}") from exc


def _decode_receipt(m: dict[str, Any]) -> Receipt:
    reason = _enum(Reason, m, "reason") if m.get("reason") is not None else None
    return Receipt(ref=get_int(m, "ref", hi=REF_MAX), status=_enum(Status, m, "status"), reason=reason)


def _decode_error(m: dict[str, Any]) -> Error:
    return Error(code=_enum(ErrorCode, m, "code"), ref=_ref_of(m))


def _decode_goaway(m: dict[str, Any]) -> GoAway:
    nodes = m.get("nodes", [])
    if not isinstance(nodes, list) or not all(isinstance(n, str) and len(n) <= Limits.MSGPACK_STR_MAX for n in nodes):
        raise BadFrame("goaway 'nodes' must be a list of strings")
    return GoAway(nodes=tuple(nodes))


def _b64_or_bytes(m: dict[str, Any], key: str, size: int) -> bytes:
    value = m.get(key)
    if isinstance(value, str) and len(value) <= 2 * size:
        try:
            value = b64u_decode(value)
        except ValueError:
            raise BadFrame(f"field {key!r} is not base64url") from None
    if not isinstance(value, bytes) or len(value) != size:
        raise BadFrame(f"field {key!r} must be {size} bytes")
    return value


def _decode_push_register(m: dict[str, Any]) -> PushRegister:
    msg = PushRegister(
        endpoint=get_str(m, "endpoint", max_len=1000),
        p256dh=_b64_or_bytes(m, "p256dh", 65),
        auth=_b64_or_bytes(m, "auth", 16),
    )
    try:
        check_subscription(Subscription(endpoint=msg.endpoint, p256dh=msg.p256dh, auth=msg.auth))
    except BadSubscription as exc:
        raise BadFrame(str(exc)) from None
    return msg


def _decode_ok(m: dict[str, Any]) -> Ok:
    vapid = _b64_or_bytes(m, "vapid", 65) if m.get("vapid") is not None else None
    return Ok(of=get_str(m, "of", max_len=32), vapid=vapid)
def _short_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > ICE_STRING_MAX:
        raise BadFrame(f"{what} must be a string of at most {ICE_STRING_MAX} characters")
    return value


def _decode_ice_server(item: Any) -> IceServerEntry:
    if not isinstance(item, dict):
        raise BadFrame("ice_servers 'servers' holds a non-map")
    urls = item.get("urls")
    if not isinstance(urls, list) or not 1 <= len(urls) <= ICE_URLS_MAX:
        raise BadFrame(f"an ice server needs 1..{ICE_URLS_MAX} 'urls'")
    username, credential = item.get("username"), item.get("credential")
    return IceServerEntry(
        urls=tuple(_short_str(u, "a url") for u in urls),
        username=None if username is None else _short_str(username, "username"),
        credential=None if credential is None else _short_str(credential, "credential"),
    )


def _decode_ice_servers(m: dict[str, Any]) -> IceServers:
    servers = m.get("servers")
    if not isinstance(servers, list) or len(servers) > ICE_SERVERS_MAX:
        raise BadFrame(f"ice_servers 'servers' must be a list of at most {ICE_SERVERS_MAX}")
    return IceServers(ttl=get_int(m, "ttl", hi=2**31), servers=tuple(_decode_ice_server(s) for s in servers))


def _ice_server_map(server: IceServerEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"urls": list(server.urls)}
    if server.username is not None:
        out["username"] = server.username
    if server.credential is not None:
        out["credential"] = server.credential
    return out


_NODE_DECODERS: Final[dict[str, Callable[[dict[str, Any]], ClientMessage]]] = {
    "challenge": lambda m: Challenge(
        node=get_bytes(m, "node", min_len=ID_BYTES, max_len=ID_BYTES),
        nonce=get_bytes(m, "nonce", min_len=NONCE_BYTES, max_len=NONCE_BYTES),
    ),
    "welcome": lambda m: Welcome(
        id=get_bytes(m, "id", min_len=ID_BYTES, max_len=ID_BYTES),
        sig=get_bytes(m, "sig", min_len=SIG_BYTES, max_len=SIG_BYTES),
    ),
    "receipt": _decode_receipt,
    "error": _decode_error,
    "goaway": _decode_goaway,
    "ok": _decode_ok,
    "ice_servers": _decode_ice_servers,
    "card": lambda m: CardReply(card=get_str(m, "card", max_len=Limits.MSGPACK_STR_MAX)),
    "ping": lambda m: Ping(),
    "pong": lambda m: Pong(),
}


def message_to_map(msg: ClientMessage) -> dict[str, Any]:
    """The wire map of a message (bytes values as bytes). Each enum here is a StrEnum: `str(member)` is its value
    as a plain str, a C call, where `.value` runs enum's Python descriptor (0.1 µs; two per relayed envelope)."""
    if isinstance(msg, Deliver):
        return {"t": str(msg.kind), "from": msg.sender, "call": msg.call, "body": msg.body, "eid": msg.eid}
    if isinstance(msg, Receipt):
        r: dict[str, Any] = {"t": "receipt", "ref": msg.ref, "status": str(msg.status)}
        if msg.reason is not None:
            r["reason"] = str(msg.reason)
        return r
    if isinstance(msg, Envelope):
        return {"t": str(msg.kind), "to": msg.to, "call": msg.call, "body": msg.body, "ref": msg.ref}
    if isinstance(msg, Error):
        e: dict[str, Any] = {"t": "error", "code": str(msg.code)}
        if msg.ref is not None:
            e["ref"] = msg.ref
        return e
    if isinstance(msg, Challenge):
        return {"t": "challenge", "v": 1, "node": msg.node, "nonce": msg.nonce}
    if isinstance(msg, Hello):
        return {"t": "hello", "id": msg.id, "nonce": msg.nonce, "sig": msg.sig}
    if isinstance(msg, Welcome):
        return {"t": "welcome", "id": msg.id, "sig": msg.sig}
    if isinstance(msg, GoAway):
        return {"t": "goaway", "nodes": list(msg.nodes)}
    if isinstance(msg, PushRegister):
        return {"t": "push_register", "endpoint": msg.endpoint, "p256dh": msg.p256dh, "auth": msg.auth}
    if isinstance(msg, PushUnregister):
        return {"t": "push_unregister"}
    if isinstance(msg, Ok):
        return {"t": "ok", "of": msg.of} if msg.vapid is None else {"t": "ok", "of": msg.of, "vapid": msg.vapid}
    if isinstance(msg, IceServersRequest):
        return {"t": "ice_servers"}
    if isinstance(msg, CardRequest):
        return {"t": "card"}
    if isinstance(msg, CardReply):
        return {"t": "card", "card": msg.card}
    if isinstance(msg, IceServers):
        return {"t": "ice_servers", "ttl": msg.ttl, "servers": [_ice_server_map(s) for s in msg.servers]}
    return {"t": "ping" if isinstance(msg, Ping) else "pong"}


def encode_client_message(msg: ClientMessage, *, json: bool) -> bytes | str:
    """Encode one message: msgpack bytes for a binary frame, or a JSON str for a text frame."""
    m = message_to_map(msg)
    if not json:
        return packb(m)
    return _json.dumps(
        {k: (b64u_encode(v) if isinstance(v, bytes) else v) for k, v in m.items()}, separators=(",", ":")
    )


class CloseCode(enum.IntEnum):
    """WebSocket close codes a node uses (docs/client-protocol.md and docs/client-protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # node shutdown, after `goaway`
    POLICY = 1008  # slow reader: the node's send queue for this connection overflowed
    TOO_BIG = 1009  # a frame over Limits.CLIENT_FRAME_MAX
    TRY_AGAIN_LATER = 1013  # the node is at its connection limit
    AUTH_FAILED = 4401  # after {"t":"error","code":"auth_failed"}
    TIMEOUT = 4408  # handshake not finished in time, or idle too long
    ABUSE = 4429  # too many refused frames in a row
