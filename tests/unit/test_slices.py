"""`widened_slice` (node/net/slicing.py): how long a connection may handle one read's frames before others run."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.net.slicing import SLICE_CROWDED_S, SLICE_WIDE_MAX_S, widened_slice

BASE = 0.001


def test_a_short_turn_keeps_the_base_slice() -> None:
    """In a flood turns are short: the flooder keeps its 1 ms slice, however close to crowded the turn was."""
    assert widened_slice(BASE, 0.0) == BASE
    assert widened_slice(BASE, 0.003) == BASE
    assert widened_slice(BASE, SLICE_CROWDED_S - 1e-6) == BASE


def test_a_crowded_turn_gives_half_its_length_up_to_the_cap() -> None:
    assert widened_slice(BASE, SLICE_CROWDED_S) == SLICE_CROWDED_S / 2
    assert widened_slice(BASE, 0.2) == 0.1  # a goaway storm's turn
    assert widened_slice(BASE, 10.0) == SLICE_WIDE_MAX_S


@given(base=st.floats(1e-9, 1.0), last_turn=st.floats(0.0, 100.0))
def test_the_slice_is_never_below_the_base_nor_above_the_larger_of_base_and_cap(base: float, last_turn: float) -> None:
    got = widened_slice(base, last_turn)
    assert base <= got <= max(base, SLICE_WIDE_MAX_S)
    assert got <= max(base, last_turn / 2)  # never longer than half the last turn: turns cannot feed on themselves
