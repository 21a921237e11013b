"""`homing bootstrap backup`: the registry's signing key and a consistent copy of its database, while it runs.

The database is copied with SQLite's online backup API (no `sqlite3` binary needed, safe while the service writes);
the key is copied byte for byte with mode 0600, and the key rotation statements when there are any (without them,
nodes and clients that know only an older key could not follow the registry to its new host). Restoring is copying
the files back into an empty data dir (docs/operations.md, "Back up and move a registry").
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from bootstrap.config import KEY_NAME, ROTATIONS_NAME, default_data_dir
from bootstrap.store import DB_NAME
from node.client.files import write_atomic
from node.protocol.errors import ConfigError


def backup(data_dir: Path, to: Path) -> list[Path]:
    """Copy `registry.key` and `registry.sqlite3` from `data_dir` into the directory `to` (created 0700)."""
    key, db = data_dir / KEY_NAME, data_dir / DB_NAME
    for path in (key, db):
        if not path.exists():
            raise ConfigError("--data-dir", f"{path} does not exist: is {data_dir} a registry's data dir?")
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(to.iterdir()):
        raise ConfigError("--to", f"{to} is not empty: back up into a new directory")
    write_atomic(to / KEY_NAME, key.read_bytes(), mode=0o600)
    tmp = to / (DB_NAME + ".tmp")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    tmp.chmod(0o600)
    shutil.move(tmp, to / DB_NAME)
    written = [to / KEY_NAME, to / DB_NAME]
    if (data_dir / ROTATIONS_NAME).exists():
        write_atomic(to / ROTATIONS_NAME, (data_dir / ROTATIONS_NAME).read_bytes(), mode=0o600)
        written.append(to / ROTATIONS_NAME)
    return written


def register(bsub: Any) -> None:
    p = bsub.add_parser("backup", help="copy the signing key and a consistent database snapshot (safe while running)")
    p.add_argument(
        "--data-dir", type=Path, default=None, metavar="D", help=f"data directory (default {default_data_dir()})"
    )
    p.add_argument("--to", type=Path, required=True, metavar="DIR", help="a new, empty directory for the copies")
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    for path in backup(data_dir, args.to):
        print(f"wrote {path}")
    print("keep this directory offline: the key signs node lists in your registry's name")
    return 0
