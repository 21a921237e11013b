"""Two checkouts of this repository, alternating: the full node's relay throughput and CPU per message, or
(--latency) its latency at 1,000 msg/s.

    git worktree add /tmp/before <commit>                 # the code to compare against
    (cd bench/relay && npm install)
    python bench/relay/ab.py --before /tmp/before [--rounds 4] [--duration 5] [--out bench/results/relay_ab.md]
    python bench/relay/ab.py --before /tmp/before --latency      # p50 and p99 of one pair at 1,000 msg/s

A change of a few percent in CPU per message is inside the spread of one bench/relay/run.py run against another
on this shared machine kind. Here each round measures the Node.js `ws` relay (the anchor), then both checkouts in
an order that alternates from round to round (before, after; then after, before), each as one node (same-node)
and as two nodes (cross-node), with 50 pairs flat out for --duration seconds. A burst of load from the rest of the
machine then lands on both sides; medians over the rounds are compared. Each checkout's nodes are started by its
own bench/relay/run.py (its code and its settings); the load generator is this checkout's, for both.
With --latency, every measurement is bench/relay/run.py's latency mode instead (one pair, 1,000 msg/s for
--duration seconds): a change of a few tens of microseconds in the cross-node p50 is inside the spread of one run
against another too.
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
# per mode: what the load generator is asked, the two figures kept from its answer, and how the report names them
MODES = {
    "throughput": ({"mode": "throughput", "pairs": 50}, ("msg_per_s", "server_cpu_us_per_msg"), ("msg/s", "µs/msg")),
    "latency": ({"mode": "latency", "rate": 1000}, ("p50_ms", "p99_ms"), ("p50 ms", "p99 ms")),
}


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
    ap.add_argument("--latency", action="store_true", help="p50 and p99 at 1,000 msg/s instead of throughput")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "relay_ab.md")
    args = ap.parse_args()
    opts, keys, units = MODES["latency" if args.latency else "throughput"]
    here = load_run(REPO, "run_after")
    trees = {"before": load_run(args.before.resolve(), "run_before"), "after": here}
    load = [os.getloadavg()[0]]
    ticks = here.cpu_ticks()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (side, row) -> [the mode's two figures]

    def measure(urls: list[str], pid: int | str) -> tuple[float, float]:
        got = here.loadgen(urls, pid, duration=args.duration, **opts)  # this checkout's load generator, for both
        return float(got[keys[0]]), float(got[keys[1]])

    for rnd in range(args.rounds):
        proc, port = here.start(here.SERVERS["Node.js ws"])
        try:
            results.setdefault(("anchor", "Node.js ws"), []).append(
                measure([f"ws://127.0.0.1:{port}/v1/client"], proc.pid)
            )
        finally:
            proc.kill()
            proc.wait()
        for side in ("before", "after") if rnd % 2 == 0 else ("after", "before"):
            run = trees[side]
            for row, count in ROWS:
                with tempfile.TemporaryDirectory(prefix="homing-ab-") as tmp:
                    procs, urls = run.start_nodes(count, Path(tmp))
                    try:
                        got = measure(urls, ",".join(str(p.pid) for p in procs))
                    finally:
                        for p in procs:
                            p.kill()
                            p.wait()
                results.setdefault((side, row), []).append(got)
                print(f"round {rnd + 1} {side} {row}: {got[0]:.2f} {units[0]}, {got[1]:.2f} {units[1]}", flush=True)
        load.append(os.getloadavg()[0])
    commits = {"before": commit(args.before.resolve(), paths=("node",)), "after": commit(REPO, paths=("node",))}
    write(args, results, load, commits, here.stolen_pct(ticks))


def write(args: argparse.Namespace, results: dict[tuple[str, str], list[tuple[float, float]]], load: list[float],
          commits: dict[str, str], stolen: float) -> None:  # fmt: skip
    def med(side: str, row: str, i: int) -> float:
        return statistics.median(v[i] for v in results[(side, row)])

    anchor = med("anchor", "Node.js ws", 0)
    latency = args.latency
    lines = [
        "# Relay A/B: two checkouts, alternating (bench/relay/ab.py)",
        "",
        f"Command: `python bench/relay/ab.py --before {args.before} --rounds {args.rounds} --duration "
        f"{args.duration}{' --latency' if latency else ''}`; before {commits['before']}, after {commits['after']}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; load average (1 min) "
        f"{', '.join(f'{x:.1f}' for x in load)} (at the start and after each round); {stolen:.0f} % of the "
        f"machine's CPU time stolen by the hypervisor during the rounds. Medians of {args.rounds} rounds; "
        + (
            "one pair at 1,000 msg/s, 1,000-byte bodies; the time from the load generator's send to its receipt "
            "of the delivery."
            if latency
            else "50 pairs, 1,000-byte bodies; CPU per message is the nodes' user+system time over delivered "
            "messages (both nodes' for cross-node)."
        ),
        "",
    ]
    if latency:
        lines += [
            "| row | before p50 ms | before p99 ms | after p50 ms | after p99 ms | after/before p50 |",
            "|---|---|---|---|---|---|",
        ]
        for row, _ in ROWS:
            b50, a50 = med("before", row, 0), med("after", row, 0)
            lines.append(f"| {row} | {b50:.3f} | {med('before', row, 1):.2f} | {a50:.3f} | "
                         f"{med('after', row, 1):.2f} | {a50 / b50:.2f} |")  # fmt: skip
        lines.append("")
        lines.append(f"Anchor, Node.js `ws` bare relay (one hop) in the same rounds: p50 {anchor:.3f} ms, "
                     f"p99 {med('anchor', 'Node.js ws', 1):.2f} ms.")  # fmt: skip
    else:
        lines += [
            "| row | before msg/s | before µs/msg | after msg/s | after µs/msg | after/before µs/msg |",
            "|---|---|---|---|---|---|",
        ]
        for row, _ in ROWS:
            b_us, a_us = med("before", row, 1), med("after", row, 1)
            lines.append(f"| {row} | {med('before', row, 0):,.0f} ({med('before', row, 0) / anchor:.2f}x) | "
                         f"{b_us:.1f} | {med('after', row, 0):,.0f} ({med('after', row, 0) / anchor:.2f}x) | "
                         f"{a_us:.1f} | {a_us / b_us:.2f} |")  # fmt: skip
        lines.append("")
        lines.append(f"Anchor, Node.js `ws` bare relay in the same rounds: {anchor:,.0f} msg/s, "
                     f"{med('anchor', 'Node.js ws', 1):.1f} µs/msg (the x figures are msg/s over this).")  # fmt: skip
    lines += ["", "Every round, in its order:", ""]
    for (side, row), values in results.items():
        shown = (f"{a:.3f} ms p50 {b:.2f} ms p99" if latency else f"{a:,.0f} msg/s {b:.1f} µs" for a, b in values)
        lines.append(f"- {side}, {row}: " + ", ".join(shown))
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
