"""Lifeguard local health awareness.

A node that cannot get acks back in time may be the slow one (CPU-starved, overloaded link). Its health score
(0 = healthy .. max_multiplier - 1) rises on evidence that it is itself unhealthy: a failed probe (by the number of
nacks it expected but did not get from the members it asked, or by 1 when it could ask no one), and having to
refute a suspicion about itself. A successful probe lowers it by one. Probe interval and probe timeout are scaled
by (score + 1), so an unhealthy node probes slower and waits longer before it accuses anyone.
"""

from __future__ import annotations


class Awareness:
    __slots__ = ("enabled", "max_multiplier", "score")

    def __init__(self, max_multiplier: int, *, enabled: bool = True) -> None:
        self.max_multiplier = max_multiplier
        self.enabled = enabled
        self.score = 0

    def apply(self, delta: int) -> int:
        """Add `delta`, clamped to 0..max_multiplier-1; returns the new score (always 0 when disabled)."""
        if self.enabled:
            self.score = max(0, min(self.max_multiplier - 1, self.score + delta))
        return self.score

    def scale(self, seconds: float) -> float:
        return seconds * (self.score + 1)
