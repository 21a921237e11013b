"""`homing node run` as a real process on 127.0.0.1, for tests that need process-level faults (kill -9, SIGTERM)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.protocol.identity import parse_id
from tests.helpers import homing_cmd, homing_env, wait_for_file


class NodeProcess:
    def __init__(self, tmp: Path, name: str, join: list[str], *extra: str, wait: bool = True) -> None:
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
            *extra,
        ]
        for seed in join:
            args += ["--join", seed]
        self.log = (tmp / f"{name}.log").open("w")
        self.proc = subprocess.Popen(homing_cmd(*args), env=homing_env(), stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.started()

    def started(self) -> None:
        """Wait (bounded) for the node's ports.json and read its id. The constructor does it unless `wait=False`,
        which lets a test start several nodes at once: each start takes about a second of imports on a slow host."""
        self.ports: dict[str, int] = wait_for_file(self.dir / "ports.json", timeout=20)
        self.id_text: str = self.members_doc()["self"]
        self.id = parse_id(self.id_text)
        self.url = f"ws://127.0.0.1:{self.ports['ws']}/v1/client"
        self.swim = f"127.0.0.1:{self.ports['swim']}"

    def members_doc(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/v1/members", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def gauge(self, name: str) -> float:
        """An unlabelled gauge from the node's /metrics (docs/operations.md, "Monitoring")."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/metrics", timeout=5) as resp:
            found = re.search(rf"^{re.escape(name)} (\S+)$", resp.read().decode(), re.MULTILINE)
        assert found, f"no {name} gauge"
        return float(found.group(1))

    def states(self) -> dict[str, str]:
        """member id text -> state, as this node sees the federation."""
        return {m["id"]: m["state"] for m in self.members_doc()["members"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `pred` (bounded) until it holds; OSError counts as not yet (a node may be restarting)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")
