"""node.app.registry against a real registry on loopback: register, heartbeat before the TTL, deregister,
back off on a dead registry, keep trying when banned."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx2
import trio

from bootstrap.registry import Policy
from bootstrap.store import Store
from node.app.registry import Result, TsClock, deregister, register_forever
from node.protocol.identity import Identity, decode_document
from node.protocol.nodelist import open_node_list
from tests.bootstrap.util import init_registry, make_config, running_registry

A = Identity.from_seed(b"a" * 32)


async def listed(base: str, key: bytes) -> set[bytes]:
    async with httpx2.AsyncClient() as c:
        resp = await c.get(f"{base}/v1/nodes")
    return {n.id for n in open_node_list(decode_document(resp.content), {key}, now=time.time()).nodes}


def test_registers_heartbeats_past_the_ttl_and_deregisters(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)
    results: list[Result] = []
    ts = TsClock(time.time)  # shared, so the leave outranks heartbeats sent faster than one a second

    async def main() -> None:
        with trio.fail_after(20):
            config = make_config(tmp_path, policy=Policy(approval="auto", ttl_min_s=1))
            async with running_registry(config) as base, trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: register_forever(
                        A,
                        [base, base + "/"],
                        ws="ws://127.0.0.1:7400/v1/client",
                        swim="127.0.0.1:7401",
                        peer="127.0.0.1:7402",
                        ttl_s=2,
                        heartbeat_s=0.5,
                        rng=random.Random(1),
                        on_result=results.append,
                        ts_clock=ts,
                        task_status=task_status,
                    )
                )
                while len(results) < 2:  # both URLs (the same registry) answered once
                    await trio.sleep(0.05)
                assert all(r.ok and r.status == "approved" for r in results)
                assert await listed(base, registry.id) == {A.id}
                await trio.sleep(3)  # longer than the 2 s TTL: only heartbeats keep A listed
                assert await listed(base, registry.id) == {A.id}
                assert all(r.ok for r in results) and len(results) >= 8
                nursery.cancel_scope.cancel()
            async with running_registry(config) as base:
                answers = await deregister(A, [base], timeout_s=5, ts_clock=ts)
                assert [(a.http_status, a.status) for a in answers] == [(200, "removed")]
                assert await listed(base, registry.id) == set()

    trio.run(main)


def test_backs_off_on_a_dead_registry_and_retries_when_banned(tmp_path: Path) -> None:
    init_registry(tmp_path)
    Store.open(tmp_path).set_banned(A.id, time.time(), who="test")
    results: list[Result] = []

    async def main() -> None:
        with trio.fail_after(20):
            async with running_registry(make_config(tmp_path)) as base, trio.open_nursery() as nursery:
                dead = "http://127.0.0.1:9"  # discard port: nothing listens
                nursery.start_soon(
                    lambda: register_forever(
                        A,
                        [dead, base],
                        ws="ws://127.0.0.1:7400/v1/client",
                        swim="127.0.0.1:7401",
                        peer="127.0.0.1:7402",
                        ttl_s=60,
                        heartbeat_s=0.4,
                        rng=random.Random(2),
                        on_result=results.append,
                    )
                )
                while len([r for r in results if r.url == base]) < 2:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        banned = [r for r in results if r.url == base]
        assert all(r.http_status == 403 and "banned" in r.reason for r in banned)
        failed = [r for r in results if r.url != base]
        assert failed and all(r.http_status == 0 and "Connect" in r.reason for r in failed)
        answers = await deregister(A, ["http://127.0.0.1:9"], timeout_s=2)
        assert answers[0].http_status == 0

    trio.run(main)
