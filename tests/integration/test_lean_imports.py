"""A running node imports only what it uses (issue #17, docs/performance.md "One node at scale"): with no registry
and no DoH it never loads the HTTP client (httpx2), dnspython or the QR code library, and `homing node run` serves
without cryptography, prometheus-client, urllib.request/http.client/email or tomllib. Runs a node in a fresh
interpreter for a moment and inspects its sys.modules, so a top-level import anywhere on the path fails it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

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


# `python -m node ARGS` as runpy runs it, plus a thread that writes sys.modules once ports.json is written (and the
# node has served for half a second): the real start path of `homing node run`, from argv parsing to serving.
RUN_AND_REPORT = """
import json, runpy, sys, threading, time
from pathlib import Path

data, out = Path(sys.argv[1]), Path(sys.argv[2])

def report():
    while not (data / "ports.json").exists():
        time.sleep(0.01)
    time.sleep(0.5)
    part = out.with_name(out.name + ".part")
    loaded = sorted(name for name, module in sys.modules.items() if module is not None)  # None: marked absent
    maps = Path("/proc/self/maps").read_text()
    libs = sorted({line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/libssl" in line or "/libcrypto" in line})
    part.write_text(json.dumps({"modules": loaded, "libs": libs}))
    part.replace(out)

threading.Thread(target=report, daemon=True).start()
sys.argv = ["homing", *sys.argv[3:]]
runpy.run_module("node", run_name="__main__", alter_sys=True)
"""

# Off at start (each costs megabytes or tens of milliseconds): push crypto until the first subscription, the
# registry's HTTP client and discovery until --bootstrap/DoH, prometheus-client (the node writes /metrics itself),
# urllib.request/http.client/email (only `node status` and the decoy's Date header use them), tomllib (no TOML
# file), QR codes and the other subcommands, and OpenSSL (node/app/leanimports.py: `ssl` is a stand-in until used).
NOT_AT_START = (
    "_ssl", "_hashlib", "cryptography", "prometheus_client", "urllib.request", "http.client", "http.server", "email",
    "wsgiref",
    "tomllib", "dns", "httpx2", "httpcore2", "anyio", "h2", "segno", "bootstrap", "node.client.discovery",
    "node.client.connection", "node.app.registry", "node.app.registration", "node.cli.demo", "node.cli.discover",
)  # fmt: skip


def test_homing_node_run_serves_without_heavy_imports(tmp_path: Path) -> None:
    data, out = tmp_path / "node", tmp_path / "modules.json"
    flags = [a for f in ("ws", "swim", "peer", "metrics") for a in (f"--{f}", "127.0.0.1:0")]
    cmd = [sys.executable, "-c", RUN_AND_REPORT, str(data), str(out), "node", "run", "--data-dir", str(data),
           "--log-level", "warning", *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=homing_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert out.exists(), f"the node did not serve: {err.decode(errors='replace')[-2000:]}"
    report = json.loads(out.read_text())
    modules = set(report["modules"])
    assert {"trio", "node.app.service", "node.net.clients"} <= modules  # it saw a serving node
    loaded = [h for h in NOT_AT_START if any(m == h or m.startswith(h + ".") for m in modules)]
    assert loaded == [], f"imported before serving: {loaded}"
    assert report["libs"] == [], f"OpenSSL mapped before serving (4.5 MiB of RSS): {report['libs']}"
