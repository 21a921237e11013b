"""The names the hostile harness uses, from the current layout or from the flat layout before issue 11.

The harness is run against the commit before the protections (to show each test fails there), and that commit
kept the same cores and drivers under older module paths (node/identity.py, node/wire/..., node/service.py).
Only imports differ; nothing here changes behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from node.app.config import build_config
    from node.app.service import NodeHandle, run_node
    from node.client.connection import ConnectionClosed, connect_client
    from node.protocol.identity import Identity, client_auth_message, id_text, parse_id
    from node.protocol.swim.messages import Gossip, MemberInfo, MemberState, Update
    from node.protocol.wire import MsgType
    from node.protocol.wire.client import (
        Challenge,
        Deliver,
        Envelope,
        Hello,
        Kind,
        Receipt,
        Welcome,
        decode_client_frame,
        encode_client_message,
    )
    from node.protocol.wire.seed import KIND_WHOIS_REPLY, encode_whois
    from node.protocol.wire.swim import INCARNATION_MAX, encode_datagram

    LAYOUT = "current"
except ImportError:  # the commit before issue 11 (956e983): flat layout
    if not TYPE_CHECKING:  # type checkers see the current layout only
        from node.config import build_config
        from node.identity import (
            Identity,
            client_auth_message,
            id_text,
            parse_id,
        )
        from node.service import NodeHandle, run_node
        from node.swim.messages import Gossip, MemberInfo, MemberState, Update
        from node.wire import MsgType
        from node.wire.client import (
            Challenge,
            Deliver,
            Envelope,
            Hello,
            Kind,
            Receipt,
            Welcome,
            decode_client_frame,
            encode_client_message,
        )
        from node.wire.seed import KIND_WHOIS_REPLY, encode_whois
        from node.wire.swim import INCARNATION_MAX, encode_datagram

        from node.client import ConnectionClosed, connect_client

        LAYOUT = "pre-11"

__all__ = [
    "INCARNATION_MAX",
    "KIND_WHOIS_REPLY",
    "LAYOUT",
    "Challenge",
    "ConnectionClosed",
    "Deliver",
    "Envelope",
    "Gossip",
    "Hello",
    "Identity",
    "Kind",
    "MemberInfo",
    "MemberState",
    "MsgType",
    "NodeHandle",
    "Receipt",
    "Update",
    "Welcome",
    "build_config",
    "client_auth_message",
    "connect_client",
    "decode_client_frame",
    "encode_client_message",
    "encode_datagram",
    "encode_whois",
    "id_text",
    "parse_id",
    "run_node",
]
