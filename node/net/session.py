"""One client connection of the client server (node/net/clients.py): protocol state, limits, send queue.

State machine: `AWAIT_HELLO -> OPEN -> CLOSING`. The reader task (`_run`) owns the socket's receive side and the
wsproto state. The send side is an `OutBuffer` (node/net/sockio.py): frames are queued and written once per scheduler
batch by the node's flusher, straight to the socket, with a writer task only for what the kernel does not take at
once (and for TLS). `send()` never blocks: it encodes, frames and queues, or (queue full) closes the connection as
a slow reader and returns False. Timers (handshake, ping, idle, close) are the deadline of the reader's one cancel
scope, moved forward as frames arrive. `close()` queues a close frame and pulls that deadline in; the reader keeps
draining until the client's close frame or EOF, so the client sees the close code.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from node.net.sockio import OutBuffer, read_some
from node.protocol.identity import client_auth_message, node_auth_message, short_id, verify_signature
from node.protocol.ratelimit import TokenBucket
from node.protocol.refusals import Refusal, for_client_code
from node.protocol.relay.claims import NONCE_TIME_BYTES, challenge_nonce
from node.protocol.wire import Limits
from node.protocol.wire.client import (
    NONCE_BYTES,
    ClientFrameError,
    ClientMessage,
    CloseCode,
    Envelope,
    Error,
    ErrorCode,
    Hello,
    Kind,
    Reason,
    Receipt,
    Status,
    Welcome,
    decode_client_frame,
    encode_client_message,
)
from node.protocol.wire.client import Ping as PingMsg
from node.protocol.wire.client import Pong as PongMsg

if TYPE_CHECKING:
    from node.net.clients import ClientServer

log = logging.getLogger("homing.clients")

READ_BYTES = 65536  # one receive_some; frames are reassembled up to Limits.CLIENT_FRAME_MAX
CLOSE_TIMEOUT_S = 2.0  # after our close frame, how long the client gets to answer before the socket closes


def data_frame(data: bytes | str) -> bytes:
    """One server-to-client WebSocket message as a single unmasked frame (RFC 6455 §5.2): FIN, text or binary.

    What wsproto's `Connection.send` produces for a message when no extension is negotiated (the server accepts
    none), built here without its per-call event dispatch: this runs once per relayed envelope.
    """
    if isinstance(data, str):
        payload, first = data.encode(), 0x81
    else:
        payload, first = data, 0x82
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


class ClientSession(OutBuffer):
    """One client connection. The relay uses `conn_id`, `client_id`, `remote_ip` and `send()`."""

    __slots__ = (
        "_buckets",
        "_close_at",
        "_closing",
        "_last_rx",
        "_msg_parts",
        "_msg_size",
        "_pinged",
        "_scope",
        "_server",
        "_strikes",
        "_ws",
        "claim",
        "client_id",
        "conn_id",
        "deadline",
        "json",
        "nonce",
        "remote_ip",
    )

    def __init__(
        self, server: ClientServer, stream: trio.abc.Stream, conn_id: int, remote_ip: str, deadline: float
    ) -> None:
        self.conn_id = conn_id
        self.client_id = b""  # set by a valid hello
        # the challenge nonce: unix ms + random (node/protocol/relay/claims.py); dropped after welcome
        self.nonce = challenge_nonce(time.time(), os.urandom(NONCE_BYTES - NONCE_TIME_BYTES))
        self.claim = (b"", b"")  # (nonce, hello sig): the client's home claim, handed to the relay
        self.deadline = deadline  # handshake deadline
        self.remote_ip = remote_ip
        self.json = False
        OutBuffer.__init__(self, stream, server.flusher)
        self._server = server
        self._ws: Connection | None = None
        self._closing = False
        self._scope = trio.CancelScope()  # the reader's current timer period (see _run)
        self._close_at = float("inf")
        self._last_rx = 0.0
        self._pinged = False
        self._strikes = 0
        self._msg_parts: list[Any] = []
        self._msg_size = 0
        now = trio.current_time()
        cfg = server.config
        self._buckets = (
            TokenBucket(cfg.rate_per_s, cfg.burst, now),
            TokenBucket(cfg.ice_rate_per_s, cfg.ice_burst, now),
        )

    def __repr__(self) -> str:
        return f"<ClientSession {self.conn_id} {short_id(self.client_id) if self.client_id else '-'}>"

    @property
    def online(self) -> bool:
        return bool(self.client_id) and not self._closing

    # --- sending (non-blocking) -----------------------------------------------------------------------------

    def send(self, msg: ClientMessage) -> bool:
        """Queue `msg` for this client. False (and the connection is closed as a slow reader) when full."""
        if self._closing or self._ws is None:
            return False
        data = encode_client_message(msg, json=self.json)
        frame = data_frame(data)
        cfg = self._server.config
        if len(self._out) >= cfg.send_queue_max or self._out_bytes + len(frame) > cfg.send_queue_bytes_max:
            self._server.refused(Refusal.RATE_LIMITED)  # a slow reader
            log.info("event=client_slow_reader conn=%d id=%s", self.conn_id, short_id(self.client_id))
            self._drop()
            self.close(CloseCode.POLICY, "slow reader: send queue full")
            return False
        self.queue(frame)
        return True

    def _write_failed(self) -> None:
        self._closing = True  # the reader sees EOF or the reset and ends the session

    def close(self, code: int, reason: str = "") -> None:
        """Queue a close frame; the connection ends when the client answers or CLOSE_TIMEOUT_S passes."""
        if self._closing:
            return
        self._closing = True
        self._close_at = trio.current_time() + CLOSE_TIMEOUT_S
        self._scope.deadline = min(self._scope.deadline, self._close_at)
        if self._ws is not None and self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self.queue(self._ws.send(CloseConnection(code=int(code), reason=reason)))

    # --- receiving ----------------------------------------------------------------------------------------

    def _take(self, kind: Kind | None) -> bool:
        bucket = self._buckets[1] if kind is Kind.CALL_ICE else self._buckets[0]
        return bucket.take(trio.current_time())

    def _strike(self, code: str) -> None:
        """A refused frame; `code` is the client protocol's error code (docs/client-protocol.md)."""
        self._server.refused(for_client_code(code))
        self._strikes += 1
        if self._strikes >= self._server.config.abuse_strikes_max:
            log.info("event=client_abuse conn=%d id=%s last=%s", self.conn_id, short_id(self.client_id), code)
            self.close(CloseCode.ABUSE, "too many refused frames")

    def _on_message(self, data: bytes | str) -> None:
        if self._closing:
            return
        if not self.client_id:
            self._on_hello(data)
            return
        try:
            msg = decode_client_frame(data)
        except ClientFrameError as exc:
            self._refuse(exc)
            return
        if isinstance(msg, Envelope):
            self._on_envelope(msg)
        elif not self._take(None):
            self.send(Error(code=ErrorCode.RATE_LIMITED))
            self._strike("rate_limited")
        elif isinstance(msg, PingMsg):
            self._strikes = 0
            self.send(PongMsg())
        elif isinstance(msg, Hello):
            self.send(Error(code=ErrorCode.BAD_REQUEST))
            self._strike("bad_request")

    def _refuse(self, exc: ClientFrameError) -> None:
        if exc.receipt and exc.ref is not None:
            self.send(Receipt(ref=exc.ref, status=Status.REJECTED, reason=Reason(exc.code)))
        else:
            self.send(Error(code=ErrorCode(exc.code), ref=exc.ref))
        self._strike(exc.code)

    def _on_envelope(self, env: Envelope) -> None:
        if not self._take(env.kind):
            self.send(Receipt(ref=env.ref, status=Status.REJECTED, reason=Reason.RATE_LIMITED))
            self._strike("rate_limited")
            return
        self._strikes = 0
        self._server.relay_call(self._server.relay.client_envelope, self, env)

    def _on_hello(self, data: bytes | str) -> None:
        self.json = isinstance(data, str)
        try:
            msg = decode_client_frame(data)
        except ClientFrameError:
            msg = None
        server = self._server
        if not (
            isinstance(msg, Hello)
            and verify_signature(msg.id, client_auth_message(server.identity.id, self.nonce), msg.sig)
        ):
            server.refused(Refusal.FORGED)
            self.send(Error(code=ErrorCode.AUTH_FAILED))
            self.close(CloseCode.AUTH_FAILED, "auth_failed")
            return
        self.client_id = msg.id
        self.claim = (self.nonce, msg.sig)
        self.nonce = b""
        self.send(Welcome(id=msg.id, sig=server.identity.sign(node_auth_message(msg.id, msg.nonce))))
        server.session_online(self)

    def _on_data_event(self, event: Message[Any]) -> None:
        self._msg_size += len(event.data)
        if self._msg_size > Limits.CLIENT_FRAME_MAX:
            self._server.refused(Refusal.OVERSIZED)
            self.close(CloseCode.TOO_BIG, f"frame over {Limits.CLIENT_FRAME_MAX} bytes")
            self._msg_parts.clear()
            return
        if not event.message_finished:
            self._msg_parts.append(event.data)
            return
        if self._msg_parts:
            self._msg_parts.append(event.data)
            data: Any = ("" if isinstance(event, TextMessage) else b"").join(self._msg_parts)
            self._msg_parts.clear()
        else:
            data = event.data
        self._msg_size = 0
        if not self._closing:
            self._on_message(data if isinstance(data, str) else bytes(data))

    def _on_events(self, ws: Connection) -> bool:
        """Handle every event wsproto has; True when the client's close (or EOF) was seen."""
        for event in ws.events():
            if isinstance(event, Message):
                if self._closing:
                    continue
                self._on_data_event(event)
            elif isinstance(event, Ping):
                if ws.state is ConnectionState.OPEN and not self._closing:
                    self.queue(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self.queue(ws.send(event.response()))
                self._closing = True
                return True
        return False

    def _next_timer(self) -> float:
        if self._closing:
            return self._close_at
        if not self.client_id:
            return self.deadline
        cfg = self._server.config
        return self._last_rx + (cfg.idle_timeout_s if self._pinged else cfg.ping_interval_s)

    async def _run(self, ws: Connection) -> None:
        """The connection's reader: one cancel scope per timer period (handshake, ping, idle, close).

        One coroutine frame reads and handles frames (no helper coroutines: an idle connection's memory is
        mostly the frames of its parked reader, docs/performance.md).
        """
        self._last_rx = trio.current_time()
        stream, fd = self._stream, self._fd
        data = b""
        ended = False  # EOF, the client's close, or a broken WebSocket stream
        while not ended:
            self._scope = trio.CancelScope(deadline=self._next_timer())
            with self._scope:
                while True:
                    data = await read_some(stream, fd, READ_BYTES, wait_first=0 < len(data) < READ_BYTES)
                    if not data:
                        ws.receive_data(None)
                        self._on_events(ws)
                        ended = True
                        break
                    self._last_rx = trio.current_time()
                    self._pinged = False
                    try:
                        ws.receive_data(data)
                        if self._on_events(ws):
                            ended = True
                            break
                    except WsRemoteProtocolError:
                        self._server.refused(Refusal.MALFORMED)  # not a WebSocket frame
                        ended = True
                        break
                    self._scope.deadline = self._next_timer()
            if ended:
                break
            if self._closing:
                if trio.current_time() >= self._close_at:
                    return
            elif not self.client_id or self._pinged:
                self._server.refused(Refusal.MALFORMED)  # handshake not finished in time
                self.close(CloseCode.TIMEOUT, "idle timeout" if self.client_id else "handshake timeout")
            else:
                self._pinged = True
                self.queue(ws.send(Ping(payload=b"")))
        self._closing = True
        self.flush_now()
        await self.drain(CLOSE_TIMEOUT_S)  # let a writer task flush our close frame, briefly
