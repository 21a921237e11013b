"""A running node imports only what it uses (issue #17, docs/performance.md "One node at scale"): with no registry
and no DoH it never loads the HTTP client (httpx2), dnspython or the QR code library. Runs a node in a fresh
interpreter for a moment and inspects its sys.modules, so a top-level import anywhere on the path fails it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO, homing_env

PROBE = """
import json, sys, tempfile, trio
from pathlib import Path
from node.app.service import run_node
from node.protocol.identity import Identity
from tests.integration.cluster import loopback_config

async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_node, loopback_config(Path(d) / "n"), Identity.generate())
            await trio.sleep(0.5)
            print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
            handle.request_shutdown()

trio.run(main)
"""

NOT_FOR_AN_IDLE_NODE = ("httpx2", "httpcore2", "dns", "segno", "anyio", "h2")


def test_an_idle_node_without_registry_or_doh_does_not_import_http_dns_or_qr() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=homing_env(), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "trio" in modules and "node" in modules  # the probe saw a running node
    assert sorted(modules & set(NOT_FOR_AN_IDLE_NODE)) == []
