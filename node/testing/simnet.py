"""A seeded in-memory packet network with its own event loop, for driving SWIM cores in virtual time.

Rules:
- One `random.Random(seed)` decides every fault, delay and drop; each core gets its own seeded generator. The
  loop pops events in (time, sequence) order, so a seed reproduces a run exactly. No trio, no wall clock.
- Time jumps from event to event: a node's next tick is at its core's `next_deadline()`, a packet arrives after
  its link delay. Every run is bounded by `max_time_s` and `max_events` (SimBudgetExceeded names the seed).
- Datagrams go through the real codec (node/protocol/wire/swim.py) unless `codec=False` (for speed at large N).
  Push-pull is an in-memory exchange (through the push-pull codec when `push_pull_codec`, by default `codec`, is
  on), one link delay each way. A 10,000-member state through the codec is ~20 ms each way, per node.
- Faults: loss (global, per link), delay distribution, duplication, partitions, crash (node stops for good),
  pause (node neither processes nor sends for a while, like SIGSTOP; datagrams queue in a bounded socket
  buffer), slow (a CPU-starved node: every event it handles is handled late by up to `lag_s`).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from node.protocol.swim.messages import (
    Ack,
    Address,
    MemberChanged,
    ProbeResult,
    PushPull,
    Refused,
    Send,
    StreamPing,
    SwimMessage,
)
from node.protocol.swim.protocol import Swim
from node.protocol.wire.swim import SEAL_OVERHEAD, decode_datagram, decode_push_pull, encode_datagram, encode_push_pull

_TICK, _PACKET, _PUSH, _PULL, _RESUME, _CALL = range(6)
# what a paused node's socket buffers before the kernel drops datagrams: the node's 2 MiB SWIM receive buffer
# (node/net/listen.py) held 1,820 datagrams of 768 to 1,400 bytes on Linux 6.18 (each takes ~2.3 KiB of it)
SOCKET_BUFFER_DATAGRAMS = 1_820

DelayFn = Callable[[random.Random], float]
ChangeListener = Callable[[float, bytes, MemberChanged], None]


def lan_delay(rng: random.Random) -> float:
    """One-way delay of a quiet LAN or loopback: 0.5 ms plus an exponential tail with a 1 ms mean."""
    return 0.0005 + rng.expovariate(1000.0)


class SimBudgetExceeded(RuntimeError):
    pass


@attrs.define(slots=True, eq=False)
class SimNode:
    index: int
    swim: Swim
    id: bytes
    addr: Address
    crashed: bool = False
    paused_until: float = 0.0
    backlog: list[tuple[bytes, Address, Any]] = attrs.Factory(list)
    lag_s: float = 0.0
    tick_at: float = float("inf")
    bytes_sent: int = 0
    datagrams_sent: int = 0


class SimNet:
    def __init__(
        self,
        *,
        seed: int,
        max_time_s: float = 3600.0,
        max_events: int = 50_000_000,
        codec: bool = True,
        push_pull_codec: bool | None = None,
        delay: DelayFn = lan_delay,
        loss: float = 0.0,
        duplicate: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.max_time_s = max_time_s
        self.max_events = max_events
        self.events = 0
        self.codec = codec
        self.push_pull_codec = codec if push_pull_codec is None else push_pull_codec
        self.delay = delay
        self.loss = loss
        self.duplicate = duplicate
        self.link_loss: dict[tuple[bytes, bytes], float] = {}
        self.nodes: dict[bytes, SimNode] = {}
        self._by_index: list[SimNode] = []
        self._by_addr: dict[Address, SimNode] = {}
        self._group: dict[bytes, int] = {}
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self.on_change: list[ChangeListener] = []
        self.on_probe: list[Callable[[float, bytes, ProbeResult], None]] = []
        self.refused: dict[str, int] = {}  # records the cores refused, by Refusal value
        self.repro = f"HOMING_SIM_SEED={seed}"

    # ---- building ----

    def add(self, swim: Swim, node_id: bytes, addr: Address) -> SimNode:
        node = SimNode(index=len(self._by_index), swim=swim, id=node_id, addr=addr)
        self.nodes[node_id] = node
        self._by_index.append(node)
        self._by_addr[addr] = node
        self._after(node)
        return node

    def at(self, t: float, fn: Callable[[], None]) -> None:
        """Run `fn` (a test action: crash, leave, partition...) at simulated time t."""
        self._push(t, _CALL, fn)

    def inject(self, src_id: bytes, src_addr: Address, dst_id: bytes, msg: SwimMessage) -> None:
        """A datagram from outside the simulated cores (a hostile member with its own key), after one delay."""
        dst = self.nodes[dst_id]
        payload: Any = encode_datagram(msg) if self.codec else msg
        self._push(self.now + self.delay(self.rng), _PACKET, (dst.index, src_id, src_addr, payload, False))

    def call(self, node: SimNode, fn: Callable[[Swim], None]) -> None:
        """Call into one core now (e.g. add_seed, leave) and carry out what it asks."""
        fn(node.swim)
        self._after(node)

    # ---- faults ----

    def partition(self, *groups: set[bytes]) -> None:
        """Split the network: members of different groups cannot reach each other (unlisted nodes: one more group)."""
        self._group = {nid: i + 1 for i, g in enumerate(groups) for nid in g}

    def heal(self) -> None:
        self._group = {}

    def crash(self, node_id: bytes) -> None:
        self.nodes[node_id].crashed = True

    def pause(self, node_id: bytes, duration_s: float) -> None:
        node = self.nodes[node_id]
        node.paused_until = max(node.paused_until, self.now + duration_s)
        self._push(node.paused_until, _RESUME, node.index)

    def slow(self, node_id: bytes, lag_s: float) -> None:
        self.nodes[node_id].lag_s = lag_s

    def reachable(self, a: bytes, b: bytes) -> bool:
        return self._group.get(a, 0) == self._group.get(b, 0)

    # ---- running ----

    def run_until(self, t_end: float) -> None:
        if t_end > self.max_time_s:
            raise SimBudgetExceeded(f"run to t={t_end} exceeds max_time_s={self.max_time_s} ({self.repro})")
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            t, _seq, kind, payload = heapq.heappop(heap)
            self.now = t
            self.events += 1
            if self.events > self.max_events:
                raise SimBudgetExceeded(f"more than {self.max_events} events by t={t:.3f} ({self.repro})")
            self._dispatch(kind, payload)
        self.now = t_end

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def _dispatch(self, kind: int, payload: Any) -> None:
        if kind == _TICK:
            index, when, late = payload
            node = self._by_index[index]
            if node.crashed or node.tick_at != when or self.now < node.paused_until:
                return
            if node.lag_s and not late:
                self._push(self.now + self.rng.uniform(0, node.lag_s), _TICK, (index, when, True))
                return
            node.tick_at = float("inf")
            node.swim.tick(self.now)
            self._after(node)
        elif kind == _PACKET:
            self._deliver(*payload)
        elif kind == _PUSH:
            self._push_arrives(*payload)
        elif kind == _PULL:
            self._pull_arrives(*payload)
        elif kind == _RESUME:
            self._resume(self._by_index[payload])
        else:
            payload()

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    def _after(self, node: SimNode) -> None:
        """Carry out the commands a core produced, then (re)schedule its next tick."""
        for cmd in node.swim.drain():
            if isinstance(cmd, Send):
                self._send(node, cmd)
            elif isinstance(cmd, PushPull):
                self._start_push_pull(node, cmd)
            elif isinstance(cmd, MemberChanged):
                for listener in self.on_change:
                    listener(self.now, node.id, cmd)
            elif isinstance(cmd, ProbeResult):
                for probe_listener in self.on_probe:
                    probe_listener(self.now, node.id, cmd)
            elif isinstance(cmd, StreamPing):
                self._start_stream_ping(node, cmd)
            elif isinstance(cmd, Refused):
                self.refused[cmd.refusal.value] = self.refused.get(cmd.refusal.value, 0) + 1
        deadline = node.swim.next_deadline()
        if deadline != node.tick_at:
            node.tick_at = deadline
            self._push(max(deadline, self.now), _TICK, (node.index, deadline, False))

    def _lost(self, src: bytes, dst: bytes) -> bool:
        p = self.link_loss.get((src, dst), self.loss)
        return p > 0 and self.rng.random() < p

    def _send(self, node: SimNode, cmd: Send) -> None:
        payload: Any = cmd.msg
        if self.codec:
            payload = encode_datagram(cmd.msg)
            node.bytes_sent += len(payload) + SEAL_OVERHEAD
        node.datagrams_sent += 1
        dst = self._by_addr.get(cmd.to_addr)
        if dst is None or dst.id != cmd.to_id or not self.reachable(node.id, dst.id):
            return
        copies = 2 if self.duplicate and self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            if not self._lost(node.id, dst.id):
                self._push(self.now + self.delay(self.rng), _PACKET, (dst.index, node.id, node.addr, payload, False))

    def _deliver(self, index: int, src_id: bytes, src_addr: Address, payload: Any, late: bool) -> None:
        node = self._by_index[index]
        if node.crashed:
            return
        if self.now < node.paused_until:
            if len(node.backlog) < SOCKET_BUFFER_DATAGRAMS:
                node.backlog.append((src_id, src_addr, payload))
            return
        if node.lag_s and not late:
            when = self.now + self.rng.uniform(0, node.lag_s)
            self._push(when, _PACKET, (index, src_id, src_addr, payload, True))
            return
        msg: SwimMessage = decode_datagram(payload) if self.codec else payload
        node.swim.receive(src_id, src_addr, msg, self.now)
        self._after(node)

    def _resume(self, node: SimNode) -> None:
        if node.crashed or self.now < node.paused_until:
            return
        backlog, node.backlog = node.backlog, []
        for src_id, src_addr, payload in backlog:
            msg: SwimMessage = decode_datagram(payload) if self.codec else payload
            node.swim.receive(src_id, src_addr, msg, self.now)
        node.swim.tick(self.now)
        node.tick_at = float("inf")
        self._after(node)

    # ---- push-pull over the (simulated) peer link ----

    def _state(self, node: SimNode) -> Any:
        state = node.swim.push_pull_state()
        return encode_push_pull(state) if self.push_pull_codec else state

    def _usable(self, node: SimNode) -> bool:
        return not node.crashed and self.now >= node.paused_until

    def _start_push_pull(self, node: SimNode, cmd: PushPull) -> None:
        dst = self._by_addr.get(cmd.to_addr)
        if dst is None or dst.id != cmd.to_id or not self.reachable(node.id, dst.id):
            return  # the TCP connect fails: nothing happens (the driver logs it)
        self._push(self.now + self.delay(self.rng), _PUSH, (node.index, dst.index, self._state(node)))

    def _start_stream_ping(self, node: SimNode, cmd: StreamPing) -> None:
        """A TCP probe: one connect and one answer. A lost segment costs TCP a retransmission timeout far longer
        than a probe's deadline, so a loss in either direction is modelled as no answer."""
        dst = self._by_addr.get(cmd.to_addr)
        if dst is None or dst.id != cmd.to_id or not self.reachable(node.id, dst.id):
            return
        if self._lost(node.id, dst.id) or self._lost(dst.id, node.id):
            return
        there = self.now + self.delay(self.rng)
        back = there + self.delay(self.rng)

        def answer() -> None:
            answered = not dst.crashed and dst.paused_until <= there
            if answered and self._usable(node) and self.reachable(dst.id, node.id):
                node.swim.receive(dst.id, dst.addr, Ack(seq=cmd.seq), self.now)
                self._after(node)

        self._push(back, _CALL, answer)

    def _push_arrives(self, src_index: int, dst_index: int, state: Any) -> None:
        src, dst = self._by_index[src_index], self._by_index[dst_index]
        if not self._usable(dst) or not self.reachable(src.id, dst.id):
            return
        reply = self._state(dst)
        dst.swim.merge_push_pull(decode_push_pull(state) if self.push_pull_codec else state, self.now, src.id)
        self._after(dst)
        self._push(self.now + self.delay(self.rng), _PULL, (src_index, dst_index, reply))

    def _pull_arrives(self, src_index: int, dst_index: int, state: Any) -> None:
        src = self._by_index[src_index]
        if not self._usable(src):
            return
        remote = decode_push_pull(state) if self.push_pull_codec else state
        src.swim.merge_push_pull(remote, self.now, self._by_index[dst_index].id)
        self._after(src)
