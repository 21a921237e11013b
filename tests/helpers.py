"""Shared helpers for tests: how to run the `homing` command from this checkout, free ports, waiting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def homing_cmd(*args: str) -> list[str]:
    """The `homing` console script of this checkout (works without installing it)."""
    return [sys.executable, "-m", "node", *args]


def homing_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_homing(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        homing_cmd(*args), env=homing_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw
    )


def wait_for_file(path: Path, timeout: float = 20.0) -> Any:
    """Wait (bounded) until `path` holds valid JSON, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


def refused_by_reason(metrics_text: str, layer: str) -> dict[str, float]:
    """`homing_packets_refused_total{layer, reason}` from a node's /metrics text, as reason -> count."""
    pattern = r'homing_packets_refused_total\{layer="' + re.escape(layer) + r'",reason="([^"]+)"\} (\S+)'
    return {reason: float(v) for reason, v in re.findall(pattern, metrics_text)}
