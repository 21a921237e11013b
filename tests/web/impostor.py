"""A WebSocket server that claims to be a node it is not: its challenge names the pinned id, but it can only sign
the welcome with its own key. Runs trio in a thread so the synchronous selenium tests can use it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from node.protocol.identity import Identity, node_auth_message
from node.protocol.wire import packb, unpackb


@contextmanager
def impostor(claimed_id: bytes) -> Iterator[tuple[str, list[str]]]:
    """Yield (ws URL, events): events records what the impostor saw (a hello, a frame after welcome)."""
    own = Identity.generate()
    events: list[str] = []
    ready = threading.Event()
    port: list[int] = []
    stop: list[tuple[trio.CancelScope, trio.lowlevel.TrioToken]] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.send_message(packb({"t": "challenge", "v": 1, "node": claimed_id, "nonce": os.urandom(32)}))
            raw = await ws.get_message()
            hello = unpackb(raw if isinstance(raw, bytes) else raw.encode(), max_bytes=4096)
            events.append("hello")
            sig = own.sign(node_auth_message(hello["id"], hello["nonce"]))
            await ws.send_message(packb({"t": "welcome", "id": hello["id"], "sig": sig}))
            with trio.move_on_after(5):
                await ws.get_message()
                events.append("frame after welcome")
        except ConnectionClosed:
            events.append("closed by the client")

    async def main() -> None:
        with trio.CancelScope() as scope:
            stop.append((scope, trio.lowlevel.current_trio_token()))
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
                port.append(server.port)
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("impostor did not start")
    try:
        yield f"ws://127.0.0.1:{port[0]}/v1/client", events
    finally:
        scope, token = stop[0]
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(5)
