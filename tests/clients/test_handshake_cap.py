"""The cap on handshakes in progress (`[clients] handshakes_in_progress_min`, docs/client-protocol.md
"Reconnecting"): beyond it an upgrade is answered 503 with a short Retry-After before any challenge is signed, and a
slot is free again as soon as a handshake in progress ends (welcomed or closed). Real sockets on 127.0.0.1."""

from __future__ import annotations

import trio

from node.client.connection import connect_client
from node.protocol.identity import Identity

from .fixtures import run, running_node, wait_until
from .rawws import RawClient, Refused

ALICE, BOB, CAROL = Identity.generate(), Identity.generate(), Identity.generate()


async def raw_response(port: int) -> bytes:
    """An upgrade request by hand: the server's whole HTTP answer head (what a refused client sees)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    request = (
        b"GET /v1/client HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request)
    got = b""
    while b"\r\n\r\n" not in got:
        data = await stream.receive_some(4096)
        if not data:
            break
        got += data
    await stream.aclose()
    return got


def test_handshakes_beyond_the_cap_get_503_with_retry_after_until_a_slot_frees() -> None:
    async def main() -> None:
        async with running_node(handshakes_in_progress_min=2, handshakes_headroom=1) as node:
            # two clients upgraded and challenged but silent: both handshakes are in progress
            first = await RawClient.connect(node.port)
            second = await RawClient.connect(node.port)
            head = await raw_response(node.port)
            assert head.startswith(b"HTTP/1.1 503 "), head
            assert b"\r\nretry-after: 1\r\n" in head.lower(), head
            try:
                await RawClient.connect(node.port)
                raise AssertionError("a third handshake was started")
            except Refused as exc:
                assert exc.status == 503
            # one is welcomed: its slot is free, a new client gets in (and is served)
            await first.authenticate(ALICE)
            async with connect_client(node.url, BOB) as bob:
                assert await bob.ping() >= 0
            # the other gives up: its slot is free too
            await second.stream.aclose()
            await wait_until(lambda: node.server._handshaking == 0)
            async with connect_client(node.url, CAROL) as carol:
                assert await carol.ping() >= 0
            assert node.server._handshaking == 0

    run(main)


def test_a_client_refused_at_the_cap_costs_no_challenge() -> None:
    """The refusal comes before the session exists: no session, no nonce, no signature for a refused client."""

    async def main() -> None:
        async with running_node(handshakes_in_progress_min=1, handshakes_headroom=1) as node:
            held = await RawClient.connect(node.port)
            opened = node.server._next_conn_id
            for _ in range(5):
                assert (await raw_response(node.port)).startswith(b"HTTP/1.1 503 ")
            assert node.server._next_conn_id == opened  # no session was opened for any of them
            await held.authenticate(ALICE)
            assert node.server._online == 1

    run(main)


def test_silent_connections_do_not_take_handshake_slots() -> None:
    """Only an accepted upgrade counts: sockets that never send a request (bounded by handshake_timeout_s and the
    connection limits) cannot make the node answer 503 to everyone."""

    async def main() -> None:
        async with running_node(handshakes_in_progress_min=1, handshakes_headroom=1) as node:
            silent = [await trio.open_tcp_stream("127.0.0.1", node.port) for _ in range(5)]
            async with connect_client(node.url, ALICE) as alice:
                assert await alice.ping() >= 0
            for stream in silent:
                await stream.aclose()

    run(main)


def test_a_node_with_an_idle_loop_admits_headroom_times_the_cap_for_slow_clients() -> None:
    """Clients that are slow to say hello cost an idle node nothing: it admits `handshakes_headroom` times the cap
    before it refuses (node/protocol/handshakes.py, "Why the headroom")."""

    async def main() -> None:
        async with running_node(handshakes_in_progress_min=2, handshakes_headroom=3) as node:
            silent = [await RawClient.connect(node.port) for _ in range(6)]  # 2 x 3, all challenged
            assert node.server._handshaking == 6
            head = await raw_response(node.port)
            assert head.startswith(b"HTTP/1.1 503 "), head  # the seventh: the loop is idle, but 6 is the bound
            for c in silent:
                await c.stream.aclose()

    run(main)
