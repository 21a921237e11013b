"""node/net/timer.py: a sans-IO core's timers run at its deadline; input moves the deadline without a task switch."""

from __future__ import annotations

import math

import trio
import trio.testing

from node.net.timer import CoreTimer


class FakeCore:
    """A core whose next deadline the test sets; it records when it was ticked."""

    def __init__(self) -> None:
        self.deadline = math.inf
        self.ticks: list[float] = []
        self.flushes = 0

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        if self.deadline <= now:
            self.deadline = math.inf

    def next_deadline(self) -> float:
        return self.deadline

    def flush(self) -> None:
        self.flushes += 1


async def run_timer(core: FakeCore, nursery: trio.Nursery) -> CoreTimer:
    timer = CoreTimer(tick=core.tick, next_deadline=core.next_deadline, flush=core.flush)
    nursery.start_soon(timer.run)
    await trio.testing.wait_all_tasks_blocked()
    return timer


async def test_ticks_at_the_deadline_and_flushes_after_every_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        core.deadline = start + 5
        await run_timer(core, nursery)
        await trio.sleep(10)
        assert core.ticks == [start, start + 5]
        assert core.flushes == 2
        nursery.cancel_scope.cancel()


async def test_input_that_moves_the_deadline_earlier_makes_it_tick_then(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        core.deadline = trio.current_time() + 100
        timer = await run_timer(core, nursery)
        assert len(core.ticks) == 1  # the first tick, at start
        start = trio.current_time()
        core.deadline = start + 3
        timer.wake()
        await trio.sleep(5)
        assert core.ticks[1:] == [start + 3]
        assert core.flushes == len(core.ticks)
        nursery.cancel_scope.cancel()


async def test_input_that_does_not_move_the_deadline_costs_no_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        core.deadline = start + 10
        timer = await run_timer(core, nursery)
        for _ in range(1000):  # a thousand inputs, none of which brings the deadline closer
            timer.wake()
            await trio.sleep(0.001)
        assert len(core.ticks) == 1
        await trio.sleep(10)
        assert core.ticks[1:] == [start + 10]
        nursery.cancel_scope.cancel()


async def test_a_core_with_nothing_to_do_sleeps_until_woken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        timer = await run_timer(core, nursery)
        await trio.sleep(3600)
        assert len(core.ticks) == 1
        core.deadline = trio.current_time() + 1
        timer.wake()
        await trio.sleep(2)
        assert len(core.ticks) == 2
        nursery.cancel_scope.cancel()
