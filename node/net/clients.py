"""The client WebSocket server at `/v1/client` (docs/client-protocol.md): handshake, sessions, receipts, limits.

Rules:
- The server does not route. It authenticates, validates and rate-limits, then reports to a `RelaySink`;
  the relay answers through `ClientSession.send`, which never blocks.
- Every connection is bounded: handshake time, frame size, token buckets, a send queue in messages and
  bytes, idle time. A connection that misbehaves is refused frame by frame and, if it keeps at it, closed
  (4429, 1009, 1008); no input from one client can end another client's connection or the server.

Theory of operation. The WebSocket layer is wsproto (sans-IO) driven by two trio tasks per connection:
the reader owns the socket's receive side and the wsproto state machine, and runs the protocol state
machine `AWAIT_HELLO -> OPEN -> CLOSING`; the writer drains the session's send queue, joining everything
queued into one `send_all`. Under load one `receive_some` carries many frames and one `send_all` many
replies, which is where the throughput comes from (docs/performance.md, "Client WebSocket layer").
A server-side close queues a close frame, sets a deadline on the connection's cancel scope, and keeps
reading (discarding) until the client's close frame or EOF, so the client sees the close code.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    AcceptConnection,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from node.net.session import CLOSE_TIMEOUT_S, ClientSession
from node.net.sockio import Flusher
from node.protocol.identity import Identity, short_id
from node.protocol.refusals import Refusal
from node.protocol.settings import ClientsSection
from node.protocol.wire.client import (
    Challenge,
    CloseCode,
    Envelope,
    Error,
    ErrorCode,
    GoAway,
    IceServers,
    PushRegister,
    PushUnregister,
)

__all__ = ["ClientMetrics", "ClientServer", "ClientSession", "IceServersPort", "RelaySink", "serve_clients"]

log = logging.getLogger("homing.clients")

CLIENT_PATH = "/v1/client"
JSON_SUBPROTOCOL = "homing.v1.json"
HTTP_REQUEST_MAX = 8 * 1024  # the upgrade request; more is refused with 431 by the close path
SHUTDOWN_TIMEOUT_S = 3.0  # goaway: how long shutdown() waits for connections to end
REFUSING_MAX = 256  # connections over the limit that still get a polite HTTP 429/503 (each for <= 2 s)


class RelaySink(Protocol):
    """What the server reports to (the relay core's driver). All three are called from trio, never block."""

    def client_online(self, session: ClientSession) -> None: ...
    def client_offline(self, session: ClientSession) -> None: ...
    def client_envelope(self, session: ClientSession, env: Envelope) -> None: ...


class IceServersPort(Protocol):
    """Answers `{"t":"ice_servers"}` (node/app/turn.py): the list for this client, or None when rate limited."""

    def ice_servers(self, conn_id: int, client_id: bytes) -> IceServers | None: ...


class ClientMetrics(Protocol):
    """Optional metrics hooks (node/app/ops.py adapts them to Prometheus)."""

    def clients_connected(self, count: int) -> None: ...
    def client_refused(self, reason: Refusal) -> None: ...


class ClientServer:
    """Accepts client connections, runs their sessions, and shuts them down with `goaway`.

    `await server.serve(host, port, task_status=...)` reports the bound port; `await server.shutdown(referrals)`
    stops accepting, sends `{"t":"goaway","nodes":referrals}` then closes every client with 1001, and makes
    `serve` return.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        config: ClientsSection,
        relay: RelaySink,
        metrics: ClientMetrics | None = None,
        ssl_context: ssl.SSLContext | None = None,
        flusher: Flusher | None = None,
        ice: IceServersPort | None = None,
    ) -> None:
        self.identity = identity
        self.ice = ice  # None: `ice_servers` gets an empty list
        self.config = config
        self.relay = relay
        self.metrics = metrics
        self.ssl_context = ssl_context
        # the node shares one flusher between clients and peer links; a standalone server runs its own
        self.flusher = flusher if flusher is not None else Flusher()
        self._own_flusher = flusher is None
        self.port = 0
        self.sessions: dict[int, ClientSession] = {}
        self._per_ip: dict[str, int] = {}
        self._next_conn_id = 1
        self._accepting = True
        self._accept_scope = trio.CancelScope()
        self._conns: trio.Nursery | None = None
        self._connections = 0  # TCP connections in any phase (upgrade, handshake, open)
        self._done = trio.Event()
        self._idle = trio.Event()  # set when the last session ends (shutdown waits on it)
        self._online = 0

    # --- hooks used by sessions --------------------------------------------------------------------------

    def refused(self, reason: Refusal) -> None:
        if self.metrics is not None:
            self.metrics.client_refused(reason)

    def relay_call(self, fn: Callable[..., None], *args: Any) -> None:
        """Call into the relay; a bug there is logged, never allowed to end this connection's tasks."""
        try:
            fn(*args)
        except Exception:
            log.exception("event=relay_error fn=%s", getattr(fn, "__name__", "?"))

    def push_request(self, session: ClientSession, msg: PushRegister | PushUnregister) -> None:
        """push_register / push_unregister (docs/client-protocol.md, "Push wake-up"): for a relay that has push."""
        handler = getattr(self.relay, "client_push", None)
        if handler is None:
            session.send(Error(code=ErrorCode.UNKNOWN_TYPE))
            return
        self.relay_call(handler, session, msg)

    def session_online(self, session: ClientSession) -> None:
        self._online += 1
        log.debug(
            "event=client_online conn=%d id=%s ip=%s", session.conn_id, short_id(session.client_id), session.remote_ip
        )
        self.relay_call(self.relay.client_online, session)
        if self.metrics is not None:
            self.metrics.clients_connected(self._online)

    # --- serving -----------------------------------------------------------------------------------------

    async def serve(self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners: list[Any] = list(await trio.open_tcp_listeners(port, host=host or None, backlog=4096))
        self.port = listeners[0].socket.getsockname()[1]
        if self.ssl_context is not None:
            listeners = [trio.SSLListener(li, self.ssl_context, https_compatible=True) for li in listeners]
        log.info("event=clients_listening host=%s port=%d tls=%s", host, self.port, self.ssl_context is not None)
        async with trio.open_nursery() as conns:
            self._conns = conns
            if self._own_flusher:
                await conns.start(self.flusher.run)
            with self._accept_scope:
                async with trio.open_nursery() as accepts:
                    for li in listeners:
                        accepts.start_soon(self._accept_loop, li, conns)
                    task_status.started(self.port)
            for li in listeners:
                await trio.aclose_forcefully(li)
            await self._done.wait()
            conns.cancel_scope.cancel()

    async def _accept_loop(self, listener: trio.abc.Listener[Any], conns: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of fds or memory: keep serving the clients we have
                log.warning("event=clients_accept_error error=%s", exc)
                await trio.sleep(0.1)
                continue
            conns.start_soon(self._handle, stream)

    async def shutdown(self, referrals: list[str]) -> None:
        """Stop accepting, send `goaway` with `referrals` to every client, close them with 1001."""
        self._accepting = False
        self._accept_scope.cancel()
        goaway = GoAway(nodes=tuple(referrals))
        for session in list(self.sessions.values()):
            if session.client_id:
                session.send(goaway)
            session.close(CloseCode.GOING_AWAY, "node shutting down")
        with trio.move_on_after(SHUTDOWN_TIMEOUT_S):
            while self.sessions:
                self._idle = trio.Event()
                await self._idle.wait()
        self._done.set()

    def _admit(self, ip: str) -> tuple[int, str] | None:
        cfg = self.config
        if not self._accepting or self._connections > cfg.connections_max:
            return 503, "node is full, try another node"
        if self._per_ip.get(ip, 0) > cfg.connections_per_ip_max:
            return 429, "too many connections from your address"
        return None

    async def _handle(self, stream: trio.abc.Stream) -> None:
        ip = _remote_ip(stream)
        deadline = trio.current_time() + self.config.handshake_timeout_s
        self._connections += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        try:
            refusal = self._admit(ip)
            if refusal is not None and self._connections > self.config.connections_max + REFUSING_MAX:
                return  # under a flood even a polite refusal costs too much
            with trio.move_on_at(deadline if refusal is None else trio.current_time() + CLOSE_TIMEOUT_S):
                request, hs = await _read_upgrade(stream)
            if request is None:
                return
            if refusal is None and request.target.partition("?")[0] != CLIENT_PATH:
                refusal = 404, f"the client endpoint is {CLIENT_PATH}"
            if refusal is not None:
                self.refused(Refusal.RATE_LIMITED if refusal[0] in (429, 503) else Refusal.MALFORMED)
                await _send_quietly(stream, _reject(hs, *refusal))
                return
            ws, accept, use_json = _accept(hs, request)
            del hs, request  # the HTTP machinery is not needed any more: keep idle connections small
            # the session runs in this task's frame (no helper coroutine: an idle client's memory is mostly
            # the frames of its parked reader)
            conn_id = self._next_conn_id
            self._next_conn_id += 1
            session = ClientSession(self, stream, conn_id, ip, deadline)
            session._ws = ws
            session.json = use_json
            self.sessions[conn_id] = session
            session.queue(accept)
            del accept  # the 101 is queued: keep idle connections small
            session.send(Challenge(node=self.identity.id, nonce=session.nonce))
            try:
                await session._run(ws)
            finally:
                session.discard()
                del self.sessions[conn_id]
                if not self.sessions:
                    self._idle.set()
                if session.client_id:
                    self._online -= 1
                    self.relay_call(self.relay.client_offline, session)
                    if self.metrics is not None:
                        self.metrics.clients_connected(self._online)
        finally:
            self._connections -= 1
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]
            await trio.aclose_forcefully(stream)


async def serve_clients(
    *,
    identity: Identity,
    host: str,
    port: int,
    config: ClientsSection,
    relay: RelaySink,
    metrics: ClientMetrics | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a ClientServer until cancelled; reports the bound port. Use ClientServer directly for goaway."""
    server = ClientServer(identity=identity, config=config, relay=relay, metrics=metrics, ssl_context=ssl_context)
    await server.serve(host, port, task_status=task_status)


# --- HTTP upgrade helpers ----------------------------------------------------------------------------------


async def _read_upgrade(stream: trio.abc.Stream) -> tuple[Request | None, H11Handshake]:
    hs = H11Handshake(ConnectionType.SERVER)
    seen = 0
    while True:
        try:
            data = bytes(await stream.receive_some(HTTP_REQUEST_MAX))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None, hs
        if not data:
            return None, hs
        seen += len(data)
        try:
            hs.receive_data(data)
            for event in hs.events():
                if isinstance(event, Request):
                    return event, hs
        except WsRemoteProtocolError as exc:
            hint = exc.event_hint
            if isinstance(hint, RejectConnection):
                await _send_quietly(stream, hs.send(hint))
            return None, hs
        if seen > HTTP_REQUEST_MAX:
            return None, hs


def _accept(hs: H11Handshake, request: Request) -> tuple[Connection, bytes, bool]:
    """Accept the upgrade: (the WebSocket connection, the 101 response, whether the client asked for JSON)."""
    sub = JSON_SUBPROTOCOL if JSON_SUBPROTOCOL in request.subprotocols else None
    accept = bytes(hs.send(AcceptConnection(subprotocol=sub)))
    ws = hs.connection
    assert ws is not None
    return ws, accept, sub is not None or "format=json" in request.target.partition("?")[2]


def _reject(hs: H11Handshake, status: int, text: str) -> bytes:
    body = text.encode() + b"\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if status in (429, 503):
        headers.append((b"retry-after", b"30"))
    return bytes(hs.send(RejectConnection(status_code=status, headers=headers, has_body=True))) + bytes(
        hs.send(RejectData(data=body))
    )


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


def _remote_ip(stream: trio.abc.Stream) -> str:
    inner: Any = stream
    while not hasattr(inner, "socket") and hasattr(inner, "transport_stream"):
        inner = inner.transport_stream
    try:
        return str(inner.socket.getpeername()[0])
    except (OSError, AttributeError):
        return "?"
