"""Which build is running: the package version and, when run from a git checkout, the commit (for homing_build_info)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from node import __version__

_SHA_RE = re.compile(r"[0-9a-f]{40}")


@functools.cache
def git_commit(start: Path | None = None) -> str:
    """The commit of the checkout this package runs from (read from .git, no git binary needed), else ""."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        git = parent / ".git"
        if git.is_file():  # a worktree: "gitdir: PATH"
            text = git.read_text(errors="replace").strip()
            if not text.startswith("gitdir:"):
                return ""
            git = (parent / text.split(":", 1)[1].strip()).resolve()
        if git.is_dir():
            return _resolve_head(git)
    return ""


def _resolve_head(git: Path) -> str:
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return ""
    if _SHA_RE.fullmatch(head):
        return head
    if not head.startswith("ref: "):
        return ""
    ref = head[5:].strip()
    common = git
    if (git / "commondir").is_file():  # a linked worktree keeps branch refs in the main .git
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for base in (git, common):
        try:
            value = (base / ref).read_text().strip()
        except OSError:
            continue
        if _SHA_RE.fullmatch(value):
            return value
    try:
        for line in (common / "packed-refs").read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _SHA_RE.fullmatch(sha):
                return sha
    except OSError:
        pass
    return ""


def version_text() -> str:
    """`0.1.0` from a release, `0.1.0+g1a2b3c4d` from a checkout (what `--version` and the metrics say)."""
    commit = git_commit()
    return f"{__version__}+g{commit[:8]}" if commit else __version__
