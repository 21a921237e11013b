"""The client-protocol vectors the browser client tests against are current, and the library's own tests pass."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.helpers import REPO
from tests.vectors.make_client_frames import OUT, build


def test_client_frame_vectors_match_the_node_encoders() -> None:
    assert json.loads(OUT.read_text()) == json.loads(json.dumps(build())), (
        "run python -m tests.vectors.make_client_frames"
    )


@pytest.mark.timeout(120)
def test_web_library_unit_tests_pass_under_node() -> None:
    if shutil.which("node") is None or not (REPO / "web" / "node_modules" / "@msgpack").is_dir():
        pytest.skip("Node.js or web/node_modules missing (run `npm ci` in web/)")
    out = subprocess.run(["node", "--test", "test/"], cwd=REPO / "web", capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout
