"""Smoke tests of bench/scale/run.py at tiny N: idle phones (homing node and the Node.js relay), a kill -9 storm and
a goaway storm, process cost. They check that the harness runs and that its outcomes hold at this size: nobody
dropped, everyone re-homed and callable, every envelope exactly one terminal receipt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench import needs_node_relay
from tests.helpers import REPO, homing_env

pytestmark = needs_node_relay


def bench(tmp: Path, *args: str) -> dict[str, Any]:
    out = tmp / "scale.md"
    cmd = [sys.executable, str(REPO / "bench" / "scale" / "run.py"), *args, "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=110)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "load" in out.read_text()  # the table says under which load it was made
    return dict(json.loads(out.with_suffix(".json").read_text()))


@pytest.mark.timeout(120)
def test_idle_phones_and_process_cost(tmp_path: Path) -> None:
    doc = bench(tmp_path, "--only", "idle", "--only", "process", "--conns", "150", "--hold", "2", "--process-runs", "1")
    assert set(doc["idle"]) == {"homing node", "Node.js ws relay (ping every 30 s)"}
    for row in doc["idle"].values():
        assert row["conns"] == 150 and row["failed"] == 0 and row["dropped"] == 0, row
        assert row["handshakes_per_s"] > 0 and row["kib_per_client"] is not None
    assert 0 < doc["process"]["start_to_serving_s"] < 30 and doc["process"]["rss_idle_mib"] > 0


@pytest.mark.soak  # outside the default suite; the idle-phones smoke above keeps the harness from rotting
@pytest.mark.timeout(120)
def test_kill_and_goaway_storms_rehome_everyone_with_one_terminal_receipt_each(tmp_path: Path) -> None:
    doc = bench(tmp_path, "--only", "storm", "--only", "goaway", "--storm-conns", "100", "--storm-timeout", "40")
    for how in ("kill", "goaway"):
        row = doc[how]
        assert row["conns"] == 100 and row["rehomed"] == 100 and row["all_callable"], row
        assert row["envelopes"] > 100 and row["without_one_terminal"] == 0, row
        assert row["delivered_not_received"] == 0, row  # a `delivered` receipt means the callee got it
        assert row["unexpected_before_kill"] == 0, row
    assert doc["goaway"]["goaways"] == 100
    for how in ("kill_nodejs", "goaway_nodejs"):  # the same storms on bare Node.js relays: probes only
        anchor = doc[how]
        assert anchor["rehomed"] == 100 and anchor["all_callable"], anchor
        assert anchor["receipts"] == {"probe:delivered": 100} and anchor["without_one_terminal"] == 0, anchor
    assert doc["goaway_nodejs"]["goaways"] == 100
