"""bench/swim: homing's SWIM against HashiCorp Serf, as real processes on loopback, side by side in one run.

    python -m bench.swim                      # N = 10 and 30, 3 runs of each system, 30 s idle window
    python -m bench.swim --quick              # N = 5, to smoke-test the harness
    python -m bench.swim --n 10 --reps 5 --idle-s 30 --out /tmp/swim.md

For every N and repetition it runs one trial of each system (interleaved, so slow phases of a shared machine hit
both), each in a fresh network and PID namespace (bench/swim_net.py), and writes the medians to
`bench/results/swim.md` (plus every trial's raw figures as JSON next to it). Both systems run with memberlist's
LAN timings: Serf's default `lan` profile and homing's `--preset lan` (node/protocol/swim/config.py), which are equal.
What a trial measures and how: bench/swim_trial.py. Every trial has a time limit; when it is exceeded, the trial's
namespace is killed with everything in it and the run goes on. Scratch directories are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import swim_net as net
from bench.bytecode import compiled_env
from bench.swim_report import render

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "swim.md"
TRIAL_FIXED_BUDGET_S = 300.0  # join + crash + leave timeouts and margin (bench/swim_trial.py TrialConfig)
TRIAL_PER_AGENT_S = 30.0  # each agent's start-up timeout
STDERR_TAIL_CHARS = 2000
# Both systems push-pull once per member every 30 s (N <= 32), but memberlist's first one comes 30 to 60 s after
# start and homing's 15 to 30 s: a window that starts 30 s after the join and lasts a whole number of 30 s periods
# holds exactly one push-pull per member for both, i.e. the steady state. Shorter windows under-count TCP.
SETTLE_S = 30.0
IDLE_S = 30.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.swim", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[10, 30], help="cluster sizes (default 10 30)")
    p.add_argument("--quick", action="store_true", help="N = 5 only (smoke test of the harness)")
    p.add_argument("--reps", type=int, default=3, help="runs of each system per N (default 3)")
    p.add_argument("--idle-s", type=float, default=IDLE_S, help=f"idle window for bytes/CPU (default {IDLE_S:g} s)")
    p.add_argument(
        "--settle-s",
        type=float,
        default=SETTLE_S,
        help=f"wait after the join before the idle window (default {SETTLE_S:g} s)",
    )
    p.add_argument("--systems", nargs="+", choices=["homing", "serf"], default=["homing", "serf"])
    p.add_argument("--serf", default="serf", help="the serf binary (default: serf on PATH)")
    p.add_argument(
        "--isolation",
        choices=["auto", "netns", "none"],
        default="auto",
        help="netns: every trial in a fresh network namespace (needed for byte figures); "
        "none: shared loopback, no byte figures; auto: netns if unshare works",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report (raw JSON beside it)")
    p.add_argument("--keep-logs", type=Path, help="keep every agent's log under this directory")
    args = p.parse_args(argv)
    if args.quick:
        args.n = [5]
    if not 1 <= args.reps <= 100:
        p.error("--reps must be between 1 and 100")
    if any(not 3 <= n <= net.PORT_SPAN for n in args.n):
        p.error(f"--n values must be between 3 and {net.PORT_SPAN}")
    if args.idle_s <= 0 or args.settle_s < 0:
        p.error("--idle-s must be positive and --settle-s not negative")
    return args


def serf_version(binary: str) -> str | None:
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        res = subprocess.run([path, "version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.splitlines()[0].strip() if res.returncode == 0 and res.stdout else "unknown version"


def git_commit() -> str:
    """The last commit that changed node/ (what was measured), not HEAD (bench-only commits change nothing)."""
    try:
        res = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", "node"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return res.stdout.strip() or "unknown"


def run_one(args: argparse.Namespace, system: str, n: int, rep: int, scratch: Path, isolated: bool) -> dict[str, Any]:
    """One trial in its own namespace (or on the shared loopback), bounded by a time limit."""
    work = scratch / f"{system}-n{n}-r{rep}"
    result_file = work.with_suffix(".json")
    cmd = [
        sys.executable,
        "-m",
        "bench.swim_trial",
        "--system",
        system,
        "--n",
        str(n),
        "--idle-s",
        str(args.idle_s),
        "--settle-s",
        str(args.settle_s),
        "--serf",
        args.serf,
        "--work",
        str(work),
        "--result",
        str(result_file),
    ]
    if isolated:
        cmd = [*net.unshare_prefix(), *cmd]
    else:
        cmd.append("--shared-loopback")
    budget = TRIAL_FIXED_BUDGET_S + TRIAL_PER_AGENT_S * n + args.settle_s + args.idle_s
    env = compiled_env(dict(os.environ, PYTHONPATH=str(REPO)))  # homing starts as installed (bench/bytecode.py)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the namespace's init dies with unshare, and every agent with it
        _, err = proc.communicate()
        return {"system": system, "n": n, "rep": rep, "error": f"over its {budget:.0f} s limit; {err[-300:]}"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0 or not result_file.exists():
        return {"system": system, "n": n, "rep": rep, "error": f"exit {proc.returncode}: {err[-STDERR_TAIL_CHARS:]}"}
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["rep"] = rep
    return result


def summary_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED: {r['error'][:400]}"
    keys = (
        "join_s",
        "suspect_first_s",
        "dead_all_s",
        "leave_all_s",
        "udp_bytes_per_node_s",
        "tcp_bytes_per_node_s",
        "cpu_pct_median",
        "rss_mib_median",
    )
    line = " ".join(f"{k}={r[k]:.2f}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}" for k in keys)
    # a slow join names its slowest (observer, subject) pairs, to look up in the logs --keep-logs keeps
    return line + (f" join_slowest_pairs={r['join_slowest_pairs']}" if (r.get("join_s") or 0.0) > 2.0 else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.swim" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    notes: list[str] = []
    systems = list(dict.fromkeys(args.systems))
    serf = serf_version(args.serf) if "serf" in systems else None
    if "serf" in systems and serf is None:
        systems.remove("serf")
        notes.append(f"Serf (`{args.serf}`) was not found: homing only, nothing to compare against.")
    if not systems:
        print("bench/swim: no system to run", file=sys.stderr)
        return 2
    isolated = args.isolation != "none"
    if args.isolation != "none":
        ok, why = net.netns_available()
        if not ok and args.isolation == "netns":
            print(f"bench/swim: --isolation netns but {why}", file=sys.stderr)
            return 2
        if not ok:
            isolated = False
            notes.append(f"No private network namespace ({why}): agents shared the host loopback; no byte figures.")
    if isolated:
        notes.append(
            "Each run in a fresh network+PID namespace (`" + " ".join(net.unshare_prefix()) + "`): "
            "bytes are nftables output-hook counters on its `lo` (IP packets, headers included), "
            "the bench's own HTTP/RPC checks excluded, cross-checked with /proc/net/dev."
        )
    notes.append(
        "Times are arrival times of the agents' own log lines (read through a pipe, stamped on arrival); "
        "CPU and RSS are from /proc over the idle window, after the join has settled."
    )
    environment = {**net.describe_env(), "python": sys.version.split()[0], "last commit of node/": git_commit()}
    if serf:
        environment["serf"] = serf
    results: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-swim-"))
    try:
        for n in args.n:
            for rep in range(1, args.reps + 1):
                for system in systems:
                    t0 = time.monotonic()
                    r = run_one(args, system, n, rep, scratch, isolated)
                    results.append(r)
                    print(
                        f"{system} N={n} run {rep}/{args.reps} ({time.monotonic() - t0:.0f} s): {summary_line(r)}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if args.keep_logs:
            shutil.copytree(scratch, args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(results, systems=systems, ns=args.n, command=command, date=date, environment=environment, notes=notes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"command": command, "date": date, "results": results}, indent=1, sort_keys=True)
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}", file=sys.stderr)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
