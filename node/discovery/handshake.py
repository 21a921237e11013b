"""The handshake discovery races with: connect, let the node prove its id (CONTRACT §2), then hang up.

`default_handshake()` returns `node.client.handshake_only` (the client library's) when this build has it, else
`proof_of_id`, a minimal client side of the §2 handshake that does only what discovery needs. Both have the shape
`HandshakeFn`: `(url, identity, expected_node_id, timeout_s) -> (node_id, handshake_ms)`, raising on any failure.
"""

from __future__ import annotations

import importlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable

import trio
import trio_websocket

from node.errors import HomingError, RemoteProtocolError, TransportError
from node.identity import (
    ID_BYTES,
    SIG_BYTES,
    Identity,
    client_auth_message,
    node_auth_message,
    short_id,
    verify_signature,
)
from node.wire import Limits, get_bytes, packb, require_map, unpackb

HandshakeFn = Callable[[str, Identity, bytes, float], Awaitable[tuple[bytes, float]]]
NONCE_BYTES = 32
HANDSHAKE_FRAME_MAX_BYTES = 4096


def default_handshake(ssl_ctx: ssl.SSLContext | None = None) -> HandshakeFn:
    try:
        client_handshake = importlib.import_module("node.client").handshake_only
    except (ImportError, AttributeError):
        client_handshake = None

    async def handshake(url: str, identity: Identity, expected: bytes, timeout_s: float) -> tuple[bytes, float]:
        if client_handshake is not None:
            result: tuple[bytes, float] = await client_handshake(
                url, identity, expected, timeout_s, ssl_context=ssl_ctx
            )
            return result
        return await proof_of_id(url, identity, expected, timeout_s, ssl_ctx=ssl_ctx)

    return handshake


async def _receive(ws: trio_websocket.WebSocketConnection, expect: str) -> dict[str, object]:
    message = await ws.get_message()
    if not isinstance(message, bytes):
        raise RemoteProtocolError(f"expected a binary {expect} frame")
    frame = require_map(unpackb(message, max_bytes=HANDSHAKE_FRAME_MAX_BYTES), expect)
    if frame.get("t") == "error":
        raise RemoteProtocolError(f"node answered error {str(frame.get('code'))[:40]!r}")
    if frame.get("t") != expect:
        raise RemoteProtocolError(f"expected {expect}, got {str(frame.get('t'))[:40]!r}")
    return frame


async def proof_of_id(
    url: str, identity: Identity, expected: bytes, timeout_s: float, *, ssl_ctx: ssl.SSLContext | None = None
) -> tuple[bytes, float]:
    """Connect to `url`, check that the node proves `expected` as its id, and return (id, milliseconds)."""
    start = time.perf_counter()
    ctx = ssl_ctx if url.startswith("wss://") else None
    if url.startswith("wss://") and ctx is None:
        ctx = ssl.create_default_context()
    try:
        with trio.fail_after(timeout_s):
            async with trio_websocket.open_websocket_url(
                url, ctx, max_message_size=Limits.CLIENT_FRAME_MAX, connect_timeout=timeout_s, disconnect_timeout=1
            ) as ws:
                await _exchange(ws, identity, expected)
    except trio.TooSlowError as exc:
        raise TransportError(f"no handshake within {timeout_s:g} s") from exc
    except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, ssl.SSLError) as exc:
        raise TransportError(f"connect failed: {type(exc).__name__}: {exc}"[:200]) from exc
    return expected, (time.perf_counter() - start) * 1000.0


async def _exchange(ws: trio_websocket.WebSocketConnection, identity: Identity, expected: bytes) -> None:
    challenge = await _receive(ws, "challenge")
    node_id = get_bytes(challenge, "node", min_len=ID_BYTES, max_len=ID_BYTES)
    node_nonce = get_bytes(challenge, "nonce", min_len=NONCE_BYTES, max_len=NONCE_BYTES)
    if node_id != expected:
        raise HomingError(f"node claims id {short_id(node_id)}…, expected {short_id(expected)}…")
    nonce = os.urandom(NONCE_BYTES)
    sig = identity.sign(client_auth_message(node_id, node_nonce))
    await ws.send_message(packb({"t": "hello", "id": identity.id, "nonce": nonce, "sig": sig}))
    welcome = await _receive(ws, "welcome")
    proof = get_bytes(welcome, "sig", min_len=SIG_BYTES, max_len=SIG_BYTES)
    if not verify_signature(node_id, node_auth_message(identity.id, nonce), proof):
        raise HomingError(f"node {short_id(node_id)}… failed to prove its id (bad welcome signature)")
