"""Every `homing` command's --help exits 0: walks whatever subcommands node.cli.build_parser() has."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import subprocess
import sys

import pytest

from node.cli import COMMANDS, build_parser, main
from tests.helpers import REPO, homing_env, run_homing


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


def _top_level(parser: argparse.ArgumentParser) -> set[str]:
    return {p[0] for p in command_paths(parser) if len(p) == 1}


def test_every_command_is_in_the_table_and_its_module_builds_it() -> None:
    """`homing X ...` builds only X's module's commands (node.cli.COMMANDS): the table must name every command."""
    assert _top_level(build_parser()) == set(COMMANDS)
    for command, module in COMMANDS.items():
        assert _top_level(build_parser(command)) == {c for c, m in COMMANDS.items() if m == module}


@pytest.mark.parametrize(
    ("argv", "not_imported"),
    [
        (["discover", "--trust"], ("bootstrap", "node.cli.demo", "node.app.service")),
        # an admin command needs neither trio nor the HTTP server (bootstrap/cli.py)
        (["bootstrap", "nodes", "--bogus"], ("node.cli.discover", "node.cli.demo", "segno", "trio", "h11")),
        (["node", "status", "--bogus"], ("bootstrap", "node.cli.discover", "node.cli.demo", "segno", "dns")),
    ],
)
def test_a_command_imports_only_its_own_module(argv: list[str], not_imported: tuple[str, ...]) -> None:
    """A usage error of one command costs that command's imports, not the whole CLI's 1.4 s."""
    code = (
        "import sys\nfrom node.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
        "tops = ('dns', 'segno', 'trio', 'h11')\n"
        "print(sorted({m.split('.')[0] if m.split('.')[0] in tops else m for m in sys.modules}))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=homing_env(), capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.stdout.startswith("exit 2\n"), r.stdout + r.stderr
    loaded = ast.literal_eval(r.stdout.splitlines()[1])
    assert [m for m in loaded if m.startswith(not_imported)] == []
