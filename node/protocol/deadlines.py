"""The one deadline heap: "call me back for key K at time T", with lazy deletion and lazy extension.

Theory: `_current[key]` is the key's deadline; the heap holds (t, seq, key) entries. Invariant: every live key has
at least one entry with t <= its deadline. `push(key, t)` sets the deadline; it adds an entry only when t is
earlier than the key's deadline was (or the key was not live): a later t leaves the key's entries where they are
(an extension). `discard(key)` forgets the key. When an entry (t, key) surfaces (in `pop_due` and
`next_deadline`):
- the key is not live, or its deadline is earlier than t: the entry is stale, it is dropped;
- its deadline is t: it is due at t (and `pop_due` forgets the key);
- its deadline is later than t: it was extended, and the entry is put back at the deadline.
A lease renewed every 10 s with a 30 s lifetime, or a client's keepalive moved by every pong, therefore costs a
heap operation when its entry surfaces, not one per renewal and another for the stale entry it leaves: in a node
holding 19,000 idle phones those stale entries were a fifth of its idle CPU (docs/performance.md, "Ninth pass").
Memory stays bounded by the live keys plus the entries not yet surfaced; `compact()` rebuilds the heap when the
entries outnumber twice the live keys (called by `push`). Pure: times are passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
INF = float("inf")


class DeadlineHeap(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._current: dict[K, float] = {}
        self._seq = itertools.count()

    def push(self, key: K, deadline: float) -> None:
        old = self._current.get(key)
        self._current[key] = deadline
        if old is not None and old <= deadline:
            return  # an extension: the key's entry at or before `old` is put back when it surfaces
        heapq.heappush(self._heap, (deadline, next(self._seq), key))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._current):
            self.compact()

    def discard(self, key: K) -> None:
        self._current.pop(key, None)

    def deadline_of(self, key: K) -> float | None:
        return self._current.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def __len__(self) -> int:
        return len(self._current)

    def _surface(self) -> float:
        """Settle the top of the heap (drop stale entries, put extended ones back); the due time of the top entry,
        which is then its key's deadline, or INF when the heap is empty."""
        heap, current = self._heap, self._current
        while heap:
            t, _, key = heap[0]
            deadline = current.get(key)
            if deadline == t:
                return t
            if deadline is not None and deadline > t:  # extended: back in at its deadline
                heapq.heapreplace(heap, (deadline, next(self._seq), key))
            else:  # discarded, or made earlier by a push that added its own entry
                heapq.heappop(heap)
        return INF

    def pop_due(self, now: float) -> list[K]:
        due: list[K] = []
        while self._surface() <= now:
            _, _, key = heapq.heappop(self._heap)
            del self._current[key]
            due.append(key)
        return due

    def next_deadline(self) -> float:
        return self._surface()  # this runs after every relay input

    def compact(self) -> None:
        self._heap = [(t, next(self._seq), k) for k, t in self._current.items()]
        heapq.heapify(self._heap)
