"""A deterministic in-memory cluster of RelayCores: the relay's simulator (not a mock).

Every node is a real `RelayCore`; every peer message goes through the real wire codec (`encode_peer` /
`decode_peer`). The simulator owns virtual time: its loop jumps to the earliest of its own events (message
arrivals, failure notices) and the cores' `next_deadline()`, so a run is a pure function of the seed and the calls.

Network model
- Peer links are reliable and in order while both ends live (a fixed `link_delay_s` per hop keeps FIFO order).
- A crash loses everything in flight to and from the node. Every live node learns of it twice, like in production:
  `peer_unreachable` after `unreachable_s` (the link drops) and `members_changed` after `detect_s` (SWIM).
  A send to a dead node is lost and answered by `peer_unreachable` after `unreachable_s`.
- `cut(a, b, seconds)` drops one link for a while (both ends get `peer_unreachable`; membership is unchanged).
- A join is known to every live node at once (`members_changed`); a crashed node never comes back (a restart is a
  new node with a new id).
- Clients: `connect` puts a client id on a node; a crash of its node takes its connections down with it. Client
  ids come from `sim_client(label)`, which keeps the key, so `connect` signs a real home claim (the hello's
  signature over the node's time-stamped nonce, docs/protocol.md "Relay authority"). Wall time is WALL0_S + now.
- `inject(src, dst, frame)` delivers a hand-written relay frame (a wire map) as if `src` sent it: a hostile member.
  `watch(node)` records every frame sent to `node` in `frames_to[node]`: what that member learns.

Observations are kept per connection: `delivered[conn]` (Deliver messages) and `receipts[conn]` (Receipt messages).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from node.protocol.errors import RemoteProtocolError
from node.protocol.identity import Identity, client_auth_message
from node.protocol.relay.claims import HomeClaim, challenge_nonce
from node.protocol.relay.core import CloseClient, RelayCore, ToClient, ToPeer
from node.protocol.settings import RelaySection
from node.protocol.wire.client import Deliver, Envelope, Receipt
from node.protocol.wire.peer import PeerMessage, decode_peer, encode_peer, peer_from_map

WALL0_S = 1.8e9  # the simulated unix time at sim time 0
_KEYS: dict[bytes, Identity] = {}


def sim_client(label: bytes) -> bytes:
    """A client id with a real key (derived from `label`), remembered so the simulator can sign its claims."""
    key = Identity.from_seed(hashlib.blake2b(label, digest_size=32, person=b"homing-simcli").digest())
    _KEYS[key.id] = key
    return key.id


def client_claim(client: bytes, node: bytes, unix_s: float, random_bytes: bytes = bytes(24)) -> HomeClaim:
    """The claim a `sim_client` signs when it authenticates to `node` at `unix_s`."""
    nonce = challenge_nonce(unix_s, random_bytes)
    return HomeClaim(client=client, home=node, nonce=nonce, sig=_KEYS[client].sign(client_auth_message(node, nonce)))


@attrs.define(kw_only=True, slots=True)
class SimNode:
    id: bytes
    core: RelayCore
    alive: bool = True
    left: bool = False  # left gracefully: what it sent before leaving still arrives


@attrs.define(kw_only=True, slots=True)
class SimConn:
    conn_id: int
    client: bytes
    node: bytes
    online: bool = True
    closed_by_node: bool = False


class StepBudgetExceeded(RuntimeError):
    """The simulation did not settle within its step budget (a livelock, or a budget too small)."""


class RelaySim:
    def __init__(
        self,
        *,
        seed: int,
        config: RelaySection,
        nodes: int = 3,
        link_delay_s: float = 0.005,
        unreachable_s: float = 0.05,
        detect_s: float = 1.0,
        steps_max: int = 1_000_000,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config
        self.now = 0.0
        self.link_delay_s = link_delay_s
        self.unreachable_s = unreachable_s
        self.detect_s = detect_s
        self.steps_max = steps_max
        self.nodes: dict[bytes, SimNode] = {}
        self.conns: dict[int, SimConn] = {}
        self.delivered: dict[int, list[Deliver]] = {}
        self.receipts: dict[int, list[Receipt]] = {}
        self.peer_frames = 0
        self.frames_to: dict[bytes, list[PeerMessage]] = {}
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._next_conn = 1
        self._unreachable_due: set[tuple[bytes, bytes]] = set()
        self._cuts: dict[frozenset[bytes], float] = {}  # link -> time it heals
        for _ in range(nodes):
            self._new_node()
        self._announce_members()

    # ------------------------------------------------------------------ topology
    def alive(self) -> list[bytes]:
        return sorted(n for n, sn in self.nodes.items() if sn.alive)

    def serving(self) -> list[bytes]:
        """The live nodes that take clients: not in a graceful stop."""
        return [n for n in self.alive() if not self.nodes[n].core.owner.leaving]

    def _new_node(self) -> bytes:
        key = Identity.from_seed(self.rng.randbytes(32))
        node_id = key.id
        core = RelayCore(
            node_id=node_id,
            sign=key.sign,
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
            wall_offset_s=WALL0_S,
        )
        self.nodes[node_id] = SimNode(id=node_id, core=core)
        return node_id

    def _announce_members(self) -> None:
        live = self.alive()
        for n in live:
            self.nodes[n].core.members_changed(live, self.now)
            self._flush(n)

    def join(self) -> bytes:
        node_id = self._new_node()
        self._announce_members()
        return node_id

    def crash(self, node: bytes) -> None:
        sn = self.nodes[node]
        if not sn.alive:
            return
        sn.alive = False
        for c in self.conns.values():
            if c.node == node:
                c.online = False
        for other in self.alive():
            self._at(self.unreachable_s, functools.partial(self._notify_unreachable, other, node))
        self._at(self.detect_s, self._announce_members)

    def begin_leave(self, node: bytes) -> None:
        """A graceful stop's first step (node/app/service.py `_leave`): the node takes its clients down (goaway)
        while the others still count it a member."""
        sn = self.nodes[node]
        sn.core.begin_leave()
        for c in self.conns.values():
            if c.node == node and c.online:
                c.online = False
                sn.core.client_offline(c.conn_id, self.now)
        self._flush(node)

    def hand_off(self, node: bytes) -> None:
        """The second step: the node hands its leases and mailbox to the next owners, still a member."""
        self.begin_leave(node)
        self.nodes[node].core.handoff_all(self.now)
        self._flush(node)

    def stop(self, node: bytes, *, hand_off_after_s: float = 2.0, leave_after_s: float = 3.5) -> None:
        """A graceful stop on the real node's timeline (node/app/service.py `_leave`): goaway now, the hand-off once
        its clients are gone (at most 2 s), the leave after the hand-off's frames are out (at most 1.5 s more)."""
        self.begin_leave(node)

        def step(action: Callable[[bytes], None]) -> None:
            if self.nodes[node].alive:  # not crashed or gone meanwhile
                action(node)

        self._at(hand_off_after_s, functools.partial(step, self.hand_off))
        self._at(leave_after_s, functools.partial(step, self.leave))

    def leave(self, node: bytes) -> None:
        """Graceful leave: take the clients down, hand everything off (unless `hand_off` already did), then tell
        everyone at once."""
        sn = self.nodes[node]
        if not sn.core.owner.handed_off:
            self.hand_off(node)
        sn.alive, sn.left = False, True
        self._at(self.link_delay_s * 2, self._announce_members)

    def cut(self, a: bytes, b: bytes, seconds: float) -> None:
        """Drop the peer link between two live nodes for `seconds`: in-flight frames are lost, both ends get
        `peer_unreachable`, and sends during the cut fail the same way. SWIM still sees both (no member change)."""
        self._cuts[frozenset((a, b))] = self.now + seconds
        for x, y in ((a, b), (b, a)):
            self._at(self.unreachable_s, functools.partial(self._notify_unreachable, x, y))

    def _is_cut(self, a: bytes, b: bytes) -> bool:
        return self._cuts.get(frozenset((a, b)), -1.0) > self.now

    # ------------------------------------------------------------------ clients
    def claim(self, node: bytes, client: bytes) -> HomeClaim:
        """What `client` signs when it connects to `node` now."""
        return client_claim(client, node, WALL0_S + self.now, self.rng.randbytes(24))

    def connect(self, node: bytes, client: bytes, address: str = "192.0.2.1") -> int:
        conn_id = self._next_conn
        self._next_conn += 1
        serving = node in self.serving()  # a node that is stopping refuses new clients
        self.conns[conn_id] = SimConn(conn_id=conn_id, client=client, node=node, online=serving)
        self.delivered[conn_id] = []
        self.receipts[conn_id] = []
        if serving:
            claim = self.claim(node, client)
            self.nodes[node].core.client_online(conn_id, client, self.now, claim=claim, address_key=address)
            self._flush(node)
        return conn_id

    def disconnect(self, conn_id: int) -> None:
        c = self.conns[conn_id]
        if c.online:
            c.online = False
            self.nodes[c.node].core.client_offline(conn_id, self.now)
            self._flush(c.node)

    def send(self, conn_id: int, env: Envelope) -> None:
        c = self.conns[conn_id]
        if c.online:
            self.nodes[c.node].core.client_envelope(conn_id, env, self.now)
            self._flush(c.node)

    # ------------------------------------------------------------------ the loop
    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, t: float) -> None:
        for _ in range(self.steps_max):
            when = self._next_time()
            if when > t:
                self.now = t
                return
            self.now = when
            self._step()
        raise StepBudgetExceeded(f"seed={self.seed}: no quiescence within {self.steps_max} steps at t={self.now}")

    def _next_time(self) -> float:
        ev = self._events[0][0] if self._events else float("inf")
        return min([ev] + [sn.core.next_deadline() for sn in self.nodes.values() if sn.alive])

    def _step(self) -> None:
        while self._events and self._events[0][0] <= self.now:
            _, _, action = heapq.heappop(self._events)
            action()
        for n in self.alive():
            core = self.nodes[n].core
            if core.next_deadline() <= self.now:
                core.tick(self.now)
                self._flush(n)

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, action))

    def _flush(self, node: bytes) -> None:
        for cmd in self.nodes[node].core.drain():
            if isinstance(cmd, ToClient):
                c = self.conns.get(cmd.conn_id)
                if c is None or not c.online or c.node != node:
                    continue
                if isinstance(cmd.msg, Deliver):
                    self.delivered[cmd.conn_id].append(cmd.msg)
                elif isinstance(cmd.msg, Receipt):
                    self.receipts[cmd.conn_id].append(cmd.msg)
            elif isinstance(cmd, ToPeer):
                self._transmit(node, cmd.node, cmd.msg)
            elif isinstance(cmd, CloseClient):
                c = self.conns.get(cmd.conn_id)
                if c is not None and c.online and c.node == node:
                    c.online, c.closed_by_node = False, True
                    self._at(0.0, functools.partial(self._closed, cmd.conn_id))

    def _closed(self, conn_id: int) -> None:
        c = self.conns[conn_id]
        if self.nodes[c.node].alive:
            self.nodes[c.node].core.client_offline(conn_id, self.now)
            self._flush(c.node)

    def watch(self, node: bytes) -> list[PeerMessage]:
        """Record every frame sent to `node` from now on; returns the (live) list."""
        return self.frames_to.setdefault(node, [])

    def inject(self, src: bytes, dst: bytes, frame: dict[str, Any]) -> bool:
        """Deliver a hand-written relay frame from `src` to `dst` after one link delay. False when the wire
        decoder refuses it (then nothing is delivered)."""
        try:
            msg = peer_from_map(frame)
        except RemoteProtocolError:
            return False
        self._at(self.link_delay_s, lambda: self._deliver(src, dst, msg))
        return True

    def _deliver(self, src: bytes, dst: bytes, msg: PeerMessage) -> None:
        if self.nodes[dst].alive:
            self.nodes[dst].core.peer_message(src, msg, self.now)
            self._flush(dst)

    def _transmit(self, src: bytes, dst: bytes, msg: PeerMessage) -> None:
        frame = encode_peer(msg)
        self.peer_frames += 1
        if dst in self.frames_to:
            self.frames_to[dst].append(msg)
        target = self.nodes.get(dst)
        if target is None or not target.alive or self._is_cut(src, dst):
            if (src, dst) not in self._unreachable_due:
                self._unreachable_due.add((src, dst))
                self._at(self.unreachable_s, lambda: self._notify_unreachable(src, dst))
            return
        self._at(self.link_delay_s, lambda: self._arrive(src, dst, frame))

    def _arrive(self, src: bytes, dst: bytes, frame: bytes) -> None:
        if not ((self.nodes[src].alive or self.nodes[src].left) and self.nodes[dst].alive) or self._is_cut(src, dst):
            return  # a crash loses what was in flight
        self.nodes[dst].core.peer_message(src, decode_peer(frame), self.now)
        self._flush(dst)

    def _notify_unreachable(self, node: bytes, dead: bytes) -> None:
        self._unreachable_due.discard((node, dead))
        if self.nodes[node].alive:
            self.nodes[node].core.peer_unreachable(dead, self.now)
            self._flush(node)
