"""Smoke test of bench/relay/hops.py: its hooks still find the node's functions, and every stage of a cross-node
envelope is matched (a renamed function or a moved stage would leave the bench measuring nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import needs_node_relay
from tests.helpers import REPO, homing_env

pytestmark = needs_node_relay


@pytest.mark.timeout(120)
def test_every_stage_of_a_cross_node_envelope_is_timed(tmp_path: Path) -> None:
    out = tmp_path / "hops.md"
    cmd = [sys.executable, str(REPO / "bench" / "relay" / "hops.py"), "--runs", "1", "--duration", "1", "--rate", "200",
           "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {
        line.split("|")[1].strip().strip("*"): line.split("|")[2].strip()
        for line in out.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| stage")
    }
    # 19 stages, the total, the Node.js anchor, the two write syscalls
    assert len(rows) == 23 and "total" in rows, rows
    assert all(v.isdigit() for v in rows.values()), rows  # "-": a stage no envelope reached
    matched = int(out.read_text().split("Envelopes matched per run: ")[1].split(".")[0])
    assert matched >= 100, matched  # 200 sent, the first 10 % skipped
