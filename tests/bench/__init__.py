"""Tests of the benchmarks under bench/ (smoke runs and their parts)."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import REPO

# the benches that drive Node.js load generators or relays (bench/relay/node_modules, installed by tests/run)
needs_node_relay = pytest.mark.skipif(
    shutil.which("node") is None or not (REPO / "bench" / "relay" / "node_modules" / "ws").is_dir(),
    reason="needs Node.js and `cd bench/relay && npm install`",
)
