"""Relay benchmark: homing's client server vs a minimal Node.js `ws` relay, side by side, medians of several runs.

    (cd bench/relay && npm install)      # ws and @msgpack/msgpack into bench/relay/node_modules
    python bench/relay/run.py [--runs 3] [--duration 5] [--idle 10000] [--url ws://H:P/v1/client ...]

Each run starts each server as its own process (same-node: one server, load generator in another process),
then measures: RSS per idle authenticated client at --idle connections (first run only, on the fresh server
process, before any load); one-way latency p50/p99 for 1 pair at a fixed 1,000 msg/s; max delivered msg/s with
50 concurrent pairs (and the server's CPU per relayed message, from /proc). With --url (repeatable) it measures
already-running nodes instead (e.g. a cross-node federation: pair i's caller on url[i % n], its callee on
url[i+1 % n]); RSS is then not measured.
Results go to bench/results/relay.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from bench.provenance import commit  # noqa: E402  (run as a script: the repository is not on the path)

SERVERS = {
    "homing client server, bare (trio)": [sys.executable, str(HERE / "homing_relay.py"), "0"],
    "Node.js ws": ["node", str(HERE / "ws_relay.mjs"), "0"],
}


def cpu_ticks() -> tuple[int, int]:
    """(stolen, all) clock ticks of the whole machine so far, from /proc/stat's `cpu` line; (0, 0) elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def stolen_pct(since: tuple[int, int]) -> float:
    """The share of the machine's CPU time the hypervisor gave to other guests since `since` (`cpu_ticks()`): on a
    shared VPS a run with a large share measures the neighbours as much as the code (latencies most of all)."""
    stolen, total = cpu_ticks()
    return 100.0 * (stolen - since[0]) / max(1, total - since[1])


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        proc.kill()
        raise SystemExit(f"{cmd} did not start: {line!r}")
    return proc, int(line.split()[1])


# Rate limits lifted, as for the bare relay: the bench measures relaying, not the token buckets.
NODE_TOML = """
[clients]
rate_per_s = 1000000.0
burst = 1000000
ice_rate_per_s = 1000000.0
ice_burst = 1000000
connections_max = 20000
connections_per_ip_max = 20000
handshakes_per_address_per_s = 1000000.0
handshakes_per_address_burst = 1000000
"""


def start_nodes(
    count: int, tmp: Path, launcher: Callable[[int], list[str]] | None = None
) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """`count` real `homing node run` processes (LAN preset, full relay core) joined into one federation.
    `launcher(i)` gives node i's command before `node run ...` (default `python -m node`; bench/relay/hops.py
    starts them through its timestamp hooks)."""
    (tmp / "bench.toml").write_text(NODE_TOML)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs: list[subprocess.Popen[str]] = []
    urls: list[str] = []
    seed: list[str] = []
    for i in range(count):
        data = tmp / f"node{i}"
        prefix = launcher(i) if launcher else [sys.executable, "-m", "node"]
        cmd = [*prefix, "node", "run", "--config", str(tmp / "bench.toml"), "--data-dir",
               str(data), "--open", "--log-level", "warning", *[a for s in seed for a in ("--join", s)],
               *[a for f in ("ws", "swim", "peer", "metrics") for a in (f"--{f}", "127.0.0.1:0")]]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stderr=subprocess.DEVNULL))
        ports = wait_json(data / "ports.json")
        urls.append(f"ws://127.0.0.1:{ports['ws']}/v1/client")
        METRICS_BY_WS[urls[-1]] = ports["metrics"]
        seed = seed or [f"127.0.0.1:{ports['swim']}"]
    deadline = time.monotonic() + 30
    while not all(alive_members(u) == count for u in urls):
        if time.monotonic() > deadline:
            raise SystemExit("the bench federation did not converge")
        time.sleep(0.2)
    return procs, urls


def wait_json(path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.05)
    raise SystemExit(f"{path} did not appear")


def alive_members(url: str) -> int:
    import urllib.request

    port = METRICS_BY_WS.get(url)
    if port is None:
        return 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/members", timeout=2) as resp:
        return sum(m["state"] == "alive" for m in json.loads(resp.read())["members"])


METRICS_BY_WS: dict[str, int] = {}


def loadgen(urls: list[str], pid: int | str, **opts: Any) -> dict[str, Any]:
    cmd = ["node", str(HERE / "loadgen.mjs")]
    for url in urls:
        cmd += ["--url", url]
    for key, value in opts.items():
        cmd += [f"--{key}", str(value)]
    if pid:
        cmd += ["--pid", str(pid)]
    # Node.js has been seen to hang, idle, in a futex wait while opening thousands of connections (the same run
    # succeeds when repeated): a stuck load generator is killed after 5 minutes and the measurement made again once.
    for attempt in (1, 2):
        try:
            out = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            print(f"loadgen {opts.get('mode')} timed out (attempt {attempt})", file=sys.stderr, flush=True)
            continue
        if out.returncode != 0:
            raise SystemExit(f"loadgen failed: {out.stderr.strip()}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    raise SystemExit("loadgen timed out twice")


def measure(urls: list[str], pid: int | str, args: argparse.Namespace, *, idle: bool) -> dict[str, float]:
    # Idle memory first, on the fresh process: measured after the throughput run, the connections would reuse
    # heap the load had grown and the figure would flatter the server (by about 0.7 KiB per client here).
    kib = loadgen(urls, pid, mode="idle", conns=args.idle)["kib_per_conn"] if pid and idle else None
    lat = loadgen(urls, pid, mode="latency", rate=1000, duration=args.duration)
    thr = loadgen(urls, pid, mode="throughput", pairs=50, duration=args.duration)
    row = {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "msg_per_s": thr["msg_per_s"],
        "cpu_us_per_msg": thr["server_cpu_us_per_msg"] or float("nan"),
    }
    if kib is not None:
        row["kib_per_idle_conn"] = kib
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    ap.add_argument("--idle", type=int, default=min(10_000, soft - 500))
    ap.add_argument("--url", action="append", default=[])
    ap.add_argument("--no-nodes", action="store_true", help="skip the real-node rows (same-node and cross-node)")
    args = ap.parse_args()
    ticks = cpu_ticks()
    results: dict[str, list[dict[str, float]]] = {}
    for run in range(args.runs):
        if args.url:
            results.setdefault("given nodes", []).append(measure(args.url, 0, args, idle=False))
            continue
        for name, cmd in SERVERS.items():
            proc, port = start(cmd)
            try:
                time.sleep(0.5)
                # RSS per connection hardly varies between runs; measuring it once spares ephemeral ports
                row = measure([f"ws://127.0.0.1:{port}/v1/client"], proc.pid, args, idle=run == 0)
            finally:
                proc.kill()
                proc.wait()
            print(f"run {run + 1} {name}: {row}", flush=True)
            results.setdefault(name, []).append(row)
        if not args.no_nodes:
            for name, count in (("homing node, same node (full relay)", 1), ("homing nodes, cross-node (2)", 2)):
                with tempfile.TemporaryDirectory(prefix="homing-bench-") as tmp:
                    procs, urls = start_nodes(count, Path(tmp))
                    try:
                        pids = ",".join(str(p.pid) for p in procs)
                        row = measure(urls, pids, args, idle=run == 0 and count == 1)
                    finally:
                        for p in procs:
                            p.kill()
                            p.wait()
                print(f"run {run + 1} {name}: {row}", flush=True)
                results.setdefault(name, []).append(row)
    write(results, args, stolen_pct(ticks))


def write(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, stolen: float) -> None:
    cols = ["p50_ms", "p99_ms", "msg_per_s", "cpu_us_per_msg", "kib_per_idle_conn"]
    heads = ["one-way p50 ms @1k/s", "p99 ms", "msg/s, 50 pairs", "server CPU µs/msg", "KiB RSS per idle client"]
    lines = [
        "# Relay benchmark (same node and cross-node)",
        "",
        f"Command: `python bench/relay/run.py --runs {args.runs} --duration {args.duration:g} --idle {args.idle}"
        f"{' --no-nodes' if args.no_nodes else ''}`; "
        f"medians of {args.runs} runs; commit {commit()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(the end), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end, {stolen:.0f} % of the machine's CPU time stolen by the hypervisor "
        "during the runs (the machine is shared: throughput and latency are noisy, CPU per message less so).",
        "Envelopes: 1,000-byte bodies, msgpack, `call_ice`; every envelope gets a delivery and a receipt. "
        "CPU per message is the server's user+system time over delivered messages (both nodes' for cross-node); "
        "1e6 / that is what one dedicated core would relay. The bare rows run the client server with a minimal "
        "same-node relay; the node rows run real `homing node run` processes with the full relay core "
        "(rendezvous lookups, leases, receipts); cross-node pairs have the caller on one node, the callee on the "
        "other.",
        "",
        "| server | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for name, rows in results.items():
        cells = []
        for col in cols:
            vals = [r[col] for r in rows if col in r]
            cells.append(f"{statistics.median(vals):,.{2 if col.endswith('ms') else 0 if col == 'msg_per_s' else 1}f}"
                         if vals else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Every run:", ""]
    for name, rows in results.items():
        for row in rows:
            lines.append(f"- {name}: " + ", ".join(f"{k}={v:,.4g}" for k, v in row.items()))
    out = REPO / "bench" / "results" / "relay.md"
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
