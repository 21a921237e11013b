"""Time slices for readers: one connection's read may not hold the event loop (docs/security.md, "Malicious client").

A reader that has many frames at hand (a client's 64 KiB read of small envelopes, a peer's batch of relay maps)
handles them for at most its slice of wall time, then lets every other task run before it handles the rest. The
slice is `base_s` (`[clients] handle_slice_s`, `[peers] handle_slice_s`), widened when the loop is crowded
(`widened_slice`). A reader's state is one value: None, or (slice, until) while a widened slice holds; readers keep
it in their own slot (an idle client's memory matters, docs/performance.md) and hand it back and forth.
"""

from __future__ import annotations

import time

import trio

SLICE_CROWDED_S = 0.02  # a turn of the scheduler this long means a crowded loop
SLICE_WIDE_MAX_S = 0.25  # the longest slice a crowded loop gives a reader
SLICE_WIDE_FOR_S = 1.0  # how long a widened slice holds before the reader is back to its base slice

Wide = tuple[float, float] | None  # (slice in seconds, perf_counter time it holds until), or None: the base slice


def widened_slice(base_s: float, waited_s: float) -> float:
    """The slice of a reader whose last yield (between two slices of one read) waited `waited_s` for its turn:

        slice = base_s                                           if waited_s < SLICE_CROWDED_S
                max(base_s, min(SLICE_WIDE_MAX_S, waited_s / 2))  otherwise

    A yield costs the reader one turn of the scheduler. In a flood, turns are short (1-3 ms once every
    connection is sliced), the slice stays `base_s`, and the flooder gets one such slice per turn. In a crowded loop
    (a 10,000-client goaway storm: turns of hundreds of milliseconds), a busy honest connection held to 1 ms a
    turn got a fraction of a percent of the loop and made 8,952 of 10,000 probes 2-6 s late (bench/scale); there
    it may run half as long as it waited, so it has about a third of the loop while the others wait anyway.
    Halving keeps the turns from feeding on themselves (a slice as long as the last turn would lengthen the next).
    """
    if waited_s < SLICE_CROWDED_S:
        return base_s
    return max(base_s, min(SLICE_WIDE_MAX_S, waited_s / 2))


def slice_end(base_s: float, wide: Wide) -> float:
    """When (perf_counter) a slice starting now ends: the widened slice while it holds, else `base_s`."""
    t0 = time.perf_counter()
    return t0 + (wide[0] if wide is not None and t0 < wide[1] else base_s)


async def next_turn(base_s: float) -> Wide:
    """Let every other task run once, then return the reader's new state (see `widened_slice`).

    Shielded: a deadline set meanwhile (a session's Offline or keepalive, a link's Close) ends the reader at its
    next read, as it would have without the slicing, not in the middle of the frames it already holds.
    """
    before = time.perf_counter()
    await trio.lowlevel.cancel_shielded_checkpoint()
    after = time.perf_counter()
    wide_s = widened_slice(base_s, after - before)
    return (wide_s, after + SLICE_WIDE_FOR_S) if wide_s > base_s else None
