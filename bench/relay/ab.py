"""Two checkouts of this repository, alternating: the full node's relay throughput and CPU per message.

    git worktree add /tmp/before <commit>                 # the code to compare against
    (cd bench/relay && npm install)
    python bench/relay/ab.py --before /tmp/before [--rounds 4] [--duration 5] [--out bench/results/relay_ab.md]

A change of a few percent in CPU per message is inside the spread of one bench/relay/run.py run against another
on this shared machine kind. Here each round measures the Node.js `ws` relay (the anchor), then both checkouts in
an order that alternates from round to round (before, after; then after, before), each as one node (same-node)
and as two nodes (cross-node), with 50 pairs flat out for --duration seconds. A burst of load from the rest of the
machine then lands on both sides; medians over the rounds are compared. Each checkout's nodes are started by its
own bench/relay/run.py (its code and its settings); the load generator is this checkout's, for both.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from bench.provenance import commit  # noqa: E402  (run as a script: the repository is not on the path)

ROWS = (("same node", 1), ("cross-node (2)", 2))


def load_run(tree: Path, name: str) -> ModuleType:
    """`tree`'s bench/relay/run.py as a module of its own (its REPO is `tree`)."""
    spec = importlib.util.spec_from_file_location(name, tree / "bench" / "relay" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare against")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "relay_ab.md")
    args = ap.parse_args()
    here = load_run(REPO, "run_after")
    trees = {"before": load_run(args.before.resolve(), "run_before"), "after": here}
    load = [os.getloadavg()[0]]
    ticks = here.cpu_ticks()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (side, row) -> [(msg/s, µs/msg)]
    for rnd in range(args.rounds):
        proc, port = here.start(here.SERVERS["Node.js ws"])
        try:
            thr = here.loadgen([f"ws://127.0.0.1:{port}/v1/client"], proc.pid, mode="throughput", pairs=50,
                               duration=args.duration)  # fmt: skip
        finally:
            proc.kill()
            proc.wait()
        results.setdefault(("anchor", "Node.js ws"), []).append((thr["msg_per_s"], thr["server_cpu_us_per_msg"]))
        for side in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
            run = trees[side]
            for row, count in ROWS:
                with tempfile.TemporaryDirectory(prefix="homing-ab-") as tmp:
                    procs, urls = run.start_nodes(count, Path(tmp))
                    try:
                        pids = ",".join(str(p.pid) for p in procs)
                        # the load generator is this checkout's for both sides
                        thr = here.loadgen(urls, pids, mode="throughput", pairs=50, duration=args.duration)
                    finally:
                        for p in procs:
                            p.kill()
                            p.wait()
                results.setdefault((side, row), []).append((thr["msg_per_s"], thr["server_cpu_us_per_msg"]))
                print(f"round {rnd + 1} {side} {row}: {thr['msg_per_s']:.0f} msg/s, "
                      f"{thr['server_cpu_us_per_msg']:.1f} µs/msg", flush=True)  # fmt: skip
        load.append(os.getloadavg()[0])
    commits = {"before": commit(args.before.resolve(), paths=("node",)), "after": commit(REPO, paths=("node",))}
    write(args, results, load, commits, here.stolen_pct(ticks))


def write(args: argparse.Namespace, results: dict[tuple[str, str], list[tuple[float, float]]], load: list[float],
          commits: dict[str, str], stolen: float) -> None:  # fmt: skip
    def med(side: str, row: str, i: int) -> float:
        return statistics.median(v[i] for v in results[(side, row)])

    anchor = med("anchor", "Node.js ws", 0)
    lines = [
        "# Relay A/B: two checkouts, alternating (bench/relay/ab.py)",
        "",
        f"Command: `python bench/relay/ab.py --before {args.before} --rounds {args.rounds} --duration "
        f"{args.duration}`; before {commits['before']}, after {commits['after']}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; load average (1 min) "
        f"{', '.join(f'{x:.1f}' for x in load)} (at the start and after each round); {stolen:.0f} % of the "
        f"machine's CPU time stolen by the hypervisor during the rounds. Medians of {args.rounds} "
        f"rounds; 50 pairs, 1,000-byte bodies; CPU per message is the nodes' user+system time over delivered "
        "messages (both nodes' for cross-node).",
        "",
        "| row | before msg/s | before µs/msg | after msg/s | after µs/msg | after/before µs/msg |",
        "|---|---|---|---|---|---|",
    ]
    for row, _ in ROWS:
        b_us, a_us = med("before", row, 1), med("after", row, 1)
        lines.append(f"| {row} | {med('before', row, 0):,.0f} ({med('before', row, 0) / anchor:.2f}x) | {b_us:.1f} | "
                     f"{med('after', row, 0):,.0f} ({med('after', row, 0) / anchor:.2f}x) | {a_us:.1f} | "
                     f"{a_us / b_us:.2f} |")  # fmt: skip
    lines += [
        "",
        f"Anchor, Node.js `ws` bare relay in the same rounds: {anchor:,.0f} msg/s, "
        f"{med('anchor', 'Node.js ws', 1):.1f} µs/msg (the x figures are msg/s over this).",
        "",
        "Every round, in its order:",
        "",
    ]
    for (side, row), values in results.items():
        lines.append(f"- {side}, {row}: " + ", ".join(f"{m:,.0f} msg/s {u:.1f} µs" for m, u in values))
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
