"""Smoke test of bench/swim.py: the whole harness on N=3, one run, a short idle window (Serf too if installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, homing_env


@pytest.mark.timeout(120)
def test_bench_swim_runs_and_writes_numbers(tmp_path: Path) -> None:
    out = tmp_path / "swim.md"
    cmd = [sys.executable, "-m", "bench.swim", "--n", "3", "--reps", "1", "--idle-s", "2", "--settle-s", "0.5"]
    cmd += ["--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=100)
    assert res.returncode == 0, res.stderr[-3000:]

    doc = json.loads(out.with_suffix(".json").read_text())
    systems = {r["system"] for r in doc["results"]}
    assert systems == ({"homing", "serf"} if shutil.which("serf") else {"homing"})
    for r in doc["results"]:
        assert "error" not in r, r
        assert r["join_complete_agents"] == 3 and r["join_verified_agents"] == 3, r
        for key in ("join_s", "suspect_first_s", "dead_all_s", "leave_all_s", "cpu_pct_median", "rss_mib_median"):
            assert isinstance(r[key], float) and r[key] >= 0, (key, r)
        assert r["dead_reported"] == 2 and r["leave_reported"] == 1, r
        assert 0 < r["rss_mib_median"] < 500, r
        if r["bytes_method"] == "netns-nft":
            # every member probes once per second: about 2 UDP packets (ping + ack) sent per node per second
            assert 1.0 <= r["udp_packets_per_node_s"] <= 10.0, r
            assert r["udp_bytes_per_node_s"] > 0, r
            assert r["lo_dev_bytes_per_node_s"] == pytest.approx(
                r["udp_bytes_per_node_s"]
                + r["tcp_bytes_per_node_s"]
                + r["control_bytes_per_node_s"]
                + r["other_bytes_per_node_s"]
            ), "nftables counters and /proc/net/dev disagree"

    text = out.read_text()
    assert "python -m bench.swim --n 3" in text
    join_row = next(line for line in text.splitlines() if line.startswith("| join:"))
    assert re.search(r"\| \d+\.\d\d \|", join_row), join_row
    assert "## Verdict" in text
