"""Relay authority and budgets on one RelayCore driven by hand (docs/protocol.md, "Relay authority", "Budgets").

The test plays every other member, honest or not; each test names the rule it checks.
"""

from __future__ import annotations

import random

import attrs

from node.protocol.identity import Identity
from node.protocol.ratelimit import FORGED_PER_SENDER_BURST, FORGED_PER_SENDER_PER_S
from node.protocol.refusals import Refusal
from node.protocol.relay.claims import HomeClaim, challenge_nonce, nonce_time_s
from node.protocol.relay.core import CloseClient, RelayCore, ToClient, ToPeer
from node.protocol.relay.rendezvous import owners
from node.protocol.settings import RelaySection
from node.protocol.wire.client import Deliver, Envelope, Kind, Reason, Receipt, Status
from node.protocol.wire.peer import (
    TTL_MS_MAX,
    Handoff,
    Lease,
    LeaseDrop,
    Lookup,
    LookupReply,
    MailboxEvent,
    MailboxPut,
    MailboxStatus,
    PeerEnvelope,
    ReceiptStatus,
    RelayReceipt,
    origin_signed_bytes,
)
from node.testing.relaysim import WALL0_S, RelaySim, client_claim, sim_client
from tests.relay.simcheck import SIM_CONFIG

KEYS = [Identity.from_seed(bytes([0x40 + i]) * 32) for i in range(7)]
S, P, M = KEYS[0].id, KEYS[1].id, KEYS[2].id  # this node, an honest peer, a hostile member
MEMBERS = [k.id for k in KEYS]
R = SIM_CONFIG.replicas
CLIENTS = [sim_client(b"auth-%d" % i) for i in range(200)]
OWNED = [c for c in CLIENTS if S in owners(c, MEMBERS, R)]  # ids S owns
FOREIGN = [c for c in CLIENTS if S not in owners(c, MEMBERS, R)]
A = CLIENTS[0]
# a recipient S does not own even without P or M (a leaving owner's hand-offs count S as owner), never a sender here
FAR = next(c for c in reversed(FOREIGN) if all(S not in owners(c, [m for m in MEMBERS if m != x], R) for x in (P, M)))


def core(**cfg: object) -> RelayCore:
    c = RelayCore(
        node_id=S,
        config=attrs.evolve(SIM_CONFIG, **cfg),
        rng=random.Random(5),
        now=0.0,
        sign=KEYS[0].sign,
        wall_offset_s=WALL0_S,
    )
    c.members_changed(MEMBERS, 0.0)
    c.drain()
    return c


def online(c: RelayCore, conn: int, client: bytes, now: float = 0.0, address: str = "192.0.2.1") -> None:
    c.client_online(conn, client, now, claim=client_claim(client, S, WALL0_S + now), address_key=address)


def lease(home: bytes, claims: list[HomeClaim], ttl_ms: int = 30_000) -> Lease:
    return Lease(home=home, claims=tuple(claims), ttl_ms=ttl_ms)


def penv(origin: bytes, to: bytes, sender: bytes, claim: HomeClaim, eid: bytes = b"e" * 16) -> PeerEnvelope:
    return PeerEnvelope(
        eid=eid,
        origin=origin,
        to=to,
        sender=sender,
        kind=Kind.CALL_OFFER,
        call=b"c",
        body=b"hi",
        claim_nonce=claim.nonce,
        claim_sig=claim.sig,
    )


def delivered(cmds: list[object]) -> list[Deliver]:
    return [x.msg for x in cmds if isinstance(x, ToClient) and isinstance(x.msg, Deliver)]


def receipts(cmds: list[object]) -> list[Receipt]:
    return [x.msg for x in cmds if isinstance(x, ToClient) and isinstance(x.msg, Receipt)]


# ---------------------------------------------------------------- claims


def test_the_challenge_nonce_carries_unix_milliseconds() -> None:
    nonce = challenge_nonce(1_800_000_000.1234, b"r" * 24)
    assert len(nonce) == 32 and nonce[8:] == b"r" * 24 and nonce_time_s(nonce) == 1_800_000_000.123


def test_client_online_with_a_claim_for_another_node_is_closed_not_homed() -> None:
    c = core()
    c.client_online(1, A, 0.0, claim=client_claim(A, P, WALL0_S), address_key="x")
    assert c.drain() == [CloseClient(conn_id=1)] and c.stats().clients == 0


def test_a_connection_is_closed_a_lease_period_before_its_claim_ages_out() -> None:
    c = core(claim_age_max_s=600.0)
    online(c, 1, A)
    c.drain()
    close_at = 600.0 - SIM_CONFIG.lease_ttl_s
    c.tick(close_at - 0.01)
    assert not [x for x in c.drain() if isinstance(x, CloseClient)]
    c.tick(close_at)
    assert [x for x in c.drain() if isinstance(x, CloseClient)] == [CloseClient(conn_id=1)]


# ---------------------------------------------------------------- leases


def test_a_lease_needs_the_clients_claim_naming_that_home() -> None:
    c = core()
    b = OWNED[0]
    forged = attrs.evolve(client_claim(b, P, WALL0_S), home=M)  # P's claim relabelled: the signature fails
    c.peer_message(M, lease(M, [forged]), 0.0)
    assert c.owner.leases.homes(b, 0.0) == () and c.refused[Refusal.FORGED] == 1
    c.peer_message(P, lease(P, [client_claim(b, P, WALL0_S)]), 0.0)
    assert c.owner.leases.homes(b, 0.0) == (P,)


def test_claims_too_old_or_from_the_future_are_refused() -> None:
    c = core()
    old, future, fresh = OWNED[:3]
    age, skew = SIM_CONFIG.claim_age_max_s, SIM_CONFIG.claim_skew_s
    c.peer_message(P, lease(P, [client_claim(old, P, WALL0_S - age - 1)]), 0.0)
    c.peer_message(P, lease(P, [client_claim(future, P, WALL0_S + skew + 1)]), 0.0)
    c.peer_message(P, lease(P, [client_claim(fresh, P, WALL0_S - age + 100)]), 0.0)
    assert c.owner.leases.homes(old, 0.0) == c.owner.leases.homes(future, 0.0) == ()
    assert c.owner.leases.homes(fresh, 0.0) == (P,)
    assert c.owner.leases.next_deadline() <= 100.0  # a lease never outlives its claim


def test_lease_ttl_is_clamped_to_local_config() -> None:
    c = core()
    c.peer_message(P, lease(P, [client_claim(OWNED[0], P, WALL0_S)], ttl_ms=TTL_MS_MAX), 0.0)
    assert c.owner.leases.next_deadline() == SIM_CONFIG.lease_ttl_s


def test_leases_only_for_ids_this_node_owns() -> None:
    c = core()
    c.peer_message(P, lease(P, [client_claim(FAR, P, WALL0_S)]), 0.0)
    assert len(c.owner.leases) == 0 and c.refused[Refusal.MALFORMED] == 1


def test_only_the_home_drops_its_lease() -> None:
    c = core()
    b = OWNED[0]
    c.peer_message(P, lease(P, [client_claim(b, P, WALL0_S)]), 0.0)
    c.peer_message(M, LeaseDrop(home=P, ids=(b,)), 0.1)
    assert c.owner.leases.homes(b, 0.2) == (P,)
    c.peer_message(P, LeaseDrop(home=P, ids=(b,)), 0.3)
    assert c.owner.leases.homes(b, 0.4) == ()


def test_one_home_holds_at_most_its_share_of_leases() -> None:
    c = core(leases_per_home_max=3)
    c.peer_message(M, lease(M, [client_claim(b, M, WALL0_S) for b in OWNED[:6]]), 0.0)
    assert c.owner.leases.count_home(M) == 3
    c.peer_message(P, lease(P, [client_claim(OWNED[7], P, WALL0_S)]), 0.0)
    assert c.owner.leases.homes(OWNED[7], 0.0) == (P,)


def test_renewals_verify_a_claim_once() -> None:
    c = core()
    claim = client_claim(OWNED[0], P, WALL0_S)
    for t in range(5):
        c.peer_message(P, lease(P, [claim]), float(t))
    assert c.verifier.verifications == 1


# ---------------------------------------------------------------- mailbox puts


def put(origin: bytes, to: bytes, sender: bytes = A, eid: bytes = b"e" * 16, ttl_ms: int = 5_000) -> MailboxPut:
    return MailboxPut(env=penv(origin, to, sender, client_claim(sender, origin, WALL0_S), eid), ttl_ms=ttl_ms)


def events(cmds: list[object]) -> list[MailboxStatus]:
    return [x.msg.status for x in cmds if isinstance(x, ToPeer) and isinstance(x.msg, MailboxEvent)]


def test_a_put_comes_only_from_the_envelopes_origin() -> None:
    c = core()
    c.peer_message(M, put(P, OWNED[0]), 0.0)
    assert len(c.owner.mailbox) == 0 and events(c.drain()) == []
    c.peer_message(P, put(P, OWNED[0]), 0.0)
    assert len(c.owner.mailbox) == 1 and events(c.drain()) == [MailboxStatus.STORED]


def test_an_owner_pushes_to_a_home_whose_link_just_failed_only_when_the_recipient_has_no_other() -> None:
    """Routing rule 12 (node/protocol/relay/core.py), the owner's side: of two homes, a mailbox entry goes to the one
    whose link did not just fail; with only that home, it still goes there (its link delivers once the peer is
    back). On the code before, the first home in the lease table's order got it."""
    flaky, live = KEYS[3].id, KEYS[4].id
    for homes, expected in (((flaky, live), live), ((live, flaky), live), ((flaky,), flaky)):
        c = core()
        for home in homes:
            c.peer_message(home, lease(home, [client_claim(OWNED[0], home, WALL0_S)]), 0.0)
        c.peer_unreachable(flaky, 0.01)
        c.drain()
        c.peer_message(P, put(P, OWNED[0]), 0.02)
        pushed = [x.node for x in c.drain() if isinstance(x, ToPeer) and isinstance(x.msg, PeerEnvelope)]
        assert pushed == [expected], (homes, pushed)


def test_a_put_for_an_id_not_owned_is_answered_not_owner() -> None:
    c = core()
    c.peer_message(P, put(P, FAR), 0.0)
    assert len(c.owner.mailbox) == 0 and events(c.drain()) == [MailboxStatus.NOT_OWNER]


def test_put_ttl_is_clamped_and_puts_per_peer_are_rate_limited() -> None:
    c = core(puts_per_peer_burst=2, puts_per_peer_per_s=0.01)
    for i in range(3):
        c.peer_message(P, put(P, OWNED[i], eid=bytes([i]) * 16, ttl_ms=TTL_MS_MAX), 0.0)
    assert events(c.drain()) == [MailboxStatus.STORED, MailboxStatus.STORED, MailboxStatus.FULL]
    assert c.owner.mailbox.next_deadline() == SIM_CONFIG.mailbox_ttl


# ---------------------------------------------------------------- envelopes at the home


def test_the_home_accepts_from_x_only_from_xs_claimed_home() -> None:
    c = core()
    b = OWNED[0]
    online(c, 1, b)
    c.drain()
    claim_at_p = client_claim(A, P, WALL0_S)
    c.peer_message(M, penv(M, b, A, claim_at_p, eid=b"1" * 16), 0.0)  # M as origin, with A's claim naming P
    c.peer_message(M, penv(P, b, A, claim_at_p, eid=b"2" * 16), 0.0)  # M posing as P's mailbox, unsigned
    assert delivered(c.drain()) == [] and c.refused[Refusal.FORGED] == 2
    c.peer_message(P, penv(P, b, A, claim_at_p, eid=b"3" * 16), 0.0)  # P, A's home
    assert [d.eid for d in delivered(c.drain())] == [b"3" * 16]


def test_an_owner_pushes_a_mailbox_envelope_only_with_the_origins_signature() -> None:
    c = core()
    b = OWNED[0]
    owner = next(o for o in owners(b, MEMBERS, R) if o not in (S, P))
    online(c, 1, b)
    c.drain()
    unsigned = attrs.evolve(penv(P, b, A, client_claim(A, P, WALL0_S)), expires_ms=int((WALL0_S + 60) * 1000))
    by_m = attrs.evolve(unsigned, origin_sig=KEYS[2].sign(origin_signed_bytes(unsigned)))
    c.peer_message(owner, by_m, 0.0)  # signed, but not by the origin
    assert delivered(c.drain()) == []
    by_p = attrs.evolve(unsigned, origin_sig=KEYS[1].sign(origin_signed_bytes(unsigned)))
    c.peer_message(owner, by_p, 61.0 + SIM_CONFIG.claim_skew_s)  # the origin's signature, but void by now
    assert delivered(c.drain()) == []
    c.peer_message(owner, by_p, 1.0)
    assert len(delivered(c.drain())) == 1


# ---------------------------------------------------------------- signature checks per peer (claims.py, PeerChecks)


def forged(client: bytes, home: bytes, i: int) -> HomeClaim:
    """A claim with a fresh nonce and a well-formed signature that does not verify: free to make, each a cache
    miss, each an Ed25519 check for the receiver (the relaysim LEASE flood of session 10's notes)."""
    good = client_claim(client, home, WALL0_S, random_bytes=i.to_bytes(24, "big"))
    return attrs.evolve(good, sig=good.sig[:-1] + bytes([good.sig[-1] ^ 1]))


def test_a_member_sending_forged_claims_gets_a_handful_of_checks_and_others_keep_theirs() -> None:
    """An honest member never sends a claim that fails: after FORGED_PER_SENDER_BURST failures the sender gets one
    check per 1 / FORGED_PER_SENDER_PER_S seconds; the rest is refused unchecked. Before: 4 x len(OWNED) checks."""
    c = core()
    for rnd in range(4):
        c.peer_message(M, lease(M, [forged(b, M, rnd * 1000 + i) for i, b in enumerate(OWNED)]), 0.0)
    assert c.verifier.verifications == FORGED_PER_SENDER_BURST, c.verifier.verifications
    assert c.refused[Refusal.FORGED] == FORGED_PER_SENDER_BURST
    assert c.refused[Refusal.RATE_LIMITED] == 4 * len(OWNED) - FORGED_PER_SENDER_BURST
    assert len(c.owner.leases) == 0
    c.peer_message(P, lease(P, [client_claim(OWNED[0], P, WALL0_S)]), 0.1)  # an honest member's budget is its own
    assert c.owner.leases.homes(OWNED[0], 0.1) == (P,)
    later = 0.1 + 1 / FORGED_PER_SENDER_PER_S
    c.peer_message(M, lease(M, [forged(b, M, 9000 + i) for i, b in enumerate(OWNED)]), later)
    assert c.verifier.verifications == FORGED_PER_SENDER_BURST + 2  # P's claim, and one more of M's


def test_a_member_gets_at_most_its_check_budget_even_with_claims_that_verify() -> None:
    """A member can sign claims for keys of its own, as many as it likes: each new one costs the receiver a check.
    The receiver checks at most `claim_checks_per_peer_burst`, then `claim_checks_per_peer_per_s`; renewals of the
    leases it took are free. Before: every claim was checked."""
    c = core(claim_checks_per_peer_burst=10, claim_checks_per_peer_per_s=1.0)
    claims = [client_claim(b, M, WALL0_S) for b in OWNED[:50]]
    c.peer_message(M, lease(M, claims), 0.0)
    assert c.verifier.verifications == 10 and c.owner.leases.count_home(M) == 10
    assert c.refused[Refusal.RATE_LIMITED] == 40
    c.peer_message(P, lease(P, [client_claim(b, P, WALL0_S) for b in OWNED[:5]]), 0.0)  # P's budget is its own
    assert c.owner.leases.count_home(P) == 5
    c.peer_message(M, lease(M, claims), 5.0)  # 10 renewals (free), and 5 new ones within 5 s of refill
    assert c.verifier.verifications == 10 + 5 + 5 and c.owner.leases.count_home(M) == 15


def test_a_renewal_costs_no_check_even_when_the_cache_forgot_its_claim() -> None:
    """With more leases than `claim_cache_max`, renewals used to miss the cache: each was checked again, every
    third of a lease TTL, and now each would spend its home's check budget. Before: 3 checks."""
    c = core(claim_cache_max=1)
    first, second = client_claim(OWNED[0], P, WALL0_S), client_claim(OWNED[1], P, WALL0_S)
    c.peer_message(P, lease(P, [first]), 0.0)
    c.peer_message(P, lease(P, [second]), 0.0)  # evicts `first` from the cache
    c.peer_message(P, lease(P, [first]), 10.0)
    assert c.verifier.verifications == 2 and c.owner.leases.homes(OWNED[0], 10.0) == (P,)


def test_a_full_share_of_leases_costs_no_check() -> None:
    c = core(leases_per_home_max=3)
    c.peer_message(M, lease(M, [client_claim(b, M, WALL0_S) for b in OWNED[:20]]), 0.0)
    assert c.verifier.verifications == 3 and c.owner.leases.count_home(M) == 3  # before: 20 checks


def test_a_put_over_the_put_budget_costs_no_check() -> None:
    c = core(puts_per_peer_burst=2, puts_per_peer_per_s=0.01)
    for i in range(5):  # each from another sender: a claim the cache does not know
        c.peer_message(P, put(P, OWNED[i], sender=CLIENTS[100 + i], eid=bytes([i]) * 16), 0.0)
    assert events(c.drain()) == [MailboxStatus.STORED] * 2 + [MailboxStatus.FULL] * 3
    assert c.verifier.verifications == 2  # before: 5


def test_an_origin_sending_forged_sender_claims_to_a_home_gets_a_handful_of_checks() -> None:
    c = core()
    b = OWNED[0]
    online(c, 1, b)
    c.drain()
    for i in range(50):
        c.peer_message(M, penv(M, b, CLIENTS[1 + i], forged(CLIENTS[1 + i], M, i), eid=bytes([i]) * 16), 0.0)
    assert delivered(c.drain()) == [] and c.verifier.verifications == FORGED_PER_SENDER_BURST  # before: 50
    assert c.refused[Refusal.RATE_LIMITED] == 50 - FORGED_PER_SENDER_BURST
    c.peer_message(P, penv(P, b, A, client_claim(A, P, WALL0_S), eid=b"h" * 16), 0.0)
    assert len(delivered(c.drain())) == 1


# ---------------------------------------------------------------- budgets at the origin


def test_fresh_keys_from_one_address_share_its_pending_budget() -> None:
    c = core(pending_per_address_max=3)
    for conn in range(1, 6):
        online(c, conn, CLIENTS[conn], address="203.0.113.9")
        c.client_envelope(conn, Envelope(kind=Kind.CALL_OFFER, to=FAR, call=b"c", body=b"", ref=conn), 0.0)
    online(c, 9, CLIENTS[9], address="198.51.100.1")
    c.client_envelope(9, Envelope(kind=Kind.CALL_OFFER, to=FAR, call=b"c", body=b"", ref=9), 0.0)
    rejected = [r.ref for r in receipts(c.drain()) if r.reason is Reason.RATE_LIMITED]
    assert rejected == [4, 5]


def test_one_sender_id_has_its_own_pending_budget() -> None:
    c = core(pending_per_id_max=2)
    online(c, 1, A)
    for ref in range(3):
        c.client_envelope(1, Envelope(kind=Kind.CALL_ICE, to=FAR, call=b"c", body=b"", ref=ref), 0.0)
    assert [r.ref for r in receipts(c.drain())] == [2]


def test_one_address_has_a_mailbox_budget_in_count_and_bytes() -> None:
    c = core(mailbox_per_address_max=3, mailbox_bytes_per_address_max=100 * 1024)
    online(c, 1, A, address="203.0.113.9")
    online(c, 2, CLIENTS[1], address="198.51.100.1")
    c.drain()
    big = b"x" * 60_000
    # c3 would pass the address's bytes, c5 its count; c6 comes from another address
    sends = [(1, b"", 1), (1, big, 2), (1, big, 3), (1, b"", 4), (1, b"", 5), (2, big, 6)]
    for conn, body, ref in sends:
        c.client_envelope(conn, Envelope(kind=Kind.CALL_OFFER, to=FAR, call=b"c%d" % ref, body=body, ref=ref), 0.0)
    for x in c.drain():
        if isinstance(x, ToPeer) and isinstance(x.msg, Lookup):
            c.peer_message(x.node, LookupReply(id=FAR, homes=()), 0.0)
    cmds = c.drain()
    puts = {x.msg.env.call for x in cmds if isinstance(x, ToPeer) and isinstance(x.msg, MailboxPut)}
    assert puts == {b"c1", b"c2", b"c4", b"c6"}
    rejected = [r for r in receipts(cmds) if r.status is Status.REJECTED]
    assert [(r.ref, r.reason) for r in rejected] == [(3, Reason.RATE_LIMITED), (5, Reason.RATE_LIMITED)]


# ---------------------------------------------------------------- shares of one recipient's mailbox
# docs/protocol.md, "Budgets". These run with the shipped mailbox defaults (RelaySection()): a recipient's mailbox
# holds 64 entries, one sender id 24 of them (`mailbox_per_sender_per_id_max`), one origin node 32
# (`mailbox_per_origin_per_id_max`); one source address, at its origin, has 24 in the mailbox path to one recipient
# (`mailbox_per_address_per_id_max`).
SHIPPED = attrs.evolve(RelaySection(), lease_ttl_s=6.0, peer_timeout_s=0.5, mailbox_ttl=5.0)
FLOOD = [sim_client(b"auth-flood-%d" % i) for i in range(10)]  # fresh keys of one attacker


def shipped_core() -> RelayCore:
    c = RelayCore(node_id=S, config=SHIPPED, rng=random.Random(5), now=0.0, sign=KEYS[0].sign, wall_offset_s=WALL0_S)
    c.members_changed(MEMBERS, 0.0)
    c.drain()
    return c


def signed(origin: Identity, to: bytes, sender: bytes, eid: bytes) -> PeerEnvelope:
    """A mailbox envelope as its origin sends it: the sender's claim naming the origin, the origin's signature."""
    env = attrs.evolve(penv(origin.id, to, sender, client_claim(sender, origin.id, WALL0_S), eid), expires_ms=2**62)
    return attrs.evolve(env, origin_sig=origin.sign(origin_signed_bytes(env)))


def test_one_sender_id_holds_at_most_its_share_of_one_recipients_mailbox() -> None:
    """Rule: a sender id holds at most `mailbox_per_sender_per_id_max` entries in one recipient's mailbox; the put
    over it is answered FULL (its sender is told rate_limited), nothing stored is dropped, and the same key still
    reaches other recipients while other keys still reach this one."""
    c = shipped_core()
    x, y = OWNED[0], OWNED[1]
    for i in range(28):
        c.peer_message(P, put(P, x, sender=A, eid=b"s%02d" % i + bytes(13)), 0.0)
    assert events(c.drain()) == [MailboxStatus.STORED] * 24 + [MailboxStatus.FULL] * 4
    assert c.owner.mailbox.from_sender(x, A) == 24 and len(c.owner.mailbox) == 24
    c.peer_message(P, put(P, y, sender=A, eid=b"y" * 16), 0.0)
    c.peer_message(P, put(P, x, sender=CLIENTS[1], eid=b"b" * 16), 0.0)
    assert events(c.drain()) == [MailboxStatus.STORED, MailboxStatus.STORED]
    assert c.refused[Refusal.RATE_LIMITED] == 4


def test_one_origin_node_holds_at_most_its_share_of_one_recipients_mailbox() -> None:
    """Rule: one origin node (a hostile member, or the clients of one node with as many keys as they like) holds at
    most `mailbox_per_origin_per_id_max` of one recipient's mailbox, so callers through other nodes still fit."""
    c = shipped_core()
    x = OWNED[0]
    for k, sender in enumerate(FLOOD[:6]):  # 6 keys x 8: each within its own share, 48 from one origin
        for i in range(8):
            c.peer_message(M, put(M, x, sender=sender, eid=bytes([k, i]) * 8), 0.0)
    got = events(c.drain())
    assert got.count(MailboxStatus.STORED) == 32 and got.count(MailboxStatus.FULL) == 16
    assert c.owner.mailbox.from_origin(x, M) == 32
    c.peer_message(P, put(P, x, sender=A, eid=b"h" * 16), 0.0)  # an honest caller through another node
    assert events(c.drain()) == [MailboxStatus.STORED]


def test_a_member_cannot_pass_its_own_entries_off_as_hand_offs_to_take_more_than_its_share() -> None:
    """A HANDOFF whose sender is its origin counts like a put: M, signing as itself (it can sign as no other
    origin), gets no more of one recipient's mailbox by handing its entries off than by putting them."""
    c = shipped_core()
    x = OWNED[0]
    for k, sender in enumerate(FLOOD[:6]):
        for i in range(8):
            c.peer_message(M, Handoff(env=signed(KEYS[2], x, sender, bytes([k, i]) * 8), ttl_ms=5_000), 0.0)
    assert len(c.owner.mailbox) == 32 and c.owner.mailbox.from_origin(x, M) == 32
    c.peer_message(M, Handoff(env=signed(KEYS[2], x, FLOOD[9], b"m" * 16), ttl_ms=5_000), 0.0)
    assert len(c.owner.mailbox) == 32 and c.owner.mailbox.from_sender(x, FLOOD[9]) == 0


def test_a_hand_off_of_stored_mail_is_not_cut_by_the_senders_or_origins_share() -> None:
    """An old owner's HANDOFF moves an entry it stored, and the origin may have told its sender `queued` for that
    copy alone: the shares of one recipient's mailbox (counted by the entry's origin, the node that signed it, not
    by the old owner passing it on) do not refuse it, or it would be lost. Here P's clients already hold P's whole
    share of x's mailbox at this (new) owner, and the old owner Q hands off 8 more of P's entries from the key that
    already holds its own share: all 8 are kept."""
    c = shipped_core()
    q = KEYS[3]
    x = OWNED[0]
    for i in range(32):  # 24 from FLOOD[0] (its share), 8 from FLOOD[1]: P's share
        c.peer_message(P, put(P, x, sender=FLOOD[i // 24], eid=bytes([i]) * 16), 0.0)
    c.drain()
    assert len(c.owner.mailbox) == 32
    for i in range(8):
        c.peer_message(q.id, Handoff(env=signed(KEYS[1], x, FLOOD[0], bytes([99, i]) * 8), ttl_ms=5_000), 0.0)
    assert len(c.owner.mailbox) == 40
    assert c.owner.mailbox.from_origin(x, P) == 40 and c.owner.mailbox.from_sender(x, FLOOD[0]) == 32
    c.peer_message(P, put(P, x, sender=FLOOD[5], eid=b"p" * 16), 0.0)  # still counted: P's new puts are refused
    assert events(c.drain()) == [MailboxStatus.FULL]


def test_a_whole_call_to_an_offline_callee_fits_the_shares() -> None:
    """Not a protection: what the shares' defaults leave room for. A caller trickles its candidates right after the
    offer, and for an offline callee all of them wait in the mailbox: the offer, 21 candidates and the end of
    candidates (23 envelopes, one sender id, one address, one origin) are all queued and all delivered, in order,
    when the callee connects. With a share of 8 the 9th and later were refused, the relayed candidates among them."""
    sim = RelaySim(seed=4, config=SHIPPED, nodes=4)
    caller_node, callee_node = sim.alive()[:2]
    caller, callee = CLIENTS[20], CLIENTS[21]
    ca = sim.connect(caller_node, caller)
    sim.run_for(1.0)
    kinds = [Kind.CALL_OFFER] + [Kind.CALL_ICE] * 22
    for ref, kind in enumerate(kinds):
        sim.send(ca, Envelope(kind=kind, to=callee, call=b"call", body=b"%d" % ref, ref=ref))
    sim.run_for(1.0)
    assert [r.status for r in sim.receipts[ca]] == [Status.QUEUED] * 23
    cb = sim.connect(callee_node, callee)
    sim.run_for(2.0)
    assert [d.body for d in sim.delivered[cb]] == [b"%d" % ref for ref in range(23)]


def test_a_call_that_took_its_whole_share_can_still_be_hung_up() -> None:
    """Cancel by hangup (docs/protocol.md) still works for a call that took all of its sender's and its address's
    share of an offline callee's mailbox: a call_hangup fits one over the shares, at the origin and at the owners.
    Without that room the hangup was refused (rate_limited) and the callee would get a dead call on waking."""
    sim = RelaySim(seed=4, config=SHIPPED, nodes=4)
    caller_node, callee_node = sim.alive()[:2]
    caller, callee = CLIENTS[22], CLIENTS[23]
    ca = sim.connect(caller_node, caller)
    sim.run_for(1.0)
    kinds = [Kind.CALL_OFFER] + [Kind.CALL_ICE] * 23  # 24: the whole share
    for ref, kind in enumerate(kinds):
        sim.send(ca, Envelope(kind=kind, to=callee, call=b"call", body=b"", ref=ref))
    sim.run_for(1.0)
    sim.send(ca, Envelope(kind=Kind.CALL_HANGUP, to=callee, call=b"call", body=b"", ref=24))
    sim.run_for(1.0)
    got = {r.ref: r.status for r in sim.receipts[ca] if r.status is not Status.QUEUED}
    assert got == {ref: Status.CANCELLED for ref in range(25)}, got
    cb = sim.connect(callee_node, callee)
    sim.run_for(2.0)
    assert sim.delivered[cb] == []


def test_fresh_keys_from_one_address_share_its_budget_of_one_recipients_mailbox() -> None:
    """Rule (origin): envelopes from one source address to one recipient in the mailbox path at once are at most
    `mailbox_per_address_per_id_max`, whatever the number of keys; the budget is released by the terminal receipt,
    and the same address still reaches other recipients while other addresses still reach this one."""
    c = shipped_core()
    for conn, sender in enumerate(FLOOD[:6], start=1):
        online(c, conn, sender, address="203.0.113.9")
    online(c, 9, A, address="198.51.100.1")
    c.drain()
    far2 = next(x for x in FOREIGN if x != FAR)

    def send(conn: int, to: bytes, ref: int) -> list[object]:
        c.client_envelope(conn, Envelope(kind=Kind.CALL_OFFER, to=to, call=b"c%d" % ref, body=b"", ref=ref), 0.0)
        cmds = c.drain()
        for x in cmds:
            if isinstance(x, ToPeer) and isinstance(x.msg, Lookup):
                c.peer_message(x.node, LookupReply(id=x.msg.id, homes=()), 0.0)
        return [*cmds, *c.drain()]

    def mail(cmds: list[object]) -> list[bytes]:  # the envelopes put (to each owner)
        return sorted({x.msg.env.call for x in cmds if isinstance(x, ToPeer) and isinstance(x.msg, MailboxPut)})

    put_calls: dict[bytes, PeerEnvelope] = {}
    rejected: list[int] = []
    for n in range(48):  # 6 keys x 8 offers to FAR, from one address
        cmds = send(1 + n % 6, FAR, n)
        put_calls.update(
            (x.msg.env.call, x.msg.env) for x in cmds if isinstance(x, ToPeer) and isinstance(x.msg, MailboxPut)
        )
        rejected += [r.ref for r in receipts(cmds) if r.status is Status.REJECTED and r.reason is Reason.RATE_LIMITED]
    assert len(put_calls) == 24 and len(rejected) == 24
    assert mail(send(1, far2, 100)) == [b"c100"]  # another recipient: the address's budget for it is its own
    assert mail(send(9, FAR, 101)) == [b"c101"]  # another address
    assert mail(send(2, FAR, 102)) == []  # still full
    owner = next(o for o in owners(FAR, MEMBERS, R) if o != S)
    c.peer_message(owner, RelayReceipt(eid=put_calls[b"c0"].eid, status=ReceiptStatus.DELIVERED), 0.0)
    c.drain()
    assert mail(send(2, FAR, 103)) == [b"c103"]  # the terminal receipt released one


# ---------------------------------------------------------------- a claim crosses a link once


def test_a_claim_crosses_a_link_once_and_is_resent_when_the_home_forgot_it() -> None:
    s = core()
    h = RelayCore(
        node_id=P,
        config=attrs.evolve(SIM_CONFIG, claim_cache_max=1),
        rng=random.Random(6),
        now=0.0,
        sign=KEYS[1].sign,
        wall_offset_s=WALL0_S,
    )
    h.members_changed(MEMBERS, 0.0)
    b = FAR
    online(s, 1, A)
    h.client_online(2, b, 0.0, claim=client_claim(b, P, WALL0_S), address_key="x")
    s.drain(), h.drain()
    got: list[bytes] = []  # bodies delivered to b at P
    answers: list[Receipt] = []  # receipts to A at S

    def send(ref: int, t: float) -> list[PeerEnvelope]:
        """One envelope A -> b: S forwards to P (after a lookup the first time); frames between them are relayed."""
        s.client_envelope(1, Envelope(kind=Kind.CALL_ICE, to=b, call=b"c", body=b"%d" % ref, ref=ref), t)
        out: list[PeerEnvelope] = []
        for _ in range(4):
            cmds = s.drain()
            answers.extend(receipts(cmds))
            for x in cmds:
                if isinstance(x, ToPeer) and isinstance(x.msg, Lookup):
                    s.peer_message(x.node, LookupReply(id=b, homes=(P,)), t)
                elif isinstance(x, ToPeer) and x.node == P and isinstance(x.msg, PeerEnvelope):
                    out.append(x.msg)
                    h.peer_message(S, x.msg, t)
                    for y in h.drain():
                        if isinstance(y, ToPeer) and y.node == S:
                            s.peer_message(P, y.msg, t)
                        elif isinstance(y, ToClient) and isinstance(y.msg, Deliver):
                            got.append(y.msg.body)
        return out

    first, second = send(1, 0.0), send(2, 0.1)
    assert [e.has_claim for e in first] == [True] and [e.has_claim for e in second] == [False]
    other, c = KEYS[3].id, CLIENTS[5]  # another origin's claim pushes S's out of P's one-entry cache
    h.peer_message(other, penv(other, b, c, client_claim(c, other, WALL0_S), eid=b"o" * 16), 0.2)
    h.drain()
    third = send(3, 0.3)
    assert [e.has_claim for e in third] == [False, True]  # need_claim, then resent in full
    assert got == [b"1", b"2", b"3"]
    assert [(r.ref, r.status) for r in answers] == [(n, Status.DELIVERED) for n in (1, 2, 3)]


def test_clients_beyond_the_owners_lease_share_are_called_from_their_own_node_only() -> None:
    """What docs/operations.md ("How many phones one node holds") and `homing node run`'s
    `connections_max_above_lease_share` warning say. Two nodes, both owners of every client (replicas >= 2): the
    callee's home has more clients than `leases_per_home_max`, so the owners refuse the lease of the last one to
    connect. A caller on the other node finds no home for it and its offer is `queued` in the mailbox, never
    delivered; a caller on the same node still reaches it, and a callee within the share is delivered to."""
    sim = RelaySim(seed=3, config=attrs.evolve(SIM_CONFIG, leases_per_home_max=2), nodes=2)
    home, other = sim.alive()
    inside, beyond = CLIENTS[10], CLIENTS[12]
    neighbour = sim.connect(home, CLIENTS[11])
    sim.connect(home, inside)
    sim.run_for(1.0)
    callee = sim.connect(home, beyond)  # the third client of `home`: over the share at both owners
    sim.run_for(1.0)
    assert all(sim.nodes[n].core.owner.leases.count_home(home) == 2 for n in (home, other))
    caller = sim.connect(other, CLIENTS[13])
    sim.run_for(1.0)
    for ref, to in ((1, inside), (2, beyond)):
        sim.send(caller, Envelope(kind=Kind.CALL_OFFER, to=to, call=b"c%d" % ref, body=b"", ref=ref))
    sim.send(neighbour, Envelope(kind=Kind.CALL_OFFER, to=beyond, call=b"c3", body=b"", ref=3))
    sim.run_for(5.0)
    got = {r.ref: r.status for r in sim.receipts[caller]}
    assert got == {1: Status.DELIVERED, 2: Status.QUEUED}, got
    assert [r.status for r in sim.receipts[neighbour]] == [Status.DELIVERED]
    assert [d.call for d in sim.delivered[callee]] == [b"c3"]


def test_a_smaller_mailbox_alone_is_a_valid_setting_and_its_shares_shrink_with_it() -> None:
    """An operator who lowers only `mailbox_per_id_max` below the shares' defaults gets a node that starts (before,
    a ConfigError at start-up for two settings the operator never set), and a share above the mailbox is the whole
    mailbox: one key fills a 16-entry mailbox, as it did before there were shares."""
    small = attrs.evolve(SHIPPED, mailbox_per_id_max=16)
    c = RelayCore(node_id=S, config=small, rng=random.Random(5), now=0.0, sign=KEYS[0].sign, wall_offset_s=WALL0_S)
    c.members_changed(MEMBERS, 0.0)
    c.drain()
    for i in range(18):
        c.peer_message(P, put(P, OWNED[0], sender=A, eid=b"q%02d" % i + bytes(13)), 0.0)
    assert events(c.drain()) == [MailboxStatus.STORED] * 16 + [MailboxStatus.FULL] * 2
