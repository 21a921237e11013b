"""The timer half of a thin driver: run a sans-IO core's timers at its next deadline (DESIGN rule 1).

A core exposes `tick(now)` and `next_deadline()`; after every tick the driver carries out the core's commands
(`flush`). Any other input may move the deadline earlier, so whoever gives the core input calls `wake()`.

`wake()` costs no task switch: it re-reads the core's deadline and, only when that is earlier than the one the
timer sleeps until, moves the sleep's deadline. At a thousand inputs a second that spares a thousand scheduler
rounds and core ticks (the relay's latency tail, docs/performance.md).

With a `defer` (the node's `Flusher.defer`, node/net/sockio.py), the re-read waits for the end of the scheduler
batch: a batch of a hundred relay inputs reads the core's deadline once, not a hundred times (4-7 % of a relaying
node's CPU went to these reads). The flusher runs the check before trio polls for I/O; trio chose the poll's
timeout just before that, so when the check moved the deadline earlier the flusher makes trio poll without waiting
and choose again: a timer is never later than it would have been.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

# `Flusher.defer`: run this check at the end of the scheduler batch (it returns whether it moved a deadline
# earlier); False when that cannot happen (the flusher is not running), and the caller checks at once.
Defer = Callable[[Callable[[], bool]], bool]


class CoreTimer:
    def __init__(
        self,
        *,
        tick: Callable[[float], None],
        next_deadline: Callable[[], float],
        flush: Callable[[], None],
        defer: Defer | None = None,
    ) -> None:
        self._tick = tick
        self._next_deadline = next_deadline
        self._flush = flush
        self._defer = defer
        self._deferred = False  # a check is queued for the end of this batch
        self._scope: trio.CancelScope | None = None

    def wake(self) -> None:
        """The core got input outside a tick: tick earlier if its next deadline moved earlier (checked now, or
        once at the end of the batch with a `defer`)."""
        if self._scope is None or self._deferred:
            return
        if self._defer is not None and self._defer(self._check):
            self._deferred = True
            return
        self._check()

    def _check(self) -> bool:
        """Move the sleep's deadline to the core's, if that is earlier; whether it moved."""
        self._deferred = False
        scope = self._scope
        if scope is None:
            return False
        deadline = self._next_deadline()
        if deadline < scope.deadline:
            scope.deadline = deadline
            return True
        return False

    async def run(self) -> None:
        while True:
            self._tick(trio.current_time())
            self._flush()
            self._scope = trio.CancelScope(deadline=self._next_deadline())
            with self._scope:
                await trio.sleep_forever()
            self._scope = None
