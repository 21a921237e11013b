"""docs/operations.md "Rehearsal on one machine", walked: the `sh` blocks marked `<!-- walk -->` run in order in one
bash, on loopback, with free ports for the documented ones and a real knotd for `ns1.example.org:53`. A command
that fails (set -e), or a step that never happens (the whole walk has a hard time bound), fails the test, so the
guide cannot drift from the code."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.fixtures.dns import free_port
from tests.helpers import REPO, homing_env
from tests.ops.test_knot_acl import SECRET, knot  # noqa: F401  (the knotd fixture)

needs_knotd = pytest.mark.skipif(not shutil.which("knotd"), reason="needs Debian knot (knotd)")
GUIDE = REPO / "docs" / "operations.md"
WALK_TIMEOUT_S = 180  # about 25 `homing` commands; each starts Python (1-5 s on a loaded machine)


def walk_blocks(text: str) -> list[str]:
    """The fenced `sh` blocks that directly follow a `<!-- walk -->` line, in order."""
    return re.findall(r"^<!-- walk -->\n```sh\n(.*?)^```", text, re.M | re.S)


def substituted(script: str, server: str, tsig: Path) -> str:
    ports: dict[str, str] = {}
    script = re.sub(r"127\.0\.0\.1:(74\d\d)\b", lambda m: "127.0.0.1:" + ports.setdefault(m[1], str(free_port())),
                    script)  # fmt: skip
    return script.replace("ns1.example.org:53", server).replace("/etc/homing/tsig.key", str(tsig))


def test_the_guide_marks_the_whole_path_for_the_walk() -> None:
    script = "\n".join(walk_blocks(GUIDE.read_text()))
    for step in ("bootstrap init", "bootstrap run", "nodes approve", "node run", "publish-dns", "discover",
                 "kill -TERM", "rotate-key"):  # fmt: skip
        assert step in script, step


@needs_knotd
def test_walk_the_rehearsal(tmp_path: Path, knot: str) -> None:  # noqa: F811
    tsig = tmp_path / "tsig.key"
    tsig.write_text(f"hmac-sha256:homing-registry:{SECRET}\n")
    tsig.chmod(0o600)
    body = substituted("\n".join(walk_blocks(GUIDE.read_text())), knot, tsig)
    bin_dir = tmp_path / "bin"  # `homing` as an exec wrapper: `$!` of `homing node run ... &` is the node itself
    bin_dir.mkdir()
    (bin_dir / "homing").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m node "$@"\n')
    (bin_dir / "homing").chmod(0o755)
    env = homing_env(PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")
    preamble = "set -euxo pipefail\nPS4='+ $(date +%T) '\ntrap 'kill $(jobs -p) 2> /dev/null || true' EXIT\n"
    proc = subprocess.Popen(["bash", "-c", preamble + body], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=WALK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        logs = {p.name: p.read_text()[-1500:] for p in tmp_path.glob("*.log")}
        pytest.fail(f"the walk did not finish in {WALK_TIMEOUT_S} s:\n{stderr[-3000:]}\n{logs}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the walk left running
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "registry https://" not in out.stdout and "registry http://127.0.0.1" in out.stdout  # node status line
    host, port = knot.split(":")
    answer = dns.query.tcp(dns.message.make_query("_homing.example.org.", dns.rdatatype.TXT), host, port=int(port),
                           timeout=5)  # fmt: skip
    assert answer.answer, "publish-dns put the list into knotd"
    assert "new registry public key" in out.stdout
