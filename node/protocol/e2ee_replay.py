"""Replay protection for call offers (docs/e2ee.md, "Replays").

A Noise KK first message cannot prove it is fresh, so a callee device refuses an offer unless
(1) its authenticated `ts` (the caller's wall clock, unix seconds) is within [now - max_age_s, now + max_future_s], and
(2) its (caller id, call id) was not admitted before. Entries are kept while their `ts` is inside the window, so
memory is bounded by the rate of genuine offers; when `entries_max` is reached the oldest entry is dropped and the
*watermark* rises to its `ts`: from then on an offer with `ts` at or below the watermark is refused, so dropping an
entry never re-opens the door to its replay (it costs, under a flood, refusing offers delayed past the watermark).

Pure: `now_s` is given; nothing here reads a clock.
"""

from __future__ import annotations

import heapq

from node.errors import Expired, LocalProtocolError, Replayed

OFFER_MAX_AGE_S = 300
OFFER_MAX_FUTURE_S = 120
OFFER_CACHE_ENTRIES_MAX = 4096


class OfferReplayCache:
    """Per device (or per identity on one device): the offers admitted recently."""

    __slots__ = ("_heap", "_seen", "entries_max", "max_age_s", "max_future_s", "watermark")

    def __init__(
        self,
        *,
        entries_max: int = OFFER_CACHE_ENTRIES_MAX,
        max_age_s: int = OFFER_MAX_AGE_S,
        max_future_s: int = OFFER_MAX_FUTURE_S,
    ) -> None:
        if entries_max < 1 or max_age_s < 0 or max_future_s < 0:
            raise LocalProtocolError("OfferReplayCache limits must be positive")
        self.entries_max, self.max_age_s, self.max_future_s = entries_max, max_age_s, max_future_s
        self.watermark = -1
        self._seen: dict[tuple[bytes, bytes], int] = {}
        self._heap: list[tuple[int, bytes, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, *, caller: bytes, call: bytes, ts: int, now_s: int) -> None:
        """Raise Expired or Replayed if the offer must be refused; change nothing."""
        if ts < now_s - self.max_age_s or ts > now_s + self.max_future_s:
            raise Expired(f"offer ts {ts} outside [{now_s - self.max_age_s}, {now_s + self.max_future_s}]")
        if ts <= self.watermark:
            raise Replayed("offer older than the replay cache remembers")
        if (caller, call) in self._seen:
            raise Replayed("offer for this call was already received")

    def admit(self, *, caller: bytes, call: bytes, ts: int, now_s: int) -> None:
        """check(), then remember the offer."""
        self.check(caller=caller, call=call, ts=ts, now_s=now_s)
        self._expire(now_s)
        while len(self._seen) >= self.entries_max:
            old_ts, old_caller, old_call = heapq.heappop(self._heap)
            del self._seen[(old_caller, old_call)]
            self.watermark = max(self.watermark, old_ts)
        self._seen[(caller, call)] = ts
        heapq.heappush(self._heap, (ts, caller, call))

    def _expire(self, now_s: int) -> None:
        while self._heap and self._heap[0][0] < now_s - self.max_age_s:
            _ts, caller, call = heapq.heappop(self._heap)
            del self._seen[(caller, call)]
