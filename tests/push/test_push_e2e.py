"""Push wake-up across real nodes (docs/protocol.md "Push wake-up"): an offer to an offline callee with a push
subscription produces exactly one push, also when a rendezvous owner is killed; the woken client gets the offer
from the mailbox; an online callee gets no push; an endpoint resolving to loopback is refused and counted."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.app.service import NodeHandle, run_node
from node.client.connection import ClientError, connect_client
from node.protocol.identity import Identity
from node.protocol.relay.rendezvous import owners
from node.protocol.webpush import WAKE_PAYLOAD
from node.protocol.wire.client import Deliver, Receipt
from tests.integration.cluster import loopback_config, next_matching, until, url
from tests.push.service import PushService, push_service
from tests.push.webpush_check import UserAgent, verify_vapid

SETTLE_S = 1.5  # after the first push: longer than every fallback (rank 2 waits 2 * fallback_s = 1.0 s)


@asynccontextmanager
async def killable_federation(
    tmp: Path, n: int, svc: PushService
) -> AsyncIterator[tuple[list[NodeHandle], list[trio.CancelScope]]]:
    """`n` open nodes with push to the local service; each runs in its own cancel scope so a test can kill it."""
    push = {"test_allow_loopback": f"127.0.0.1:{svc.port}", "test_ca_file": str(svc.ca_file), "fallback_s": 0.5}
    scopes: list[trio.CancelScope] = []

    async def node(cfg: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await run_node(cfg, Identity.generate(), task_status=task_status)

    async with trio.open_nursery() as nursery:
        first: NodeHandle = await nursery.start(node, loopback_config(tmp / "n0", push=push))
        seed = f"127.0.0.1:{first.ports['swim']}"
        handles = [first]
        for i in range(1, n):
            handles.append(await nursery.start(node, loopback_config(tmp / f"n{i}", join=[seed], push=push)))
        everyone = {h.identity.id for h in handles}
        with trio.fail_after(15):
            while not all({m.id for m in h.swim.members() if m.state.value == "alive"} == everyone for h in handles):
                await trio.sleep(0.05)
        try:
            yield handles, scopes
        finally:
            for h in handles:
                h.request_shutdown()


def _count(h: NodeHandle, name: str, reason: str | None = None) -> float:
    text = h.metrics.render().decode()
    label = r'\{reason="' + reason + r'"\}' if reason else ""
    return sum(float(v) for v in re.findall(rf"^{name}{label} (\S+)$", text, re.M))


async def _register_and_sleep(home: NodeHandle, others: list[NodeHandle], who: Identity, ua: UserAgent) -> bytes:
    """`who` registers a subscription at `home`, then its app sleeps (disconnects); wait until the owners hold it."""
    async with connect_client(url(home), who) as c:
        vapid = await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
    nodes = [home, *others]
    await until(lambda: all(h.relay.core.push.held.get(who.id, trio.current_time()) for h in nodes), timeout=5)
    await until(lambda: all(not h.relay.core.owner.leases.homes(who.id, trio.current_time()) for h in nodes), 5)
    return vapid


def _check_push(svc: PushService, ua: UserAgent, vapid_keys: set[bytes]) -> None:
    [got] = svc.arrivals
    assert got.headers["urgency"] == "high" and got.headers["content-encoding"] == "aes128gcm"
    assert 50 <= int(got.headers["ttl"]) <= 60, "TTL is the time left in the mailbox (60 s)"
    key, _ = verify_vapid(got.headers["authorization"], audience=svc.url(""), unix_now=time.time())
    assert key in vapid_keys
    assert ua.decrypt(got.body) == WAKE_PAYLOAD, "a wake-up and nothing else: no caller, no body"


async def test_offline_callee_is_pushed_once_and_gets_the_offer_on_connect(tmp_path: Path) -> None:
    alice, carol = Identity.generate(), Identity.generate()
    async with push_service(tmp_path) as svc, killable_federation(tmp_path, 3, svc) as (nodes, _):
        ua = UserAgent(svc.url("/p/carol"))
        vapid = await _register_and_sleep(nodes[1], [nodes[0], nodes[2]], carol, ua)
        assert vapid == nodes[1].pusher.vapid_public  # type: ignore[union-attr]
        async with connect_client(url(nodes[0]), alice) as a:
            start = trio.current_time()
            ref = await a.send_envelope("call_offer", carol.id, b"c1", b"sdp-offer")
            await svc.wait_for(1, timeout=1.0)
            assert svc.arrivals[0].at - start < 1.0
            queued = await next_matching(a, lambda m: isinstance(m, Receipt) and m.ref == ref)
            assert isinstance(queued, Receipt) and queued.status.value == "queued"
            await trio.sleep(SETTLE_S)
            _check_push(svc, ua, {h.pusher.vapid_public for h in nodes if h.pusher})
            assert sum(_count(h, "homing_pushes_sent_total") for h in nodes) == 1
            for h in nodes:
                h.refresh_gauges()
                assert _count(h, "homing_push_subscriptions") == 1, "every owner (R = 3 of 3 nodes) holds it"
            async with connect_client(url(nodes[2]), carol) as c:  # the phone woke up
                offer = await next_matching(c, lambda m: isinstance(m, Deliver) and m.kind.value == "call_offer")
                assert isinstance(offer, Deliver) and offer.body == b"sdp-offer" and offer.sender == alice.id
        assert len(svc.arrivals) == 1


async def test_one_push_when_the_first_owner_is_killed(tmp_path: Path) -> None:
    alice = Identity.generate()
    async with push_service(tmp_path) as svc, killable_federation(tmp_path, 3, svc) as (nodes, scopes):
        ids = [h.identity.id for h in nodes]
        while True:  # a callee whose first owner (the one that would push) is neither the caller's node nor its home
            carol = Identity.generate()
            first = owners(carol.id, ids, 3)[0]
            if first not in (ids[0], ids[1]):
                break
        victim = ids.index(first)
        ua = UserAgent(svc.url("/p/carol"))
        await _register_and_sleep(nodes[1], [nodes[0], nodes[2]], carol, ua)
        scopes[victim].cancel()  # killed: no graceful leave, no hand-off
        await trio.sleep(0.05)
        async with connect_client(url(nodes[0]), alice) as a:
            start = trio.current_time()
            await a.send_envelope("call_offer", carol.id, b"c1", b"sdp-offer")
            await svc.wait_for(1, timeout=1.0)
            assert svc.arrivals[0].at - start < 1.0
            await trio.sleep(SETTLE_S + 1.0)  # and after SWIM declares the victim dead: still one push
            assert len(svc.arrivals) == 1
            _check_push(svc, ua, {h.pusher.vapid_public for h in nodes if h.pusher})
            async with connect_client(url(nodes[1]), carol) as c:
                offer = await next_matching(c, lambda m: isinstance(m, Deliver) and m.kind.value == "call_offer")
                assert isinstance(offer, Deliver) and offer.body == b"sdp-offer"


async def test_no_push_for_an_online_callee(tmp_path: Path) -> None:
    alice, carol = Identity.generate(), Identity.generate()
    async with push_service(tmp_path) as svc, killable_federation(tmp_path, 3, svc) as (nodes, _):
        ua = UserAgent(svc.url("/p/carol"))
        async with connect_client(url(nodes[2]), carol) as c, connect_client(url(nodes[0]), alice) as a:
            await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
            await until(lambda: all(h.relay.core.push.held.get(carol.id, trio.current_time()) for h in nodes), 5)
            await a.send_envelope("call_offer", carol.id, b"c1", b"sdp-offer")
            await next_matching(c, lambda m: isinstance(m, Deliver) and m.kind.value == "call_offer")
            await trio.sleep(SETTLE_S)
        assert svc.arrivals == []


async def test_unregistered_and_loopback_endpoints_get_no_push_and_are_counted(tmp_path: Path) -> None:
    alice, carol, dave = Identity.generate(), Identity.generate(), Identity.generate()
    async with push_service(tmp_path) as svc, killable_federation(tmp_path, 3, svc) as (nodes, _):
        rebinding = UserAgent(f"https://localhost:{svc.port}/p/carol")  # a name that resolves to 127.0.0.1
        await _register_and_sleep(nodes[1], [nodes[0], nodes[2]], carol, rebinding)
        gone = UserAgent(svc.url("/p/dave"))
        async with connect_client(url(nodes[2]), dave) as d:
            await d.push_register(gone.endpoint, gone.p256dh, gone.auth)
            await d.push_unregister()
        async with connect_client(url(nodes[0]), alice) as a:
            await a.send_envelope("call_offer", carol.id, b"c1", b"x")
            await a.send_envelope("call_offer", dave.id, b"c2", b"x")
            await until(lambda: sum(_count(h, "homing_pushes_failed_total", "refused_address") for h in nodes) == 1)
            await trio.sleep(SETTLE_S)
        assert svc.arrivals == []
        assert sum(_count(h, "homing_pushes_failed_total", "refused_address") for h in nodes) == 1


async def test_bad_subscriptions_are_refused_with_bad_request(tmp_path: Path) -> None:
    carol = Identity.generate()
    async with push_service(tmp_path) as svc, killable_federation(tmp_path, 1, svc) as (nodes, _):
        ua = UserAgent(svc.url("/p/carol"))
        async with connect_client(url(nodes[0]), carol) as c:
            for endpoint, p256dh in (("http://127.0.0.1/p", ua.p256dh), (ua.endpoint, b"\x04" + b"\x00" * 64)):
                with pytest.raises(ClientError, match="bad_request"):
                    await c.push_register(endpoint, p256dh, ua.auth)
            assert await c.push_register(ua.endpoint, ua.p256dh, ua.auth) == nodes[0].pusher.vapid_public  # type: ignore[union-attr]
        assert len(nodes[0].relay.core.push.held) == 1
