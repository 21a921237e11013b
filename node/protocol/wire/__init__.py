"""The one place where bytes become messages and back.

Rules:
- Every size limit lives in `Limits` below; code elsewhere refers to these names, never to literals.
- Type numbers in `MsgType` are append-only: never renumber or reuse one. A new message gets a new number.
- Every packet/frame starts with `WIRE_VERSION`; a packet of another version is refused, not guessed at.
- Decoders raise RemoteProtocolError (or a subclass with a wire `code`) and never anything else; an illegal
  input changes nothing.

Submodules: `swim` (SWIM datagrams and push-pull state), `peer` (node-to-node peer link frames),
`client` (the client protocol of docs/client-protocol.md).
"""

from __future__ import annotations

import enum
import functools
from typing import Any, Final

import msgpack

from node.protocol.errors import RemoteProtocolError, TooLarge

WIRE_VERSION: Final = 1


class Limits:
    """Every size limit of every wire format, in bytes unless the name says otherwise."""

    SWIM_DATAGRAM_MAX: Final = 1400  # whole UDP payload incl. crypto overhead; fits a 1500-byte MTU path
    SWIM_PIGGYBACK_MAX_ITEMS: Final = 64  # member updates piggybacked in one datagram (bounded by bytes anyway)
    PUSH_PULL_MAX: Final = 6 * 1024 * 1024  # a full-state sync frame (20,000 members at ~220 B signed, with room)
    PEER_FRAME_MAX: Final = 256 * 1024  # one peer-link frame: an envelope (body <= 64 KiB) plus metadata
    CLIENT_FRAME_MAX: Final = 128 * 1024  # a client WebSocket message; larger closes with 1009
    CLIENT_BODY_MAX: Final = 64 * 1024  # envelope body (docs/client-protocol.md)
    CALL_ID_MIN: Final = 1
    CALL_ID_MAX: Final = 64
    MSGPACK_CONTAINER_MAX: Final = 4096  # items in any one array/map from the network (push-pull overrides)
    MSGPACK_STR_MAX: Final = 8 * 1024  # any string field from the network
    MSGPACK_DEPTH_MAX: Final = 8


class MsgType(enum.IntEnum):
    """Append-only type table for node-to-node messages (SWIM datagrams and peer-link frames).

    1..31 SWIM datagrams, 32..63 peer link. The client protocol uses the string `t` of docs/client-protocol.md.
    """

    # SWIM (UDP)
    PING = 1
    PING_REQ = 2
    ACK = 3
    NACK = 4
    COMPOUND = 5  # reserved
    WHOIS = 6  # reserved, never sent: seed lookups are unsealed datagrams, DatagramKind.WHOIS
    WHOIS_REPLY = 7  # reserved, never sent: DatagramKind.WHOIS_REPLY
    # peer link (TCP)
    PUSH_PULL = 32
    PUSH_PULL_REPLY = 33
    LINK_HELLO = 34
    LINK_HELLO_OK = 35
    ENVELOPE = 36
    ENVELOPE_RESULT = 37
    LEASE = 38
    LEASE_DROP = 39
    LOOKUP = 40
    LOOKUP_REPLY = 41
    MAILBOX_PUT = 42
    MAILBOX_TAKE = 43
    MAILBOX_EVENT = 44
    HANDOFF = 45
    RECEIPT = 46
    LINK_PING = 47
    LINK_PONG = 48
    # push wake-up (node/protocol/wire/push.py)
    PUSH_SUB = 49
    PUSH_UNSUB = 50
    PUSH_CLAIM = 51


class DatagramKind(enum.IntEnum):
    """Append-only: the first byte of every UDP datagram on the SWIM port, before anything is decrypted."""

    SEALED = 0x01  # a sealed SWIM datagram (node/protocol/crypto.py); inside, a MsgType 1..31 message
    WHOIS = 0x02  # unsealed: "which node listens here?" (seed join by address), padded against amplification
    WHOIS_REPLY = 0x03  # unsealed, signed by the node: its id, SWIM address and meta (node/protocol/wire/seed.py)


_PACKERS: Final[list[Any]] = []  # idle msgpack Packers (list.pop and list.append are atomic: never shared)


def packb(obj: Any) -> bytes:
    """Encode with the one msgpack profile homing uses (bin type for bytes, str for text).

    With a reused Packer: `msgpack.packb` builds a new Packer (and its buffer) on every call, two thirds of what
    packing a relayed envelope cost. A Packer must not be used by two threads at once (the registry packs in
    worker threads), so each call takes one from the pool, or makes one, and puts it back; a Packer resets itself
    after a pack that raised."""
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True)
    try:
        return bytes(packer.pack(obj))
    finally:
        _PACKERS.append(packer)


@functools.lru_cache(maxsize=64)  # a handful of (bytes, items) pairs; the dict is only ever unpacked as **kwargs
def _bounds(max_bytes: int, max_items: int) -> dict[str, Any]:
    """The one decoding profile for untrusted msgpack: every container and string bounded, no ext types."""
    return {
        "raw": False,
        "strict_map_key": True,
        "max_bin_len": max_bytes,
        "max_str_len": min(max_bytes, max(Limits.MSGPACK_STR_MAX, max_bytes // 4)),
        "max_array_len": max_items,
        "max_map_len": max_items,
        "max_ext_len": 0,
    }


def unpackb(data: bytes, *, max_bytes: int, max_items: int = Limits.MSGPACK_CONTAINER_MAX) -> Any:
    """Decode untrusted msgpack with every container and string bounded. Raises RemoteProtocolError."""
    if len(data) > max_bytes:
        raise TooLarge(f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        obj = msgpack.unpackb(data, **_bounds(max_bytes, max_items))
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError, ...
        raise RemoteProtocolError(f"not valid msgpack: {type(exc).__name__}") from exc
    return obj


# (max_bytes, max_items) -> idle msgpack Unpackers, each empty, with its `tell()` (bytes consumed since it was made)
_UNPACKERS: Final[dict[tuple[int, int], list[tuple[Any, int]]]] = {}


def unpack_all(data: bytes, *, max_bytes: int, max_items: int = Limits.MSGPACK_CONTAINER_MAX) -> list[Any]:
    """Decode untrusted msgpack holding one or more objects back to back (a peer link's sealed batch), each and
    all within `max_bytes`, every container within `max_items`. Raises RemoteProtocolError; a truncated last
    object is an error, never silently dropped.

    With a reused Unpacker, as `packb` reuses Packers: building one (its bounds parsed, its buffer allocated) cost
    half of decoding a one-envelope batch. Only an Unpacker that consumed its whole input goes back to the pool;
    one left holding part of an object, or that raised, is dropped."""
    if len(data) > max_bytes:
        raise TooLarge(f"message of {len(data)} bytes exceeds {max_bytes}")
    idle = _UNPACKERS.get((max_bytes, max_items))
    if idle is None:
        idle = _UNPACKERS.setdefault((max_bytes, max_items), [])
    try:
        unpacker, start = idle.pop()
    except IndexError:
        unpacker, start = msgpack.Unpacker(max_buffer_size=max(max_bytes, 1), **_bounds(max_bytes, max_items)), 0
    end = start + len(data)
    objs = []
    try:
        unpacker.feed(data)
        while unpacker.tell() < end:  # each object takes at least a byte: at most len(data) rounds
            objs.append(unpacker.unpack())  # not iteration, which ends by raising StopIteration (2 µs)
    except Exception as exc:  # msgpack raises OutOfData (a truncated object), ValueError, FormatError, StackError, ...
        raise RemoteProtocolError(f"not valid msgpack: {type(exc).__name__}") from exc
    if not objs:
        raise RemoteProtocolError("not valid msgpack: empty")
    idle.append((unpacker, end))
    return objs


def require_map(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{what} is not a map")
    return obj


def get_bytes(m: dict[str, Any], key: str, *, min_len: int = 0, max_len: int) -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes) or not (min_len <= len(v) <= max_len):
        raise RemoteProtocolError(f"field {key!r} must be {min_len}..{max_len} bytes")
    return v


def get_int(m: dict[str, Any], key: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not (lo <= v <= hi):
        raise RemoteProtocolError(f"field {key!r} must be an integer in {lo}..{hi}")
    return v


def get_str(m: dict[str, Any], key: str, *, max_len: int = 256) -> str:
    v = m.get(key)
    if not isinstance(v, str) or len(v) > max_len:
        raise RemoteProtocolError(f"field {key!r} must be a string of at most {max_len} characters")
    return v
