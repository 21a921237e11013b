"""The peer port under a flood of idle connections: one address cannot keep an admitted peer from linking.

Issue: 1,100 idle TCP connections from one host filled the peer port (`connections_max`) without ever
authenticating. Now each address (/32, /64) may hold only `preauth_per_address_max` connections that have not
finished the handshake, and every connection must finish it within `handshake_timeout_s`.
Real sockets on 127.0.0.0/8: the flood comes from 127.0.0.2, the admitted peer dials from 127.0.0.1.
"""

from __future__ import annotations

import time

import trio

from node.protocol.peerlink import PeerLimits
from tests.integration.test_peer_links import WAIT_S, Book, start_node, wait_until

FLOOD = 200
PORT_LIMITS = PeerLimits(connections_max=64, handshake_timeout_s=30.0)  # idle ones would hold on for 30 s


async def _idle_connection(addr: tuple[str, int]) -> trio.SocketStream | None:
    sock = trio.socket.socket()
    try:
        await sock.bind(("127.0.0.2", 0))
        await sock.connect(addr)
    except OSError:
        sock.close()
        return None
    return trio.SocketStream(sock)


async def test_idle_connections_from_one_address_do_not_keep_an_admitted_peer_out() -> None:
    book: Book = {}
    admitted: set[bytes] = set()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, book, admitted, limits=PORT_LIMITS)
        b = await start_node(nursery, book, admitted)
        held: list[trio.SocketStream] = []

        async def flood() -> None:  # keep FLOOD idle connections open, reopening any the node closes
            while True:
                while len(held) < FLOOD:
                    stream = await _idle_connection(a.address)
                    if stream is None:
                        break
                    held.append(stream)
                await trio.sleep(0.05)
                for s in list(held):
                    if s.socket.fileno() < 0:
                        held.remove(s)

        nursery.start_soon(flood)
        await wait_until(lambda: len(held) >= FLOOD // 2, "the flood's connections")
        await trio.sleep(0.3)  # the node has accepted (or refused) what it will
        started = time.monotonic()
        assert b.links.send(a.id, {"t": 99, "n": "hello"})
        await wait_until(lambda: a.frames_from(b.id) == ["hello"], "the admitted peer's frame", timeout_s=10.0)
        assert time.monotonic() - started < 10.0
        for s in held:
            s.socket.close()
        nursery.cancel_scope.cancel()


async def test_a_connection_that_never_authenticates_is_closed_after_the_handshake_timeout() -> None:
    book: Book = {}
    admitted: set[bytes] = set()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, book, admitted, limits=PeerLimits(handshake_timeout_s=0.5))
        stream = await trio.open_tcp_stream(*a.address)
        started = time.monotonic()
        with trio.fail_after(WAIT_S):
            assert await stream.receive_some(100) == b""  # the node closed it
        assert time.monotonic() - started >= 0.4
        await stream.aclose()
        nursery.cancel_scope.cancel()
