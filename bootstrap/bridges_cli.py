"""`homing bootstrap bridges list|add|remove|rotate` (docs/operations.md, "Bridges"): the distributor's pool.

- `list`: every bridge with its state (bridge = handed out, withheld, failing, pending, expired ...) and card expiry.
- `add ID`: put a withheld bridge back into distribution (an id not yet seen is pre-approved).
- `remove ID`: withhold a bridge (it stays unlisted and federated, but GET /v1/bridges no longer hands it out:
  for a bridge that is known to be blocked, or whose operator asked).
- `rotate`: a new secret salt: every network's share of the pool changes at once (after a range learned too much).
Each is an audit entry (`homing bootstrap nodes audit`) and acts on the running service at its next request.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from bootstrap.store import Store
from node.protocol.errors import ConfigError
from node.protocol.identity import id_text, parse_id


def register(bsub: Any, data_dir_arg: Callable[[argparse.ArgumentParser], None], cmd: Callable[..., int]) -> None:
    bridges = bsub.add_parser("bridges", help="the bridge pool of GET /v1/bridges: list, add, remove, rotate")
    bridges.set_defaults(help_parser=bridges)
    sub = bridges.add_subparsers(dest="bridges_command", metavar="ACTION", parser_class=type(bridges))
    lst = sub.add_parser("list", help="every bridge with its state and card expiry")
    data_dir_arg(lst)
    lst.add_argument("--json", action="store_true", help="JSON output for scripts")
    lst.set_defaults(func=cmd, action="list")
    for action, text in (
        ("add", "hand a withheld bridge out again (an id not yet seen is pre-approved)"),
        ("remove", "withhold a bridge from distribution (it stays unlisted and federated)"),
    ):
        a = sub.add_parser(action, help=text)
        a.add_argument("id", metavar="ID", help="node id (43 base64url characters)")
        data_dir_arg(a)
        a.set_defaults(func=cmd, action=action)
    rot = sub.add_parser("rotate", help="new distributor salt: every network gets a new share of the pool")
    data_dir_arg(rot)
    rot.set_defaults(func=cmd, action="rotate")


def run(args: argparse.Namespace, store: Store, who: str) -> int:
    now = time.time()
    try:
        if args.action == "list":
            return _list(store, now, as_json=args.json)
        if args.action == "rotate":
            store.rotate_salt(secrets.randbits(62), now, who=who)
            print("rotated: every network gets a new share of the bridges from now on")
            return 0
        try:
            node_id = parse_id(args.id)
        except ValueError as exc:
            raise ConfigError("ID", f"{args.id!r} is not a node id: {exc}") from exc
        store.set_withheld(node_id, args.action == "remove", now, who=who)
        print(f"{'withheld' if args.action == 'remove' else 'added'} {args.id}")
        return 0
    except sqlite3.Error as exc:
        print(f"homing bootstrap: database error, nothing changed: {exc}", file=sys.stderr)
        return 1


def _list(store: Store, now: float, *, as_json: bool) -> int:
    records = [r for r in store.all_known() if r.bridge or r.withheld]
    rows: list[dict[str, Any]] = [
        {
            "id": id_text(r.id),
            "state": r.state(now),
            "ws": r.ws,
            "card_exp": r.card_exp,
            "passed": r.passed,
            "fails": r.fails,
            "in_pool": r.in_pool(now),
        }
        for r in records
    ]
    if as_json:
        print(json.dumps({"bridges": rows}, indent=2))
        return 0
    print(f"{'ID':<43}  {'STATE':<8}  {'CARD EXPIRES':<20}  WS")
    for row in rows:
        exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["card_exp"])) if row["card_exp"] else "-"
        print(f"{row['id']:<43}  {row['state']:<8}  {exp:<20}  {row['ws'] or '-'}")
    print(f"{len(rows)} bridge(s), {sum(1 for r in rows if r['in_pool'])} handed out")
    return 0
