"""Rule 13 of node/protocol/relay/core.py: an envelope between two clients of one node is settled in the call that
accepted it, without the loopback path, and with exactly the outcome the loopback path gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.protocol.relay.core import RelayCore
from node.protocol.wire.client import Envelope, Kind, Status
from node.testing.relaysim import RelaySim, sim_client
from tests.relay.simcheck import SETTLE_S, SIM_CONFIG

CLIENTS = [sim_client(b"local-%d" % i) for i in range(3)]


@contextmanager
def loopback_only() -> Iterator[None]:
    """The relay as it was before rule 13: every envelope takes the loopback path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RelayCore, "_local_only", lambda self, to, now: False)
        yield


def ice(to: bytes, ref: int) -> Envelope:
    return Envelope(kind=Kind.CALL_ICE, to=to, call=b"call-1", body=b"body-%d" % ref, ref=ref)


def same_node_pair(sim: RelaySim) -> tuple[int, int, RelayCore]:
    node = sim.alive()[0]
    a, b = sim.connect(node, CLIENTS[0]), sim.connect(node, CLIENTS[1])
    sim.run_for(1.0)  # leases settle
    sim.send(a, ice(CLIENTS[1], 1))  # the first one looks the callee up and warms the cache
    sim.run_for(SIM_CONFIG.lookup_cache_s / 10)
    return a, b, sim.nodes[node].core


def test_a_same_node_envelope_is_delivered_and_receipted_at_once_with_nothing_left_to_remember() -> None:
    sim = RelaySim(seed=5, config=SIM_CONFIG, nodes=1)
    a, b, core = same_node_pair(sim)
    seen_before = len(core.home._seen)
    sim.send(a, ice(CLIENTS[1], 2))
    # within the same instant, no time run
    assert [d.body for d in sim.delivered[b]] == [b"body-1", b"body-2"]
    assert [(r.ref, r.status) for r in sim.receipts[a]] == [(1, Status.DELIVERED), (2, Status.DELIVERED)]
    # the loopback path leaves a pending heap entry behind and remembers the eid at the home: rule 13 neither
    assert len(core.home._seen) == seen_before
    assert not core._pending and core._pending_heap.next_deadline() == float("inf")


def test_without_rule_13_the_same_envelope_leaves_its_eid_remembered() -> None:
    """The control for the test above: it would pass on the loopback path if its last assertions were wrong."""
    with loopback_only():
        sim = RelaySim(seed=5, config=SIM_CONFIG, nodes=1)
        a, b, core = same_node_pair(sim)
        seen_before = len(core.home._seen)
        sim.send(a, ice(CLIENTS[1], 2))
        assert [d.body for d in sim.delivered[b]] == [b"body-1", b"body-2"]
        assert [(r.ref, r.status) for r in sim.receipts[a]][-1] == (2, Status.DELIVERED)
        assert len(core.home._seen) == seen_before + 1


def test_an_envelope_to_a_recipient_with_a_device_on_another_node_still_reaches_both() -> None:
    sim = RelaySim(seed=6, config=SIM_CONFIG, nodes=2)
    n1, n2 = sim.alive()
    a, b1, b2 = sim.connect(n1, CLIENTS[0]), sim.connect(n1, CLIENTS[1]), sim.connect(n2, CLIENTS[1])
    sim.run_for(1.0)
    for ref in (1, 2):
        sim.send(a, ice(CLIENTS[1], ref))
        sim.run_for(1.0)
    assert [d.body for d in sim.delivered[b1]] == [b"body-1", b"body-2"]
    assert [d.body for d in sim.delivered[b2]] == [b"body-1", b"body-2"]
    assert [r.status for r in sim.receipts[a]] == [Status.DELIVERED, Status.DELIVERED]


Op = tuple[str, int, int]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, 1), st.integers(0, 2)),
        st.tuples(st.just("disconnect"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("send"), st.integers(0, 9), st.integers(0, 2)),
        st.tuples(st.just("wait"), st.sampled_from([0, 1, 100, 2000]), st.just(0)),
    ),
    max_size=30,
)


def play(seed: int, nodes: int, ops: list[Op]) -> tuple[object, ...]:
    """What every client saw, and the nodes' outcome counts, after `ops` and a settling time."""
    sim = RelaySim(seed=seed, config=SIM_CONFIG, nodes=nodes, steps_max=200_000)
    ref = 0
    for op, x, y in ops:
        online = sorted(c for c, conn in sim.conns.items() if conn.online)
        if op == "connect":
            alive = sim.alive()
            sim.connect(alive[x % len(alive)], CLIENTS[y])
        elif op == "disconnect" and online:
            sim.disconnect(online[x % len(online)])
        elif op == "send" and online:
            ref += 1
            sim.send(online[x % len(online)], ice(CLIENTS[y], ref))
        elif op == "wait":
            sim.run_for(x / 1000)
    sim.run_for(SETTLE_S)
    outcomes = [sim.nodes[n].core.stats().outcomes for n in sorted(sim.nodes)]
    return dict(sim.delivered), dict(sim.receipts), outcomes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), nodes=st.integers(1, 2), ops=OPS)
def test_rule_13_gives_every_client_exactly_what_the_loopback_path_gives(seed: int, nodes: int, ops: list[Op]) -> None:
    with_rule = play(seed, nodes, ops)
    with loopback_only():
        without = play(seed, nodes, ops)
    assert with_rule == without
