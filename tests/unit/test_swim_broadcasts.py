from __future__ import annotations

from node.protocol.swim.broadcasts import BroadcastQueue
from node.protocol.swim.messages import MemberInfo, MemberState, Update


def upd(i: int, inc: int = 0, state: MemberState = MemberState.ALIVE) -> Update:
    return Update(member=MemberInfo(id=bytes([i]) * 32, addr=("h", 1), meta=b"", incarnation=inc, state=state))


def test_transmit_limit_then_dropped() -> None:
    q = BroadcastQueue(100)
    q.enqueue(upd(1), 50)
    for _ in range(3):
        assert q.select(1000, 3, 10) == [upd(1)]
    assert q.select(1000, 3, 10) == []
    assert len(q) == 0


def test_newer_update_invalidates_older() -> None:
    q = BroadcastQueue(100)
    q.enqueue(upd(1, 0), 50)
    q.select(1000, 5, 10)
    q.enqueue(upd(1, 1, MemberState.SUSPECT), 50)
    assert len(q) == 1
    assert q.transmits(upd(1).member.id) == 0
    assert q.select(1000, 5, 10) == [upd(1, 1, MemberState.SUSPECT)]


def test_fewest_transmitted_first_newest_first_among_equals() -> None:
    q = BroadcastQueue(100)
    q.enqueue(upd(1), 10)
    q.select(1000, 5, 10)  # 1 has one transmit now
    q.enqueue(upd(2), 10)
    q.enqueue(upd(3), 10)
    assert q.select(1000, 5, 2) == [upd(3), upd(2)]
    # all at one transmit now; 1 was moved there first, 3 and 2 later (newest first)
    assert q.select(1000, 5, 10)[0] in (upd(2), upd(3))


def test_byte_budget_and_item_cap() -> None:
    q = BroadcastQueue(100)
    for i in range(10):
        q.enqueue(upd(i), 100)
    assert len(q.select(350, 5, 64)) == 3
    assert len(q.select(10_000, 5, 4)) == 4
    assert q.select(99, 5, 64) == []


def test_big_item_skipped_smaller_ones_fill() -> None:
    q = BroadcastQueue(100)
    q.enqueue(upd(1), 80)
    q.enqueue(upd(2), 300)  # newest, but does not fit
    assert q.select(100, 5, 10) == [upd(1)]


def test_queue_bounded_drops_most_transmitted() -> None:
    q = BroadcastQueue(3)
    q.enqueue(upd(1), 10)
    q.select(1000, 9, 10)
    q.enqueue(upd(2), 10)
    q.enqueue(upd(3), 10)
    q.enqueue(upd(4), 10)
    assert len(q) == 3
    assert upd(1).member.id not in q
    q.invalidate(upd(3).member.id)
    assert len(q) == 2
