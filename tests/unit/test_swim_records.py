"""Member records only the member can change (node/protocol/swim/records.py and the core's merge of them).

Pure: cores wired by hand (tests/unit/test_swim_protocol.py's Wire), no driver. docs/swim.md "Hostile members"
cites each test here.
"""

from __future__ import annotations

import attrs
import pytest

from node.protocol.identity import Identity
from node.protocol.refusals import Refusal
from node.protocol.swim.messages import Gossip, MemberInfo, MemberState, PushPullState, Refused, Update
from node.protocol.swim.protocol import Swim
from node.protocol.swim.records import RecordVerifier, accusation_bytes, record_bytes, sign_record
from node.testing.keys import accusation, key, nid, signed
from tests.unit.test_swim_protocol import CFG, Wire

A, S, D, L = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
HOSTILE = Identity.from_seed(b"\xee" * 32)
HOST_ADDR = ("10.0.0.3", 7401)


def claim(member: int, inc: int, state: MemberState = D, by: bytes = b"") -> Update:
    """A claim about `member`, signed by its accuser `by` when one is named."""
    m = MemberInfo(id=nid(member), addr=("", 0), meta=b"", incarnation=inc, state=state)
    return accusation(m, by) if by else Update(member=m)


def test_a_record_verifies_only_with_its_members_key_and_each_is_verified_once() -> None:
    calls: list[bytes] = []

    def count(signer: bytes, msg: bytes, sig: bytes) -> bool:
        calls.append(msg)
        from node.protocol.identity import verify_signature

        return verify_signature(signer, msg, sig)

    v = RecordVerifier(count, cache_max=4)
    m = signed(MemberInfo(id=nid(1), addr=("h", 1), meta=b"m", incarnation=3, state=A))
    assert v.verify(m) and v.verify(m) and v.verified == 1 and v.cache_hits == 1
    assert v.verify(attrs.evolve(m, state=S)) and v.verify(attrs.evolve(m, state=D))  # claims keep the alive sig
    assert not v.verify(attrs.evolve(m, state=L))  # a leave needs its own signature
    assert not v.verify(attrs.evolve(m, meta=b"x")) and not v.verify(attrs.evolve(m, incarnation=4))
    assert not v.verify(sign_record(m, HOSTILE.sign))  # the right record, the wrong key
    assert not v.verify(attrs.evolve(m, sig=b""))
    assert record_bytes(m) != record_bytes(attrs.evolve(m, state=L))
    assert len(v._cache) <= 4  # bounded


def test_forged_alive_and_left_records_change_nothing() -> None:
    w = Wire(3)
    w.join_all()
    before = w.core(1).member(nid(2))
    assert before is not None
    elsewhere = attrs.evolve(before, addr=("10.9.9.9", 1), meta=b"evil", incarnation=2**53)
    forged = [
        sign_record(elsewhere, HOSTILE.sign),
        sign_record(attrs.evolve(elsewhere, state=L), HOSTILE.sign),
        attrs.evolve(elsewhere, incarnation=before.incarnation + 1, sig=before.sig),  # a signature moved
        attrs.evolve(before, state=L),  # left with the alive signature
    ]
    w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=tuple(Update(member=m) for m in forged)), w.now)
    assert w.core(1).member(nid(2)) == before
    refused = [c.refusal for c in w.core(1).drain() if isinstance(c, Refused)]
    assert refused == [Refusal.FORGED] * 4 and w.core(1).stats.records_forged == 4


def test_a_genuine_leave_is_taken_and_a_genuine_address_change_too() -> None:
    w = Wire(3)
    w.join_all()
    w.core(2).set_meta(b"new meta", w.now)
    w.advance(1.0)
    got = w.core(1).member(nid(2))
    assert got is not None and got.meta == b"new meta"
    w.core(2).leave(w.now)
    w.flush()
    assert w.state(1, 2) is L and w.state(3, 2) is L


def test_a_claim_about_an_unknown_member_is_ignored() -> None:
    w = Wire(2)
    w.join_all()
    w.core(1).receive(nid(2), ("10.0.0.2", 7401), Gossip(updates=(claim(9, 0),)), w.now)
    assert w.core(1).member(nid(9)) is None


def test_a_dead_claim_at_the_real_incarnation_leaves_the_member_a_whole_suspicion_to_refute() -> None:
    """At most one refutation round: a DEAD claim makes the member SUSPECT, never DEAD before the suspicion's
    minimum timeout here; if the member refutes meanwhile, it stays alive."""
    w = Wire(3)
    w.join_all()
    w.drop = lambda src, dst, msg: nid(2) in (src, dst)  # the member cannot refute
    w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=(claim(2, 0, D, by=nid(3)),)), w.now)
    assert w.state(1, 2) is S
    t0 = w.now
    min_s = CFG.suspicion_min_s(3)
    w.advance(min_s - 0.05)
    assert w.state(1, 2) is S
    w.advance(0.1)
    assert w.state(1, 2) is D  # nobody refuted within the minimum: dead, as for a crash
    assert w.now - t0 >= min_s

    w2 = Wire(3)
    w2.join_all()
    w2.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=(claim(2, 0, D, by=nid(3)),)), w2.now)
    w2.flush()
    w2.advance(3 * CFG.suspicion_max_s(3))
    assert [w2.state(i, 2) for i in (1, 3)] == [A, A]  # refuted (member 2 heard of it and stepped to 1)
    m2 = w2.core(1).member(nid(2))
    assert m2 is not None and m2.incarnation == 1


def test_suspicions_one_sender_may_start_are_budgeted() -> None:
    cfg = attrs.evolve(CFG, claims_per_sender_burst=5, claims_per_sender_per_s=1.0)
    w = Wire(12, config=cfg)
    w.join_all()
    w.drop = lambda src, dst, msg: True  # keep the claims where they land
    claims = tuple(claim(i, 0, S, by=nid(12)) for i in range(2, 12))
    w.core(1).receive(nid(12), ("10.0.0.12", 7401), Gossip(updates=claims), w.now)
    assert sum(w.state(1, i) is S for i in range(2, 12)) == 5
    assert w.core(1).stats.claims_rate_limited == 5


def test_a_sender_of_forged_records_gets_few_verifications() -> None:
    w = Wire(2)
    w.join_all()
    verifier = w.core(1)._verifier
    before = verifier.verified
    for i in range(50):
        bogus = sign_record(MemberInfo(id=nid(100 + i), addr=("h", i), meta=b"", incarnation=0, state=A), HOSTILE.sign)
        w.core(1).receive(nid(2), ("10.0.0.2", 7401), Gossip(updates=(Update(member=bogus),)), w.now)
    assert verifier.verified - before <= 6  # the burst (5), then nothing until the budget refills
    assert w.core(1).stats.records_forged <= 6


def test_records_about_ourselves_move_us_only_when_we_signed_them() -> None:
    w = Wire(2)
    w.join_all()
    me = w.core(1).member(nid(1))
    assert me is not None
    lies = (
        Update(member=sign_record(attrs.evolve(me, incarnation=2**53), HOSTILE.sign)),
        claim(1, 2**53, D, by=nid(2)),
        claim(1, 2**53, S, by=nid(2)),
    )
    w.core(1).receive(nid(2), ("10.0.0.2", 7401), Gossip(updates=lies), w.now)
    assert w.core(1).member(nid(1)) == me  # no jump to the top of the incarnation range
    assert w.core(1).stats.claims_unsigned == 2 and w.core(1).stats.records_forged == 1


def test_push_pull_records_are_checked_like_gossip() -> None:
    w = Wire(3)
    w.join_all()
    before = w.core(1).member(nid(2))
    assert before is not None
    forged = sign_record(attrs.evolve(before, addr=("10.9.9.9", 1), incarnation=9), HOSTILE.sign)
    w.core(1).merge_push_pull(PushPullState(members=(forged,)), w.now, nid(3))
    assert w.core(1).member(nid(2)) == before
    # a suspect/dead entry needs the member's signature at that incarnation, then counts as a suspicion
    unsigned_dead = attrs.evolve(before, incarnation=9, state=D)
    w.core(1).merge_push_pull(PushPullState(members=(unsigned_dead,)), w.now, nid(3))
    assert w.core(1).member(nid(2)) == before
    w.drop = lambda src, dst, msg: True
    w.core(1).merge_push_pull(PushPullState(members=(attrs.evolve(before, state=D),)), w.now, nid(3))
    assert w.state(1, 2) is S


def _suspected_at(core: Swim, member: int) -> tuple[float, float]:
    """(start, deadline) of the suspicion `core` holds of `member`."""
    s = core._suspicions.get(nid(member))
    assert s is not None, "no suspicion"
    return s.started, s.deadline()


def _hold_claims(w: Wire) -> None:
    """Nothing leaves the cores: what a test hands core 1 stays there (no refutation, no probe, no gossip)."""
    w.drop = lambda src, dst, msg: True


def test_one_members_dead_claim_leaves_the_suspect_its_whole_maximum_suspicion() -> None:
    """A DEAD claim is one accusation (merging.py A2). Before, it shortened the suspicion to its minimum at once:
    one hostile member alone gave every node's suspect the minimum window (0.7 s at the LOCAL timings) to have its
    refutation reach everyone, and in tests/sim/test_swim_hostile.py honest members were declared dead (seeds 5
    and 11). On the code before, core 1's suspicion ended at its minimum."""
    w = Wire(6)  # k = 2 confirmations
    w.join_all()
    _hold_claims(w)
    m2 = w.core(1).member(nid(2))
    assert m2 is not None
    w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=(accusation(m2.with_state(D), nid(3)),)), w.now)
    assert w.state(1, 2) is S
    start, deadline = _suspected_at(w.core(1), 2)
    assert deadline - start == pytest.approx(CFG.suspicion_max_s(6), abs=1e-3)
    for _ in range(3):  # again, and as a SUSPECT claim: the same accuser counts once
        for state in (D, S):
            w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=(accusation(m2.with_state(state), nid(3)),)), w.now)
    assert _suspected_at(w.core(1), 2) == (start, deadline)  # on the code before: start + minimum


def test_a_member_cannot_name_other_members_as_its_accusers() -> None:
    """Each accusation is signed by its accuser (merging.py A1). Before, a claim's accuser (`by`) was taken on the
    sender's word, so one member named k others as confirming accusers and brought every node's suspicion down to
    its minimum. On the code before, core 1's suspicion ended at its minimum."""
    w = Wire(6)
    w.join_all()
    _hold_claims(w)
    m2 = w.core(1).member(nid(2))
    assert m2 is not None
    sus = m2.with_state(S)
    w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=(accusation(sus, nid(3)),)), w.now)
    start, deadline = _suspected_at(w.core(1), 2)
    assert deadline - start == pytest.approx(CFG.suspicion_max_s(6), abs=1e-3)
    hostile_sig = key(3).sign(accusation_bytes(nid(2), 0, nid(4)))  # "4 accuses 2", signed by 3
    fakes = (
        Update(member=sus, by=nid(4)),  # unsigned
        Update(member=sus, by=nid(5), sig=bytes(64)),  # a made-up signature
        Update(member=sus, by=nid(4), sig=hostile_sig),  # signed by the sender, not by the accuser it names
        Update(member=m2.with_state(D), by=nid(5)),  # the same, as DEAD claims
    )
    for fake in fakes:
        w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=(fake,)), w.now)
    assert _suspected_at(w.core(1), 2) == (start, deadline)  # on the code before: start + minimum
    stats = w.core(1).stats
    assert (stats.accusations_unsigned, stats.accusations_forged) == (2, 2)


def test_accusations_count_as_their_signed_accusers_whoever_passes_them_on() -> None:
    """The guard: k genuine accusations, all relayed by one member (gossip passes claims on), each count as its
    accuser's, and the suspicion reaches its minimum as Lifeguard intends. The relaying member itself is not an
    accuser."""
    w = Wire(6)
    w.join_all()
    _hold_claims(w)
    m2 = w.core(1).member(nid(2))
    assert m2 is not None
    relayed = tuple(accusation(m2.with_state(st), nid(i)) for i, st in ((4, S), (5, D), (6, S)))
    w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=relayed[:1]), w.now)
    start, deadline = _suspected_at(w.core(1), 2)
    assert deadline - start == pytest.approx(CFG.suspicion_max_s(6), abs=1e-3)
    w.core(1).receive(nid(3), HOST_ADDR, Gossip(updates=relayed[1:]), w.now)
    assert _suspected_at(w.core(1), 2)[1] - start == pytest.approx(CFG.suspicion_min_s(6), abs=1e-3)
    assert w.core(1).stats.confirmations == 2


def test_a_claim_from_a_sync_counts_as_its_peers_accusation_and_is_never_passed_on_unsigned() -> None:
    """merging.py A3: the sync peer is authenticated by its link, so its SUSPECT entry is its accusation here; we
    hold no signature of it, so we do not gossip it (others would count it as ours, or refuse it). Our own
    suspicions are passed on signed."""
    w = Wire(4)
    w.join_all()
    m2 = w.core(1).member(nid(2))
    assert m2 is not None
    w.drop = lambda src, dst, msg: nid(2) in (src, dst)  # member 2 hears nothing: no refutation
    w.sent.clear()
    w.core(1).merge_push_pull(PushPullState(members=(m2.with_state(S),)), w.now, nid(3))
    assert w.state(1, 2) is S
    assert _suspected_at(w.core(1), 2)[1] - w.now == pytest.approx(CFG.suspicion_max_s(4), abs=1e-3)
    w.advance(0.5)  # gossip rounds and probes; core 1's own probes of 2 fail and accuse it, signed
    claims = [(src, dst, u) for src, dst, m in w.sent for u in m.updates if u.member.state in (S, D)]
    passed_on = [u for src, dst, u in claims if dst != u.member.id]
    assert passed_on, "the suspicions were gossiped"
    m = RecordVerifier()
    assert all(m.verify_accusation(u.member.id, u.member.incarnation, u.by, u.sig) for u in passed_on)
    assert all(u.by != nid(3) for u in passed_on)  # the sync's claim stayed at core 1


def test_a_suspect_hears_at_once_of_a_suspicion_from_a_sync_that_nobody_gossips() -> None:
    """merging.py A3: a sync's claim is not gossiped, so the node that took it tells the suspect directly; else a
    hostile sync peer's claim ran its whole timeout wherever the node's probe ring did not reach the suspect in
    time (in a large federation a ring round is far longer than the longest suspicion)."""
    w = Wire(4)
    w.join_all()
    m2 = w.core(1).member(nid(2))
    assert m2 is not None
    w.core(1).merge_push_pull(PushPullState(members=(m2.with_state(S),)), w.now, nid(3))
    assert w.state(1, 2) is S
    w.flush()  # no time passes: no probe, no gossip round
    assert [m.updates[0].member for src, dst, m in w.sent if (src, dst) == (nid(1), nid(2))] == [m2.with_state(S)]
    assert w.core(2).stats.refutations == 1  # on the code without the message: 0
    w.advance(2 * CFG.gossip_interval_s)
    assert w.state(1, 2) is A  # its refutation reached 1


def test_keys_helper_is_deterministic() -> None:
    assert key(3).id == nid(3) == Identity.from_seed(b"homing-test-key:" + (3).to_bytes(16, "big")).id
