"""What large simulations rely on: Swim.preload (a converged start from one snapshot), the memory-lean table and
ring behind it, and the suspicion timers' earliest-deadline heap."""

from __future__ import annotations

import random

import attrs
import pytest

from node.protocol.swim.config import LOCAL
from node.protocol.swim.members import MemberTable, ProbeRing
from node.protocol.swim.messages import Ack, MemberInfo, MemberState, Ping, PushPullState, Send
from node.protocol.swim.protocol import Swim
from node.protocol.swim.suspicion import Suspicion, Suspicions
from node.testing.keys import VERIFIER, key, nid, signed

A, S, D = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD


def info(i: int, state: MemberState = A, inc: int = 0) -> MemberInfo:
    return signed(MemberInfo(id=nid(i), addr=(f"10.0.0.{i}", 7401), meta=b"m%d" % i, incarnation=inc, state=state))


def core(i: int = 0, *, seed: int = 1, admit: object = None) -> Swim:
    return Swim(
        self_id=nid(i),
        addr=(f"10.0.0.{i}", 7401),
        meta=b"m%d" % i,
        config=LOCAL,
        rng=random.Random(seed),
        now=0.0,
        admit=(lambda _m: True) if admit is None else admit,  # type: ignore[arg-type]
        sign=key(i).sign,
        verifier=VERIFIER,
    )


SNAPSHOT = {nid(i): info(i) for i in range(50)}


def test_preload_gives_the_table_a_push_pull_merge_gives() -> None:
    merged, loaded = core(), core()
    merged.merge_push_pull(PushPullState(members=tuple(SNAPSHOT.values())), 0.0, nid(1))
    loaded.preload(SNAPSHOT, 0.0)
    assert loaded.members() == merged.members()
    assert loaded.member(nid(7)) is SNAPSHOT[nid(7)]  # shared, not copied
    assert loaded.member(nid(0)) == info(0)  # our own record stays ours
    assert loaded.drain() == []  # the preloaded members are not news


def test_preloaded_core_probes_everyone_once_per_round() -> None:
    c = core()
    c.preload(SNAPSHOT, 0.0)
    pinged: list[bytes] = []
    now = 0.0
    while len(pinged) < 49:
        now = c.next_deadline()
        c.tick(now)
        for cmd in c.drain():
            if isinstance(cmd, Send) and isinstance(cmd.msg, Ping):
                pinged.append(cmd.to_id)
                c.receive(cmd.to_id, cmd.to_addr, Ack(seq=cmd.msg.seq), now)
    assert sorted(pinged) == sorted(nid(i) for i in range(1, 50))


def test_preload_refuses_what_a_converged_start_cannot_be() -> None:
    c = core()
    c.preload(SNAPSHOT, 0.0)
    with pytest.raises(ValueError, match="fresh"):
        c.preload(SNAPSHOT, 1.0)
    with pytest.raises(ValueError, match="ALIVE"):
        core().preload({nid(1): info(1, S)}, 0.0)
    with pytest.raises(ValueError, match="admitted"):
        core(admit=lambda m: m != nid(3)).preload(SNAPSHOT, 0.0)
    cfg = attrs.evolve(LOCAL, members_max=10)
    small = Swim(
        self_id=nid(0),
        addr=("h", 1),
        meta=b"",
        config=cfg,
        rng=random.Random(1),
        now=0.0,
        admit=bool,
        sign=key(0).sign,
        verifier=VERIFIER,
    )
    with pytest.raises(ValueError, match="members_max"):
        small.preload(SNAPSHOT, 0.0)
    seeded = core()
    seeded.add_seed(nid(1), ("10.0.0.1", 7401), 0.0)
    with pytest.raises(ValueError, match="fresh"):
        seeded.preload(SNAPSHOT, 0.0)


def test_preloaded_member_changes_like_any_other() -> None:
    c = core()
    c.preload(SNAPSHOT, 0.0)
    c.merge_push_pull(PushPullState(members=(info(5, D, inc=1),)), 3.0, nid(6))  # a remote DEAD arrives as SUSPECT
    assert c.member(nid(5)) == info(5, S, inc=1)
    while c.next_deadline() < 3.0 + LOCAL.suspicion_max_s(50):
        c.tick(c.next_deadline())
        c.drain()
    got = c.member(nid(5))
    assert got is not None and got.state is D  # nobody refuted: the suspicion ran out


def test_table_changed_at_after_preload() -> None:
    t = MemberTable()
    t.put(info(0), 0.0)
    t.preload({nid(i): info(i) for i in (1, 2)}, 5.0)
    assert (t.changed_at(nid(0)), t.changed_at(nid(1))) == (0.0, 5.0)
    assert len(t) == 3 and t.live_count == 3
    t.put(info(1, S), 7.0)
    t.put(info(2, A, inc=1), 8.0)  # no state change: the time stays
    assert (t.changed_at(nid(1)), t.changed_at(nid(2))) == (7.0, 5.0)
    t.remove(nid(2))
    with pytest.raises(KeyError):
        t.changed_at(nid(2))
    with pytest.raises(ValueError, match="fresh"):
        t.preload({nid(9): info(9)}, 9.0)


def test_ring_preload_shuffles_and_discard_of_absent_is_a_no_op() -> None:
    ring = ProbeRing()
    ids = [nid(i) for i in range(20)]
    ring.preload(ids, random.Random(4))
    first = [ring.next(random.Random(5)) for _ in range(20)]
    assert sorted(first) == sorted(ids) and first != ids  # type: ignore[type-var]
    ring.discard(nid(99))
    assert len(ring) == 20
    with pytest.raises(ValueError, match="empty"):
        ring.preload(ids, random.Random(4))


def test_suspicions_earliest_and_due_follow_starts_confirmations_and_ends() -> None:
    def sus(started: float) -> Suspicion:
        return Suspicion(by=nid(100), incarnation=0, k=2, min_s=4.0, max_s=24.0, started=started)

    timers = Suspicions()
    assert timers.earliest() is None and timers.due(1e9) == []
    for i in range(200):  # many starts, confirmations and ends: stale heap entries are dropped or compacted
        timers.start(nid(i), sus(float(i)))
        if i % 3 == 0:
            assert timers.confirm(nid(i), nid(101))
            assert not timers.confirm(nid(i), nid(101))  # the same accuser twice
        if i % 2 == 1:
            timers.pop(nid(i))
    assert not timers.confirm(nid(1), nid(102))  # ended
    alive = {i for i in range(200) if i % 2 == 0}
    expect = {i: timers.get(nid(i)).deadline() for i in alive}  # type: ignore[union-attr]
    assert timers.earliest() == min(expect.values())
    assert len(timers._heap._heap) <= 2 * len(timers) + 65  # bounded
    now = 60.0
    due = sorted((expect[i], i) for i in alive if expect[i] <= now)
    assert timers.due(now) == [nid(i) for _, i in due]  # earliest first
    for _, i in due:
        timers.pop(nid(i))
    timers.start(nid(0), sus(100.0))  # a new suspicion replaces the old one: its old deadline is stale
    assert timers.earliest() == min(v for i, v in expect.items() if i != 0 and v > now)
