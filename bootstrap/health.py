"""The registry's health checks (docs/bootstrap.md, "Health checks"): every `health_interval_s` the registry opens
each live node's client endpoint itself and runs the client handshake, which proves the node holds its key.

A check passes only when the node proves the id it registered with within `health_timeout_s`. Two failures in a
row (`bootstrap.registry.HEALTH_FAILS_MAX`) take a node out of the signed list and the bridge pool; the next pass
puts it back. The list entries carry `ok`, the time of the node's last pass. The checks use a key made for this
run of the registry (not the registry's signing key: a client key is all a node sees).
"""

from __future__ import annotations

import logging

import trio

from bootstrap.registry import HEALTH_FAILS_MAX, NodeRecord
from bootstrap.service import RegistryService
from node.client.connection import handshake_only
from node.protocol.identity import Identity, short_id

log = logging.getLogger("homing.bootstrap")


async def check_one(record: NodeRecord, identity: Identity, timeout_s: float) -> bool:
    """Whether `record`'s client endpoint answers and proves its id within `timeout_s`."""
    try:
        with trio.fail_after(timeout_s + 1):  # handshake_only bounds itself; this is the backstop
            node_id, _ = await handshake_only(record.ws, identity, record.id, timeout_s)
    except Exception as exc:  # any failure to connect or prove the id is a failed check
        log.debug("event=health_failed node=%s error=%r", short_id(record.id), str(exc)[:200])
        return False
    return node_id == record.id


async def check_all(service: RegistryService, identity: Identity) -> int:
    """Check every live node once (at most `health_concurrent_max` at a time); returns how many failed."""
    cfg = service.config
    records = service.reader.live(service.clock())
    limiter = trio.CapacityLimiter(cfg.health_concurrent_max)
    failed = 0

    async def one(record: NodeRecord) -> None:
        nonlocal failed
        async with limiter:
            ok = await check_one(record, identity, cfg.health_timeout_s)
        failed += not ok
        if await service.record_health(record.id, ok, HEALTH_FAILS_MAX):
            log.info("event=health_%s node=%s ws=%s", "restored" if ok else "unlisted", short_id(record.id), record.ws)

    async with trio.open_nursery() as nursery:
        for record in records:
            nursery.start_soon(one, record)
    return failed


async def health_loop(service: RegistryService) -> None:
    identity = Identity.generate()
    while True:
        await trio.sleep(service.config.health_interval_s)  # the first check one interval after start
        try:
            await check_all(service, identity)
        except Exception:
            log.exception("event=health_check_failed")
