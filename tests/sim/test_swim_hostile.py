"""One hostile, admitted member against a seeded simulated federation (#11 finding 2, docs/swim.md "Hostile members").

The hostile member holds its own key only. For a minute it sends every honest node, ten times a second, every
lie it can make about the honest members: dead, suspect and left at the largest incarnation the wire allows, alive
at that incarnation with another address and meta (signed with its own key, or with a garbage signature), an old
genuine record replayed, dead/suspect claims at each member's real current incarnation (signed by itself, the
accuser), and the same claims in another honest member's name. Nobody honest may be declared dead or left, and no
honest member's address or meta may change anywhere.
"""

from __future__ import annotations

import os

import attrs
import pytest

from node.protocol.identity import Identity
from node.protocol.ratelimit import FORGED_PER_SENDER_BURST, FORGED_PER_SENDER_PER_S
from node.protocol.swim.config import LOCAL
from node.protocol.swim.messages import Gossip, MemberInfo, MemberState, Update
from node.protocol.swim.records import sign_record
from node.protocol.wire.swim import INCARNATION_MAX
from node.testing import checkers as C
from node.testing.keys import accusation
from node.testing.simcluster import SimCluster

A, S, D, L = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
HOSTILE_ADDR = ("10.255.255.254", 7401)


def lies(c: SimCluster, hostile: Identity, victim: bytes, seen: MemberInfo) -> list[Update]:
    """Every forged update the hostile member can make about `victim` (whose genuine record it has `seen`)."""
    top = INCARNATION_MAX
    other = attrs.evolve(seen, addr=HOSTILE_ADDR, meta=b"evil", incarnation=top, state=A)
    claim = MemberInfo(id=victim, addr=("", 0), meta=b"", incarnation=top, state=D)
    first = c.swim(victim).member(victim)
    assert first is not None
    real = attrs.evolve(claim, incarnation=seen.incarnation)
    named = c.ids[(c.ids.index(victim) + 1) % len(c.ids)]  # another honest member, named as an accuser
    return [
        accusation(claim, hostile),  # dead at the top incarnation: #11's one-datagram eviction
        accusation(attrs.evolve(claim, state=S), hostile),
        Update(member=attrs.evolve(other, state=L, sig=bytes(64))),  # left, unsigned
        Update(member=sign_record(attrs.evolve(other, state=L), hostile.sign)),  # left, signed by the wrong key
        Update(member=sign_record(other, hostile.sign)),  # alive elsewhere, signed by the wrong key
        Update(member=attrs.evolve(other, incarnation=seen.incarnation + 1, sig=seen.sig)),  # a signature moved
        # claims at the member's real current incarnation: allowed to make it suspect, within the budget
        accusation(real, hostile),
        accusation(attrs.evolve(real, state=S), hostile),
        # the same, under an honest member's name: unsigned, and signed with the hostile member's own key
        Update(member=real, by=named),
        Update(member=attrs.evolve(real, state=S), by=named, sig=accusation(real, hostile).sig),
    ]


# Seed 5 declared honest members dead (13 false deaths) on the code before accusations were signed (merging.py A1-A4),
# seed 1 did not: both run here. HOMING_SIM_SEED=N runs seed N alone.
SEEDS = [int(os.environ["HOMING_SIM_SEED"])] if "HOMING_SIM_SEED" in os.environ else [1, 5]


@pytest.mark.parametrize("sim_seed", SEEDS)
def test_a_hostile_member_cannot_evict_or_rewrite_anyone(sim_seed: int) -> None:
    n = 16
    c = SimCluster(n, seed=sim_seed, config=LOCAL, converged=True)
    hostile = Identity.from_seed(bytes([0xEE]) * 32)
    originals = {nid: c.swim(nid).member(nid) for nid in c.ids}
    c.run_for(2.0)
    start = c.now
    rounds = 0
    while c.now < start + 60.0:
        for target in c.ids:
            victim = c.ids[(rounds + c.ids.index(target) + 1) % n]  # every honest member in turn, never itself
            seen = c.swim(target).member(victim)
            assert seen is not None
            forged = lies(c, hostile, victim, seen)
            for i in range(0, len(forged), 4):  # three datagrams, each within the update budget
                batch = tuple(forged[i : i + 4])
                c.net.inject(hostile.id, HOSTILE_ADDR, target, Gossip(updates=batch))
        rounds += 1
        c.run_for(0.1)
    c.run_for(5.0)  # the attack is over: every suspicion it started must be refuted by now

    C.require(c, [str(ch) for ch in C.false_deaths(c)], "honest members declared dead by a hostile member's claims")
    left = [ch for ch in c.changes if ch.state is L]
    C.require(c, [str(ch) for ch in left], "honest members made left by someone else")
    C.require(c, C.converged(c), "not converged after the attack")
    for observer in c.ids:
        for m in c.swim(observer).members():
            orig = originals[m.id]
            assert orig is not None and (m.addr, m.meta) == (orig.addr, orig.meta), "an address or meta changed"
            assert m.state is A
            assert m.incarnation <= 2 * 10 * 62, "incarnations grow by refutations only (budgeted per sender)"
    # the forgeries were seen and refused; claims at real incarnations were budgeted
    assert c.net.refused.get("forged", 0) > 0
    assert c.net.refused.get("rate_limited", 0) > 0
    # the signature checks are the honest members' refutations, each record checked once (the simulated nodes share
    # one verifier cache, and incarnations start at 0 here), plus the forged records each node's forgery budget let
    # through for the hostile sender (before, a bound of 20 n^2 checks in all failed on seeds whose members refuted
    # more often: 5,186 checks at seed 3, of which about none were forged)
    honest = sum(me.incarnation + 1 for nid in c.ids if (me := c.swim(nid).member(nid)) is not None)
    forged_max = n * (FORGED_PER_SENDER_BURST + FORGED_PER_SENDER_PER_S * (c.now - start) + 1)
    assert c.verifier.verified - honest <= forged_max, (c.verifier.verified, honest, forged_max)
