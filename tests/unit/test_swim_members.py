"""The member merge rule (properties) and the probe ring."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol.swim.members import MemberTable, ProbeRing, merge, supersedes
from node.protocol.swim.messages import MemberInfo, MemberState

A, S, D, L = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
MID = b"x" * 32


def rec(inc: int, state: MemberState, meta: bytes = b"") -> MemberInfo:
    return MemberInfo(id=MID, addr=("h", 1), meta=meta, incarnation=inc, state=state)


@pytest.mark.parametrize(
    ("old", "new", "wins"),
    [
        (rec(1, A), rec(2, A), True),  # higher incarnation wins
        (rec(2, A), rec(1, S), False),  # lower loses, whatever the state
        (rec(2, A), rec(1, D), False),
        (rec(1, A), rec(1, S), True),  # equal: suspect beats alive
        (rec(1, S), rec(1, A), False),
        (rec(1, S), rec(1, D), True),  # dead/left beat both
        (rec(1, A), rec(1, L), True),
        (rec(1, D), rec(1, S), False),
        (rec(1, D), rec(2, A), True),  # refutation / rejoin
        (rec(1, L), rec(2, A), True),
        (rec(1, D), rec(1, L), True),  # left > dead at equal incarnation (total order)
        (rec(1, A), rec(1, A), False),  # the same record changes nothing
    ],
)
def test_precedence_table(old: MemberInfo, new: MemberInfo, wins: bool) -> None:
    assert supersedes(new, old) is wins
    assert supersedes(new, None)


records = st.builds(
    rec,
    inc=st.integers(0, 5),
    state=st.sampled_from(MemberState),
    meta=st.sampled_from([b"", b"a", b"b"]),
)


@given(records, records)
def test_merge_commutative(a: MemberInfo, b: MemberInfo) -> None:
    assert merge(a, b) == merge(b, a)


@given(records, records)
def test_merge_idempotent(a: MemberInfo, b: MemberInfo) -> None:
    once = merge(a, b)
    assert merge(once, b) == once
    assert merge(once, a) == once
    assert merge(a, a) == a


@given(st.lists(records, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_any_order_same_result_and_incarnation_never_goes_back(rs: list[MemberInfo], rnd: random.Random) -> None:
    def fold(seq: list[MemberInfo]) -> MemberInfo:
        cur: MemberInfo | None = None
        for r in seq:
            nxt = merge(cur, r)
            assert cur is None or nxt.incarnation >= cur.incarnation
            cur = nxt
        assert cur is not None
        return cur

    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert fold(rs) == fold(shuffled) == functools.reduce(lambda x, y: merge(x, y), rs)


def test_table_counts_live() -> None:
    t = MemberTable()
    t.put(rec(0, A), 1.0)
    assert t.live_count == 1
    t.put(rec(0, S), 2.0)
    assert t.live_count == 1
    assert t.changed_at(MID) == 2.0
    t.put(rec(0, D), 3.0)
    assert t.live_count == 0
    t.remove(MID)
    assert len(t) == 0 and t.live_count == 0


def test_probe_ring_visits_everyone_once_per_round() -> None:
    rng = random.Random(1)
    ring = ProbeRing()
    ids = [bytes([i]) * 32 for i in range(10)]
    for i in ids:
        ring.add(i, rng)
    rounds = [[ring.next(rng) for _ in range(10)] for _ in range(3)]
    for r in rounds:
        assert sorted(r) == sorted(ids)  # type: ignore[type-var]
    assert rounds[1] != rounds[2]  # re-shuffled


def test_probe_ring_join_and_leave_within_a_round() -> None:
    rng = random.Random(2)
    ring = ProbeRing()
    ids = [bytes([i]) * 32 for i in range(6)]
    for i in ids[:5]:
        ring.add(i, rng)
    seen = [ring.next(rng) for _ in range(2)]
    ring.add(ids[5], rng)  # joins after the cursor: still probed this round
    ring.discard(seen[0])
    rest = [ring.next(rng) for _ in range(4)]
    assert sorted(seen + rest) == sorted(ids)  # type: ignore[type-var]
    assert ring.next(rng) is not None
    assert len(ring) == 5


def test_probe_ring_sample() -> None:
    rng = random.Random(3)
    ring = ProbeRing()
    ids = [i.to_bytes(32, "big") for i in range(100)]
    for i in ids:
        ring.add(i, rng)
    got = ring.sample(rng, 3, lambda m: m != ids[0])
    assert len(got) == 3 and len(set(got)) == 3 and ids[0] not in got
    assert ring.sample(rng, 3, lambda m: False) == []
