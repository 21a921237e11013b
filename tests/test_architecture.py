"""Import rules (docs/architecture.md): protocol cores are sans-IO.

The layer contract itself (which folder may import which, transitively) is checked by import-linter
(`lint-imports`, configured in pyproject.toml and run by tests/run); this file checks what import-linter cannot:
no module-level random generator and no `hash()` in the protocol layer, and that the contract fails when broken.

A core imports no trio, socket, time, asyncio, os, threading or subprocess; it may name `random.Random` (the
injected generator's type) but never call the module-level generator. Drivers are free to do I/O.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE_GLOBS = ["node/protocol/**/*.py", "bootstrap/registry.py"]
FORBIDDEN = {"trio", "socket", "time", "asyncio", "os", "threading", "subprocess", "select", "trio_websocket"}


def core_files() -> list[Path]:
    files: set[Path] = set()
    for pattern in CORE_GLOBS:
        files.update(REPO.glob(pattern))
    return sorted(files)


def test_there_are_cores() -> None:
    names = {p.relative_to(REPO).as_posix() for p in core_files()}
    assert "node/protocol/swim/config.py" in names
    assert "node/protocol/crypto.py" in names


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_is_sans_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN:
                    problems.append(f"line {node.lineno}: import {alias.name}")
                if alias.name == "random" and alias.asname:
                    problems.append(f"line {node.lineno}: random imported under another name")
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[0]
            if mod in FORBIDDEN:
                problems.append(f"line {node.lineno}: from {node.module} import ...")
            if mod == "random" and any(a.name != "Random" for a in node.names):
                problems.append(f"line {node.lineno}: from random import something other than Random")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            problems.append(f"line {node.lineno}: random.{node.attr} (use the injected random.Random)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hash":
            problems.append(f"line {node.lineno}: hash() is salted per process; use blake2b")
    assert not problems, f"{path.name} breaks the sans-IO rule:\n" + "\n".join(problems)


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(dst: Path) -> None:
    for name in ("node", "bootstrap"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")


def test_layer_contract_holds() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("node/protocol/crypto.py", "import trio", "The protocol layer is pure"),
        ("node/protocol/relay/core.py", "import node.app.config", "Layers point down"),
        ("node/client/connection.py", "import node.app.service", "The client side uses only the protocol layer"),
    ],
)
def test_layer_contract_fails_when_broken(tmp_path: Path, module: str, line: str, broken: str) -> None:
    """The check is not vacuous: one forbidden import added to a copy of the tree breaks the named contract."""
    _copy_tree(tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout
