"""The adaptive cap on client handshakes in progress (node/protocol/handshakes.py), pure."""

from __future__ import annotations

from node.protocol.handshakes import WINDOW_S, FinishRate, handshake_cap


def test_the_cap_is_the_floor_until_the_node_finishes_faster_than_the_floor_needs() -> None:
    assert handshake_cap(0.0, 10.0, 512) == 512
    assert handshake_cap(50.0, 10.0, 512) == 512  # a starved node: 250 would be finished in 5 s
    assert handshake_cap(600.0, 10.0, 512) == 3000  # a quiet one: 3,000 finished in half the limit


def test_the_rate_counts_the_last_window_only() -> None:
    rate = FinishRate()
    for i in range(600):
        rate.add(10.0 + i / 300)  # 300 a second for two seconds
    assert abs(rate.per_s(11.99) - 300) <= 300 / 4 + 1  # within one slot's worth
    assert rate.per_s(12.0 + WINDOW_S) == 0.0  # a quiet window later: nothing counted
    rate.add(100.0)
    assert rate.per_s(100.1) == 1 / WINDOW_S
    assert rate.per_s(1000.0) == 0.0  # a long gap clears every slot
