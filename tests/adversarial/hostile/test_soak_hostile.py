"""The hostile soak, suite-sized (bench/soak_hostile.py; the 10-minute run is in docs/reliability.md).

Five honest node processes, the hostile node doing every attack at once, 60 honest clients calling each other for
30 s. SWIM eviction and the WHOIS flood are left out at this size (the bench's 10-minute run has them; each has its
own test in tests/adversarial/hostile/test_hostile_node.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak_hostile import main


@pytest.mark.soak  # outside the default suite (docs/testing.md): the 10-minute run is bench/soak_hostile.py
@pytest.mark.timeout(300)
def test_hostile_soak_30s_nothing_lost_nobody_dead_memory_within_2x(tmp_path: Path) -> None:
    out, raw = tmp_path / "soak.md", tmp_path / "soak.json"
    argv = ["--seconds", "30", "--clients", "60", "--interval-s", "2", "--skip", "evict,whois"]
    rc = main([*argv, "--work", str(tmp_path / "work"), "--out", str(out), "--json", str(raw)])
    report = json.loads(raw.read_text())
    assert rc == 0, out.read_text()
    assert report["lost"] == 0 and report["declared_dead"] == [], out.read_text()
    assert report["sent"] > 500, out.read_text()
    assert all(p <= 2 * b for p, b in zip(report["peak_mb"], report["idle_mb"], strict=True)), out.read_text()
    assert all(a["rounds"] >= 1 and a["errors"] == 0 for a in report["attacks"].values()), report["attacks"]
