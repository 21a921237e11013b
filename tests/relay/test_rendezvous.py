"""Pure rendezvous state: HRW owners, leases, mailbox TTL/bounds/cancel, the seen set."""

from __future__ import annotations

import random

import pytest

from node.protocol.relay.rendezvous import (
    ENTRY_OVERHEAD_BYTES,
    LeaseTable,
    Mailbox,
    MailLimits,
    PutResult,
    Ranking,
    SeenSet,
    hrw_score,
    owners,
)
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import PeerEnvelope

RNG = random.Random(1)
MEMBERS = [RNG.randbytes(32) for _ in range(20)]
CLIENTS = [RNG.randbytes(32) for _ in range(300)]
TO, FROM, ORIGIN = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def env(
    n: int,
    kind: Kind = Kind.CALL_ICE,
    call: bytes = b"c",
    to: bytes = TO,
    origin: bytes = ORIGIN,
    sender: bytes = FROM,
    body: bytes | None = None,
) -> PeerEnvelope:
    return PeerEnvelope(
        eid=n.to_bytes(16, "big"),
        origin=origin,
        to=to,
        sender=sender,
        kind=kind,
        call=call,
        body=b"x%d" % n if body is None else body,
        claim_nonce=bytes(32),
        claim_sig=bytes(64),
    )


def test_owners_are_deterministic_distinct_and_order_free() -> None:
    for c in CLIENTS[:20]:
        o = owners(c, MEMBERS, 3)
        assert len(set(o)) == 3 and o == owners(c, list(reversed(MEMBERS)), 3)
        assert [hrw_score(m, c) for m in o] == sorted((hrw_score(m, c) for m in o), reverse=True)
    assert owners(CLIENTS[0], MEMBERS[:2], 3) == owners(CLIENTS[0], MEMBERS[:2], 5)  # fewer members than R


def test_a_join_moves_only_the_ids_the_newcomer_takes() -> None:
    newcomer = b"\xff" * 32
    moved = 0
    for c in CLIENTS:
        before, after = owners(c, MEMBERS, 3), owners(c, [*MEMBERS, newcomer], 3)
        if before != after:
            moved += 1
            assert newcomer in after and set(before) - set(after) == {before[-1]}
    assert 0 < moved < len(CLIENTS) * 0.3  # about R/N = 3/21 of them


def test_a_death_promotes_the_next_member_only_for_its_ids() -> None:
    dead = MEMBERS[0]
    for c in CLIENTS:
        before, after = owners(c, MEMBERS, 3), owners(c, MEMBERS[1:], 3)
        if dead in before:
            assert set(before) - {dead} < set(after)
        else:
            assert before == after


def test_lease_expiry_renewal_and_bound() -> None:
    t = LeaseTable(leases_max=2)
    assert t.put(b"a", b"h1", 10.0) and t.put(b"a", b"h2", 5.0)
    assert not t.put(b"b", b"h1", 10.0)  # full: refused, nothing evicted
    assert t.homes(b"a", 0.0) == (b"h1", b"h2") and t.next_deadline() == 5.0
    assert t.put(b"a", b"h2", 20.0)  # renewal of an existing lease fits
    t.expire(10.0)
    assert t.homes(b"a", 10.0) == (b"h2",) and len(t) == 1
    t.drop_home(b"h2")
    assert len(t) == 0 and t.homes(b"a", 0.0) == ()


def test_mailbox_ttl_order_and_duplicates() -> None:
    m = Mailbox(per_id_max=10, total_max=100)
    assert [m.put(env(i), 10.0 + i) for i in range(3)] == [PutResult.STORED] * 3
    assert m.put(env(1), 99.0) is PutResult.DUPLICATE
    assert [e.env.eid for e in m.entries(TO)] == [env(i).eid for i in range(3)]
    assert m.next_deadline() == 10.0
    assert [e.env.eid for e in m.expire(11.0)] == [env(0).eid, env(1).eid]
    assert len(m) == 1 and m.next_deadline() == 12.0


@pytest.mark.parametrize(("per_id", "total"), [(2, 100), (100, 2)])
def test_mailbox_bounds_per_id_and_per_node(per_id: int, total: int) -> None:
    m = Mailbox(per_id_max=per_id, total_max=total)
    assert m.put(env(1), 9.0) is PutResult.STORED and m.put(env(2), 9.0) is PutResult.STORED
    assert m.put(env(3), 9.0) is PutResult.FULL
    if per_id == 2:  # another id still has room
        assert m.put(env(4, to=b"\x09" * 32), 9.0) is PutResult.STORED


def test_cancel_by_hangup_removes_the_queued_call_only() -> None:
    m = Mailbox(per_id_max=10, total_max=100)
    m.put(env(1, Kind.CALL_OFFER), 9.0)
    m.put(env(2, Kind.CALL_ICE), 9.0)
    m.put(env(3, Kind.CALL_OFFER, call=b"other"), 9.0)
    assert m.cancel_call(TO, b"\x07" * 32, b"c") == []  # another sender's hangup cancels nothing
    assert [e.env.eid for e in m.cancel_call(TO, FROM, b"c")] == [env(1).eid, env(2).eid]
    assert [e.env.eid for e in m.entries(TO)] == [env(3).eid]


def test_cancel_needs_a_queued_offer_not_one_in_flight() -> None:
    m = Mailbox(per_id_max=10, total_max=100)
    m.put(env(1, Kind.CALL_ICE), 9.0)
    assert m.cancel_call(TO, FROM, b"c") == []  # no offer waiting: the hangup is an ordinary envelope
    m.put(env(2, Kind.CALL_OFFER), 9.0)
    entry = m.get(env(2).eid)
    assert entry is not None
    entry.inflight_to = b"h" * 32  # already pushed to the home node: too late to cancel
    assert m.cancel_call(TO, FROM, b"c") == [] and len(m) == 2


def test_seen_set_is_bounded_and_expires() -> None:
    s = SeenSet(seen_max=2)
    for i in range(3):
        s.add(bytes([i]), 10.0 + i)
    assert bytes([0]) not in s and len(s) == 2 and s.next_deadline() == 11.0 + SeenSet.EXPIRY_SLACK_S
    s.expire(11.0)
    assert list(map(lambda e: e in s, [b"\x01", b"\x02"])) == [False, True]


def test_seen_set_expires_in_batches_not_one_timer_wake_per_envelope() -> None:
    """A home delivering 1,000 envelopes a second for 10 s, then its timer run as the driver runs it (tick at
    `next_deadline`): about one wake a second, each expiring a second's worth. Without the slack: 10,000 wakes."""
    s = SeenSet(seen_max=100_000)
    for i in range(10_000):
        s.add(i.to_bytes(4, "big"), 70.0 + i / 1000)
    wakes, now = 0, 0.0
    while len(s) and wakes < 100_000:
        now = s.next_deadline()
        s.expire(now)
        wakes += 1
    assert len(s) == 0 and wakes <= 11
    assert now <= 70.0 + 9.999 + SeenSet.EXPIRY_SLACK_S  # none kept longer than its expiry plus the slack


def test_lease_share_of_one_home_is_bounded() -> None:
    t = LeaseTable(leases_max=10, per_home_max=2)
    assert t.put(b"a", b"m", 9.0) and t.put(b"b", b"m", 9.0)
    assert not t.put(b"c", b"m", 9.0)  # the hostile home's share is spent
    assert t.put(b"c", b"h", 9.0) and t.count_home(b"m") == 2
    t.drop(b"a", b"m")
    assert t.put(b"c", b"m", 9.0)


def _mailbox(**lim: int) -> Mailbox:
    base = {"per_id_max": 1000, "total_max": 1000}
    return Mailbox(per_id_max=1000, total_max=1000, limits=MailLimits(**{**base, **lim}))


def test_mailbox_bytes_are_bounded_not_only_counts() -> None:
    m = _mailbox(bytes_max=3 * (65536 + ENTRY_OVERHEAD_BYTES))
    big = b"\x00" * 65536
    assert [m.put(env(i, to=bytes([i]) * 32, body=big), 9.0) for i in range(4)] == [PutResult.STORED] * 3 + [
        PutResult.FULL
    ]
    assert m.bytes == 3 * (65536 + ENTRY_OVERHEAD_BYTES)
    m.remove(env(0).eid)
    assert m.put(env(9, body=b"small"), 9.0) is PutResult.STORED


def test_mailbox_share_per_origin_and_per_sender() -> None:
    m = _mailbox(per_origin_max=2, per_sender_max=3)
    m1, m2, x, y = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32, b"\x0d" * 32
    got = [m.put(env(i, to=bytes([i]) * 32, origin=m1, sender=bytes([100 + i]) * 32), 9.0) for i in range(3)]
    assert got == [PutResult.STORED, PutResult.STORED, PutResult.FULL]  # the origin's share
    got = [m.put(env(10 + i, to=bytes([i]) * 32, origin=m2, sender=x), 9.0) for i in range(2)]
    assert got == [PutResult.STORED] * 2  # another origin still fits
    assert m.put(env(20, origin=x, sender=x), 9.0) is PutResult.STORED
    assert m.put(env(21, origin=y, sender=x), 9.0) is PutResult.FULL  # the sender's share, whatever the origin
    m.expire(9.0)
    assert len(m) == 0 and m.bytes == 0


def test_ranking_answers_as_owners_does_across_membership_changes_and_stays_bounded() -> None:
    """The memo (Ranking) never answers differently from owners() for the current set or the one before, and
    never holds more than entries_max answers, whatever ids are asked (a flood of random ids included)."""
    rnd = random.Random(11)
    pool = [rnd.randbytes(32) for _ in range(12)]
    members = tuple(sorted(pool[:5]))
    ranking = Ranking(members, replicas=3, entries_max=50)
    clients = [rnd.randbytes(32) for _ in range(80)]
    for _ in range(40):
        previous = members
        members = tuple(sorted(rnd.sample(pool, rnd.randint(1, len(pool)))))
        ranking.members = members
        for client in rnd.sample(clients, 60):
            assert ranking.of(client) == owners(client, members, 3)
            assert ranking.before(client) == owners(client, previous, 3) or previous == members
            assert ranking.under(client, previous) == owners(client, previous, 3)
            assert ranking.under(client, pool[:2]) == owners(client, pool[:2], 3)
            assert len(ranking._memo) <= 50
        assert ranking.member_set == frozenset(members)  # the relay's membership test per frame
