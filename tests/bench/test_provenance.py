"""bench/provenance.py: the commit every benchmark report states, marked when the tree differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.provenance import commit


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=True, timeout=30).stdout


def test_a_clean_tree_is_its_short_hash_and_a_changed_tracked_file_marks_it_dirty(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    tree.mkdir()
    _git(tree, "init", "-q")
    for name in ("node.py", "notes.md"):
        (tree / name).write_text("one\n")
    _git(tree, "add", ".")
    _git(tree, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-qm", "first")
    head = _git(tree, "rev-parse", "--short", "HEAD").strip()
    (tree / "untracked.txt").write_text("not part of any commit\n")
    assert commit(tree) == head  # untracked files do not count
    (tree / "notes.md").write_text("two\n")
    assert commit(tree) == head + "+dirty"
    assert commit(tree, paths=("node.py",)) == head  # only the paths asked about


def test_outside_a_repository_it_says_unknown(tmp_path: Path) -> None:
    assert commit(tmp_path) == "unknown"
