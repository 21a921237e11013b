"""The client session as a pure state machine (sans-IO): one authenticated WebSocket client of this node.

Rules
1. States: `HANDSHAKE -> OPEN -> CLOSING -> CLOSED` (any state may jump to CLOSED on EOF or a broken stream;
   HANDSHAKE and OPEN go to CLOSING when either side closes). Only OPEN has a client id.
2. Inputs are what the WebSocket layer decoded, each with `now`: `received(now)` once per read, `fragment()` per
   data frame, `ws_ping()`, `ws_pong()`, `remote_closed()`, `broken()`, plus `tick(now)` at `next_deadline()`,
   `close()` from the server and `queue_full()` when the driver's send queue refuses a frame. Every input returns
   the commands it produced, in order; the driver carries them out (node/net/session.py).
3. Every input is bounded: a message is at most `Limits.CLIENT_FRAME_MAX` bytes (1009) in at most
   `message_fragments_max` frames, empty ones included (1009); envelopes and control requests spend token
   buckets (`rate_per_s`/`burst`, call_ice its own), and so do a WebSocket ping (its pong is queued like any
   frame, so pongs count in the send queue bound: 1008 when full) and a WebSocket pong; `abuse_strikes_max`
   refused inputs in a row close with 4429. The hello must come within `handshake_timeout_s` (4408).
   From the welcome on, the buckets are the client id's (`HeldBuckets`, node/protocol/ratelimit.py, when the
   driver gives one): shared with the id's other connections on this node and kept after the last one ends, so
   a reconnect, or a second connection, starts from what the id left, not from a full burst. Before the welcome
   the connection spends buckets of its own (only WebSocket pings and pongs can spend them).
4. Timers: after `ping_interval_s` of silence the session pings (`SendPing`), after `idle_timeout_s` it closes
   (4408); after our close frame the client has `close_timeout_s` to answer, then the session is CLOSED.
5. After the welcome, a message that is neither an envelope, a ping, a pong nor a hello is an authenticated
   control request: it spends the control bucket and is emitted as one `Control(msg)` for the server's handlers
   (they answer through the session's send). An envelope is emitted as `ToRelay(env)`.

Pure: no I/O, no clock (times are passed in), the challenge nonce is given by the driver.
"""

from __future__ import annotations

import enum
from typing import Final

from node.protocol.identity import Identity, client_auth_message, node_auth_message, verify_signature
from node.protocol.ratelimit import HeldBuckets, TokenBucket
from node.protocol.records import record
from node.protocol.refusals import Refusal, for_client_code
from node.protocol.settings import ClientsSection
from node.protocol.wire import Limits
from node.protocol.wire.client import (
    Challenge,
    ClientFrameError,
    ClientMessage,
    CloseCode,
    Envelope,
    Error,
    ErrorCode,
    Hello,
    Kind,
    Pong,
    Reason,
    Receipt,
    Status,
    Welcome,
    decode_client_frame,
)
from node.protocol.wire.client import Ping as PingMsg

INF: Final = float("inf")


class State(enum.Enum):
    HANDSHAKE = "handshake"  # challenge sent, waiting for the hello
    OPEN = "open"  # authenticated: envelopes and control requests flow
    CLOSING = "closing"  # our close frame is queued, or the client's arrived: waiting for the end
    CLOSED = "closed"  # the driver ends the connection


# --- commands (what the driver does) ---------------------------------------------------------------------


@record(kw_only=True, slots=True)
class Send:
    """Encode `msg` (JSON or msgpack, as the client chose in its hello) and queue it."""

    msg: ClientMessage


@record(kw_only=True, slots=True)
class SendPong:
    """Queue a WebSocket pong with `payload` (counted in the send queue bound like any frame)."""

    payload: bytes


@record(kw_only=True, slots=True)
class SendPing:
    """Queue a WebSocket ping (the client was silent for `ping_interval_s`)."""


@record(kw_only=True, slots=True)
class Close:
    """Queue a WebSocket close frame with `code` and `reason`; keep reading until the client answers."""

    code: int
    reason: str


@record(kw_only=True, slots=True)
class ToRelay:
    """An authenticated client's envelope for the relay."""

    env: Envelope


@record(kw_only=True, slots=True)
class Control:
    """An authenticated control request (anything but an envelope, ping or hello) for the server's handlers."""

    msg: ClientMessage


@record(kw_only=True, slots=True)
class Online:
    """The hello was verified: the client `client_id` is reachable on this connection."""

    client_id: bytes


@record(kw_only=True, slots=True)
class Offline:
    """The session that was online ended (emitted once, on the way to CLOSED)."""

    client_id: bytes


@record(kw_only=True, slots=True)
class Refused:
    """An input was refused (for the metrics port)."""

    reason: Refusal


Command = Send | SendPong | SendPing | Close | ToRelay | Control | Online | Offline | Refused


class SessionCore:
    """One client session's protocol state. `json` says how the client wants its messages encoded."""

    __slots__ = (
        "_buckets",
        "_close_at",
        "_closing_bytes",
        "_config",
        "_deadline",
        "_held",
        "_identity",
        "_last_rx",
        "_msg_bytes",
        "_msg_frames",
        "_msg_parts",
        "_out",
        "_pinged",
        "_strikes",
        "claim",
        "client_id",
        "json",
        "nonce",
        "state",
    )

    def __init__(
        self,
        *,
        config: ClientsSection,
        identity: Identity,
        nonce: bytes,
        handshake_deadline: float,
        now: float,
        held: HeldBuckets[bytes] | None = None,
    ) -> None:
        """`held`: the server's buckets per client id (rule 3); None keeps this connection's own (unit tests)."""
        self._config = config
        self._held = held
        self._identity = identity
        self.nonce = nonce  # the challenge's; forgotten after the welcome
        self.claim = (b"", b"")  # (nonce, hello sig): the client's home claim (node/protocol/relay/claims.py)
        self.state = State.HANDSHAKE
        self.client_id = b""
        self.json = False
        self._deadline = handshake_deadline
        self._close_at = INF
        self._closing_bytes = 0
        self._last_rx = now
        self._pinged = False
        self._strikes = 0
        self._msg_parts: list[bytes | str] = []
        self._msg_bytes = 0
        self._msg_frames = 0  # frames of the message being reassembled
        self._buckets: tuple[TokenBucket, ...] = (
            TokenBucket(config.rate_per_s, config.burst, now),
            TokenBucket(config.ice_rate_per_s, config.ice_burst, now),
        )
        self._out: list[Command] = []

    def start(self) -> list[Command]:
        """The challenge, sent as soon as the upgrade is accepted."""
        return [Send(msg=Challenge(node=self._identity.id, nonce=self.nonce))]

    @property
    def online(self) -> bool:
        return self.state is State.OPEN

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # --- timers --------------------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        state = self.state
        if state is State.OPEN:
            cfg = self._config
            return self._last_rx + (cfg.idle_timeout_s if self._pinged else cfg.ping_interval_s)
        if state is State.HANDSHAKE:
            return self._deadline
        if state is State.CLOSING:
            return self._close_at
        return INF

    def tick(self, now: float) -> list[Command]:
        if now < self.next_deadline():
            return []
        state = self.state
        if state is State.CLOSING:
            self._closed()
        elif state is State.HANDSHAKE:
            self._refuse(Refusal.MALFORMED)
            self._close(CloseCode.TIMEOUT, "handshake timeout", now)
        elif self._pinged:
            self._refuse(Refusal.MALFORMED)
            self._close(CloseCode.TIMEOUT, "idle timeout", now)
        elif state is State.OPEN:
            self._pinged = True
            self._out.append(SendPing())
        return self._take_out()

    # --- inputs from the WebSocket layer -------------------------------------------------------------------

    def received(self, now: float, nbytes: int = 0) -> None:
        """Bytes arrived (any frame): the client is alive. While closing, at most `closing_read_bytes_max` more
        are read (and discarded) before the connection ends: a client closed for abuse that keeps sending
        cannot keep the node reading at full speed for `close_timeout_s`."""
        self._last_rx = now
        self._pinged = False
        if self.state is State.CLOSING:
            self._closing_bytes += nbytes
            if self._closing_bytes > self._config.closing_read_bytes_max:
                self._closed()

    def fragment(self, data: bytes | str, frame_end: bool, fin: bool, now: float) -> list[Command]:
        """A piece of a data frame (`frame_end`: the frame's last piece; `fin`: the message's). Text is str.

        The WebSocket layer may hand a long frame over in pieces as its bytes arrive: frames are counted where
        they end, so the fragment bound counts frames (empty ones too), never how TCP cut them.
        """
        if self.state is not State.HANDSHAKE and self.state is not State.OPEN:
            return []
        self._msg_bytes += len(data)
        if self._msg_bytes > Limits.CLIENT_FRAME_MAX:
            return self._too_big(f"message over {Limits.CLIENT_FRAME_MAX} bytes", now)
        parts = self._msg_parts
        if not fin:
            if frame_end:
                self._msg_frames += 1
                if self._msg_frames >= self._config.message_fragments_max:
                    return self._too_big(f"message in over {self._config.message_fragments_max} frames", now)
            if data:
                parts.append(data)
            return []
        if parts:
            parts.append(data)
            message: bytes | str = "".join(parts) if isinstance(data, str) else b"".join(parts)  # type: ignore[arg-type]
            self._drop_message()
        else:
            message = data
            self._msg_bytes = self._msg_frames = 0
        self._message(message, now)
        return self._take_out()

    def _too_big(self, reason: str, now: float) -> list[Command]:
        self._drop_message()
        self._refuse(Refusal.OVERSIZED)
        self._close(CloseCode.TOO_BIG, reason, now)
        return self._take_out()

    def ws_ping(self, payload: bytes, now: float) -> list[Command]:
        """A WebSocket ping: answered with a pong while the control bucket allows (browsers never send them)."""
        if self.state is not State.HANDSHAKE and self.state is not State.OPEN:
            return []
        if self._buckets[0].take(now):
            self._out.append(SendPong(payload=payload))
        else:
            self._strike("rate_limited", now)
        return self._take_out()

    def ws_pong(self, now: float) -> list[Command]:
        """A WebSocket pong: nothing to answer, but it spends the control bucket as a ping does (struck when empty).
        Unsolicited pongs are allowed (RFC 6455 §5.5.3), so without a cost a client could send 6-byte pongs at
        full speed, parsed at ~1.6 µs each, for as long as it liked. A pong that answers the node's ping comes after
        `ping_interval_s` of silence, when the bucket is full."""
        if self.state is not State.HANDSHAKE and self.state is not State.OPEN:
            return []
        if not self._buckets[0].take(now):
            self._strike("rate_limited", now)
        return self._take_out()

    def remote_closed(self) -> list[Command]:
        """The client's close frame, or EOF: the connection ends (the driver answers a close frame)."""
        self._closed()
        return self._take_out()

    def broken(self) -> list[Command]:
        """Bytes that are not WebSocket: refused, and the connection ends at once."""
        if self.state is not State.CLOSED:
            self._refuse(Refusal.MALFORMED)
        self._closed()
        return self._take_out()

    # --- inputs from the server ----------------------------------------------------------------------------

    def close(self, code: int, reason: str, now: float) -> list[Command]:
        self._close(code, reason, now)
        return self._take_out()

    def queue_full(self, now: float) -> list[Command]:
        """The send queue refused a frame (messages or bytes over the bound): a slow reader, closed with 1008."""
        if self.state is State.HANDSHAKE or self.state is State.OPEN:
            self._refuse(Refusal.RATE_LIMITED)
            self._close(CloseCode.POLICY, "slow reader: send queue full", now)
        return self._take_out()

    def write_failed(self) -> list[Command]:
        """The socket cannot be written any more: nothing more is sent; the reader sees the end."""
        if self.state is not State.CLOSED:
            self._went_offline()
            self.state = State.CLOSING
            self._close_at = -INF  # due at once
        return self._take_out()

    def finish(self) -> list[Command]:
        """The driver is ending the connection, whatever the state: emits Offline if the session was online."""
        self._closed()
        return self._take_out()

    # --- internals -----------------------------------------------------------------------------------------

    def _take_out(self) -> list[Command]:
        out, self._out = self._out, []
        return out

    def _drop_message(self) -> None:
        self._msg_parts.clear()
        self._msg_bytes = self._msg_frames = 0

    def _refuse(self, reason: Refusal) -> None:
        self._out.append(Refused(reason=reason))

    def _close(self, code: int, reason: str, now: float) -> None:
        if self.state is not State.HANDSHAKE and self.state is not State.OPEN:
            return
        self._went_offline()
        self.state = State.CLOSING
        self._close_at = now + self._config.close_timeout_s
        self._drop_message()
        self._out.append(Close(code=int(code), reason=reason))

    def _closed(self) -> None:
        if self.state is State.CLOSED:
            return
        self._went_offline()
        self.state = State.CLOSED
        self._drop_message()

    def _went_offline(self) -> None:
        if self.client_id and self.state is State.OPEN:
            if self._held is not None:
                self._held.detach(self.client_id)  # once: the state leaves OPEN right after (rule 3)
            self._out.append(Offline(client_id=self.client_id))

    def _strike(self, code: str, now: float) -> None:
        """A refused input; `code` is the client protocol's error code (docs/client-protocol.md)."""
        self._refuse(for_client_code(code))
        self._strikes += 1
        if self._strikes >= self._config.abuse_strikes_max:
            self._close(CloseCode.ABUSE, "too many refused frames", now)

    def _message(self, data: bytes | str, now: float) -> None:
        if self.state is State.HANDSHAKE:
            self._hello(data, now)
            return
        try:
            msg = decode_client_frame(data)
        except ClientFrameError as exc:
            if exc.receipt and exc.ref is not None:
                self._out.append(Send(msg=Receipt(ref=exc.ref, status=Status.REJECTED, reason=Reason(exc.code))))
            else:
                self._out.append(Send(msg=Error(code=ErrorCode(exc.code), ref=exc.ref)))
            self._strike(exc.code, now)
            return
        if isinstance(msg, Envelope):
            bucket = self._buckets[1] if msg.kind is Kind.CALL_ICE else self._buckets[0]
            if bucket.take(now):
                self._strikes = 0
                self._out.append(ToRelay(env=msg))
            else:
                self._out.append(Send(msg=Receipt(ref=msg.ref, status=Status.REJECTED, reason=Reason.RATE_LIMITED)))
                self._strike("rate_limited", now)
        elif not self._buckets[0].take(now):
            self._out.append(Send(msg=Error(code=ErrorCode.RATE_LIMITED)))
            self._strike("rate_limited", now)
        elif isinstance(msg, PingMsg):
            self._strikes = 0
            self._out.append(Send(msg=Pong()))
        elif isinstance(msg, Hello):
            self._out.append(Send(msg=Error(code=ErrorCode.BAD_REQUEST)))
            self._strike("bad_request", now)
        elif not isinstance(msg, Pong):
            self._strikes = 0
            self._out.append(Control(msg=msg))

    def _hello(self, data: bytes | str, now: float) -> None:
        self.json = isinstance(data, str)
        try:
            msg: ClientMessage | None = decode_client_frame(data)
        except ClientFrameError:
            msg = None
        identity = self._identity
        if not (
            isinstance(msg, Hello) and verify_signature(msg.id, client_auth_message(identity.id, self.nonce), msg.sig)
        ):
            self._refuse(Refusal.FORGED)
            self._out.append(Send(msg=Error(code=ErrorCode.AUTH_FAILED)))
            self._close(CloseCode.AUTH_FAILED, "auth_failed", now)
            return
        self.client_id = msg.id
        if self._held is not None:  # the id's buckets from now on (rule 3); detached in _went_offline
            self._buckets = self._held.attach(msg.id, now)
        self.claim = (self.nonce, msg.sig)
        self.nonce = b""
        self.state = State.OPEN
        self._out.append(Send(msg=Welcome(id=msg.id, sig=identity.sign(node_auth_message(msg.id, msg.nonce)))))
        self._out.append(Online(client_id=msg.id))
