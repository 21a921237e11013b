"""Five real `homing node run` processes on 127.0.0.1: join, crash (kill -9), graceful leave (SIGTERM)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.procs import NodeProcess, wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    nodes: list[NodeProcess] = []
    try:
        nodes.append(NodeProcess(tmp_path, "n0", []))
        nodes += [NodeProcess(tmp_path, f"n{i}", [nodes[0].swim]) for i in range(1, 5)]
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.timeout(120)
def test_five_processes_converge_crash_and_leave(cluster: list[NodeProcess]) -> None:
    ids = {n.id_text for n in cluster}
    wait_for(
        lambda: all(n.states() == dict.fromkeys(ids, "alive") for n in cluster), 30, "5 nodes to see each other alive"
    )

    victim = cluster[4]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(5)
    wait_for(
        lambda: all(n.states().get(victim.id_text) == "dead" for n in cluster[:4]),
        30,
        "every live node to declare the killed node dead",
    )

    leaver = cluster[3]
    t0 = time.monotonic()
    leaver.proc.send_signal(signal.SIGTERM)
    assert leaver.proc.wait(10) == 0, "a SIGTERMed node exits 0 within 10 s"
    assert time.monotonic() - t0 < 10
    wait_for(
        lambda: all(n.states().get(leaver.id_text) == "left" for n in cluster[:3]),
        15,
        "every live node to see the leaver as left",
    )

    interrupted = cluster[2]  # Ctrl-C in a terminal: the same graceful leave
    interrupted.proc.send_signal(signal.SIGINT)
    assert interrupted.proc.wait(10) == 0
    wait_for(
        lambda: all(n.states().get(interrupted.id_text) == "left" for n in cluster[:2]),
        15,
        "SIGINT leads to a graceful leave too",
    )


LEAVE_SEEN_BOUND_S = 1.0  # docs/swim.md "Graceful leave": every observer sees `left` within 1 s of SIGTERM (N = 10)


def _leave_seen_s(leaver: NodeProcess, observers: list[NodeProcess]) -> list[float]:
    """SIGTERM `leaver`; seconds until each observer lists it `left` (polled; at most 10 s)."""
    seen: dict[str, float] = {}
    t0 = time.monotonic()
    leaver.proc.send_signal(signal.SIGTERM)
    while len(seen) < len(observers) and time.monotonic() - t0 < 10:
        for n in observers:
            if n.id_text not in seen and n.states().get(leaver.id_text) == "left":
                seen[n.id_text] = time.monotonic() - t0
    assert leaver.proc.wait(10) == 0
    return sorted(seen.values())


@pytest.mark.soak  # ten processes with LAN timings: outside the default suite; the simulator checks it too
@pytest.mark.timeout(240)
def test_graceful_leave_reaches_every_observer_within_a_second(tmp_path: Path) -> None:
    """#17: in the SWIM benchmark one leave took 9.34 s to reach every observer. As there: ten real processes with
    the LAN timings, one killed and declared dead first, then a SIGTERM; every other node must list the leaver
    `left` within LEAVE_SEEN_BOUND_S. Twice (the second leaver leaves a federation of eight)."""
    nodes: list[NodeProcess] = []
    try:
        nodes.append(NodeProcess(tmp_path, "n0", [], "--preset", "lan"))
        nodes += [NodeProcess(tmp_path, f"n{i}", [nodes[0].swim], "--preset", "lan") for i in range(1, 10)]
        ids = {n.id_text for n in nodes}
        wait_for(lambda: all(n.states() == dict.fromkeys(ids, "alive") for n in nodes), 60, "10 nodes to converge")
        victim = nodes[9]
        victim.proc.kill()
        victim.proc.wait(5)
        wait_for(lambda: all(n.states()[victim.id_text] == "dead" for n in nodes[:9]), 60, "the crash to be seen")
        for leaver in (nodes[5], nodes[6]):
            observers = [n for n in nodes[:9] if n.proc.poll() is None and n is not leaver]
            times = _leave_seen_s(leaver, observers)
            print(f"leave seen by {len(times)} of {len(observers)} observers; slowest {max(times, default=-1):.3f} s")
            assert len(times) == len(observers) and times[-1] <= LEAVE_SEEN_BOUND_S, times
    finally:
        for n in nodes:
            n.stop()
