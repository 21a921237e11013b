"""Benchmarks start `homing` as an installed copy starts: from compiled modules.

`pip install` compiles every module it installs; this checkout is installed in editable mode, and a shell with
PYTHONDONTWRITEBYTECODE set (this project's development machines set it) then recompiles every module of ours at
each start, ~0.1 s that no installed node pays (docs/performance.md, "Process cost"). `compiled_env` compiles the
checkout's packages into a cache outside the repository (PYTHONPYCACHEPREFIX, so no __pycache__ appears in the
tree) and returns the environment that makes a child process use it.
"""

from __future__ import annotations

import compileall
import functools
import hashlib
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("node", "bootstrap")


@functools.cache
def _compiled() -> str:
    """Compile the packages into the cache once per bench process (checking ~150 files takes ~30 ms); its path."""
    tag = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    prefix = Path(tempfile.gettempdir()) / f"homing-bench-pyc-{tag}"
    old_prefix = sys.pycache_prefix
    sys.pycache_prefix = str(prefix)  # compileall writes where the child will look
    try:
        for package in PACKAGES:
            compileall.compile_dir(REPO / package, quiet=1)
    finally:
        sys.pycache_prefix = old_prefix
    return str(prefix)


def compiled_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that starts from compiled modules (compiled on the first call if stale)."""
    child = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    child["PYTHONPYCACHEPREFIX"] = _compiled()
    return child
