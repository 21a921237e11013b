"""Member records that only the member can write: signing and (cached) verification.

Theory (docs/swim.md "Hostile members"):
- A member's ALIVE and LEFT records — (id, address, meta, incarnation, state) — are signed by that member's node
  key (Ed25519; the id is the public key). The signature travels with the record in gossip and push-pull.
- A SUSPECT or DEAD record is a claim by someone else. It carries no address or meta (the receiver keeps the
  signed ones it holds) and is accepted only at an incarnation the member itself signed; protocol.py applies it.
  Table records in state SUSPECT or DEAD keep the signature of the ALIVE record at the same incarnation, so a
  push-pull can show that the member really signed that incarnation.
- An accusation — "I, `by`, suspect member `id` at its incarnation `incarnation`" — is signed by its accuser
  (Ed25519 over `b"homing/v1/swim-accuse" + msgpack([id, incarnation, by])`) and travels with the SUSPECT or DEAD
  claim, so whoever passes a claim on cannot pass itself off as its accuser, nor name others as confirming ones
  (merging.py A1-A4). The state is not signed: a SUSPECT and a DEAD claim count the same (one accusation each).
- Verification is the costly part (~60 us), so each distinct (record, signature) is verified once: the verifier
  keeps a bounded cache of results, and the core skips records equal to the one it holds.
Pure: no I/O; the signing function and the raw verification function are injected.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import attrs

from node.protocol.identity import verify_signature
from node.protocol.swim.messages import SIG_LEN, MemberInfo, MemberState
from node.protocol.wire import packb

RECORD_SIGN_PREFIX = b"homing/v1/swim-member"
ACCUSE_SIGN_PREFIX = b"homing/v1/swim-accuse"
VERIFY_CACHE_MAX = 65_536  # distinct (record, signature) results kept (about 300 bytes each)

SignFn = Callable[[bytes], bytes]
VerifyFn = Callable[[bytes, bytes, bytes], bool]  # (signer id, message, signature) -> valid


def signed_state(state: MemberState) -> MemberState:
    """The state a member signs: LEFT for a leave, ALIVE for every other record (suspect/dead keep its alive)."""
    return MemberState.LEFT if state is MemberState.LEFT else MemberState.ALIVE


def record_bytes(m: MemberInfo) -> bytes:
    """The exact bytes a member signs for its record (docs/swim.md "Hostile members")."""
    left = 1 if m.state is MemberState.LEFT else 0
    return RECORD_SIGN_PREFIX + packb([m.id, m.addr[0], m.addr[1], m.meta, m.incarnation, left])


def accusation_bytes(member_id: bytes, incarnation: int, by: bytes) -> bytes:
    """The exact bytes an accuser signs for its accusation of a member at an incarnation (docs/swim.md)."""
    return ACCUSE_SIGN_PREFIX + packb([member_id, incarnation, by])


def sign_record(m: MemberInfo, sign: SignFn) -> MemberInfo:
    """`m` with its own signature (the caller is the member: `sign` uses its key)."""
    return attrs.evolve(m, sig=sign(record_bytes(m)))


class RecordVerifier:
    """Verifies member signatures (records and accusations), remembering the result of each distinct (signed
    bytes, signature) once seen: the signed bytes name the signer (a record's id, an accusation's accuser).

    One verifier may be shared by many cores (the simulator does: results do not depend on who asks).
    """

    __slots__ = ("_cache", "_verify", "cache_hits", "cache_max", "verified")

    def __init__(self, verify: VerifyFn = verify_signature, *, cache_max: int = VERIFY_CACHE_MAX) -> None:
        self._verify = verify
        self.cache_max = cache_max
        self._cache: OrderedDict[tuple[bytes, bytes], bool] = OrderedDict()
        self.verified = 0  # signature checks actually run
        self.cache_hits = 0

    def verify(self, m: MemberInfo) -> bool:
        """The member's own signature over its record."""
        if len(m.sig) != SIG_LEN:
            return False
        return self._check(m.id, record_bytes(m), m.sig)

    def verify_accusation(self, member_id: bytes, incarnation: int, by: bytes, sig: bytes) -> bool:
        """The accuser's signature over its accusation of `member_id` at `incarnation`."""
        if len(sig) != SIG_LEN:
            return False
        return self._check(by, accusation_bytes(member_id, incarnation, by), sig)

    def _check(self, signer: bytes, data: bytes, sig: bytes) -> bool:
        key = (data, sig)
        hit = self._cache.get(key)
        if hit is not None:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return hit
        self.verified += 1
        ok = self._verify(signer, data, sig)
        self._cache[key] = ok
        if len(self._cache) > self.cache_max:
            self._cache.popitem(last=False)
        return ok
