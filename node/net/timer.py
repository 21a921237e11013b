"""The timer half of a thin driver: run a sans-IO core's timers at its next deadline (DESIGN rule 1).

A core exposes `tick(now)` and `next_deadline()`; after every tick the driver carries out the core's commands
(`flush`). Any other input may move the deadline earlier, so whoever gives the core input calls `wake()`.

`wake()` costs no task switch: it re-reads the core's deadline and, only when that is earlier than the one the
timer sleeps until, moves the sleep's deadline. At a thousand inputs a second that spares a thousand scheduler
rounds and core ticks (the relay's latency tail, docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class CoreTimer:
    def __init__(
        self, *, tick: Callable[[float], None], next_deadline: Callable[[], float], flush: Callable[[], None]
    ) -> None:
        self._tick = tick
        self._next_deadline = next_deadline
        self._flush = flush
        self._scope: trio.CancelScope | None = None

    def wake(self) -> None:
        """The core got input outside a tick: tick earlier if its next deadline moved earlier."""
        scope = self._scope
        if scope is not None:
            deadline = self._next_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    async def run(self) -> None:
        while True:
            self._tick(trio.current_time())
            self._flush()
            self._scope = trio.CancelScope(deadline=self._next_deadline())
            with self._scope:
                await trio.sleep_forever()
            self._scope = None
