"""Import rules (DESIGN.md rule 1): protocol cores are sans-IO.

A core imports no trio, socket, time, asyncio, os, threading or subprocess; it may name `random.Random` (the
injected generator's type) but never call the module-level generator. Drivers are free to do I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE_GLOBS = [
    "node/swim/*.py",
    "node/wire/*.py",
    "node/rendezvous.py",
    "node/relay.py",
    "node/crypto.py",
    "node/nodelist.py",
    "node/txt.py",
    "node/card.py",
    "bootstrap/registry.py",
    "bootstrap/nodelist.py",
]
FORBIDDEN = {"trio", "socket", "time", "asyncio", "os", "threading", "subprocess", "select", "trio_websocket"}


def core_files() -> list[Path]:
    files: set[Path] = set()
    for pattern in CORE_GLOBS:
        files.update(REPO.glob(pattern))
    return sorted(files)


def test_there_are_cores() -> None:
    names = {p.relative_to(REPO).as_posix() for p in core_files()}
    assert "node/swim/config.py" in names
    assert "node/crypto.py" in names


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
