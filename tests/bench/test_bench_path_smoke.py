"""Smoke test of bench/relay/path.py: the in-process relay path runs on this checkout, alone and against itself
(a renamed relay or codec function would leave the bench unable to run)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, homing_env


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", [[], ["--cross"]], ids=["same-node", "cross-node"])
def test_the_relay_path_runs_alone_and_against_another_tree(where: list[str]) -> None:
    """It exits non-zero when any envelope was not delivered and receipted `delivered`."""
    bench = str(REPO / "bench" / "relay" / "path.py")
    alone = subprocess.run([sys.executable, bench, "--envelopes", "300", "--rounds", "2", *where], cwd=REPO,
                           env=homing_env(), capture_output=True, text=True, timeout=100)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert re.search(r"[\d.]+ µs per envelope best, [\d.]+ median", alone.stdout), alone.stdout
    ab = subprocess.run([sys.executable, bench, "--envelopes", "300", "--rounds", "2", "--before", str(REPO), *where],
                        cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=100)  # fmt: skip
    assert ab.returncode == 0, ab.stderr[-3000:]
    assert len(re.findall(r"round \d (before|after): [\d.]+ µs per envelope", ab.stdout)) == 4, ab.stdout
    assert "after/before" in ab.stdout, ab.stdout
