"""Home claims, pure: a client's own signature saying "client X was at node H at time t" (docs/protocol.md).

The client handshake (docs/client-protocol.md) already has the client sign b"homing/v1/client-auth" + node id +
node nonce. The node builds its challenge nonce as 8 bytes of big-endian unix milliseconds followed by 24 random
bytes, so that signature is a claim any node can check: the signer is X, the node id is H, the time is in the
nonce. Owners keep a lease only with such a claim naming the lease's home; a home node delivers an envelope
"from X" only with a claim of X naming the envelope's origin node.

Rules
- A claim is valid at wall time `w` when its signature verifies, its time is at most `skew_s` in the future and
  at most `age_max_s` in the past. A claim does not expire with its connection (a node cannot prove a close), so
  the age bound is what limits how long a node a client has left can still claim it; the home node closes a
  connection before its claim ages out and the client reconnects with a fresh one (docs/protocol.md).
- Signature checks are cached (`ClaimVerifier`, bounded LRU keyed by the whole claim), so renewals and every
  envelope of one connection cost one Ed25519 verification in total.
- Checks are budgeted per peer (`PeerChecks`): an Ed25519 check costs 60-160 µs, and a member chooses what it
  sends. Each check a peer's frame causes (one the cache cannot answer) takes a token from that peer's bucket
  (`claim_checks_per_peer_per_s`, `claim_checks_per_peer_burst`); each one that fails also takes one from its
  forgery budget (node/protocol/ratelimit.py `ForgeryBudget`: an honest member never sends a bad signature). With
  either empty, the peer's claims and origin signatures are refused unchecked (`rate_limited`) until they refill,
  so one member can make this node spend at most that share of its CPU on signatures. Claims and origin
  signatures from this node itself are never budgeted.
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from node.protocol.identity import client_auth_message, verify_signature
from node.protocol.ratelimit import ForgeryBudget, KeyedBuckets
from node.protocol.records import record
from node.protocol.refusals import Refusal

NONCE_BYTES: Final = 32
NONCE_TIME_BYTES: Final = 8
SIG_BYTES: Final = 64
ID_BYTES: Final = 32


def challenge_nonce(unix_s: float, random_bytes: bytes) -> bytes:
    """The node's challenge nonce: big-endian unix milliseconds (8 bytes) + 24 random bytes."""
    if len(random_bytes) != NONCE_BYTES - NONCE_TIME_BYTES:
        raise ValueError("a challenge nonce needs 24 random bytes")
    return struct.pack(">Q", max(0, int(unix_s * 1000))) + random_bytes


_NONCE_TIME: Final = struct.Struct(">Q")  # NONCE_TIME_BYTES

# A client signs a challenge only when its date is at most this far ahead of the client's own clock: the node
# writes the date, and a claim is good from then until `claim_age_max_s` later, so a node could otherwise collect
# claims dated days ahead and use each when its date came, long after the client had left. 10 minutes, twice the
# default `claim_skew_s`: a client whose clock is further behind is already outside the 300 s offer window of
# clients with a right clock (docs/e2ee.md).
CHALLENGE_AHEAD_MAX_S: Final = 600.0
# ... up to this far ahead: the client protocol lets a node draw its whole nonce at random (docs/client-protocol.md),
# and 8 random bytes read as unix ms are a date past this horizon but for about 2 in 10 million. A claim dated
# beyond it never becomes good anywhere, so signing it gives a node nothing, and such nodes stay reachable.
CHALLENGE_DATE_HORIZON_S: Final = 100 * 365.25 * 86400.0


def challenge_too_far_ahead(nonce: bytes, unix_s: float) -> bool:
    """Is this challenge nonce dated more than CHALLENGE_AHEAD_MAX_S after `unix_s` (the client's clock), yet within
    CHALLENGE_DATE_HORIZON_S of it (a date a claim could one day be used at)?"""
    if len(nonce) != NONCE_BYTES:
        return True
    ahead = nonce_time_s(nonce) - unix_s
    return CHALLENGE_AHEAD_MAX_S < ahead <= CHALLENGE_DATE_HORIZON_S


def nonce_time_s(nonce: bytes) -> float:
    """The unix time a challenge nonce was made (seconds). Runs for every envelope a home checks."""
    ms: int = _NONCE_TIME.unpack_from(nonce)[0]
    return ms / 1000.0


@record(kw_only=True, slots=True)
class HomeClaim:
    """`client` signed (`sig`) that it authenticated to `home` with the challenge `nonce`."""

    client: bytes
    home: bytes
    nonce: bytes
    sig: bytes

    def __attrs_post_init__(self) -> None:
        # one check instead of twelve attrs validators: an owner builds one claim per client per lease renewal
        # (4 % of a survivor's CPU in bench/scale's goaway storm)
        sizes = ((self.client, ID_BYTES), (self.home, ID_BYTES), (self.nonce, NONCE_BYTES), (self.sig, SIG_BYTES))
        for value, size in sizes:
            if type(value) is not bytes or len(value) != size:
                raise ValueError(f"a home claim field must be {size} bytes, not {value!r:.40}")

    @property
    def issued_s(self) -> float:
        return nonce_time_s(self.nonce)


class Verdict(enum.Enum):
    """What a check of a claim or an origin signature found."""

    VALID = "valid"
    STALE = "stale"  # outside its time window (no signature check run)
    FORGED = "forged"  # the signature does not verify (or has the wrong size)
    UNCHECKED = "unchecked"  # its peer is over its check budget: refused without a check

    @property
    def refusal(self) -> Refusal:
        """The metric reason a refusal for this verdict counts under (not for VALID)."""
        return _REFUSALS[self]


_REFUSALS: Final = {
    Verdict.VALID: Refusal.MALFORMED,  # never counted: only refusals are
    Verdict.STALE: Refusal.REPLAYED,
    Verdict.FORGED: Refusal.FORGED,
    Verdict.UNCHECKED: Refusal.RATE_LIMITED,
}


class PeerChecks:
    """The signature checks each peer may make this node run (the module docstring's last rule)."""

    def __init__(self, *, per_s: float, burst: float, keys_max: int, exempt: bytes = b"") -> None:
        self._checks: KeyedBuckets[bytes] = KeyedBuckets(per_s, burst, keys_max)
        self._forged: ForgeryBudget[bytes] = ForgeryBudget(keys_max)
        self._exempt = exempt  # this node's own id: what it loops back to itself is not budgeted

    def exhausted(self, peer: bytes, now: float) -> bool:
        """Would a check for `peer` be refused now? (A frame from it can then skip the work before its checks.)"""
        if peer == self._exempt:
            return False
        return not (self._forged.allows(peer, now) and self._checks.wait_s(peer, now) == 0)

    def check(self, peer: bytes, now: float, verify: Callable[[], bool]) -> Verdict:
        """Run `verify` for `peer` if its budgets allow, and charge them."""
        if peer == self._exempt:
            return Verdict.VALID if verify() else Verdict.FORGED
        if self.exhausted(peer, now):
            return Verdict.UNCHECKED
        self._checks.take(peer, now)  # holds a token: `exhausted` just said so
        if verify():
            return Verdict.VALID
        self._forged.failed(peer, now)
        return Verdict.FORGED


class ClaimVerifier:
    """Checks claims against a time window; remembers up to `cache_max` signature results (LRU). With `checks`,
    what a peer sends is checked within that peer's budget (`check`, `check_parts`, `check_signed`)."""

    def __init__(self, *, age_max_s: float, skew_s: float, cache_max: int, checks: PeerChecks | None = None) -> None:
        self.age_max_s = age_max_s
        self.skew_s = skew_s
        self._max = cache_max
        self._cache: OrderedDict[tuple[bytes, bytes, bytes, bytes], bool] = OrderedDict()
        self._checks = checks
        self.verifications = 0  # Ed25519 verifications done (for tests and metrics)

    def fresh(self, claim: HomeClaim, wall_s: float, *, extra_age_s: float = 0.0) -> bool:
        """Is the claim's time inside [wall - age_max - extra, wall + skew]?"""
        return self._fresh(claim.nonce, wall_s, extra_age_s)

    def _fresh(self, nonce: bytes, wall_s: float, extra_age_s: float) -> bool:
        return wall_s - self.age_max_s - extra_age_s <= nonce_time_s(nonce) <= wall_s + self.skew_s

    def vouch(self, claim: HomeClaim) -> None:
        """`claim` is a hello this node's session core has just verified: remember its signature as good, so the
        owner role (this node among the client's owners) does not verify the same signature again."""
        self._remember((claim.client, claim.home, claim.nonce, claim.sig), True)

    def _remember(self, key: tuple[bytes, bytes, bytes, bytes], ok: bool) -> None:
        self._cache[key] = ok
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def exhausted(self, peer: bytes, now: float) -> bool:
        """Is `peer` over its check budget (`PeerChecks.exhausted`)?"""
        return self._checks is not None and self._checks.exhausted(peer, now)

    def valid(self, claim: HomeClaim, wall_s: float, *, extra_age_s: float = 0.0) -> bool:
        """Is `claim` valid at `wall_s`? (Unbudgeted: for claims this node holds, not for a peer's.)"""
        verdict = self.check_parts(claim.client, claim.home, claim.nonce, claim.sig, wall_s, extra_age_s=extra_age_s)
        return verdict is Verdict.VALID

    def check(
        self, claim: HomeClaim, wall_s: float, *, extra_age_s: float = 0.0, peer: bytes = b"", now: float = 0.0
    ) -> Verdict:
        """Check `claim` sent by `peer` (at monotonic `now`, for its budget)."""
        return self.check_parts(
            claim.client, claim.home, claim.nonce, claim.sig, wall_s, extra_age_s=extra_age_s, peer=peer, now=now
        )

    def check_parts(
        self,
        client: bytes,
        home: bytes,
        nonce: bytes,
        sig: bytes,
        wall_s: float,
        *,
        extra_age_s: float = 0.0,
        peer: bytes = b"",
        now: float = 0.0,
    ) -> Verdict:
        """`check` for a claim given by its fields: the per-envelope path (no object built)."""
        if len(nonce) != NONCE_BYTES or len(sig) != SIG_BYTES:
            return Verdict.FORGED
        if not self._fresh(nonce, wall_s, extra_age_s):
            return Verdict.STALE
        key = (client, home, nonce, sig)
        ok = self._cache.get(key)
        if ok is not None:
            self._cache.move_to_end(key)
            return Verdict.VALID if ok else Verdict.FORGED
        verdict = self._run(peer, now, lambda: verify_signature(client, client_auth_message(home, nonce), sig))
        if verdict is not Verdict.UNCHECKED:
            self._remember(key, verdict is Verdict.VALID)
        return verdict

    def check_signed(
        self, signer: bytes, message: Callable[[], bytes], sig: bytes, *, peer: bytes, now: float
    ) -> Verdict:
        """Did `signer` sign `message()` (built only if it is checked)? Within `peer`'s budget, not cached: for
        signatures checked once per hop (a mailbox envelope's origin signature)."""
        if len(sig) != SIG_BYTES:
            return Verdict.FORGED
        return self._run(peer, now, lambda: verify_signature(signer, message(), sig))

    def _run(self, peer: bytes, now: float, verify: Callable[[], bool]) -> Verdict:
        def counted() -> bool:
            self.verifications += 1
            return verify()

        if self._checks is None or not peer:
            return Verdict.VALID if counted() else Verdict.FORGED
        return self._checks.check(peer, now, counted)


class LinkClaims:
    """Which sender claims each peer link already carried, both ways, so a claim crosses a link once.

    Sending side: `(peer, sender, nonce)` triples this node sent in full; the next envelope of that sender to that
    peer goes without its claim. Receiving side: `(peer, sender) -> (nonce, sig)` learned from envelopes that peer
    originated and that verified. Both are LRU-bounded by `entries_max`; a receiver that forgot a claim answers
    `need_claim` and the sender sends it again, so eviction costs a round trip, never a delivery. A link that
    drops forgets its sending side (the peer may have restarted): in O(1), by starting a new epoch for that peer
    (the old epoch's entries are never matched again and age out of the LRU).
    """

    def __init__(self, *, entries_max: int) -> None:
        self._max = entries_max
        self._epoch: dict[bytes, int] = {}
        self._sent: OrderedDict[tuple[bytes, int, bytes, bytes], None] = OrderedDict()
        self._known: OrderedDict[tuple[bytes, bytes], tuple[bytes, bytes]] = OrderedDict()

    @staticmethod
    def _bounded(d: OrderedDict[Any, Any], max_: int) -> None:
        while len(d) > max_:
            d.popitem(last=False)

    def peer_has(self, peer: bytes, sender: bytes, nonce: bytes) -> bool:
        """Has this node sent `sender`'s claim `nonce` to `peer`? If not, it is recorded as sent now."""
        key = (peer, self._epoch.get(peer, 0), sender, nonce)
        if key in self._sent:
            self._sent.move_to_end(key)
            return True
        self._sent[key] = None
        self._bounded(self._sent, self._max)
        return False

    def resend(self, peer: bytes, sender: bytes, nonce: bytes) -> None:
        self._sent.pop((peer, self._epoch.get(peer, 0), sender, nonce), None)

    def forget_peer(self, peer: bytes) -> None:
        self._epoch[peer] = self._epoch.get(peer, 0) + 1  # bounded by the members ever seen

    def learn(self, peer: bytes, sender: bytes, nonce: bytes, sig: bytes) -> None:
        self._known[(peer, sender)] = (nonce, sig)
        self._known.move_to_end((peer, sender))
        self._bounded(self._known, self._max)

    def known(self, peer: bytes, sender: bytes) -> tuple[bytes, bytes] | None:
        return self._known.get((peer, sender))
