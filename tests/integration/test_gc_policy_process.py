"""`homing node run` applies the node's garbage-collector policy (node/app/gcpolicy.py) to its own process, and a
node run inside another program (these tests, the demo) does not touch that program's collector."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from node.app.service import run_node
from node.protocol.identity import Identity
from tests.helpers import REPO, homing_env
from tests.integration.cluster import loopback_config

# `python -m node node run ...` as runpy runs it, plus a thread that reports the collector once ports.json is
# written, and again once the node has been told to leave (SIGTERM).
RUN_AND_REPORT = """
import gc, json, runpy, sys, threading, time
from pathlib import Path

data, out = Path(sys.argv[1]), Path(sys.argv[2])

def write(name, value):
    part = out.with_name(name + ".part")
    part.write_text(json.dumps(value))
    part.replace(out.with_name(name))

def report():
    while not (data / "ports.json").exists():
        time.sleep(0.01)
    time.sleep(0.3)
    write("serving.json", {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "on": gc.isenabled()})
    deadline = time.monotonic() + 30
    while gc.isenabled() and time.monotonic() < deadline:
        time.sleep(0.01)
    write("leaving.json", {"on": gc.isenabled()})

threading.Thread(target=report, daemon=True).start()
sys.argv = ["homing", *sys.argv[3:]]
runpy.run_module("node", run_name="__main__", alter_sys=True)
"""


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def test_homing_node_run_freezes_start_up_raises_the_young_threshold_and_stops_collecting_when_leaving(
    tmp_path: Path,
) -> None:
    data = tmp_path / "node"
    flags = [a for f in ("ws", "swim", "peer", "metrics") for a in (f"--{f}", "127.0.0.1:0")]
    cmd = [sys.executable, "-c", RUN_AND_REPORT, str(data), str(tmp_path / "x"), "node", "run", "--data-dir",
           str(data), "--log-level", "warning", *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=homing_env(), stderr=subprocess.PIPE)
    try:
        _wait_for(tmp_path / "serving.json", proc, 60)
        proc.send_signal(signal.SIGTERM)
        _wait_for(tmp_path / "leaving.json", proc, 30)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert (tmp_path / "serving.json").exists(), err.decode(errors="replace")[-2000:]
    serving = json.loads((tmp_path / "serving.json").read_text())
    assert serving["threshold"] == [700, 10, 1_000] and serving["frozen"] > 10_000 and serving["on"], serving
    assert json.loads((tmp_path / "leaving.json").read_text()) == {"on": False}


def test_a_node_run_inside_another_program_leaves_its_collector_alone(tmp_path: Path) -> None:
    before = (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled())

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                handle = await nursery.start(run_node, loopback_config(tmp_path / "n"), Identity.generate())
                handle.request_shutdown()

    trio.run(main)
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before
