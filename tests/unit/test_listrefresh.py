"""KnockRefresh: an unadmitted id wakes the registry follower at most once per interval (node/app/listrefresh.py)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.app.listrefresh import KnockRefresh


async def test_a_knock_wakes_the_follower_and_the_knocks_of_an_interval_wake_it_once_at_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    knock = KnockRefresh(interval_s=5.0)
    woke: list[tuple[bool, float]] = []

    async def sleeper() -> None:
        for _ in range(4):
            start = trio.current_time()
            woke.append((await knock.wait(60.0), trio.current_time() - start))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.sleep(1.0)
        knock.knock()  # t=1: wakes at once
        await trio.sleep(1.0)
        for _ in range(100):  # t=2: a stranger knocking in a loop: one wake-up, 5 s after the first (t=6)
            knock.knock()
        await trio.sleep(6.0)
        knock.knock()  # t=8, 2 s after that wake-up: deferred to t=11, not dropped
    assert [w for w, _ in woke] == [True, True, True, False]
    assert [t for _, t in woke] == [1.0, 5.0, 5.0, 60.0]
    assert knock.knocks == 102 and knock.refreshes == 3


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


async def test_conditional_rereads_keep_one_client_and_return_only_changed_lists(tmp_path: Path) -> None:
    """RegistryEtags against a real registry on a loopback socket: the first read returns the list, a re-read of an
    unchanged list is a 304 (nothing), a change is read; one kept client serves them all (rule 3 polls every 2 s)."""
    import httpx2

    from node.app.listrefresh import RegistryEtags
    from node.protocol.identity import Identity
    from tests.bootstrap.util import init_registry, make_config, post, registration, running_registry

    registry = init_registry(tmp_path)
    a, b = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
    async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as admin:
        assert (await post(admin, base, registration(a)))[0] == 200
        etags = RegistryEtags(timeout_s=5.0)
        trust = frozenset({registry.id})
        first = await etags.fetch_lists((base,), trust)
        assert [{c.id for c in lst.candidates} for lst in first] == [{a.id}]
        kept = etags._client
        assert await etags.fetch_lists((base,), trust) == []  # 304: unchanged
        assert (await post(admin, base, registration(b, port=7410)))[0] == 200
        changed = await etags.fetch_lists((base,), trust)
        assert [{c.id for c in lst.candidates} for lst in changed] == [{a.id, b.id}]
        assert kept is not None and etags._client is kept
        await etags.aclose()
        assert kept.is_closed and etags._client is None
