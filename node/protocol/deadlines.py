"""The one deadline heap: "call me back for key K at time T", with lazy deletion.

Theory: `push(key, t)` sets key's deadline to t (replacing any earlier one); `discard(key)` forgets it. The heap
keeps every (t, key) ever pushed, and an entry that no longer matches the key's current deadline is stale: it is
skipped when it surfaces (in `pop_due` and `next_deadline`), so neither replacing nor discarding costs a heap
operation. `pop_due(now)` returns the keys whose current deadline is <= now, earliest first, and forgets them.
Memory stays bounded by the live keys plus the stale entries not yet surfaced; `compact()` rebuilds the heap
when stale entries outnumber live ones (called by `push`). Pure: times are passed in.
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
        self._current[key] = deadline
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

    def _stale(self, entry: tuple[float, int, K]) -> bool:
        return self._current.get(entry[2]) != entry[0]

    def pop_due(self, now: float) -> list[K]:
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._stale(entry):
                del self._current[entry[2]]
                due.append(entry[2])
        return due

    def next_deadline(self) -> float:
        heap, current = self._heap, self._current
        while heap:
            deadline, _, key = heap[0]
            if current.get(key) == deadline:  # `_stale`, inlined: this runs after every relay input
                return deadline
            heapq.heappop(heap)
        return INF

    def compact(self) -> None:
        self._heap = [(t, next(self._seq), k) for k, t in self._current.items()]
        heapq.heapify(self._heap)
