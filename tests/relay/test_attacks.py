"""A hostile member and a hostile client against the simulated federation (issue 11, findings 3 and 4).

The hostile member M is a real member of the cluster whose frames the test writes by hand (`RelaySim.inject`),
as raw wire maps, so M can say anything the wire allows. Each test asserts what honest clients observe.
"""

from __future__ import annotations

import struct

import attrs

from node.protocol.identity import Identity, client_auth_message
from node.protocol.relay.rendezvous import owners
from node.protocol.wire import MsgType
from node.protocol.wire.client import Kind, Status
from node.protocol.wire.peer import LookupReply, MailboxPut
from node.testing.relaysim import WALL0_S, RelaySim, sim_client
from tests.relay.simcheck import SIM_CONFIG, Sent, Tracker

A, B, C = sim_client(b"attack-A"), sim_client(b"attack-B"), sim_client(b"attack-C")
DAY_MS = 86_400_000


def cluster(nodes: int = 6, **cfg: object) -> tuple[RelaySim, Tracker, list[bytes]]:
    sim = RelaySim(seed=11, config=attrs.evolve(SIM_CONFIG, **cfg), nodes=nodes)
    return sim, Tracker(sim), sim.alive()


def test_a_member_cannot_forge_an_envelope_from_a_client_of_another_node() -> None:
    sim, _, nodes = cluster()
    h = nodes[0]
    m = next(o for o in owners(A, sim.alive(), SIM_CONFIG.replicas) if o != h)  # M holds A's lease and its claim
    sim.connect(h, A)
    cb = sim.connect(h, B)
    sim.run_for(0.5)
    claim = getattr(sim.nodes[m].core.owner.leases, "claim", lambda *_: None)(A, h)  # main: no claims
    cn, cs = (claim.nonce, claim.sig) if claim is not None else (bytes(32), bytes(64))
    for n, origin in enumerate((m, h)):  # M as the origin; M pushing "H's" envelope as if from a mailbox
        frame = {
            "t": int(MsgType.ENVELOPE),
            "eid": bytes([n]) * 16,
            "o": origin,
            "to": B,
            "from": A,
            "k": "call_offer",
            "c": b"forged",
            "b": b"evil",
            "cn": cn,
            "cs": cs,
            "ex": 2**62,
            "os": bytes(64),
        }
        sim.inject(m, h, frame)
        sim.inject(m, h, {**frame, "eid": bytes([n + 8]) * 16, "os": b"", "ex": 0})
    for o in owners(B, sim.alive(), SIM_CONFIG.replicas):  # and as a hand-off into B's mailbox
        frame = {
            "t": int(MsgType.HANDOFF),
            "eid": b"h" * 16,
            "o": h,
            "to": B,
            "from": A,
            "k": "call_offer",
            "c": b"forged",
            "b": b"evil",
            "cn": cn,
            "cs": cs,
            "ex": 2**62,
            "os": bytes(64),
            "ttl": 60_000,
        }
        sim.inject(m, o, frame)
    sim.run_for(2.0)
    assert [d for d in sim.delivered[cb] if d.sender == A] == []


def test_a_member_cannot_move_a_clients_lease_to_itself() -> None:
    sim, t, nodes = cluster()
    s, h, m = nodes[0], nodes[1], nodes[2]
    ca, cb = sim.connect(s, A), sim.connect(h, B)
    sim.run_for(0.5)
    for o in owners(B, sim.alive(), SIM_CONFIG.replicas):
        sim.inject(m, o, {"t": int(MsgType.LEASE_DROP), "h": h, "ids": [B]})
        sim.inject(
            m, o, {"t": int(MsgType.LEASE), "h": m, "ids": [B], "ns": [bytes(32)], "sg": [bytes(64)], "ttl": DAY_MS}
        )
    sim.run_for(0.5)
    sent = t.send(ca, B, Kind.CALL_OFFER, b"call-1")
    sim.run_for(2.0)
    assert t.statuses(sent) == [Status.DELIVERED]
    assert [d.body for d in sim.delivered[cb]] == [sent.body]


def _claims_for_home(home: bytes, n: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """n fresh client keys that each really signed "I am at `home`" (the best a hostile home can do)."""
    nonce = struct.pack(">Q", int(WALL0_S * 1000)) + bytes(24)
    keys = [Identity.from_seed(struct.pack(">Q", i) * 4) for i in range(n)]
    return [k.id for k in keys], [nonce] * n, [k.sign(client_auth_message(home, nonce)) for k in keys]


def test_a_lease_flood_does_not_hide_a_newly_connected_client() -> None:
    sim, t, nodes = cluster(leases_max=3000)
    s, h, m = nodes[0], nodes[1], nodes[2]
    ca = sim.connect(s, A)
    ids, nonces, sigs = _claims_for_home(m, 1024)
    fake = [bytes([i % 256, i // 256]) * 16 for i in range(3072)]
    for victim in nodes:
        if victim == m:
            continue
        for i in range(0, len(fake), 512):  # fake ids, no claims (what the attacker did)
            sim.inject(
                m,
                victim,
                {
                    "t": int(MsgType.LEASE),
                    "h": m,
                    "ids": fake[i : i + 512],
                    "ttl": DAY_MS,
                    "ns": [bytes(32)] * 512,
                    "sg": [bytes(64)] * 512,
                },
            )
        for i in range(0, len(ids), 256):  # real keys whose claims name M: M's own quota bounds them
            sim.inject(
                m,
                victim,
                {
                    "t": int(MsgType.LEASE),
                    "h": m,
                    "ids": ids[i : i + 256],
                    "ns": nonces[i : i + 256],
                    "sg": sigs[i : i + 256],
                    "ttl": DAY_MS,
                },
            )
    sim.run_for(0.5)
    cc = sim.connect(h, C)
    sim.run_for(0.5)
    sent = t.send(ca, C, Kind.CALL_OFFER, b"call-2")
    sim.run_for(2.0)
    assert t.statuses(sent) == [Status.DELIVERED]
    assert len(sim.delivered[cc]) == 1


def test_one_address_with_fresh_keys_cannot_fill_the_mailboxes() -> None:
    cfg = {"mailbox_total_max": 300, "mailbox_per_id_max": 8}
    sim, t, nodes = cluster(**cfg)
    s, other = nodes[0], nodes[1]
    for k in range(60):  # 60 fresh keys, one address, 20 offers each to fresh offline ids
        conn = sim.connect(s, sim_client(b"flood-%d" % k), address="203.0.113.9")
        for j in range(20):
            t.send(conn, sim_client(b"offline-%d-%d" % (k, j)), Kind.CALL_OFFER, b"x")
        sim.run_for(0.01)
    sim.run_for(0.5)
    for caller_node in (s, other):
        honest = sim.connect(caller_node, sim_client(b"honest-%d" % caller_node[0]), address="198.51.100.1")
        sent = t.send(honest, sim_client(b"unused-%d" % caller_node[0]), Kind.CALL_OFFER, b"call-3")
        sim.run_for(0.5)
        assert t.statuses(sent) == [Status.QUEUED], caller_node.hex()
    t.check_safety()


def test_what_a_member_still_learns_where_any_id_is_homed_and_who_calls_whom_through_it() -> None:
    """Not a protection: the leaks docs/security.md lists for a hostile member, shown so they stay documented."""
    sim, t, nodes = cluster()
    s, h = nodes[0], nodes[1]
    m = next(o for o in owners(B, sim.alive(), SIM_CONFIG.replicas) if o not in (s, h))
    seen = sim.watch(m)
    ca, cb = sim.connect(s, A), sim.connect(h, B)
    sim.run_for(0.5)
    for o in owners(B, sim.alive(), SIM_CONFIG.replicas):  # any member may ask where any id is homed
        sim.inject(m, o, {"t": int(MsgType.LOOKUP), "id": B})
    sim.run_for(0.5)
    assert {x.homes for x in seen if isinstance(x, LookupReply) and x.id == B} >= {(h,)}
    sim.disconnect(cb)
    sim.run_for(0.5)
    sent = t.send(ca, B, Kind.CALL_OFFER, b"call-4")
    sim.run_for(0.5)
    assert t.statuses(sent) == [Status.QUEUED]
    puts = [x.env for x in seen if isinstance(x, MailboxPut)]  # as B's owner, M sees who calls B
    assert [(e.sender, e.to, e.call) for e in puts] == [(A, B, b"call-4")]


def test_what_a_stranger_learns_delivered_means_online_queued_means_offline() -> None:
    sim, t, nodes = cluster()
    stranger = sim.connect(nodes[0], sim_client(b"stranger"))
    cb = sim.connect(nodes[1], B)
    sim.run_for(0.5)
    online = t.send(stranger, B, Kind.CALL_HANGUP, b"probe-1")
    sim.run_for(0.5)
    sim.disconnect(cb)
    sim.run_for(0.5)
    offline = t.send(stranger, B, Kind.CALL_HANGUP, b"probe-2")
    sim.run_for(0.5)
    assert t.statuses(online) == [Status.DELIVERED] and t.statuses(offline) == [Status.QUEUED]


def _queued_offer(call: bytes) -> tuple[RelaySim, Tracker, tuple[bytes, ...], bytes, Sent]:
    """A cluster where A (on a node that owns nothing of C) sent offline C an offer, queued at C's owners:
    (sim, tracker, C's owners, a node that is not an owner for C to come online at, the offer sent)."""
    sim, t, nodes = cluster()
    own = owners(C, sim.alive(), SIM_CONFIG.replicas)
    s, h = [n for n in nodes if n not in own][:2]
    ca = sim.connect(s, A)
    sim.run_for(0.5)
    sent = t.send(ca, C, Kind.CALL_OFFER, call)
    sim.run_for(0.5)
    assert t.statuses(sent) == [Status.QUEUED]
    return sim, t, own, h, sent


def test_a_member_cannot_make_its_co_owners_delete_a_queued_envelope() -> None:
    """M, one of the R owners of an offline callee, learns the eid of a queued offer from its own replica, tells
    the other owners it was delivered (MAILBOX_TAKE) and drops its own copy. Dropping is all M may do: the other
    replicas must still reach the callee. Before, every co-owner forgot its copy on M's word alone: the callee
    never got the call and its caller got `queued`, then `expired`."""
    sim, t, own, h, sent = _queued_offer(b"call-take")
    m = own[0]
    entries = sim.nodes[m].core.owner.mailbox.entries(C)
    assert len(entries) == 1
    eid = entries[0].env.eid
    for o in own[1:]:
        assert sim.inject(m, o, {"t": int(MsgType.MAILBOX_TAKE), "ids": [eid]})
    sim.nodes[m].core.owner.mailbox.remove(eid)  # M drops its own replica (what it may do)
    sim.run_for(0.5)
    cc = sim.connect(h, C)
    sim.run_for(2.0)
    assert [d.body for d in sim.delivered[cc]] == [sent.body]
    assert t.statuses(sent) == [Status.QUEUED, Status.DELIVERED]


def test_a_member_cannot_spend_an_honest_envelopes_eid_at_the_home() -> None:
    """M, an owner of an offline callee, learns the eid of a queued offer from its own replica. When the callee
    comes online, M (as the origin of its own client X, whose claim is valid) sends the home an envelope of its own
    under that eid, which reaches the home before the owners' pushes. The home must not take the honest offer for a
    repeat of M's: eids are drawn by each origin, so one origin's eid says nothing about another's. Before, the
    home remembered eids alone: the callee got M's junk, the real offer was answered `delivered` unseen, and its
    caller was told `delivered`."""
    sim, t, nodes = cluster()
    own = owners(C, sim.alive(), SIM_CONFIG.replicas)
    m = own[0]
    s, h = [n for n in nodes if n not in own][:2]
    x = sim_client(b"attack-X")
    cx = sim.connect(m, x)
    ca = sim.connect(s, A)
    sim.run_for(0.5)
    xclaim = sim.nodes[m].core.home.conns[cx].claim
    sent = t.send(ca, C, Kind.CALL_OFFER, b"call-eid")
    sim.run_for(0.5)
    assert t.statuses(sent) == [Status.QUEUED]
    eid = sim.nodes[m].core.owner.mailbox.entries(C)[0].env.eid
    sim.nodes[m].core.owner.mailbox.remove(eid)  # M drops its own replica (what it may do)
    cc = sim.connect(h, C)  # M would learn this from the home's lease; here it sends at once
    frame = {
        "t": int(MsgType.ENVELOPE),
        "eid": eid,
        "o": m,
        "to": C,
        "from": x,
        "k": "call_offer",
        "c": b"junk",
        "b": b"junk",
        "cn": xclaim.nonce,
        "cs": xclaim.sig,
        "ex": 0,
        "os": b"",
    }
    assert sim.inject(m, h, frame)
    sim.run_for(2.0)
    assert sent.body in [d.body for d in sim.delivered[cc]]
    assert t.statuses(sent) == [Status.QUEUED, Status.DELIVERED]


def test_an_owner_cannot_replay_a_delivered_mailbox_envelope_while_its_signature_is_still_taken() -> None:
    """M, an owner of an offline callee, keeps the queued offer it was given (origin-signed, as every mailbox
    envelope) and pushes it to the callee's home again after the home's seen-set forgot its eid. The home takes an
    origin signature until its expiry plus the clock skew it allows (`claim_skew_s`, 300 s), so it must remember the
    eid that long. Before, it forgot it 74 s (here 8.5 s) after delivery: the callee got the offer twice."""
    from node.protocol.wire.peer import peer_to_map

    sim, _, own, h, sent = _queued_offer(b"call-replay")
    m = own[0]
    kept = sim.nodes[m].core.owner.mailbox.entries(C)[0].env  # M keeps a copy
    cc = sim.connect(h, C)
    sim.run_for(2.0)
    assert [d.body for d in sim.delivered[cc]] == [sent.body]
    sim.run_for(SIM_CONFIG.mailbox_ttl + 4 * (SIM_CONFIG.attempts_max + 4) * SIM_CONFIG.peer_timeout_s)
    assert sim.inject(m, h, peer_to_map(kept))
    sim.run_for(1.0)
    assert [d.body for d in sim.delivered[cc]] == [sent.body]
