"""Hostile WebSocket clients cannot grow a node's queues (docs/security.md, "Malicious client"; issue finding 5).

A raw client (wsproto over a trio socket, tests/clients/rawws.py) against a real client server on 127.0.0.1:
- it sends WebSocket pings and never reads (the control bucket opened wide, so that no strike closes it first):
  every pong the node queues counts in the send-queue bound, so the node's queue for it never exceeds
  `send_queue_bytes_max` and the connection is closed as a slow reader (1008);
- it opens a text message and sends empty continuation frames forever: frames count per message, so the node
  closes it with 1009 after `message_fragments_max` frames instead of keeping every empty frame;
- it floods pings while reading: pings spend the connection's bucket; over it the node strikes and closes (4429);
- it floods unsolicited pongs (6 bytes each, answered with nothing): they spend the bucket as pings do, so the node
  closes it (4429) instead of parsing them at full speed for as long as it likes;
- (real node, run_node) it bursts 64 KiB call_ice envelopes at a client that reads, only slower: deliveries fill
  at most half of the recipient's queue and the rest are dropped, so the recipient stays connected; one that
  reads nothing is still closed once nothing was written to it for 2 s.
Each test fails on a node without the bound (checked against the code before the fix).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from wsproto.events import BytesMessage, CloseConnection

from node.app.service import run_node
from node.client.connection import connect_client
from node.protocol.identity import Identity
from node.protocol.wire.client import CloseCode, Deliver, Kind, decode_client_frame
from tests.clients.fixtures import run, running_node
from tests.clients.rawws import RawClient
from tests.integration.cluster import loopback_config, url

ALICE = Identity.from_seed(b"a" * 32)
QUEUE_BYTES_MAX = 256 * 1024
PINGS_MAX = 200_000  # 26 MB of pings: far more than the kernel buffers and the queue bound together
BATCH = 1000


def test_pongs_count_in_the_send_queue_bound_and_a_non_reader_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    """The control bucket is opened wide here: with the default one the node closes a ping flood after `burst` +
    `abuse_strikes_max` pings (4429, the ping flood test below), long before any pong reaches the queue bound."""

    async def main() -> None:
        async with running_node(send_queue_bytes_max=QUEUE_BYTES_MAX, rate_per_s=1e9, burst=10**9) as node:
            client = await RawClient.connect(node.port, rcvbuf_bytes=4096)
            await client.authenticate(ALICE)
            batch = client.ping_bytes(b"p" * 125) * BATCH
            peak_bytes = sent = 0
            while sent < PINGS_MAX and ALICE.id in node.relay.homes:
                try:
                    await client.stream.send_all(batch)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the node closed the socket
                sent += BATCH
                await trio.sleep(0)
                queued = [s.pending_bytes for s in node.server.sessions.values()]
                peak_bytes = max([peak_bytes, *queued])
            assert peak_bytes <= QUEUE_BYTES_MAX, f"{peak_bytes} bytes of pongs queued for a client that never reads"
            assert sent < PINGS_MAX, f"{sent} pings unread and the connection was not closed"
            with trio.fail_after(10):
                while node.server.sessions or ALICE.id in node.relay.homes:
                    await trio.sleep(0.01)

    with caplog.at_level(logging.INFO, logger="homing.clients"):
        run(main, limit_s=60)
    closes = [r.getMessage() for r in caplog.records if "event=client_closed" in r.getMessage()]
    assert len(closes) == 1 and f"code={CloseCode.POLICY.value}" in closes[0], closes


def test_empty_continuation_frames_are_counted_and_closed_with_1009() -> None:
    async def main() -> None:
        async with running_node() as node:
            client = await RawClient.connect(node.port)
            await client.authenticate(ALICE)
            sent = await client.flood_empty_fragments(300_000)
            assert client.close_code == 1009, f"{sent} empty frames kept without a close ({client.close_code})"
            assert sent <= 100_000  # closed within a bounded number of frames, not after the attacker tired

    run(main, limit_s=60)


async def _control_flood(frame: Callable[[RawClient], bytes], count_max: int, batch: int) -> tuple[int | None, int]:
    """An authenticated client sends `frame` in batches of `batch` until the node closes it or `count_max` are sent;
    (the close code within 5 s after, the number sent)."""
    async with running_node(rate_per_s=10.0, burst=20, abuse_strikes_max=10) as node, trio.open_nursery() as n:
        client = await RawClient.connect(node.port)
        await client.authenticate(ALICE)
        done = trio.Event()

        async def reader() -> None:
            await client.wait_closed()
            done.set()

        n.start_soon(reader)
        frames = frame(client) * batch
        sent = 0
        while sent < count_max and not done.is_set():
            try:
                await client.stream.send_all(frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break  # the node closed the socket
            sent += batch
            await trio.sleep(0)
        with trio.move_on_after(5):
            await done.wait()
        n.cancel_scope.cancel()
        return client.close_code, sent


def test_a_ping_flood_spends_the_bucket_and_is_closed_with_4429() -> None:
    async def main() -> None:
        code, _ = await _control_flood(lambda c: c.ping_bytes(b""), 200, 200)
        assert code == 4429

    run(main, limit_s=30)


PONGS_MAX = 300_000  # 1.8 MB of empty pongs: on the code before, parsed (about 1.6 µs each) and never closed


def test_an_unsolicited_pong_flood_spends_the_bucket_and_is_closed_with_4429() -> None:
    """Before, a pong cost nothing: one connection sending 3.6 MB/s of empty pongs (10,922 per 64 KiB read) kept a
    core busy in the frame reader for as long as it liked, never struck, never closed. An honest client's pong
    answers the node's ping after `ping_interval_s` of silence, when its bucket is full."""

    async def main() -> None:
        code, sent = await _control_flood(lambda c: c.pong_bytes(b""), PONGS_MAX, BATCH)
        assert code == 4429, f"{sent} unsolicited pongs and no close ({code})"
        assert sent < PONGS_MAX

    run(main, limit_s=60)


BIG_BODY = b"x" * 65536
ICE_BURST = 200  # the default call_ice burst: 12.8 MB at once from one connection


async def _flood_and_watch(tmp: Path, read_bytes_per_s: float | None) -> tuple[int | None, bool]:
    """A real node; a victim reading `read_bytes_per_s` (None: never reads after its welcome); one connection
    sends it a call_ice burst of 64 KiB bodies, then an honest caller sends it an offer. (the victim's close code,
    whether the honest offer reached it)."""
    bob, mallory, carol = Identity.generate(), Identity.generate(), Identity.generate()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(run_node, loopback_config(tmp / "n0"), Identity.generate())
        victim = await RawClient.connect(node.ports["ws"], rcvbuf_bytes=16384)
        await victim.authenticate(bob)
        offered = trio.Event()

        async def read_slowly() -> None:
            assert read_bytes_per_s is not None
            parts: list[bytes] = []
            while victim.close_code is None:
                try:
                    data = await victim.stream.receive_some(4096)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                victim.ws.receive_data(data)
                for event in victim.ws.events():
                    if isinstance(event, CloseConnection):
                        victim.close_code = event.code
                    elif isinstance(event, BytesMessage):
                        parts.append(bytes(event.data))
                        if not event.message_finished:
                            continue
                        msg = decode_client_frame(b"".join(parts), from_node=True)
                        parts.clear()
                        if isinstance(msg, Deliver) and msg.sender == carol.id:
                            offered.set()
                await trio.sleep(len(data) / read_bytes_per_s)

        if read_bytes_per_s is not None:
            nursery.start_soon(read_slowly)
        async with connect_client(url(node), mallory) as m:
            for _ in range(ICE_BURST):
                await m.send_envelope(Kind.CALL_ICE, bob.id, b"flood", BIG_BODY)
            await trio.sleep(3)  # longer than DELIVERY_STALL_S: a victim that stopped reading is found
            for _ in range(ICE_BURST // 4):
                await m.send_envelope(Kind.CALL_ICE, bob.id, b"flood", BIG_BODY)
            await trio.sleep(1)
        if read_bytes_per_s is None:  # nothing reads what an honest caller sends: only the close is of interest
            await victim.wait_closed()
            node.request_shutdown()
            nursery.cancel_scope.cancel()
            return victim.close_code, False
        async with connect_client(url(node), carol) as c:
            await c.send_envelope(Kind.CALL_OFFER, bob.id, b"honest", b"hello")
            with trio.move_on_after(10):
                await offered.wait()
        node.request_shutdown()
        nursery.cancel_scope.cancel()
    return victim.close_code, offered.is_set()


def test_one_client_cannot_get_another_closed_by_flooding_it_with_big_envelopes(tmp_path: Path) -> None:
    """Before, deliveries counted in the recipient's send queue bound like its own replies, so one connection's
    call_ice burst closed a phone reading at 1 MB/s (1008, "slow reader") within 200 KB; now deliveries beyond
    their half of the queue are dropped while the phone still reads, and an honest offer reaches it after."""
    _a_reading_victim_stays_and_gets_the_honest_offer(tmp_path, 1_000_000)


def test_a_client_that_stops_reading_is_still_closed_as_a_slow_reader(tmp_path: Path) -> None:
    """The other side of the above: a client that reads nothing is still ended (1008; 1006 when its full
    buffers hide the close frame) once nothing was written to it for DELIVERY_STALL_S."""

    async def main() -> None:
        with trio.fail_after(60):
            code, _ = await _flood_and_watch(tmp_path, None)
        assert code in (1006, 1008), code

    trio.run(main)


def test_a_phone_reading_slowly_is_not_taken_for_one_that_stopped(tmp_path: Path) -> None:
    """A phone on a poor link reads at 100 KB/s. What the kernel does not take at once goes to a writer task, and
    the node counted the socket as taking bytes only when that task's whole write (up to half a MiB of queued
    deliveries) had gone: 5 s at this pace, more than DELIVERY_STALL_S, so the flood's second burst closed the
    phone (1008) as if it had stopped reading. The writer now writes in pieces and counts each."""
    _a_reading_victim_stays_and_gets_the_honest_offer(tmp_path, 100_000)


def _a_reading_victim_stays_and_gets_the_honest_offer(tmp_path: Path, read_bytes_per_s: float) -> None:
    async def main() -> None:
        with trio.fail_after(60):
            code, offered = await _flood_and_watch(tmp_path, read_bytes_per_s)
        assert code is None, f"the victim reading {read_bytes_per_s:.0f} B/s was closed ({code}) by another's envelopes"
        assert offered, "the honest caller's offer did not reach the victim after the flood"

    trio.run(main)
