"""Rendezvous state, pure: who owns a client id, where it is homed, and what waits for it.

Rules
- Owner selection is highest-random-weight (HRW) hashing: each live member gets the score
  blake2b(person="homing-hrw", member_id + client_id) and the R highest scores own the id (ties, which need a
  64-bit collision, go to the smaller member id). Every node with the same member list computes the same owners;
  when a member joins or dies only the ids it owned (or now owns) move: about R/N of them.
- Every table is bounded (`leases_max`, `mailbox_per_id_max`, `mailbox_total_max`, `seen_max`) and every entry
  carries a deadline: nothing here lives forever. A full table refuses the new entry; it never evicts a
  live one silently.
- No clock: every call that depends on time takes `now` (monotonic seconds); `next_deadline()` says when
  `expire(now)` has work. Expiry uses node/protocol/deadlines.DeadlineHeap, so a tick costs O(expired · log n).

Theory of operation
- `LeaseTable` is held by an owner: (client id, home node) -> expiry and the client's home claim (which travels
  on with hand-offs). A home node renews its leases every lease_ttl/3; a lease of a node that died is dropped by
  the relay core on the membership change. The owner role itself (who may say what) is node/protocol/relay/owner.py.
- `Mailbox` is held by an owner: envelopes for an offline id, in arrival order per id, each with its TTL, bounded
  per recipient, per sender id, per origin node (count and bytes) and in total (count and bytes), and within one
  recipient's mailbox per sender id and per origin node (`mailbox_per_sender_per_id_max`,
  `mailbox_per_origin_per_id_max`), so one key or one node cannot take a callee's whole mailbox.
  An entry pushed to a home node is "in flight" until that node acknowledges it; only then is it removed.
  `cancel_call` implements cancel-by-hangup: it removes the still-queued (not in-flight) envelopes of one call
  from one sender, if a call_offer is among them.
- `SeenSet` is held by a home node: (origin, eid)s it has handed to clients recently, so that the R owner replicas
  pushing the same queued envelope produce one delivery.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence

import attrs

from node.protocol.deadlines import DeadlineHeap
from node.protocol.relay.claims import HomeClaim
from node.protocol.settings import RelaySection
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import PeerEnvelope

INF = float("inf")


def hrw_score(member: bytes, client: bytes) -> int:
    """The rendezvous weight of `member` for `client` (64 bits of blake2b)."""
    return int.from_bytes(hashlib.blake2b(member + client, digest_size=8, person=b"homing-hrw").digest(), "big")


def owners(client: bytes, members: Iterable[bytes], replicas: int) -> tuple[bytes, ...]:
    """The `replicas` members with the highest HRW score for `client`, best first."""
    ranked = sorted(set(members), key=lambda m: (-hrw_score(m, client), m))
    return tuple(ranked[:replicas])


class Ranking:
    """`owners(client, members, replicas)` for the current member set, remembered per client.

    A home asks for its clients' owners at every lease renewal, an owner at every lease it is given, an origin at
    every envelope it routes: N hashes and a sort each time (2.6 µs with one member, 27 µs with 30), while the answer
    changes only when the member set does. So answers are kept until `members` is set to a different set; the
    answers for the set before are kept until the next change, for the hand-over code that compares the two
    (`before`). At most `entries_max` answers are kept per set: when full, the memo starts again empty (an
    answer costs one `owners()` to get back), so ids from a flood cost time, never unbounded memory.
    """

    __slots__ = ("_before", "_before_members", "_max", "_members", "_memo", "member_set", "replicas")

    def __init__(self, members: tuple[bytes, ...], *, replicas: int, entries_max: int) -> None:
        self.replicas = replicas
        self._max = entries_max
        self._members = members
        self.member_set = frozenset(members)  # `members` as a set: a membership test per relay frame, O(1) at any N
        self._memo: dict[bytes, tuple[bytes, ...]] = {}
        self._before_members = members
        self._before: dict[bytes, tuple[bytes, ...]] = {}

    @property
    def members(self) -> tuple[bytes, ...]:
        return self._members

    @members.setter
    def members(self, members: tuple[bytes, ...]) -> None:
        if members == self._members:
            return
        self._before_members, self._before = self._members, self._memo
        self._members, self._memo = members, {}
        self.member_set = frozenset(members)

    def of(self, client: bytes) -> tuple[bytes, ...]:
        """The owners of `client` among the current members, best first."""
        got = self._memo.get(client)
        if got is None:
            got = owners(client, self._members, self.replicas)
            if len(self._memo) >= self._max:
                self._memo.clear()
            self._memo[client] = got
        return got

    def before(self, client: bytes) -> tuple[bytes, ...]:
        """The owners of `client` under the member set before the last change."""
        got = self._before.get(client)
        return owners(client, self._before_members, self.replicas) if got is None else got

    def under(self, client: bytes, members: Sequence[bytes]) -> tuple[bytes, ...]:
        """The owners of `client` among `members`: remembered when it is the current or the previous set."""
        if members is self._members or members == self._members:
            return self.of(client)
        if members is self._before_members or members == self._before_members:
            return self.before(client)
        return owners(client, members, self.replicas)


class LeaseTable:
    """(client id, home node) -> (expiry, claim), bounded by `leases_max` pairs and `per_home_max` pairs per home."""

    def __init__(self, *, leases_max: int, per_home_max: int | None = None) -> None:
        self._max = leases_max
        self._per_home_max = leases_max if per_home_max is None else per_home_max
        self._t: dict[bytes, dict[bytes, tuple[float, HomeClaim | None]]] = {}
        self._per_home: Counter[bytes] = Counter()
        self._count = 0
        self._heap: DeadlineHeap[tuple[bytes, bytes]] = DeadlineHeap()

    def __len__(self) -> int:
        return self._count

    def count_home(self, home: bytes) -> int:
        return self._per_home[home]

    def fits(self, client: bytes, home: bytes) -> bool:
        """Would `put(client, home, ...)` be taken (a renewal, or a new lease within the bounds)?"""
        homes = self._t.get(client)
        if homes is not None and home in homes:
            return True
        return self._count < self._max and self._per_home[home] < self._per_home_max

    def put(self, client: bytes, home: bytes, expires: float, claim: HomeClaim | None = None) -> bool:
        """Add or renew a lease. False when the table (or the home's share of it) is full: the lease is refused."""
        homes = self._t.get(client)
        if homes is None or home not in homes:
            if not self.fits(client, home):
                return False
            self._count += 1
            self._per_home[home] += 1
        self._t.setdefault(client, {})[home] = (expires, claim)
        self._heap.push((client, home), expires)
        return True

    def drop(self, client: bytes, home: bytes) -> None:
        homes = self._t.get(client)
        if homes is not None and homes.pop(home, None) is not None:
            self._count -= 1
            self._per_home[home] -= 1
            if not self._per_home[home]:
                del self._per_home[home]
            self._heap.discard((client, home))
            if not homes:
                del self._t[client]

    def drop_home(self, home: bytes) -> None:
        """Forget every lease of `home` (it died or left)."""
        for client in [c for c, homes in self._t.items() if home in homes]:
            self.drop(client, home)

    def homes(self, client: bytes, now: float) -> tuple[bytes, ...]:
        return tuple(sorted(h for h, (exp, _) in self._t.get(client, {}).items() if exp > now))

    def claim(self, client: bytes, home: bytes) -> HomeClaim | None:
        entry = self._t.get(client, {}).get(home)
        return None if entry is None else entry[1]

    def items(self) -> Iterator[tuple[bytes, bytes, float]]:
        """(client, home, expires) for every lease, in a stable order."""
        for client in sorted(self._t):
            for home, (exp, _) in sorted(self._t[client].items()):
                yield client, home, exp

    def expire(self, now: float) -> None:
        for client, home in self._heap.pop_due(now):
            homes = self._t.get(client)
            if homes is not None and home in homes:
                # the heap forgot the key; drop() must not count it twice
                self.drop(client, home)

    def next_deadline(self) -> float:
        return self._heap.next_deadline()


class PutResult(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    FULL = "full"


@attrs.define(kw_only=True, slots=True)
class MailEntry:
    env: PeerEnvelope
    deadline: float
    inflight_to: bytes | None = None  # home node it was pushed to, awaiting ENVELOPE_RESULT
    inflight_until: float = INF
    told_forwarded: bool = False  # the origin was told FORWARDED (not STORED), so it sent no `queued` yet


ENTRY_OVERHEAD_BYTES = 512  # what one mailbox entry costs besides its body (ids, claim, bookkeeping)


def entry_bytes(env: PeerEnvelope) -> int:
    """The bytes a mailbox entry is charged: its body plus a fixed overhead (an empty body is not free)."""
    return len(env.body) + ENTRY_OVERHEAD_BYTES


@attrs.frozen(kw_only=True, slots=True)
class MailLimits:
    per_id_max: int
    total_max: int
    bytes_max: int = 2**62
    per_origin_max: int = 2**62
    bytes_per_origin_max: int = 2**62
    per_sender_max: int = 2**62
    per_sender_per_id_max: int = 2**62
    per_origin_per_id_max: int = 2**62

    @classmethod
    def of(cls, c: RelaySection) -> MailLimits:
        return cls(
            per_id_max=c.mailbox_per_id_max,
            total_max=c.mailbox_total_max,
            bytes_max=c.mailbox_bytes_max,
            per_origin_max=c.mailbox_per_origin_max,
            bytes_per_origin_max=c.mailbox_bytes_per_origin_max,
            per_sender_max=c.mailbox_per_sender_max,
            # a share above the mailbox is the whole mailbox (settings.py)
            per_sender_per_id_max=min(c.mailbox_per_sender_per_id_max, c.mailbox_per_id_max),
            per_origin_per_id_max=min(c.mailbox_per_origin_per_id_max, c.mailbox_per_id_max),
        )


class Mailbox:
    """Envelopes waiting for offline client ids: per-id FIFO, TTL; bounded per recipient id, per sender id, per
    origin node (count and bytes) and in total (count and bytes); and within one recipient's mailbox, per sender id
    and per origin node (its shares: `put(..., shares=False)` skips only these two, for a hand-off of an entry
    another owner already stored, node/protocol/relay/owner.py)."""

    def __init__(self, *, per_id_max: int, total_max: int, limits: MailLimits | None = None) -> None:
        self._lim = limits if limits is not None else MailLimits(per_id_max=per_id_max, total_max=total_max)
        self._by_eid: dict[bytes, MailEntry] = {}
        self._by_id: dict[bytes, dict[bytes, MailEntry]] = {}  # insertion-ordered: arrival order
        self._heap: DeadlineHeap[bytes] = DeadlineHeap()
        self._per_origin: Counter[bytes] = Counter()
        self._bytes_per_origin: Counter[bytes] = Counter()
        self._per_sender: Counter[bytes] = Counter()
        # keyed by recipient + sender id, recipient + origin id (ids are fixed-length): one recipient's shares
        self._per_id_sender: Counter[bytes] = Counter()
        self._per_id_origin: Counter[bytes] = Counter()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._by_eid)

    def __contains__(self, eid: bytes) -> bool:
        return eid in self._by_eid

    def get(self, eid: bytes) -> MailEntry | None:
        return self._by_eid.get(eid)

    def from_sender(self, to: bytes, sender: bytes) -> int:
        """Entries waiting for `to` from sender id `sender`."""
        return self._per_id_sender[to + sender]

    def from_origin(self, to: bytes, origin: bytes) -> int:
        """Entries waiting for `to` from origin node `origin`."""
        return self._per_id_origin[to + origin]

    def _fits(self, env: PeerEnvelope, shares: bool) -> bool:
        lim, size = self._lim, entry_bytes(env)
        return (
            len(self._by_id.get(env.to, {})) < lim.per_id_max
            and len(self._by_eid) < lim.total_max
            and self.bytes + size <= lim.bytes_max
            and self._per_origin[env.origin] < lim.per_origin_max
            and self._bytes_per_origin[env.origin] + size <= lim.bytes_per_origin_max
            and self._per_sender[env.sender] < lim.per_sender_max
            and (not shares or self._within_shares(env))
        )

    def _within_shares(self, env: PeerEnvelope) -> bool:
        """Does `env` fit its sender's and its origin's share of its recipient's mailbox? A call_hangup fits one
        over them, so a caller whose call took its whole share can still end it (cancel by hangup)."""
        lim, room = self._lim, int(env.kind is Kind.CALL_HANGUP)
        return (
            self._per_id_sender[env.to + env.sender] < lim.per_sender_per_id_max + room
            and self._per_id_origin[env.to + env.origin] < lim.per_origin_per_id_max + room
        )

    def put(self, env: PeerEnvelope, deadline: float, *, shares: bool = True) -> PutResult:
        """Store `env` until `deadline`, within every bound; with `shares=False` a sender's and an origin's share of
        one recipient's mailbox do not refuse it (it still counts in them)."""
        if env.eid in self._by_eid:
            return PutResult.DUPLICATE
        if not self._fits(env, shares):
            return PutResult.FULL
        entry = MailEntry(env=env, deadline=deadline)
        self._by_eid[env.eid] = entry
        self._by_id.setdefault(env.to, {})[env.eid] = entry
        self._heap.push(env.eid, deadline)
        self._account(env, 1)
        return PutResult.STORED

    def _account(self, env: PeerEnvelope, sign: int) -> None:
        size = entry_bytes(env)
        self.bytes += sign * size
        for counter, key, n in (
            (self._per_origin, env.origin, 1),
            (self._bytes_per_origin, env.origin, size),
            (self._per_sender, env.sender, 1),
            (self._per_id_sender, env.to + env.sender, 1),
            (self._per_id_origin, env.to + env.origin, 1),
        ):
            counter[key] += sign * n
            if not counter[key]:
                del counter[key]

    def remove(self, eid: bytes) -> MailEntry | None:
        entry = self._by_eid.pop(eid, None)
        if entry is not None:
            queue = self._by_id[entry.env.to]
            del queue[eid]
            if not queue:
                del self._by_id[entry.env.to]
            self._heap.discard(eid)
            self._account(entry.env, -1)
        return entry

    def entries(self, client: bytes) -> list[MailEntry]:
        """The entries waiting for `client`, oldest first."""
        return list(self._by_id.get(client, {}).values())

    def all_entries(self) -> list[MailEntry]:
        return [e for q in self._by_id.values() for e in q.values()]

    def inflight_to(self, home: bytes) -> list[MailEntry]:
        return [e for e in self._by_eid.values() if e.inflight_to == home]

    def cancel_call(self, to: bytes, sender: bytes, call: bytes) -> list[MailEntry]:
        """Cancel-by-hangup: if a queued (not in-flight) call_offer of (sender, call) waits for `to`, remove it and
        every other queued envelope of that call from that sender, and return them; else remove nothing."""
        same = [
            e
            for e in self._by_id.get(to, {}).values()
            if e.env.sender == sender and e.env.call == call and e.inflight_to is None
        ]
        if not any(e.env.kind is Kind.CALL_OFFER for e in same):
            return []
        for e in same:
            self.remove(e.env.eid)
        return same

    def expire(self, now: float) -> list[MailEntry]:
        """Remove and return the entries whose TTL passed."""
        out: list[MailEntry] = []
        for eid in self._heap.pop_due(now):
            entry = self.remove(eid)
            if entry is not None:
                out.append(entry)
        return out

    def next_deadline(self) -> float:
        return self._heap.next_deadline()


class SeenSet(OrderedDict[bytes, float]):
    """Recently delivered eids with their expiry, bounded by `seen_max` (oldest forgotten first).

    Expired in batches: `next_deadline` is the oldest entry's expiry plus `EXPIRY_SLACK_S`, and `expire` then drops
    every entry due by then. A home delivering a thousand envelopes a second otherwise had its timer woken a
    thousand times a second, one entry each, from a minute after it started (an eid is remembered ~70 s); an entry
    now lives up to one second longer, which only makes duplicate suppression longer.

    An OrderedDict itself, not a wrapper of one: a home tests two of these for every envelope it is sent, and `in`
    is then the dict's own C lookup instead of a Python `__contains__` (0.15 µs each). Only `add` and `expire` change
    it (nothing else of ours assigns to it).
    """

    EXPIRY_SLACK_S = 1.0

    def __init__(self, *, seen_max: int) -> None:
        super().__init__()
        self._max = seen_max

    def add(self, eid: bytes, until: float) -> None:
        """Remember `eid` until `until`; callers use one fixed lifetime, so entries stay in expiry order."""
        self[eid] = until
        self.move_to_end(eid)
        while len(self) > self._max:
            self.popitem(last=False)

    def expire(self, now: float) -> None:
        # callers add with a fixed lifetime, so the oldest entry expires first
        while self:
            eid, until = next(iter(self.items()))
            if until > now:
                break
            del self[eid]

    def next_deadline(self) -> float:
        return next(iter(self.values()), INF) + self.EXPIRY_SLACK_S
