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
