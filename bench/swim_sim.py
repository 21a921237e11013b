"""SWIM at scale in the simulator: detection time, false positives (plain SWIM vs Lifeguard), bytes per node.

    python bench/swim_sim.py                                  # 1,000 nodes, writes bench/results/swim_sim.md
    python bench/swim_sim.py --sizes 1000 10000 --jobs 2      # what docs/performance.md reports
    HOMING_SIM_SEED=7 python bench/swim_sim.py

Every figure comes from a seeded run (node/testing) in simulated time with LAN timings (memberlist defaults),
from a converged start (Swim.preload: every table from one shared snapshot; these scenarios measure steady
state). Each run is its own process (`--one`), so its wall time, CPU time and peak RSS are its own; `--jobs`
runs that many at once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.protocol.swim.config import LAN
from node.testing import checkers as C
from node.testing.simcluster import SimCluster
from node.testing.tally import Tally

OUT = Path(__file__).resolve().parent / "results" / "swim_sim.md"
CRASHES = 5
SETTLE_S = 5.0  # clean run before faults start (lets the start-up probes and gossip spread out)
# Simulated seconds of each fault run, per size. At 10,000 nodes with 10 % loss the gossip is saturated and one
# simulated second costs ~25-40 CPU seconds here, so that run is short (see docs/performance.md).
LOSS_S = {1000: 120.0, 10000: 20.0}
SLOW_S = {1000: 120.0, 10000: 60.0}
BANDWIDTH_S = 20.0
SLOW_LAG_S = 2.0  # the CPU-starved member handles every datagram and timer up to 2 s late


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def build(n: int, seed: int, *, lifeguard: bool = True, codec: bool = False) -> tuple[SimCluster, float]:
    """A converged cluster; with `codec`, datagrams go through the real codec (push-pull never: not measured)."""
    t0 = time.monotonic()
    c = SimCluster(
        n,
        seed=seed,
        config=attrs.evolve(LAN, lifeguard=lifeguard),
        converged=True,
        codec=codec,
        push_pull_codec=False,
        record=False,
        max_time_s=7200.0,
        max_events=2_000_000_000,
    )
    return c, time.monotonic() - t0


def detection(n: int, seed: int) -> dict[str, Any]:
    c, built = build(n, seed)
    tally = Tally(c)
    c.run_for(SETTLE_S)
    victims = [c.crash(i * n // CRASHES + 1) for i in range(CRASHES)]
    bound = C.detection_bound_s(c.config, n)
    want = (n - CRASHES) * CRASHES
    ok = c.run_until_true(lambda: len(tally.first_dead) >= want, timeout_s=bound, step_s=1.0)
    times = tally.detection_times()
    return {
        "complete": ok and len(times) == want,
        "observations": len(times),
        "p50": pct(times, 0.5),
        "p99": pct(times, 0.99),
        "max": max(times, default=float("nan")),
        "first_suspect": statistics.median(tally.first_suspect.get(v, float("nan")) for v in victims),
        "bound": bound,
        "false_deaths": len(tally.false_deaths),
        "build_s": built,
        "sim_s": c.now,
    }


def false_positives(n: int, seed: int, lifeguard: bool, loss: float, slow: bool, seconds: float) -> dict[str, Any]:
    c, built = build(n, seed, lifeguard=lifeguard)
    c.run_for(SETTLE_S)
    c.net.loss = loss
    if slow:
        c.net.slow(c.ids[0], SLOW_LAG_S)
    tally = Tally(c, since=c.now)
    c.run_for(seconds)
    per = 1000.0 / (n * seconds / 60.0)
    slow_id = c.ids[0]
    return {
        "suspicions": len(tally.false_suspicions) * per,
        "deaths": len(tally.false_deaths) * per,
        "slow_member_suspicions": sum(1 for m, _ in tally.false_suspicions if m == slow_id),
        "slow_member_deaths": sum(1 for m, _ in tally.false_deaths if m == slow_id),
        "node_minutes": n * seconds / 60.0,
        "refutations": sum(c.swim(i).stats.refutations for i in c.ids),
        "build_s": built,
        "sim_s": c.now,
    }


def bandwidth(n: int, seed: int) -> dict[str, Any]:
    c, built = build(n, seed, codec=True)
    c.run_for(2 * SETTLE_S)  # let the start-up gossip settle
    before = {nid: (c.node(nid).bytes_sent, c.node(nid).datagrams_sent) for nid in c.ids}
    c.run_for(BANDWIDTH_S)
    b = sum(c.node(nid).bytes_sent - before[nid][0] for nid in c.ids) / n / BANDWIDTH_S
    p = sum(c.node(nid).datagrams_sent - before[nid][1] for nid in c.ids) / n / BANDWIDTH_S
    return {"bytes_per_s": b, "packets_per_s": p, "build_s": built, "sim_s": c.now}


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One scenario in this process; adds wall time, CPU time and this process's peak RSS."""
    t0 = time.monotonic()
    kind, n, seed = spec["kind"], spec["n"], spec["seed"]
    if kind == "detection":
        out = detection(n, seed)
    elif kind == "fp":
        out = false_positives(n, seed, spec["lifeguard"], spec["loss"], spec["slow"], spec["seconds"])
    else:
        out = bandwidth(n, seed)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.update(spec)
    out.update(wall_s=time.monotonic() - t0, cpu_s=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024)
    return out


def specs(sizes: list[int], seed: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in sizes:
        out.append({"kind": "detection", "n": n, "seed": seed})
        for loss, slow, table in ((0.10, False, LOSS_S), (0.0, True, SLOW_S), (0.10, True, LOSS_S)):
            if loss and slow and n > 1000:
                continue  # loss + slow member at 10,000: the loss run's cost, for little more information
            for lifeguard in (False, True):
                seconds = table.get(n, table[1000])
                out.append(
                    {
                        "kind": "fp",
                        "n": n,
                        "seed": seed,
                        "lifeguard": lifeguard,
                        "loss": loss,
                        "slow": slow,
                        "seconds": seconds,
                    }
                )
        out.append({"kind": "bandwidth", "n": n, "seed": seed})
    return out


def spawn(spec: dict[str, Any]) -> dict[str, Any]:
    print(f"start {json.dumps(spec)}", flush=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {spec}\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"done  {json.dumps(out)}", flush=True)
    return out


def reused(log: Path, todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished runs ("done {...}" lines) of a previous output that match a run still to do."""
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("done  "):
            r = json.loads(line[6:])
            if any(all(r.get(k) == v for k, v in s.items()) for s in todo):
                out.append(r)
    print(f"reusing {len(out)} finished runs from {log}", flush=True)
    return out


def fmt(x: float, d: int = 1) -> str:
    return f"{x:,.{d}f}"


def report(results: list[dict[str, Any]], sizes: list[int], seed: int, jobs: int) -> list[str]:
    det = [r for r in results if r["kind"] == "detection"]
    fps = [r for r in results if r["kind"] == "fp"]
    bws = [r for r in results if r["kind"] == "bandwidth"]
    lines = [
        "# SWIM simulation bench",
        "",
        f"`HOMING_SIM_SEED={seed} python bench/swim_sim.py --sizes {' '.join(map(str, sizes))} --jobs {jobs}` "
        "(LAN timings: probe 1 s, timeout 0.5 s, k=3, suspicion mult 4, max x6, gossip 200 ms to 3; converged start; "
        "each row is one process: wall, CPU and peak RSS are that run's).",
        "",
        f"## Detection: crash to DEAD at every observer ({CRASHES} crashes, no loss)",
        "",
        "| N | p50 s | p99 s | max s | first suspicion s | bound s | complete | false deaths | build s | wall s "
        "| CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in det:
        lines.append(
            f"| {d['n']:,} | {fmt(d['p50'])} | {fmt(d['p99'])} | {fmt(d['max'])} | {fmt(d['first_suspect'])} "
            f"| {fmt(d['bound'])} | {'yes' if d['complete'] else 'no'} | {d['false_deaths']} | {d['build_s']:.0f} "
            f"| {d['wall_s']:.0f} | {d['cpu_s']:.0f} | {d['rss_mb']:,.0f} |"
        )
    lines += [
        "",
        "## False positives per 1,000 node-minutes",
        "",
        f"After {SETTLE_S:g} s clean, the fault starts and runs for the simulated time given. Suspicions and deaths "
        "are distinct (member, incarnation) pairs about members that were running; `slow member` counts those "
        f"about the CPU-starved member itself (it handles every datagram and timer up to {SLOW_LAG_S:g} s late).",
        "",
        "| N | scenario | simulated s | node-minutes | SWIM suspicions | SWIM deaths | Lifeguard suspicions "
        "| Lifeguard deaths | slow member suspected / dead (SWIM, Lifeguard) | wall s | CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        for loss, slow, label in (
            (0.10, False, "10 % loss"),
            (0.0, True, "one CPU-starved member"),
            (0.10, True, "10 % loss + one CPU-starved member"),
        ):
            pair = {r["lifeguard"]: r for r in fps if r["n"] == n and r["loss"] == loss and r["slow"] == slow}
            if len(pair) != 2:
                continue
            p, g = pair[False], pair[True]
            slow_col = (
                f"{p['slow_member_suspicions']} / {p['slow_member_deaths']}, "
                f"{g['slow_member_suspicions']} / {g['slow_member_deaths']}"
                if slow
                else ""
            )
            lines.append(
                f"| {n:,} | {label} | {p['seconds']:g} | {p['node_minutes']:,.0f} | {fmt(p['suspicions'])} "
                f"| {fmt(p['deaths'])} | {fmt(g['suspicions'])} | {fmt(g['deaths'])} | {slow_col} "
                f"| {p['wall_s']:.0f}, {g['wall_s']:.0f} | {p['cpu_s']:.0f}, {g['cpu_s']:.0f} "
                f"| {p['rss_mb']:,.0f}, {g['rss_mb']:,.0f} |"
            )
    lines += [
        "",
        f"## Idle bandwidth (LAN timings, sealed datagram sizes through the real codec, {BANDWIDTH_S:g} s after "
        f"{2 * SETTLE_S:g} s settling, push-pull not counted)",
        "",
        "| N | bytes per node per second | datagrams per node per second | wall s | CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for b in bws:
        lines.append(
            f"| {b['n']:,} | {b['bytes_per_s']:.0f} | {b['packets_per_s']:.2f} | {b['wall_s']:.0f} "
            f"| {b['cpu_s']:.0f} | {b['rss_mb']:,.0f} |"
        )
    lines += ["", "Serf 0.9.4 measured here (idle, LAN): 269 B/s and 2.0 packets/s per node.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000])
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each 10,000-node run needs ~4-5 GB)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--reuse", type=Path, help="a previous run's output: take the runs it finished from it")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    seed = int(os.environ.get("HOMING_SIM_SEED", "1"))
    todo = specs(args.sizes, seed)
    todo.sort(key=lambda s: -s["n"])  # the big runs first, so the small ones fill in around them
    done = reused(args.reuse, todo) if args.reuse else []
    todo = [s for s in todo if not any(all(r.get(k) == v for k, v in s.items()) for r in done)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = done + list(pool.map(spawn, todo))
    lines = report(results, args.sizes, seed, args.jobs)
    note = f" ({len(done)} finished runs reused from `{args.reuse.name}`)" if done else ""
    lines.insert(-1, f"Wall time of this invocation {time.monotonic() - t0:,.0f} s with {args.jobs} job(s){note}.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
