"""Seed resolution and member metadata (pure).

`--join HOST:PORT` names a seed's SWIM address, but every SWIM datagram is sealed to the recipient's key, so the
joiner first asks "which node listens here?":

- WHOIS (unsealed): `kind(1)=0x02 | version(1) | asker id(32) | nonce(16) | zero padding` to `WHOIS_BYTES`.
  The padding makes the request at least as large as the reply, so the exchange cannot be used for amplification.
- WHOIS_REPLY (unsealed, signed): `kind(1)=0x03 | version(1) | msgpack({"id","nonce","asker","meta","sig"})`, the
  signature by the answering node over `b"homing/v1/whois" + asker + nonce + meta`. The asker checks the nonce it
  sent and the signature, so a reply cannot be forged or replayed to it; the id it learns is then pinned by the
  sealed SWIM exchange that follows (only the real key holder can open those packets).

Member meta (opaque to the SWIM core, at most META_MAX bytes) is msgpack `{"p": peer port, "h": advertised host
or "", "u": public client URL}`, plus `"l": false` for a bridge (`[node] listed = false`: other nodes leave it out
of `goaway`; a meta without `l` is a listed node's). It rides in every alive update and every push-pull record,
so it stays small: a node's signed card (for `goaway`) is fetched over the peer link when needed, not gossiped.

Datagram kinds on the SWIM port: `DatagramKind` in node/protocol/wire/__init__.py (0x01 sealed, 0x02, 0x03).
"""

from __future__ import annotations

from typing import Any

import attrs

from node.protocol.errors import RemoteProtocolError
from node.protocol.identity import ID_BYTES, Identity, verify_signature
from node.protocol.wire import WIRE_VERSION, DatagramKind, get_bytes, get_int, get_str, packb, require_map, unpackb

KIND_SEALED = DatagramKind.SEALED
KIND_WHOIS = DatagramKind.WHOIS
KIND_WHOIS_REPLY = DatagramKind.WHOIS_REPLY
NONCE_BYTES = 16
WHOIS_BYTES = 768  # >= the largest reply (meta <= META_MAX = 512 bytes plus ~180 bytes of fields): no amplification
META_MAX = 512  # node/protocol/swim/messages.py META_MAX: the SWIM core carries at most this
WHOIS_SIGN_PREFIX = b"homing/v1/whois"


@attrs.frozen(kw_only=True, slots=True)
class Meta:
    peer_port: int
    host: str = ""  # advertised host for the peer link; "" means the SWIM address's host
    url: str = ""  # the node's public client URL
    listed: bool = True  # False: a bridge, never named in goaway


def encode_meta(meta: Meta) -> bytes:
    fields: dict[str, Any] = {"p": meta.peer_port, "h": meta.host, "u": meta.url}
    if not meta.listed:
        fields["l"] = False
    data = packb(fields)
    if len(data) > META_MAX:
        raise ValueError(f"member meta of {len(data)} bytes exceeds {META_MAX} (public_url too long?)")
    return data


def decode_meta(data: bytes) -> Meta:
    m = require_map(unpackb(data, max_bytes=META_MAX, max_items=8), "meta")
    return Meta(
        peer_port=get_int(m, "p", lo=1, hi=65535),
        host=get_str(m, "h", max_len=255),
        url=get_str(m, "u", max_len=META_MAX),
        listed=m.get("l", True) is not False,
    )


def member_listed(meta: bytes) -> bool:
    """Whether a member's meta says it is listed (a bridge says not; unreadable meta: not named either)."""
    try:
        return decode_meta(meta).listed
    except RemoteProtocolError:
        return False


def encode_whois(asker: bytes, nonce: bytes) -> bytes:
    head = bytes([KIND_WHOIS, WIRE_VERSION]) + asker + nonce
    return head + bytes(WHOIS_BYTES - len(head))


def decode_whois(packet: bytes) -> tuple[bytes, bytes]:
    """Return (asker id, nonce). Requests shorter than WHOIS_BYTES are refused (amplification guard)."""
    if len(packet) != WHOIS_BYTES or packet[0] != KIND_WHOIS:
        raise RemoteProtocolError("whois request has the wrong size or kind")
    if packet[1] != WIRE_VERSION:
        raise RemoteProtocolError(f"whois version {packet[1]} unsupported")
    return packet[2 : 2 + ID_BYTES], packet[2 + ID_BYTES : 2 + ID_BYTES + NONCE_BYTES]


def encode_whois_reply(identity: Identity, asker: bytes, nonce: bytes, meta: bytes) -> bytes:
    sig = identity.sign(WHOIS_SIGN_PREFIX + asker + nonce + meta)
    body = packb({"id": identity.id, "nonce": nonce, "asker": asker, "meta": meta, "sig": sig})
    return bytes([KIND_WHOIS_REPLY, WIRE_VERSION]) + body


def decode_whois_reply(packet: bytes, *, asker: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """Verify a reply to our own request; return (node id, meta)."""
    if len(packet) < 2 or packet[0] != KIND_WHOIS_REPLY or packet[1] != WIRE_VERSION:
        raise RemoteProtocolError("not a whois reply")
    m: dict[str, Any] = require_map(unpackb(packet[2:], max_bytes=2 * WHOIS_BYTES, max_items=8), "whois reply")
    node_id = get_bytes(m, "id", min_len=ID_BYTES, max_len=ID_BYTES)
    meta = get_bytes(m, "meta", max_len=META_MAX)
    sig = get_bytes(m, "sig", min_len=64, max_len=64)
    if get_bytes(m, "nonce", max_len=64) != nonce or get_bytes(m, "asker", max_len=64) != asker:
        raise RemoteProtocolError("whois reply is not for our request")
    if not verify_signature(node_id, WHOIS_SIGN_PREFIX + asker + nonce + meta, sig):
        raise RemoteProtocolError("whois reply signature does not verify")
    return node_id, meta
