"""The homing client library (docs/client-protocol.md): connect, prove our id, check the node's, exchange envelopes.

Used by client authors, `homing demo`, the discovery code (which races `handshake_only`) and the tests.

    async with connect_client("ws://127.0.0.1:7400/v1/client", identity, expected_node_id=node_id) as conn:
        ref = await conn.send_envelope("call_offer", callee_id, b"call-1", encrypted_body)
        msg = await conn.receive()   # Receipt, Deliver, Error, GoAway, Pong...

A URL may carry the node id it must prove as its fragment (`wss://host:port#<node id>`, the manual-entry form
of docs/discovery.md), and may omit the path (`/v1/client` is used). Every wait is bounded: connect and handshake by
`timeout_s`; a failure raises HandshakeError (NodeIdMismatch when the node cannot prove the expected id);
a closed connection raises ConnectionClosed with the close code and reason (see docs/client-protocol.md).
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from node.protocol.errors import HomingError, RemoteProtocolError
from node.protocol.identity import Identity, client_auth_message, id_text, node_auth_message, parse_id, verify_signature
from node.protocol.relay.claims import challenge_too_far_ahead
from node.protocol.wire import Limits
from node.protocol.wire.client import (  # push wake-up
    NONCE_BYTES,
    CardReply,
    CardRequest,
    Challenge,
    ClientMessage,
    Envelope,
    Error,
    Hello,
    IceServers,
    IceServersRequest,
    Kind,
    Ok,
    Pong,
    PushRegister,
    PushUnregister,
    Welcome,
    decode_client_frame,
    encode_client_message,
)
from node.protocol.wire.client import Ping as PingMsg

CLIENT_PATH = "/v1/client"
JSON_SUBPROTOCOL = "homing.v1.json"
RECEIVE_QUEUE_MAX = 1024  # messages read ahead of receive(); a full queue stops reading (backpressure)
CLOSE_WAIT_S = 1.0  # after our close frame, how long we wait for the node's


class ClientError(HomingError):
    """A client connection failed."""


class HandshakeError(ClientError):
    """Could not connect, or the mutual handshake failed (refused, timed out, or a bad proof)."""


class NodeIdMismatch(HandshakeError):
    """The node could not prove the id it was expected to have."""


class IceServersRefused(ClientError):
    """The node answered `ice_servers` with an error (rate_limited), or not in time."""


class ConnectionClosed(ClientError):
    """The connection is closed; `code` is the WebSocket close code (1006 when none was received)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


def parse_client_url(url: str) -> tuple[str, str, int, str, bytes | None]:
    """(scheme, host, port, target, pinned node id or None) of a ws:// or wss:// URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeError(f"not a ws:// or wss:// URL: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        pinned = parse_id(parts.fragment) if parts.fragment else None
    except ValueError as exc:
        raise HandshakeError(f"bad URL {url!r}: {exc}") from exc
    path = parts.path if parts.path not in ("", "/") else CLIENT_PATH
    target = path + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target, pinned


class WsClient:
    """A thin trio driver around a wsproto client connection (the raw layer below ClientConnection)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.send_lock = trio.StrictFIFOLock()
        self.parts: list[Any] = []
        self.size = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.pending: list[Any] = []
        self.auto_pong = True  # answer WebSocket pings (tests turn it off to play a dead client)

    async def send_bytes(self, data: bytes) -> None:
        async with self.send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionClosed(self.close_code or 1006, self.close_reason or "connection lost") from exc

    async def send_message(self, data: bytes | str) -> None:
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason)
        if self.ws.state is not ConnectionState.OPEN:
            # the node's close frame was read along with its last message but not handed out yet (goaway + 1001)
            raise ConnectionClosed(1006, "the node is closing the connection")
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        await self.send_bytes(self.ws.send(event))

    async def upgrade(self, host: str, target: str, subprotocols: list[str]) -> None:
        await self.send_bytes(self.ws.send(Request(host=host, target=target, subprotocols=subprotocols)))
        status, body = 0, b""
        while True:
            events = await self._events(upgrading=True)
            for i, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    self.pending = events[i + 1 :]  # frames that came in the same read as the 101
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise HandshakeError(f"node refused the connection: HTTP {status}")
                elif isinstance(event, RejectData):
                    body += event.data[:200]
                    if event.body_finished:
                        text = body.decode(errors="replace").strip()
                        raise HandshakeError(f"node refused the connection: HTTP {status} {text}".rstrip())

    async def _events(self, *, upgrading: bool = False) -> list[Any]:
        try:
            data = bytes(await self.stream.receive_some(65536))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data and upgrading:
            raise HandshakeError("connection closed before the WebSocket upgrade completed")
        if not data and self.close_code is None:
            self.close_code, self.close_reason = 1006, "connection lost"
        try:
            self.ws.receive_data(data or None)
            return list(self.ws.events())
        except WsRemoteProtocolError as exc:
            raise HandshakeError(f"not a WebSocket server: {exc}") from exc

    async def receive_message(self) -> bytes | str:
        """The next whole message; answers pings; raises ConnectionClosed."""
        while True:
            if self.close_code is not None:
                raise ConnectionClosed(self.close_code, self.close_reason)
            events, self.pending = self.pending or await self._events(), []
            for i, event in enumerate(events):
                got = await self._on_event(event)
                if got is not None:
                    self.pending = events[i + 1 :]
                    return got

    async def _on_event(self, event: Any) -> bytes | str | None:
        if isinstance(event, Message):
            self.size += len(event.data)
            if self.size > Limits.CLIENT_FRAME_MAX:
                raise ConnectionClosed(1009, "node sent a frame over the limit")
            self.parts.append(event.data)
            if not event.message_finished:
                return None
            joined: Any = ("" if isinstance(event, TextMessage) else b"").join(self.parts)
            self.parts, self.size = [], 0
            return joined if isinstance(joined, str) else bytes(joined)
        if isinstance(event, Ping) and self.auto_pong:
            await self.send_bytes(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.close_code, self.close_reason = event.code, event.reason or ""
            if self.ws.state.name == "REMOTE_CLOSING":
                await self.send_bytes(self.ws.send(event.response()))
        return None

    async def aclose(self, code: int = 1000) -> None:
        with trio.move_on_after(CLOSE_WAIT_S):
            try:
                if self.close_code is None and self.ws.state.name == "OPEN":
                    await self.send_bytes(self.ws.send(CloseConnection(code=code)))
                    while self.close_code is None:
                        await self.receive_message()
            except (ClientError, trio.BusyResourceError):
                pass
        await trio.aclose_forcefully(self.stream)


class ClientConnection:
    """An authenticated connection to a node. Create it with `connect_client`."""

    def __init__(self, ws: WsClient, identity: Identity, node_id: bytes, handshake_ms: float, json: bool) -> None:
        self._ws = ws
        self.identity = identity
        self.node_id = node_id
        self.handshake_ms = handshake_ms
        self.json = json
        self._next_ref = 1
        self._send, self._recv = trio.open_memory_channel[ClientMessage](RECEIVE_QUEUE_MAX)
        self._pong: trio.Event | None = None
        self._answer: tuple[trio.Event, list[ClientMessage]] | None = None  # push_register/unregister waiting
        self._ice: tuple[trio.Event, list[IceServers | Error]] | None = None
        self._card: tuple[trio.Event, list[CardReply | Error]] | None = None

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def send_envelope(self, kind: Kind | str, to: bytes, call: bytes, body: bytes) -> int:
        """Send one envelope; returns its `ref` (the receipts for it carry the same ref)."""
        ref = self._next_ref
        self._next_ref += 1
        env = Envelope(kind=Kind(kind), to=to, call=call, body=body, ref=ref)
        await self.send(env)
        return ref

    async def send(self, msg: ClientMessage) -> None:
        await self._ws.send_message(encode_client_message(msg, json=self.json))

    async def send_raw(self, data: bytes | str) -> None:
        """Send one frame as is (binary for bytes, text for str): for tests and protocol probes."""
        await self._ws.send_message(data)

    async def send_raw_bytes(self, data: bytes) -> None:
        """Write bytes to the socket below the WebSocket layer (tests of the node's frame limits)."""
        await self._ws.send_bytes(data)

    async def receive(self) -> ClientMessage:
        """The next message from the node; raises ConnectionClosed once the node has closed."""
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(self._ws.close_code or 1006, self._ws.close_reason) from None

    async def ping(self) -> float:
        """Send `{"t":"ping"}` and wait for the pong; returns the round trip in milliseconds."""
        self._pong = event = trio.Event()
        start = trio.current_time()
        await self.send(PingMsg())
        await event.wait()
        if self._ws.close_code is not None and self._pong is event:
            raise ConnectionClosed(self._ws.close_code, self._ws.close_reason)
        return (trio.current_time() - start) * 1000.0

    async def ice_servers(self, timeout_s: float = 5.0) -> IceServers:
        """Ask the node for STUN/TURN servers (`{"t":"ice_servers"}`, docs/client-protocol.md).

        Raises IceServersRefused when the node says rate_limited or does not answer within `timeout_s`.
        """
        event, box = self._ice = trio.Event(), []
        await self.send(IceServersRequest())
        with trio.move_on_after(timeout_s):
            await event.wait()
        self._ice = None
        if self._ws.close_code is not None and not box:
            raise ConnectionClosed(self._ws.close_code, self._ws.close_reason)
        reply = box[0] if box else None
        if isinstance(reply, IceServers):
            return reply
        raise IceServersRefused(f"node refused ice_servers: {reply.code.value if reply else 'no answer'}")

    async def fresh_card(self, timeout_s: float = 5.0) -> str:
        """This node's referral card, signed now (`{"t":"card"}`, docs/client-protocol.md): refresh an expiring
        card of a node you can still reach, to keep or to share. Raises ClientError without an answer."""
        event, box = self._card = trio.Event(), []
        await self.send(CardRequest())
        with trio.move_on_after(timeout_s):
            await event.wait()
        self._card = None
        reply = box[0] if box else None
        if isinstance(reply, CardReply):
            return reply.card
        raise ClientError(f"node did not send its card: {reply.code.value if reply else 'no answer'}")

    async def close(self, code: int = 1000) -> None:
        await self._ws.aclose(code)

    # --- push wake-up (docs/client-protocol.md, "Push wake-up") ---------------------------------------------

    async def push_register(self, endpoint: str, p256dh: bytes, auth: bytes, *, timeout_s: float = 10.0) -> bytes:
        """Register a Web Push subscription; returns the node's VAPID public key (the applicationServerKey).

        Raises ClientError when the node answers with an error (bad subscription, no push, table full)."""
        answer = await self._ask(PushRegister(endpoint=endpoint, p256dh=p256dh, auth=auth), timeout_s)
        if not (isinstance(answer, Ok) and answer.of == "push_register" and answer.vapid):
            raise ClientError(f"push_register refused: {answer}")
        return answer.vapid

    async def push_unregister(self, *, timeout_s: float = 10.0) -> None:
        answer = await self._ask(PushUnregister(), timeout_s)
        if not (isinstance(answer, Ok) and answer.of == "push_unregister"):
            raise ClientError(f"push_unregister refused: {answer}")

    async def _ask(self, msg: ClientMessage, timeout_s: float) -> ClientMessage:
        """Send `msg` and wait for the node's `ok` or (ref-less) `error` answer; one question at a time."""
        if self._answer is not None:
            raise ClientError("another push request is waiting for its answer")
        event, box = self._answer = (trio.Event(), [])
        try:
            await self.send(msg)
            with trio.fail_after(timeout_s):
                await event.wait()
        finally:
            self._answer = None
        if not box:
            raise ConnectionClosed(self._ws.close_code or 1006, self._ws.close_reason)
        return box[0]

    async def _reader(self) -> None:
        async with self._send:
            try:
                while True:
                    data = await self._ws.receive_message()
                    try:
                        msg = decode_client_frame(data, from_node=True)
                    except RemoteProtocolError:
                        continue  # a newer node's message we do not know: skip it
                    answer = self._answer
                    if answer is not None and (isinstance(msg, Ok) or (isinstance(msg, Error) and msg.ref is None)):
                        answer[1].append(msg)
                        answer[0].set()
                        continue
                    if isinstance(msg, Pong) and self._pong is not None:
                        self._pong.set()
                        self._pong = None
                        continue
                    if self._card is not None and (
                        isinstance(msg, CardReply) or (isinstance(msg, Error) and msg.ref is None)
                    ):
                        self._card[1].append(msg)
                        self._card[0].set()
                        self._card = None
                        continue
                    if self._ice is not None and (
                        isinstance(msg, IceServers) or (isinstance(msg, Error) and msg.ref is None)
                    ):
                        self._ice[1].append(msg)
                        self._ice[0].set()
                        self._ice = None
                        continue
                    await self._send.send(msg)
            except ClientError:
                pass
            finally:
                if self._pong is not None:
                    self._pong.set()
                if self._answer is not None:
                    self._answer[0].set()
                if self._ice is not None:
                    self._ice[0].set()
                if self._card is not None:
                    self._card[0].set()


async def _open(
    url: str,
    identity: Identity,
    expected_node_id: bytes | None,
    json: bool,
    ssl_context: ssl.SSLContext | None,
    local_address: str | None = None,
) -> ClientConnection:
    _, _, _, _, pinned = parse_client_url(url)
    start = trio.current_time()
    subprotocols = [JSON_SUBPROTOCOL] if json else []
    ws = await open_websocket(url, subprotocols=subprotocols, ssl_context=ssl_context, local_address=local_address)
    try:
        node_id = await _authenticate(ws, identity, expected_node_id or pinned, json)
    except BaseException:
        await trio.aclose_forcefully(ws.stream)
        raise
    return ClientConnection(ws, identity, node_id, (trio.current_time() - start) * 1000.0, json)


async def open_websocket(
    url: str,
    *,
    subprotocols: list[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    local_address: str | None = None,
) -> WsClient:
    """TCP (and TLS for wss://) plus the WebSocket upgrade, no homing handshake. Raises HandshakeError.

    `local_address`: the address to connect from, on a host with several (the node's per-address limits see it)."""
    scheme, host, port, target, _ = parse_client_url(url)
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port, local_address=local_address)
    except OSError as exc:
        raise HandshakeError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    try:
        if scheme == "wss":
            tls = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=host)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as exc:
                raise HandshakeError(f"TLS handshake with {host}:{port} failed: {exc}") from exc
            stream = tls
        ws = WsClient(stream)
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        await ws.upgrade(host_header, target, subprotocols or [])
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return ws


async def _next(ws: WsClient) -> ClientMessage:
    try:
        return decode_client_frame(await ws.receive_message(), from_node=True)
    except ConnectionClosed as exc:
        raise HandshakeError(f"node closed the connection during the handshake ({exc.code} {exc.reason})") from exc
    except RemoteProtocolError as exc:
        raise HandshakeError(f"node sent a bad handshake message: {exc}") from exc


async def _authenticate(ws: WsClient, identity: Identity, expected: bytes | None, json: bool) -> bytes:
    challenge = await _next(ws)
    if not isinstance(challenge, Challenge):
        raise HandshakeError(f"expected a challenge from the node, got {type(challenge).__name__}")
    if expected is not None and challenge.node != expected:
        raise NodeIdMismatch(f"node claims id {id_text(challenge.node)}, expected {id_text(expected)}")
    if challenge_too_far_ahead(challenge.nonce, time.time()):  # our hello would be a claim usable in the future
        raise HandshakeError("node's challenge is dated ahead of our clock: not signing it (is our clock right?)")
    nonce = os.urandom(NONCE_BYTES)
    sig = identity.sign(client_auth_message(challenge.node, challenge.nonce))
    await ws.send_message(encode_client_message(Hello(id=identity.id, nonce=nonce, sig=sig), json=json))
    welcome = await _next(ws)
    if isinstance(welcome, Error):
        raise HandshakeError(f"node refused our hello: {welcome.code.value}")
    if not isinstance(welcome, Welcome) or welcome.id != identity.id:
        raise HandshakeError("expected a welcome for our id from the node")
    if not verify_signature(challenge.node, node_auth_message(identity.id, nonce), welcome.sig):
        raise NodeIdMismatch(f"node could not prove id {id_text(challenge.node)}: welcome signature does not verify")
    return challenge.node


@asynccontextmanager
async def connect_client(
    url: str,
    identity: Identity,
    *,
    expected_node_id: bytes | None = None,
    timeout_s: float = 10,
    json: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    local_address: str | None = None,
) -> AsyncIterator[ClientConnection]:
    """Connect, run the mutual handshake, and yield the connection; closes it (1000) on exit. `local_address` as
    for `open_websocket`."""
    with trio.move_on_after(timeout_s) as cs:
        conn = await _open(url, identity, expected_node_id, json, ssl_context, local_address)
    if cs.cancelled_caught:
        raise HandshakeError(f"no handshake with {url} within {timeout_s} s")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn._reader)
            try:
                yield conn
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await conn.close()


async def handshake_only(
    url: str,
    identity: Identity,
    expected_node_id: bytes | None,
    timeout_s: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[bytes, float]:
    """Connect, prove ids both ways, close. Returns (node id, connect+handshake time in ms).

    Raises NodeIdMismatch when the node cannot prove `expected_node_id`, HandshakeError for anything else.
    """
    with trio.move_on_after(timeout_s) as cs:
        conn = await _open(url, identity, expected_node_id, False, ssl_context)
    if cs.cancelled_caught:
        raise HandshakeError(f"no handshake with {url} within {timeout_s} s")
    await conn.close()
    return conn.node_id, conn.handshake_ms
