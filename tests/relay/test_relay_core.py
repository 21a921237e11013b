"""RelayCore routing decisions, driven by hand: one core, its commands inspected, peers played by the test."""

from __future__ import annotations

import random

import attrs

from node.protocol.identity import Identity
from node.protocol.relay.core import UNREACHABLE_RESCAN_S, RelayCore, ToClient, ToPeer
from node.protocol.relay.home import RENEW_SLICES
from node.protocol.relay.rendezvous import owners
from node.protocol.wire.client import Deliver, Envelope, Kind, Reason, Receipt, Status
from node.protocol.wire.peer import (
    EnvelopeResult,
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
    ResultStatus,
)
from node.testing.relaysim import WALL0_S, client_claim, sim_client
from tests.relay.simcheck import SIM_CONFIG

S_KEY = Identity.from_seed(b"\x10" * 32)
S = S_KEY.id
PEERS = [bytes([0x20 + i]) * 32 for i in range(6)]
A = sim_client(b"core-A")
# a callee none of whose owners is S, so every owner exchange is visible as a ToPeer command
B = next(b for b in (sim_client(b"core-B%d" % i) for i in range(256)) if S not in owners(b, [S, *PEERS], 3))


def online(c: RelayCore, conn: int, client: bytes, now: float, address: str = "192.0.2.1") -> None:
    c.client_online(conn, client, now, claim=client_claim(client, c.node_id, WALL0_S + now), address_key=address)


def core(**cfg: object) -> RelayCore:
    c = RelayCore(
        node_id=S,
        config=attrs.evolve(SIM_CONFIG, **cfg),
        rng=random.Random(3),
        now=0.0,
        sign=S_KEY.sign,
        wall_offset_s=WALL0_S,
    )
    c.members_changed([S, *PEERS], 0.0)
    online(c, 1, A, 0.0)
    c.drain()
    return c


def env(kind: Kind = Kind.CALL_OFFER, ref: int = 1, to: bytes = B) -> Envelope:
    return Envelope(kind=kind, to=to, call=b"c", body=b"hi", ref=ref)


def peer_msgs(cmds: list[object], cls: type) -> list[ToPeer]:
    return [c for c in cmds if isinstance(c, ToPeer) and isinstance(c.msg, cls)]


def receipts(cmds: list[object]) -> list[Receipt]:
    return [c.msg for c in cmds if isinstance(c, ToClient) and isinstance(c.msg, Receipt)]


def remote_owners() -> list[bytes]:
    return list(owners(B, [S, *PEERS], 3))


def test_local_recipient_is_delivered_here_and_on_its_other_devices_homes() -> None:
    """Every device of the recipient gets the envelope (docs/client-protocol.md): a local one, and those on the
    homes the owners know; with no other home there is no envelope traffic to peers."""
    c = core()
    online(c, 2, B, 0.0)
    c.drain()
    c.client_envelope(1, env(), 0.0)
    asked = peer_msgs(c.drain(), Lookup)
    assert asked, "the recipient's other devices are looked up"
    c.peer_message(asked[0].node, LookupReply(id=B, homes=(S,)), 0.01)
    cmds = c.drain()
    deliver = [x for x in cmds if isinstance(x, ToClient) and isinstance(x.msg, Deliver)]
    assert [d.conn_id for d in deliver] == [2] and len(deliver[0].msg.eid) == 16
    assert receipts(cmds) == [Receipt(ref=1, status=Status.DELIVERED)]
    assert not peer_msgs(cmds, PeerEnvelope)
    assert c.stats().outcomes == {("call_offer", "delivered"): 1}
    c.client_envelope(1, env(ref=2), 0.02)  # within lookup_cache_s: the cached homes, no new lookup
    cmds = c.drain()
    assert not peer_msgs(cmds, Lookup) and receipts(cmds) == [Receipt(ref=2, status=Status.DELIVERED)]


def test_a_device_elsewhere_gets_the_envelope_although_one_is_local() -> None:
    c = core()
    online(c, 2, B, 0.0)
    c.drain()
    c.client_envelope(1, env(), 0.0)
    asked = peer_msgs(c.drain(), Lookup)
    c.peer_message(asked[0].node, LookupReply(id=B, homes=(S, PEERS[0])), 0.01)
    cmds = c.drain()
    assert [x.node for x in peer_msgs(cmds, PeerEnvelope)] == [PEERS[0]]
    assert [x.conn_id for x in cmds if isinstance(x, ToClient) and isinstance(x.msg, Deliver)] == [2]


def test_lookup_goes_to_all_owners_then_forwards_and_caches() -> None:
    c = core()
    c.client_envelope(1, env(), 0.0)
    asked = peer_msgs(c.drain(), Lookup)
    assert sorted(x.node for x in asked) == sorted(remote_owners())
    home = PEERS[-1]
    c.peer_message(asked[0].node, LookupReply(id=B, homes=(home,)), 0.01)
    fwd = peer_msgs(c.drain(), PeerEnvelope)
    assert [x.node for x in fwd] == [home]
    c.peer_message(home, EnvelopeResult(eid=fwd[0].msg.eid, status=ResultStatus.DELIVERED), 0.02)
    assert receipts(c.drain()) == [Receipt(ref=1, status=Status.DELIVERED)]
    assert c.stats().latencies_s == (0.02,)
    c.client_envelope(1, env(Kind.CALL_ICE, ref=2), 0.5)  # within lookup_cache_s: no lookup
    cmds = c.drain()
    assert not peer_msgs(cmds, Lookup) and [x.node for x in peer_msgs(cmds, PeerEnvelope)] == [home]


def test_not_here_relooks_up_and_gives_up_to_the_mailbox_after_attempts_max() -> None:
    c = core(attempts_max=2)
    c.client_envelope(1, env(), 0.0)
    home = PEERS[-1]
    for attempt in range(2):
        for o in peer_msgs(c.drain(), Lookup):
            c.peer_message(o.node, LookupReply(id=B, homes=(home,)), 0.0)
        fwd = peer_msgs(c.drain(), PeerEnvelope)
        assert len(fwd) == 1, f"attempt {attempt}"
        c.peer_message(home, EnvelopeResult(eid=fwd[0].msg.eid, status=ResultStatus.NOT_HERE), 0.0)
    puts = peer_msgs(c.drain(), MailboxPut)
    assert sorted(x.node for x in puts) == sorted(remote_owners())
    c.peer_message(puts[0].node, MailboxEvent(eid=puts[0].msg.env.eid, status=MailboxStatus.STORED), 0.1)
    assert receipts(c.drain()) == [Receipt(ref=1, status=Status.QUEUED)]


def test_first_terminal_wins_later_ones_are_dropped() -> None:
    c = core()
    c.client_envelope(1, env(), 0.0)
    for o in peer_msgs(c.drain(), Lookup):
        c.peer_message(o.node, LookupReply(id=B, homes=()), 0.0)
    puts = peer_msgs(c.drain(), MailboxPut)
    eid = puts[0].msg.env.eid
    for p in puts:
        c.peer_message(p.node, MailboxEvent(eid=eid, status=MailboxStatus.STORED), 0.1)
    for p in puts:
        c.peer_message(p.node, RelayReceipt(eid=eid, status=ReceiptStatus.EXPIRED), 5.0)
        c.peer_message(p.node, RelayReceipt(eid=eid, status=ReceiptStatus.DELIVERED), 5.0)
    assert receipts(c.drain()) == [Receipt(ref=1, status=Status.QUEUED), Receipt(ref=1, status=Status.EXPIRED)]


def test_queued_envelope_without_any_receipt_expires_at_the_origin() -> None:
    c = core()
    c.client_envelope(1, env(), 0.0)
    for o in peer_msgs(c.drain(), Lookup):
        c.peer_message(o.node, LookupReply(id=B, homes=()), 0.0)
    put = peer_msgs(c.drain(), MailboxPut)[0]
    c.peer_message(put.node, MailboxEvent(eid=put.msg.env.eid, status=MailboxStatus.STORED), 0.0)
    c.drain()
    # the owners never say anything again (they all died unseen): the origin's own timer ends it
    give_up = SIM_CONFIG.mailbox_ttl + SIM_CONFIG.peer_timeout_s
    assert c.next_deadline() <= give_up
    c.tick(give_up)
    assert receipts(c.drain()) == [Receipt(ref=1, status=Status.EXPIRED)]


def test_all_owners_full_is_rate_limited() -> None:
    c = core()
    c.client_envelope(1, env(), 0.0)
    for o in peer_msgs(c.drain(), Lookup):
        c.peer_message(o.node, LookupReply(id=B, homes=()), 0.0)
    puts = peer_msgs(c.drain(), MailboxPut)
    for p in puts:
        c.peer_message(p.node, MailboxEvent(eid=p.msg.env.eid, status=MailboxStatus.FULL), 0.0)
    assert receipts(c.drain()) == [Receipt(ref=1, status=Status.REJECTED, reason=Reason.RATE_LIMITED)]


def test_pending_table_bound_rejects_as_rate_limited() -> None:
    c = core(pending_max=1)
    c.client_envelope(1, env(ref=1), 0.0)
    c.client_envelope(1, env(ref=2), 0.0)
    assert Receipt(ref=2, status=Status.REJECTED, reason=Reason.RATE_LIMITED) in receipts(c.drain())


def test_frames_from_non_members_change_nothing() -> None:
    c = core()
    stranger = b"\x99" * 32
    claim = client_claim(B, stranger, WALL0_S)
    c.peer_message(stranger, Lease(home=stranger, claims=(claim,), ttl_ms=30_000), 0.0)
    assert c.owner.leases.homes(B, 0.0) == () and c.drain() == []


def test_home_leases_to_owners_and_renews() -> None:
    c = core()
    online(c, 2, B, 1.0)
    leased = peer_msgs(c.drain(), Lease)
    assert sorted(x.node for x in leased) == sorted(remote_owners())
    # renewals come in slices spread over each period (RENEW_SLICES): within one period after B came online,
    # every owner of B has its lease renewed, each slice small
    period = SIM_CONFIG.lease_ttl_s / 3
    renewed: set[bytes] = set()
    slices = 0
    while (renew := c.next_deadline()) <= 1.0 + period:
        c.tick(renew)
        leases = peer_msgs(c.drain(), Lease)
        renewed |= {x.node for x in leases if any(k.client == B for k in x.msg.claims)}
        slices += 1
        assert slices <= 3 * RENEW_SLICES, "renewal ticks do not advance"
    assert renewed >= set(remote_owners())
    assert slices >= RENEW_SLICES // 2, "a period's renewals should be spread over several slices"


def test_a_hello_verified_by_the_session_is_not_verified_again_by_the_owner_role() -> None:
    """The home claim a local session hands over was verified in its handshake; the owner role (here this node,
    the only member) takes the lease without a second Ed25519 verification (one per handshake saved)."""
    c = RelayCore(node_id=S, config=SIM_CONFIG, rng=random.Random(3), now=0.0, sign=S_KEY.sign, wall_offset_s=WALL0_S)
    online(c, 1, A, 0.0)
    c.drain()
    assert c.owner.leases.homes(A, 1.0) == (S,)
    assert c.verifier.verifications == 0


def test_a_member_leaving_moves_the_clients_with_one_lease_per_new_owner_not_one_per_client() -> None:
    """A node that leaves makes every survivor re-lease the clients it owned: grouped by new owner (in chunks of
    LEASE_CLAIMS_MAX), they are a few frames; one per client and owner (the code before) were thousands."""
    c = core()
    clients = [sim_client(b"core-many-%d" % i) for i in range(600)]
    for i, client in enumerate(clients):
        online(c, 10 + i, client, 1.0)
    c.drain()
    gone = PEERS[0]
    c.members_changed([S, *PEERS[1:]], 2.0)
    leases = peer_msgs(c.drain(), Lease)
    moved = {
        (x.node, k.client) for x in leases for k in x.msg.claims if k.home == S
    }  # (new owner, client) pairs this home told
    expected = {
        (o, k)
        for k in [A, *clients]
        for o in owners(k, [S, *PEERS[1:]], 3)
        if o != S and o not in owners(k, [S, *PEERS], 3)
    }
    assert expected and moved >= expected
    assert all(x.node != gone for x in leases)
    new_owners = {o for o, _ in expected}
    assert len(leases) <= len(new_owners) * 2, len(leases)  # one LEASE per new owner (300 claims: two chunks)


def test_a_storm_of_failed_sends_to_one_node_scans_for_fail_over_once_per_window() -> None:
    """Rule 11: a leaving node refuses every lease of a reconnect storm; each refusal used to rescan every table
    (cache, lookups, pending, in-flight pushes) for what waited on it, quadratic in the storm (docs/performance.md).
    1,000 failures in half a second now scan at most once per UNREACHABLE_RESCAN_S (1,000 scans before)."""
    c = core()
    scans: list[float] = []
    node_gone = c.owner.node_gone

    def counted(node: bytes, at: float, *, dead: bool) -> None:
        scans.append(at)
        node_gone(node, at, dead=dead)

    c.owner.node_gone = counted  # type: ignore[method-assign]
    now = 0.0
    for i in range(1000):
        now = i * 0.0005
        if c.next_deadline() <= now:
            c.tick(now)
        c.peer_unreachable(PEERS[0], now)
    c.tick(now + UNREACHABLE_RESCAN_S)
    assert 1 < len(scans) <= 0.5 / UNREACHABLE_RESCAN_S + 2, len(scans)
    assert c.next_deadline() > now + UNREACHABLE_RESCAN_S, "no scan left waiting"


def test_a_forward_to_a_node_that_failed_within_the_window_fails_over_at_the_windows_end() -> None:
    """Rule 11: a failure noted within a window is not forgotten: the forward that waits on the failed home is
    retried with a fresh lookup (rule 3) when the window ends, by `tick`."""
    c = core()
    home = PEERS[-1]
    c.peer_unreachable(home, 0.0)  # scanned now: nothing waited on it
    c.peer_message(home, EnvelopeResult(eid=bytes(16), status=ResultStatus.NOT_HERE), 0.0005)  # its link is up again
    c.client_envelope(1, env(), 0.001)
    for o in peer_msgs(c.drain(), Lookup):
        c.peer_message(o.node, LookupReply(id=B, homes=(home,)), 0.002)
    assert [x.node for x in peer_msgs(c.drain(), PeerEnvelope)] == [home]
    c.peer_unreachable(home, 0.01)  # within the window: noted
    assert not peer_msgs(c.drain(), Lookup)
    assert c.next_deadline() == UNREACHABLE_RESCAN_S
    c.tick(UNREACHABLE_RESCAN_S)
    asked = sorted(x.node for x in peer_msgs(c.drain(), Lookup))
    assert asked == sorted(o for o in remote_owners() if o != home), "looked up again (not at the down home, rule 12)"


def test_no_forward_goes_to_a_home_whose_link_just_failed_the_envelope_takes_the_mailbox_at_once() -> None:
    """Rule 12: after a node is killed, its link's redial backs off and holds what is sent meanwhile until the next
    dial; the owners still name it as the home of clients that have re-homed elsewhere until SWIM declares it dead.
    A forward there waited up to that backoff: 180-561 clients per 10,000-client kill -9 storm were callable 2 s
    late (docs/performance.md, "Sixth pass"). On the code before, the envelope was forwarded to the dead home."""
    c = core()
    dead = PEERS[-1]
    c.peer_unreachable(dead, 0.0)
    c.drain()
    c.client_envelope(1, env(), 0.01)
    for o in peer_msgs(c.drain(), Lookup):
        c.peer_message(o.node, LookupReply(id=B, homes=(dead,)), 0.02)
    cmds = c.drain()
    assert not peer_msgs(cmds, PeerEnvelope)
    assert sorted(x.node for x in peer_msgs(cmds, MailboxPut)) == sorted(remote_owners())


def test_a_home_whose_link_failed_is_forwarded_to_again_after_a_frame_from_it_or_after_a_peer_timeout() -> None:
    """Rule 12's other half: a node that was only unreachable for a moment (a restart, a flap) is not avoided for
    long. A frame from it ends the mark at once; without one, it ends after `peer_timeout_s`."""
    for ended_by in ("frame", "time"):
        c = core()
        home = PEERS[-1]
        c.peer_unreachable(home, 0.0)
        c.drain()
        now = 0.01
        if ended_by == "frame":
            c.peer_message(home, EnvelopeResult(eid=bytes(16), status=ResultStatus.NOT_HERE), now)
        else:
            now = c.config.peer_timeout_s + 0.01
            c.tick(now)
        c.drain()
        c.client_envelope(1, env(), now)
        for o in peer_msgs(c.drain(), Lookup):
            c.peer_message(o.node, LookupReply(id=B, homes=(home,)), now + 0.001)
        assert [x.node for x in peer_msgs(c.drain(), PeerEnvelope)] == [home], ended_by


def test_an_owner_whose_link_just_failed_is_not_asked_and_does_not_hold_up_the_lookup() -> None:
    """Rule 12: a lookup waits for every owner when the first answers are empty; an owner whose link just failed
    answered only when its link's next dial failed. It is not asked now, and the others' answers settle it."""
    c = core()
    down, *others = remote_owners()
    c.peer_unreachable(down, 0.0)
    c.drain()
    c.client_envelope(1, env(), 0.01)
    asked = [x.node for x in peer_msgs(c.drain(), Lookup)]
    assert sorted(asked) == sorted(others)
    for o in others:
        c.peer_message(o, LookupReply(id=B, homes=()), 0.02)
    assert peer_msgs(c.drain(), MailboxPut), "settled by the owners that answered: the mailbox path"


def test_a_queued_offer_whose_push_times_out_goes_to_the_recipients_other_home_at_once() -> None:
    """An owner pushes a mailbox entry to one home of its recipient. When that push timed out (or the link to that
    home failed) the entry waited for the next lease, up to a renewal period (10 s), although a lease from another,
    live home was there: in a goaway storm offers queued while their callee re-homed arrived 15-20 s late
    (docs/performance.md, "Fourth pass"). Now it goes to that other home at the timeout; on the code before, nothing
    was sent then."""
    c = core()
    to = next(x for x in (sim_client(b"core-owned%d" % i) for i in range(256)) if S in owners(x, [S, *PEERS], 3))
    c.client_envelope(1, env(to=to), 0.0)
    for o in peer_msgs(c.drain(), Lookup):
        c.peer_message(o.node, LookupReply(id=to, homes=()), 0.01)
    c.drain()  # the mailbox path: this node, an owner, stores it
    stale = max(p for p in PEERS if p not in owners(to, [S, *PEERS], 3))
    live = min(PEERS)
    for i, home in enumerate((stale, live)):
        claim = client_claim(to, home, WALL0_S + 0.02 + i * 0.01)
        c.peer_message(home, Lease(home=home, claims=(claim,), ttl_ms=30_000), 0.02 + i * 0.01)
        pushed = [x.node for x in peer_msgs(c.drain(), PeerEnvelope)]
        assert pushed == ([stale] if i == 0 else []), (i, pushed)  # one push at a time
    timeout = 0.02 + c.config.peer_timeout_s
    assert c.next_deadline() <= timeout
    c.tick(timeout)
    assert [x.node for x in peer_msgs(c.drain(), PeerEnvelope)] == [live], "pushed to the other home at the timeout"


def test_clients_leaving_in_one_batch_are_dropped_in_one_lease_drop_per_owner() -> None:
    """A stopping node's 10,000 clients end within a few scheduler batches. One LEASE_DROP frame per client and
    owner (20,000) overflowed the peer link's queue of 4,096 frames, and the refused drops left stale leases at
    the owners (docs/performance.md, "Fourth pass"). The drops of one batch now go at the next tick, one frame per
    owner and PEER_IDS_MAX ids; a client back online before that is not dropped."""
    c = core()
    clients = [sim_client(b"leaver%d" % i) for i in range(600)]
    for i, client in enumerate(clients):
        online(c, 100 + i, client, 0.0)
    c.drain()
    for i in range(len(clients)):
        c.client_offline(100 + i, 0.1)
    online(c, 99, clients[0], 0.1)  # came back within the batch
    assert not peer_msgs(c.drain(), LeaseDrop), "nothing before the tick"
    assert c.next_deadline() == 0.1, "due when the first one left (a simulator's clock goes to the deadline)"
    c.tick(0.1)
    drops = peer_msgs(c.drain(), LeaseDrop)
    dropped = [i for d in drops for i in d.msg.ids]
    expected = sum(1 for client in clients[1:] for o in owners(client, [S, *PEERS], 3) if o != S)
    assert len(dropped) == expected and clients[0] not in dropped
    owners_sent = {d.node for d in drops}
    assert len(drops) <= 2 * len(owners_sent), f"{len(drops)} frames for {len(owners_sent)} owners (one per id before)"
