"""What the relay core asks its driver to do (drained with `RelayCore.drain()`)."""

from __future__ import annotations

from node.protocol.records import record
from node.protocol.relay.push import PushDropped, SendPush
from node.protocol.wire.client import ClientMessage
from node.protocol.wire.peer import PeerMessage

__all__ = ["CloseClient", "Command", "ToClient", "ToPeer"]


@record(kw_only=True, slots=True)
class ToClient:
    conn_id: int
    msg: ClientMessage


@record(kw_only=True, slots=True)
class ToPeer:
    node: bytes
    msg: PeerMessage


@record(kw_only=True, slots=True)
class CloseClient:
    """Close this connection (1001): its home claim is about to age out; the client reconnects with a fresh one."""

    conn_id: int


# SendPush and PushDropped: push wake-up (node/protocol/relay/push.py)
Command = ToClient | ToPeer | CloseClient | SendPush | PushDropped
