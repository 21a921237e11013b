"""A lean event recorder for large simulations (SimCluster(record=False) plus a Tally).

`SimCluster(record=True)` keeps one `Change` per MemberChanged: at 10,000 nodes with 10 % loss that is about 10^8
objects per simulated minute (every suspicion and refutation is seen by every node). A Tally keeps only what the
bench reports: the distinct (member, incarnation) pairs falsely suspected or declared dead, the first DEAD of each
watched (crashed) member at each observer, and counters.
"""

from __future__ import annotations

from node.protocol.swim.messages import MemberChanged, MemberState
from node.testing.simcluster import SimCluster

SUSPECT, DEAD = MemberState.SUSPECT, MemberState.DEAD


class Tally:
    __slots__ = ("_cluster", "false_deaths", "false_suspicions", "first_dead", "first_suspect", "since", "transitions")

    def __init__(self, cluster: SimCluster, *, since: float = 0.0) -> None:
        self._cluster = cluster
        self.since = since
        self.false_suspicions: set[tuple[bytes, int]] = set()  # (member, incarnation) suspected while running
        self.false_deaths: set[tuple[bytes, int]] = set()  # (member, incarnation) declared dead while running
        self.first_dead: dict[tuple[bytes, bytes], float] = {}  # (observer, crashed member) -> time of first DEAD
        self.first_suspect: dict[bytes, float] = {}  # crashed member -> time of its first SUSPECT anywhere
        self.transitions = 0
        cluster.net.on_change.append(self._on_change)

    def _on_change(self, t: float, observer: bytes, ch: MemberChanged) -> None:
        self.transitions += 1
        state = ch.member.state
        if t < self.since or (state is not SUSPECT and state is not DEAD):
            return
        c = self._cluster
        member = ch.member.id
        gone_at = c.crashed.get(member, c.left.get(member))
        if gone_at is None or t < gone_at:
            (self.false_suspicions if state is SUSPECT else self.false_deaths).add((member, ch.member.incarnation))
        elif state is DEAD:
            self.first_dead.setdefault((observer, member), t - gone_at)
        else:
            self.first_suspect.setdefault(member, t - gone_at)

    def detection_times(self) -> list[float]:
        """Seconds from each crash to each running observer's first DEAD for it, sorted."""
        live = set(self._cluster.running())
        return sorted(dt for (observer, _m), dt in self.first_dead.items() if observer in live)
