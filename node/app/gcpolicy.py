"""The node's garbage-collector policy (docs/performance.md "Garbage collection").

CPython frees most objects by reference counting; its cyclic collector exists for reference cycles, and a
collection of generation g walks every tracked container object in generations 0..g. A node that holds 10,000
clients has about 450,000 such objects (some 45 per connection: session, core, frame reader, socket, task,
coroutine frame, cancel scope...), so one full (generation 2) collection stops it for 0.3-0.8 s on the 2-core
machines of bench/scale, during which it answers nothing: not its clients, not SWIM probes (its peers start to
suspect it), not handshakes. CPython 3.11 starts a collection of generation 0 when allocations minus deallocations
of tracked objects exceed `threshold0` (700), of generation 1 every `threshold1` (10) of those, and a full one every
`threshold2` (10) of those *if* the objects that survived into generation 2 since the last full collection exceed
25 % of it. A node growing through a reconnect storm therefore collected fully at every 25 % of growth: measured in
bench/scale's goaway storm, 1.5 s of collection per surviving node with single pauses of up to 430 ms, and 4.5 s in
the stopping node, whose full collections found nothing to free.

The policy, applied by `homing node run` (node/cli/node.py: the process is the node's) once the node serves and
once it starts to leave; nodes run inside another program (the tests, `homing demo`) leave that program's collector
alone:

1. `gc.freeze()` at serving: what start-up made (modules, classes, settings, ~100,000 objects) lives as long as
   the process; frozen, no later collection walks it again.
2. `threshold2` = 1,000 generation-1 collections instead of 10: a full collection is considered every 7,000,000
   net allocations instead of every 70,000, which a storm of 5,000 re-homed clients (~250 kept objects each)
   does not reach. The young generations keep CPython's thresholds (700, 10): a young collection walks at most
   a few thousand objects, a fraction of a millisecond. (A first version raised `threshold0` to 50,000 instead:
   each young collection then walked up to 50,000 objects, and bench/relay measured it, side by side with the
   default in alternating runs, at +20 % CPU per same-node message and a p99 of 3.2-4.1 ms instead of 2.7-2.8.)
   What reference counting cannot free and has reached the old generation (cycles that outlived two young
   collections) waits for that full collection.
3. `gc.disable()` when the node leaves: it exits within `[node] shutdown_s`, so its cycles die with it; a full
   collection of every closing session's objects there would only delay the goaway and the hand-off.
"""

from __future__ import annotations

import gc

# Rule 2: generation-1 collections between full collections (CPython's default: 10).
OLD_THRESHOLD = 1_000


def serving() -> None:
    """Rules 1 and 2: freeze start-up's objects and consider a full collection 100x less often."""
    gc.freeze()  # no collection first: that would cost start-up time for a few KiB of start-up's cycles
    young, mid, _ = gc.get_threshold()
    gc.set_threshold(young, mid, OLD_THRESHOLD)


def leaving() -> None:
    """Rule 3: no collection while the node says goaway, hands off and leaves."""
    gc.disable()
