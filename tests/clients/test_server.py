"""The client WebSocket server over real sockets on 127.0.0.1 (docs/client-protocol.md), each with a hard time bound."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from node.client.connection import (
    ConnectionClosed,
    HandshakeError,
    NodeIdMismatch,
    connect_client,
    handshake_only,
    open_websocket,
)
from node.net.session import ClientSession
from node.protocol.identity import Identity, client_auth_message, id_text
from node.protocol.wire import packb
from node.protocol.wire.client import (
    Challenge,
    Deliver,
    Error,
    ErrorCode,
    GoAway,
    Hello,
    Kind,
    Pong,
    Receipt,
    Status,
    decode_client_frame,
    encode_client_message,
)

from .fixtures import run, running_node, wait_until

ALICE, BOB = Identity.generate(), Identity.generate()


@pytest.mark.parametrize("as_json", [False, True])
def test_handshake_and_call_flow(as_json: bool) -> None:
    async def main() -> None:
        async with (
            running_node() as node,
            connect_client(node.url, ALICE, expected_node_id=node.identity.id, json=as_json) as a,
            connect_client(node.url, BOB, json=not as_json) as b,
        ):
            assert a.node_id == b.node_id == node.identity.id
            assert a.handshake_ms > 0
            await wait_until(lambda: BOB.id in node.relay.homes)
            ref = await a.send_envelope(Kind.CALL_OFFER, BOB.id, b"call-1", b"\x00encrypted")
            got = await b.receive()
            assert isinstance(got, Deliver)
            assert (got.kind, got.sender, got.call, got.body, len(got.eid)) == (
                Kind.CALL_OFFER,
                ALICE.id,
                b"call-1",
                b"\x00encrypted",
                16,
            )
            assert await a.receive() == Receipt(ref=ref, status=Status.DELIVERED)
            assert await a.ping() >= 0

    run(main)


def test_every_connection_of_an_id_receives() -> None:
    async def main() -> None:
        async with (
            running_node() as node,
            connect_client(node.url, ALICE) as a,
            connect_client(node.url, BOB) as b1,
            connect_client(node.url, BOB, json=True) as b2,
            connect_client(node.url, BOB) as b3,
        ):
            await wait_until(lambda: len(node.relay.homes.get(BOB.id, {})) == 3)
            await a.send_envelope("call_ice", BOB.id, b"c", b"cand")
            eids = set()
            for b in (b1, b2, b3):
                msg = await b.receive()
                assert isinstance(msg, Deliver) and msg.body == b"cand"
                eids.add(msg.eid)
            assert len(eids) == 1  # one envelope, one eid: a device seeing it twice can drop the repeat
            assert (await a.receive()).status is Status.DELIVERED  # type: ignore[union-attr]

    run(main)


def test_offline_recipient_is_queued() -> None:
    async def main() -> None:
        async with running_node() as node, connect_client(node.url, ALICE) as a:
            ref = await a.send_envelope("call_offer", BOB.id, b"c", b"")
            assert await a.receive() == Receipt(ref=ref, status=Status.QUEUED)

    run(main)


async def raw_handshake_start(url: str, *, json: bool = False) -> tuple[object, Challenge]:
    ws = await open_websocket(url, subprotocols=["homing.v1.json"] if json else [])
    challenge = decode_client_frame(await ws.receive_message(), from_node=True)
    assert isinstance(challenge, Challenge)
    return ws, challenge


async def expect_auth_failed(ws: object) -> None:
    msg = decode_client_frame(await ws.receive_message(), from_node=True)  # type: ignore[attr-defined]
    assert msg == Error(code=ErrorCode.AUTH_FAILED)
    with pytest.raises(ConnectionClosed) as info:
        await ws.receive_message()  # type: ignore[attr-defined]
    assert info.value.code == 4401


@pytest.mark.parametrize("variant", ["forged", "wrong_node", "wrong_nonce", "garbage", "ping_first", "envelope_first"])
def test_bad_hello_gets_auth_failed_and_4401(variant: str) -> None:
    async def main() -> None:
        async with running_node() as node:
            ws, ch = await raw_handshake_start(node.url)
            good = client_auth_message(ch.node, ch.nonce)
            frames: dict[str, bytes] = {
                "forged": encode_hello(ALICE.id, BOB.sign(good)),
                "wrong_node": encode_hello(ALICE.id, ALICE.sign(client_auth_message(BOB.id, ch.nonce))),
                "wrong_nonce": encode_hello(ALICE.id, ALICE.sign(client_auth_message(ch.node, b"n" * 32))),
                "garbage": b"\x93\x01\x02",
                "ping_first": packb({"t": "ping"}),
                "envelope_first": packb({"t": "call_offer", "to": BOB.id, "call": b"c", "body": b"", "ref": 1}),
            }
            await ws.send_message(frames[variant])  # type: ignore[attr-defined]
            await expect_auth_failed(ws)
            assert not node.relay.homes

    run(main)


def encode_hello(client_id: bytes, sig: bytes) -> bytes:
    data = encode_client_message(Hello(id=client_id, nonce=b"k" * 32, sig=sig), json=False)
    assert isinstance(data, bytes)
    return data


def test_json_handshake_by_hand() -> None:
    async def main() -> None:
        async with running_node() as node:
            ws, ch = await raw_handshake_start(node.url, json=True)
            hello = Hello(id=ALICE.id, nonce=b"k" * 32, sig=ALICE.sign(client_auth_message(ch.node, ch.nonce)))
            await ws.send_message(encode_client_message(hello, json=True))  # type: ignore[attr-defined]
            text = await ws.receive_message()  # type: ignore[attr-defined]
            assert isinstance(text, str) and '"t":"welcome"' in text

    run(main)


def test_handshake_timeout_closes_4408() -> None:
    async def main() -> None:
        async with running_node() as node:
            ws, _ = await raw_handshake_start(node.url)
            start = trio.current_time()
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive_message()  # type: ignore[attr-defined]
            assert info.value.code == 4408
            assert 10.0 <= trio.current_time() - start < 11.0

    run(main, mock_clock=True, limit_s=60)


def test_client_checks_the_node_id() -> None:
    async def main() -> None:
        async with running_node() as node:
            node_id, ms = await handshake_only(node.url, ALICE, node.identity.id, 5)
            assert node_id == node.identity.id and ms > 0
            with pytest.raises(NodeIdMismatch, match="expected"):
                await handshake_only(node.url, ALICE, BOB.id, 5)
            with pytest.raises(NodeIdMismatch):
                async with connect_client(f"ws://127.0.0.1:{node.port}#{id_text(BOB.id)}", ALICE):
                    pass
            async with connect_client(f"ws://127.0.0.1:{node.port}#{node.identity.id_text}", ALICE) as c:
                assert c.node_id == node.identity.id
            with pytest.raises(HandshakeError, match="404"):
                await handshake_only(f"ws://127.0.0.1:{node.port}/elsewhere", ALICE, None, 5)

    run(main)


def test_a_graceful_stop_takes_its_sessions_out_of_the_relay_as_it_sends_goaway() -> None:
    """A session whose close is queued drops what it is handed, and the node's relay (node/net/relay.py) answers
    `delivered` for what it hands over. So the relay must hear the sessions go offline from the stop itself, not
    when each session's reader task next runs: in a 10,000-client goaway storm 15 offers were answered `delivered`
    and never sent (docs/performance.md, "Fifth pass")."""

    async def main() -> None:
        async with running_node() as node, connect_client(node.url, ALICE), connect_client(node.url, BOB):
            reported_by: list[str] = []
            record = node.relay.client_offline

            def offline(session: ClientSession) -> None:
                reported_by.append(trio.lowlevel.current_task().name)
                record(session)

            node.relay.client_offline = offline  # type: ignore[method-assign]
            await node.server.shutdown([])
            me = trio.lowlevel.current_task().name
            assert reported_by == [me, me], reported_by  # before: each from its session's reader task
            assert node.relay.homes == {}

    run(main)


async def most_in_one_turn(progress: list[Any], total: int, work: Callable[[], Awaitable[object]]) -> int:
    """Run `work` beside a canary task that only yields, until `progress` holds `total` items; returns the most
    items it gained between two of the canary's turns (trio runs each scheduler batch in a random order, so that
    can be two turns of the task doing the work)."""
    seen = [len(progress)]

    async def canary() -> None:
        while len(progress) < total:
            seen.append(len(progress))
            await trio.sleep(0)
        seen.append(len(progress))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(canary)
        await work()
    return max(b - a for a, b in itertools.pairwise(seen))


def test_a_graceful_stop_tells_its_sessions_in_batches_and_lets_other_tasks_run_between_them() -> None:
    """Told all at once, 10,000 sessions held a node's event loop for seconds, and its peer links went unread long
    enough for forwards to it to time out (docs/performance.md, "Sixth pass"). A canary task that only yields
    sees at most two batches of sessions go offline between two of its turns (trio runs each scheduler batch in a
    random order, so the stop can run last in one batch and first in the next); with one loop over them all it saw
    every session at once. The goaway is still sent to all, each with its 1001 close."""

    async def main() -> None:
        clients = [Identity.generate() for _ in range(7)]
        async with running_node() as node, contextlib.AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(connect_client(node.url, c)) for c in clients]
            await wait_until(lambda: len(node.relay.homes) == len(clients))
            offline: list[bytes] = []
            record = node.relay.client_offline

            def note(session: ClientSession) -> None:
                assert session.client_id is not None
                offline.append(session.client_id)
                record(session)

            node.relay.client_offline = note  # type: ignore[method-assign]
            step = await most_in_one_turn(offline, len(clients), lambda: node.server.shutdown(["homing://node/abc"],
                                                                                               batch=2))  # fmt: skip
            assert step <= 2 * 2  # two batches of 2; before: 7 at once
            assert sorted(offline) == sorted(c.id for c in clients)
            for conn in conns:
                assert await conn.receive() == GoAway(nodes=("homing://node/abc",))
                with pytest.raises(ConnectionClosed) as info:
                    await conn.receive()
                assert info.value.code == 1001

    run(main)


def test_ping_pong_frames() -> None:
    async def main() -> None:
        async with running_node() as node, connect_client(node.url, ALICE, json=True) as a:
            await a.send_raw('{"t":"ping"}')
            assert await a.receive() == Pong()

    run(main)


def test_goaway_and_1001_on_shutdown() -> None:
    async def main() -> None:
        async with running_node() as node, connect_client(node.url, ALICE) as a, connect_client(node.url, BOB) as b:
            await node.server.shutdown(["homing://node/abc", "homing://node/def"])
            for c in (a, b):
                assert await c.receive() == GoAway(nodes=("homing://node/abc", "homing://node/def"))
                with pytest.raises(ConnectionClosed) as info:
                    await c.receive()
                assert info.value.code == 1001
            with pytest.raises(HandshakeError):
                await handshake_only(node.url, ALICE, None, 2)

    run(main)
