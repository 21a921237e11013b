"""`homing demo`: a whole federation and a call flow on loopback (see issue: operators and newcomers)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a bootstrap, three nodes and two clients on loopback and place a call")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("homing demo: not built yet", flush=True)
    return 1
