"""The `homing` console script: one entry point, each area registers its own subcommands.

Every command module exposes `register(subparsers)`; each parser it adds sets `func(args) -> int`.
Exit codes (docs/operations.md): 0 ok, 2 bad usage or config (one line naming the key or flag), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any, Final

from node.app.buildinfo import version_text
from node.protocol.errors import ConfigError, HomingError

_ID_TEXT = re.compile(r"-[A-Za-z0-9_-]{42}")  # a node or registry id (43 base64url characters) that starts with -


class _Parser(argparse.ArgumentParser):
    def _parse_optional(self, arg_string: str) -> Any:
        # one id in 64 starts with "-": argparse would take it for an option; an id is never one of our options
        if _ID_TEXT.fullmatch(arg_string):
            return None
        return super()._parse_optional(arg_string)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage on several lines; keep the reason on one line, exit 2 as argparse does.
        self.exit(2, f"{self.prog}: error: {message}\n")


# Each top-level command and the module whose `register` adds it, in the order `homing --help` lists them.
COMMANDS: Final = {
    "demo": "node.cli.demo",
    "node": "node.cli.node",
    "bootstrap": "bootstrap.cli",
    "discover": "node.cli.discover",
    "card": "node.cli.discover",
    "qr": "node.cli.discover",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with a `command` of COMMANDS, only its module's commands. Each module imports what its
    commands run (trio, the node service, httpx2, dnspython, segno, SQLite): all of them take 1.4 s here. So a
    running node imports no demo, discovery, QR code or registry code (issue #17), and `homing bootstrap nodes
    approve ID` or a mistyped flag answers in about half the time. `homing`, `--help`, `--version` and an unknown
    command get the whole CLI."""
    parser = _Parser(prog="homing", description="homing: federated signalling for end-to-end encrypted calls")
    parser.add_argument("--version", action="version", version=f"homing {version_text()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    named = COMMANDS.get(command or "")
    for module in [named] if named else list(dict.fromkeys(COMMANDS.values())):
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:2] == ["node", "run"] and argv is None:  # this process is a node and nothing else
        from node.app.leanimports import defer_openssl

        defer_openssl()
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # `homing` or `homing node` alone: show the help of the level that was named
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return 2
    try:
        try:
            return int(func(args))
        except BaseExceptionGroup as group:
            lone = _lone_error(group)
            if lone is None:
                raise
            raise lone from None
    except ConfigError as exc:
        print(f"homing: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except HomingError as exc:
        print(f"homing: {exc}", file=sys.stderr)
        return 1


def _lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error of ours (or Ctrl-C) a trio nursery wrapped, however deep: a port in use, raised in a task the
    node started, is then printed as one line like any other (ListenError), not as a traceback of groups."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner if isinstance(inner, HomingError | KeyboardInterrupt) else None
