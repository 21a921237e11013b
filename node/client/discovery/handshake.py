"""The handshake discovery races with: connect, let the node prove its id (docs/client-protocol.md), then hang up.

`default_handshake()` wraps the client library's `handshake_only` (node.client.connection) in the shape the racer
takes, `HandshakeFn`: `(url, identity, expected_node_id, timeout_s) -> (node_id, handshake_ms)`, raising on any failure.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from node.client.connection import handshake_only
from node.protocol.identity import Identity

HandshakeFn = Callable[[str, Identity, bytes, float], Awaitable[tuple[bytes, float]]]


def default_handshake(ssl_ctx: ssl.SSLContext | None = None) -> HandshakeFn:
    async def handshake(url: str, identity: Identity, expected: bytes, timeout_s: float) -> tuple[bytes, float]:
        return await handshake_only(url, identity, expected, timeout_s, ssl_context=ssl_ctx)

    return handshake
