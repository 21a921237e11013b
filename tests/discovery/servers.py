"""Real servers on 127.0.0.1 for discovery tests: a node that does the client handshake, a TCP black hole,
and a registry serving `GET /v1/nodes` over HTTP(S).

The node here implements only the node side of the docs/client-protocol.md handshake (challenge, check hello,
welcome) with a real WebSocket server (an implementation independent of `node/net/clients.py`), and can be told
to prove another id (an impostor) or to never send its challenge.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable

import h11
import trio
import trio_websocket

from node.protocol.identity import Identity, client_auth_message, encode_document, node_auth_message, verify_signature
from node.protocol.wire import packb, unpackb


async def serve_node(nursery: trio.Nursery, identity: Identity, *, silent: bool = False) -> str:
    """Start a handshake-only node; return its ws:// URL. `silent`: accept and never send the challenge."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await _handshake(await request.accept())

    async def _handshake(ws: trio_websocket.WebSocketConnection) -> None:
        if silent:
            await trio.sleep_forever()
        nonce = os.urandom(32)
        await ws.send_message(packb({"t": "challenge", "v": 1, "node": identity.id, "nonce": nonce}))
        hello = unpackb(await ws.get_message(), max_bytes=4096)
        if not verify_signature(hello["id"], client_auth_message(identity.id, nonce), hello["sig"]):
            await ws.send_message(packb({"t": "error", "code": "auth_failed"}))
            await ws.aclose(4401)
            return
        sig = identity.sign(node_auth_message(hello["id"], hello["nonce"]))
        await ws.send_message(packb({"t": "welcome", "id": hello["id"], "sig": sig}))
        await ws.get_message()

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}/v1/client"


async def black_hole(nursery: trio.Nursery) -> int:
    """A TCP port that accepts connections and never sends a byte. Returns the port."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    held: list[trio.SocketStream] = []

    async def serve() -> None:
        async with listener:
            while True:
                held.append(await listener.accept())

    nursery.start_soon(serve)
    return int(listener.socket.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_registry(
    nursery: trio.Nursery, get_doc: Callable[[], dict[str, bytes]], *, ssl_ctx: ssl.SSLContext | None = None
) -> str:
    """An HTTP/1.1 registry answering GET /v1/nodes with the msgpack signed list. Returns its base URL."""

    async def handle(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        target = b""
        try:
            with trio.fail_after(10):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Request):
                        target = event.target
                    elif isinstance(event, h11.EndOfMessage):
                        body = encode_document(get_doc()) if target == b"/v1/nodes" else b"not found"
                        status = 200 if target == b"/v1/nodes" else 404
                        headers = [("content-type", "application/msgpack"), ("content-length", str(len(body)))]
                        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                        await stream.send_all(conn.send(h11.Data(data=body)) or b"")
                        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
        except (trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError, ssl.SSLError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    if ssl_ctx is not None:
        wrapped = [trio.SSLListener(listener, ssl_ctx, https_compatible=True) for listener in listeners]
        nursery.start_soon(trio.serve_listeners, handle, wrapped)
        return f"https://localhost:{port}"
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{port}"


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
