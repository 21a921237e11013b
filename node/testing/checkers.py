"""Properties of a simulated cluster. Each checker returns a list of problems (empty = holds); `require`
turns problems into an AssertionError that names the seed and the command that reproduces the run."""

from __future__ import annotations

import math

from node.protocol.swim.config import SwimConfig
from node.protocol.swim.messages import MemberState
from node.testing.simcluster import Change, SimCluster

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT


def require(cluster: SimCluster, problems: list[str], what: str, *, show: int = 8) -> None:
    if problems:
        lines = "\n  ".join(problems[:show])
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise AssertionError(
            f"{what}: {len(problems)} problem(s) at t={cluster.now:.2f}\n  {lines}{more}\n"
            f"reproduce with: {cluster.repro()}"
        )


def short(member_id: bytes) -> str:
    return member_id[:4].hex()


def _state_at(cluster: SimCluster, observer: bytes, member: bytes) -> MemberState | None:
    info = cluster.swim(observer).member(member)
    return None if info is None else info.state


def converged(cluster: SimCluster) -> list[str]:
    """Every running node sees every running node (itself included) ALIVE."""
    problems = []
    live = cluster.running()
    for obs in live:
        for m in live:
            st = _state_at(cluster, obs, m)
            if st is not ALIVE:
                problems.append(f"{short(obs)} sees {short(m)} as {st.value if st else 'unknown'}")
    return problems


def all_in_state(cluster: SimCluster, members: list[bytes], states: tuple[MemberState, ...]) -> list[str]:
    """Every running node holds each of `members` in one of `states`."""
    problems = []
    for obs in cluster.running():
        for m in members:
            st = _state_at(cluster, obs, m)
            if st not in states:
                problems.append(f"{short(obs)} sees {short(m)} as {st.value if st else 'unknown'}")
    return problems


def detection_times(cluster: SimCluster, crashed: dict[bytes, float]) -> list[float]:
    """Seconds from each crash to each running observer's first DEAD for it (missing ones are not listed)."""
    live = set(cluster.running())
    first: dict[tuple[bytes, bytes], float] = {}
    for ch in cluster.changes:
        if ch.member in crashed and ch.observer in live and ch.state is DEAD and ch.t >= crashed[ch.member]:
            first.setdefault((ch.observer, ch.member), ch.t - crashed[ch.member])
    return sorted(first.values())


def false_deaths(cluster: SimCluster, *, since: float = 0.0) -> list[Change]:
    """DEAD declarations about nodes that had not crashed (or left) by then."""
    out = []
    for ch in cluster.changes:
        if ch.t < since or ch.state is not DEAD:
            continue
        crashed_at = cluster.crashed.get(ch.member)
        left_at = cluster.left.get(ch.member)
        if (crashed_at is None or ch.t < crashed_at) and (left_at is None or ch.t < left_at):
            out.append(ch)
    return out


def false_suspicions(cluster: SimCluster, *, since: float = 0.0) -> list[Change]:
    """SUSPECT transitions about nodes that had not crashed or left by then."""
    return [
        ch
        for ch in cluster.changes
        if ch.t >= since
        and ch.state is SUSPECT
        and (ch.member not in cluster.crashed or ch.t < cluster.crashed[ch.member])
        and (ch.member not in cluster.left or ch.t < cluster.left[ch.member])
    ]


def detection_bound_s(config: SwimConfig, n: int, *, slack_s: float = 0.0) -> float:
    """An upper bound on crash-to-DEAD at every observer, without loss (see docs/swim.md, "Detection bound").

    The round-robin ring makes sure some node probes the crashed one within about one probe period (a node's
    previous round may end just before the crash, and the new round probes it last: 2 rounds at worst, but with
    N probers the first probe comes much sooner; we take two periods). The probe takes one period, then the
    suspicion runs at most its maximum (no confirmations assumed), then the DEAD update spreads by gossip in
    about ceil(log(N)) gossip rounds, bounded here by the retransmit budget's duration.
    """
    period = config.probe_interval_s
    first_probe = 2 * period
    probe = period
    suspicion = config.suspicion_max_s(n) if config.lifeguard else config.suspicion_min_s(n)
    spread = config.retransmit_limit(n) * config.gossip_interval_s + math.log2(max(2, n)) * period
    return first_probe + probe + suspicion + spread + slack_s
