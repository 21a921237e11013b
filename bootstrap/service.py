"""The registry service: the store, the signing key, the cached signed list, and the trio entry point.

- Reads (the list's change counter, records) run on the trio thread with their own connection: a WAL reader
  never waits for a writer, and one indexed read costs microseconds.
- Writes run one at a time (a trio.Lock) in a worker thread (`trio.to_thread.run_sync`) on the writer
  connection, so an fsync never blocks the event loop. The HTTP 200 is sent only after the commit.
- The signed list is cached and re-signed when the change counter moves (a registration that changes the
  list, or any admin action from `homing bootstrap nodes ...` in another process), when the first listed lease
  runs out, or when half the list's lifetime has passed; but while its `issued` is `ISSUED_LEAD_MAX_S` ahead of
  the clock (re-signed many times a second), a change waits for the next second.
- Key rotation (`homing bootstrap rotate-key`, docs/bootstrap.md "Rotating the registry key") replaces
  `registry.key`, appends a statement to `key-rotations.msgpack` and bumps the change counter: the service then
  re-reads both, signs with the new key, serves the statements as `rot` next to the list (and at GET
  /v1/rotation), and accepts registrations naming a rotated-away key during the grace period.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from bootstrap.config import ROTATIONS_NAME, BootstrapConfig
from bootstrap.registry import Accepted, NodeRecord, Refused, build_list, decide_leave, decide_registration
from bootstrap.store import Store
from node.app.keyrotation import load_statements
from node.client.files import load_or_create_key
from node.protocol.bridges import build_bridge_list, period_of, pick
from node.protocol.errors import ConfigError
from node.protocol.identity import Identity, decode_document, document_to_json, encode_document, id_text, short_id
from node.protocol.nodelist import Registration
from node.protocol.refusals import Refusal
from node.protocol.rotation import GRACE_S, pack_chain, unpack_chain

log = logging.getLogger("homing.bootstrap")

WRITE_RETRIES = 3
# How far ahead of the clock a list's `issued` may run. Every list is issued after the one before (readers keep the
# newest per registry), so re-signing more than once a second runs ahead; uncapped, a node changing its address in
# every registration pushed `issued` past the readers' clock skew allowance (300 s) and every reader refused the
# list. When the lead is used up, a changed list is re-signed at most once a second.
ISSUED_LEAD_MAX_S = 30


@attrs.frozen(kw_only=True, slots=True)
class CachedList:
    doc: dict[str, bytes]
    msgpack: bytes
    json: bytes
    etag: str  # quoted; the JSON form's tag ends in "-j" (a different representation)
    generation: int
    valid_until: float  # unix seconds

    @classmethod
    def make(cls, doc: dict[str, bytes], generation: int, valid_until: float, rot: bytes = b"") -> CachedList:
        if rot:
            doc = {**doc, "rot": rot}  # unsigned companion: each statement carries its own signatures
        packed = encode_document(doc)
        tag = hashlib.blake2b(packed, digest_size=16).hexdigest()
        as_json = json.dumps(document_to_json(doc), sort_keys=True, separators=(",", ":")).encode()
        return cls(
            doc=doc, msgpack=packed, json=as_json, etag=f'"{tag}"', generation=generation, valid_until=valid_until
        )


@attrs.frozen(kw_only=True, slots=True)
class Outcome:
    """What a write decided: HTTP status, the `status` or error `reason` to answer, and for a refusal its
    `refusal` (the metric's reason label; None for an answer that refuses nothing, e.g. 200 or a busy 503)."""

    http_status: int
    status: str = ""
    reason: str = ""
    ttl: int = 0
    refusal: Refusal | None = None


def load_identity(config: BootstrapConfig, *, create: bool) -> tuple[Identity, bool]:
    return load_or_create_key(config.key_path, create=create)


def current_signed_list(data_dir: Path, now: float, *, lifetime_s: int = 3600) -> dict[str, bytes]:
    """The current signed node list of the registry in `data_dir`, without the HTTP service (for DNS export).

    Does not need the service to be running (SQLite lets it read while the service writes); signs a fresh list with
    issued = now. Raises ConfigError when the data dir has no registry key or database.
    """
    config = BootstrapConfig(data_dir=data_dir, list_lifetime_s=lifetime_s)
    identity, _ = load_identity(config, create=False)
    store = Store.open(data_dir)
    try:
        doc, _ = build_list(identity, store.listable(now), now, lifetime_s=lifetime_s)
    finally:
        store.close()
    return doc


class RegistryService:
    """The registry's state and operations, shared by the HTTP handlers."""

    def __init__(
        self, config: BootstrapConfig, identity: Identity, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.identity = identity
        self.clock = wall_clock
        self.reader = Store.open(config.data_dir)
        self.writer = Store.open(config.data_dir)
        self._write_lock = trio.Lock()
        self._cache: CachedList | None = None
        self._last_issued = 0  # every list signed here is issued after the one before (build_list issued_min)
        self._audit_rowid = self._last_audit_rowid()  # admin actions before we started are not news
        self._generation_seen = self.reader.generation()
        self.rot = b""  # the rotation statements served next to the list (pack_chain form)
        self._old_keys: frozenset[bytes] = frozenset()  # rotated-away keys still accepted in `reg`
        self._reload_key()

    def _reload_key(self) -> None:
        """Pick up a rotated key and its statements (after `homing bootstrap rotate-key`)."""
        identity, _ = load_identity(self.config, create=False)
        if identity.id != self.identity.id:
            log.info("event=registry_key_rotated old=%s new=%s", id_text(self.identity.id), id_text(identity.id))
            self.identity = identity
            self._cache = None
        try:
            statements = load_statements(self.config.data_dir / ROTATIONS_NAME)
        except ConfigError as exc:  # the list is still served; clients that pinned an old key cannot follow it
            log.error("event=key_rotations_damaged error=%r", str(exc))
            statements = []
        now = self.clock()
        rotations, raw = unpack_chain(pack_chain(statements), now=now)
        self.rot = pack_chain(raw) if raw else b""
        self._old_keys = frozenset(r.old for r in rotations if now <= r.issued + GRACE_S and not r.compromised)

    def _last_audit_rowid(self) -> int:
        row = self.reader.db.execute("SELECT coalesce(max(rowid), 0) FROM audit").fetchone()
        return int(row[0])

    def _log_admin_actions(self) -> None:
        """Log what admins did from another process (`homing bootstrap nodes ...`) since we last looked."""
        self._audit_rowid, entries = self.reader.audit_since(self._audit_rowid)
        for e in entries:
            if e.who != "api":
                log.info("event=admin_action action=%s node=%s who=%s at=%d", e.action, id_text(e.node), e.who, e.at)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    # --- the list -----------------------------------------------------------------------------------------

    def signed_list(self) -> CachedList:
        now = self.clock()
        generation = self.reader.generation()
        cache = self._cache
        if cache is not None and cache.generation == generation and now < cache.valid_until:
            return cache
        if generation != self._generation_seen:
            self._generation_seen = generation
            self._log_admin_actions()
            self._reload_key()
        if cache is not None and now < cache.valid_until and self._last_issued >= int(now) + ISSUED_LEAD_MAX_S:
            return cache  # the change is signed within a second, when the clock has caught up
        doc, valid_until = build_list(
            self.identity,
            self.reader.listable(now),
            now,
            lifetime_s=self.config.list_lifetime_s,
            issued_min=self._last_issued + 1,
        )
        self._last_issued = max(self._last_issued + 1, int(now))
        self._cache = CachedList.make(doc, generation, valid_until, self.rot)
        return self._cache

    # --- bridges (docs/discovery.md, "Bridges") -------------------------------------------------------------

    def bridge_list(self, network: str) -> dict[str, bytes]:
        """The signed bridge list for a requester in `network` (its /16 or /48): the same few cards all period."""
        cfg = self.config
        now = self.clock()
        self._note_admin_actions()
        pool = {r.id: r for r in self.reader.bridge_pool(now) if r.in_pool(now)}
        period = period_of(now, cfg.bridge_period_s)
        chosen = pick(pool, salt=self.reader.salt(), period=period, network=network, count=cfg.bridges_per_answer)
        issued = int(now)
        expires = max(issued + 60, min(issued + cfg.list_lifetime_s, (period + 1) * cfg.bridge_period_s))
        cards = [decode_document(pool[node_id].card) for node_id in chosen]
        return build_bridge_list(self.identity, cards, issued=issued, expires=expires)

    async def record_health(self, node_id: bytes, ok: bool, fails_max: int) -> bool:
        """Store one health check's outcome; True when it moved the node into or out of the list."""
        async with self._write_lock:
            return await trio.to_thread.run_sync(
                lambda: self.writer.set_health(node_id, self.clock(), ok=ok, fails_max=fails_max)
            )

    # --- writes -------------------------------------------------------------------------------------------

    def _note_admin_actions(self) -> None:
        generation = self.reader.generation()
        if generation != self._generation_seen:
            self._generation_seen = generation
            self._log_admin_actions()
            self._reload_key()

    async def register(self, reg: Registration) -> Outcome:
        self._note_admin_actions()
        async with self._write_lock:
            return await trio.to_thread.run_sync(_busy_as_503, self._register_sync, reg)

    async def leave(self, node_id: bytes, ts: int) -> Outcome:
        async with self._write_lock:
            return await trio.to_thread.run_sync(_busy_as_503, self._leave_sync, node_id, ts)

    def _register_sync(self, reg: Registration) -> Outcome:
        if reg.reg in self._old_keys:  # named our key before a rotation, still in its grace period
            reg = attrs.evolve(reg, reg=self.identity.id)
        for _ in range(WRITE_RETRIES):
            now = self.clock()
            existing = self.writer.get(reg.id)
            old = self.writer.get(reg.rotated_from) if reg.rotated_from is not None else None
            decision = decide_registration(
                reg, existing, now=now, policy=self.config.policy, registry_key=self.identity.id, rotated_from=old
            )
            if isinstance(decision, Refused):
                return Outcome(http_status=decision.status, reason=decision.reason, refusal=decision.refusal)
            # a new id when full takes the place of the stalest stranger's pending row (Store.make_room)
            if existing is None and not self.writer.make_room(self.config.nodes_max):
                return Outcome(http_status=503, reason=f"registry full ({self.config.nodes_max} nodes)")
            audit = "key_rotated" if decision.moved else _audit_action(decision, existing)
            retire = old if decision.moved else None
            if self._put(decision, existing, audit=audit, now=now, retire=retire):
                if retire is not None:
                    log.info("event=node_key_rotated old=%s new=%s", short_id(retire.id), short_id(reg.id))
                self._log_registration(decision, existing, audit)
                return Outcome(http_status=200, status=decision.status, ttl=decision.record.ttl)
        return Outcome(http_status=503, reason="registry busy, retry")

    def _leave_sync(self, node_id: bytes, ts: int) -> Outcome:
        for _ in range(WRITE_RETRIES):
            existing = self.writer.get(node_id)
            decision = decide_leave(node_id, ts, existing, now=self.clock(), policy=self.config.policy)
            if isinstance(decision, Refused):
                return Outcome(http_status=decision.status, reason=decision.reason, refusal=decision.refusal)
            if existing is None or self._put(decision, existing):
                log.info("event=node_left node=%s", short_id(node_id))
                return Outcome(http_status=200, status=decision.status)
        return Outcome(http_status=503, reason="registry busy, retry")

    def _put(
        self, decision: Accepted, existing: NodeRecord | None, *, audit: str = "", now: float = 0.0,
        retire: NodeRecord | None = None,
    ) -> bool:  # fmt: skip
        return self.writer.put(
            decision.record, bump=decision.changes_list, expect=existing, audit=audit, now=now, retire=retire
        )

    @staticmethod
    def _log_registration(decision: Accepted, existing: NodeRecord | None, audit: str) -> None:
        node = short_id(decision.record.id)
        rec = decision.record
        if audit == "pending":
            log.info("event=node_pending node=%s ws=%s hint=%r", node, rec.ws,
                     "see `homing bootstrap nodes list`, then `homing bootstrap nodes approve ID`")  # fmt: skip
        elif decision.status == "pending":
            log.debug("event=node_pending_heartbeat node=%s", node)
        elif decision.changes_list:
            log.info("event=node_registered node=%s status=%s ws=%s", node, decision.status, rec.ws)

    async def prune(self) -> int:
        async with self._write_lock:
            return await trio.to_thread.run_sync(
                lambda: self.writer.prune(
                    self.clock(),
                    floor_keep_s=self.config.policy.ts_past_max_s + self.config.policy.ts_future_max_s,
                    pending_keep_s=self.config.pending_keep_s,
                    expired_keep_s=self.config.expired_keep_s,
                )
            )


def _audit_action(decision: Accepted, existing: NodeRecord | None) -> str:
    """What the service itself writes to the audit trail for an accepted registration ("" for a heartbeat)."""
    if decision.status == "pending" and (existing is None or (existing.seen is None and existing.last_ts == 0)):
        return "pending"
    if decision.status == "approved" and (existing is None or not existing.approved):
        return "auto_approved"
    return ""


def _busy_as_503(fn: Callable[..., Outcome], *args: Any) -> Outcome:
    """A write the database refused is a 503 with a reason, not a 500, and nothing of it is kept (its transaction
    rolled back); the node tries again, backing off up to a heartbeat. Logged by cause, for the admin:
    - `db_busy` (warning): locked past the busy timeout, by a long admin transaction in another process;
    - `db_full` (error): the disk or quota is full (SQLITE_FULL). Every registration fails until it has room, while
      the list is still served (signing it writes nothing). Before, this too was logged as `db_busy`;
    - `db_error` (error): anything else SQLite reports (an I/O error, a read-only file)."""
    try:
        return fn(*args)
    except sqlite3.OperationalError as exc:
        name = str(getattr(exc, "sqlite_errorname", ""))
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            log.warning("event=db_busy error=%r", str(exc))
            return Outcome(http_status=503, reason="registry database busy, retry")
        if name.startswith("SQLITE_FULL"):
            log.error("event=db_full error=%r hint=%r", str(exc), "free space on the registry's disk")
            return Outcome(http_status=503, reason="registry storage full, retry later")
        log.error("event=db_error error=%r code=%s", str(exc), name or "unknown")
        return Outcome(http_status=503, reason="registry database error, retry later")
