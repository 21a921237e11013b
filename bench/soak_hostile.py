"""Hostile soak (issue 11): five honest nodes, one hostile node doing every attack at once, 200 honest clients.

    python -m bench.soak_hostile --seconds 600                     # the bench run (docs/reliability.md)
    python -m bench.soak_hostile --seconds 40 --out /tmp/h.md      # the in-suite size (tests/adversarial/hostile)

The honest nodes are `homing node run` processes on 127.0.0.1 (bench/soak.py's SoakNode, per-IP caps raised for
the honest clients, which all come from 127.0.0.1); the hostile node is tests/adversarial/hostile/node.py, an
admitted member. The honest clients are tests/faults/loadgen.py (caller/callee pairs on different nodes, every
envelope booked until its terminal receipt). While they call, the hostile node repeats, each in its own loop:
forged envelopes, lease theft, lease floods, forged-claim floods (LEASE frames that would each cost an Ed25519
check), mailbox floods from fresh keys over many connections, pong and
fragment floods (all from 127.0.0.2), idle connections to every honest peer port (127.0.0.3), and, unless
`--skip` names them, SWIM eviction of one honest member and a WHOIS flood (both need signed SWIM membership
and per-source WHOIS budgets). The run passes when no honest envelope lacks a terminal receipt, no honest node
ever lists an honest member as dead, and no honest node's RSS exceeds twice its idle figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.provenance import commit
from bench.soak import REPO, SoakNode, env, wait_converged
from tests.adversarial.hostile.harness import FLOOD_SRC, PEER_FLOOD_SRC, HostileProcess

OUT = REPO / "bench" / "results" / "soak_hostile.md"
ATTACKS = (
    "forge", "steal", "lease_flood", "claim_flood", "mailbox_flood", "pings", "fragments", "peer_idle", "evict",
    "whois",
)  # fmt: skip
SAMPLE_S = 2.0


def states(node: SoakNode) -> dict[str, str]:
    url = f"http://127.0.0.1:{node.ports['metrics']}/v1/members"
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.loads(resp.read())
    return {m["id"]: m["state"] for m in doc["members"]}


def attack_args(name: str, nodes: list[SoakNode], k: int, seconds: float) -> dict[str, Any]:
    """The k-th round of one attack; each round targets the next honest node."""
    n = nodes[k % len(nodes)]
    rnd = os.urandom(32).hex()
    table: dict[str, dict[str, Any]] = {
        "forge": {"frm": rnd, "to": os.urandom(32).hex(), "n": 3},
        "steal": {"id": rnd},
        "lease_flood": {"n": 20_480},
        "claim_flood": {"victim": "", "n": 5_120},  # forged claims (the per-peer check budget); victim: the caller's
        "mailbox_flood": {"ws": n.ports["ws"], "keys": 60, "offers": 40, "body_bytes": 1024, "src": FLOOD_SRC},
        "pings": {"ws": n.ports["ws"], "size_bytes": 32 * 2**20, "src": FLOOD_SRC},
        "fragments": {"ws": n.ports["ws"], "frames": 300_000, "src": FLOOD_SRC},
        "peer_idle": {
            "host": "127.0.0.1",
            "port": n.ports["peer"],
            "n": 1100,
            "duration_s": 30.0,
            "src": PEER_FLOOD_SRC,
        },
        "evict": {"victim": "", "duration_s": 30.0},  # victim filled in by the caller
        "whois": {
            "host": "127.0.0.1",
            "port": n.ports["swim"],
            "rate_per_s": 500,
            "duration_s": 30.0,
            "src": FLOOD_SRC,
        },
    }
    return table[name]


class HostileSoakNode(SoakNode):
    """bench/soak.py's node with a choice of SWIM preset (`local` is tuned for an idle loopback)."""

    def __init__(self, idx: int, work: Path, clients: int, preset: str) -> None:
        super().__init__(idx, work, [], clients)
        self.preset = preset

    def start(self) -> None:
        args = [sys.executable, "-m", "node", "node", "run", "--data-dir", str(self.dir), "--open"]
        args += ["--preset", self.preset, "--log-level", "info"]
        for flag in ("ws", "swim", "peer", "metrics"):
            args += [f"--{flag}", f"127.0.0.1:{self.ports[flag]}"]
        for seed in self.seeds:
            args += ["--join", seed]
        self.proc = subprocess.Popen(args, env=env(), cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)


class AttackLoop(threading.Thread):
    def __init__(self, name: str, hostile: HostileProcess, nodes: list[SoakNode], deadline: float, victim: str):
        super().__init__(daemon=True)
        self.attack, self.hostile, self.nodes, self.deadline, self.victim = name, hostile, nodes, deadline, victim
        self.rounds: list[dict[str, Any]] = []

    def run(self) -> None:
        k = 0
        while time.monotonic() < self.deadline:
            args = attack_args(self.attack, self.nodes, k, self.deadline - time.monotonic())
            if self.attack == "evict":
                args["victim"] = self.victim
            try:
                if self.attack == "claim_flood":
                    args["victim"] = _self_id(self.nodes[k % len(self.nodes)])
                self.hostile.start(self.attack, **args)  # one command in flight per attack name
                self.rounds.append(self.hostile.result(self.attack, 120))
            except Exception as exc:  # a failed round is reported, not fatal
                self.rounds.append({"error": str(exc)})
            k += 1
            time.sleep(0.5)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    nodes: list[SoakNode] = []
    hostile: HostileProcess | None = None
    load: subprocess.Popen[bytes] | None = None
    try:
        for i in range(1, args.nodes + 1):
            nodes.append(HostileSoakNode(i, work, args.clients, args.preset))
        for n in nodes:
            n.seeds = [m.swim for m in nodes if m is not n]
            n.start()
        wait_converged(nodes)
        hostile = HostileProcess(work, nodes[0].swim, args.preset)
        t0 = time.monotonic()
        while not all(states(n).get(hostile.id_text) == "alive" for n in nodes):
            if time.monotonic() - t0 > 60:
                raise RuntimeError("the hostile node did not join")
            time.sleep(0.2)
        time.sleep(2.0)
        idle = [n.rss_mb() or 0.0 for n in nodes]
        out = work / "load.json"
        cmd = [
            sys.executable,
            "-m",
            "tests.faults.loadgen",
            "--out",
            str(out),
            "--pairs",
            str(args.clients // 2),
            "--seconds",
            str(args.seconds),
            "--interval-s",
            str(args.interval_s),
            "--ping-every-s",
            "15",
            "--ping-timeout-s",
            "10",
            "--call-timeout-s",
            "15",
            "--drain-s",
            "60",
            "--connect-s",
            "120",
            "--tick-s",
            "5",
            "--seed",
            str(args.seed),
        ]
        for n in nodes:
            cmd += ["--url", n.url]
        load = subprocess.Popen(
            cmd, env=env(), cwd=REPO, stdout=(work / "loadgen.log").open("a"), stderr=subprocess.STDOUT
        )
        progress = out.with_suffix(".progress")
        while not progress.exists():
            if load.poll() is not None or time.monotonic() - t0 > 240:
                raise RuntimeError("the load clients did not connect")
            time.sleep(0.5)
        deadline = time.monotonic() + args.seconds
        victim_node = nodes[-1]
        victim = _self_id(victim_node)
        loops = [AttackLoop(a, hostile, nodes, deadline, victim) for a in ATTACKS if a not in args.skip]
        for loop in loops:
            loop.start()
        peak, dead = sample(nodes, deadline)
        rc = load.wait(args.seconds + 300)
        if rc != 0:
            raise RuntimeError(f"the load generator failed ({rc}); see {work / 'loadgen.log'}")
        for loop in loops:
            loop.join(150)
        report: dict[str, Any] = json.loads(out.read_text())
        report |= {"idle_mb": idle, "peak_mb": peak, "declared_dead": dead}
        report["attacks"] = {loop.attack: summarize(loop.rounds) for loop in loops}
        return report
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        if hostile is not None:
            hostile.stop()
        for n in nodes:
            n.stop(signal.SIGKILL)


def _self_id(node: SoakNode) -> str:
    url = f"http://127.0.0.1:{node.ports['metrics']}/v1/members"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(_b64(json.loads(resp.read())["self"])).hex()


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sample(nodes: list[SoakNode], deadline: float) -> tuple[list[float], list[list[Any]]]:
    """Peak RSS per node, and every (t, observer, member, state) where an honest node listed an honest one dead."""
    ids = {_self_id(n) for n in nodes}
    peak = [0.0] * len(nodes)
    dead: list[list[Any]] = []
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        for i, n in enumerate(nodes):
            peak[i] = max(peak[i], n.rss_mb() or 0.0)
            try:
                seen = states(n)
            except OSError:
                continue
            for member, state in seen.items():
                if _b64(member).hex() in ids and state in ("dead", "left"):
                    dead.append([round(time.monotonic() - t0), i + 1, member[:8], state])
        time.sleep(SAMPLE_S)
    return peak, dead


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [r["error"] for r in rounds if "error" in r]
    total: dict[str, Any] = {"rounds": len(rounds), "errors": len(errors)}
    for r in rounds:
        for key, value in r.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "s":
                total[key] = total.get(key, 0) + value
    if errors:
        total["first_error"] = errors[0][:120]
    return total


def ratios(report: dict[str, Any]) -> list[float]:
    return [round(p / b, 2) for p, b in zip(report["peak_mb"], report["idle_mb"], strict=True)]


def verdict(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["lost"]:
        problems.append(f"{report['lost']} honest envelopes without a terminal receipt")
    if report["declared_dead"]:
        problems.append(f"{len(report['declared_dead'])} samples with an honest member listed dead")
    over = [
        f"n{i + 1} {p:.0f}/{b:.0f} MB"
        for i, (p, b) in enumerate(zip(report["peak_mb"], report["idle_mb"], strict=True))
        if p > 2 * b
    ]
    if over:
        problems.append("RSS above 2x idle: " + ", ".join(over))
    return problems


def render(args: argparse.Namespace, report: dict[str, Any], wall_s: float, load_avg: tuple[float, ...]) -> str:
    cmd = f"python -m bench.soak_hostile --seconds {args.seconds:g} --clients {args.clients} --nodes {args.nodes}"
    cmd += f" --preset {args.preset}"
    cmd += f" --interval-s {args.interval_s:g}" + (f" --skip {','.join(args.skip)}" if args.skip else "")
    rows = [
        f"| n{i + 1} | {b:.0f} | {p:.0f} | {p / b:.2f} |"
        for i, (b, p) in enumerate(zip(report["idle_mb"], report["peak_mb"], strict=True))
    ]
    attacks = [f"| {k} | {json.dumps(v)} |" for k, v in report["attacks"].items()]
    return "\n".join(
        [
            "# Hostile soak",
            "",
            f"`{cmd}` at commit {commit()}, wall {wall_s / 60:.1f} min, {os.cpu_count()} CPUs, "
            f"load average at the end {load_avg[0]:.2f} / {load_avg[1]:.2f} / {load_avg[2]:.2f}",
            "",
            "| figure | value |",
            "|---|---|",
            f"| honest envelopes sent | {report['sent']} |",
            f"| terminal receipts | {report['terminal_total']} ({report['terminal']}) |",
            f"| orphaned (client reconnected before the receipt) | {report['orphaned']} |",
            f"| lost (no terminal receipt) | {report['lost']} |",
            f"| calls started / completed / failed | {report['calls']['started']} / {report['calls']['completed']} / "
            f"{report['calls']['failed']} |",
            f"| honest members listed dead (samples every {SAMPLE_S:g} s) | {len(report['declared_dead'])} |",
            "",
            "| node | idle RSS MB | peak RSS MB | peak / idle |",
            "|---|---|---|---|",
            *rows,
            "",
            "| attack (rounds, summed results) | |",
            "|---|---|",
            *attacks,
            "",
            f"Verdict: {'; '.join(verdict(report)) or 'nothing lost, no honest member dead, memory within 2x idle'}.",
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--interval-s", type=float, default=3.0, help="mean pause between one caller's calls")
    p.add_argument(
        "--skip",
        type=lambda s: [a for a in s.split(",") if a],
        default=[],
        help=f"attacks to leave out, comma-separated, of {','.join(ATTACKS)}",
    )
    p.add_argument("--preset", choices=["lan", "local"], default="lan", help="SWIM timing preset of every node")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, help="directory for node data and logs (default: a fresh temp dir)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--json", type=Path, help="also write the raw report as JSON here")
    args = p.parse_args(argv)
    unknown = set(args.skip) - set(ATTACKS)
    if unknown:
        p.error(f"unknown attacks in --skip: {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="homing-hostile-soak-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        report = run(args, work)
        wall = time.monotonic() - t0
    load_avg = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, report, wall, load_avg))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    problems = verdict(report)
    print(
        f"hostile soak: sent {report['sent']} lost {report['lost']} dead {len(report['declared_dead'])} "
        f"peak/idle {ratios(report)} -> {args.out}"
    )
    for p in problems:
        print(f"hostile soak: FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
