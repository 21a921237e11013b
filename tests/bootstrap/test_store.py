"""The registry's SQLite store: WAL, migrations, the change counter, pruning; and current_signed_list."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from bootstrap.registry import NodeRecord
from bootstrap.service import current_signed_list
from bootstrap.store import SCHEMA_VERSION, Store
from node.protocol.errors import ConfigError
from node.protocol.nodelist import open_node_list
from tests.bootstrap.util import init_registry

NOW = 1_700_000_000
A = NodeRecord(
    id=b"a" * 32, ws="ws://a/v1/client", swim="a:1", peer="a:2", ttl=100, last_ts=NOW, seen=NOW, approved=True
)


def test_schema_wal_and_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bootstrap init"):
        Store.open(tmp_path)
    store = Store.open(tmp_path, create=True)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(ConfigError, match="newer"):
        Store.open(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "registry.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a usable"):
        Store.open(tmp_path / "junk")


def test_writes_bump_the_generation_and_survive_reopen(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    g0 = store.generation()
    assert store.put(A, bump=False, expect=None)
    assert store.generation() == g0
    assert not store.put(A, bump=True, expect=None)  # someone else wrote first: refused, no bump
    assert store.generation() == g0
    store.set_banned(A.id, NOW, who="test")
    assert store.generation() == g0 + 1
    store.close()
    again = Store.open(tmp_path)
    got = again.get(A.id)
    assert got is not None and got.banned and got.ws == A.ws and again.listable(NOW) == []
    assert again.remove(A.id, NOW, who="test") and not again.remove(A.id, NOW, who="test")
    assert again.all_known() == [] and again.count() == 1  # the replay floor stays
    assert again.prune(NOW + 10_000, floor_keep_s=420, pending_keep_s=3600, expired_keep_s=86_400) == 1
    assert again.count() == 0


def test_concurrent_admin_writer_waits_instead_of_failing(tmp_path: Path) -> None:
    a = Store.open(tmp_path, create=True)
    b = Store.open(tmp_path)
    a.db.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            b.db.execute("PRAGMA busy_timeout = 50")
            b.set_banned(A.id, NOW, who="test")  # a holds the write lock: b waits its busy timeout, then fails cleanly
    finally:
        a.db.execute("ROLLBACK")
    b.set_banned(A.id, NOW, who="test")
    assert a.get(A.id) is not None


def test_current_signed_list_without_the_service(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)
    store = Store.open(tmp_path)
    store.put(A, bump=True, expect=None)
    store.close()
    doc = current_signed_list(tmp_path, NOW + 1)
    nodes = open_node_list(doc, {registry.id}, now=NOW + 1)
    assert [n.id for n in nodes.nodes] == [A.id] and nodes.issued == NOW + 1
    assert open_node_list(current_signed_list(tmp_path, NOW + 200), {registry.id}, now=NOW + 200).nodes == ()
    with pytest.raises(ConfigError):
        current_signed_list(tmp_path / "nothing", NOW)


@pytest.mark.parametrize("action", ["approve", "ban", "remove"])
def test_an_admin_action_between_a_registrations_read_and_write_is_not_undone(tmp_path: Path, action: str) -> None:
    """The service reads a node's row, decides on its registration, then writes the row back, expecting it
    unchanged. An admin's `approve`, `ban` or `remove` (another process: the CLI) may land in between. The check
    used to cover only the replay floor, which those do not touch: the write went through with the old
    `approved`/`banned`/`seen`, and the admin's action was lost without a word (seen in a CI run: a node approved
    while it heartbeat every second stayed pending). Now the write is refused and the service decides again on
    the fresh row. On the code before, the stale write went through and the action was undone, all three cases."""
    registry = Store.open(tmp_path, create=True)
    admin = Store.open(tmp_path)  # the CLI's own connection
    pending = attrs.evolve(A, approved=action != "approve")
    assert registry.put(pending, bump=True, expect=None)
    read = registry.get(A.id)  # the registration's read
    assert read is not None
    if action == "approve":
        admin.set_approved(A.id, NOW, who="root")
    elif action == "ban":
        admin.set_banned(A.id, NOW, who="root")
    else:
        assert admin.remove(A.id, NOW, who="root")
    after_admin = registry.get(A.id)
    heartbeat = attrs.evolve(read, last_ts=read.last_ts + 1, seen=NOW + 1)  # decided on the stale read
    assert not registry.put(heartbeat, bump=False, expect=read), "a write decided on a stale row went through"
    assert registry.get(A.id) == after_admin
    fresh = registry.get(A.id)
    assert fresh is not None and registry.put(attrs.evolve(fresh, last_ts=fresh.last_ts + 1), bump=False, expect=fresh)


def test_a_ban_of_the_old_key_between_a_rotations_read_and_write_is_not_undone(tmp_path: Path) -> None:
    """A registration with a rotation statement reads the old key's row, moves its approval to the new key and
    retires the old one. The write checked only the new key's row, and retired the old key in a transaction of its
    own: an admin's `ban` of the old key that landed in between left the new key approved (a ban that "stays with
    the new key" did not). Now the old row is checked and retired in the same transaction; on the code before the
    write went through and the new key was approved under a banned old key."""
    registry = Store.open(tmp_path, create=True)
    admin = Store.open(tmp_path)
    new_id = b"n" * 32
    assert registry.put(A, bump=True, expect=None)
    old = registry.get(A.id)  # the rotation's read of the old key
    assert old is not None and old.approved
    admin.set_banned(A.id, NOW, who="root")
    moved = NodeRecord(id=new_id, ws="ws://n/v1/client", swim="n:1", peer="n:2", ttl=100, last_ts=NOW + 1,
                       seen=NOW + 1, approved=True, first_seen=NOW + 1, moved_at=NOW + 1)  # fmt: skip
    assert not registry.put(moved, bump=True, expect=None, audit="key_rotated", now=NOW + 1, retire=old)
    assert registry.get(new_id) is None
    got = registry.get(A.id)
    assert got is not None and got.banned
    # unchanged, the old key is retired with the move, in one transaction
    admin.set_approved(A.id, NOW, who="root")
    fresh = registry.get(A.id)
    assert registry.put(moved, bump=True, expect=None, audit="key_rotated", now=NOW + 1, retire=fresh)
    retired = registry.get(A.id)
    assert retired is not None and not retired.approved and retired.seen is None
    assert [e.action for e in registry.audit()][-2:] == ["key_rotated", "key_retired"]
