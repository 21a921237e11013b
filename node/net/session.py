"""One client connection of the client server (node/net/clients.py): the byte pump around the session core.

The protocol state, limits and timers are the sans-IO `SessionCore` (node/protocol/session.py); this driver only
moves bytes and carries out the core's commands. The reader (`run`) owns the socket's receive side and the frame
reader (node/protocol/wire/wsframe.py): one read per wake-up, every WebSocket event of it handed to the core with
one `now`. The send side is an
`OutBuffer` (node/net/sockio.py) written by the node's flusher at the end of each scheduler batch. Every frame we
queue, data frames, pongs, pings, goes through one bound (`send_queue_max` messages, `send_queue_bytes_max`
bytes): over it the core closes the connection as a slow reader (1008). The core's handshake and close timers
are the deadline of the reader's one cancel scope; its keepalive timers (ping, idle: the only ones of an OPEN
session) are not: the server's one keepalive task walks the sessions due and calls `keepalive(now)`, which
queues the ping through the flusher without waking this reader (an idle phone costs no wake-up of its own).
The session talks to its server only through the `SessionPort` protocol, so neither module imports the
other's internals.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

import trio

from node.net.slicing import next_turn, slice_end
from node.net.sockio import Flusher, OutBuffer, read_some
from node.protocol.identity import short_id
from node.protocol.refusals import Refusal
from node.protocol.session import (
    Close,
    Command,
    Control,
    Offline,
    Online,
    Refused,
    Send,
    SendPing,
    SendPong,
    SessionCore,
    State,
    ToRelay,
)
from node.protocol.settings import ClientsSection
from node.protocol.wire.client import ClientMessage, CloseCode, Envelope, encode_client_message
from node.protocol.wire.wsframe import (
    OP_PONG,
    PING_FRAME,
    CloseFrame,
    Data,
    Event,
    Failed,
    FrameReader,
    PingFrame,
    PongFrame,
    close_frame,
    data_frame,
    frame,
)

log = logging.getLogger("homing.clients")

_OPEN = State.OPEN
_INF = math.inf
# Seconds without a byte written to a client after which a delivery that does not fit in its share of the send
# queue closes the connection as a slow reader (1008) instead of being dropped (`ClientSession.deliver`).
DELIVERY_STALL_S = 2.0


def reader_deadline(core: SessionCore) -> float:
    """When the reader must wake for the core: its handshake or close timer; an OPEN session's keepalive timers
    are the server's keepalive task's (`ClientSession.keepalive`)."""
    return _INF if core.state is _OPEN else core.next_deadline()


class SessionPort(Protocol):
    """What a session reports to its server. Called from trio; none of them blocks."""

    def refused(self, reason: Refusal) -> None: ...
    def session_online(self, session: ClientSession) -> None: ...
    def session_offline(self, session: ClientSession) -> None: ...
    def session_envelope(self, session: ClientSession, env: Envelope) -> None: ...
    def session_control(self, session: ClientSession, msg: ClientMessage) -> None: ...
    def session_abused(self, session: ClientSession) -> None: ...


class ClientSession(OutBuffer):
    """One client connection. The relay uses `conn_id`, `client_id`, `remote_ip`, `address_key` and `send()`."""

    __slots__ = (
        "_close_queued",
        "_config",
        "_core",
        "_frames",
        "_offline_pending",
        "_port",
        "_scope",
        "address_key",
        "conn_id",
        "remote_ip",
    )

    def __init__(
        self,
        *,
        port: SessionPort,
        stream: trio.abc.Stream,
        flusher: Flusher,
        core: SessionCore,
        config: ClientsSection,
        conn_id: int,
        remote_ip: str,
        address_key: str,
    ) -> None:
        OutBuffer.__init__(self, stream, flusher)
        self.conn_id = conn_id
        self.remote_ip = remote_ip  # the client's address (after a trusted proxy's header)
        self.address_key = address_key  # its network for per-address budgets: /32 IPv4, /64 IPv6
        self._port = port
        self._frames = FrameReader()  # the client's frames; bytes it sent before our 101 are not among them
        self._core = core
        self._config = config
        self._close_queued = False
        self._offline_pending = False  # the core's Offline, reported by the reader (see _execute)
        self._scope = trio.CancelScope()  # the reader's current timer period (see run)

    def __repr__(self) -> str:
        cid = self._core.client_id
        return f"<ClientSession {self.conn_id} {short_id(cid) if cid else '-'}>"

    @property
    def client_id(self) -> bytes:
        return self._core.client_id

    @property
    def claim(self) -> tuple[bytes, bytes]:
        """(challenge nonce, hello signature): the client's home claim, for the relay."""
        return self._core.claim

    @property
    def online(self) -> bool:
        return self._core.state is _OPEN

    @property
    def state(self) -> State:
        return self._core.state

    # --- sending (non-blocking) -----------------------------------------------------------------------------

    def send(self, msg: ClientMessage) -> bool:
        """Queue `msg` for this online client. False when it is not online or (closed as a slow reader) full."""
        core = self._core
        if core.state is not _OPEN or self._close_queued:
            return False
        return self._enqueue(data_frame(encode_client_message(msg, json=core.json)))

    def send_shared(self, msg: ClientMessage, frames: dict[bool, bytes]) -> bool:
        """`send` of one message to many sessions: it is framed once per encoding (JSON or not), in `frames`."""
        core = self._core
        if core.state is not _OPEN or self._close_queued:
            return False
        frame = frames.get(core.json)
        if frame is None:
            frame = frames[core.json] = data_frame(encode_client_message(msg, json=core.json))
        return self._enqueue(frame)

    def deliver(self, msg: ClientMessage) -> bool:
        """Queue `msg`, relayed from another client (a `Deliver`), within the delivery share of the send queue.

        Another client chooses what is delivered here and how fast (call_ice: 50 big envelopes a second, 200 at
        once), so deliveries must not be able to close this connection: one connection bursting 64 KiB call_ice
        filled a reading phone's 1 MiB queue and got it closed 1008 in a fraction of a second, again at each
        reconnect. Deliveries fill at most half the queue (messages and bytes), leaving the rest for the node's
        answers to the client's own frames; one that does not fit is dropped while the socket still takes bytes
        (a reader, only slower than the flood), and closes the connection as a slow reader (1008) only when
        nothing was written for `DELIVERY_STALL_S` (a client that stopped reading). False when not queued."""
        core = self._core
        if core.state is not _OPEN or self._close_queued:
            return False
        frame = data_frame(encode_client_message(msg, json=core.json))
        cfg = self._config
        pending = self.pending_bytes  # queued, and what the writer task still holds
        if len(self._out) < cfg.send_queue_max // 2 and pending + len(frame) <= cfg.send_queue_bytes_max // 2:
            self.queue(frame)
            return True
        if time.monotonic() - self._wrote_at < DELIVERY_STALL_S:
            self._port.refused(Refusal.RATE_LIMITED)
            return False
        self._drop()
        self._execute(core.queue_full(trio.current_time()))
        return False

    def close(self, code: int, reason: str = "") -> None:
        """Queue a close frame; the connection ends when the client answers or `close_timeout_s` passes."""
        self._execute(self._core.close(code, reason, trio.current_time()))

    def _enqueue(self, frame: bytes) -> bool:
        cfg = self._config
        if len(self._out) >= cfg.send_queue_max or self.pending_bytes + len(frame) > cfg.send_queue_bytes_max:
            self._drop()
            self._execute(self._core.queue_full(trio.current_time()))
            return False
        self.queue(frame)
        return True

    def _write_failed(self) -> None:
        self._execute(self._core.write_failed())
        self._scope.deadline = reader_deadline(self._core)  # the reader ends the session now

    def keepalive(self, now: float) -> float:
        """The server's keepalive task: the core's ping/idle timer is due (or was moved by a frame since).

        Runs the core's tick in the keepalive task (a ping is queued for the flusher, an idle timeout queues the
        close and wakes the reader through Offline); returns the next keepalive deadline, inf when not OPEN.
        """
        core = self._core
        if core.state is not _OPEN:
            return _INF
        if now >= core.next_deadline():
            self._execute(core.tick(now))
        return core.next_deadline() if core.state is _OPEN else _INF

    def _report_offline(self) -> None:
        self._offline_pending = False
        self._port.session_offline(self)

    def report_offline_now(self) -> None:
        """Report a pending Offline at once instead of from the reader task. Only for callers outside the relay's
        stack (the server's graceful stop): a session whose close is queued drops what the relay hands it, so while
        its Offline waits for its reader, envelopes routed to it were answered `delivered` and never sent (15 in
        one 10,000-client goaway storm, docs/performance.md, "Fifth pass")."""
        if self._offline_pending:
            self._report_offline()

    def _execute(self, commands: list[Command]) -> None:
        """Carry out the core's commands, in order."""
        for cmd in commands:
            if type(cmd) is ToRelay:
                self._port.session_envelope(self, cmd.env)
            elif type(cmd) is Send:
                if not self._close_queued:
                    self._enqueue(data_frame(encode_client_message(cmd.msg, json=self._core.json)))
            elif type(cmd) is Refused:
                self._port.refused(cmd.reason)
            elif type(cmd) is Close:
                self._queue_close(cmd)
            elif type(cmd) is SendPong:
                if not self._close_queued:
                    self._enqueue(frame(OP_PONG, cmd.payload))
            elif type(cmd) is SendPing:
                if not self._close_queued:
                    self._enqueue(PING_FRAME)
            elif type(cmd) is Online:
                self._port.session_online(self)
            elif type(cmd) is Offline:
                # reported by the reader task, never inside a caller's stack (a relay's send that overflowed,
                # the flusher's failed write): the relay is not re-entered while it is handing out messages
                self._offline_pending = True
                self._scope.deadline = -math.inf
            elif type(cmd) is Control:
                self._port.session_control(self, cmd.msg)

    def _send_close(self, code: int, reason: str = "") -> None:
        """Queue our close frame, once per connection."""
        if not self._close_queued:
            self._close_queued = True
            self.queue(close_frame(code, reason))

    def _queue_close(self, cmd: Close) -> None:
        if cmd.code in (CloseCode.ABUSE, CloseCode.TOO_BIG):
            self._port.session_abused(self)
        if cmd.code in (CloseCode.ABUSE, CloseCode.POLICY, CloseCode.TOO_BIG):
            log.info(
                "event=client_closed conn=%d id=%s code=%d reason=%s",
                self.conn_id,
                short_id(self._core.client_id) if self._core.client_id else "-",
                cmd.code,
                cmd.reason,
            )
        self._send_close(cmd.code, cmd.reason)
        self._scope.deadline = min(self._scope.deadline, reader_deadline(self._core))

    # --- receiving ----------------------------------------------------------------------------------------

    def _on_events(self, events: list[Event], start: int, now: float) -> int:
        """Hand the WebSocket events from `start` on to the core, for at most `handle_slice_s` of wall time (at least
        one event); returns the index of the first event not handled (len(events) when all were).

        One read can carry hundreds of frames (`read_bytes`), and handling them all in one task step held the event
        loop 5-17 ms under a client flooding at 100 times its rate limit: every other connection's messages
        waited that long (tests/adversarial/test_flood.py). The caller yields between slices.
        """
        core = self._core
        stop = slice_end(self._config.handle_slice_s, self._flusher.last_turn_s)
        i, end = start, len(events)
        while i < end:
            event = events[i]
            i += 1
            if type(event) is Data:
                self._execute(core.fragment(event.data, event.frame_end, event.fin, now))
            elif type(event) is PingFrame:
                if not self._close_queued:
                    self._execute(core.ws_ping(event.payload, now))
            elif type(event) is CloseFrame:
                self._send_close(event.code)  # the client closed first: answer with its code (RFC 6455 §5.5.1)
                self._execute(core.remote_closed())
            elif type(event) is Failed:  # not a WebSocket stream: say why, then the connection ends
                self._send_close(event.code, event.reason)
                self._execute(core.broken())
            elif type(event) is PongFrame:  # spends the bucket like a ping (any bytes count as life: core.received)
                self._execute(core.ws_pong(now))
            if i < end and time.perf_counter() >= stop:
                break
        return i

    async def run(self) -> None:
        """The connection's reader: one cancel scope per timer period, until the core is CLOSED.

        One coroutine frame reads and handles frames (no helper coroutines: an idle connection's memory is
        mostly the frames of its parked reader, docs/performance.md).
        """
        core = self._core
        self._execute(core.start())
        stream, fd, read_bytes = self._stream, self._fd, self._config.read_bytes
        data = b""
        while not core.closed:
            if self._offline_pending:
                self._report_offline()
            self._scope = trio.CancelScope(deadline=reader_deadline(core))
            with self._scope:
                while True:
                    data = await read_some(stream, fd, read_bytes, wait_first=0 < len(data) < read_bytes)
                    now = trio.current_time()
                    if not data:
                        self._execute(core.remote_closed())
                    else:
                        core.received(now, len(data))
                        if not core.closed:
                            events = self._frames.feed(data)
                            done = self._on_events(events, 0, now)
                            while done < len(events):  # the rest of this read after the others had their turn
                                await next_turn()
                                now = trio.current_time()
                                done = self._on_events(events, done, now)
                            self._flusher.flush_if_quiet()  # a lone message's answer goes out now (sockio.py)
                    if core.closed:
                        break
                    if self._offline_pending:
                        self._report_offline()
                    if core.state is not _OPEN:
                        self._scope.deadline = core.next_deadline()
                    elif self._scope.deadline != _INF:  # just welcomed: keepalive is the server's from now on
                        self._scope.deadline = _INF
            if not core.closed:
                self._execute(core.tick(trio.current_time()))
        self.flush_now()
        await self.drain(self._config.close_timeout_s)  # let a writer task flush our close frame, briefly

    def finish(self) -> None:
        """The connection is ending (the server's `finally`): reports Offline if still online, drops the queue."""
        self._execute(self._core.finish())
        if self._offline_pending:
            self._report_offline()
        self.discard()
