"""The names the hostile harness uses, from the current layout or from the flat layout before issue 11.

The harness is run against the commit before the protections (to show each test fails there), and that commit
kept the same cores and drivers under older module paths (node/identity.py, node/wire/..., node/service.py).
Only imports differ; nothing here changes behaviour.
"""

from __future__ import annotations

# ruff: noqa: F401
try:
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
    from node.identity import (  # type: ignore[no-redef]
        Identity,
        client_auth_message,
        id_text,
        parse_id,
    )
    from node.service import NodeHandle, run_node  # type: ignore[no-redef]
    from node.swim.messages import Gossip, MemberInfo, MemberState, Update  # type: ignore[no-redef]
    from node.wire import MsgType  # type: ignore[no-redef]
    from node.wire.client import (  # type: ignore[no-redef]
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
    from node.wire.seed import KIND_WHOIS_REPLY, encode_whois  # type: ignore[no-redef]
    from node.wire.swim import INCARNATION_MAX, encode_datagram  # type: ignore[no-redef]

    from node.client import ConnectionClosed, connect_client  # type: ignore[no-redef,attr-defined]

    LAYOUT = "pre-11"
