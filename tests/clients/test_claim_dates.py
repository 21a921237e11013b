"""A node cannot get a client to sign a home claim dated ahead of the client's clock.

The hello signature over the node's challenge nonce is a home claim dated by the nonce's first 8 bytes (unix ms,
docs/protocol.md "Home claims"); other nodes take it from `claim_age_max_s` (12 h) in the past to `claim_skew_s`
ahead. The node writes that date. Before, the client signed any date, so a hostile node it connected to once could
collect claims dated days or years ahead and, when each date came, claim to be the client's home again for 12 h
(copies of its envelopes, its mailbox pushed there, envelopes "from" it), long after the client had left.
"""

from __future__ import annotations

import time

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from node.client.connection import HandshakeError, handshake_only
from node.protocol.identity import Identity
from node.protocol.relay.claims import CHALLENGE_AHEAD_MAX_S, CHALLENGE_DATE_HORIZON_S, challenge_nonce
from node.protocol.wire.client import Challenge, Hello, decode_client_frame, encode_client_message
from tests.clients.fixtures import run

NODE = Identity.from_seed(b"hostile-node-key-for-claim-dates")
CLIENT = Identity.from_seed(b"client-key-for-claim-date-tests!")


async def _hostile_node(listener: trio.SocketListener, nonce: bytes, hellos: list[Hello]) -> None:
    """Accept one WebSocket, send a challenge with `nonce`, keep the hello if one comes, then hang up."""
    stream = await listener.accept()
    ws = WSConnection(ConnectionType.SERVER)
    async with stream:
        with trio.move_on_after(5):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        await stream.send_all(ws.send(AcceptConnection()))
                        frame = encode_client_message(Challenge(node=NODE.id, nonce=nonce), json=False)
                        await stream.send_all(ws.send(BytesMessage(data=frame)))
                    elif isinstance(event, BytesMessage):
                        msg = decode_client_frame(bytes(event.data))
                        if isinstance(msg, Hello):
                            hellos.append(msg)
                        return
                    elif isinstance(event, CloseConnection):
                        return


@pytest.mark.parametrize(
    ("ahead_s", "signed"),
    [
        (0, True),
        (CHALLENGE_AHEAD_MAX_S - 60, True),
        (CHALLENGE_AHEAD_MAX_S + 60, False),
        (86_400, False),
        (CHALLENGE_DATE_HORIZON_S - 86_400, False),
        # past the horizon: what a node that draws its whole nonce at random (as the client protocol allows) sends
        # but for about 2 in 10 million; such a claim never becomes good, and such nodes must stay reachable
        (CHALLENGE_DATE_HORIZON_S + 86_400, True),
    ],
)
def test_a_client_signs_no_challenge_dated_ahead_of_its_clock(ahead_s: int, signed: bool) -> None:
    async def main() -> None:
        hellos: list[Hello] = []
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nonce = challenge_nonce(time.time() + ahead_s, bytes(24))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hostile_node, listeners[0], nonce, hellos)
            with pytest.raises(HandshakeError):  # the hostile node never welcomes: either way no connection
                await handshake_only(f"ws://127.0.0.1:{port}/v1/client", CLIENT, NODE.id, 5)
        await listeners[0].aclose()
        assert [h.id for h in hellos] == ([CLIENT.id] if signed else [])

    run(main)
