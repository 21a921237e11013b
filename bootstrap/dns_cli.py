"""`homing bootstrap export-txt|publish-dns`: placeholder; the DNS work fills this file in (it owns it)."""

from __future__ import annotations

from typing import Any


def register(bootstrap_subparsers: Any) -> None:
    """Adds the DNS subcommands to `homing bootstrap`. Empty until the DNS work lands."""
