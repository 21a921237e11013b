"""Node-to-node relay frames on the peer link (docs/protocol.md, "Cross-node relay").

Each frame is one msgpack map `{"t": MsgType.X, ...}` with the numbers of `node.protocol.wire.MsgType` 36..46.
The peer-link driver encrypts and authenticates frames between node keys (node.protocol.crypto); this module only turns
messages into bytes and back. Decoders are strict: an unknown `t`, a missing or extra-typed field, an id of the
wrong length or a list over its limit raises RemoteProtocolError, and nothing else.

Field names on the wire: `eid` (16 bytes), `o` origin node (the sender's node, 32 bytes), `to`/`from` client ids,
`k` envelope kind (the docs/client-protocol.md string), `c` call id, `b` body, `ttl` milliseconds, `h` home node,
`ids` list of client ids, `s` status string; `cn`/`cs` the sender's home claim (challenge nonce and hello signature,
node/protocol/relay/claims.py), and in a LEASE `ns`/`sg` one claim nonce and signature per id in `ids`; `ex`/`os`
the origin node's signature over a mailbox-path envelope and its expiry (unix ms; 0 and empty on direct forwards).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable
from typing import Any, Final

import attrs
from attrs import validators as v

from node.protocol.errors import RemoteProtocolError
from node.protocol.records import record
from node.protocol.relay.claims import NONCE_BYTES, SIG_BYTES, HomeClaim
from node.protocol.wire import Limits, MsgType, get_bytes, get_int, get_str, packb, require_map, unpackb
from node.protocol.wire.client import Kind
from node.protocol.wire.push import PUSH_DECODERS, PushClaim, PushSub, PushUnsub, push_to_map

ID_BYTES: Final = 32
EID_BYTES: Final = 16
# Client ids in one LEASE / LEASE_DROP / LOOKUP_REPLY / MAILBOX_TAKE frame (32 B each: 16 KiB, far below a frame).
PEER_IDS_MAX: Final = 512
# Claims in one LEASE frame (32 + 32 + 64 B each: 32 KiB).
LEASE_CLAIMS_MAX: Final = 256
# A mailbox TTL carried on the wire may not exceed a day (the config default is 60 s).
TTL_MS_MAX: Final = 86_400_000


def _len(n: int) -> Any:
    return v.and_(v.instance_of(bytes), v.min_len(n), v.max_len(n))


def _ids(max_items: int) -> Any:
    return v.and_(
        v.deep_iterable(member_validator=_len(ID_BYTES), iterable_validator=v.instance_of(tuple)),
        v.max_len(max_items),
    )


class ResultStatus(enum.StrEnum):
    """ENVELOPE_RESULT: what the addressed home node did with an envelope."""

    DELIVERED = "delivered"  # handed to at least one live connection (or had been, same eid)
    NOT_HERE = "not_here"  # the recipient has no live connection on this node
    NEED_CLAIM = "need_claim"  # sent without the sender's claim, which this home does not have (any more): resend


class MailboxStatus(enum.StrEnum):
    """MAILBOX_EVENT: what an owner did with a MAILBOX_PUT (sent to the envelope's origin node)."""

    STORED = "stored"  # waits in the mailbox: the sender gets `queued`
    FORWARDED = "forwarded"  # stored and pushed at once to the recipient's home node (a lease exists)
    FULL = "full"  # per-id or per-node bound reached: not stored
    CANCELLED = "cancelled"  # a call_hangup that removed a still-queued call_offer of the same call
    NOT_OWNER = "not_owner"  # the receiver does not own the recipient id (its member view differs): ask again


class ReceiptStatus(enum.StrEnum):
    """RECEIPT: a terminal outcome reported to the origin node by a home node or an owner."""

    DELIVERED = "delivered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@record(kw_only=True, slots=True)
class PeerEnvelope:
    """ENVELOPE: one client envelope on its way to a home node (from the origin node or from an owner)."""

    # Checked in one pass by __attrs_post_init__ (per-field attrs validators cost the relay ~4 us per envelope).
    eid: bytes  # EID_BYTES
    origin: bytes  # ID_BYTES; the sender's node: receipts go there
    to: bytes  # ID_BYTES
    sender: bytes  # ID_BYTES
    kind: Kind
    call: bytes  # 1 .. Limits.CALL_ID_MAX bytes
    body: bytes  # at most Limits.CLIENT_BODY_MAX bytes
    # the sender's claim naming `origin`; both empty on a direct forward to a home that has it (docs/protocol.md)
    claim_nonce: bytes
    claim_sig: bytes
    # mailbox path only: the origin's signature (`origin_signed_bytes`) and the unix ms after which it is void
    expires_ms: int = 0  # 0 .. 2**63 - 1
    origin_sig: bytes = b""  # empty or SIG_BYTES

    def __attrs_post_init__(self) -> None:
        """The field checks (TypeError for a wrong type, ValueError for a wrong size), as plain code."""
        b = bytes
        if not (
            isinstance(self.eid, b)
            and isinstance(self.origin, b)
            and isinstance(self.to, b)
            and isinstance(self.sender, b)
            and isinstance(self.call, b)
            and isinstance(self.body, b)
            and isinstance(self.claim_nonce, b)
            and isinstance(self.claim_sig, b)
            and isinstance(self.origin_sig, b)
            and isinstance(self.kind, Kind)
            and isinstance(self.expires_ms, int)
        ):
            raise TypeError("PeerEnvelope: a field has the wrong type")
        if len(self.eid) != EID_BYTES or not len(self.origin) == len(self.to) == len(self.sender) == ID_BYTES:
            raise ValueError(f"PeerEnvelope: eid is {EID_BYTES} bytes, ids {ID_BYTES} bytes")
        if not 1 <= len(self.call) <= Limits.CALL_ID_MAX or len(self.body) > Limits.CLIENT_BODY_MAX:
            raise ValueError("PeerEnvelope: call id or body out of bounds")
        if not 0 <= self.expires_ms <= 2**63 - 1:
            raise ValueError("PeerEnvelope: expires_ms out of range")
        if len(self.origin_sig) not in (0, SIG_BYTES):
            raise ValueError(f"origin_sig is empty or {SIG_BYTES} bytes")
        if (len(self.claim_nonce), len(self.claim_sig)) not in ((0, 0), (NONCE_BYTES, SIG_BYTES)):
            raise ValueError(f"a claim is a {NONCE_BYTES}-byte nonce and a {SIG_BYTES}-byte signature, or absent")

    @property
    def has_claim(self) -> bool:
        return bool(self.claim_sig)

    @staticmethod
    def checked_by_caller(
        eid: bytes,
        origin: bytes,
        to: bytes,
        sender: bytes,
        kind: Kind,
        call: bytes,
        body: bytes,
        claim_nonce: bytes,
        claim_sig: bytes,
        expires_ms: int = 0,
        origin_sig: bytes = b"",
    ) -> PeerEnvelope:
        """An envelope whose every field the caller vouches for, built field by field without `__init__`'s checks:
        0.2 µs instead of 1 here. For an origin wrapping a client envelope (node/protocol/relay/core.py: its `to`,
        `call` and `body` checked by node/protocol/wire/client.py, its sender and claim from the verified
        handshake, the eid and origin its own), for `without_claim`, and for `_get_env`, which runs the checks
        itself on what another node sent. What a bug here let through would be refused by the home, one frame at
        a time (node/net/relay.py `peer_frames`), not sent on as valid. The hot callers pass the fields by
        position, in the order of the class (0.1 µs less a call than by keyword)."""
        bare: Any = object.__new__(PeerEnvelope)  # Any: `record` classes are frozen to the type checker
        bare.eid, bare.origin, bare.to, bare.sender = eid, origin, to, sender
        bare.kind, bare.call, bare.body = kind, call, body
        bare.claim_nonce, bare.claim_sig = claim_nonce, claim_sig
        bare.expires_ms, bare.origin_sig = expires_ms, origin_sig
        result: PeerEnvelope = bare
        return result

    def without_claim(self) -> PeerEnvelope:
        """This envelope without the sender's claim (what `attrs.evolve` would give): every field is this checked
        envelope's, and an absent claim (both empty) is valid, so the checks would pass. For each envelope an origin
        forwards to a home that already has the claim."""
        e = self
        return PeerEnvelope.checked_by_caller(
            e.eid, e.origin, e.to, e.sender, e.kind, e.call, e.body, b"", b"", e.expires_ms, e.origin_sig
        )

    @property
    def sender_claim(self) -> HomeClaim:
        return HomeClaim(client=self.sender, home=self.origin, nonce=self.claim_nonce, sig=self.claim_sig)


ORIGIN_SIG_CONTEXT: Final = b"homing/v1/relay-mail"


def origin_signed_bytes(e: PeerEnvelope) -> bytes:
    """What the origin node signs for a mailbox-path envelope: every field a home shows its client, the sender's
    claim and the expiry (length-prefixed where the length varies; the body by its BLAKE2b-256)."""
    kind = str(e.kind).encode()
    return b"".join(
        (
            ORIGIN_SIG_CONTEXT,
            e.eid,
            e.origin,
            e.to,
            e.sender,
            bytes([len(kind)]),
            kind,
            bytes([len(e.call)]),
            e.call,
            hashlib.blake2b(e.body, digest_size=32).digest(),
            e.claim_nonce,
            e.claim_sig,
            struct.pack(">Q", e.expires_ms),
        )
    )


@record(kw_only=True, slots=True)
class EnvelopeResult:
    eid: bytes  # EID_BYTES; checked with `status` in __attrs_post_init__ (one per relayed envelope)
    status: ResultStatus

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.eid, bytes) or not isinstance(self.status, ResultStatus):
            raise TypeError("EnvelopeResult: eid is bytes, status a ResultStatus")
        if len(self.eid) != EID_BYTES:
            raise ValueError(f"EnvelopeResult: eid is {EID_BYTES} bytes")

    @classmethod
    def of(cls, env: PeerEnvelope, status: ResultStatus) -> EnvelopeResult:
        """The result for `env`, a checked envelope, without the checks its eid has passed (a home answers every
        envelope it is sent: 0.1 µs instead of 0.35)."""
        return _bare_result(env.eid, status)


def _bare_result(eid: bytes, status: ResultStatus) -> EnvelopeResult:
    bare: Any = object.__new__(EnvelopeResult)  # Any: `record` classes are frozen to the type checker
    bare.eid, bare.status = eid, status
    result: EnvelopeResult = bare
    return result


def _get_result(m: dict[str, Any]) -> EnvelopeResult:
    """ENVELOPE_RESULT, one per relayed envelope at its origin: built bare and checked by the class's own
    `__attrs_post_init__`, as `_get_env` does (the getter and `__init__` checked its eid twice, 0.45 µs more);
    `peer_from_map` turns its TypeError or ValueError into a RemoteProtocolError."""
    eid: Any = m.get("eid")  # Any, not Any | None: the check below refuses a missing eid
    result = _bare_result(eid, _get_enum(m, "s", ResultStatus))
    result.__attrs_post_init__()
    return result


@record(kw_only=True, slots=True)
class Lease:
    """LEASE: "these clients are homed on `home` for `ttl_ms`", each backed by its own claim naming `home`
    (from the home itself, or handed off by an owner)."""

    home: bytes = attrs.field(validator=_len(ID_BYTES))
    claims: tuple[HomeClaim, ...] = attrs.field(
        validator=v.and_(
            v.deep_iterable(member_validator=v.instance_of(HomeClaim), iterable_validator=v.instance_of(tuple)),
            v.max_len(LEASE_CLAIMS_MAX),
        )
    )
    ttl_ms: int = attrs.field(validator=v.and_(v.instance_of(int), v.ge(1), v.le(TTL_MS_MAX)))

    @claims.validator
    def _same_home(self, _: Any, claims: tuple[HomeClaim, ...]) -> None:
        if any(c.home != self.home for c in claims):
            raise ValueError("every claim of a LEASE names its home")

    @property
    def ids(self) -> tuple[bytes, ...]:
        return tuple(c.client for c in self.claims)


@record(kw_only=True, slots=True)
class LeaseDrop:
    home: bytes = attrs.field(validator=_len(ID_BYTES))
    ids: tuple[bytes, ...] = attrs.field(validator=_ids(PEER_IDS_MAX))


@record(kw_only=True, slots=True)
class Lookup:
    id: bytes = attrs.field(validator=_len(ID_BYTES))


@record(kw_only=True, slots=True)
class LookupReply:
    id: bytes = attrs.field(validator=_len(ID_BYTES))
    homes: tuple[bytes, ...] = attrs.field(validator=_ids(PEER_IDS_MAX))


@record(kw_only=True, slots=True)
class MailboxPut:
    """MAILBOX_PUT: origin node -> each owner; the owner answers MAILBOX_EVENT."""

    env: PeerEnvelope
    ttl_ms: int = attrs.field(validator=v.and_(v.instance_of(int), v.ge(1), v.le(TTL_MS_MAX)))


@record(kw_only=True, slots=True)
class MailboxTake:
    """MAILBOX_TAKE: owner -> co-owners: these entries reached a terminal state, drop your copies."""

    eids: tuple[bytes, ...] = attrs.field(
        validator=v.and_(
            v.deep_iterable(member_validator=_len(EID_BYTES), iterable_validator=v.instance_of(tuple)),
            v.max_len(PEER_IDS_MAX),
        )
    )


@record(kw_only=True, slots=True)
class MailboxEvent:
    eid: bytes = attrs.field(validator=_len(EID_BYTES))
    status: MailboxStatus = attrs.field(validator=v.instance_of(MailboxStatus))


@record(kw_only=True, slots=True)
class Handoff:
    """HANDOFF: an owner moves one mailbox entry to a new owner (membership change, graceful leave). No answer."""

    env: PeerEnvelope
    ttl_ms: int = attrs.field(validator=v.and_(v.instance_of(int), v.ge(1), v.le(TTL_MS_MAX)))


@record(kw_only=True, slots=True)
class RelayReceipt:
    """RECEIPT: a terminal outcome for `eid`, sent to the envelope's origin node."""

    eid: bytes = attrs.field(validator=_len(EID_BYTES))
    status: ReceiptStatus = attrs.field(validator=v.instance_of(ReceiptStatus))


PeerMessage = (
    PeerEnvelope
    | EnvelopeResult
    | Lease
    | LeaseDrop
    | Lookup
    | LookupReply
    | MailboxPut
    | MailboxTake
    | MailboxEvent
    | Handoff
    | RelayReceipt
    | PushSub  # push wake-up (node/protocol/wire/push.py)
    | PushUnsub
    | PushClaim
)


def _env_map(t: MsgType, e: PeerEnvelope) -> dict[str, Any]:
    """The map of a frame carrying envelope `e`, built in one go (it runs for every envelope a link carries)."""
    return {
        "t": t,
        "eid": e.eid,
        "o": e.origin,
        "to": e.to,
        "from": e.sender,
        "k": str(e.kind),
        "c": e.call,
        "b": e.body,
        "cn": e.claim_nonce,
        "cs": e.claim_sig,
        "ex": e.expires_ms,
        "os": e.origin_sig,
    }


def encode_peer(msg: PeerMessage) -> bytes:
    """One peer-link frame (plaintext; the link encrypts it)."""
    return packb(peer_to_map(msg))


def peer_to_map(msg: PeerMessage) -> dict[str, Any]:
    """The msgpack map of one relay frame (the peer link encodes maps itself, so the relay hands it this)."""
    m: dict[str, Any]
    match msg:
        case PeerEnvelope():
            m = _env_map(MsgType.ENVELOPE, msg)
        case EnvelopeResult(eid=eid, status=s):
            m = {"t": MsgType.ENVELOPE_RESULT, "eid": eid, "s": str(s)}
        case Lease(home=h, claims=claims, ttl_ms=ttl):
            m = {
                "t": MsgType.LEASE,
                "h": h,
                "ids": [c.client for c in claims],
                "ns": [c.nonce for c in claims],
                "sg": [c.sig for c in claims],
                "ttl": ttl,
            }
        case LeaseDrop(home=h, ids=ids):
            m = {"t": MsgType.LEASE_DROP, "h": h, "ids": list(ids)}
        case Lookup(id=i):
            m = {"t": MsgType.LOOKUP, "id": i}
        case LookupReply(id=i, homes=homes):
            m = {"t": MsgType.LOOKUP_REPLY, "id": i, "ids": list(homes)}
        case MailboxPut(env=e, ttl_ms=ttl):
            m = _env_map(MsgType.MAILBOX_PUT, e)
            m["ttl"] = ttl
        case MailboxTake(eids=eids):
            m = {"t": MsgType.MAILBOX_TAKE, "ids": list(eids)}
        case MailboxEvent(eid=eid, status=s):
            m = {"t": MsgType.MAILBOX_EVENT, "eid": eid, "s": str(s)}
        case Handoff(env=e, ttl_ms=ttl):
            m = _env_map(MsgType.HANDOFF, e)
            m["ttl"] = ttl
        case RelayReceipt(eid=eid, status=s):
            m = {"t": MsgType.RECEIPT, "eid": eid, "s": str(s)}
        case PushSub() | PushUnsub() | PushClaim():  # push wake-up
            m = push_to_map(msg)
        case _:  # pragma: no cover - the type checker proves this unreachable
            raise TypeError(f"not a peer message: {msg!r}")
    m["t"] = int(m["t"])  # a plain int (only "t" holds a MsgType); the map is fresh, so set it in place
    return m


_ENUM_VALUES: dict[type[enum.StrEnum], dict[str, enum.StrEnum]] = {}


def _get_enum(m: dict[str, Any], key: str, cls: type[enum.StrEnum]) -> Any:
    s = get_str(m, key, max_len=32)
    values = _ENUM_VALUES.get(cls)
    if values is None:  # a dict lookup per frame instead of EnumType.__call__ (bounded: one entry per enum class)
        values = _ENUM_VALUES[cls] = {member.value: member for member in cls}
    member = values.get(s)
    if member is None:
        raise RemoteProtocolError(f"field {key!r}: unknown value {s!r}")
    return member


def _get_ids(m: dict[str, Any], key: str, size: int) -> tuple[bytes, ...]:
    items = m.get(key)
    if not isinstance(items, list) or len(items) > PEER_IDS_MAX:
        raise RemoteProtocolError(f"field {key!r} must be a list of at most {PEER_IDS_MAX} ids")
    if not all(isinstance(x, bytes) and len(x) == size for x in items):
        raise RemoteProtocolError(f"field {key!r} must hold {size}-byte ids")
    return tuple(items)


def _get_env(m: dict[str, Any]) -> PeerEnvelope:
    """The bytes fields are taken as they are, into a bare instance, and then checked by the class's own
    `__attrs_post_init__` (every type and size, in one pass; `__init__` with eleven keywords cost 0.3 µs more, for
    every envelope a home receives); `peer_from_map` turns its TypeError or ValueError into a RemoteProtocolError."""
    get: Callable[[str], Any] = m.get  # Any, not Any | None: the checks below refuse a missing field
    env = PeerEnvelope.checked_by_caller(
        get("eid"),
        get("o"),
        get("to"),
        get("from"),
        _get_enum(m, "k", Kind),
        get("c"),
        get("b"),
        get("cn"),
        get("cs"),
        get_int(m, "ex"),
        get("os"),
    )
    env.__attrs_post_init__()
    return env


def _get_lease(m: dict[str, Any]) -> Lease:
    home = _id(m, "h")
    ids, nonces, sigs = _get_ids(m, "ids", ID_BYTES), _get_ids(m, "ns", NONCE_BYTES), _get_ids(m, "sg", SIG_BYTES)
    if not len(ids) == len(nonces) == len(sigs) or len(ids) > LEASE_CLAIMS_MAX:
        raise RemoteProtocolError(f"a LEASE holds at most {LEASE_CLAIMS_MAX} (id, nonce, sig) triples")
    claims = tuple(HomeClaim(client=i, home=home, nonce=n, sig=g) for i, n, g in zip(ids, nonces, sigs, strict=True))
    return Lease(home=home, claims=claims, ttl_ms=_ttl(m))


def _id(m: dict[str, Any], key: str) -> bytes:
    return get_bytes(m, key, min_len=ID_BYTES, max_len=ID_BYTES)


def _eid(m: dict[str, Any]) -> bytes:
    return get_bytes(m, "eid", min_len=EID_BYTES, max_len=EID_BYTES)


def _ttl(m: dict[str, Any]) -> int:
    return get_int(m, "ttl", lo=1, hi=TTL_MS_MAX)


_DECODERS: dict[int, Any] = {
    MsgType.ENVELOPE: _get_env,
    MsgType.ENVELOPE_RESULT: _get_result,
    MsgType.LEASE: _get_lease,
    MsgType.LEASE_DROP: lambda m: LeaseDrop(home=_id(m, "h"), ids=_get_ids(m, "ids", ID_BYTES)),
    MsgType.LOOKUP: lambda m: Lookup(id=_id(m, "id")),
    MsgType.LOOKUP_REPLY: lambda m: LookupReply(id=_id(m, "id"), homes=_get_ids(m, "ids", ID_BYTES)),
    MsgType.MAILBOX_PUT: lambda m: MailboxPut(env=_get_env(m), ttl_ms=_ttl(m)),
    MsgType.MAILBOX_TAKE: lambda m: MailboxTake(eids=_get_ids(m, "ids", EID_BYTES)),
    MsgType.MAILBOX_EVENT: lambda m: MailboxEvent(eid=_eid(m), status=_get_enum(m, "s", MailboxStatus)),
    MsgType.HANDOFF: lambda m: Handoff(env=_get_env(m), ttl_ms=_ttl(m)),
    MsgType.RECEIPT: lambda m: RelayReceipt(eid=_eid(m), status=_get_enum(m, "s", ReceiptStatus)),
    **PUSH_DECODERS,  # push wake-up (node/protocol/wire/push.py)
}

RELAY_TYPES: Final = frozenset(_DECODERS)


def decode_peer(data: bytes) -> PeerMessage:
    """Decode one relay frame. Raises RemoteProtocolError (TooLarge for an oversized frame) and nothing else."""
    return peer_from_map(
        require_map(unpackb(data, max_bytes=Limits.PEER_FRAME_MAX, max_items=PEER_IDS_MAX + 16), "peer frame")
    )


def peer_from_map(m: dict[str, Any]) -> PeerMessage:
    """Decode one relay frame already unpacked (within the peer link's limits) into a map."""
    t = m.get("t")
    if not isinstance(t, int) or isinstance(t, bool) or t not in _DECODERS:
        raise RemoteProtocolError(f"unknown relay frame type {t!r}")
    try:
        msg: PeerMessage = _DECODERS[t](m)
    except RemoteProtocolError:
        raise
    except (TypeError, ValueError) as exc:  # an attrs validator refused a value the getters let through
        raise RemoteProtocolError(f"bad relay frame: {exc}") from exc
    return msg
