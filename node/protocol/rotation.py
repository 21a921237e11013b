"""Key rotation statements (docs/security.md "Key rotation"), pure.

A statement says "key OLD is replaced by key NEW". It is a signed document (PURPOSE `key-rotation`, signed by OLD)
with body `{"v":1,"old","new","issued"}` (plus `"compromised": true` when OLD was stolen), and `sig2`: NEW's
signature over the same body under PURPOSE `key-rotation-new` (the countersignature: NEW agrees, so no one can name
someone else's key as their successor). The same statement serves a registry key (readers then trust NEW as well
as OLD for `GRACE_S`, then only NEW) and a node key (the registry moves the node's approval from OLD to NEW).

Rules for readers (`follow`):
- a statement counts when its OLD is trusted; its NEW is then trusted too, and OLD stops being trusted once
  `issued + grace_s` has passed, or at once when the statement says `compromised` (chains OLD -> NEW -> NEWER are
  followed, at most `CHAIN_MAX` steps);
- one OLD key has one successor: when several statements name the same OLD, the one the reader saw first counts
  (`pinned`: what it persisted), else the earliest `issued` (ties: the smaller NEW). A thief holding OLD can write a
  statement too; readers that already follow the honest one ignore the thief's (docs/security.md says what else).
Time is passed in (`now`); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import msgpack

from node.protocol.errors import BadSignature, RemoteProtocolError
from node.protocol.identity import (
    ID_BYTES,
    SIG_BYTES,
    SIGN_PREFIX,
    Identity,
    decode_document,
    encode_document,
    open_document,
    sign_document,
    verify_signature,
)

KEY_ROTATION = "key-rotation"
KEY_ROTATION_NEW = "key-rotation-new"
ROTATION_VERSION = 1
GRACE_S = 30 * 86_400  # readers trust OLD and NEW for this long after `issued`, then NEW only
CHAIN_MAX = 8  # statements a registry serves and a reader follows
STATEMENT_BYTES_MAX = 512  # one encoded statement (about 250 bytes)
CLOCK_SKEW_S = 300


@attrs.frozen(kw_only=True, slots=True)
class Rotation:
    old: bytes
    new: bytes
    issued: int  # unix seconds
    compromised: bool = False  # OLD was stolen: readers drop it at once instead of after the grace period


def build_rotation(old: Identity, new: Identity, *, issued: int, compromised: bool = False) -> dict[str, bytes]:
    """The statement OLD -> NEW, signed by OLD and countersigned by NEW."""
    body: dict[str, object] = {"v": ROTATION_VERSION, "old": old.id, "new": new.id, "issued": issued}
    if compromised:
        body["compromised"] = True
    doc = sign_document(old, KEY_ROTATION, body)
    doc["sig2"] = new.sign(SIGN_PREFIX + KEY_ROTATION_NEW.encode("ascii") + doc["body"])
    return doc


def open_rotation(doc: object, *, now: float) -> Rotation:
    """Verify a statement: both signatures, the fields, `issued` not in the future. RemoteProtocolError if not."""
    body, signer = open_document(doc, KEY_ROTATION, None)
    assert isinstance(doc, dict)
    old, new, issued = body.get("old"), body.get("new"), body.get("issued")
    if body.get("v") != ROTATION_VERSION:
        raise RemoteProtocolError(f"key rotation version {body.get('v')!r} unsupported")
    if not (isinstance(old, bytes) and isinstance(new, bytes) and len(old) == ID_BYTES == len(new) and old != new):
        raise RemoteProtocolError("key rotation needs two different 32-byte keys 'old' and 'new'")
    if not isinstance(issued, int) or isinstance(issued, bool) or not 0 <= issued <= 2**53:
        raise RemoteProtocolError("key rotation 'issued' must be unix seconds")
    if signer != old:
        raise BadSignature("key rotation is not signed by the old key")
    sig2 = doc.get("sig2")
    if not isinstance(sig2, bytes) or len(sig2) != SIG_BYTES:
        raise RemoteProtocolError("key rotation has no countersignature 'sig2'")
    if not verify_signature(new, SIGN_PREFIX + KEY_ROTATION_NEW.encode("ascii") + doc["body"], sig2):
        raise BadSignature("key rotation countersignature of the new key does not verify")
    if issued > now + CLOCK_SKEW_S:
        raise RemoteProtocolError("key rotation issued in the future")
    compromised = body.get("compromised", False)
    if not isinstance(compromised, bool):
        raise RemoteProtocolError("key rotation 'compromised' must be a boolean")
    return Rotation(old=old, new=new, issued=issued, compromised=compromised)


def encode_rotation(doc: dict[str, bytes]) -> bytes:
    return encode_document(doc)


def decode_rotation(data: bytes, *, now: float) -> Rotation:
    if len(data) > STATEMENT_BYTES_MAX:
        raise RemoteProtocolError("key rotation statement too large", code="too_large")
    return open_rotation(decode_document(data), now=now)


def pack_chain(statements: Iterable[bytes]) -> bytes:
    """The `rot` field served next to a registry's list: msgpack array of encoded statements."""
    return bytes(msgpack.packb(list(statements)[-CHAIN_MAX:], use_bin_type=True))


def unpack_chain(data: object, *, now: float) -> tuple[list[Rotation], list[bytes]]:
    """Verified rotations in a `rot` field and their encoded statements; bad entries are skipped."""
    if not isinstance(data, bytes) or len(data) > CHAIN_MAX * (STATEMENT_BYTES_MAX + 8):
        return [], []
    try:
        items = msgpack.unpackb(data, raw=False)
    except Exception:
        return [], []
    if not isinstance(items, list):
        return [], []
    rotations, raw = [], []
    for item in items[:CHAIN_MAX]:
        if not isinstance(item, bytes):
            continue
        try:
            rotations.append(decode_rotation(item, now=now))
        except RemoteProtocolError:
            continue
        raw.append(item)
    return rotations, raw


def successors(rotations: Iterable[Rotation], pinned: Iterable[Rotation] = ()) -> dict[bytes, Rotation]:
    """One successor per OLD key: the pinned one, else the earliest `issued` (ties: the smaller NEW)."""
    out: dict[bytes, Rotation] = {}
    for r in pinned:  # in the order the reader saw them: the first one for an OLD key wins
        out.setdefault(r.old, r)
    for r in sorted(rotations, key=lambda r: (r.issued, r.new)):
        out.setdefault(r.old, r)
    return out


def follow(
    trust: frozenset[bytes], rotations: Iterable[Rotation], now: float, *, grace_s: int = GRACE_S,
    pinned: Iterable[Rotation] = (),
) -> frozenset[bytes]:  # fmt: skip
    """The keys to trust now, starting from `trust` and following rotation statements (see the module doc)."""
    succ = successors(rotations, pinned)
    current = set(trust)
    retired: set[bytes] = set()
    frontier = list(trust)
    for _ in range(CHAIN_MAX):
        nxt = []
        for key in frontier:
            r = succ.get(key)
            if r is None or r.new in current:
                continue
            current.add(r.new)
            nxt.append(r.new)
            if r.compromised or now > r.issued + grace_s:
                retired.add(r.old)
        if not nxt:
            break
        frontier = nxt
    return frozenset(current - retired)
