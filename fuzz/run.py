"""Run every fuzz harness for a bounded time: `python -m fuzz.run --seconds N [--jobs J] [--only A,B] [--keep DIR]`.

Each target runs in its own process (`python -m fuzz.harness NAME`) for N seconds of libFuzzer time, starting
from its committed seed corpus (read only: new inputs go to a scratch directory, removed after a clean run unless
`--keep DIR` names one). The run fails (exit 1) on any crash, undocumented exception, input slower than
`--input-timeout` seconds or memory over `--rss-mb`, and prints the target, the saved input and the end of its log
(a failed run keeps its scratch directory). Exit 2: atheris is not installed (`pip install atheris`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.make_corpus import CORPUS

REPO = Path(__file__).resolve().parent.parent
STARTUP_ALLOWANCE_S = 60  # import + instrumentation before libFuzzer's clock starts, and its final report


def _command(name: str, args: argparse.Namespace, work: Path, artifacts: Path) -> list[str]:
    return [
        sys.executable, "-m", "fuzz.harness", name,
        f"-max_total_time={args.seconds}", f"-timeout={args.input_timeout}", f"-rss_limit_mb={args.rss_mb}",
        "-max_len=65536", f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(work), str(CORPUS / name),
    ]  # fmt: skip


def _summary(log: str) -> str:
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"\bcov: (\d+)", log)
    return f"{int(runs.group(1)) if runs else 0:>9,} inputs, coverage {cov[-1] if cov else '?'} edges"


def run_all(args: argparse.Namespace, names: list[str]) -> int:
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="homing-fuzz-run-"))
    pending, running, failures = list(names), {}, []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            work, artifacts = scratch / name / "corpus", scratch / name / "artifacts"
            work.mkdir(parents=True, exist_ok=True)
            artifacts.mkdir(parents=True, exist_ok=True)
            log = (scratch / name / "log.txt").open("w")
            proc = subprocess.Popen(_command(name, args, work, artifacts), stdout=log, stderr=subprocess.STDOUT,
                                    cwd=REPO)  # fmt: skip
            running[name] = (proc, time.monotonic(), log, artifacts)
        time.sleep(0.2)
        for name, (proc, start, log, artifacts) in list(running.items()):
            overdue = time.monotonic() - start > args.seconds + STARTUP_ALLOWANCE_S
            if proc.poll() is None and not overdue:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            del running[name]
            text = (scratch / name / "log.txt").read_text(errors="replace")
            ok = proc.returncode == 0 and not overdue
            print(f"{'ok  ' if ok else 'FAIL'} {name:<18} {_summary(text)}", flush=True)
            if not ok:
                crashes = sorted(str(p) for p in artifacts.iterdir())
                failures.append(name)
                why = "did not finish in time" if overdue else f"exit {proc.returncode}"
                print(f"---- {name}: {why}; saved inputs: {crashes or 'none'}", flush=True)
                print("\n".join(text.splitlines()[-40:]), flush=True)
    clean = f"{len(names) - len(failures)}/{len(names)} targets clean after {args.seconds} s each"
    if failures or args.keep:
        print(f"{clean}; logs, new inputs and saved inputs in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)  # nothing to look at, and a run's corpus grows to megabytes
        print(f"{clean} (--keep DIR keeps the logs and new inputs)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="libFuzzer time per target (default 10)")
    parser.add_argument("--jobs", type=int, default=2, help="targets run at once (default 2)")
    parser.add_argument("--only", default="", help="comma-separated target names (default: all)")
    parser.add_argument("--keep", default="", help="directory for logs, new corpus entries and crashing inputs")
    parser.add_argument("--input-timeout", type=int, default=5, help="seconds one input may take (default 5)")
    parser.add_argument("--rss-mb", type=int, default=2048, help="memory limit per harness (default 2048)")
    args = parser.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris (a wheel for CPython on x86-64 Linux)", file=sys.stderr)
        return 2
    from fuzz.targets import BY_NAME

    names = [n for n in args.only.split(",") if n] or list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or args.seconds < 1 or args.jobs < 1:
        parser.error(
            f"unknown target(s) {unknown}; targets: {', '.join(BY_NAME)}" if unknown else "bad --seconds/--jobs"
        )
    return run_all(args, names)


if __name__ == "__main__":
    sys.exit(main())
