"""The soak run, CI-sized: 2 minutes, 300 clients over 3 nodes, a node restart every 30 s (bench/soak.py).

The full run (30 minutes, 1,000 clients) is `python -m bench.soak`; its figures are in bench/results/soak.md.
Scaled for CI's 2 cores: 300 clients instead of 1,000, each caller placing a call every 3 s (about 150 calls
and 450 envelopes a second in all), so the load generator and three nodes share two CPUs without starving SWIM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak import main


@pytest.mark.soak  # 2 minutes: outside the default suite (docs/testing.md); run with -m soak
@pytest.mark.timeout(400)
def test_soak_2min_receipts_balance_and_memory_stays_flat(tmp_path: Path) -> None:
    out, raw = tmp_path / "soak.md", tmp_path / "soak.json"
    argv = ["--minutes", "2", "--clients", "300", "--nodes", "3", "--interval-s", "3", "--restart-every-s", "30",
            "--sample-s", "10", "--work", str(tmp_path / "work"), "--out", str(out), "--json", str(raw)]
    rc = main(argv)
    report = json.loads(raw.read_text())
    summary = {k: v for k, v in report.items() if k not in ("timeline", "rss")}
    assert rc == 0, out.read_text()
    assert report["lost"] == 0 and report["duplicate_terminal"] == 0, summary
    assert report["sent"] == report["terminal_total"] + report["orphaned"], summary
    assert report["sent"] > 10_000, summary
    assert len(report["restarts"]) >= 3, summary
    assert report["calls"]["completed"] >= 0.95 * report["calls"]["started"], summary
    n1 = [row[1] for row in report["rss"] if row[0] >= 30 and row[1] is not None]
    assert n1 and max(n1) < 1.5 * n1[0], f"node 1's RSS grew: {n1}"
