from __future__ import annotations

import pytest

from node.protocol.swim.awareness import Awareness


def test_score_is_clamped_and_scales() -> None:
    a = Awareness(8)
    assert a.apply(-1) == 0
    assert a.scale(0.5) == 0.5
    assert a.apply(3) == 3
    assert a.scale(0.5) == pytest.approx(2.0)
    assert a.apply(100) == 7
    assert a.scale(1.0) == 8.0
    assert a.apply(-2) == 5


@pytest.mark.parametrize(("deltas", "score"), [([1, 1, -1], 1), ([3, -5], 0), ([9], 3), ([2, 2, -1, 1], 3)])
def test_sequences(deltas: list[int], score: int) -> None:
    a = Awareness(4)
    for d in deltas:
        a.apply(d)
    assert a.score == score


def test_disabled_never_moves() -> None:
    a = Awareness(8, enabled=False)
    assert a.apply(5) == 0
    assert a.scale(1.0) == 1.0
