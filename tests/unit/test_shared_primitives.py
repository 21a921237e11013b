"""The one token bucket, deadline heap and refusal vocabulary (node/protocol: ratelimit, deadlines, refusals)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol.deadlines import INF, DeadlineHeap
from node.protocol.ratelimit import HeldBuckets, KeyedBuckets, TokenBucket, address_key
from node.protocol.refusals import Refusal, for_client_code


def test_bucket_allows_burst_then_rate() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait_s(0.0) == 0.5
    assert b.take(0.5) and not b.take(0.5)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=200))
def test_bucket_never_allows_more_than_burst_plus_rate_times_window(times: list[float]) -> None:
    times.sort()
    b = TokenBucket(rate_per_s=5.0, burst=10, now=times[0])
    allowed = sum(1 for t in times if b.take(t))
    assert allowed <= 10 + 5.0 * (times[-1] - times[0]) + 1e-9


def test_a_charge_goes_into_debt_at_most_the_burst_and_the_refill_pays_it_back() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    b.charge(0.0, 5.0)  # 3 - 5 = -2
    assert not b.take(0.0) and b.wait_s(0.0) == 1.5
    assert b.take(1.5)
    b.charge(2.0, 100.0)  # floor: -burst
    assert b.wait_s(2.0) == 2.0


def test_keyed_buckets_are_bounded_and_independent() -> None:
    kb: KeyedBuckets[str] = KeyedBuckets(rate_per_s=1.0, burst=1, keys_max=2)
    assert kb.take("a", 0.0) and not kb.take("a", 0.0)
    assert kb.take("b", 0.0)
    assert kb.take("c", 0.0) and len(kb) == 2  # "a" was evicted


def test_address_key_groups_ipv6_by_64_and_unwraps_mapped_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7" == address_key("192.0.2.7")
    assert address_key("not-an-ip") == "not-an-ip"


def test_deadline_heap_replaces_discards_and_pops_in_order() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    assert h.next_deadline() == INF
    h.push("a", 5.0)
    h.push("b", 3.0)
    h.push("a", 1.0)  # replaces 5.0
    h.push("c", 2.0)
    h.discard("c")
    assert h.next_deadline() == 1.0
    assert h.pop_due(4.0) == ["a", "b"]
    assert h.pop_due(10.0) == [] and h.next_deadline() == INF and len(h) == 0


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100, allow_nan=False), st.booleans()), max_size=300))
def test_deadline_heap_matches_a_plain_dict(ops: list[tuple[int, float, bool]]) -> None:
    h: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    for key, t, drop in ops:
        if drop:
            h.discard(key)
            model.pop(key, None)
        else:
            h.push(key, t)
            model[key] = t
    assert h.next_deadline() == min(model.values(), default=INF)
    due = h.pop_due(50.0)
    assert sorted(due) == sorted(k for k, t in model.items() if t <= 50.0)
    assert [model[k] for k in due] == sorted(model[k] for k in due)


@given(
    st.lists(
        st.tuples(st.sampled_from(["push", "discard", "pop", "peek"]), st.integers(0, 8), st.floats(0, 100)),
        max_size=400,
    )
)
def test_deadline_heap_with_extensions_and_pops_in_between_matches_a_plain_dict(
    ops: list[tuple[str, int, float]],
) -> None:
    """Lazy extension (a later deadline adds no entry; the old one is put back when it surfaces) against a model,
    with pops and peeks between the pushes, as the relay's timers do."""
    h: DeadlineHeap[int] = DeadlineHeap()
    model: dict[int, float] = {}
    for op, key, t in ops:
        if op == "push":
            h.push(key, t)
            model[key] = t
        elif op == "discard":
            h.discard(key)
            model.pop(key, None)
        elif op == "peek":
            assert h.next_deadline() == min(model.values(), default=INF)
        else:
            due = h.pop_due(t)
            want = sorted((d, k) for k, d in model.items() if d <= t)
            assert sorted(due) == sorted(k for _, k in want)
            assert [model[k] for k in due] == [d for d, _ in want]
            for k in due:
                del model[k]
        assert len(h) == len(model) and all(h.deadline_of(k) == d for k, d in model.items())


def test_an_extended_deadline_adds_no_heap_entry_until_its_old_entry_surfaces() -> None:
    h: DeadlineHeap[str] = DeadlineHeap()
    h.push("lease", 30.0)
    for renewal in range(1, 10):
        h.push("lease", 30.0 + 10 * renewal)  # renewed every 10 s
    assert len(h._heap) == 1
    assert h.next_deadline() == 120.0 and len(h._heap) == 1  # put back once, at the deadline it has now
    assert h.pop_due(119.0) == [] and h.pop_due(120.0) == ["lease"] and h.next_deadline() == INF


def test_client_codes_map_into_refusals() -> None:
    assert for_client_code("too_large") is Refusal.OVERSIZED
    assert for_client_code("rate_limited") is Refusal.RATE_LIMITED
    assert for_client_code("anything else") is Refusal.MALFORMED
    assert {r.value for r in Refusal} == {"forged", "replayed", "malformed", "oversized", "rate_limited", "unadmitted"}


SHAPES = ((1.0, 4.0), (2.0, 2.0))  # (rate_per_s, burst): messages, call_ice


def test_held_buckets_survive_a_detach_and_refill_by_the_elapsed_time_never_above_the_burst() -> None:
    held: HeldBuckets[str] = HeldBuckets(SHAPES, keys_max=4)
    msgs, ice = held.attach("a", 0.0)
    assert [msgs.take(0.0) for _ in range(5)] == [True] * 4 + [False] and ice.take(0.0)
    held.detach("a")
    msgs, ice = held.attach("a", 2.5)  # 2.5 s at 1/s: 2 whole tokens; call_ice: 1 + 5 capped at 2
    assert [msgs.take(2.5) for _ in range(3)] == [True, True, False]
    assert [ice.take(2.5) for _ in range(3)] == [True, True, False]
    held.detach("a")
    msgs, _ = held.attach("a", 1000.0)  # long after: full, never more
    assert [msgs.take(1000.0) for _ in range(5)] == [True] * 4 + [False]


def test_held_buckets_are_shared_while_a_key_has_connections_and_kept_after_the_last() -> None:
    held: HeldBuckets[str] = HeldBuckets(SHAPES, keys_max=4)
    first = held.attach("a", 0.0)
    assert first[0].take(0.0)  # not full: worth keeping (a full one is dropped at the next attach)
    assert held.attach("a", 0.0) is first and held.attached() == 1
    held.detach("a")
    assert held.kept() == 0  # one connection left
    held.detach("a")
    held.detach("a")  # a stray detach changes nothing
    assert held.attached() == 0 and held.kept() == 1
    assert held.attach("a", 0.0) is first


def test_held_buckets_keep_at_most_keys_max_keys_forgetting_the_least_recently_ended() -> None:
    held: HeldBuckets[str] = HeldBuckets(SHAPES, keys_max=3)
    for key in "abcde":
        held.attach(key, 0.0)[0].take(0.0, 4.0)  # each spends its whole burst
    for key in "abcde":
        held.detach(key)
        assert held.kept() <= 3
    assert held.kept() == 3
    assert not held.attach("e", 0.0)[0].take(0.0)  # kept: still empty
    assert held.attach("a", 0.0)[0].take(0.0, 4.0)  # forgotten first: full again


def test_held_buckets_drop_kept_states_that_have_refilled() -> None:
    held: HeldBuckets[str] = HeldBuckets(SHAPES, keys_max=100)
    for key in "abc":
        held.attach(key, 0.0)[0].take(0.0, 4.0)
        held.detach(key)
    assert held.kept() == 3
    held.attach("z", 3.9)  # not yet refilled (4 tokens at 1/s): all kept
    assert held.kept() == 3
    held.attach("y", 4.0)  # full again: worth nothing, dropped
    assert held.kept() == 0 and held.attached() == 2


def test_held_buckets_check_their_parameters() -> None:
    with pytest.raises(ValueError, match="keys_max"):
        HeldBuckets(SHAPES, keys_max=0)
    with pytest.raises(ValueError, match="rate_per_s"):
        HeldBuckets(((0.0, 1.0),), keys_max=1)
