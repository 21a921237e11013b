"""The atheris harnesses (fuzz/): the committed seed corpus is current, and (slow) every harness runs clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.make_corpus import CORPUS, expected
from tests.helpers import REPO, homing_env

FUZZ_SECONDS = 2  # per target, on 2 jobs: 50 s with start-up (4 s a harness; longer: python -m fuzz.run --seconds N)


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
