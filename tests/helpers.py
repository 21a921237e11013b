"""Shared helpers for tests: how to run the `homing` command from this checkout, free ports, waiting."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

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


@contextmanager
def killed_at_exit(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """`proc` for the block; killed (and reaped) at its end if still running, whatever the block raised."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def small_disk(path: Path, kib: int) -> Iterator[Path]:
    """A tmpfs of `kib` KiB mounted at `path` (made) for the block: a disk that can really fill up. Needs root (CI
    runs as root); elsewhere the test skips with the reason. Unmounted lazily at the end, so a process still holding a
    file there cannot keep it mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(path)], check=True, timeout=10)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=10)


def fill_disk(disk: Path, leave: int = 0) -> Path:
    """Write a file on `disk` until it is full (ENOSPC; bounded by the disk's size), then give back `leave` bytes
    (whole pages) of it; returns the file, to delete."""
    filler = disk / "filler"
    fs = os.statvfs(disk)
    limit = fs.f_blocks * fs.f_frsize + 4096
    with filler.open("wb", buffering=0) as f:
        written = 0
        try:
            while written < limit:
                written += f.write(b"\0" * 4096) or 0
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        else:
            raise AssertionError(f"{disk} took {written} bytes without filling up")
        f.truncate(max(0, written - leave))
    return filler


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


def stop_process(proc: subprocess.Popen[Any], wait_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `wait_s` (the daemons tests start: coturn, its peer)."""
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(wait_s)


def wait_for_log_line(log: Path, text: str, proc: subprocess.Popen[Any], what: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until `log` holds `text`; fails the test with the log's tail if `proc` exits or time runs out."""
    import pytest  # tests/helpers.py is imported by scripts too, which need no pytest

    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text(errors="replace")):
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"{what} did not start: {log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
        time.sleep(0.05)


def refused_by_reason(metrics_text: str, layer: str) -> dict[str, float]:
    """`homing_packets_refused_total{layer, reason}` from a node's /metrics text, as reason -> count."""
    pattern = r'homing_packets_refused_total\{layer="' + re.escape(layer) + r'",reason="([^"]+)"\} (\S+)'
    return {reason: float(v) for reason, v in re.findall(pattern, metrics_text)}


async def raw_http(port: int, data: bytes, stream: trio.SocketStream | None = None) -> bytes:
    """Send raw bytes to 127.0.0.1:`port` (on `stream`, else a new connection) and read until the server closes."""
    stream = stream if stream is not None else await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    out = b""
    while chunk := await stream.receive_some(65536):
        out += chunk
    await stream.aclose()
    return out
