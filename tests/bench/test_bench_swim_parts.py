"""The pure parts of bench/swim: reading homing and Serf log lines, medians, the verdict."""

from __future__ import annotations

from typing import Any

from bench.swim_agents import Homing, Serf
from bench.swim_report import derive, render, verdict


def test_homing_log_lines() -> None:
    h = Homing()
    base = "ts=2026-01-02T03:04:05.678Z level=info component=node"
    assert h.parse(f"{base} event=started node=F9Tl-OPC ws=0 swim=20000", "a0") == ("ready", "F9Tl-OPC")
    for state in ("alive", "suspect", "dead", "left"):
        line = f"{base} event=member_{state} node=F9Tl-OPC member=yAt5XnCD inc=0 previous=none"
        assert h.parse(line, "a0") == (state, "yAt5XnCD")
    assert h.parse(f"{base} event=peer_link_up node=F9Tl-OPC member=yAt5XnCD", "a0") is None
    assert h.parse("homing node id=F9Tl-OPCEm ws=0 swim=20000", "a0") is None


def test_serf_log_lines() -> None:
    s = Serf()
    pre = "    2026/11/22 00:21:58 [INFO] "
    assert s.parse(pre + "serf: EventMemberJoin: a1 127.0.0.1", "a1") == ("ready", "a1")
    assert s.parse(pre + "serf: EventMemberJoin: a2 127.0.0.1", "a1") == ("alive", "a2")
    assert s.parse(pre + "memberlist: Suspect a2 has failed, no acks received", "a1") == ("suspect", "a2")
    assert s.parse(pre + "serf: EventMemberFailed: a2 127.0.0.1", "a1") == ("dead", "a2")
    assert s.parse(pre + "serf: EventMemberLeave: a2 127.0.0.1", "a1") == ("left", "a2")
    assert s.parse(pre + "agent: Received event: member-join", "a1") is None


def run(system: str, n: int, dead: float, udp: float, tcp: float = 0.0) -> dict[str, Any]:
    return {
        "system": system,
        "n": n,
        "dead_all_s": dead,
        "suspect_first_s": 1.0,
        "udp_bytes_per_node_s": udp,
        "udp_packets_per_node_s": 2.0,
        "tcp_bytes_per_node_s": tcp,
    }


def test_derived_figures() -> None:
    d = derive(run("homing", 10, 5.0, 212.0, 30.0))
    assert d["udp_bytes_per_packet"] == 106.0 and d["total_bytes_per_node_s"] == 242.0


def test_verdict_uses_medians_and_says_by_how_much() -> None:
    results = [run("homing", 10, t, 300.0) for t in (5.0, 6.0, 60.0)] + [run("serf", 10, t, 270.0) for t in (6.5, 7.0)]
    lines = verdict(results, [10])
    crash = next(line for line in lines if "crash detected" in line)
    assert "homing 6.00 s vs Serf 6.75 s" in crash and "**meets**" in crash
    total = next(line for line in lines if "UDP+TCP" in line)
    assert "**does not meet** (+30.00 B/s)" in total


def test_failed_runs_are_listed_and_not_counted() -> None:
    results = [run("homing", 3, 5.0, 200.0), {"system": "homing", "n": 3, "rep": 2, "error": "exit 1: boom"}]
    text = render(
        results,
        systems=["homing"],
        ns=[3],
        command="python -m bench.swim --n 3",
        date="d",
        environment={"cpus": 2},
        notes=[],
    )
    assert "| runs completed | 1 |" in text
    assert "homing N=3 run 2: exit 1: boom" in text
    assert "not compared (no figure for Serf)" in text
