"""The client WebSocket server at `[clients] path` (docs/client-protocol.md): handshake, sessions, limits.

Rules:
- The server does not route. It authenticates, validates and rate-limits, then reports to a `RelaySink`;
  the relay answers through `ClientSession.send`, which never blocks.
- Every connection is bounded: handshake time, frame size, token buckets, a send queue in messages and
  bytes, idle time. A connection that misbehaves is refused frame by frame and, if it keeps at it, closed
  (4429, 1009, 1008); no input from one client can end another client's connection or the server.

- Per-address limits (connections, new handshakes per second) are keyed by `address_key` (/32 IPv4, /64 IPv6)
  of the client's address; behind a proxy listed in `trusted_proxies` that address comes from the proxy's
  PROXY v2 header or X-Forwarded-For (node/protocol/proxy.py), from anyone else never.

- Probe resistance: a request that is not a WebSocket upgrade at `[clients] path` is answered by the decoy site
  (node/net/decoy.py), byte for byte as nginx would; nothing homing-specific (no refusal text, no 429) is said
  before a client opens the right path (docs/security.md, "Censorship").

Theory of operation. The upgrade is checked and answered from the node's own parse of the request head
(node/protocol/wire/upgrade.py), the frames are read by its own sans-IO reader (node/protocol/wire/wsframe.py).
Each connection's task reads the upgrade, then runs its `ClientSession` (node/net/session.py): a byte pump around
the pure `SessionCore` (node/protocol/session.py, `HANDSHAKE -> OPEN -> CLOSING -> CLOSED`). Under load one read
carries many frames and one write many replies, which is where the throughput comes from (docs/performance.md,
"Client WebSocket layer"). A server-side close queues a close frame and keeps reading (discarding) until the
client's close frame or EOF, so the client sees the close code. The server is the sessions' `SessionPort`.

Keepalive: one task per server (`_keepalive`) holds every online session in a `DeadlineHeap` of its core's ping/idle
deadline and, when entries fall due (in rounds at most `keepalive_batch_s` apart), calls `session.keepalive(now)`:
the ping is queued for the shared flusher, no session's reader wakes, and a session that heard from its client since
is just filed again at its new deadline (a frame does not touch the heap). 19,000 idle phones cost ~630 pings/s,
docs/performance.md.

Handshakes in progress (upgrade accepted, not yet welcomed) are capped (node/protocol/handshakes.py: what the node
finishes in half the handshake limit at its measured rate, at least `handshakes_in_progress_min`): beyond it an
upgrade is answered 503 with Retry-After before any crypto, so under a reconnect storm the node finishes the
handshakes it started instead of starting more than it can finish within `handshake_timeout_s`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import trio

from node.net.decoy import DecoySite, read_head, serve_decoy, site_root
from node.net.listen import open_listeners
from node.net.session import ClientSession
from node.net.sockio import Flusher, accept_streams, close_stream
from node.protocol.deadlines import DeadlineHeap
from node.protocol.decoy import Head, parse_head
from node.protocol.handshakes import FinishRate, handshake_cap
from node.protocol.identity import Identity, short_id
from node.protocol.proxy import PROXY_V2_BYTES_MAX, ProxyHeaderError, TrustedProxies, parse_proxy_v2
from node.protocol.ratelimit import HeldBuckets, KeyedBuckets, address_key
from node.protocol.refusals import Refusal
from node.protocol.relay.claims import NONCE_TIME_BYTES, challenge_nonce
from node.protocol.session import SessionCore
from node.protocol.settings import ClientsSection
from node.protocol.wire import upgrade
from node.protocol.wire.client import (
    NONCE_BYTES,
    CardReply,
    CardRequest,
    ClientMessage,
    CloseCode,
    Envelope,
    Error,
    ErrorCode,
    GoAway,
    IceServers,
    IceServersRequest,
    PushRegister,
    PushUnregister,
)

__all__ = [
    "ClientMetrics",
    "ClientServer",
    "ClientSession",
    "ControlHandler",
    "IceServersPort",
    "RelaySink",
    "serve_clients",
]

log = logging.getLogger("homing.clients")

CLIENT_PATH = "/v1/client"
BUSY_TEXT = "too many handshakes in progress, retry soon"
BUSY_RETRY_AFTER_S = 1  # the cap frees up within a handshake or two; the client's own backoff adds jitter
JSON_SUBPROTOCOL = "homing.v1.json"
# A graceful stop tells this many sessions per scheduler batch, then yields. Told all at once, 10,000 sessions held
# the event loop for 0.6 s, and their reader tasks then woke together in batches of 1.6-1.7 s: the node's peer links
# went unread for 2.3 s, and forwards sent to it timed out (`[relay] peer_timeout_s`, 2 s), so clients already
# re-homed elsewhere were callable 2-3 s late (docs/performance.md, "Sixth pass"). With 1,024 a scheduler batch took
# at most 0.45 s on that machine (4,096: 1.3 s, and forwards timed out), and each batch's goaways are written before
# the next is told.
GOAWAY_BATCH = 1024


class RelaySink(Protocol):
    """What the server reports to (the relay core's driver). All three are called from trio, never block.

    `client_online` gets the connection's `address_key` (the /32 or /64 of the client's address, after a
    trusted proxy's header) so the relay can key per-address budgets by it; it is also `session.address_key`.
    """

    def client_online(self, session: ClientSession, address_key: str) -> None: ...
    def client_offline(self, session: ClientSession) -> None: ...
    def client_envelope(self, session: ClientSession, env: Envelope) -> None: ...


class IceServersPort(Protocol):
    """Answers `{"t":"ice_servers"}` (node/app/turn.py): the list for this client, or None when rate limited.
    `address_key` is the connection's /32 or /64 (after a trusted proxy's header): credentials are bounded per it."""

    def ice_servers(self, conn_id: int, client_id: bytes, address_key: str) -> IceServers | None: ...


ControlHandler = Callable[[ClientSession, ClientMessage], None]
"""Answers one authenticated control request (e.g. `ice_servers`) with `session.send(...)`; never blocks."""


class ClientMetrics(Protocol):
    """Optional metrics hooks (node/app/ops.py adapts them to Prometheus)."""

    def clients_connected(self, count: int) -> None: ...
    def client_refused(self, reason: Refusal) -> None: ...


class ClientServer:
    """Accepts client connections, runs their sessions, and shuts them down with `goaway`.

    `await server.serve(host, port, task_status=...)` reports the bound port; `await server.shutdown(referrals)`
    stops accepting, sends `{"t":"goaway","nodes":referrals}` then closes every client with 1001, and makes
    `serve` return. `control_handlers[MessageClass]` answers authenticated control requests (SessionPort).
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
        card: Callable[[], str] | None = None,
    ) -> None:
        if ssl_context is not None and config.proxy_protocol != "off":
            raise ValueError("a PROXY header comes before TLS: terminate TLS in the proxy, or use X-Forwarded-For")
        self.identity = identity
        self.config = config
        self.relay = relay
        self.metrics = metrics
        self.ssl_context = ssl_context
        self.control_handlers: dict[type[Any], ControlHandler] = {
            IceServersRequest: self._on_ice_servers,
            CardRequest: self._on_card,
            PushRegister: self._on_push,
            PushUnregister: self._on_push,
        }
        self.ice = ice  # None: `ice_servers` gets an empty list
        self.card = card  # the node's own referral card, signed when asked; None: `card` gets unknown_type
        # the node shares one flusher between clients and peer links; a standalone server runs its own
        self.flusher = flusher if flusher is not None else Flusher()
        self._own_flusher = flusher is None
        self.port = 0
        self.sessions: dict[int, ClientSession] = {}
        self._per_address: dict[str, int] = {}  # open connections per address_key
        self._handshakes: KeyedBuckets[str] = KeyedBuckets(
            config.handshakes_per_address_per_s, config.handshakes_per_address_burst, config.handshake_addresses_max
        )
        # each client id's message and call_ice buckets, shared by its connections and kept after the last one
        # ends (node/protocol/ratelimit.py, `HeldBuckets`): reconnecting does not restore the burst
        self.rate_ids: HeldBuckets[bytes] = HeldBuckets(
            ((config.rate_per_s, config.burst), (config.ice_rate_per_s, config.ice_burst)), config.rate_ids_max
        )
        self._proxies = TrustedProxies(config.trusted_proxies)
        self._next_conn_id = 1
        self._accepting = True
        self._accept_scope = trio.CancelScope()
        self._connections = 0  # TCP connections in any phase (upgrade, handshake, open)
        self._done = trio.Event()
        self._idle = trio.Event()  # set when the last session ends (shutdown waits on it)
        self._online = 0
        self._handshaking = 0  # upgrades accepted (101 sent) and not yet welcomed (or ended)
        self._welcomed = FinishRate()  # handshakes finished per second: the cap on those in progress
        self._keepalive_due: DeadlineHeap[ClientSession] = DeadlineHeap()
        self._keepalive_scope = trio.CancelScope()  # the keepalive task's sleep until the heap's next deadline

    def connections_per_address(self) -> dict[str, int]:
        """Open client connections per `address_key` (/32 IPv4, /64 IPv6), a copy: for operators' range counts."""
        return dict(self._per_address)

    # --- SessionPort: what sessions report ------------------------------------------------------------------

    def refused(self, reason: Refusal) -> None:
        if self.metrics is not None:
            self.metrics.client_refused(reason)

    def relay_call(self, fn: Callable[..., None], *args: Any) -> None:
        """Call into the relay; a bug there is logged, never allowed to end this connection's tasks."""
        try:
            fn(*args)
        except Exception:
            log.exception("event=relay_error fn=%s", getattr(fn, "__name__", "?"))

    def session_online(self, session: ClientSession) -> None:
        self._online += 1
        self._handshaking -= 1
        self._welcomed.add(trio.current_time())
        self._file_keepalive(session, session.keepalive(trio.current_time()))
        log.debug(
            "event=client_online conn=%d id=%s ip=%s", session.conn_id, short_id(session.client_id), session.remote_ip
        )
        self.relay_call(self.relay.client_online, session, session.address_key)
        if self.metrics is not None:
            self.metrics.clients_connected(self._online)

    def session_offline(self, session: ClientSession) -> None:
        self._online -= 1
        self._keepalive_due.discard(session)
        self.relay_call(self.relay.client_offline, session)
        if self.metrics is not None:
            self.metrics.clients_connected(self._online)

    def session_abused(self, session: ClientSession) -> None:
        """A connection closed for abuse (4429) or an oversized frame (1009) costs its address new handshakes
        (`[clients] handshakes_abuse_cost`): reconnecting with a fresh key must not buy a fresh burst at once."""
        if self.config.handshakes_abuse_cost > 0:
            self._handshakes.charge(session.address_key, trio.current_time(), self.config.handshakes_abuse_cost)

    def session_envelope(self, session: ClientSession, env: Envelope) -> None:
        self.relay_call(self.relay.client_envelope, session, env)

    def session_control(self, session: ClientSession, msg: ClientMessage) -> None:
        handler = self.control_handlers.get(type(msg))
        if handler is None:
            session.send(Error(code=ErrorCode.UNKNOWN_TYPE))
            return
        self.relay_call(handler, session, msg)

    # --- keepalive (one task for every session) ---------------------------------------------------------------

    def _file_keepalive(self, session: ClientSession, deadline: float) -> None:
        if deadline == math.inf:
            self._keepalive_due.discard(session)
            return
        self._keepalive_due.push(session, deadline)
        if deadline < self._keepalive_scope.deadline:
            self._keepalive_scope.deadline = deadline

    async def _keepalive(self) -> None:
        """Ping the sessions due and close those idle too long (their cores decide), all from this one task."""
        due, batch_s = self._keepalive_due, self.config.keepalive_batch_s
        now = -math.inf
        while True:
            self._keepalive_scope = trio.CancelScope(deadline=due.next_deadline())
            with self._keepalive_scope:
                await trio.sleep_forever()
            await trio.sleep_until(now + batch_s)  # one round per batch_s at most: due together, pinged together
            now = trio.current_time()
            for session in due.pop_due(now):
                try:
                    self._file_keepalive(session, session.keepalive(now))
                except Exception:  # a bug in one session never ends keepalive for the others
                    log.exception("event=keepalive_error conn=%d", session.conn_id)

    # --- control requests (docs/client-protocol.md) ----------------------------------------------------------

    def _on_ice_servers(self, session: ClientSession, msg: ClientMessage) -> None:
        """`{"t":"ice_servers"}`: the ICE port's list, or `rate_limited` (counted as a refusal)."""
        port = self.ice
        reply = (
            IceServers(ttl=0, servers=())
            if port is None
            else port.ice_servers(session.conn_id, session.client_id, session.address_key)
        )
        if reply is None:
            self.refused(Refusal.RATE_LIMITED)
            session.send(Error(code=ErrorCode.RATE_LIMITED))
        else:
            session.send(reply)

    def _on_card(self, session: ClientSession, msg: ClientMessage) -> None:
        """`{"t":"card"}`: this node's referral card, signed now, so a client can refresh an expiring one."""
        session.send(Error(code=ErrorCode.UNKNOWN_TYPE) if self.card is None else CardReply(card=self.card()))

    def _on_push(self, session: ClientSession, msg: ClientMessage) -> None:
        """push_register / push_unregister ("Push wake-up"): answered by a relay that has push, else unknown_type."""
        handler = getattr(self.relay, "client_push", None)
        if handler is None:
            session.send(Error(code=ErrorCode.UNKNOWN_TYPE))
            return
        handler(session, msg)

    # --- serving -----------------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "",
        port: int = 0,
        *,
        listeners: list[trio.SocketListener] | None = None,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on `listeners` when given (bound by the caller), else bind `host:port`; reports the bound port."""
        if listeners is None:
            listeners = await open_listeners(host, port, key="node.ws", backlog=4096)
        self.port = listeners[0].socket.getsockname()[1]
        host = str(listeners[0].socket.getsockname()[0])
        log.info("event=clients_listening host=%s port=%d tls=%s", host, self.port, self.ssl_context is not None)
        async with trio.open_nursery() as conns:
            if self._own_flusher:
                await conns.start(self.flusher.run)
            conns.start_soon(self._keepalive)
            with self._accept_scope:
                async with trio.open_nursery() as accepts:
                    for li in listeners:
                        accepts.start_soon(accept_streams, li, partial(self._accepted, conns))
                    task_status.started(self.port)
            for li in listeners:
                await trio.aclose_forcefully(li)
            await self._done.wait()
            conns.cancel_scope.cancel()

    def _accepted(self, conns: trio.Nursery, stream: trio.SocketStream) -> None:
        if self.ssl_context is None:
            conns.start_soon(self._handle, stream)
        else:  # what trio.SSLListener would do: the TLS handshake runs in the connection's own task
            conns.start_soon(
                self._handle, trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
            )

    async def shutdown(self, referrals: list[str], *, batch: int = GOAWAY_BATCH) -> None:
        """Stop accepting, send `goaway` with `referrals` to every client, close them with 1001.

        `batch` sessions at a time, yielding to the scheduler between batches (`GOAWAY_BATCH`); a cancel from
        outside does not stop the telling, only the wait for the sessions to end."""
        self._accepting = False
        self._accept_scope.cancel()
        goaway = GoAway(nodes=tuple(referrals))
        frames: dict[bool, bytes] = {}
        sessions = list(self.sessions.values())
        try:
            for start in range(0, len(sessions), batch):
                told = sessions[start : start + batch]
                for session in told:
                    session.send_shared(goaway, frames)  # only online sessions take it
                    session.close(CloseCode.GOING_AWAY, "node shutting down")
                # out of the relay now, not when each reader task gets to it: a closing session drops what it is
                # handed, and the relay would answer `delivered` for it (docs/protocol.md, the failure table)
                for session in told:
                    session.report_offline_now()
                await trio.lowlevel.cancel_shielded_checkpoint()
            with trio.move_on_after(self.config.shutdown_timeout_s):
                while self.sessions:
                    self._idle = trio.Event()
                    await self._idle.wait()
        finally:
            self._done.set()

    def _admit(self, key: str | None) -> tuple[int, str] | None:
        cfg = self.config
        if not self._accepting or self._connections > cfg.connections_max:
            return 503, "node is full, try another node"
        if key is not None and self._per_address.get(key, 0) > cfg.connections_per_ip_max:
            return 429, "too many connections from your address"
        return None

    def _opens_client(self, head: Head) -> bool:
        """Whether a request head is a WebSocket upgrade at `[clients] path` (everything else meets the decoy)."""
        return not head.bad and head.method == "GET" and head.is_upgrade and head.path == self.config.path

    @property
    def _decoy(self) -> DecoySite:
        return DecoySite(
            root=site_root(self.config.decoy_dir), port=self.port, idle_timeout_s=self.config.handshake_timeout_s
        )

    def _check_upgrade(self, request: upgrade.Upgrade, key: str) -> tuple[int, str] | None:
        """The refusal of an upgrade request from the address `key`, if any; spends its handshake budget."""
        refusal = self._admit(key)
        if refusal is None and request.target.partition("?")[0] != self.config.path:
            refusal = 404, "not found"
        if refusal is None and not self._handshakes.take(key, trio.current_time()):
            refusal = 429, "too many new connections from your address, retry later"
        if refusal is None and self._handshaking >= self._handshake_cap():
            refusal = 503, BUSY_TEXT
        return refusal

    def _handshake_cap(self) -> int:
        cfg = self.config
        rate = self._welcomed.per_s(trio.current_time(), busy=self._handshaking > 0)
        busy = self.flusher.load.share(time.monotonic())
        return handshake_cap(
            rate, cfg.handshake_timeout_s, cfg.handshakes_in_progress_min, busy, cfg.handshakes_headroom
        )

    def _count(self, key: str) -> None:
        self._per_address[key] = self._per_address.get(key, 0) + 1

    def _uncount(self, key: str) -> None:
        left = self._per_address[key] - 1
        if left:
            self._per_address[key] = left
        else:
            del self._per_address[key]

    async def _handle(self, stream: trio.abc.Stream) -> None:
        peer = _remote_ip(stream)
        cfg = self.config
        deadline = trio.current_time() + cfg.handshake_timeout_s
        self._connections += 1
        session: ClientSession | None = None
        key: str | None = None  # the address_key this connection is counted under
        try:
            proxied = self._proxies.trusts(peer)
            address, head = peer, b""
            if proxied and cfg.proxy_protocol == "v2":
                named = await self._proxy_header(stream, peer)
                if named is None:
                    return
                address, head = named
                del named
            if not proxied or cfg.proxy_protocol == "v2":
                key = _key_of(address)
                self._count(key)
            refusal = self._admit(key)
            if refusal is not None and self._connections > cfg.connections_max + cfg.refusing_max:
                return  # under a flood even a polite refusal costs too much
            got: tuple[bytes, bytes] | None = None  # stays None when the client says nothing in time
            with trio.move_on_at(deadline if refusal is None else trio.current_time() + cfg.close_timeout_s):
                got = await read_head(stream, head, cfg.upgrade_request_bytes_max)
            if got is None:
                return
            parsed = parse_head(got[0])
            if not self._opens_client(parsed):  # a stranger: the decoy site answers (docs/security.md)
                self.refused(Refusal.MALFORMED)
                await serve_decoy(stream, got[0] + got[1], self._decoy)
                return
            request = upgrade.check(parsed)
            if isinstance(request, upgrade.Rejected):  # an upgrade at our path, but not a valid one
                self.refused(Refusal.MALFORMED)
                await _send_quietly(stream, upgrade.reject(request.status, request.headers), cfg.close_timeout_s)
                return
            if key is None:  # a trusted proxy without PROXY v2: X-Forwarded-For names the client
                address = self._proxies.forwarded_for(request.header_values("x-forwarded-for")) or peer
                key = _key_of(address)
                self._count(key)
            refusal = refusal or self._check_upgrade(request, key)
            if refusal is not None:
                self.refused(Refusal.RATE_LIMITED if refusal[0] in (429, 503) else Refusal.MALFORMED)
                await _send_quietly(stream, _reject(*refusal), cfg.close_timeout_s)
                return
            accept, use_json = _accept(request)
            # the session runs in this task's frame (no helper coroutine: an idle client's memory is mostly the
            # frames of its parked reader); what the upgrade needed is dropped first
            del request, parsed, got, head
            session = self._open_session(stream, accept, use_json, address, key, deadline)
            self._handshaking += 1  # from the accepted upgrade until session_online, or the end of this connection
            del accept
            try:
                await session.run()
            finally:
                session.finish()
                del self.sessions[session.conn_id]
                if not self.sessions:
                    self._idle.set()
        except Exception:  # a bug met by one connection ends that connection, never the server and the others
            log.exception("event=client_connection_error peer=%s", peer)
            self.refused(Refusal.MALFORMED)
        finally:
            self._connections -= 1
            if session is not None and not session.client_id:  # upgraded, never welcomed: still counted
                self._handshaking -= 1
            if key is not None:
                self._uncount(key)
            await close_stream(stream)

    async def _proxy_header(self, stream: trio.abc.Stream, peer: str) -> tuple[str, bytes] | None:
        """From a trusted v2 proxy: (the client's address, the bytes after the header); None when refused."""
        got: tuple[str | None, bytes] | None = None
        with trio.move_on_after(self.config.proxy_header_timeout_s):
            got = await _read_proxy_header(stream)
        if got is None:  # no valid header in time
            self.refused(Refusal.MALFORMED)
            return None
        return got[0] or peer, got[1]

    def _open_session(
        self,
        stream: trio.abc.Stream,
        accept: bytes,
        use_json: bool,
        address: str,
        key: str,
        deadline: float,
    ) -> ClientSession:
        conn_id = self._next_conn_id
        self._next_conn_id += 1
        core = SessionCore(
            config=self.config,
            identity=self.identity,
            handshake_deadline=deadline,
            now=trio.current_time(),
            nonce=challenge_nonce(time.time(), os.urandom(NONCE_BYTES - NONCE_TIME_BYTES)),  # unix ms + random
            held=self.rate_ids,
        )
        core.json = use_json
        session = ClientSession(
            port=self,
            stream=stream,
            flusher=self.flusher,
            core=core,
            config=self.config,
            conn_id=conn_id,
            remote_ip=address,
            address_key=key,
        )
        self.sessions[conn_id] = session
        session.queue(accept)  # the 101
        return session


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


async def _read_proxy_header(stream: trio.abc.Stream) -> tuple[str | None, bytes] | None:
    """A PROXY v2 header from a trusted proxy: (the client's address or None for LOCAL, the bytes after it).

    None when the stream ends or the header is refused (node/protocol/proxy.py). Reads at most
    PROXY_V2_BYTES_MAX bytes before it has the whole header."""
    buf = b""
    while True:
        try:
            data = bytes(await stream.receive_some(PROXY_V2_BYTES_MAX))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not data:
            return None
        buf += data
        try:
            header = parse_proxy_v2(buf)
        except ProxyHeaderError as exc:
            log.info("event=client_proxy_header_refused error=%s", exc)
            return None
        if header is not None:
            return header.address, buf[header.size :]


def _accept(request: upgrade.Upgrade) -> tuple[bytes, bool]:
    """Accept the upgrade: (the 101 response, whether the client asked for JSON). From here on the session's own
    frame reader (node/protocol/wire/wsframe.py) reads the stream."""
    sub = JSON_SUBPROTOCOL if JSON_SUBPROTOCOL in request.subprotocols else None
    return upgrade.accept(request, sub), sub is not None or "format=json" in request.target.partition("?")[2]


def _reject(status: int, text: str) -> bytes:
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    if status in (429, 503):
        headers.append(("Retry-After", str(BUSY_RETRY_AFTER_S if text == BUSY_TEXT else 30)))
    return upgrade.reject(status, tuple(headers), text.encode() + b"\n")


async def _send_quietly(stream: trio.abc.Stream, data: bytes, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


def _key_of(address: str) -> str:
    key = address_key(address)
    return address if key == address else key  # one string per idle connection, not two


def _remote_ip(stream: trio.abc.Stream) -> str:
    inner: Any = stream
    while not hasattr(inner, "socket") and hasattr(inner, "transport_stream"):
        inner = inner.transport_stream
    try:
        return str(inner.socket.getpeername()[0])
    except (OSError, AttributeError):
        return "?"
