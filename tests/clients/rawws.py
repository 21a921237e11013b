"""A raw WebSocket client for hostile-client tests: wsproto over a trio socket, frame by frame, no safety net.

It does what a well-behaved client library never does: pings without reading the pongs, fragments a message into
any number of (empty) frames, and reports how the server ended the connection.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from node.protocol.identity import Identity, client_auth_message
from node.protocol.wire.client import Challenge, Hello, Welcome, decode_client_frame, encode_client_message


class Refused(Exception):
    """The upgrade was refused: `status` is the HTTP status, None when the server just closed the socket."""

    def __init__(self, status: int | None) -> None:
        super().__init__(f"refused: {status}")
        self.status = status


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._events: list[Event] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        rcvbuf_bytes: int | None = None,
        path: str = "/v1/client",
        source: str | None = None,
        prefix: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> RawClient:
        """Connect and upgrade (from `source`, after `prefix` bytes such as a PROXY header); raises Refused."""
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf_bytes is not None:  # a small window: the server's pongs pile up on its side, not in our kernel
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        if source is not None:
            await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        request = Request(host=f"127.0.0.1:{port}", target=path, extra_headers=list(headers))
        await client.stream.send_all(prefix + client.ws.send(request))
        try:
            event = await client.next_event()
        except (trio.EndOfChannel, trio.BrokenResourceError, RemoteProtocolError) as exc:
            raise Refused(None) from exc
        if isinstance(event, RejectConnection):
            raise Refused(event.status_code)
        assert isinstance(event, AcceptConnection), event
        return client

    async def next_event(self) -> Event:
        while not self._events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, CloseConnection) and self.close_code is None:
                    self.close_code = event.code
                self._events.append(event)
            if not data and not self._events:
                raise trio.EndOfChannel
        return self._events.pop(0)

    async def next_message(self) -> bytes | str:
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage):
                return event.data
            if isinstance(event, BytesMessage):
                return bytes(event.data)
            if isinstance(event, CloseConnection):
                raise trio.EndOfChannel

    async def authenticate(self, who: Identity) -> None:
        challenge = decode_client_frame(await self.next_message(), from_node=True)
        assert isinstance(challenge, Challenge)
        sig = who.sign(client_auth_message(challenge.node, challenge.nonce))
        await self.send_message(encode_client_message(Hello(id=who.id, nonce=b"n" * 32, sig=sig), json=False))
        assert isinstance(decode_client_frame(await self.next_message(), from_node=True), Welcome)

    async def send_message(self, data: bytes | str) -> None:
        msg: TextMessage | BytesMessage = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        await self.stream.send_all(self.ws.send(msg))

    def ping_bytes(self, payload: bytes) -> bytes:
        return self.ws.send(Ping(payload=payload))

    def pong_bytes(self, payload: bytes) -> bytes:
        """An unsolicited WebSocket pong (RFC 6455 §5.5.3 allows them: a one-way heartbeat)."""
        return self.ws.send(Pong(payload=payload))

    def fragment_bytes(self, data: str) -> bytes:
        """One more frame of an unfinished text message (the first one opens it; "" makes an empty frame)."""
        return self.ws.send(TextMessage(data=data, message_finished=False))

    async def flood_empty_fragments(self, frames_max: int, per_write: int = 10_000) -> int:
        """Open a text message, then send empty continuation frames, `per_write` a write, until the node closes
        the connection or `frames_max` are sent; then wait up to 5 s for the close. The frames sent (a close code
        the node sent is in `close_code`)."""
        await self.stream.send_all(self.fragment_bytes("x"))
        empty = self.fragment_bytes("") * per_write
        sent = 0
        done = trio.Event()

        async def reader() -> None:
            await self.wait_closed()
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            while sent < frames_max and not done.is_set():
                try:
                    await self.stream.send_all(empty)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                sent += per_write
                await trio.sleep(0)
            with trio.move_on_after(5):
                await done.wait()
            nursery.cancel_scope.cancel()
        return sent

    async def wait_closed(self) -> int | None:
        """Read until the server's close frame or EOF; the close code (None when the socket just ended)."""
        try:
            while self.close_code is None:
                await self.next_event()
        except (trio.EndOfChannel, trio.BrokenResourceError):
            pass
        return self.close_code
