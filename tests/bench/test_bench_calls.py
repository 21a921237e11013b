"""bench/calls (call setup time between two Chromium pages): the arithmetic, and the whole harness on 2 direct calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.calls.report import FIGURES, figures, nearest_rank, summarize
from tests.helpers import REPO, homing_env
from tests.web.browser import require_browser


def test_nearest_rank_p95_of_20_is_the_19th_and_p50_the_10th() -> None:
    values = [float(v) for v in range(20, 0, -1)]
    assert nearest_rank(values, 0.95) == 19.0 and nearest_rank(values, 0.5) == 10.0
    assert nearest_rank([7.0], 0.95) == 7.0


def test_figures_compare_the_two_pages_on_one_clock() -> None:
    # the callee page's origin is 1,000 ms later: its stamps are 1,000 ms smaller for the same instant
    caller = {"origin": 5000.0, "marks": {"dial": 0.0, "offer_sent": 30.0, "answer_received": 190.0, "connected": 260}}
    callee = {
        "origin": 6000.0,
        "marks": {"offer_received": -960.0, "accept": -950.0, "answer_sent": -820.0, "connected": -730.0},
    }
    f = figures(caller, callee)
    assert f["total_ms"] == 270.0  # the callee connected last, at 5270
    assert f["offer_leg_ms"] == 40.0 and f["answer_leg_ms"] == 140.0 and f["signalling_ms"] == 180.0
    assert f["wire_ms"] == 10.0 + 10.0 and f["pre_offer_ms"] == 30.0 and f["after_answer_ms"] == 80.0
    with pytest.raises(ValueError, match="connected"):
        figures(caller, {"origin": 0.0, "marks": {"offer_received": 1.0}})


def test_summary_leaves_out_warmups_and_failures() -> None:
    def call(ms: float, warmup: bool = False) -> dict[str, object]:
        return {"warmup": warmup, "figures": dict.fromkeys(FIGURES, ms), "pair": "host/host"}

    calls = [call(900.0, warmup=True), {"error": "timed out"}, call(100.0), call(200.0), call(300.0)]
    s = summarize(calls)
    assert s["n_ok"] == 3 and s["n_failed"] == 1 and s["candidate_pairs"] == {"host/host": 3}
    assert s["total_ms"] == {"p50": 200.0, "p95": 300.0, "max": 300.0}


@pytest.mark.timeout(60)
def test_bench_calls_two_direct_calls_write_figures(tmp_path: Path) -> None:
    require_browser()
    out = tmp_path / "calls.md"
    cmd = [sys.executable, "-m", "bench.calls", "--n", "2", "--warmup", "0", "--modes", "direct", "--deadline-s", "30"]
    cmd += ["--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, env=homing_env(), capture_output=True, text=True, timeout=55)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])

    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["n"] == 2 and list(doc["modes"]) == ["direct"]
    assert len(doc["loadavg_before"]) == 3 and len(doc["loadavg_after"]) == 3 and doc["chromium"].startswith("Chrom")
    direct = doc["modes"]["direct"]
    assert direct["summary"]["n_ok"] == 2 and direct["summary"]["n_failed"] == 0, direct["summary"]
    for call in direct["calls"]:
        f = call["figures"]
        assert 0 < f["wire_ms"] <= f["signalling_ms"] < f["total_ms"] < 30_000, f
        assert f["offer_leg_ms"] > 0 and f["answer_leg_ms"] > 0 and f["pre_offer_ms"] > 0, f
        assert call["pair"].split("/")[0] == "host", call["pair"]  # no ICE servers: a host candidate on this side
    text = out.read_text()
    assert "python -m bench.calls --n 2" in text and doc["commit"] in text and "load average" in text
    assert "| direct | total:" in text and "| direct | signalling:" in text
