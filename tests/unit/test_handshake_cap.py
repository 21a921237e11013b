"""The adaptive cap on client handshakes in progress (node/protocol/handshakes.py), pure."""

from __future__ import annotations

from node.protocol.handshakes import SATURATED, WINDOW_S, FinishRate, LoopLoad, handshake_cap


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
    assert rate.per_s(100.1) == 1 / (WINDOW_S / 4)  # one busy slot: one finished in half a second of work
    assert rate.per_s(1000.0) == 0.0  # a long gap clears every slot


def test_a_node_idle_until_a_storm_measures_its_throughput_from_the_first_busy_slot() -> None:
    """The survivor of a goaway storm: nothing for minutes, then 1,000 handshakes a second. A rate over the
    whole window (the code before) gave 250/s after half a second (cap 1,250); per busy second it gives 1,000/s
    (cap 5,000), the node's real throughput."""
    rate = FinishRate()
    assert rate.per_s(500.0, busy=True) == 0.0  # the storm's first upgrade: nothing finished yet, the cap's floor
    for i in range(500):
        rate.add(500.0 + i / 1000)  # 1,000 a second during the first half second
    assert rate.per_s(500.499, busy=True) == 1000.0
    assert handshake_cap(rate.per_s(500.499, busy=True), 10.0, 512) == 5000


def test_a_starved_node_busy_all_window_stays_at_the_floor() -> None:
    rate = FinishRate()
    for i in range(100):
        rate.per_s(10.0 + i / 50, busy=True)  # handshakes in progress the whole time...
        rate.add(10.0 + i / 50)  # ...finishing 50 a second
    assert abs(rate.per_s(11.99, busy=True) - 50) <= 50 / 4 + 1
    assert handshake_cap(rate.per_s(11.99, busy=True), 10.0, 512) == 512


def test_the_cap_binds_while_the_loop_is_saturated_and_has_headroom_otherwise() -> None:
    assert handshake_cap(100.0, 10.0, 512, busy_share=SATURATED, headroom=4) == 512
    assert handshake_cap(100.0, 10.0, 512, busy_share=SATURATED - 0.01, headroom=4) == 2048
    assert handshake_cap(600.0, 10.0, 512, busy_share=0.1, headroom=4) == 12000
    assert handshake_cap(600.0, 10.0, 512, busy_share=0.1, headroom=1) == 3000


def test_the_loop_load_is_the_share_of_the_window_spent_working() -> None:
    load = LoopLoad()
    for i in range(200):  # 2 s of 10 ms batches, each 9 ms of work and 1 ms of waiting
        start = 100.0 + i * 0.010
        load.worked(start, start + 0.009)
    assert abs(load.share(102.0) - 0.9) < 0.05
    assert load.share(102.0) >= SATURATED
    assert load.share(110.0) == 0.0  # a quiet window later
    load.worked(110.0, 110.2)
    assert abs(load.share(110.2) - 0.2 / 1.7) < 1e-9  # three full slots and 0.2 s of this one
