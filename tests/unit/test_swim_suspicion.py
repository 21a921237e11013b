"""Lifeguard suspicion maths, table-driven (memberlist's remainingSuspicionTime cases plus ours)."""

from __future__ import annotations

import pytest

from node.protocol.swim.config import LAN, LOCAL
from node.protocol.swim.suspicion import Suspicion, suspicion_timeout


@pytest.mark.parametrize(
    ("confirmations", "k", "min_s", "max_s", "expected"),
    [
        (0, 3, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 30.0, 16.0),
        (2, 3, 2.0, 30.0, 7.81),
        (3, 3, 2.0, 30.0, 2.0),
        (4, 3, 2.0, 30.0, 2.0),  # more than k: capped
        (0, 2, 4.0, 24.0, 24.0),  # LAN, N <= 10
        (1, 2, 4.0, 24.0, 11.381),  # 24 - 20 * log 2 / log 3, floored to the ms
        (2, 2, 4.0, 24.0, 4.0),
        (0, 0, 4.0, 24.0, 4.0),  # k = 0: the minimum at once
        (5, 0, 4.0, 24.0, 4.0),
        (0, 2, 4.0, 4.0, 4.0),  # max == min
        (-1, 2, 4.0, 24.0, 24.0),
    ],
)
def test_suspicion_timeout_table(confirmations: int, k: int, min_s: float, max_s: float, expected: float) -> None:
    assert suspicion_timeout(confirmations, k, min_s, max_s) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_timeout_shrinks_monotonically_to_min(k: int) -> None:
    values = [suspicion_timeout(c, k, 1.5, 9.0) for c in range(k + 2)]
    assert values[0] == 9.0
    assert values == sorted(values, reverse=True)
    assert values[k] == values[k + 1] == 1.5


@pytest.mark.parametrize(
    ("n", "lan_min", "local_min"),
    [(1, 4.0, 0.6), (2, 4.0, 0.6), (10, 4.0, 0.6), (100, 8.0, 1.2), (1000, 12.0, 1.8), (10_000, 16.0, 2.4)],
)
def test_min_and_max_follow_n(n: int, lan_min: float, local_min: float) -> None:
    assert LAN.suspicion_min_s(n) == pytest.approx(lan_min)
    assert LAN.suspicion_max_s(n) == pytest.approx(6 * lan_min)
    assert LOCAL.suspicion_min_s(n) == pytest.approx(local_min)


@pytest.mark.parametrize(("n", "limit"), [(1, 4), (9, 4), (10, 8), (99, 8), (100, 12), (1000, 16), (10_000, 20)])
def test_retransmit_limit(n: int, limit: int) -> None:
    assert LAN.retransmit_limit(n) == limit


def test_confirmations_are_distinct_and_capped() -> None:
    a, b, c, d = (bytes([i]) * 32 for i in range(4))
    s = Suspicion(by=a, incarnation=3, k=2, min_s=4.0, max_s=24.0, started=100.0)
    assert s.deadline() == 124.0
    assert not s.confirm(a)  # the first accuser does not confirm itself
    assert s.confirm(b)
    assert not s.confirm(b)
    assert s.deadline() == pytest.approx(111.381)
    assert s.confirm(c)
    assert s.deadline() == 104.0
    assert not s.confirm(d)  # k reached
    assert s.confirmations == 2
