"""What one client can make a node hold for push wake-up (docs/security.md, "Malicious client").

A real node (run_node, push enabled by default) and a real client on 127.0.0.1. The client registers the same
subscription again and again, as fast as its control bucket allows (raised here so the test is short: the growth
is per registration, whatever the rate). Each registration must replace what the node holds for that id, at home
and as its rendezvous owner; before, each one also left an expiry entry in the table's timer heap until the
subscription TTL (7 days) passed, so at 20 registrations a second per connection the node grew without bound.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import trio

from node.app.service import run_node
from node.client.connection import ClientError, connect_client
from node.protocol.identity import Identity
from tests.integration.cluster import loopback_config, url
from tests.push.webpush_check import UserAgent

WARMUP = 200
REGISTRATIONS = 3000
GROWTH_BYTES_MAX = 64 * 1024  # before: ~90 bytes a registration per table (home and owner), ~500 KiB here
WATCHED = ("node/protocol/relay/push.py", "node/protocol/deadlines.py")


def _held_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the push tables' code (and the deadline heap they keep), still live."""
    return sum(s.size for s in snapshot.statistics("filename") if s.traceback[0].filename.endswith(WATCHED))


def test_registering_one_subscription_again_and_again_holds_one_subscription(tmp_path: Path) -> None:
    async def main() -> None:
        with trio.fail_after(60):
            await scenario()

    async def scenario() -> None:
        cfg = loopback_config(tmp_path / "n0", clients={"rate_per_s": 100_000.0, "burst": 100_000})
        ua = UserAgent("https://push.example.com/wake/abc")
        alice = Identity.generate()
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_node, cfg, Identity.generate())
            async with connect_client(url(node), alice) as c:
                for _ in range(WARMUP):
                    await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
                tracemalloc.start()
                try:
                    before = _held_bytes(tracemalloc.take_snapshot())
                    for _ in range(REGISTRATIONS):
                        await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
                    after = _held_bytes(tracemalloc.take_snapshot())
                finally:
                    tracemalloc.stop()
                push = node.relay.core.push
                now = trio.current_time()
                assert push.homed.get(alice.id, now) is not None and push.held.get(alice.id, now) is not None
                assert after - before <= GROWTH_BYTES_MAX, (
                    f"{after - before} bytes more held after {REGISTRATIONS} registrations of one subscription"
                )
            node.request_shutdown()

    trio.run(main)


def test_one_address_gets_a_bounded_share_of_the_homes_subscription_table(tmp_path: Path) -> None:
    """Client keys cost nothing: one address opening a handshake with a fresh key and registering once each time
    took one place of the home's table per key, for the 7 days of the TTL, until `subscriptions_max` was reached and
    every other client of the node was refused (issue found by this project's audit, 2026-12-04). Now one address
    (/32, /64) holds at most `subscriptions_per_address_max` of it: its next new key is refused `rate_limited`, a
    key it holds still re-registers, and another address still registers. On the code before, the fourth key of
    127.0.0.1 was taken."""

    async def main() -> None:
        with trio.fail_after(60):
            await scenario()

    async def scenario() -> None:
        share = 3
        cfg = loopback_config(tmp_path / "n0", push={"subscriptions_per_address_max": share})
        ua = UserAgent("https://push.example.com/wake/abc")
        keys = [Identity.generate() for _ in range(share + 1)]
        async with trio.open_nursery() as nursery:
            node = await nursery.start(run_node, cfg, Identity.generate())
            for key in keys[:share]:
                async with connect_client(url(node), key, local_address="127.0.0.1") as c:
                    await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
            async with connect_client(url(node), keys[share], local_address="127.0.0.1") as c:
                with pytest.raises(ClientError, match="rate_limited"):
                    await c.push_register(ua.endpoint, ua.p256dh, ua.auth)
            async with connect_client(url(node), keys[0], local_address="127.0.0.1") as c:
                await c.push_register(ua.endpoint, ua.p256dh, ua.auth)  # a key it holds: re-registered
            async with connect_client(url(node), keys[share], local_address="127.0.0.2") as c:
                await c.push_register(ua.endpoint, ua.p256dh, ua.auth)  # another address: its own share
            now = trio.current_time()
            assert all(node.relay.core.push.homed.get(k.id, now) is not None for k in keys)
            node.request_shutdown()

    trio.run(main)
