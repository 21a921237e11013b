"""How many client handshakes a node has in progress at once (docs/client-protocol.md, "Reconnecting").

    cap = max(floor, rate * timeout_s * share)

`rate`: handshakes this node finished (welcomed) per second over the last `window_s`, its real throughput under its
current load; `timeout_s`: the client's handshake limit (`[clients] handshake_timeout_s`, 10 s); `share` = 0.5: what
is admitted can be finished in half that limit; `floor`: `[clients] handshakes_in_progress_min`, the cap while the
node has finished few or none (just started, or starved). Beyond the cap an upgrade is answered 503 with a short
Retry-After before any crypto.

Why adaptive: a fixed cap of 512 kept a starved node from starting handshakes it could not finish in time, but on a
quiet machine it turned a 10,000-client reconnect storm into 12,000 refusals, clients backing off exponentially,
and every client back after 20 s instead of 11.5 s (docs/performance.md, "One node at scale"). With the cap tied to
what the node actually finishes, a node that does 600 handshakes a second admits 3,000 at once, and one starved to
50 a second stays at the floor.
"""

from __future__ import annotations

import math

SHARE = 0.5  # of the handshake timeout that the admitted handshakes may take to finish at the measured rate
WINDOW_S = 2.0  # the rate is measured over this many seconds
_SLOTS = 4  # the window in this many slots (the rate moves in steps of WINDOW_S / _SLOTS)


def handshake_cap(rate_per_s: float, timeout_s: float, floor: int) -> int:
    """The formula above: handshakes a node may have in progress at once."""
    return max(floor, math.floor(rate_per_s * timeout_s * SHARE))


class FinishRate:
    """Events per second over the last WINDOW_S, counted in _SLOTS slots (pure: times are passed in)."""

    __slots__ = ("_counts", "_slot")

    def __init__(self) -> None:
        self._counts = [0] * _SLOTS
        self._slot = 0  # the index (time // slot length) of the newest slot counted

    def _advance(self, now: float) -> int:
        slot = int(now // (WINDOW_S / _SLOTS))
        if slot != self._slot:
            for s in range(max(self._slot + 1, slot - _SLOTS + 1), slot + 1):
                self._counts[s % _SLOTS] = 0
            self._slot = slot
        return slot

    def add(self, now: float) -> None:
        self._counts[self._advance(now) % _SLOTS] += 1

    def per_s(self, now: float) -> float:
        self._advance(now)
        return sum(self._counts) / WINDOW_S
