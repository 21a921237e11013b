"""Agent processes for `bench/swim.py`: how to start a homing node or a Serf agent, and how to read its log.

Each agent's stdout and stderr go to one pipe; a reader thread stamps every line with `time.monotonic()` on
arrival (Serf's log lines carry whole seconds only, so arrival time is the one clock both systems share) and
keeps the membership events it recognises, bounded in number. The raw lines go to a log file for post-mortems.

Events (kind, subject): ("ready", own id) when the agent runs; ("alive" | "suspect" | "dead" | "left", member id)
when this agent changes its view of a member. For homing, ids are the 8-character short ids of node/app/log.py
(`event=member_suspect node=<self> member=<peer>`); for Serf, node names (`serf: EventMemberJoin: a3 127.0.0.1`,
`memberlist: Suspect a3 has failed`, `serf: EventMemberFailed: a3`, `serf: EventMemberLeave: a3`).
Serf logs a suspicion only on the member whose probe failed; homing logs it on every member that learns it.
"first suspicion" is the earliest of them in both cases.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Protocol

import attrs

REPO = Path(__file__).resolve().parent.parent
EVENTS_PER_AGENT_MAX = 20_000
LINE_BYTES_MAX = 8192
POLL_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1

_HOMING_EVENT = re.compile(r"\bevent=(started|member_alive|member_suspect|member_dead|member_left)\b")
_HOMING_NODE = re.compile(r"\bnode=([A-Za-z0-9_-]+)")
_HOMING_MEMBER = re.compile(r"\bmember=([A-Za-z0-9_-]+)")
_SERF_PATTERNS = (
    (re.compile(r"serf: EventMemberJoin: (\S+)"), "alive"),
    (re.compile(r"memberlist: Suspect (\S+) has failed"), "suspect"),
    (re.compile(r"serf: EventMemberFailed: (\S+)"), "dead"),
    (re.compile(r"serf: EventMemberLeave: (\S+)"), "left"),
)


@attrs.frozen(kw_only=True, slots=True)
class Event:
    t: float
    kind: str
    subject: str


@attrs.frozen(kw_only=True, slots=True)
class Ports:
    gossip: int
    peer: int
    control: int
    ws: int
    # Each agent has its own loopback address (127.0.0.<i+1>), as nodes on their own hosts do: homing budgets seed
    # lookups per source address (docs/swim.md "Seed lookup"), and 30 agents sharing 127.0.0.1 throttled each
    # other's joins (half of them waited 3.2 s, the last 12 s, in a run where they shared it).
    host: str = "127.0.0.1"


class System(Protocol):
    name: str
    leave_signal: int

    def command(self, name: str, ports: Ports, seed: int | None, data_dir: Path) -> list[str]: ...

    def parse(self, line: str, name: str) -> tuple[str, str] | None: ...

    def alive_count(self, ports: Ports) -> int: ...


class Homing:
    """`homing node run` with the lan preset (memberlist's LAN timings, node/protocol/swim/config.py)."""

    name: str = "homing"
    leave_signal: int = signal.SIGTERM

    def command(self, name: str, ports: Ports, seed: int | None, data_dir: Path) -> list[str]:
        cmd = [sys.executable, "-m", "node", "node", "run", "--data-dir", str(data_dir / name), "--preset", "lan"]
        h = ports.host
        cmd += ["--open", "--ws", f"{h}:{ports.ws}", "--swim", f"{h}:{ports.gossip}"]
        cmd += ["--peer", f"{h}:{ports.peer}", "--metrics", f"{h}:{ports.control}"]
        if seed is not None:
            cmd += ["--join", f"127.0.0.1:{seed}"]
        return cmd

    def parse(self, line: str, name: str) -> tuple[str, str] | None:
        m = _HOMING_EVENT.search(line)
        if m is None:
            return None
        if m.group(1) == "started":
            node = _HOMING_NODE.search(line)
            return ("ready", node.group(1)) if node else None
        member = _HOMING_MEMBER.search(line)
        return (m.group(1).removeprefix("member_"), member.group(1)) if member else None

    def alive_count(self, ports: Ports) -> int:
        url = f"http://{ports.host}:{ports.control}/v1/members"
        with urllib.request.urlopen(url, timeout=POLL_TIMEOUT_S) as resp:
            doc = json.loads(resp.read(1 << 20))
        return sum(1 for m in doc["members"] if m["state"] == "alive")


class Serf:
    """`serf agent` with its default lan profile (memberlist.DefaultLANConfig)."""

    name: str = "serf"
    leave_signal: int = signal.SIGINT  # Serf's graceful leave (SIGTERM only leaves with leave_on_terminate)

    def __init__(self, binary: str = "serf") -> None:
        self.binary = binary

    def command(self, name: str, ports: Ports, seed: int | None, data_dir: Path) -> list[str]:
        cmd = [self.binary, "agent", "-node", name, "-bind", f"{ports.host}:{ports.gossip}"]
        cmd += ["-rpc-addr", f"{ports.host}:{ports.control}", "-log-level=info", "-profile=lan"]
        if seed is not None:
            cmd += ["-join", f"127.0.0.1:{seed}"]
        return cmd

    def parse(self, line: str, name: str) -> tuple[str, str] | None:
        for pattern, kind in _SERF_PATTERNS:
            m = pattern.search(line)
            if m:
                subject = m.group(1)
                return ("ready", subject) if kind == "alive" and subject == name else (kind, subject)
        return None

    def alive_count(self, ports: Ports) -> int:
        res = subprocess.run(
            [self.binary, "members", f"-rpc-addr={ports.host}:{ports.control}", "-status=alive"],
            capture_output=True,
            text=True,
            timeout=POLL_TIMEOUT_S,
            check=True,
        )
        return sum(1 for line in res.stdout.splitlines() if line.strip())


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the bench process dies, so no agent outlives a crashed run."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Agent:
    """One running agent process with a thread that turns its output into timed events."""

    def __init__(self, system: System, name: str, ports: Ports, seed: int | None, work: Path, env: dict[str, str]):
        self.system = system
        self.name = name
        self.ports = ports
        self.ident: str | None = name if system.name == "serf" else None
        self.events: list[Event] = []
        self.first_line_t: float | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._log: IO[str] = (work / f"{name}.log").open("w")
        self.spawn_t = time.monotonic()
        self.proc = subprocess.Popen(
            system.command(name, ports, seed, work),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            text=True,
            errors="replace",
            preexec_fn=_die_with_parent,
        )
        self._thread = threading.Thread(target=self._read, name=f"reader-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            t = time.monotonic()
            line = raw[:LINE_BYTES_MAX]
            self._log.write(line)
            parsed = self.system.parse(line, self.name)
            with self._lock:
                if self.first_line_t is None:
                    self.first_line_t = t
                if parsed is None or len(self.events) >= EVENTS_PER_AGENT_MAX:
                    continue
                kind, subject = parsed
                if kind == "ready":
                    self.ident = subject
                    self._ready.set()
                self.events.append(Event(t=t, kind=kind, subject=subject))
        self._ready.set()  # the process ended: stop anyone waiting for it

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s) and self.proc.poll() is None and self.ident is not None

    def first(self, kinds: tuple[str, ...], subject: str, since: float) -> Event | None:
        """The first event of one of `kinds` about `subject` at or after `since`."""
        with self._lock:
            for ev in self.events:
                if ev.t >= since and ev.kind in kinds and ev.subject == subject:
                    return ev
        return None

    def known_alive(self) -> dict[str, float]:
        """subject -> first time this agent reported it alive (joined)."""
        out: dict[str, float] = {}
        with self._lock:
            for ev in self.events:
                if ev.kind == "alive" and ev.subject not in out:
                    out[ev.subject] = ev.t
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(POLL_TIMEOUT_S)
        self._thread.join(POLL_TIMEOUT_S)
        self._log.close()

    def tail(self, lines: int = 5) -> str:
        try:
            return "".join((Path(self._log.name)).read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""
