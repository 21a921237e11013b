"""A new operator's first federation: a registry (auto approval), then two nodes started 1 s apart with only
`--bootstrap` and `--trust`. The first node's list holds only itself when it starts; it must refresh the list when
the newcomer knocks (service.py `_follow_registries`), not a heartbeat (60 s) later. And with manual approval, two
nodes that waited a while for the admin see each other within 5 s of the approval. Real processes, issue #17."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fixtures.dns import free_port
from tests.helpers import homing_cmd, homing_env, refused_by_reason
from tests.integration.procs import wait_for
from tests.ops.test_registration_state import approve

TRIALS = 2


def start_registry(tmp: Path, approval: str = "auto") -> tuple[subprocess.Popen[bytes], str, str]:
    data = tmp / "registry"
    out = subprocess.run(homing_cmd("bootstrap", "init", "--data-dir", str(data)), env=homing_env(),
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    key = out.stdout.strip().rsplit(" ", 1)[-1]
    port = free_port()
    log = (tmp / "registry.log").open("w")
    args = ["bootstrap", "run", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--approval", approval]
    proc = subprocess.Popen(homing_cmd(*args), env=homing_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, 20, "the registry")
    return proc, url, key


class RegistryNode:
    """`homing node run --bootstrap URL --trust KEY` on loopback ports the kernel picks (nothing else).

    Port 0 and the node's ports.json, not ports picked beforehand: a picked port can be taken before the node binds
    it (CI once lost a trial to "Address already in use" on the metrics port)."""

    def __init__(self, tmp: Path, name: str, url: str, key: str) -> None:
        self.data = tmp / name
        listen = [a for f in ("ws", "swim", "peer", "metrics") for a in (f"--{f}", "127.0.0.1:0")]
        # --trust=KEY: a key may start with "-"
        args = ["node", "run", "--data-dir", str(self.data), "--bootstrap", url, f"--trust={key}", *listen]
        self.log = (tmp / f"{name}.log").open("w")
        self.proc = subprocess.Popen(homing_cmd(*args), env=homing_env(), stdout=self.log, stderr=subprocess.STDOUT)

    def _get(self, path: str) -> bytes:
        """GET `path` from the node's metrics port (OSError until it serves)."""
        import urllib.request

        metrics = json.loads((self.data / "ports.json").read_text())["metrics"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}{path}", timeout=2) as resp:
            body: bytes = resp.read()
            return body

    def alive(self) -> set[str]:
        if self.proc.poll() is not None:
            raise AssertionError(f"the node exited with {self.proc.returncode}: see {self.log.name}")
        return {m["id"] for m in self.members()["members"] if m["state"] == "alive"}

    def metrics_text(self) -> str:
        return self._get("/metrics").decode()

    def members(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self._get("/v1/members"))
        return doc

    def own_id(self) -> str:
        return str(self.members()["self"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@contextmanager
def federation(tmp: Path, approval: str) -> Iterator[Callable[[str], RegistryNode]]:
    """A registry, and a function that starts a node named `name` with only `--bootstrap` and `--trust` and waits
    until it serves; every node and the registry are stopped at the end."""
    registry, url, key = start_registry(tmp, approval)
    nodes: list[RegistryNode] = []

    def start(name: str) -> RegistryNode:
        node = RegistryNode(tmp, name, url, key)
        nodes.append(node)
        wait_for(lambda: len(node.alive()) >= 1, 20, f"node {name} serving")
        return node

    try:
        yield start
    finally:
        for n in nodes:
            n.stop()
        registry.kill()
        registry.wait(10)


def joined(*nodes: RegistryNode) -> Callable[[], bool]:
    """Each of `nodes` sees all of them alive."""
    return lambda: all(len(n.alive()) == len(nodes) for n in nodes)


def test_two_nodes_started_a_second_apart_see_each_other_within_5_s(tmp_path: Path) -> None:
    for trial in range(TRIALS):  # a fresh registry per trial: the last trial's nodes would still be listed
        tmp = tmp_path / f"t{trial}"
        tmp.mkdir()
        with federation(tmp, "auto") as start:
            a = start("a")
            time.sleep(1.0)
            b = start("b")
            # both see both alive within 5 s of the newcomer serving
            wait_for(joined(a, b), 5, f"trial {trial}: a and b joined")


def test_nodes_the_admin_approves_after_a_wait_see_each_other_within_5_s_of_the_approval(tmp_path: Path) -> None:
    """Rules 3 and 4 of node/app/listrefresh.py. Before them a node whose reads found an empty list slept 1, 2, 4,
    8, 16 s between reads, deaf to knocks: approved 9 s after starting, the two met only at the 15 s read."""
    with federation(tmp_path, "manual") as start:
        started = time.monotonic()
        a, b = start("a"), start("b")
        ids = [a.own_id(), b.own_id()]
        time.sleep(max(0.0, started + 9.0 - time.monotonic()))  # the admin takes a while
        for node_id in ids:
            approve(tmp_path / "registry", node_id)
        wait_for(joined(a, b), 5, "a and b joined after the approval")


def test_a_newcomer_approved_just_after_it_knocked_joins_within_5_s(tmp_path: Path) -> None:
    """A member re-reads the list on a stranger's knock at most once per interval. The newcomer, pending, keeps
    knocking (rule 4 retries its join while alone); approved right after one of its knocks, its next knocks fall
    within the member's interval. They must not be dropped: the member re-reads at the interval's end (rule 2),
    and the newcomer retries from 1 s again once what it admits changed (rule 4)."""
    with federation(tmp_path, "manual") as start:
        m = start("m")
        approve(tmp_path / "registry", m.own_id())
        n = start("n")

        def knocks() -> float:
            return sum(v for layer in ("swim", "peer") for r, v in refused_by_reason(m.metrics_text(), layer).items()
                       if r == "unadmitted")  # fmt: skip

        # the newcomer's join attempts while pending are refused: wait for the first, then approve at once
        wait_for(lambda: knocks() >= 1, 20, "the pending newcomer knocking")
        approve(tmp_path / "registry", n.own_id())
        # The target is 5 s. Approved right after a knock, the newcomer joined 4.78-4.88 s later with knocks inside
        # the member's interval dropped (4 runs) and 1.64-1.75 s later with them deferred (7 runs, 3 of them with a
        # core kept busy): 3.5 s tells the two apart.
        wait_for(joined(m, n), 3.5, "the newcomer joined after its approval")


def test_a_lone_node_reports_its_approval_within_seconds(tmp_path: Path) -> None:
    """The first node of a federation has no member to join, so only its registration heartbeat (60 s) used to
    bring the registry's `approved` to `homing node status` and the log. A pending node now registers again as soon
    as it finds itself on the list (node/app/registry.py `wait`), which it re-reads every 2 s."""
    with federation(tmp_path, "manual") as start:
        a = start("a")

        def state() -> str:
            (reg,) = a.members()["registrations"]
            return str(reg["state"])

        wait_for(lambda: state() == "pending", 20, "the node registered, pending")
        approve(tmp_path / "registry", a.own_id())
        wait_for(lambda: state() == "approved", 5, "node status says approved")
