"""Hypothesis drives a simulated cluster through random clients, calls, crashes, leaves and joins.

A graceful leave is also taken step by step, with time between the steps, as a stopping node takes it
(node/app/service.py `_leave`): its clients go (goaway) while it is still a member, then it hands off, still a
member, then the others hear it leave (node/protocol/relay/owner.py: a leaving owner declines new leases, and after
its hand-off takes no mail).

Invariant: every envelope gets at most one terminal receipt at every moment and exactly one once things settle
(for a sender still connected), and nothing is delivered under two different eids.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from node.protocol.wire.client import Kind
from node.testing.relaysim import RelaySim, sim_client
from tests.relay.simcheck import SETTLE_S, SIM_CONFIG, Tracker

CLIENTS = [sim_client(bytes([i + 1])) for i in range(4)]
CALLS = [b"call-1", b"call-2"]


class RelayCluster(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1), nodes=st.integers(1, 6))
    def start(self, seed: int, nodes: int) -> None:
        self.sim = RelaySim(seed=seed, config=SIM_CONFIG, nodes=nodes, steps_max=200_000)
        self.track = Tracker(self.sim)
        self._call = 0

    def _online(self) -> list[int]:
        return sorted(c for c, conn in self.sim.conns.items() if conn.online)

    @precondition(lambda self: self.sim.serving())
    @rule(client=st.sampled_from(CLIENTS), pick=st.integers(0, 99))
    def connect(self, client: bytes, pick: int) -> None:
        serving = self.sim.serving()
        self.sim.connect(serving[pick % len(serving)], client)

    @precondition(lambda self: self._online())
    @rule(pick=st.integers(0, 99))
    def disconnect(self, pick: int) -> None:
        online = self._online()
        self.sim.disconnect(online[pick % len(online)])

    @precondition(lambda self: self._online())
    @rule(
        pick=st.integers(0, 99),
        to=st.sampled_from(CLIENTS),
        kind=st.sampled_from(list(Kind)),
        call=st.sampled_from(CALLS),
        burst=st.integers(1, 3),
    )
    def send(self, pick: int, to: bytes, kind: Kind, call: bytes, burst: int) -> None:
        online = self._online()
        conn = online[pick % len(online)]
        for _ in range(burst):
            self.track.send(conn, to, kind, call)

    @precondition(lambda self: self._online())
    @rule(pick=st.integers(0, 99), to=st.sampled_from(CLIENTS), ices=st.integers(0, 3), pause=st.booleans())
    def call_then_hangup(self, pick: int, to: bytes, ices: int, pause: bool) -> None:
        """A call that is given up: offer, some ice, hangup (cancels a still-queued offer)."""
        online = self._online()
        conn = online[pick % len(online)]
        self._call += 1
        call = b"hangup-%d" % self._call
        self.track.send(conn, to, Kind.CALL_OFFER, call)
        for _ in range(ices):
            self.track.send(conn, to, Kind.CALL_ICE, call)
        if pause:
            self.sim.run_for(0.3)
        self.track.send(conn, to, Kind.CALL_HANGUP, call)

    @precondition(lambda self: len(self.sim.alive()) > 1)
    @rule(pick=st.integers(0, 99))
    def crash(self, pick: int) -> None:
        alive = self.sim.alive()
        self.sim.crash(alive[pick % len(alive)])

    @precondition(lambda self: len(self.sim.alive()) > 1)
    @rule(pick=st.integers(0, 99))
    def leave(self, pick: int) -> None:
        alive = self.sim.alive()
        self.sim.leave(alive[pick % len(alive)])

    @precondition(lambda self: len(self.sim.serving()) > 1)
    @rule(pick=st.integers(0, 99))
    def begin_leave(self, pick: int) -> None:
        serving = self.sim.serving()
        self.sim.begin_leave(serving[pick % len(serving)])

    @precondition(lambda self: self._leaving(handed_off=False))
    @rule(pick=st.integers(0, 99))
    def hand_off(self, pick: int) -> None:
        leaving = self._leaving(handed_off=False)
        self.sim.hand_off(leaving[pick % len(leaving)])

    def _leaving(self, *, handed_off: bool) -> list[bytes]:
        return [n for n in self.sim.alive() if n not in self.sim.serving()
                and self.sim.nodes[n].core.owner.handed_off is handed_off]  # fmt: skip

    @precondition(lambda self: len(self.sim.alive()) < 8)
    @rule()
    def join(self) -> None:
        self.sim.join()

    @rule(dt=st.sampled_from([0.001, 0.02, 0.3, 1.5, 4.0]))
    def advance(self, dt: float) -> None:
        self.sim.run_for(dt)

    @invariant()
    def safe(self) -> None:
        if hasattr(self, "track"):
            self.track.check_safety()

    def teardown(self) -> None:
        if hasattr(self, "track"):
            self.sim.run_for(SETTLE_S + 1)
            self.track.check_safety()
            self.track.check_liveness()
            for s in self.track.sent:
                event(f"outcome {self.track.terminal(s)}")


_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "derandomize": False}
TestRelayCluster = RelayCluster.TestCase
TestRelayCluster.settings = settings(max_examples=40, stateful_step_count=25, **_common)  # type: ignore[arg-type]


@pytest.mark.soak  # about a minute: outside the default suite (docs/testing.md)
def test_relay_cluster_long() -> None:
    """The same machine with many more and longer runs (CI's slow job)."""
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(RelayCluster, settings=settings(max_examples=500, stateful_step_count=60, **_common))  # type: ignore[arg-type]
