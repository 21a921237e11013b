"""A live peer link that carries a replayed or altered frame closes and changes nothing; rekeying keeps traffic
flowing. Real `PeerLinks` nodes on 127.0.0.1, with a proxy between A and B that can inject bytes A -> B at a frame
boundary (an on-path attacker)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio

from node.protocol.crypto import LINK_FRAME_HEADER_BYTES, LINK_MAGIC
from node.protocol.peerlink import PeerLimits
from tests.integration.test_peer_links import Book, start_node, wait_until


class InjectingProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frames: list[bytes] = []  # whole transport frames seen A -> B on the current connection
        self.inject: bytes | None = None
        self.connections = 0

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[:2])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        self.frames = []
        server = await trio.open_tcp_stream(*self.target)
        async with server, trio.open_nursery() as nursery:
            nursery.start_soon(self._up, client, server)
            nursery.start_soon(self._down, server, client)

    async def _up(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        buf = bytearray()
        handshake_done = False
        try:
            while chunk := await src.receive_some(65536):
                buf += chunk
                if self.inject is not None:  # at a frame boundary: what went before was forwarded whole
                    await dst.send_all(self.inject)
                    self.inject = None
                while True:
                    if not handshake_done:
                        need = len(LINK_MAGIC) + 2
                        if len(buf) < need:
                            break
                        need += struct.unpack(">H", buf[len(LINK_MAGIC) : need])[0]
                        handshake_done = True
                    else:
                        if len(buf) < LINK_FRAME_HEADER_BYTES:
                            break
                        n = struct.unpack(">I", buf[:LINK_FRAME_HEADER_BYTES])[0] & 0x7FFFFFFF
                        need = LINK_FRAME_HEADER_BYTES + n
                    if len(buf) < need:
                        break
                    unit = bytes(buf[:need])
                    del buf[:need]
                    if handshake_done and self.frames is not None and unit[:4] != LINK_MAGIC:
                        self.frames.append(unit)
                    await dst.send_all(unit)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await dst.aclose()

    async def _down(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while chunk := await src.receive_some(65536):
                await dst.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await dst.aclose()


def _conn(node: Any, peer: Any) -> Any:
    conn = node.links.link(peer.id)
    assert conn is not None
    return conn


def _tamper(frame: bytes) -> bytes:
    out = bytearray(frame)
    out[-1] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("attack", ["replay", "tamper", "reorder"])
async def test_a_replayed_reordered_or_altered_frame_closes_the_link_and_changes_nothing(attack: str) -> None:
    book: Book = {}
    admitted: set[bytes] = set()
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, book, admitted)
        b = await start_node(nursery, book, admitted)
        proxy = InjectingProxy(book[b.id])
        book[b.id] = await nursery.start(proxy.run)
        for i in range(3):  # three frames, each in its own scheduler batch (its own sealed frame)
            assert a.links.send(b.id, {"t": 99, "n": i})
            await wait_until(lambda i=i: len(b.frames_from(a.id)) == i + 1, f"frame {i} at B")
        await wait_until(lambda: len(proxy.frames) >= 4, "the proxy saw the link frames")  # LINK_HELLO + 3
        if attack == "replay":
            proxy.inject = proxy.frames[-1]  # frame 2 again
        elif attack == "tamper":
            proxy.inject = _tamper(proxy.frames[-1])
        else:
            proxy.inject = proxy.frames[-2]  # an earlier frame, out of order
        assert a.links.send(b.id, {"t": 99, "n": "after"})  # carries the injection in front of it
        await wait_until(lambda: b.id in a.unreachable, "A learns that B closed the link")
        assert b.frames_from(a.id) == [0, 1, 2], "the injected frame, or what followed it, was acted on"
        # the link comes back on the next send, and traffic continues
        assert a.links.send(b.id, {"t": 99, "n": "again"})
        await wait_until(lambda: b.frames_from(a.id)[-1:] == ["again"], "a frame on the new link")
        assert b.frames_from(a.id) == [0, 1, 2, "again"]
        assert proxy.connections == 2
        nursery.cancel_scope.cancel()


async def test_links_rekey_and_traffic_continues() -> None:
    book: Book = {}
    admitted: set[bytes] = set()
    limits = PeerLimits(rekey_frames_max=4)
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, book, admitted, limits=limits)
        b = await start_node(nursery, book, admitted, limits=limits)
        for i in range(40):  # one scheduler batch each: 40 sealed frames A -> B, 40 back
            assert a.links.send(b.id, {"t": 99, "n": i})
            await wait_until(lambda i=i: len(b.frames_from(a.id)) == i + 1, f"frame {i} at B")
            assert b.links.send(a.id, {"t": 99, "n": i})
            await wait_until(lambda i=i: len(a.frames_from(b.id)) == i + 1, f"frame {i} at A")
        assert a.frames_from(b.id) == list(range(40)) and b.frames_from(a.id) == list(range(40))
        sa, sb = _conn(a, b).chan.session, _conn(b, a).chan.session
        assert sa.rekeys_sent >= 9 and sa.rekeys_sent == sb.rekeys_received
        assert sb.rekeys_sent >= 9 and sb.rekeys_sent == sa.rekeys_received
        assert a.links.link_count == 1 and b.links.link_count == 1
        nursery.cancel_scope.cancel()
