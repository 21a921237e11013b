"""Five honest `homing node run` processes and one hostile node process (node.py) on 127.0.0.1.

Honest clients connect with the real client library from 127.0.0.1; the hostile node's floods come from other
loopback addresses (127.0.0.2, 127.0.0.3), so per-address limits can tell them apart as they would on the
Internet. Everything the tests assert is observable from outside: receipts and deliveries at honest clients,
/v1/members of honest nodes, their resident memory (/proc).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from tests.adversarial.hostile.compat import (
    Deliver,
    Identity,
    Kind,
    Receipt,
    connect_client,
)
from tests.helpers import REPO, homing_env
from tests.integration.procs import NodeProcess, wait_for

HONEST = 5
FLOOD_SRC = "127.0.0.2"  # the hostile node's client and WHOIS floods
PEER_FLOOD_SRC = "127.0.0.3"  # its idle peer-port connections


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pids: list[int], *, busy_max: float = 0.3, window_s: float = 1.0, timeout_s: float = 60.0) -> float:
    """Wait until every process used under `busy_max` of a CPU over `window_s` (a flood sent is not a flood
    processed: frames may still sit in socket buffers). Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        before = [cpu_s(p) for p in pids]
        time.sleep(window_s)
        if all(cpu_s(p) - b < busy_max * window_s for p, b in zip(pids, before, strict=True)):
            break
    return time.monotonic() - t0


class HostileProcess:
    """The hostile node program; `start` sends a command, `result` waits for its report."""

    def __init__(self, tmp: Path, seed: str, preset: str = "local") -> None:
        self.log = (tmp / "hostile.log").open("w")
        cmd = [sys.executable, "-m", "tests.adversarial.hostile.node", str(tmp / "hostile"), seed, preset]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=homing_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self._done: dict[str, list[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._ready.get(timeout=30)
        self.id_text: str = ready["ready"]
        self.id = bytes.fromhex(ready["id"])
        self.ports: dict[str, int] = ready["ports"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "ready" in msg:
                self._ready.put(msg)
                continue
            with self._cond:
                self._done.setdefault(msg["done"], []).append(msg)
                self._cond.notify_all()

    def start(self, name: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        with self._send_lock:
            self.proc.stdin.write(json.dumps({"do": name, **args}) + "\n")
            self.proc.stdin.flush()

    def result(self, name: str, timeout: float) -> dict[str, Any]:
        """The report of the oldest unclaimed `name` command (thread-safe: the soak runs one thread per attack)."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._done.get(name)), timeout):
                raise TimeoutError(f"the hostile node did not finish `{name}` within {timeout} s")
            r = self._done[name].pop(0)
        assert "error" not in r, r
        return r

    def do(self, name: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        self.start(name, **args)
        return self.result(name, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Federation:
    def __init__(self, tmp: Path, honest: int = HONEST, *extra: str) -> None:
        self.tmp = tmp
        self.extra = extra
        self.nodes: list[NodeProcess] = []
        self.hostile: HostileProcess | None = None
        self.nodes.append(NodeProcess(tmp, "n0", [], *extra))
        self.nodes += [NodeProcess(tmp, f"n{i}", [self.nodes[0].swim], *extra) for i in range(1, honest)]
        self.hostile = HostileProcess(tmp, self.nodes[0].swim)
        everyone = {n.id_text for n in self.nodes} | {self.hostile.id_text}
        wait_for(
            lambda: all({k for k, s in n.states().items() if s == "alive"} == everyone for n in self.nodes),
            40,
            f"{honest} honest nodes and the hostile one to see each other alive",
        )

    def add_node(self, name: str) -> NodeProcess:
        node = NodeProcess(self.tmp, name, [self.nodes[0].swim], *self.extra)
        self.nodes.append(node)
        return node

    def honest_views(self) -> dict[str, dict[str, str]]:
        """honest node -> {honest member: its state there} for the honest members it does not list as alive
        (`missing` for one it does not list at all)."""
        running = [n for n in self.nodes if n.proc.poll() is None]
        honest = {n.id_text for n in running}
        views = {}
        for n in running:
            states = n.states()
            views[n.id_text] = {k: states.get(k, "missing") for k in sorted(honest) if states.get(k) != "alive"}
        return views

    def stop(self) -> None:
        if self.hostile is not None:
            self.hostile.stop()
        for n in self.nodes:
            n.stop()


@contextmanager
def federation(tmp: Path) -> Iterator[Federation]:
    fed: Federation | None = None
    try:
        fed = Federation(tmp)
        yield fed
    finally:
        if fed is not None:
            fed.stop()


async def call(
    url_from: str, caller: Identity, url_to: str, callee: Identity, *, timeout_s: float = 10, settle_s: float = 0.3
) -> list[str]:
    """`caller` (connected to url_from) sends a call_offer to `callee` (connected to url_to), `settle_s` after the
    callee connected: returns the receipt statuses for it, up to the terminal one, and checks that a `delivered`
    offer really reached the callee, from the caller. An online callee that its owners can find gets
    `["delivered"]`; `["queued", ...]` means the federation did not find it."""
    async with connect_client(url_to, callee) as cb, connect_client(url_from, caller) as ca:
        await trio.sleep(settle_s)  # the callee's lease reaches its owners
        body = b"honest-%d" % time.monotonic_ns()
        ref = await ca.send_envelope(Kind.CALL_OFFER, callee.id, b"c1", body)
        statuses: list[str] = []
        with trio.fail_after(timeout_s):
            while not statuses or statuses[-1] == "queued":
                msg = await ca.receive()
                if isinstance(msg, Receipt) and msg.ref == ref:
                    statuses.append(str(msg.status.value))
        if statuses[-1] == "delivered":
            with trio.fail_after(timeout_s):
                while True:
                    got = await cb.receive()
                    if isinstance(got, Deliver) and got.body == body:
                        assert got.sender == caller.id
                        break
        return statuses


async def receipt(url: str, caller: Identity, to: bytes, *, timeout_s: float = 10) -> str:
    """The first receipt status for an offer to `to` (queued for an offline id)."""
    async with connect_client(url, caller) as ca:
        ref = await ca.send_envelope(Kind.CALL_OFFER, to, b"c2", b"honest")
        with trio.fail_after(timeout_s):
            while True:
                msg = await ca.receive()
                if isinstance(msg, Receipt) and msg.ref == ref:
                    return str(msg.status.value)
