"""The timer half of a thin driver: run a sans-IO core's timers at its next deadline (DESIGN rule 1).

A core exposes `tick(now)` and `next_deadline()`; after every tick the driver carries out the core's commands
(`flush`). Any other input may move the deadline earlier, so whoever gives the core input calls `wake()`.
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
        self._wake = trio.Event()

    def wake(self) -> None:
        """The core got input outside a tick: re-read its deadline now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._tick(trio.current_time())
            self._flush()
            self._wake = trio.Event()
            with trio.move_on_at(self._next_deadline()):
                await self._wake.wait()
