"""The atheris harnesses (fuzz/): the seed corpus is current, a crash fails the run, (slow) every harness runs clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fuzz.make_corpus import CORPUS, expected
from tests.helpers import REPO, homing_env

FUZZ_SECONDS = 2  # per target, on 2 jobs: about 30 s with the one instrumenting import (python -m fuzz.run --seconds N)


def test_the_committed_seed_corpus_is_current() -> None:
    """A format change makes the seeds stale: regenerate with `python -m fuzz.make_corpus` and commit."""
    on_disk = {d.name: {f.name: f.read_bytes() for f in d.iterdir()} for d in CORPUS.iterdir() if d.is_dir()}
    assert on_disk == expected()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_every_fuzz_harness_runs_clean_for_a_bounded_time(tmp_path: Path) -> None:
    """...and leaves nothing behind in the temporary directory (its scratch files, each harness's input files)."""
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--seconds", str(FUZZ_SECONDS), "--jobs", "2"],
        cwd=REPO, env=homing_env(TMPDIR=str(tmp_path)), capture_output=True, text=True,
        timeout=FUZZ_SECONDS * 15 + 120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.stdout.count("ok  ") == len(expected()), proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_an_undocumented_exception_fails_the_run_and_keeps_the_input_that_raised_it(tmp_path: Path) -> None:
    """The runner's forked harness must still let libFuzzer save the input (its exit handler) and report the exit."""
    planted = textwrap.dedent("""
        import argparse, sys
        import attrs
        from fuzz import run
        from fuzz.targets import BY_NAME

        def undocumented(data: bytes) -> None:
            if b"hm1/" in data:  # every seed of the txt target holds a record's prefix
                raise KeyError("planted")

        args = argparse.Namespace(seconds=5, jobs=1, keep=sys.argv[1], input_timeout=5, rss_mb=2048)
        sys.exit(run.run_all(args, [attrs.evolve(BY_NAME["txt"], fn=undocumented)]))
    """)
    keep = tmp_path / "keep"
    proc = subprocess.run([sys.executable, "-c", planted, str(keep)], cwd=REPO, env=homing_env(TMPDIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "FAIL txt" in proc.stdout and "KeyError: 'planted'" in proc.stdout, proc.stdout[-3000:]
    saved = list((keep / "txt" / "artifacts").iterdir())
    assert len(saved) == 1 and b"hm1/" in saved[0].read_bytes()
    assert f"saved inputs: ['{saved[0]}']" in proc.stdout
