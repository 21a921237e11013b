"""`homing node run` raises its soft open-file limit toward [clients] connections_max (node/cli/node.py)."""

from __future__ import annotations

import resource
import subprocess
import sys

from tests.helpers import REPO, homing_env

PROBE = """
import resource
from node.cli.node import raise_fd_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
raise_fd_limit(5000)
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_soft_limit_is_raised_to_connections_max_plus_a_margin_within_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=homing_env(), capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    want = 5000 + 1024
    assert int(out.stdout) == (want if hard == resource.RLIM_INFINITY else min(want, hard))
