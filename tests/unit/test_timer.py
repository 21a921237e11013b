"""node/net/timer.py: a sans-IO core's timers run at its deadline; input moves the deadline without a task switch,
checked at once or (with the node's Flusher) once at the end of the scheduler batch."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from node.net.sockio import Flusher
from node.net.timer import CoreTimer


class FakeCore:
    """A core whose next deadline the test sets; it records when it was ticked."""

    def __init__(self) -> None:
        self.deadline = math.inf
        self.ticks: list[float] = []
        self.flushes = 0
        self.reads = 0  # next_deadline() calls

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        if self.deadline <= now:
            self.deadline = math.inf

    def next_deadline(self) -> float:
        self.reads += 1
        return self.deadline

    def flush(self) -> None:
        self.flushes += 1


async def run_timer(core: FakeCore, nursery: trio.Nursery, *, deferred: bool = False) -> CoreTimer:
    defer = None
    if deferred:
        flusher = Flusher()
        await nursery.start(flusher.run)
        defer = flusher.defer
    timer = CoreTimer(tick=core.tick, next_deadline=core.next_deadline, flush=core.flush, defer=defer)
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


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "end-of-batch"])
async def test_input_that_moves_the_deadline_earlier_makes_it_tick_then(
    autojump_clock: trio.testing.MockClock, deferred: bool
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        core.deadline = trio.current_time() + 100
        timer = await run_timer(core, nursery, deferred=deferred)
        assert len(core.ticks) == 1  # the first tick, at start
        start = trio.current_time()
        core.deadline = start + 3
        timer.wake()
        await trio.sleep(5)
        assert core.ticks[1:] == [start + 3]
        assert core.flushes == len(core.ticks)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "end-of-batch"])
async def test_input_that_does_not_move_the_deadline_costs_no_tick(
    autojump_clock: trio.testing.MockClock, deferred: bool
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        core.deadline = start + 10
        timer = await run_timer(core, nursery, deferred=deferred)
        for _ in range(1000):  # a thousand inputs, none of which brings the deadline closer
            timer.wake()
            await trio.sleep(0.001)
        assert len(core.ticks) == 1
        await trio.sleep(10)
        assert core.ticks[1:] == [start + 10]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "end-of-batch"])
async def test_a_core_with_nothing_to_do_sleeps_until_woken(
    autojump_clock: trio.testing.MockClock, deferred: bool
) -> None:
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        timer = await run_timer(core, nursery, deferred=deferred)
        await trio.sleep(3600)
        assert len(core.ticks) == 1
        core.deadline = trio.current_time() + 1
        timer.wake()
        await trio.sleep(2)
        assert len(core.ticks) == 2
        nursery.cancel_scope.cancel()


async def test_a_batch_of_inputs_reads_the_deadline_once(autojump_clock: trio.testing.MockClock) -> None:
    """A relaying node gives its core a hundred inputs in one scheduler batch under load: with the flusher the
    deadline is read once at the end of the batch, not after each input (4-7 % of a relaying node's CPU went to
    these reads; at once, this batch reads it 100 times)."""
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        core.deadline = start + 50
        timer = await run_timer(core, nursery, deferred=True)
        reads = core.reads
        for i in range(100):  # one batch: no checkpoint between the inputs
            core.deadline = start + 40 - i * 0.1
            timer.wake()
        assert core.reads == reads  # nothing read yet: the check waits for the end of the batch
        await trio.sleep(0)
        assert core.reads == reads + 1
        await trio.sleep(60)
        assert core.ticks[1:] == [start + 40 - 99 * 0.1]
        nursery.cancel_scope.cancel()


async def test_a_deadline_moved_at_the_end_of_a_batch_is_kept_by_the_real_clock() -> None:
    """trio chose how long to poll before the flusher's end-of-batch check: when the check moves the deadline
    earlier (here from never to 50 ms), the flusher makes trio poll again, or the timer would sleep until the next
    I/O or other deadline (the test's own 5 s bound, which then fails it)."""
    core = FakeCore()
    second_tick = trio.Event()
    tick = core.tick

    def tick_and_tell(now: float) -> None:
        tick(now)
        if len(core.ticks) >= 2:
            second_tick.set()

    core.tick = tick_and_tell  # type: ignore[method-assign]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            timer = await run_timer(core, nursery, deferred=True)
            start = trio.current_time()
            core.deadline = start + 0.05
            timer.wake()
            await second_tick.wait()  # no deadline of its own: only the timer's can wake the loop before 5 s
            assert core.ticks[1] - start < 1.0
            nursery.cancel_scope.cancel()


class _BrokenBuffer:
    """A connection whose write raises (a bug somewhere below): the flusher logs it and goes on."""

    def _flush(self) -> None:
        raise RuntimeError("write exploded")


async def test_a_flush_that_raises_does_not_strand_a_queued_timer_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The flusher runs the batch's writes, then its timer checks. A write that raised used to clear the checks
    with the writes, leaving the timer marked as checked-later forever: every later input was ignored."""
    core = FakeCore()
    async with trio.open_nursery() as nursery:
        flusher = Flusher()
        await nursery.start(flusher.run)
        timer = CoreTimer(tick=core.tick, next_deadline=core.next_deadline, flush=core.flush, defer=flusher.defer)
        nursery.start_soon(timer.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        core.deadline = start + 3
        flusher.mark(_BrokenBuffer())  # type: ignore[arg-type]
        timer.wake()
        await trio.sleep(5)
        assert core.ticks[1:] == [start + 3]
        core.deadline = trio.current_time() + 2  # and later inputs still move it
        timer.wake()
        await trio.sleep(3)
        assert len(core.ticks) == 3
        nursery.cancel_scope.cancel()
