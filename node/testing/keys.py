"""Deterministic node keys for tests and simulations: `key(i)` is the same Ed25519 key in every run.

`signed(m)` is member m's record signed by m's own key (the only key that can sign it: node/protocol/swim/
records.py); `VERIFIER` is one shared, caching RecordVerifier.
"""

from __future__ import annotations

import functools

from node.protocol.identity import Identity
from node.protocol.swim.messages import MemberInfo
from node.protocol.swim.records import RecordVerifier, sign_record

VERIFIER = RecordVerifier()
_BY_ID: dict[bytes, Identity] = {}


@functools.cache
def key(i: int) -> Identity:
    """The key of test node i (0 <= i < 2**32)."""
    ident = Identity.from_seed(b"homing-test-key:" + i.to_bytes(16, "big"))
    _BY_ID[ident.id] = ident
    return ident


def nid(i: int) -> bytes:
    return key(i).id


def signed(m: MemberInfo) -> MemberInfo:
    """`m` signed by its member's key (the member must be some `key(i)`)."""
    return sign_record(m, _BY_ID[m.id].sign)
