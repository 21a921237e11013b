"""Bugs the adversarial tests found, one test each: every one was an undocumented exception (a crash) before its fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx2
import pytest

from bootstrap.server import _parse_doc
from node.app.config import build_config, load_toml
from node.app.registry import _result
from node.client.discovery.cache import load_cache, merge_cache
from node.net.httpserver import Request
from node.protocol.errors import ConfigError, RemoteProtocolError


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'[node]\nws = "\xff"\n', "not UTF-8"),  # was UnicodeDecodeError
        (b"a = " + b"[" * 50_000, "nested too deeply"),  # was RecursionError
        (b"a = " + b"{b=" * 5_000, "nested too deeply"),
    ],
)
def test_a_damaged_config_file_is_a_config_error(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "homing-node.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=reason):
        load_toml(path)


def test_a_config_path_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):  # was IsADirectoryError
        load_toml(tmp_path)


@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), 10**400], ids=["inf", "-inf", "nan", "1e400"]
)
def test_durations_must_be_finite(value: float) -> None:
    # inf was accepted: `heartbeat_s = inf` then failed at run time (int(inf) in the registration TTL)
    with pytest.raises(ConfigError, match=r"federation\.heartbeat_s"):
        build_config({"federation": {"heartbeat_s": value}})


@pytest.mark.parametrize(
    ("header", "wait_s"), [(b"\xb2", 0.0), (b"3\xb2", 0.0), (b"9" * 400, 3600.0), (b"12", 12.0), (b"soon", 0.0)]
)
def test_a_registry_retry_after_header_cannot_crash_or_stall_the_node(header: bytes, wait_s: float) -> None:
    # "²" passed str.isdigit() and float("²") raised ValueError in the registration loop (killing the node's
    # nursery); 400 nines became float inf, and the loop slept forever.
    answer = httpx2.Response(503, headers=[(b"retry-after", header)])
    assert _result("https://registry.example", answer).retry_after_s == wait_s


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,  # was RecursionError
        b'{"v":1,"nodes":[{"last_success":' + b"9" * 5000 + b"}]}",  # was ValueError (int digit limit)
        json.dumps({"v": 1, "nodes": [{"id": "A" * 43, "ws": "ws://h/v1/client", "last_success": math.inf}]}).encode(),
        json.dumps({"v": 1, "nodes": [{"id": "A" * 43, "ws": "ws://h/v1/client", "last_success": math.nan}]}).encode(),
    ],
    ids=["deep", "bigint", "inf", "nan"],
)
def test_a_damaged_cache_file_is_reported_and_ignored(tmp_path: Path, data: bytes) -> None:
    # Infinity was loaded, then merge_cache's int(inf) raised OverflowError and `homing discover` died.
    path = tmp_path / "cache.json"
    path.write_bytes(data)
    candidates, errors = load_cache(path)
    assert candidates == [] and errors
    assert merge_cache(candidates, [], 1.0) == []


def test_a_deeply_nested_json_registration_is_a_400_not_a_500() -> None:
    request = Request(method="POST", path="/v1/nodes", query="", headers={"content-type": "application/json"},
                      body=b"[" * 100_000, client_ip="127.0.0.1")  # fmt: skip
    with pytest.raises(RemoteProtocolError, match="not JSON"):  # was RecursionError, answered HTTP 500
        _parse_doc(request)
