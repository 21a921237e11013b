"""The owner-side push rules, pure (node/protocol/relay/push.py through RelayCore): who pushes, when, how often."""

from __future__ import annotations

import random

import attrs

from node.protocol.identity import Identity
from node.protocol.refusals import Refusal
from node.protocol.relay.core import RelayCore, ToPeer
from node.protocol.relay.push import PushDropped, SendPush
from node.protocol.relay.rendezvous import owners
from node.protocol.settings import PushSection, RelaySection
from node.protocol.webpush import new_private_key, public_point
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import MailboxPut, PeerEnvelope
from node.protocol.wire.push import PushClaim, PushSub, PushUnsub
from node.testing.relaysim import client_claim, sim_client

ORIGIN = b"o" * 32
SENDER = sim_client(b"push-sender")
SENDER_CLAIM = client_claim(SENDER, ORIGIN, 0.0)  # the caller is homed on ORIGIN (docs/protocol.md, "Relay authority")
P256 = public_point(new_private_key(random.Random(5).randbytes))


def _node(i: int) -> bytes:
    return bytes([i]) * 32


def _callee_ranked(me: bytes, members: list[bytes], rank: int, skip: int = 0) -> bytes:
    """A client id (with a key, so that it can sign its home claim) that `me` owns at `rank`."""
    for n in range(skip, 1_000):
        client = sim_client(b"push-callee-%d" % n)
        ranked = owners(client, members, 3)
        if me in ranked and ranked.index(me) == rank:
            return client
    raise AssertionError("no such client")


def _core(me: bytes, members: list[bytes], **push: object) -> RelayCore:
    core = RelayCore(
        node_id=me,
        config=RelaySection(mailbox_ttl=60.0),
        rng=random.Random(1),
        now=0.0,
        sign=Identity.from_seed(me).sign,
        push=attrs.evolve(PushSection(fallback_s=0.5), **push),
    )
    core.members_changed(members, 0.0)
    core.drain()
    return core


def _sub_msg(client: bytes, ttl_ms: int = 3_600_000, p256dh: bytes = P256, home: bytes = ORIGIN) -> PushSub:
    """The client's subscription as its home sends it, with the client's claim naming that home."""
    claim = client_claim(client, home, 0.0)
    return PushSub(
        id=client,
        endpoint="https://push.example.org/x",
        p256dh=p256dh,
        auth=b"a" * 16,
        ttl_ms=ttl_ms,
        home=home,
        claim_nonce=claim.nonce,
        claim_sig=claim.sig,
    )


def _sub(core: RelayCore, client: bytes, now: float, ttl_ms: int = 3_600_000, p256dh: bytes = P256) -> None:
    core.peer_message(ORIGIN, _sub_msg(client, ttl_ms, p256dh), now)


def _offer(core: RelayCore, client: bytes, n: int, now: float, kind: Kind = Kind.CALL_OFFER) -> bytes:
    eid = n.to_bytes(16, "big")
    env = PeerEnvelope(
        eid=eid,
        origin=ORIGIN,
        to=client,
        sender=SENDER,
        kind=kind,
        call=b"c%d" % n,
        body=b"",
        claim_nonce=SENDER_CLAIM.nonce,
        claim_sig=SENDER_CLAIM.sig,
    )
    core.peer_message(ORIGIN, MailboxPut(env=env, ttl_ms=60_000), now)
    return eid


def _pushes(core: RelayCore) -> list[SendPush | PushDropped]:
    return [c for c in core.drain() if isinstance(c, (SendPush, PushDropped))]


MEMBERS = [ORIGIN, _node(1), _node(2), _node(3)]


def test_first_owner_pushes_at_once_with_the_mailbox_ttl_and_claims() -> None:
    me = _node(1)
    core = _core(me, MEMBERS)
    carol = _callee_ranked(me, MEMBERS, 0)
    _sub(core, carol, 0.0)
    _offer(core, carol, 1, 10.0)
    out = core.drain()
    [push] = [c for c in out if isinstance(c, SendPush)]
    assert push.ttl_s == 60 and push.client == carol
    claims = [c for c in out if isinstance(c, ToPeer) and isinstance(c.msg, PushClaim)]
    assert sorted(c.node for c in claims) == sorted(o for o in owners(carol, MEMBERS, 3) if o != me)
    _offer(core, carol, 2, 11.0, kind=Kind.CALL_ICE)
    _offer(core, carol, 1, 12.0)  # the same eid again (a retried put): considered once
    assert _pushes(core) == []


def test_second_owner_waits_and_a_claim_cancels_its_push() -> None:
    me = _node(2)
    core = _core(me, MEMBERS)
    carol = _callee_ranked(me, MEMBERS, 1)
    _sub(core, carol, 0.0)
    eid = _offer(core, carol, 1, 1.0)
    core.tick(1.4)
    assert _pushes(core) == []
    core.peer_message(owners(carol, MEMBERS, 3)[0], PushClaim(eid=eid, id=carol), 1.45)
    core.tick(3.0)
    assert _pushes(core) == []
    _offer(core, carol, 2, 4.0)  # nobody claims this one: the fallback fires after 1 * fallback_s
    core.tick(4.49)
    assert _pushes(core) == []
    core.tick(4.5)
    assert [type(c) for c in _pushes(core)] == [SendPush]


def test_a_failed_first_owner_makes_the_second_push_at_once() -> None:
    me = _node(3)
    core = _core(me, MEMBERS)
    carol = _callee_ranked(me, MEMBERS, 1)
    _sub(core, carol, 0.0)
    _offer(core, carol, 1, 1.0)
    assert _pushes(core) == []
    core.peer_unreachable(owners(carol, MEMBERS, 3)[0], 1.1)
    core.tick(1.1)
    assert [type(c) for c in _pushes(core)] == [SendPush]


def test_pushes_per_callee_are_bounded_per_minute() -> None:
    me = _node(1)
    core = _core(me, MEMBERS, per_callee_per_minute_max=2)
    carol = _callee_ranked(me, MEMBERS, 0)
    _sub(core, carol, 0.0)
    for n in range(3):
        _offer(core, carol, n, 1.0)
    assert [type(c) for c in _pushes(core)] == [SendPush, SendPush, PushDropped]
    _offer(core, carol, 9, 31.0)  # 30 s later one push's worth has refilled
    assert [type(c) for c in _pushes(core)] == [SendPush]


def test_subscriptions_expire_and_are_removed_when_gone() -> None:
    me = _node(1)
    core = _core(me, MEMBERS, subscription_ttl_s=10.0)
    carol = _callee_ranked(me, MEMBERS, 0)
    _sub(core, carol, 0.0)  # asks for an hour: capped at this node's subscription_ttl_s
    core.tick(10.5)
    _offer(core, carol, 1, 10.5)
    assert _pushes(core) == [] and len(core.push.held) == 0
    _sub(core, carol, 11.0)
    core.push_gone(carol, "https://push.example.org/x", 11.0)
    out = core.drain()
    assert len(core.push.held) == 0  # dropped here only: each co-owner learns it from its own push (rule 5)
    assert [c for c in out if isinstance(c, ToPeer) and isinstance(c.msg, PushUnsub)] == []


def test_held_subscriptions_move_to_new_owners() -> None:
    me = _node(1)
    core = _core(me, MEMBERS)
    carol = _callee_ranked(me, MEMBERS, 2)
    _sub(core, carol, 0.0)
    assert core.push.held.get(carol, 0.0) is not None
    newcomer = _node(9)
    core.members_changed([*MEMBERS, newcomer], 1.0)
    out = core.drain()
    after = owners(carol, [*MEMBERS, newcomer], 3)
    sent_to = {c.node for c in out if isinstance(c, ToPeer) and isinstance(c.msg, PushSub)}
    assert sent_to == ({newcomer} if newcomer in after else set())
    assert (core.push.held.get(carol, 1.0) is not None) == (me in after)


def test_a_subscription_from_a_peer_is_checked_like_a_client_s() -> None:
    me = _node(1)
    core = _core(me, MEMBERS)
    carol = _callee_ranked(me, MEMBERS, 0)
    _sub(core, carol, 0.0, p256dh=b"\x04" + b"\x01" * 64)  # wire-valid length, not a point on P-256
    assert len(core.push.held) == 0


# ---------------------------------------------------------------- authority (rule 5)

HOSTILE = _node(3)  # a member that homes none of these clients


def test_a_member_cannot_replace_a_subscription_of_a_client_it_does_not_home() -> None:
    """Before rule 5 any member's PUSH_SUB replaced the subscription: the callee's phone was never woken again and
    the member was told of every call to it. Now it needs the client's claim naming the sender as its home."""
    me = _node(1)
    core = _core(me, MEMBERS)
    carol = _callee_ranked(me, MEMBERS, 0)
    _sub(core, carol, 0.0)
    real = core.push.held.get(carol, 0.0)
    assert real is not None
    evil = attrs.evolve(_sub_msg(carol), endpoint="https://evil.example.org/x")  # carol's claim names ORIGIN
    core.peer_message(HOSTILE, evil, 1.0)  # as a hand-off (all 4 members are within the top 2R): ignored
    unsigned = attrs.evolve(evil, home=HOSTILE)  # names itself: carol never signed that
    core.peer_message(HOSTILE, unsigned, 1.0)
    assert core.push.held.get(carol, 1.0) == real and core.refused[Refusal.FORGED] == 1
    other = _callee_ranked(me, MEMBERS, 0, skip=50)
    core.peer_message(_node(2), _sub_msg(other), 1.5)  # a hand-off of what is not held yet is taken
    assert core.push.held.get(other, 1.5) is not None
    _offer(core, carol, 1, 2.0)
    [push] = [c for c in _pushes(core) if isinstance(c, SendPush)]
    assert push.sub.endpoint == "https://push.example.org/x"


def test_a_member_cannot_drop_a_subscription_or_cancel_a_push_it_does_not_own() -> None:
    me = _node(1)
    members = [*MEMBERS, _node(4), _node(5), _node(6), _node(7), _node(8)]
    core = _core(me, members)
    carol = next(
        c for n in range(0, 1_000, 7) if HOSTILE not in owners(c := _callee_ranked(me, members, 1, skip=n), members, 3)
    )
    core.peer_message(ORIGIN, _sub_msg(carol), 0.0)
    core.peer_message(HOSTILE, PushUnsub(id=carol), 0.5)  # only the home the subscription came with may
    assert core.push.held.get(carol, 0.5) is not None
    eid = _offer(core, carol, 1, 1.0)
    core.peer_message(HOSTILE, PushClaim(eid=eid, id=carol), 1.1)  # not an owner of carol: no say
    core.tick(1.0 + core.push.config.fallback_s)
    assert [type(c) for c in _pushes(core)] == [SendPush]
    assert core.refused[Refusal.FORGED] == 2
    core.peer_message(ORIGIN, PushUnsub(id=carol), 2.0)  # the home itself (carol unregistered)
    assert core.push.held.get(carol, 2.0) is None


def test_one_member_cannot_fill_an_owners_subscription_table() -> None:
    """A member mints client keys at will, each signing a claim that names it as home, and sends their PUSH_SUBs to
    an owner. Before the per-home share, 40 of them filled a table of 40 and the owner then refused an honest home's
    subscription: the callee's phone was never woken for its calls. Now the member fills only its share."""
    me = _node(1)
    core = _core(me, MEMBERS, subscriptions_max=40, subscriptions_per_home_max=10)
    minted = [c for n in range(400) if me in owners(c := sim_client(b"minted-%d" % n), MEMBERS, 3)][:40]
    assert len(minted) == 40
    for client in minted:
        core.peer_message(HOSTILE, _sub_msg(client, home=HOSTILE), 0.0)
    assert core.push.held.count_share(HOSTILE) == 10
    carol = _callee_ranked(me, MEMBERS, 0)
    _sub(core, carol, 1.0)  # from carol's real home
    _offer(core, carol, 1, 2.0)
    [push] = [c for c in _pushes(core) if isinstance(c, SendPush)]
    assert push.client == carol
