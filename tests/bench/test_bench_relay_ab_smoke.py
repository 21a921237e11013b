"""Smoke test of bench/relay/ab.py: with this checkout on both sides, one short round writes every row with its
Node.js anchor (a renamed function in bench/relay/run.py would leave the A/B bench unable to run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import needs_node_relay
from tests.helpers import REPO, homing_env

pytestmark = needs_node_relay


@pytest.mark.timeout(120)
def test_one_round_measures_both_sides_and_the_anchor(tmp_path: Path) -> None:
    out = tmp_path / "ab.md"
    cmd = [sys.executable, str(REPO / "bench" / "relay" / "ab.py"), "--before", str(REPO), "--rounds", "1",
           "--duration", "1", "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| same node", "| cross-node"))]
    assert len(rows) == 2, text
    assert "Anchor, Node.js `ws` bare relay in the same rounds" in text, text
