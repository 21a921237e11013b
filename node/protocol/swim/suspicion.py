"""Lifeguard's dynamic suspicion timeout.

Theory: a member suspected by one node is probably fine if that node is the unhealthy one. So a suspicion starts
with a long timeout (`max_s`) and shrinks towards `min_s` as other members independently suspect the same member
(confirmations). With k expected confirmations and c received (memberlist's formula, Lifeguard §IV-B):

    timeout(c) = max(min_s, max_s - (max_s - min_s) * log(c + 1) / log(k + 1))

rounded down to the millisecond. With k < 1 the timeout is min_s from the start. Only distinct accusers other than
the first count, and at most k of them. The timer is measured from the start of the suspicion, so a confirmation
may make it fire at once.
"""

from __future__ import annotations

import math

from node.protocol.deadlines import INF, DeadlineHeap


def suspicion_timeout(confirmations: int, k: int, min_s: float, max_s: float) -> float:
    """Total suspicion timeout (from its start) after `confirmations` independent confirmations."""
    if k < 1 or max_s <= min_s:
        return min_s
    c = max(0, min(confirmations, k))
    frac = math.log(c + 1.0) / math.log(k + 1.0)
    raw = max_s - frac * (max_s - min_s)
    return max(min_s, math.floor(raw * 1000.0) / 1000.0)


class Suspicion:
    """One running suspicion of one member, at one incarnation."""

    __slots__ = ("_accusers", "_deadline", "incarnation", "k", "max_s", "min_s", "started")

    def __init__(self, *, by: bytes, incarnation: int, k: int, min_s: float, max_s: float, started: float) -> None:
        self._accusers: list[bytes] = [by]  # the first accuser, then confirmers (bounded by k + 1)
        self.incarnation = incarnation
        self.k = k
        self.min_s = min_s
        self.max_s = max_s
        self.started = started
        self._deadline = started + suspicion_timeout(0, k, min_s, max_s)  # changes only with a confirmation

    @property
    def confirmations(self) -> int:
        return len(self._accusers) - 1

    def counts(self, by: bytes) -> bool:
        """Whether `by` would count as a confirmation: a new accuser while fewer than k are in."""
        return self.confirmations < self.k and by not in self._accusers

    def confirm(self, by: bytes) -> bool:
        """Count an independent accuser. False when it is not new or k confirmations are already in."""
        if not self.counts(by):
            return False
        self._accusers.append(by)
        self._deadline = self.started + suspicion_timeout(self.confirmations, self.k, self.min_s, self.max_s)
        return True

    def deadline(self) -> float:
        """When the suspicion fires (cached: next_deadline asks for every running suspicion on every event)."""
        return self._deadline


class Suspicions:
    """The running suspicions by member id, with the earliest deadline at hand (node/protocol/deadlines.py).

    `next_deadline` needs the earliest deadline on every event; with hundreds of suspicions running (10 % loss
    in a 10,000-node federation) a scan per event dominated, hence the one deadline heap with lazy deletion.
    """

    __slots__ = ("_by_id", "_heap")

    def __init__(self) -> None:
        self._by_id: dict[bytes, Suspicion] = {}
        self._heap: DeadlineHeap[bytes] = DeadlineHeap()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, member_id: bytes) -> Suspicion | None:
        return self._by_id.get(member_id)

    def start(self, member_id: bytes, suspicion: Suspicion) -> None:
        """Start (or replace) the suspicion of a member."""
        self._by_id[member_id] = suspicion
        self._heap.push(member_id, suspicion.deadline())

    def counts(self, member_id: bytes, by: bytes) -> bool:
        """Whether `by` would count as a new accuser of a running suspicion (see Suspicion.counts)."""
        s = self._by_id.get(member_id)
        return s is not None and s.counts(by)

    def confirm(self, member_id: bytes, by: bytes) -> bool:
        """Count `by` as an independent accuser of a running suspicion (see Suspicion.confirm)."""
        s = self._by_id.get(member_id)
        if s is None or not s.confirm(by):
            return False
        self._heap.push(member_id, s.deadline())
        return True

    def pop(self, member_id: bytes) -> Suspicion | None:
        self._heap.discard(member_id)
        return self._by_id.pop(member_id, None)

    def earliest(self) -> float | None:
        """The earliest deadline of a running suspicion, or None."""
        t = self._heap.next_deadline()
        return None if t == INF else t

    def due(self, now: float) -> list[bytes]:
        """Members whose suspicion is due at `now`, earliest first (the caller pops each)."""
        return self._heap.pop_due(now)
