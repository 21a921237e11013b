"""The member table, its merge rule, and the shuffled round-robin probe order.

Merge rule (the whole of it; `supersedes` is the only place it is written):

| local \\ update at incarnation i'   | i' < i | i' == i                                   | i' > i |
|-----------------------------------|--------|-------------------------------------------|--------|
| any state at incarnation i        | keep   | higher state rank wins, ties by addr/meta | take   |

State rank: ALIVE 0 < SUSPECT 1 < DEAD 2 < LEFT 3. So at equal incarnation suspect beats alive and dead/left beat
both; a higher incarnation beats everything (that is how a member refutes, and how a left member rejoins).
Only the member itself bumps its incarnation, so incarnations never go back. The order is total
(incarnation, rank, addr, meta), hence merge = max: commutative, associative and idempotent.
Updates about ourselves never go through this rule: protocol.py refutes them instead.
Only records the member signed go through it; a SUSPECT/DEAD claim by someone else is checked first
(merging.py `_apply_claim`: only at the incarnation we hold, and only to start a suspicion).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping

from node.protocol.swim.messages import STATE_RANK, MemberInfo, MemberState


def precedence(m: MemberInfo) -> tuple[int, int, str, int, bytes]:
    return (m.incarnation, STATE_RANK[m.state], m.addr[0], m.addr[1], m.meta)


def supersedes(new: MemberInfo, old: MemberInfo | None) -> bool:
    """True when `new` should replace `old` in the table (`precedence(new) > precedence(old)`, unrolled)."""
    if old is None:
        return True
    if new.incarnation != old.incarnation:
        return new.incarnation > old.incarnation
    if new.state is not old.state:
        return STATE_RANK[new.state] > STATE_RANK[old.state]
    return (new.addr, new.meta) > (old.addr, old.meta)


def merge(old: MemberInfo | None, new: MemberInfo) -> MemberInfo:
    """The record the table holds after learning `new` (pure; see the table above)."""
    if old is None or supersedes(new, old):
        return new
    return old


LIVE = (MemberState.ALIVE, MemberState.SUSPECT)
GONE = (MemberState.DEAD, MemberState.LEFT)


class MemberTable:
    """Members by id, in insertion order (deterministic iteration), with the time of each one's last change."""

    __slots__ = ("_changed_at", "_live", "_members", "_preloaded_at", "get")

    def __init__(self) -> None:
        self._members: dict[bytes, MemberInfo] = {}
        # When each member last changed state; members not in it have not changed since `preload` (memory: one
        # float per member per table is 3 GB across a 10,000-node simulation).
        self._changed_at: dict[bytes, float] = {}
        self._preloaded_at = 0.0
        self._live = 0
        # The member record by id, or None: the dict's own bound `get` (the hottest call of a large simulation).
        self.get: Callable[[bytes], MemberInfo | None] = self._members.get

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member_id: bytes) -> bool:
        return member_id in self._members

    def __iter__(self) -> Iterator[MemberInfo]:
        return iter(list(self._members.values()))

    def changed_at(self, member_id: bytes) -> float:
        """When the member last changed state (or joined the table). KeyError for an unknown member."""
        if member_id not in self._members:
            raise KeyError(member_id)
        return self._changed_at.get(member_id, self._preloaded_at)

    @property
    def live_count(self) -> int:
        """Members ALIVE or SUSPECT (self included when present)."""
        return self._live

    def put(self, info: MemberInfo, now: float) -> MemberState | None:
        """Store `info` unconditionally; return the previous state (None when new)."""
        old = self._members.get(info.id)
        self._members[info.id] = info
        if old is None or old.state != info.state:
            self._changed_at[info.id] = now
        self._live += (info.state in LIVE) - (old is not None and old.state in LIVE)
        return None if old is None else old.state

    def preload(self, members: Mapping[bytes, MemberInfo], now: float) -> None:
        """Add many members at once to a table holding at most this node: ids not in it, every one LIVE."""
        if len(self._members) > 1:
            raise ValueError("preload needs a fresh table")
        self._members.update(members)
        self._preloaded_at = now
        self._live += len(members)

    def remove(self, member_id: bytes) -> MemberInfo | None:
        old = self._members.pop(member_id, None)
        if old is not None:
            self._changed_at.pop(member_id, None)
            self._live -= old.state in LIVE
        return old


class ProbeRing:
    """Shuffled round-robin probe order: every member is probed once per round, the order re-shuffled each round.

    New members are inserted at a random position, so a join does not delay anyone by more than one round.
    The caller knows what is in the ring (protocol.py keeps it equal to the other LIVE members of its table), so
    the ring keeps no set of its own: `add` takes ids not in the ring, `discard` of an absent id is a no-op
    (a scan). That saves a set per node: 5 GB across a 10,000-node simulation.
    """

    __slots__ = ("_ids", "_index")

    def __init__(self) -> None:
        self._ids: list[bytes] = []
        self._index = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, member_id: bytes, rng: random.Random) -> None:
        """Insert a member that is not in the ring, at a random position not yet visited this round."""
        pos = rng.randint(self._index, len(self._ids))
        self._ids.insert(pos, member_id)

    def preload(self, member_ids: list[bytes], rng: random.Random) -> None:
        """Fill an empty ring at once, in a random order (O(N), where N `add`s would move O(N^2) ids)."""
        if self._ids:
            raise ValueError("preload needs an empty ring")
        self._ids = list(member_ids)
        rng.shuffle(self._ids)
        self._index = 0

    def discard(self, member_id: bytes) -> None:
        try:
            pos = self._ids.index(member_id)
        except ValueError:
            return
        del self._ids[pos]
        if pos < self._index:
            self._index -= 1

    def next(self, rng: random.Random) -> bytes | None:
        """The next member to probe, or None when the ring is empty."""
        if not self._ids:
            return None
        if self._index >= len(self._ids):
            rng.shuffle(self._ids)
            self._index = 0
        member_id = self._ids[self._index]
        self._index += 1
        return member_id

    def sample(self, rng: random.Random, k: int, accept: Callable[[bytes], bool]) -> list[bytes]:
        """Up to k distinct random members for which `accept` holds (bounded tries, no full scan)."""
        out: list[bytes] = []
        n = len(self._ids)
        if k <= 0 or n == 0:
            return out
        if n <= 4 * k:  # small ring: shuffle a copy, exact answer
            pool = list(self._ids)
            rng.shuffle(pool)
            return [m for m in pool if accept(m)][:k]
        for _ in range(6 * k):
            member_id = self._ids[rng.randrange(n)]
            if member_id not in out and accept(member_id):
                out.append(member_id)
                if len(out) == k:
                    break
        return out
