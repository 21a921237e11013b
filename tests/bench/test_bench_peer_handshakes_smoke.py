"""Smoke test of bench/peer_handshakes.py: a one-second keyless handshake flood against a real node. It checks that
the harness still reaches the node's handshake (the node counts what it refused) and writes its block."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, homing_env


@pytest.mark.timeout(90)
@pytest.mark.parametrize("addresses", [1, 4])
def test_a_one_second_flood_is_counted_by_the_node_and_written(tmp_path: Path, addresses: int) -> None:
    out = tmp_path / "peer_handshakes.md"
    cmd = [sys.executable, "-m", "bench.peer_handshakes", "--duration", "1", "--workers", "2", "--out", str(out)]
    cmd += ["--addresses", str(addresses)]
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=80)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    attempts = int(re.search(r"- (\d+) attempts in", text).group(1))  # type: ignore[union-attr]
    refused = re.search(r"refusals \(layer peer\): (\{.*\})", text)
    assert refused is not None and "load average" in text, text
    counts = ast.literal_eval(refused.group(1))
    assert attempts > 0 and 0 < counts.get("unadmitted", 0) <= attempts, text
    assert counts.get("unadmitted", 0) + counts.get("rate_limited", 0) <= attempts, text
    assert ("one address" if addresses == 1 else f"{addresses} addresses") in text, text
