"""KnockRefresh: an unadmitted id wakes the registry follower at most once per interval (node/app/listrefresh.py)."""

from __future__ import annotations

import trio
import trio.testing

from node.app.listrefresh import KnockRefresh


async def test_a_knock_wakes_the_follower_and_knocks_within_the_interval_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    knock = KnockRefresh(interval_s=5.0)
    woke: list[tuple[bool, float]] = []

    async def sleeper() -> None:
        for _ in range(3):
            start = trio.current_time()
            woke.append((await knock.wait(60.0), trio.current_time() - start))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.sleep(1.0)
        knock.knock()  # wakes at once
        await trio.sleep(1.0)
        for _ in range(100):  # a stranger knocking in a loop: nothing until 5 s after the first wake-up
            knock.knock()
        await trio.sleep(4.0)
        knock.knock()  # 6 s after the first: wakes again
    assert [w for w, _ in woke] == [True, True, False]
    assert woke[0][1] == 1.0 and woke[1][1] == 5.0 and woke[2][1] == 60.0
    assert knock.knocks == 102 and knock.refreshes == 2


def test_next_wake_follows_the_rules_of_the_follower() -> None:
    from node.app.listrefresh import PENDING_POLL_FOR_S, PENDING_POLL_S, next_wake_s

    # rule 1: nothing else due, sleep until the heartbeat's full read
    assert next_wake_s(100.0, heartbeat_at=160.0, pending_since=None, join_at=None) == 60.0
    # rule 3: pending, polls every 2 s for the first hour after the start, then only at the heartbeat
    assert next_wake_s(100.0, heartbeat_at=160.0, pending_since=0.0, join_at=None) == PENDING_POLL_S
    late = PENDING_POLL_FOR_S + 1.0
    assert next_wake_s(late, heartbeat_at=late + 60.0, pending_since=0.0, join_at=None) == 60.0
    # rule 4: alone, the next join attempt; the earliest of the due times wins, never negative
    assert next_wake_s(100.0, heartbeat_at=160.0, pending_since=None, join_at=101.0) == 1.0
    assert next_wake_s(100.0, heartbeat_at=160.0, pending_since=0.0, join_at=130.0) == PENDING_POLL_S
    assert next_wake_s(100.0, heartbeat_at=99.0, pending_since=0.0, join_at=98.0) == 0.0
