"""Deterministic failure scenarios on the simulated cluster, one per row of docs/protocol.md's failure table."""

from __future__ import annotations

import attrs
import pytest

from node.protocol.relay.rendezvous import owners
from node.protocol.wire.client import Kind, Reason, Status
from node.testing.relaysim import RelaySim, sim_client
from tests.relay.simcheck import SETTLE_S, SIM_CONFIG, Tracker

A = sim_client(b"A")  # caller
B = sim_client(b"B")  # callee
CALL = b"call-1"


def cluster(nodes: int = 6, seed: int = 7, **cfg: float) -> tuple[RelaySim, Tracker, dict[str, bytes]]:
    """A cluster and named roles: S (caller's node), H (callee's home), O1..O3 (callee's owners); S and H own nothing
    of B's, so every hop crosses the federation."""
    sim = RelaySim(seed=seed, config=attrs.evolve(SIM_CONFIG, **cfg), nodes=nodes)
    own = owners(B, sim.alive(), SIM_CONFIG.replicas)
    rest = [n for n in sim.alive() if n not in own]
    roles = {"S": rest[0], "H": rest[-1], "O1": own[0], "O2": own[1], "O3": own[2]}
    return sim, Tracker(sim), roles


def kinds(sim: RelaySim, conn: int) -> list[Kind]:
    return [d.kind for d in sim.delivered[conn]]


def test_online_callee_on_another_node_gets_the_call_in_order() -> None:
    sim, t, r = cluster()
    ca, cb = sim.connect(r["S"], A), sim.connect(r["H"], B)
    sim.run_for(0.1)
    flow = [Kind.CALL_OFFER, *[Kind.CALL_ICE] * 5, Kind.CALL_HANGUP]
    sent = [t.send(ca, B, k, CALL) for k in flow]
    sim.run_for(1.0)
    assert kinds(sim, cb) == flow
    assert [t.statuses(s) for s in sent] == [[Status.DELIVERED]] * len(flow)
    answer = t.send(cb, A, Kind.CALL_ANSWER, CALL)
    sim.run_for(1.0)
    assert t.statuses(answer) == [Status.DELIVERED] and kinds(sim, ca) == [Kind.CALL_ANSWER]
    t.check_safety()


def test_every_device_of_the_callee_gets_it_once() -> None:
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    phone, laptop = sim.connect(r["H"], B), sim.connect(r["H"], B)
    sim.run_for(0.1)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(1.0)
    assert t.statuses(s) == [Status.DELIVERED]
    assert len(sim.delivered[phone]) == len(sim.delivered[laptop]) == 1
    assert sim.delivered[phone][0].eid == sim.delivered[laptop][0].eid


def test_offline_callee_queued_then_delivered_in_order_when_it_connects() -> None:
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    sent = [t.send(ca, B, k, CALL) for k in (Kind.CALL_OFFER, Kind.CALL_ICE, Kind.CALL_ICE)]
    sim.run_for(0.5)
    assert [t.statuses(s) for s in sent] == [[Status.QUEUED]] * 3
    assert sum(len(sim.nodes[r[o]].core.owner.mailbox) for o in ("O1", "O2", "O3")) == 9  # R replicas each
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER, Kind.CALL_ICE, Kind.CALL_ICE]  # once each although R owners pushed
    assert [t.statuses(s) for s in sent] == [[Status.QUEUED, Status.DELIVERED]] * 3
    assert sum(len(sim.nodes[r[o]].core.owner.mailbox) for o in ("O1", "O2", "O3")) == 0


def test_mailbox_ttl_expires_once_despite_replicas() -> None:
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(SIM_CONFIG.mailbox_ttl - 0.1)
    assert t.statuses(s) == [Status.QUEUED]
    sim.run_for(SETTLE_S)
    assert t.statuses(s) == [Status.QUEUED, Status.EXPIRED]
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert sim.delivered[cb] == []


def test_hangup_cancels_queued_offer_and_callee_never_sees_the_dead_call() -> None:
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    offer = t.send(ca, B, Kind.CALL_OFFER, CALL)
    ice = t.send(ca, B, Kind.CALL_ICE, CALL)
    other = t.send(ca, B, Kind.CALL_OFFER, b"call-2")
    sim.run_for(0.5)
    hangup = t.send(ca, B, Kind.CALL_HANGUP, CALL)
    sim.run_for(0.5)
    assert t.statuses(offer) == [Status.QUEUED, Status.CANCELLED]
    assert t.statuses(ice) == [Status.QUEUED, Status.CANCELLED]
    assert t.statuses(hangup) == [Status.CANCELLED]
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert [d.call for d in sim.delivered[cb]] == [b"call-2"]
    assert t.statuses(other) == [Status.QUEUED, Status.DELIVERED]


def _offer_delivered_but_one_replica_still_queued(stale: str) -> tuple[RelaySim, Tracker, dict[str, bytes], int, int]:
    """The divergent replicas of docs/protocol.md "Cancel by hangup": an offer queued at B's R owners, B comes
    online at H, whose link to the `stale` owner is down, so that owner gets no lease and keeps its copy queued
    while the others push theirs and H delivers it. S's lookup cache still says B has no home."""
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    offer = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.2)
    assert t.statuses(offer) == [Status.QUEUED]
    sim.cut(r["H"], r[stale], 5.0)
    cb = sim.connect(r["H"], B)
    return sim, t, r, ca, cb


@pytest.mark.parametrize("stale", ["O1", "O3"])  # the stale owner answers the hangup first / last
def test_hangup_after_the_offer_was_delivered_is_delivered_though_a_stale_replica_is_cancelled(stale: str) -> None:
    sim, t, r, ca, cb = _offer_delivered_but_one_replica_still_queued(stale)
    offer = t.sent[0]
    sim.run_for(0.2)
    assert kinds(sim, cb) == [Kind.CALL_OFFER] and t.statuses(offer) == [Status.QUEUED, Status.DELIVERED]
    assert len(sim.nodes[r[stale]].core.owner.mailbox) == 1  # its replica waits: no lease from H
    answer = t.send(cb, A, Kind.CALL_ANSWER, CALL)
    sim.run_for(0.1)
    assert t.statuses(answer) == [Status.DELIVERED]
    hangup = t.send(ca, B, Kind.CALL_HANGUP, CALL)  # as in tests/faults/loadgen.py: only after the answer
    sim.run_for(0.5)
    assert len(sim.nodes[r[stale]].core.owner.mailbox) == 0  # the stale owner did cancel its replica...
    assert t.statuses(hangup) == [Status.DELIVERED]  # ...but the others stored the hangup and it was delivered
    assert kinds(sim, cb) == [Kind.CALL_OFFER, Kind.CALL_HANGUP]
    assert t.statuses(offer) == [Status.QUEUED, Status.DELIVERED]
    sim.run_for(SETTLE_S)
    t.check_safety()
    assert t.statuses(hangup) == [Status.DELIVERED] and t.statuses(offer) == [Status.QUEUED, Status.DELIVERED]


def test_a_stale_replicas_cancel_receipt_does_not_cancel_a_delivered_offer_still_pending_at_its_origin() -> None:
    sim, t, r, ca, cb = _offer_delivered_but_one_replica_still_queued("O2")
    offer = t.sent[0]
    for n in ("H", "O1", "O3"):  # the receipts of the offer's delivery never reach S
        sim.cut(r["S"], r[n], 0.2)
    sim.run_for(0.3)
    assert kinds(sim, cb) == [Kind.CALL_OFFER] and t.statuses(offer) == [Status.QUEUED]
    hangup = t.send(ca, B, Kind.CALL_HANGUP, CALL)  # behind the offer, which S still holds in the mailbox path
    sim.run_for(0.5)
    assert len(sim.nodes[r["O2"]].core.owner.mailbox) == 0  # O2 cancelled its replica and said so to S
    assert t.statuses(offer) == [Status.QUEUED]  # not cancelled: S cannot tell delivered from lost any more
    assert t.statuses(hangup) == [Status.DELIVERED]
    assert kinds(sim, cb) == [Kind.CALL_OFFER, Kind.CALL_HANGUP]
    sim.run_for(SETTLE_S)
    assert t.statuses(offer) == [Status.QUEUED, Status.EXPIRED]
    t.check_safety()


def test_hangup_through_another_node_still_cancels_the_queued_offer() -> None:
    """The caller re-homed between its offer and its hangup: the hangup's node decides `cancelled` (every owner
    removed the queued offer); the offer's node never learns the hangup's outcome, so it does not say `cancelled`
    for the offer (the caller's connection there is gone anyway) and counts it expired at its give-up time."""
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    offer = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.2)
    assert t.statuses(offer) == [Status.QUEUED]
    sim.disconnect(ca)
    ca2 = sim.connect(r["O1"], A)
    hangup = t.send(ca2, B, Kind.CALL_HANGUP, CALL)
    sim.run_for(0.5)
    assert t.statuses(hangup) == [Status.CANCELLED]
    assert sum(len(sim.nodes[r[o]].core.owner.mailbox) for o in ("O1", "O2", "O3")) == 0
    cb = sim.connect(r["H"], B)
    sim.run_for(SETTLE_S)
    assert sim.delivered[cb] == []
    assert sim.nodes[r["S"]].core.stats().outcomes == {("call_offer", "expired"): 1}
    t.check_safety()


def test_mailbox_per_id_bound_rejects_as_rate_limited() -> None:
    sim, t, r = cluster(mailbox_per_id_max=2, mailbox_per_sender_per_id_max=2, mailbox_per_origin_per_id_max=2)
    ca = sim.connect(r["S"], A)
    sent = [t.send(ca, B, Kind.CALL_ICE, CALL) for _ in range(3)]
    sim.run_for(0.5)
    assert [t.terminal(s) for s in sent] == [None, None, Status.REJECTED]
    last = [x for x in sim.receipts[ca] if x.ref == sent[2].ref]
    assert last[0].reason is Reason.RATE_LIMITED


def test_home_node_dies_before_delivery_envelope_waits_for_the_callee() -> None:
    sim, t, r = cluster()
    ca, cb = sim.connect(r["S"], A), sim.connect(r["H"], B)
    sim.run_for(0.1)
    sim.crash(r["H"])
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)  # the caller's node still believes H is B's home
    sim.run_for(3.0)
    assert t.statuses(s) == [Status.QUEUED]
    assert sim.delivered[cb] == []
    cb2 = sim.connect(r["O1"], B)  # the callee's app reconnects to another node
    sim.run_for(1.0)
    assert kinds(sim, cb2) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]


def test_home_node_dies_after_delivery_before_its_answer_one_receipt_one_eid() -> None:
    sim, t, r = cluster()
    ca, cb = sim.connect(r["S"], A), sim.connect(r["H"], B)
    sim.run_for(0.1)
    t.send(ca, B, Kind.CALL_ICE, b"warm-up")  # fills S's lookup cache: the next envelope goes straight to H
    sim.run_for(0.1)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(sim.link_delay_s)  # the envelope reached H and was delivered; H's answer is on the wire
    assert kinds(sim, cb)[-1] == Kind.CALL_OFFER
    sim.crash(r["H"])  # ...and is lost
    sim.run_for(3.0)
    assert t.statuses(s) == [Status.QUEUED]  # the caller's node cannot know: it queues the same eid
    cb2 = sim.connect(r["O2"], B)
    sim.run_for(1.0)
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]
    assert sim.delivered[cb2][0].eid == sim.delivered[cb][-1].eid  # the app drops the repeat by eid
    t.check_safety()


def test_owners_die_while_holding_the_mailbox_a_replica_survives() -> None:
    sim, t, r = cluster(nodes=7)
    ca = sim.connect(r["S"], A)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    sim.crash(r["O1"])
    sim.crash(r["O2"])
    sim.run_for(2.0)  # SWIM notices; O3 hands its replica to the new owners
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]


def test_all_owners_die_the_sender_still_gets_its_one_terminal_receipt() -> None:
    sim, t, r = cluster(nodes=7)
    ca = sim.connect(r["S"], A)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    for o in ("O1", "O2", "O3"):
        sim.crash(r[o])
    sim.run_for(SETTLE_S)
    assert t.statuses(s) == [Status.QUEUED, Status.EXPIRED]  # the origin's own give-up timer


def test_senders_node_dies_the_queued_envelope_is_still_delivered() -> None:
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    sim.crash(r["S"])
    sim.run_for(2.0)
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert all(len(sim.nodes[n].core.owner.mailbox) == 0 for n in sim.alive())


def test_link_drop_between_sender_and_home_falls_back_to_the_mailbox() -> None:
    sim, t, r = cluster()
    ca, cb = sim.connect(r["S"], A), sim.connect(r["H"], B)
    sim.run_for(0.1)
    warm = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    sim.cut(r["S"], r["H"], seconds=30.0)
    sent = [t.send(ca, B, Kind.CALL_ICE, CALL) for _ in range(3)]
    sim.run_for(3.0)
    assert t.statuses(warm) == [Status.DELIVERED]
    assert [t.terminal(s) for s in sent] == [Status.DELIVERED] * 3  # via the owners, whose links are up
    assert kinds(sim, cb) == [Kind.CALL_OFFER, Kind.CALL_ICE, Kind.CALL_ICE, Kind.CALL_ICE]


def test_new_owners_join_while_envelope_is_queued() -> None:
    sim = RelaySim(seed=7, config=SIM_CONFIG, nodes=3)  # every node owns B: the joiners will take over
    t, old_owners = Tracker(sim), sim.alive()
    ca = sim.connect(old_owners[0], A)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    for _ in range(12):
        sim.join()
    new_owners = owners(B, sim.alive(), SIM_CONFIG.replicas)
    assert not set(new_owners) & set(old_owners), "the seed should move every owner"
    sim.run_for(0.5)
    assert all(len(sim.nodes[n].core.owner.mailbox) == 0 for n in old_owners)
    assert all(len(sim.nodes[n].core.owner.mailbox) == 1 for n in new_owners)
    cb = sim.connect(old_owners[1], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]


def test_graceful_leave_of_an_owner_hands_off_leases_and_mailbox() -> None:
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    for o in ("O1", "O2", "O3"):  # even all of them, one after the other
        sim.leave(r[o])
        sim.run_for(0.2)
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]


def test_an_owner_that_is_leaving_declines_new_leases_unchecked_and_the_callee_stays_callable() -> None:
    """A stopping node's clients re-home while it is still a member: their leases reach it, one each. It is about to
    go, so it declines them without a signature check; the other owners hold them (node/protocol/relay/owner.py)."""
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    sim.run_for(0.1)
    sim.begin_leave(r["O1"])
    checks = {o: sim.nodes[r[o]].core.verifier.verifications for o in ("O1", "O2", "O3")}
    cb = sim.connect(r["H"], B)
    sim.run_for(0.2)
    leaving = sim.nodes[r["O1"]].core
    assert leaving.verifier.verifications == checks["O1"] and leaving.owner.leases_declined > 0  # and renewals
    assert leaving.owner.leases.homes(B, sim.now) == ()
    for o in ("O2", "O3"):
        assert sim.nodes[r[o]].core.verifier.verifications == checks[o] + 1
        assert sim.nodes[r[o]].core.owner.leases.homes(B, sim.now) == (r["H"],)
    first = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    sim.leave(r["O1"])
    sim.run_for(1.0)
    second = t.send(ca, B, Kind.CALL_ICE, CALL)
    sim.run_for(1.0)
    assert t.statuses(first) == t.statuses(second) == [Status.DELIVERED]
    assert kinds(sim, cb) == [Kind.CALL_OFFER, Kind.CALL_ICE]
    t.check_safety()


def test_an_owner_that_is_leaving_still_takes_the_lease_of_a_client_its_mail_waits_for() -> None:
    """The lease is what makes an owner push its mail: declined, the offer would wait for the other owners, here
    cut off from the callee's home."""
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    assert t.statuses(s) == [Status.QUEUED]
    sim.begin_leave(r["O1"])
    for o in ("O2", "O3"):
        sim.cut(r["H"], r[o], 5.0)
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]


def test_every_owner_stopping_at_once_delays_a_call_to_a_re_homed_client_until_their_leaves_are_heard() -> None:
    """The corner of the leaving owners' rule: all R owners of B are stopping when B re-homes, so none takes its
    lease. The offer waits in their mailboxes (or goes to the next owners with their hand-off), and B gets it once
    a lease reaches an owner: its next renewal (mail waits there now), or the home's lease to the owners that
    follow the leaves."""
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    sim.run_for(0.1)
    for o in ("O1", "O2", "O3"):
        sim.begin_leave(r[o])
    cb = sim.connect(r["H"], B)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.3)
    for o in ("O1", "O2", "O3"):
        sim.hand_off(r[o])
    sim.run_for(0.5)
    for o in ("O1", "O2", "O3"):
        sim.leave(r[o])
    sim.run_for(2.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]
    t.check_safety()


def test_an_owner_that_has_handed_off_takes_no_mail_it_would_lose() -> None:
    """Between its hand-off and the others hearing its leave, a stopping owner is still asked to store mail. Stored,
    the entry would go with the node and the sender would have been told `queued` for nothing; it answers
    `not_owner`, and the origin puts the entry with the owners it sees next."""
    sim, t, r = cluster()
    ca = sim.connect(r["S"], A)
    sim.run_for(0.1)
    sim.hand_off(r["O1"])
    for o in ("O2", "O3"):  # only the leaving owner answers the put
        sim.cut(r["S"], r[o], 1.5)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.1)
    assert len(sim.nodes[r["O1"]].core.owner.mailbox) == 0
    sim.leave(r["O1"])
    sim.run_for(3.0)
    assert t.statuses(s) == [Status.QUEUED]
    cb = sim.connect(r["H"], B)
    sim.run_for(1.0)
    assert kinds(sim, cb) == [Kind.CALL_OFFER]
    assert t.statuses(s) == [Status.QUEUED, Status.DELIVERED]
    t.check_safety()


def test_callee_homed_node_leaves_gracefully_its_lease_is_dropped() -> None:
    sim, t, r = cluster()
    ca, cb = sim.connect(r["S"], A), sim.connect(r["H"], B)
    sim.run_for(0.1)
    sim.leave(r["H"])
    sim.run_for(0.2)
    s = t.send(ca, B, Kind.CALL_OFFER, CALL)
    sim.run_for(0.5)
    assert t.statuses(s) == [Status.QUEUED]  # straight to the mailbox: no dead home was tried
    assert sim.delivered[cb] == []
