"""Deterministic node keys for tests and simulations: `key(i)` is the same Ed25519 key in every run.

`signed(m)` is member m's record signed by m's own key (the only key that can sign it: node/protocol/swim/
records.py); `accusation(m, by)` is a SUSPECT/DEAD claim signed by its accuser; `VERIFIER` is one shared, caching
RecordVerifier.
"""

from __future__ import annotations

import functools

from node.protocol.identity import Identity
from node.protocol.swim.messages import MemberInfo, Update
from node.protocol.swim.records import RecordVerifier, accusation_bytes, sign_record

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


def accusation(m: MemberInfo, by: Identity | bytes) -> Update:
    """The claim `m` (its id, incarnation and SUSPECT/DEAD state) accused by `by` (an Identity, or the id of some
    `key(i)`), signed by that accuser (records.py `accusation_bytes`)."""
    accuser = by if isinstance(by, Identity) else _BY_ID[by]
    return Update(member=m, by=accuser.id, sig=accuser.sign(accusation_bytes(m.id, m.incarnation, accuser.id)))
