"""Time slices for readers: one connection's read may not hold the event loop (docs/security.md, "Malicious client").

A reader that has many frames at hand (a client's 64 KiB read of small envelopes, a peer's batches of relay maps)
handles them for at most its slice of wall time, then lets every other task run before it handles the rest. The
slice is `base_s` (`[clients] handle_slice_s`, `[peers] handle_slice_s`), widened while the loop is crowded
(`widened_slice`, from the length of the scheduler's last turn, which the node's flusher measures:
node/net/sockio.py `Flusher.last_turn_s`).
"""

from __future__ import annotations

import time

import trio

SLICE_CROWDED_S = 0.02  # a turn of the scheduler this long means a crowded loop
SLICE_WIDE_MAX_S = 0.25  # the longest slice a crowded loop gives a reader


def widened_slice(base_s: float, last_turn_s: float) -> float:
    """The slice of a reader when the scheduler's last turn (every runnable task once) took `last_turn_s`:

        slice = base_s                                              if last_turn_s < SLICE_CROWDED_S
                max(base_s, min(SLICE_WIDE_MAX_S, last_turn_s / 2))  otherwise

    A yield costs the reader one turn. In a flood, turns are short (1-3 ms once every connection is sliced), the
    slice stays `base_s`, and the flooder gets one such slice per turn. In a crowded loop (a 10,000-client goaway
    storm: turns of hundreds of milliseconds), a busy honest connection held to 1 ms a turn got a fraction of a
    percent of the loop and made 8,952 of 10,000 probes 2-6 s late (bench/scale); there it may run half as long
    as the last turn took, about a third of the loop while the others wait anyway. Halving keeps the turns from
    feeding on themselves (a slice as long as the last turn would lengthen the next).
    """
    if last_turn_s < SLICE_CROWDED_S:
        return base_s
    return max(base_s, min(SLICE_WIDE_MAX_S, last_turn_s / 2))


def slice_end(base_s: float, last_turn_s: float) -> float:
    """When (time.perf_counter) a slice that starts now ends."""
    return time.perf_counter() + widened_slice(base_s, last_turn_s)


async def next_turn() -> None:
    """Let every other task run once. Shielded: a deadline set meanwhile (a session's Offline or keepalive, a
    link's Close) ends the reader at its next read, as it would have without the slicing, not in the middle of
    the frames it already holds."""
    await trio.lowlevel.cancel_shielded_checkpoint()
