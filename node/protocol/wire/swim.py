"""SWIM datagrams and push-pull state, as bytes.

Datagram:  [WIRE_VERSION][MsgType][msgpack map]
    PING      {"s": seq, "u": [update...]}
    PING_REQ  {"s": seq, "t": target id, "h": host, "p": port, "n": want nack, "u": [...]}
    ACK, NACK {"s": seq, "u": [...]}
    COMPOUND  {"u": [...]}                 (a gossip round: updates only)
Update:    a compact array, by state (state 0 alive, 1 suspect, 2 dead, 3 left):
           alive/left   [id, host, port, meta, incarnation, state, sig]  sig: the member's own Ed25519 signature
                        over its record (node/protocol/swim/records.py); only the member can write these.
           suspect/dead [id, incarnation, state, by, sig]   a claim by someone else: no address or meta (the
                        receiver keeps the signed ones it holds); `by` is the accuser's id, `sig` its Ed25519
                        signature over the accusation (records.py `accusation_bytes`). Without an accuser's
                        signature, [id, incarnation, state, by]: a claim sent to its subject only (it refutes).
Push-pull: [WIRE_VERSION][PUSH_PULL or PUSH_PULL_REPLY][msgpack {"m": [member...]}], member =
           [id, host, port, meta, incarnation, state, sig] in every state (a suspect/dead member keeps the
           signature of its alive record at that incarnation, so the receiver can check the member signed it).
Incarnations are at most INCARNATION_MAX = 2^53: a node starts at its boot epoch (its start time in ms, about
2^41) and steps by one (docs/swim.md "Boot epochs and replays").

The driver seals each datagram (SEAL_OVERHEAD bytes), so an encoded datagram is at most SWIM_PAYLOAD_MAX.
Decoders raise RemoteProtocolError on anything malformed and nothing else.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

from node.protocol.errors import RemoteProtocolError, TooLarge
from node.protocol.swim.messages import (
    ID_LEN,
    META_MAX,
    SIG_LEN,
    Ack,
    Gossip,
    MemberInfo,
    MemberState,
    Nack,
    Ping,
    PingReq,
    PushPullState,
    SwimMessage,
    Update,
)
from node.protocol.wire import WIRE_VERSION, Limits, MsgType, get_bytes, get_int, packb, require_map, unpackb

SEAL_OVERHEAD: Final = 65  # bytes the driver's node-to-node sealing adds to each datagram
SWIM_PAYLOAD_MAX: Final = Limits.SWIM_DATAGRAM_MAX - SEAL_OVERHEAD  # an encoded datagram, before sealing
HOST_MAX: Final = 253  # a DNS name or an IP literal
INCARNATION_MAX: Final = 2**53  # boot epoch (ms, ~2^41) + one step per refutation: never reached
SEQ_MAX: Final = 2**63 - 1
PUSH_PULL_MEMBERS_MAX: Final = 20_000  # members in one push-pull state (SwimConfig.members_max default)
UPDATE_MIN_SIZE: Final = 39  # the smallest encoded update (a dead claim with an empty accuser)

_STATE_CODE: Final = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2, MemberState.LEFT: 3}
_CODE_STATE: Final = {c: s for s, c in _STATE_CODE.items()}
_SEQ_TYPES: Final[dict[int, type[Ping] | type[Ack] | type[Nack]]] = {
    MsgType.PING: Ping,
    MsgType.ACK: Ack,
    MsgType.NACK: Nack,
}


_CLAIMS: Final = (MemberState.SUSPECT, MemberState.DEAD)


def _member_obj(m: MemberInfo) -> list[Any]:
    return [m.id, m.addr[0], m.addr[1], m.meta, m.incarnation, _STATE_CODE[m.state], m.sig]


def _update_obj(u: Update) -> list[Any]:
    m = u.member
    if m.state in _CLAIMS:
        if u.sig:
            return [m.id, m.incarnation, _STATE_CODE[m.state], u.by, u.sig]
        return [m.id, m.incarnation, _STATE_CODE[m.state], u.by]
    return _member_obj(m)


def update_size(update: Update) -> int:
    """Encoded size of one update inside a datagram's update array."""
    return len(packb(_update_obj(update)))


def _body(msg: SwimMessage) -> tuple[MsgType, dict[str, Any]]:
    u = [_update_obj(x) for x in msg.updates]
    if isinstance(msg, Ping):
        return MsgType.PING, {"s": msg.seq, "u": u}
    if isinstance(msg, Ack):
        return MsgType.ACK, {"s": msg.seq, "u": u}
    if isinstance(msg, Nack):
        return MsgType.NACK, {"s": msg.seq, "u": u}
    if isinstance(msg, PingReq):
        host, port = msg.target_addr
        return MsgType.PING_REQ, {"s": msg.seq, "t": msg.target, "h": host, "p": port, "n": msg.nack, "u": u}
    return MsgType.COMPOUND, {"u": u}


def encode_datagram(msg: SwimMessage) -> bytes:
    msg_type, body = _body(msg)
    return bytes((WIRE_VERSION, msg_type)) + packb(body)


def piggyback_budget(msg: SwimMessage) -> int:
    """Bytes left for updates in `msg` (given without updates), with room for the update array's header."""
    return SWIM_PAYLOAD_MAX - len(encode_datagram(msg)) - 2


def _check_inc_state(inc: Any, state: Any) -> None:
    if not isinstance(inc, int) or isinstance(inc, bool) or not 0 <= inc <= INCARNATION_MAX:
        raise RemoteProtocolError("member incarnation out of range")
    if not isinstance(state, int) or isinstance(state, bool) or state not in _CODE_STATE:
        raise RemoteProtocolError("member state unknown")


def _check_id(mid: Any, what: str = "member id") -> None:
    if not isinstance(mid, bytes) or len(mid) != ID_LEN:
        raise RemoteProtocolError(f"{what} must be 32 bytes")


def _decode_member(obj: Any) -> MemberInfo:
    """A signed member record: [id, host, port, meta, incarnation, state, sig]."""
    if not isinstance(obj, list) or len(obj) != 7:
        raise RemoteProtocolError("member is not a 7-item array")
    mid, host, port, meta, inc, state, sig = obj
    _check_id(mid)
    if not isinstance(host, str) or len(host) > HOST_MAX:
        raise RemoteProtocolError("member host must be a short string")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise RemoteProtocolError("member port out of range")
    if not isinstance(meta, bytes) or len(meta) > META_MAX:
        raise RemoteProtocolError(f"member meta must be at most {META_MAX} bytes")
    _check_inc_state(inc, state)
    if not isinstance(sig, bytes) or len(sig) != SIG_LEN:
        raise RemoteProtocolError(f"member signature must be {SIG_LEN} bytes")
    return MemberInfo(id=mid, addr=(host, port), meta=meta, incarnation=inc, state=_CODE_STATE[state], sig=sig)


def _decode_update(obj: Any) -> Update:
    if isinstance(obj, list) and len(obj) in (4, 5):  # a suspect/dead claim, signed by its accuser or not
        mid, inc, state, by = obj[:4]
        sig = obj[4] if len(obj) == 5 else b""
        _check_id(mid)
        _check_inc_state(inc, state)
        if _CODE_STATE[state] not in _CLAIMS:
            raise RemoteProtocolError("an alive/left record must be signed")
        if not isinstance(by, bytes) or len(by) not in (0, ID_LEN):
            raise RemoteProtocolError("accuser id must be empty or 32 bytes")
        if len(obj) == 5 and (not isinstance(sig, bytes) or len(sig) != SIG_LEN or len(by) != ID_LEN):
            raise RemoteProtocolError(f"a signed claim names its accuser and carries a {SIG_LEN}-byte signature")
        claim = MemberInfo(id=mid, addr=("", 0), meta=b"", incarnation=inc, state=_CODE_STATE[state])
        return Update(member=claim, by=by, sig=sig)
    info = _decode_member(obj)
    if info.state in _CLAIMS:
        raise RemoteProtocolError("a suspect/dead update is a 4- or 5-item claim")
    return Update(member=info)


def _decode_updates(m: dict[str, Any]) -> tuple[Update, ...]:
    raw = m.get("u")
    if not isinstance(raw, list) or len(raw) > Limits.SWIM_PIGGYBACK_MAX_ITEMS:
        raise RemoteProtocolError(f"updates must be a list of at most {Limits.SWIM_PIGGYBACK_MAX_ITEMS}")
    return tuple(_decode_update(item) for item in raw)


def _header(data: bytes, max_bytes: int) -> int:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError("not bytes")
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds {max_bytes}")
    if len(data) < 3:
        raise RemoteProtocolError("truncated header")
    if data[0] != WIRE_VERSION:
        raise RemoteProtocolError(f"wire version {data[0]} is not {WIRE_VERSION}")
    return data[1]


def decode_datagram(data: bytes) -> SwimMessage:
    """Parse one SWIM datagram (already unsealed). Raises RemoteProtocolError on anything malformed."""
    msg_type = _header(data, SWIM_PAYLOAD_MAX)
    try:
        m = require_map(unpackb(bytes(data[2:]), max_bytes=SWIM_PAYLOAD_MAX), "datagram")
        updates = _decode_updates(m)
        if msg_type in _SEQ_TYPES:
            return _SEQ_TYPES[msg_type](seq=get_int(m, "s", hi=SEQ_MAX), updates=updates)
        if msg_type == MsgType.PING_REQ:
            nack = m.get("n")
            if not isinstance(nack, bool):
                raise RemoteProtocolError("field 'n' must be a boolean")
            host = m.get("h")
            if not isinstance(host, str) or len(host) > HOST_MAX:
                raise RemoteProtocolError("field 'h' must be a short string")
            return PingReq(
                seq=get_int(m, "s", hi=SEQ_MAX),
                target=get_bytes(m, "t", min_len=ID_LEN, max_len=ID_LEN),
                target_addr=(host, get_int(m, "p", hi=65535)),
                nack=nack,
                updates=updates,
            )
        if msg_type == MsgType.COMPOUND:
            return Gossip(updates=updates)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # a validator we did not foresee: still the peer's fault
        raise RemoteProtocolError(f"malformed datagram: {type(exc).__name__}") from exc
    raise RemoteProtocolError(f"unknown SWIM message type {msg_type}")


def encode_push_pull(state: PushPullState, *, reply: bool = False) -> bytes:
    """A full state, zlib-compressed inside the map (`{"z": deflate(msgpack({"m": [...]}))}`): addresses and
    URLs repeat from member to member, so a sync costs about half the bytes (ids are random and stay as they are).
    """
    msg_type = MsgType.PUSH_PULL_REPLY if reply else MsgType.PUSH_PULL
    inner = packb({"m": [_member_obj(m) for m in state.members]})
    data = bytes((WIRE_VERSION, msg_type)) + packb({"z": zlib.compress(inner, 6)})
    if len(data) > Limits.PUSH_PULL_MAX or len(inner) > Limits.PUSH_PULL_MAX:
        raise TooLarge(f"push-pull state of {len(inner)} bytes exceeds {Limits.PUSH_PULL_MAX}")
    return data


def _inflate(blob: bytes) -> bytes:
    """Decompress at most PUSH_PULL_MAX bytes: a small blob that inflates beyond that (a zip bomb) is refused."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(blob, Limits.PUSH_PULL_MAX)
    except zlib.error as exc:
        raise RemoteProtocolError("push-pull state is not valid deflate data") from exc
    if d.unconsumed_tail or not d.eof:
        raise TooLarge(f"push-pull state inflates beyond {Limits.PUSH_PULL_MAX} bytes or is truncated")
    return out


def decode_push_pull(data: bytes) -> PushPullState:
    """Parse a push-pull state (either direction). Raises RemoteProtocolError on anything malformed."""
    msg_type = _header(data, Limits.PUSH_PULL_MAX)
    if msg_type not in (MsgType.PUSH_PULL, MsgType.PUSH_PULL_REPLY):
        raise RemoteProtocolError(f"type {msg_type} is not a push-pull state")
    try:
        m = require_map(
            unpackb(bytes(data[2:]), max_bytes=Limits.PUSH_PULL_MAX, max_items=PUSH_PULL_MEMBERS_MAX), "push-pull"
        )
        blob = m.get("z")
        if isinstance(blob, bytes):
            inner = _inflate(blob)
            m = require_map(
                unpackb(inner, max_bytes=Limits.PUSH_PULL_MAX, max_items=PUSH_PULL_MEMBERS_MAX), "push-pull"
            )
        raw = m.get("m")
        if not isinstance(raw, list):
            raise RemoteProtocolError("field 'm' must be a list")
        return PushPullState(members=tuple(_decode_member(item) for item in raw))
    except RemoteProtocolError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"malformed push-pull state: {type(exc).__name__}") from exc
