"""A throw-away lab of Linux network namespaces: hosts on one bridge, with nftables faults (docs/reliability.md).

    with Lab(hosts=6) as lab:             # namespaces <tag>s (the switch) and <tag>h1..h6, a random 10.2xx.y.0/24
        lab.addr(1)                       # "10.213.7.1", exists only inside the lab
        proc = lab.spawn(1, [...], log)   # a process inside host 1 (killed at exit)
        lab.partition([1, 2], [3, 4, 5])  # bridge rules in the switch; lab.heal() removes them
        lab.loss(10); lab.delay(50)       # on every host's output to the lab subnet
        lab.cut(3); lab.uncut(3)          # the host's switch port down/up

Rules: names are unique per run (pid and a counter), so several runs can share a machine; every address is in
the lab's own /24 and exists only inside its namespaces (no default route, nothing can leave); `close()` kills
every process it started and deletes every namespace, and runs even when a test fails or times out.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any

from tests.helpers import REPO, homing_env

_counter = itertools.count()
CMD_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0


def missing_tools() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces and nftables"
    for tool in ("ip", "nft", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, nftables, iptables)"
    return None


def run(*argv: str, check: bool = True, timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class Lab:
    def __init__(self, hosts: int, *, seed: int | None = None) -> None:
        if not 1 <= hosts <= 50:
            raise ValueError("hosts must be 1..50")
        self.hosts = hosts
        self.tag = f"hm{os.getpid() % 100000}x{next(_counter)}"
        rng = random.Random(seed)
        self.subnet = f"10.{rng.randint(200, 250)}.{rng.randint(0, 255)}"
        self.procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []

    # --- names ---------------------------------------------------------------------------------------------
    @property
    def switch(self) -> str:
        return f"{self.tag}s"

    def ns(self, i: int) -> str:
        return f"{self.tag}h{i}"

    def addr(self, i: int) -> str:
        return f"{self.subnet}.{i}"

    def port(self, i: int) -> str:
        return f"p{i}"

    # --- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def build(self) -> None:
        sw = self.switch
        self._add_ns(sw)
        run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", sw, "link", "set", "br0", "up")
        for i in range(1, self.hosts + 1):
            h = self.ns(i)
            self._add_ns(h)
            run("ip", "link", "add", "eth0", "netns", h, "type", "veth", "peer", "name", self.port(i), "netns", sw)
            run("ip", "-n", sw, "link", "set", self.port(i), "master", "br0")
            run("ip", "-n", sw, "link", "set", self.port(i), "up")
            run("ip", "-n", h, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            run("ip", "-n", h, "link", "set", "eth0", "up")

    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        for proc in self.procs:
            _kill_group(proc)
        for name in reversed(self._created):
            run("ip", "netns", "del", name, check=False)
        self._created.clear()

    # --- processes -----------------------------------------------------------------------------------------
    def exec_argv(self, i: int, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def spawn(self, i: int, argv: Sequence[str], log: IO[Any] | None = None) -> subprocess.Popen[Any]:
        """Start `argv` inside host i in its own process group (so a kill reaches its children)."""
        proc = subprocess.Popen(
            self.exec_argv(i, argv),
            env=homing_env(),
            cwd=REPO,
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def python(self, i: int, code: str, timeout: float = CMD_TIMEOUT_S) -> str:
        res = run(*self.exec_argv(i, [sys.executable, "-c", code]), timeout=timeout)
        return res.stdout

    def http_get(self, i: int, url: str, timeout: float = 3.0) -> bytes | None:
        """GET from inside host i (for listeners on the host's own 127.0.0.1); None when it does not answer."""
        if shutil.which("curl"):
            argv = ["curl", "-s", "-f", "-m", str(timeout), url]
        else:
            code = (
                "import sys, urllib.request; "
                f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode())"
            )
            argv = [sys.executable, "-c", code]
        try:
            res = subprocess.run(self.exec_argv(i, argv), capture_output=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return None
        return res.stdout if res.returncode == 0 else None

    # --- faults --------------------------------------------------------------------------------------------
    def partition(self, *groups: Sequence[int]) -> None:
        """Drop every frame the switch forwards between hosts of different groups (both ways)."""
        self.heal()
        nft = ["ip", "netns", "exec", self.switch, "nft"]
        run(*nft, "add", "table", "bridge", "part")
        run(*nft, "add", "chain", "bridge", "part", "fwd_c", "{ type filter hook forward priority 0; policy accept; }")
        for a, b in itertools.permutations(range(len(groups)), 2):
            src = ", ".join(f'"{self.port(i)}"' for i in groups[a])
            dst = ", ".join(f'"{self.port(i)}"' for i in groups[b])
            run(*nft, "add", "rule", "bridge", "part", "fwd_c", "iifname", f"{{ {src} }}", "oifname", f"{{ {dst} }}",
                "counter", "drop")

    def heal(self) -> None:
        run("ip", "netns", "exec", self.switch, "nft", "delete", "table", "bridge", "part", check=False)

    def cut(self, i: int) -> None:
        run("ip", "-n", self.switch, "link", "set", self.port(i), "down")

    def uncut(self, i: int) -> None:
        run("ip", "-n", self.switch, "link", "set", self.port(i), "up")

    def faults(self, hosts: Sequence[int], *, loss_pct: int = 0, queue: int | None = None) -> None:
        """On each host's output to the lab subnet: drop loss_pct % at random, then hand the rest to NFQUEUE
        `queue` (the delayer; `bypass`: packets pass undelayed when no program listens)."""
        for i in hosts:
            nft = ["ip", "netns", "exec", self.ns(i), "nft"]
            run(*nft, "delete", "table", "inet", "fault", check=False)
            run(*nft, "add", "table", "inet", "fault")
            run(*nft, "add", "chain", "inet", "fault", "out", "{ type filter hook output priority -10; }")
            match = ["ip", "daddr", f"{self.subnet}.0/24"]
            if loss_pct:
                run(*nft, "add", "rule", "inet", "fault", "out", *match, "numgen", "random", "mod", "100", "<",
                    str(loss_pct), "counter", "drop")
            ipt = ["ip", "netns", "exec", self.ns(i), "iptables"]
            run(*ipt, "-F", "OUTPUT")
            if queue is not None:  # nft's own `queue` needs nft_queue, which this kernel lacks; xt_NFQUEUE works
                run(*ipt, "-A", "OUTPUT", "-d", f"{self.subnet}.0/24", "-j", "NFQUEUE", "--queue-num", str(queue),
                    "--queue-bypass")

    def clear_faults(self, hosts: Sequence[int]) -> None:
        for i in hosts:
            run("ip", "netns", "exec", self.ns(i), "nft", "delete", "table", "inet", "fault", check=False)
            run("ip", "netns", "exec", self.ns(i), "iptables", "-F", "OUTPUT", check=False)

    def fault_counters(self, i: int) -> str:
        return run("ip", "netns", "exec", self.ns(i), "nft", "list", "ruleset", check=False).stdout


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_until(pred: Any, timeout: float, what: str, step: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
