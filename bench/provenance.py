"""The commit a benchmark ran, for the header of every report: each figure states the commit, the machine's load
and the command that made it (docs/performance.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def commit(tree: Path = REPO, *, paths: tuple[str, ...] = ()) -> str:
    """`tree`'s HEAD as a short hash, with "+dirty" when tracked files (under `paths`, if any are given) differ
    from it; "unknown" where git cannot say."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                              timeout=10)  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=tree,
                                capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    name = head.stdout.strip()
    if head.returncode != 0 or not name:
        return "unknown"
    return name + ("+dirty" if status.stdout.strip() else "")
