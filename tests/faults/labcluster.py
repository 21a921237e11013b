"""Real `homing node run` processes, one per lab host, and the load generator on a host of its own.

Each node listens on its host's lab address (ws :7400, SWIM :7401, peer :7402) and serves metrics on the
host's own 127.0.0.1:7403, which the test reads with `ip netns exec` (nothing in the root namespace can reach
the lab). Node 1 is the seed; every other node joins through it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.faults.netns import Lab, wait_until
from tests.helpers import homing_cmd

WS_PORT, SWIM_PORT, PEER_PORT, METRICS_PORT = 7400, 7401, 7402, 7403


class LabCluster:
    def __init__(self, lab: Lab, tmp: Path, nodes: int, *, preset: str, mailbox_ttl_s: float = 20.0) -> None:
        self.lab = lab
        self.tmp = tmp
        self.n = nodes
        self.preset = preset
        self.mailbox_ttl_s = mailbox_ttl_s
        self.procs: dict[int, subprocess.Popen[Any]] = {}
        self.ids: dict[int, str] = {}
        self.member_log: list[tuple[float, int, dict[str, tuple[str, int]]]] = []

    # --- nodes ---------------------------------------------------------------------------------------------
    def url(self, i: int) -> str:
        return f"ws://{self.lab.addr(i)}:{WS_PORT}/v1/client"

    def start(self, i: int) -> None:
        data = self.tmp / f"n{i}"
        data.mkdir(parents=True, exist_ok=True)
        (data / "homing-node.toml").write_text(f"[relay]\nmailbox_ttl = {self.mailbox_ttl_s}\n")
        a = self.lab.addr(i)
        args = ["node", "run", "--data-dir", str(data), "--preset", self.preset, "--open", "--log-level", "info",
                "--ws", f"{a}:{WS_PORT}", "--swim", f"{a}:{SWIM_PORT}", "--peer", f"{a}:{PEER_PORT}",
                "--metrics", f"127.0.0.1:{METRICS_PORT}"]
        if i != 1:
            args += ["--join", f"{self.lab.addr(1)}:{SWIM_PORT}"]
        log = (self.tmp / f"n{i}.log").open("a")
        self.procs[i] = self.lab.spawn(i, homing_cmd(*args), log)

    def start_all(self, timeout: float = 60.0) -> None:
        for i in range(1, self.n + 1):
            self.start(i)
        wait_until(lambda: all(self.members(i) is not None for i in self.procs), 30, "every node's metrics endpoint")
        for i in self.procs:
            doc = self.members_doc(i)
            assert doc is not None
            self.ids[i] = doc["self"]
        self.wait_converged(timeout, "the federation to form")

    def signal(self, i: int, sig: signal.Signals) -> None:
        self.procs[i].send_signal(sig)

    def kill9(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    # --- membership ----------------------------------------------------------------------------------------
    def members_doc(self, i: int) -> dict[str, Any] | None:
        raw = self.lab.http_get(i, f"http://127.0.0.1:{METRICS_PORT}/v1/members")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def members(self, i: int) -> dict[str, tuple[str, int]] | None:
        """id -> (state, incarnation) as node i sees the federation; None when it does not answer."""
        doc = self.members_doc(i)
        if doc is None:
            return None
        view = {m["id"]: (m["state"], m["incarnation"]) for m in doc["members"]}
        self.member_log.append((time.monotonic(), i, view))
        return view

    def sees(self, i: int, states: dict[str, str]) -> bool:
        view = self.members(i)
        return view is not None and all(view.get(k, ("absent", 0))[0] == v for k, v in states.items())

    def all_alive(self, among: Sequence[int] | None = None) -> bool:
        nodes = list(among or self.procs)
        want = {self.ids[j]: "alive" for j in nodes}
        return all(self.sees(i, want) for i in nodes)

    def wait_converged(self, timeout: float, what: str, among: Sequence[int] | None = None) -> None:
        wait_until(lambda: self.all_alive(among), timeout, what, step=0.5)

    def dead_sightings(self) -> list[tuple[float, int, str]]:
        """Every (time, observer, member id) where a member was seen dead or left in the member log."""
        return [
            (t, obs, mid) for t, obs, view in self.member_log for mid, (st, _) in view.items() if st in ("dead", "left")
        ]

    # --- load ----------------------------------------------------------------------------------------------
    def start_load(self, host: int, out: Path, urls: Sequence[str], **opts: Any) -> subprocess.Popen[Any]:
        argv = [sys.executable, "-m", "tests.faults.loadgen", "--out", str(out)]
        for u in urls:
            argv += ["--url", u]
        for k, v in opts.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        log = (self.tmp / "loadgen.log").open("a")
        return self.lab.spawn(host, argv, log)

    def start_delayers(self, hosts: Sequence[int], delay_ms: float, seconds: float) -> None:
        for i in hosts:
            argv = [sys.executable, "-m", "tests.faults.delayer", "--queue", "0", "--delay-ms", str(delay_ms),
                    "--seconds", str(seconds)]
            self.lab.spawn(i, argv, (self.tmp / f"delayer{i}.log").open("a"))


def wait_report(proc: subprocess.Popen[Any], out: Path, timeout: float) -> dict[str, Any]:
    """The load generator's JSON report, once it exits (bounded)."""
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the load generator did not finish within {timeout} s") from exc
    assert rc == 0, f"the load generator failed ({rc}); see loadgen.log next to {out}"
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def wait_loaded(out: Path, timeout: float = 60.0) -> None:
    """Until every load client has connected once."""
    wait_until(lambda: out.with_suffix(".progress").exists(), timeout, "the load clients to connect")
