"""Transmit-limited broadcast queue for piggybacked member updates.

Rules (after memberlist's TransmitLimitedQueue):
- At most one queued update per member: a newer update about a member replaces (invalidates) the queued one.
- Each update is sent at most `limit` times (limit = retransmit_mult * ceil(log10(N + 1)), given by the caller
  at selection time, so it follows N), then dropped.
- Selection fills a byte budget with the fewest-transmitted updates first, newest first among equals.
- The queue holds at most `max_items`; when full, the most-transmitted (then oldest) update is dropped.
Iteration order is insertion order everywhere, so selection is deterministic.
"""

from __future__ import annotations

from node.protocol.swim.messages import Update


class BroadcastQueue:
    __slots__ = ("_buckets", "_min_size", "_where", "max_items")

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        # transmits -> {member id: (update, encoded size)}, each bucket in insertion order (oldest first)
        self._buckets: dict[int, dict[bytes, tuple[Update, int]]] = {}
        self._where: dict[bytes, int] = {}
        # transmits -> a lower bound of the encoded sizes in that bucket (the smallest ever put there), so
        # `select` skips a bucket in which nothing can fit without scanning it. Never raised on removal: still a
        # lower bound, which is all the skip needs (the selection is exactly the one of a full scan).
        self._min_size: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, member_id: bytes) -> bool:
        return member_id in self._where

    def transmits(self, member_id: bytes) -> int | None:
        return self._where.get(member_id)

    def queued(self, member_id: bytes) -> Update | None:
        t = self._where.get(member_id)
        return None if t is None else self._buckets[t][member_id][0]

    def enqueue(self, update: Update, size: int) -> None:
        """Queue `update` (replacing any queued update about the same member) with zero transmits."""
        member_id = update.member.id
        self.invalidate(member_id)
        if len(self._where) >= self.max_items:
            self._drop_one()
        self._put(0, member_id, update, size)

    def _put(self, t: int, member_id: bytes, update: Update, size: int) -> None:
        self._buckets.setdefault(t, {})[member_id] = (update, size)
        self._where[member_id] = t
        low = self._min_size.get(t)
        if low is None or size < low:
            self._min_size[t] = size

    def invalidate(self, member_id: bytes) -> None:
        t = self._where.pop(member_id, None)
        if t is not None:
            bucket = self._buckets[t]
            del bucket[member_id]
            if not bucket:
                del self._buckets[t]
                del self._min_size[t]

    def _drop_one(self) -> None:
        t = max(self._buckets)
        self.invalidate(next(iter(self._buckets[t])))

    def select(self, budget: int, limit: int, max_items: int, *, min_size: int = 1) -> list[Update]:
        """Updates that fit in `budget` bytes (at most `max_items`), counting one transmit for each."""
        buckets, lows = self._buckets, self._min_size
        chosen: list[tuple[bytes, int, tuple[Update, int]]] = []
        room = max_items
        for t in sorted(buckets):
            if room <= 0 or budget < min_size:
                break
            low = lows[t]
            if budget < low:
                continue  # nothing in this bucket fits
            for member_id, entry in reversed(buckets[t].items()):
                size = entry[1]
                if size <= budget:  # (budget and room change only here, so they are checked only here)
                    chosen.append((member_id, t, entry))
                    budget -= size
                    room -= 1
                    if budget < low or budget < min_size or room <= 0:
                        break  # full, or nothing else in this bucket fits
        # Move each chosen update one bucket up (or out at the limit): invalidate + _put, inlined (hot path).
        where = self._where
        for member_id, t, entry in chosen:
            bucket = buckets[t]
            del bucket[member_id]
            if not bucket:
                del buckets[t]
                del lows[t]
            if t + 1 < limit:
                up = buckets.get(t + 1)
                if up is None:
                    buckets[t + 1] = {member_id: entry}
                    lows[t + 1] = entry[1]
                else:
                    up[member_id] = entry
                    if entry[1] < lows[t + 1]:
                        lows[t + 1] = entry[1]
                where[member_id] = t + 1
            else:
                del where[member_id]
        return [c[2][0] for c in chosen]

    def clear(self) -> None:
        self._buckets.clear()
        self._where.clear()
        self._min_size.clear()
