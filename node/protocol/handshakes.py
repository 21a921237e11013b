"""How many client handshakes a node has in progress at once (docs/client-protocol.md, "Reconnecting").

    cap = max(floor, rate * timeout_s * share)             while the node's event loop is saturated
    cap = max(floor, rate * timeout_s * share) * headroom  while it is not (busy share < SATURATED)

`rate`: handshakes this node finished (welcomed) per second *while it had handshakes in progress*, over the last
`window_s`: its real throughput under its current load; `timeout_s`: the client's handshake limit (`[clients]
handshake_timeout_s`, 10 s); `share` = 0.5: what is admitted can be finished in half that limit; `floor`:
`[clients] handshakes_in_progress_min`, the cap while the node has finished few or none (just started, or starved).
Beyond the cap an upgrade is answered 503 with a short Retry-After before any crypto.

Why adaptive: a fixed cap of 512 kept a starved node from starting handshakes it could not finish in time, but on a
quiet machine it turned a 10,000-client reconnect storm into 12,000 refusals, clients backing off exponentially,
and every client back after 20 s instead of 11.5 s (docs/performance.md, "One node at scale"). With the cap tied to
what the node actually finishes, a node that does 600 handshakes a second admits 3,000 at once, and one starved to
50 a second stays at the floor.

Why "while busy": a node that was idle until a storm reached it has finished nothing in the last window, so a rate
over the whole window starts at 0 and takes the whole window to catch up, refusing thousands it could have
finished meanwhile (measured: 3,800 refusals in one second on a survivor of bench/scale's goaway storm). Dividing
by the slots in which handshakes were in progress measures the node's throughput from the first slot of the
storm. A slot counts as busy once a handshake finished in it or the cap was asked while handshakes were in
progress.

Why the headroom: a handshake is "in progress" from the 101 until the welcome, and most of that time the node waits
for the client (its hello over a slow mobile link, or a client that is itself busy); the node's own work, checking
the hello and signing the welcome, is a few hundred microseconds of it. When slow clients, not the node, set the
pace, the measured rate is low and a rate cap would refuse clients the node has the CPU to serve: bench/scale's
goaway storm, whose one load-generator process is slower than the two nodes it reconnects to, drew 3,000 such
refusals (each a wasted round trip and a backoff of a second or more) while both nodes used under half a core.
So the rate cap binds only while the node's event loop is busy for SATURATED or more of the last WINDOW_S
(`LoopLoad`, measured by the node's flusher between the end of one I/O wait and the start of the next); below
that the cap is `headroom` (`[clients] handshakes_headroom`, 4) times larger. A starved node's loop is saturated,
so it keeps the rate cap.
"""

from __future__ import annotations

import math

SHARE = 0.5  # of the handshake timeout that the admitted handshakes may take to finish at the measured rate
WINDOW_S = 2.0  # the rate is measured over this many seconds
_SLOTS = 4  # the window in this many slots (the rate moves in steps of WINDOW_S / _SLOTS)


SATURATED = 0.8  # share of the window the event loop was busy from which the node counts as saturated


def handshake_cap(rate_per_s: float, timeout_s: float, floor: int, busy_share: float = 1.0, headroom: int = 1) -> int:
    """The formulas above: handshakes a node may have in progress at once (`headroom`: `[clients]
    handshakes_headroom`)."""
    cap = max(floor, math.floor(rate_per_s * timeout_s * SHARE))
    return cap if busy_share >= SATURATED else cap * headroom


class _Slots:
    """The last WINDOW_S as _SLOTS slots of a ring; `_advance(now)` clears the slots time has moved past."""

    __slots__ = ("_slot",)

    def __init__(self) -> None:
        self._slot = 0  # the index (time // slot length) of the newest slot counted

    def _clear(self, i: int) -> None:
        raise NotImplementedError

    def _advance(self, now: float) -> int:
        """The ring index of `now`'s slot."""
        slot = int(now // (WINDOW_S / _SLOTS))
        if slot != self._slot:
            for s in range(max(self._slot + 1, slot - _SLOTS + 1), slot + 1):
                self._clear(s % _SLOTS)
            self._slot = slot
        return slot % _SLOTS


class FinishRate(_Slots):
    """Events per busy second over the last WINDOW_S, counted in _SLOTS slots (pure: times are passed in)."""

    __slots__ = ("_busy", "_counts")

    def __init__(self) -> None:
        super().__init__()
        self._counts = [0] * _SLOTS
        self._busy = [False] * _SLOTS  # whether work was in progress during the slot

    def _clear(self, i: int) -> None:
        self._counts[i] = 0
        self._busy[i] = False

    def add(self, now: float) -> None:
        i = self._advance(now)
        self._counts[i] += 1
        self._busy[i] = True

    def per_s(self, now: float, *, busy: bool = False) -> float:
        """The rate per second of busy time; `busy`: work is in progress now (marks the current slot busy)."""
        i = self._advance(now)
        if busy:
            self._busy[i] = True
        busy_slots = sum(self._busy)
        return sum(self._counts) / (busy_slots * (WINDOW_S / _SLOTS)) if busy_slots else 0.0


class LoopLoad(_Slots):
    """The share of the last WINDOW_S an event loop spent working rather than waiting for I/O (pure)."""

    __slots__ = ("_busy_s",)

    def __init__(self) -> None:
        super().__init__()
        self._busy_s = [0.0] * _SLOTS

    def _clear(self, i: int) -> None:
        self._busy_s[i] = 0.0

    def worked(self, start: float, end: float) -> None:
        """The loop worked from `start` (an I/O wait ended) to `end` (the next began); counted in `end`'s slot."""
        self._busy_s[self._advance(end)] += max(0.0, end - start)

    def share(self, now: float) -> float:
        """Busy seconds over the window's elapsed seconds: the full slots before this one and this one so far."""
        slot_s = WINDOW_S / _SLOTS
        self._advance(now)
        elapsed = (WINDOW_S - slot_s) + (now - self._slot * slot_s)
        return min(1.0, sum(self._busy_s) / elapsed) if elapsed > 0 else 0.0
