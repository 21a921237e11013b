"""The `homing` console script: one entry point, each area registers its own subcommands.

Every command module exposes `register(subparsers)`; each parser it adds sets `func(args) -> int`.
Exit codes (docs/operations.md): 0 ok, 2 bad usage or config (one line naming the key or flag), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `command="node"` only the `node` commands, so that a running node does not import the
    demo, discovery (httpx2, dnspython), QR code (segno) and registry modules it never uses (issue #17)."""
    from node.cli import node as cli_node

    parser = _Parser(prog="homing", description="homing: federated signalling for end-to-end encrypted calls")
    parser.add_argument("--version", action="version", version=f"homing {version_text()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if command == "node":
        cli_node.register(sub)
        return parser
    from bootstrap import cli as bootstrap_cli
    from node.cli import demo
    from node.cli import discover as cli_discover

    demo.register(sub)
    cli_node.register(sub)
    bootstrap_cli.register(sub)
    cli_discover.register(sub)
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
        return int(func(args))
    except ConfigError as exc:
        print(f"homing: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except HomingError as exc:
        print(f"homing: {exc}", file=sys.stderr)
        return 1
