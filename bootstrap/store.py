"""The registry's SQLite store: nodes, bans, approvals and replay floors, in `DATA_DIR/registry.sqlite3`.

- WAL journal with `synchronous=FULL`: a write is acknowledged (the HTTP 200 is sent) only after its commit,
  and a committed transaction is in the WAL file and fsync'd. `kill -9` of the process therefore loses nothing
  acknowledged (even `synchronous=NORMAL` would survive a process kill, since committed pages are in the OS
  cache; FULL also survives a power cut, for the price of one fsync per registration).
- Schema versions are `PRAGMA user_version`; `MIGRATIONS[i]` takes version i to i+1, each in one transaction.
  A database newer than this code is refused rather than guessed at.
- `meta.generation` is bumped in the same transaction as every write that changes what the signed list shows
  (and by every admin action), so the running service sees an admin's change on its very next request by
  reading one integer.
- The admin CLI opens the same file from another process; `busy_timeout` makes writers queue, not fail.
- `audit` keeps who did what to which node, and when: every admin action (`who` = the OS user that ran
  `homing bootstrap nodes ...`) and what the service decided on its own (`who` = "api": a new node pending or
  auto-approved), in the same transaction as the change. `homing bootstrap nodes audit` prints it.

This module does I/O (it is a driver, not a core); the rules live in `registry.py`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from bootstrap.registry import NodeRecord
from node.protocol.errors import ConfigError, HomingError

DB_NAME = "registry.sqlite3"
BUSY_TIMEOUT_MS = 5000

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: nodes with approval, ban and replay floor in one row; a change counter for caches.
    """
    CREATE TABLE nodes (
        id BLOB PRIMARY KEY CHECK (length(id) = 32),
        ws TEXT NOT NULL DEFAULT '',
        swim TEXT NOT NULL DEFAULT '',
        peer TEXT NOT NULL DEFAULT '',
        ttl INTEGER NOT NULL DEFAULT 0,
        last_ts INTEGER NOT NULL DEFAULT 0,
        seen INTEGER,
        approved INTEGER NOT NULL DEFAULT 0,
        banned INTEGER NOT NULL DEFAULT 0,
        first_seen INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('generation', 0);
    """,
    # 1 -> 2: the audit trail.
    """
    CREATE TABLE audit (
        at INTEGER NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        node BLOB NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    """,
    # 2 -> 3: bridges (unlisted nodes with their own card, an admin's withholding, the distributor's secret salt)
    # and the registry's own health checks of each node's client endpoint.
    """
    ALTER TABLE nodes ADD COLUMN bridge INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN withheld INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN card BLOB NOT NULL DEFAULT x'';
    ALTER TABLE nodes ADD COLUMN card_exp INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN passed INTEGER;
    ALTER TABLE nodes ADD COLUMN fails INTEGER NOT NULL DEFAULT 0;
    INSERT INTO meta (key, value) VALUES ('bridge_salt', abs(random()));
    """,
    # 3 -> 4: the live members a node said it sees at its last registration (docs/bootstrap.md).
    """
    ALTER TABLE nodes ADD COLUMN peers INTEGER;
    """,
    # 4 -> 5: when a node's approval moved to it from a rotated-away key (registry.Policy.rotation_hold_s).
    """
    ALTER TABLE nodes ADD COLUMN moved_at INTEGER NOT NULL DEFAULT 0;
    """,
)
AUDIT_KEEP_ROWS = 100_000  # the service's own oldest audit rows beyond this are pruned (admins' are kept)
SCHEMA_VERSION = len(MIGRATIONS)


@attrs.frozen(kw_only=True, slots=True)
class AuditEntry:
    at: int  # unix seconds
    who: str  # the OS user of an admin command, or "api" for the service itself
    action: str  # approve, ban, remove, pending, auto_approved, key_rotated, key_retired, rotate_key (registry key)
    node: bytes


_COLUMNS = (
    "id, ws, swim, peer, ttl, last_ts, seen, approved, banned, first_seen, bridge, withheld, card, card_exp, passed,"
    " fails, peers, moved_at"
)


def _row_to_record(row: Any) -> NodeRecord:
    node_id, ws, swim, peer, ttl, last_ts, seen, approved, banned, first_seen = row[:10]
    bridge, withheld, card, card_exp, passed, fails, peers, moved_at = row[10:]
    return NodeRecord(
        bridge=bool(bridge),
        withheld=bool(withheld),
        card=bytes(card),
        card_exp=int(card_exp),
        passed=None if passed is None else int(passed),
        fails=int(fails),
        id=bytes(node_id),
        ws=str(ws),
        swim=str(swim),
        peer=str(peer),
        ttl=int(ttl),
        last_ts=int(last_ts),
        seen=_int_or_none(seen),
        approved=bool(approved),
        banned=bool(banned),
        first_seen=int(first_seen),
        peers=None if peers is None else int(peers),
        moved_at=int(moved_at),
    )


class Store:
    """One connection to the registry database. Not thread-safe: callers serialise use of one Store."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise ConfigError("--data-dir", f"no registry database at {path} (run `homing bootstrap init` first)")
        self.path = path
        if create and not path.exists():
            # owner-only from the first byte, whatever the umask or the data dir's mode (a StateDirectory is 0755):
            # the database holds the bridge distribution salt and every node's addresses; SQLite gives its -wal and
            # -shm files the database file's permissions
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly what we say.
        self.db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        try:
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError("--data-dir", f"{path}: SQLite refused WAL mode (got {mode}); use a local disk")
            self.db.execute("PRAGMA synchronous = FULL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            name = str(getattr(exc, "sqlite_errorname", ""))
            if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
                raise ConfigError(
                    str(path), f"permission denied ({exc}); run as the registry's user (e.g. sudo -u homing ...)"
                ) from None
            if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
                # a full disk, not a damaged database: exit 1, which the systemd unit retries. Before, this was the
                # config error below ("not a usable registry database"): no retry, and a hint to give up on the file
                raise HomingError(
                    f"cannot open the registry database {path}: {exc} ({name}); if its disk is full, free space on "
                    "it and start again: the database is kept as it was"
                ) from exc
            raise ConfigError("--data-dir", f"{path}: not a usable registry database ({exc})") from exc

    @classmethod
    def open(cls, data_dir: Path, *, create: bool = False) -> Store:
        return cls(data_dir / DB_NAME, create=create)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so read-then-write decisions cannot interleave.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError("--data-dir", f"database schema {version} is newer than this homing ({SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            with self._tx() as db:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
            version += 1

    # --- reads ------------------------------------------------------------------------------------------

    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def get(self, node_id: bytes) -> NodeRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return None if row is None else _row_to_record(row)

    def listable(self, now: float) -> list[NodeRecord]:
        """Approved, unbanned records whose lease runs at `now`: the same rows as `live`; the registry core leaves
        out the ones failing health checks and the bridges."""
        return self.live(now)

    def live(self, now: float) -> list[NodeRecord]:
        """Approved, unbanned records whose lease runs, failing or not: the ones the health checks visit."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM nodes WHERE approved = 1 AND banned = 0 AND seen IS NOT NULL"
            " AND seen + ttl > ? ORDER BY id",
            (int(now),),
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def bridge_pool(self, now: float) -> list[NodeRecord]:
        """Bridges the distributor may hand out at `now` (the registry core filters again: `in_pool`)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM nodes WHERE bridge = 1 AND withheld = 0 AND approved = 1 AND banned = 0"
            " AND seen IS NOT NULL AND seen + ttl > ? AND card_exp > ? ORDER BY id",
            (int(now), int(now)),
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def all_known(self) -> list[NodeRecord]:
        """Every record an admin should see (a removed node, kept only as a replay floor, is hidden)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM nodes WHERE seen IS NOT NULL OR approved = 1 OR banned = 1 ORDER BY first_seen, id"
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def audit(self, *, limit: int = 1000) -> list[AuditEntry]:
        """The newest `limit` audit rows, oldest first."""
        rows = self.db.execute(
            "SELECT at, who, action, node FROM (SELECT rowid, * FROM audit ORDER BY rowid DESC LIMIT ?) ORDER BY rowid",
            (limit,),
        ).fetchall()
        return [AuditEntry(at=int(a), who=str(w), action=str(x), node=bytes(n)) for a, w, x, n in rows]

    def audit_since(self, rowid: int) -> tuple[int, list[AuditEntry]]:
        """Audit rows after `rowid` (at most 1000) and the last rowid read."""
        rows = self.db.execute(
            "SELECT rowid, at, who, action, node FROM audit WHERE rowid > ? ORDER BY rowid LIMIT 1000", (rowid,)
        ).fetchall()
        last = int(rows[-1][0]) if rows else rowid
        return last, [AuditEntry(at=int(a), who=str(w), action=str(x), node=bytes(n)) for _, a, w, x, n in rows]

    def salt(self) -> bytes:
        """The distributor's secret (docs/discovery.md, "Bridges"); `rotate_salt` replaces it."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'bridge_salt'").fetchone()
        return int(row[0]).to_bytes(8, "big", signed=True)

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM nodes").fetchone()[0])

    # --- writes -----------------------------------------------------------------------------------------

    def put(
        self, record: NodeRecord, *, bump: bool, expect: NodeRecord | None, audit: str = "", now: float = 0.0,
        retire: NodeRecord | None = None,
    ) -> bool:  # fmt: skip
        """Write `record` if the stored row is still `expect`, the row the caller decided on (None: no row yet), in
        every field a registration writes back and someone else may change meanwhile: its replay floor (another
        registration), and `seen`, `approved`, `banned` (an admin's `approve`, `ban`, `remove`, a key rotation's
        retirement, all without touching the floor). With `audit`, add an audit row (who "api") for it in the same
        transaction.

        Returns False when another writer got there first (the caller decides again on fresh state). Checking the
        floor alone let a registration read before an admin's `approve` or `ban` and written after it put the old
        `approved`/`banned` back: the admin's action was lost without a word.

        `retire`: the row of the key a rotation statement replaces, as the caller read it; in the same transaction,
        and only if it is unchanged too (a `ban` of it that lands meanwhile makes the caller decide again, 403),
        it is unlisted and loses its approval (it moved to `record`), audited `key_retired`.
        """
        with self._tx() as db:
            if _state(db, record.id) != _expected(expect):
                return False
            if retire is not None and _state(db, retire.id) != _expected(retire):
                return False
            # health (passed, fails) and an admin's withholding are the registry's own: a registration keeps them
            db.execute(
                f"INSERT INTO nodes ({_COLUMNS}) VALUES ({', '.join('?' * 18)}) ON CONFLICT (id) DO UPDATE SET"
                " ws = excluded.ws, swim = excluded.swim, peer = excluded.peer, ttl = excluded.ttl,"
                " last_ts = excluded.last_ts, seen = excluded.seen, approved = excluded.approved,"
                " banned = excluded.banned, first_seen = excluded.first_seen, bridge = excluded.bridge,"
                " card = excluded.card, card_exp = excluded.card_exp, peers = excluded.peers,"
                " moved_at = excluded.moved_at",
                (
                    record.id,
                    record.ws,
                    record.swim,
                    record.peer,
                    record.ttl,
                    record.last_ts,
                    record.seen,
                    int(record.approved),
                    int(record.banned),
                    record.first_seen,
                    int(record.bridge),
                    int(record.withheld),
                    record.card,
                    record.card_exp,
                    record.passed,
                    record.fails,
                    record.peers,
                    record.moved_at,
                ),
            )
            if bump:
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            if audit:
                _audit(db, now, "api", audit, record.id)
            if retire is not None:
                db.execute("UPDATE nodes SET seen = NULL, approved = 0 WHERE id = ?", (retire.id,))
                _audit(db, now, "api", "key_retired", retire.id)
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        return True

    def make_room(self, nodes_max: int) -> bool:
        """Before a new id's row: True when the table is under `nodes_max` rows, after deleting the pending rows
        (registered, never approved, not banned or withheld: strangers' nodes) seen longest ago, as many as it
        takes. False when those are not enough (the rest are approved, banned, withheld or replay floors).

        Without this a stranger filled the table with pending ids (one address at the write rate takes about
        an hour for 10,000, and they are kept a day) and every new node got 503 until the rows were pruned; an
        honest pending node re-registers every heartbeat, so it is the stalest row only after `nodes_max` new
        ids within one heartbeat. The DELETE re-checks the row in its own statement: an admin's `approve` that
        lands first keeps the row, one that lands after pre-approves the id again."""
        with self._tx() as db:
            excess = int(db.execute("SELECT count(*) FROM nodes").fetchone()[0]) - nodes_max + 1
            if excess <= 0:
                return True
            deleted = db.execute(
                "DELETE FROM nodes WHERE id IN (SELECT id FROM nodes WHERE approved = 0 AND banned = 0"
                " AND withheld = 0 AND seen IS NOT NULL ORDER BY seen, id LIMIT ?)",
                (excess,),
            ).rowcount
            return int(deleted) >= excess

    def set_approved(self, node_id: bytes, now: float, *, who: str) -> None:
        """Approve a node (and lift a ban on it). An id not seen yet is pre-approved."""
        with self._tx() as db:
            _audit(db, now, who, "approve", node_id)
            db.execute(
                "INSERT INTO nodes (id, approved, first_seen) VALUES (?, 1, ?)"
                " ON CONFLICT (id) DO UPDATE SET approved = 1, banned = 0",
                (node_id, int(now)),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def bump(self, now: float, *, who: str, action: str, subject: bytes) -> None:
        """Record an action on the registry itself (e.g. `rotate_key`, subject the new key) and bump the change
        counter, so the running service re-reads its key and statements on its next request."""
        with self._tx() as db:
            _audit(db, now, who, action, subject)
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def set_banned(self, node_id: bytes, now: float, *, who: str) -> None:
        """Ban a node: unlisted at once, its registrations refused with 403. An id not seen yet is pre-banned."""
        with self._tx() as db:
            _audit(db, now, who, "ban", node_id)
            db.execute(
                "INSERT INTO nodes (id, banned, first_seen) VALUES (?, 1, ?) ON CONFLICT (id) DO UPDATE SET banned = 1",
                (node_id, int(now)),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def remove(self, node_id: bytes, now: float, *, who: str) -> bool:
        """Forget a node's registration, approval and ban; keep its replay floor. Returns False if unknown."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE nodes SET seen = NULL, approved = 0, banned = 0 WHERE id = ?"
                " AND (seen IS NOT NULL OR approved = 1 OR banned = 1)",
                (node_id,),
            )
            if cur.rowcount > 0:
                _audit(db, now, who, "remove", node_id)
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            return cur.rowcount > 0

    def set_withheld(self, node_id: bytes, withheld: bool, now: float, *, who: str) -> None:
        """`bridges remove` (withheld) / `bridges add`: keep a bridge out of, or put it back into, distribution.
        An id not seen yet is pre-approved by `add` (as `nodes approve` does)."""
        with self._tx() as db:
            _audit(db, now, who, "bridge_remove" if withheld else "bridge_add", node_id)
            if withheld:
                db.execute(
                    "INSERT INTO nodes (id, withheld, first_seen) VALUES (?, 1, ?)"
                    " ON CONFLICT (id) DO UPDATE SET withheld = 1",
                    (node_id, int(now)),
                )
            else:
                db.execute(
                    "INSERT INTO nodes (id, approved, first_seen) VALUES (?, 1, ?)"
                    " ON CONFLICT (id) DO UPDATE SET withheld = 0, approved = 1, banned = 0",
                    (node_id, int(now)),
                )
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def rotate_salt(self, salt: int, now: float, *, who: str) -> None:
        """A new distributor salt: every network's share of the bridges changes at once."""
        with self._tx() as db:
            _audit(db, now, who, "bridge_rotate", bytes(32))
            db.execute("UPDATE meta SET value = ? WHERE key = 'bridge_salt'", (salt,))
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def set_health(self, node_id: bytes, now: float, *, ok: bool, fails_max: int) -> bool:
        """Record one health check of a node's client endpoint; True when its listing changed (bumps generation)."""
        with self._tx() as db:
            row = db.execute("SELECT fails FROM nodes WHERE id = ?", (node_id,)).fetchone()
            if row is None:
                return False
            before = int(row[0])
            after = 0 if ok else min(before + 1, 1_000_000)
            if ok:
                db.execute("UPDATE nodes SET fails = 0, passed = ? WHERE id = ?", (int(now), node_id))
            else:
                db.execute("UPDATE nodes SET fails = ? WHERE id = ?", (after, node_id))
            changed = (before >= fails_max) != (after >= fails_max)
            if changed:
                _audit(db, now, "health", "health_pass" if ok else "health_fail", node_id)
                db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            return changed

    def prune(self, now: float, *, floor_keep_s: int, pending_keep_s: int, expired_keep_s: int) -> int:
        """Delete rows that no longer matter: removed nodes whose replay floor is older than any `ts` we would
        accept, pending nodes not seen for `pending_keep_s`, and approved nodes whose lease ended (or that left)
        more than `expired_keep_s` ago (their `ts` floor is long past the replay window; they need approving
        again). Banned rows are kept. Also trims the service's own audit rows (`who` "api" and "health") to the newest
        `AUDIT_KEEP_ROWS`; admins' rows are kept: strangers' registrations write "api" rows, and must not push
        what admins did out of the trail. Returns rows deleted."""
        with self._tx() as db:
            a = db.execute(
                "DELETE FROM nodes WHERE seen IS NULL AND approved = 0 AND banned = 0 AND last_ts < ?",
                (int(now) - floor_keep_s,),
            ).rowcount
            b = db.execute(
                "DELETE FROM nodes WHERE approved = 0 AND banned = 0 AND seen IS NOT NULL AND seen < ?",
                (int(now) - pending_keep_s,),
            ).rowcount
            c = db.execute(
                "DELETE FROM nodes WHERE approved = 1 AND banned = 0"
                " AND max(coalesce(seen + ttl, 0), last_ts, first_seen) < ?",
                (int(now) - expired_keep_s,),
            ).rowcount
            db.execute(
                "DELETE FROM audit WHERE who IN ('api', 'health') AND rowid <= (SELECT rowid FROM audit"
                " WHERE who IN ('api', 'health') ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (AUDIT_KEEP_ROWS,),
            )
        return int(a) + int(b) + int(c)


def _audit(db: sqlite3.Connection, now: float, who: str, action: str, node_id: bytes) -> None:
    db.execute("INSERT INTO audit (at, who, action, node) VALUES (?, ?, ?, ?)", (int(now), who[:64], action, node_id))


_State = tuple[int, int | None, bool, bool] | None


def _state(db: sqlite3.Connection, node_id: bytes) -> _State:
    """What a registration writes back and others may change meanwhile: replay floor, `seen`, approved, banned."""
    row = db.execute("SELECT last_ts, seen, approved, banned FROM nodes WHERE id = ?", (node_id,)).fetchone()
    return None if row is None else (int(row[0]), _int_or_none(row[1]), bool(row[2]), bool(row[3]))


def _expected(record: NodeRecord | None) -> _State:
    return None if record is None else (record.last_ts, record.seen, record.approved, record.banned)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
