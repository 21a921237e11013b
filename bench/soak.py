"""Soak: many call clients over a few real nodes for a long time, with node restarts; receipts must balance.

    python -m bench.soak --minutes 30 --clients 1000 --nodes 3        # writes bench/results/soak.md
    python -m bench.soak --minutes 2 --clients 200 --out /tmp/s.md    # the CI-sized run (tests/faults/test_soak.py)

The nodes are `homing node run` processes on 127.0.0.1 (preset `local`, fixed free ports so a restarted node
comes back at the same URL); the clients are one load-generator process (tests/faults/loadgen.py), which places
calls (offer, answer, hangup) between pairs homed on different nodes and books every receipt. Every
`--restart-every-s` one node other than node 1 is restarted, alternating SIGTERM (graceful leave: goaway) and
kill -9, then started again on the same ports. Node 1 is never restarted: its RSS over the whole run is the
memory-flatness witness. A restarted node's clients reconnect to another node; envelopes they had in flight
when their connection went can no longer get a receipt on it (`orphaned`: the client must resend) and are
reported apart. The run fails (exit 1) if any other envelope lacks its terminal receipt or has two.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "soak.md"
CONVERGE_S = 60.0
STOP_WAIT_S = 15.0


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


class SoakNode:
    def __init__(self, idx: int, work: Path, seeds: list[str], clients: int = 0) -> None:
        self.idx = idx
        self.dir = work / f"n{idx}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # every soak client connects from 127.0.0.1: lift the per-IP cap (default 256) above the client count
        per_ip = max(256, clients + 64)
        (self.dir / "homing-node.toml").write_text(
            f"[clients]\nconnections_per_ip_max = {per_ip}\nhandshakes_per_address_burst = {per_ip}\n"
        )
        self.ports = {
            "ws": free_port(socket.SOCK_STREAM),
            "swim": free_port(socket.SOCK_DGRAM),
            "peer": free_port(socket.SOCK_STREAM),
            "metrics": free_port(socket.SOCK_STREAM),
        }
        self.seeds = seeds
        self.log = (work / f"n{idx}.log").open("a")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['ws']}/v1/client"

    @property
    def swim(self) -> str:
        return f"127.0.0.1:{self.ports['swim']}"

    def start(self) -> None:
        args = [sys.executable, "-m", "node", "node", "run", "--data-dir", str(self.dir), "--preset", "local",
                "--open", "--log-level", "warning"]
        for flag in ("ws", "swim", "peer", "metrics"):
            args += [f"--{flag}", f"127.0.0.1:{self.ports[flag]}"]
        for seed in self.seeds:
            args += ["--join", seed]
        self.proc = subprocess.Popen(args, env=env(), cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def rss_mb(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def alive_members(self) -> int:
        try:
            url = f"http://127.0.0.1:{self.ports['metrics']}/v1/members"
            with urllib.request.urlopen(url, timeout=2) as resp:
                doc = json.loads(resp.read())
        except (OSError, ValueError):
            return -1
        return sum(1 for m in doc["members"] if m["state"] == "alive")


def wait_converged(nodes: list[SoakNode], timeout: float = CONVERGE_S) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(n.alive_members() == len(nodes) for n in nodes):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise RuntimeError(f"the {len(nodes)} nodes did not converge within {timeout} s")


def run_soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    nodes: list[SoakNode] = []
    load: subprocess.Popen[bytes] | None = None
    try:
        for i in range(1, args.nodes + 1):
            node = SoakNode(i, work, [n.swim for n in nodes[:1]], args.clients)
            nodes.append(node)
        for n in nodes:
            n.seeds = [m.swim for m in nodes if m is not n]
            n.start()
        wait_converged(nodes)
        out = work / "load.json"
        seconds = args.minutes * 60
        cmd = [sys.executable, "-m", "tests.faults.loadgen", "--out", str(out), "--pairs", str(args.clients // 2),
               "--seconds", str(seconds), "--interval-s", str(args.interval_s), "--ping-every-s", "15",
               "--ping-timeout-s", "10", "--call-timeout-s", "15", "--drain-s", "90", "--connect-s", "120",
               "--tick-s", "10", "--seed", str(args.seed)]
        for n in nodes:
            cmd += ["--url", n.url]
        load = subprocess.Popen(cmd, env=env(), cwd=REPO, stdout=(work / "loadgen.log").open("a"),
                                stderr=subprocess.STDOUT)
        rss, restarts = monitor(args, nodes, load, out, seconds)
        rc = load.wait(seconds + 300)
        if rc != 0:
            raise RuntimeError(f"the load generator failed ({rc}); see {work / 'loadgen.log'}")
        report: dict[str, Any] = json.loads(out.read_text())
        report["rss"] = rss
        report["restarts"] = restarts
        return report
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        for n in nodes:
            n.stop(signal.SIGKILL)


def monitor(
    args: argparse.Namespace, nodes: list[SoakNode], load: subprocess.Popen[bytes], out: Path, seconds: float
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Sample RSS every --sample-s and restart a node every --restart-every-s while the callers run."""
    progress = out.with_suffix(".progress")
    deadline = time.monotonic() + 180
    while not progress.exists():
        if load.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the load clients did not connect")
        time.sleep(0.5)
    t0 = time.monotonic()
    rss: list[list[Any]] = []
    restarts: list[list[Any]] = []
    next_sample, next_restart, k = t0, t0 + args.restart_every_s, 0
    while time.monotonic() - t0 < seconds:
        now = time.monotonic()
        if now >= next_sample:
            rss.append([round(now - t0), *[n.rss_mb() for n in nodes]])
            next_sample += args.sample_s
        if len(nodes) > 1 and now >= next_restart and now - t0 < seconds - args.restart_every_s / 2:
            victim = nodes[1 + k % (len(nodes) - 1)]
            sig = signal.SIGTERM if k % 2 == 0 else signal.SIGKILL
            victim.stop(sig)
            time.sleep(1.0)
            victim.start()
            victim.restarts += 1
            restarts.append([round(now - t0), victim.idx, sig.name])
            k += 1
            next_restart += args.restart_every_s
        time.sleep(0.5)
    rss.append([round(time.monotonic() - t0), *[n.rss_mb() for n in nodes]])
    return rss, restarts


def verdict(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["lost"]:
        problems.append(f"{report['lost']} envelopes without a terminal receipt")
    if report["duplicate_terminal"]:
        problems.append(f"{report['duplicate_terminal']} second terminal receipts")
    if report["sent"] != report["terminal_total"] + report["orphaned"]:
        problems.append("sent != terminal + orphaned")
    return problems


def render(args: argparse.Namespace, report: dict[str, Any], wall_s: float) -> str:
    cmd = f"python -m bench.soak --minutes {args.minutes:g} --clients {args.clients} --nodes {args.nodes}"
    cmd += f" --restart-every-s {args.restart_every_s:g} --interval-s {args.interval_s:g} --seed {args.seed}"
    lat = report["latency_ms"]
    restarts = ", ".join(f"{t} s n{i} {s}" for t, i, s in report["restarts"])
    calls = report["calls"]
    lines = [
        "# Soak run",
        "",
        f"`{cmd}` ({os.cpu_count()} CPUs, wall {wall_s / 60:.1f} min)",
        "",
        f"{args.clients} clients ({args.clients // 2} caller/callee pairs on different nodes) over {args.nodes} "
        f"`homing node run` processes on 127.0.0.1 (preset `local`, `[clients] connections_per_ip_max` raised above "
        f"the client count since every client comes from 127.0.0.1); each caller places a call (offer, answer, "
        f"hangup) every {args.interval_s:g} s on average for {args.minutes:g} minutes; a node other than node 1 is "
        f"restarted every {args.restart_every_s:g} s, alternating SIGTERM (graceful) and kill -9.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| envelopes sent | {report['sent']} |",
        f"| terminal receipts received | {report['terminal_total']} ({report['terminal']}) |",
        f"| orphaned (sender's own connection went with its node before the receipt) | {report['orphaned']} |",
        f"| lost (no terminal receipt) | {report['lost']} |",
        f"| second terminal receipts | {report['duplicate_terminal']} |",
        f"| `queued` receipts (not terminal) | {report['queued_receipts']} |",
        f"| calls started / completed / failed | {calls['started']} / {calls['completed']} / {calls['failed']} |",
        f"| send-to-`delivered`-receipt latency p50 / p99 / max ms | {lat['p50']} / {lat['p99']} / {lat['max']} |",
        f"| client reconnects | {report['reconnects']} |",
        f"| node restarts | {len(report['restarts'])} ({restarts}) |",
        "",
        f"Verdict: {'; '.join(verdict(report)) or 'sent = terminal + orphaned; nothing lost, nothing doubled'}.",
        "",
        "## RSS per node (MB) over time",
        "",
        "| t s | " + " | ".join(f"n{i + 1}" for i in range(args.nodes)) + " |",
        "|---|" + "---|" * args.nodes,
    ]
    for row in report["rss"]:
        cells = ["-" if v is None else f"{v:.0f}" for v in row[1:]]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + " |")
    first = next((r[1] for r in report["rss"] if r[0] >= 60 and r[1] is not None), None)
    last = report["rss"][-1][1]
    if first and last:
        lines += ["", f"Node 1 (never restarted) went from {first:.0f} MB at 1 min to {last:.0f} MB at the end."]
    lines += ["", "## Throughput (sent, terminal receipts, waiting)", "", "| t s | sent | terminal | waiting |"]
    lines.append("|---|---|---|---|")
    t_first = report["timeline"][0][0] if report["timeline"] else 0
    step = max(1, len(report["timeline"]) // 30)
    for row in report["timeline"][::step]:
        lines.append(f"| {row[0] - t_first:.0f} | {row[1]} | {row[2]} | {row[3]} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--interval-s", type=float, default=10.0, help="mean pause between one caller's calls")
    p.add_argument("--restart-every-s", type=float, default=300.0)
    p.add_argument("--sample-s", type=float, default=30.0, help="RSS sampling period")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, help="directory for node data and logs (default: a fresh temp dir)")
    p.add_argument("--out", type=Path, default=OUT, help=f"markdown report (default {OUT.relative_to(REPO)})")
    p.add_argument("--json", type=Path, help="also write the raw report as JSON here")
    args = p.parse_args(argv)
    if args.clients < 2 or args.nodes < 2:
        p.error("--clients and --nodes must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="homing-soak-") as tmp:
        work = args.work or Path(tmp)
        t0 = time.monotonic()
        report = run_soak(args, work)
        wall = time.monotonic() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, report, wall))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    problems = verdict(report)
    print(f"soak: sent {report['sent']} terminal {report['terminal_total']} orphaned {report['orphaned']} "
          f"lost {report['lost']} p99 {report['latency_ms']['p99']} ms -> {args.out}")
    for p in problems:
        print(f"soak: FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
