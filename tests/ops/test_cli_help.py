"""Every `homing` command's --help exits 0: walks whatever subcommands node.cli.build_parser() has."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from node.cli import build_parser, main
from tests.helpers import run_homing


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += command_paths(sub, (*prefix, name))
    return paths


PATHS = command_paths(build_parser())


def test_the_walk_finds_commands() -> None:
    assert () in PATHS
    assert ("demo",) in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(("homing", *p)))
def test_help_exits_zero(path: tuple[str, ...]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code in (0, None), err.getvalue()
    text = out.getvalue()
    assert text.startswith("usage: homing" + "".join(f" {p}" for p in path)), text[:200]
    assert err.getvalue() == ""


def test_help_through_the_console_script() -> None:
    r = run_homing("--help", timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: homing"), r.stderr
    for path in PATHS:
        if len(path) == 1:
            assert path[0] in r.stdout
