"""Smoke test of bench/relay/ab.py: with this checkout on both sides, one short round writes every row with its
Node.js anchor, in both modes (a renamed function in bench/relay/run.py would leave the A/B bench unable to run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import needs_node_relay
from tests.helpers import REPO, homing_env

pytestmark = needs_node_relay


@pytest.mark.timeout(120)
@pytest.mark.parametrize("latency", [False, True], ids=["throughput", "latency"])
def test_one_round_measures_both_sides_and_the_anchor(tmp_path: Path, latency: bool) -> None:
    out = tmp_path / "ab.md"
    cmd = [sys.executable, str(REPO / "bench" / "relay" / "ab.py"), "--before", str(REPO), "--rounds", "1",
           "--duration", "1", "--out", str(out), *(["--latency"] if latency else [])]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| same node", "| cross-node"))]
    assert len(rows) == 2, text
    assert ("before p50 ms" in text) is latency and ("before msg/s" in text) is not latency, text
    for row in rows:  # every figure measured: a number, neither empty nor nan
        figures = [cell.strip() for cell in row.split("|")[2:-1]]
        assert all(float(f.split()[0].replace(",", "")) > 0 for f in figures), row
    assert "Anchor, Node.js `ws` bare relay" in text, text
