"""Run every fuzz harness for a bounded time: `python -m fuzz.run --seconds N [--jobs J] [--only A,B] [--keep DIR]`.

The targets are imported once with coverage instrumentation (about 5 s of CPU). Each then runs in a process
forked from that one, as `python -m fuzz.harness NAME` would without instrumenting again, for N seconds of
libFuzzer time from its committed seed corpus (read only: new inputs go to a scratch directory, removed after a
clean run unless `--keep DIR` names one). The run fails (exit 1) on any crash, undocumented exception, input slower
than `--input-timeout` seconds or memory over `--rss-mb`, and prints the target, the saved input and the end of its
log (a failed run keeps its scratch directory). Exit 2: atheris is not installed (`pip install atheris`).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from fuzz.harness import fuzz, instrumented_targets
from fuzz.make_corpus import CORPUS

if TYPE_CHECKING:
    from fuzz.targets import Target

REPO = Path(__file__).resolve().parent.parent
STARTUP_ALLOWANCE_S = 60  # libFuzzer's reading of the corpus before its clock starts, and its final report


def _flags(name: str, args: argparse.Namespace, work: Path, artifacts: Path) -> list[str]:
    return [
        f"-max_total_time={args.seconds}", f"-timeout={args.input_timeout}", f"-rss_limit_mb={args.rss_mb}",
        "-max_len=65536", f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(work), str(CORPUS / name),
    ]  # fmt: skip


def _fork_harness(target: Target, flags: list[str], log: Path) -> int:
    """A child process that fuzzes `target` with its output in `log`; its pid. The child never returns here."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    try:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(REPO)
        fuzz(target, flags)
    except SystemExit as end:  # how atheris ends a run on an undocumented exception
        sys.stdout.flush()
        sys.stderr.flush()
        # The C library's exit() runs libFuzzer's exit handler, which saves the crashing input and exits with its
        # error code; os._exit would skip it. Nothing of the parent's (its atexit handlers, its loop) runs here.
        ctypes.CDLL(None).exit(end.code if isinstance(end.code, int) else 1)
    except BaseException:  # the child must end here whatever happens, never run on in the parent's loop
        traceback.print_exc()
        sys.stderr.flush()
    os._exit(3)


def _exit_code(pid: int, block: bool) -> int | None:
    done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def _summary(log: str) -> str:
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"\bcov: (\d+)", log)
    return f"{int(runs.group(1)) if runs else 0:>9,} inputs, coverage {cov[-1] if cov else '?'} edges"


def run_all(args: argparse.Namespace, targets: list[Target]) -> int:
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="homing-fuzz-run-"))
    pending, failures = list(targets), []
    running: dict[str, tuple[int, float, Path]] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            target = pending.pop(0)
            name = target.name
            work, artifacts = scratch / name / "corpus", scratch / name / "artifacts"
            work.mkdir(parents=True, exist_ok=True)
            artifacts.mkdir(parents=True, exist_ok=True)
            pid = _fork_harness(target, _flags(name, args, work, artifacts), scratch / name / "log.txt")
            running[name] = (pid, time.monotonic(), artifacts)
        time.sleep(0.2)
        for name, (pid, start, artifacts) in list(running.items()):
            overdue = time.monotonic() - start > args.seconds + STARTUP_ALLOWANCE_S
            code = _exit_code(pid, block=False)
            if code is None and not overdue:
                continue
            if code is None:
                os.kill(pid, signal.SIGKILL)
                code = _exit_code(pid, block=True)
            del running[name]
            text = (scratch / name / "log.txt").read_text(errors="replace")
            ok = code == 0 and not overdue
            print(f"{'ok  ' if ok else 'FAIL'} {name:<18} {_summary(text)}", flush=True)
            if not ok:
                crashes = sorted(str(p) for p in artifacts.iterdir())
                failures.append(name)
                why = "did not finish in time" if overdue else f"exit {code}"
                print(f"---- {name}: {why}; saved inputs: {crashes or 'none'}", flush=True)
                print("\n".join(text.splitlines()[-40:]), flush=True)
    clean = f"{len(targets) - len(failures)}/{len(targets)} targets clean after {args.seconds} s each"
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
    if args.seconds < 1 or args.jobs < 1:
        parser.error("bad --seconds/--jobs")
    by_name = instrumented_targets()
    names = [n for n in args.only.split(",") if n] or list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; targets: {', '.join(by_name)}")
    return run_all(args, [by_name[n] for n in names])


if __name__ == "__main__":
    sys.exit(main())
