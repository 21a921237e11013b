"""The relay driver: the sans-IO RelayCore (node/protocol/relay/core.py) between client sessions and peer links.

It is the `RelaySink` of the client server: sessions report online/offline/envelope here; peer links deliver
relay frames here. Every input is given to the core with `trio.current_time()`, then the core's commands are
carried out at once: `ToClient` goes on that session's bounded send queue, `ToPeer` is encoded and put on the
peer link's bounded queue (a refused send is reported back to the core as an unreachable peer). A timer task
sleeps until the core's next deadline, woken early when an input may have moved it.

Metrics: receipt outcomes and relay latencies are taken from `core.stats()` in one place (`refresh_metrics`),
because reading the stats consumes the latency samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from node.net.peers import PeerLinks
from node.net.session import ClientSession
from node.net.timer import CoreTimer
from node.protocol.errors import RemoteProtocolError
from node.protocol.refusals import Layer, Refusal
from node.protocol.relay.claims import HomeClaim
from node.protocol.relay.core import CloseClient, RelayCore, ToClient, ToPeer
from node.protocol.relay.push import PushDropped, SendPush
from node.protocol.webpush import Subscription
from node.protocol.wire.client import CloseCode, Deliver, Envelope, Error, ErrorCode, Ok, PushRegister, PushUnregister
from node.protocol.wire.peer import peer_from_map, peer_to_map

FLUSH_ROUNDS_MAX = 64  # a drain that keeps producing (unreachable peers feeding back) stops here; the timer retries


class RelayMetrics(Protocol):
    """What the relay driver reports to (the node's metrics, node.app.metrics.NodeMetrics)."""

    relay_seconds: Any  # a histogram: .observe(seconds)
    mailbox_envelopes: Any  # a gauge: .set(n)

    def packet_refused(self, layer: Layer, reason: Refusal, count: int = 1) -> None: ...

    def envelope(self, kind: str, outcome: str, count: int = 1) -> None: ...


class PushPort(Protocol):
    """The push sender as the relay driver sees it (node/net/push.py: PushSender)."""

    @property
    def vapid_public(self) -> bytes: ...

    def submit(self, cmd: SendPush) -> bool: ...

    def on_result(self, outcome: str) -> None: ...


class RelayDriver:
    def __init__(self, *, core: RelayCore, links: PeerLinks, metrics: RelayMetrics) -> None:
        self.core = core
        self.links = links
        self.metrics = metrics
        self.pusher: PushPort | None = None  # push wake-up: set by the composition root when [push] enabled
        self.sessions: dict[int, ClientSession] = {}
        self._timer = CoreTimer(
            tick=core.tick, next_deadline=core.next_deadline, flush=self._flush, defer=links.flusher.defer
        )
        self._outcomes_seen: dict[tuple[str, str], int] = {}
        self.core.wall_offset_s = time.time() - trio.current_time()  # constructed inside trio (node/app/service.py)
        self._refused_seen: dict[Refusal, int] = {}

    # --- RelaySink (called by the client server) ---------------------------------------------------

    def client_online(self, session: ClientSession, address_key: str, claim: HomeClaim | None = None) -> None:
        """`address_key` (/32 IPv4, /64 IPv6 of the client, after a trusted proxy) keys per-address budgets; `claim`
        defaults to the session's signed hello (`session.claim`: (challenge nonce, hello sig))."""
        if claim is None:
            nonce, sig = session.claim
            claim = HomeClaim(client=session.client_id, home=self.core.node_id, nonce=nonce, sig=sig)
        self.sessions[session.conn_id] = session
        now = self._now()
        self.core.client_online(session.conn_id, session.client_id, now, claim=claim, address_key=address_key)
        self._after_input()

    def client_offline(self, session: ClientSession) -> None:
        if self.sessions.pop(session.conn_id, None) is not None:
            self.core.client_offline(session.conn_id, trio.current_time())
            self._after_input()

    def client_envelope(self, session: ClientSession, env: Envelope) -> None:
        self.core.client_envelope(session.conn_id, env, trio.current_time())
        self._after_input()

    def client_push(self, session: ClientSession, msg: PushRegister | PushUnregister) -> None:
        """push_register / push_unregister from a session (docs/client-protocol.md, "Push wake-up")."""
        now = trio.current_time()
        if self.pusher is None:
            session.send(Error(code=ErrorCode.UNKNOWN_TYPE))
        elif isinstance(msg, PushUnregister):
            self.core.push_unregister(session.conn_id, now)
            session.send(Ok(of="push_unregister"))
        else:
            sub = Subscription(endpoint=msg.endpoint, p256dh=msg.p256dh, auth=msg.auth)
            if self.core.push_register(session.conn_id, sub, now):
                session.send(Ok(of="push_register", vapid=self.pusher.vapid_public))
            else:
                session.send(Error(code=ErrorCode.RATE_LIMITED))  # this node's subscription table is full
        self._after_input()

    def push_gone(self, client: bytes, endpoint: str) -> None:
        """The push service answered 404/410 (called by the push sender)."""
        self.core.push_gone(client, endpoint, trio.current_time())
        self._after_input()

    # --- federation inputs -------------------------------------------------------------------------

    def peer_frames(self, peer: bytes, frames: Sequence[dict[str, Any]]) -> None:
        """Frames from a peer link (PeerEvents, node/net/peers.py): relay frames' maps (node/protocol/wire/peer.py),
        handed to the core one by one, and what it decided carried out once for them all."""
        now = self._now()
        for frame in frames:
            try:
                msg = peer_from_map(frame)
            except RemoteProtocolError as exc:
                self.metrics.packet_refused(Layer.PEER, exc.refusal)
                continue
            self.core.peer_message(peer, msg, now)
        self._after_input()

    def peer_unreachable(self, peer: bytes) -> None:
        self.core.peer_unreachable(peer, trio.current_time())
        self._after_input()

    def members_changed(self, live: Sequence[bytes]) -> None:
        self.core.members_changed(live, trio.current_time())
        self._after_input()

    def begin_leave(self) -> None:
        self.core.begin_leave()

    def handoff_all(self) -> None:
        self.core.handoff_all(trio.current_time())
        self._flush()

    def _now(self) -> float:
        """trio's clock for the core, keeping its wall-clock offset current (claims carry unix times)."""
        now = trio.current_time()
        self.core.wall_offset_s = time.time() - now
        return now

    # --- running -----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self._timer.run()

    def _after_input(self) -> None:
        self._flush()
        self._timer.wake()

    def _flush(self) -> None:
        for _ in range(FLUSH_ROUNDS_MAX):
            commands = self.core.drain()
            if not commands:
                return
            for cmd in commands:
                if isinstance(cmd, ToClient):
                    session = self.sessions.get(cmd.conn_id)
                    if session is not None:  # what another client sent must not be able to close this one
                        session.deliver(cmd.msg) if isinstance(cmd.msg, Deliver) else session.send(cmd.msg)
                elif isinstance(cmd, ToPeer):
                    if not self.links.send(cmd.node, peer_to_map(cmd.msg)):
                        self.core.peer_unreachable(cmd.node, trio.current_time())
                elif isinstance(cmd, CloseClient):
                    if (session := self.sessions.get(cmd.conn_id)) is not None:
                        session.close(CloseCode.GOING_AWAY, "home claim renewal: reconnect")
                elif self.pusher is not None:  # push wake-up
                    if isinstance(cmd, SendPush):
                        self.pusher.submit(cmd)
                    elif isinstance(cmd, PushDropped):
                        self.pusher.on_result(cmd.reason.value)

    def refresh_metrics(self) -> None:
        stats = self.core.stats()
        for key, total in stats.outcomes.items():
            delta = total - self._outcomes_seen.get(key, 0)
            if delta > 0:  # one increment by the delta: a flood's million outcomes are not a million calls here
                self.metrics.envelope(*key, count=delta)
                self._outcomes_seen[key] = total
        for seconds in stats.latencies_s:
            self.metrics.relay_seconds.observe(seconds)
        self.metrics.mailbox_envelopes.set(stats.mailbox_envelopes)
        for reason, total in list(self.core.refused.items()):  # relay frames refused by authority or budget
            if (delta := total - self._refused_seen.get(reason, 0)) > 0:
                self.metrics.packet_refused(Layer.PEER, reason, delta)
            self._refused_seen[reason] = total
