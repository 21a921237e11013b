"""Five real `homing node run` processes on 127.0.0.1: join, crash (kill -9), graceful leave (SIGTERM)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import homing_cmd, homing_env, wait_for_file


def members(metrics_port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/v1/members", timeout=2) as resp:
        doc = json.loads(resp.read())
    return {m["id"]: m["state"] for m in doc["members"]}


def wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if pred():  # type: ignore[operator]
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


class Node:
    def __init__(self, tmp: Path, name: str, join: list[str]) -> None:
        self.dir = tmp / name
        args = [
            "node",
            "run",
            "--data-dir",
            str(self.dir),
            "--preset",
            "local",
            "--open",
            "--ws",
            "127.0.0.1:0",
            "--swim",
            "127.0.0.1:0",
            "--peer",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ]
        for seed in join:
            args += ["--join", seed]
        self.log = (tmp / f"{name}.log").open("w")
        self.proc = subprocess.Popen(homing_cmd(*args), env=homing_env(), stdout=self.log, stderr=subprocess.STDOUT)
        self.ports = wait_for_file(self.dir / "ports.json", timeout=20)
        self.id = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/v1/members", timeout=5).read()
        )["self"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    nodes: list[Node] = []
    try:
        nodes.append(Node(tmp_path, "n0", []))
        seed = f"127.0.0.1:{nodes[0].ports['swim']}"
        for i in range(1, 5):
            nodes.append(Node(tmp_path, f"n{i}", [seed]))
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.timeout(120)
def test_five_processes_converge_crash_and_leave(cluster: list[Node]) -> None:
    ids = {n.id for n in cluster}

    def all_alive() -> bool:
        return all(members(n.ports["metrics"]) == {i: "alive" for i in ids} for n in cluster)

    wait_for(all_alive, 30, "5 nodes to see each other alive")

    victim = cluster[4]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(5)
    wait_for(
        lambda: all(members(n.ports["metrics"]).get(victim.id) == "dead" for n in cluster[:4]),
        30,
        "every live node to declare the killed node dead",
    )

    leaver = cluster[3]
    t0 = time.monotonic()
    leaver.proc.send_signal(signal.SIGTERM)
    assert leaver.proc.wait(10) == 0, "a SIGTERMed node exits 0 within 10 s"
    assert time.monotonic() - t0 < 10
    wait_for(
        lambda: all(members(n.ports["metrics"]).get(leaver.id) == "left" for n in cluster[:3]),
        15,
        "every live node to see the leaver as left",
    )
