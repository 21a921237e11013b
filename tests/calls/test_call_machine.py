"""The pure call state machine (node/protocol/call.py): phones joined by an in-memory router that delivers every
`Send` to every device of the recipient, as the nodes do (no network; the real-node flows are in test_call_flow.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.call import (
    Candidate,
    Changed,
    Command,
    Description,
    End,
    Phone,
    RestartIce,
    Send,
    State,
    Timers,
)
from node.protocol.e2ee import Ice
from node.protocol.identity import Identity

WALL = 1_800_000_000.0
SDP = "v=0\r\na=ice-ufrag:{u}\r\n"


class Net:
    """Every device of every id; `deliver` runs each Send to every device of its recipient, until quiet."""

    def __init__(self) -> None:
        self.devices: dict[bytes, list[Phone]] = {}
        self.events: dict[int, list[Command]] = {}
        self.sent: list[Send] = []
        self.hold = False
        self.held: list[Send] = []

    def phone(self, ident: Identity, seed: int, timers: Timers | None = None) -> Phone:
        rng = random.Random(seed)
        p = Phone(identity=ident, random_bytes=rng.randbytes, timers=timers)
        self.devices.setdefault(ident.id, []).append(p)
        self.events[id(p)] = []
        return p

    def run(self, p: Phone, cmds: list[Command], now: float = 0.0) -> None:
        queue = [(p, c) for c in cmds]
        while queue:
            src, cmd = queue.pop(0)
            if not isinstance(cmd, Send):
                self.events[id(src)].append(cmd)
                continue
            self.sent.append(cmd)
            if self.hold:
                self.held.append(cmd)
                continue
            for dev in self.devices.get(cmd.to, []):
                out = dev.on_envelope(
                    kind=cmd.kind, sender=src.identity.id, call=cmd.call, body=cmd.body, now=now, wall_s=WALL + now
                )
                queue += [(dev, c) for c in out]

    def states(self, p: Phone) -> list[tuple[State, End | None]]:
        return [(e.state, e.end) for e in self.events[id(p)] if isinstance(e, Changed)]

    def last(self, p: Phone) -> tuple[State, End | None]:
        return self.states(p)[-1]


def pair(timers: Timers | None = None) -> tuple[Net, Phone, Phone, Identity, Identity]:
    net = Net()
    a, b = Identity.generate(), Identity.generate()
    return net, net.phone(a, 1, timers), net.phone(b, 2, timers), a, b


def test_outgoing_connected_hangup_with_candidates_buffered_before_accept() -> None:
    net, alice, bob, _, b = pair()
    call, cmds = alice.start_call(peer=b.id, sdp=SDP.format(u="a1"), video=True, now=0, wall_s=WALL)
    net.run(alice, cmds)
    assert net.last(alice) == (State.OUTGOING, None) and net.last(bob) == (State.INCOMING, None)
    offer = [e for e in net.events[id(bob)] if isinstance(e, Description)]
    assert offer[0].what == "offer" and offer[0].video is True
    net.run(
        alice, alice.local_candidate(call, Ice(cand="candidate:1 1 udp 1 127.0.0.1 5000 typ host", ufrag="a1"), now=1)
    )
    assert not [e for e in net.events[id(bob)] if isinstance(e, Candidate)], "buffered until accept"
    net.run(bob, bob.accept(call, sdp=SDP.format(u="b1"), video=True, now=2), now=2)
    assert [e.ice.cand[:11] for e in net.events[id(bob)] if isinstance(e, Candidate)] == ["candidate:1"]
    assert net.last(alice) == (State.CONNECTING, None) and net.last(bob) == (State.CONNECTING, None)
    net.run(alice, alice.media_connected(call, now=3))
    net.run(bob, bob.media_connected(call, now=3))
    net.run(alice, alice.hangup(call, now=4))
    assert net.last(alice) == (State.ENDED, End.HANGUP) and net.last(bob) == (State.ENDED, End.HANGUP)
    assert {len(s.body) for s in net.sent if s.kind in ("call_offer", "call_answer")} <= {
        2 + 32 + 8192 + 16,
        2 + 32 + 32 + 8192 + 16,
    }


def test_reject_and_every_device_rings_then_answered_elsewhere() -> None:
    net = Net()
    a, b = Identity.generate(), Identity.generate()
    alice = net.phone(a, 1)
    bob1, bob2, bob3 = net.phone(b, 2), net.phone(b, 3), net.phone(b, 4)
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    assert all(net.last(d) == (State.INCOMING, None) for d in (bob1, bob2, bob3))
    net.run(bob2, bob2.accept(call, sdp="v=0", video=False, now=1), now=1)
    assert net.last(bob1) == (State.ENDED, End.ANSWERED_ELSEWHERE)
    assert net.last(bob3) == (State.ENDED, End.ANSWERED_ELSEWHERE)
    assert net.last(bob2) == (State.CONNECTING, None) and net.last(alice) == (State.CONNECTING, None)

    net2, carol, dave, _, d = pair()
    call, cmds = carol.start_call(peer=d.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net2.run(carol, cmds)
    net2.run(dave, dave.reject(call, reason="declined", now=1))
    assert net2.last(carol) == (State.ENDED, End.REJECTED) and net2.last(dave) == (State.ENDED, End.REJECTED)


def test_a_second_device_that_answers_too_late_is_told_answered_elsewhere() -> None:
    net = Net()
    a, b = Identity.generate(), Identity.generate()
    alice = net.phone(a, 1)
    bob1, bob2 = net.phone(b, 2), net.phone(b, 3)
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    net.hold = True  # both accept before either's answer or notice arrives
    answers = bob1.accept(call, sdp="v=0", video=False, now=1) + bob2.accept(call, sdp="v=0", video=False, now=1)
    net.run(bob1, answers[:3])
    net.run(bob2, answers[3:])
    net.hold = False
    for send in list(net.held):
        sender = bob1 if send in answers[:3] else bob2
        net.run(sender, [send], now=1)
    assert net.last(alice) == (State.CONNECTING, None)
    assert net.last(bob1) == (State.CONNECTING, None), "the first answer is kept"
    assert net.last(bob2) == (State.ENDED, End.ANSWERED_ELSEWHERE)


def test_busy_device_answers_busy_others_keep_ringing_caller_ends_busy_at_ring_timeout() -> None:
    timers = Timers(ring_timeout_s=5)
    net = Net()
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    alice, carol = net.phone(a, 1, timers), net.phone(c, 5, timers)
    bob1, bob2 = net.phone(b, 2, timers), net.phone(b, 3, timers)
    call0, cmds = carol.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(carol, cmds)
    net.run(bob1, bob1.accept(call0, sdp="v=0", video=False, now=0))  # bob1 is in a call with carol
    _call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=1, wall_s=WALL + 1)
    net.run(alice, cmds, now=1)
    assert net.last(bob1) == (State.ENDED, End.BUSY)
    assert bob1.calls[call0].state is State.CONNECTING, "the call bob1 is in goes on"
    assert net.last(bob2) == (State.INCOMING, None), "bob's other device keeps ringing"
    assert net.last(alice) == (State.OUTGOING, None)
    net.run(alice, alice.tick(6.5), now=6.5)
    assert net.last(alice) == (State.ENDED, End.BUSY)
    assert net.last(bob2) == (State.ENDED, End.MISSED)


def test_missed_stale_offer_and_pending_bodies() -> None:
    net, alice, bob, _, b = pair(Timers(ring_timeout_s=5))
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL - 10)
    net.run(alice, cmds)
    assert net.last(bob) == (State.ENDED, End.MISSED), "an offer older than the ring timeout only shows as missed"
    # a candidate that arrives before its offer is kept and applied once the offer is accepted
    net2, carol, dave, _, d = pair()
    call, cmds = carol.start_call(peer=d.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net2.hold = True
    net2.run(carol, cmds)
    net2.run(carol, carol.local_candidate(call, Ice(cand="candidate:9"), now=0))
    offer, ice = net2.held
    net2.hold = False
    net2.run(carol, [ice])
    net2.run(carol, [offer])
    net2.run(dave, dave.accept(call, sdp="v=0", video=False, now=1), now=1)
    assert [e.ice.cand for e in net2.events[id(dave)] if isinstance(e, Candidate)] == ["candidate:9"]
    assert net2.states(dave)[0] == (State.INCOMING, None)


def test_ring_timeout_missed_and_connect_timeout_failed() -> None:
    net, alice, bob, _, b = pair(Timers(ring_timeout_s=5, reconnect_window_s=3))
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    net.run(alice, alice.tick(5.0), now=5)
    assert net.last(alice) == (State.ENDED, End.MISSED) and net.last(bob) == (State.ENDED, End.MISSED)
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=10, wall_s=WALL + 10)
    net.run(alice, cmds, now=10)
    net.run(bob, bob.accept(call, sdp="v=0", video=False, now=11), now=11)
    net.run(alice, alice.tick(14.0), now=14)
    assert net.last(alice) == (State.ENDED, End.FAILED) and net.last(bob) == (State.ENDED, End.FAILED)


def test_an_expired_offer_is_withdrawn_so_a_ring_that_got_through_ends_missed_too() -> None:
    """`expired` is the first mailbox replica's word: another may still deliver the offer, and where the delivery
    receipts were lost the callee is ringing already. The caller's hangup `timeout` ends that ring as missed."""
    net, alice, bob, _, b = pair(Timers(ring_timeout_s=60))
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    assert net.last(bob) == (State.INCOMING, None)
    net.run(alice, alice.offer_expired(call, now=2), now=2)
    assert net.last(alice) == (State.ENDED, End.MISSED) and net.last(bob) == (State.ENDED, End.MISSED)
    assert [s.kind for s in net.sent] == ["call_offer", "call_hangup"]
    assert alice.offer_expired(call, now=3) == [], "a second receipt for an ended call sends nothing"


def test_gathering_timeout_sends_end_of_candidates() -> None:
    net, alice, _bob, _, b = pair()
    _call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    assert alice.next_deadline() == 10.0
    net.run(alice, alice.tick(10.0), now=10)
    assert net.sent[-1].kind == "call_ice" and alice.next_deadline() == 60.0


def test_reconnect_with_ice_restart_drops_stale_candidates_and_the_window_fails() -> None:
    net, alice, bob, _, b = pair(Timers(reconnect_window_s=30))
    call, cmds = alice.start_call(peer=b.id, sdp=SDP.format(u="a1"), video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    net.run(bob, bob.accept(call, sdp=SDP.format(u="b1"), video=False, now=1), now=1)
    net.run(alice, alice.media_connected(call, now=2))
    net.run(bob, bob.media_connected(call, now=2))
    net.run(alice, alice.media_lost(call, now=100), now=100)
    assert isinstance(net.events[id(alice)][-1], RestartIce) and net.last(alice) == (State.CONNECTING, None)
    net.run(alice, alice.renegotiate(call, sdp=SDP.format(u="a2"), video=False, now=101), now=101)
    reoffer = [e for e in net.events[id(bob)] if isinstance(e, Description)][-1]
    assert reoffer.what == "reoffer" and "a2" in reoffer.sdp
    net.run(bob, bob.reanswer(call, sdp=SDP.format(u="b2"), video=False, now=102), now=102)
    assert [e for e in net.events[id(alice)] if isinstance(e, Description)][-1].what == "reanswer"
    net.run(bob, bob.local_candidate(call, Ice(cand="candidate:old", ufrag="b1"), now=103), now=103)
    net.run(bob, bob.local_candidate(call, Ice(cand="candidate:new", ufrag="b2"), now=103), now=103)
    assert [e.ice.cand for e in net.events[id(alice)] if isinstance(e, Candidate)] == ["candidate:new"]
    net.run(alice, alice.media_connected(call, now=104))
    assert net.last(alice) == (State.CONNECTED, None)
    net.run(alice, alice.media_lost(call, now=200), now=200)
    net.run(alice, alice.tick(230.0), now=230)
    assert net.last(alice) == (State.ENDED, End.FAILED) and net.last(bob) == (State.ENDED, End.FAILED)


def test_glare_the_lower_id_wins_on_both_sides() -> None:
    net, alice, bob, a, b = pair()
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    net.run(alice, cmds)
    net.run(bob, bob.accept(call, sdp="v=0", video=False, now=1), now=1)
    net.hold = True
    net.run(alice, alice.renegotiate(call, sdp="v=0\r\na=x:alice", video=True, now=2), now=2)
    net.run(bob, bob.renegotiate(call, sdp="v=0\r\na=x:bob", video=True, now=2), now=2)
    net.hold = False
    for send in list(net.held):
        net.run(alice if send.to == b.id else bob, [send], now=2)
    winner, loser = (alice, bob) if a.id < b.id else (bob, alice)
    got = [e for e in net.events[id(loser)] if isinstance(e, Description) and e.what == "reoffer"]
    assert len(got) == 1 and ("alice" if winner is alice else "bob") in got[0].sdp
    assert not [e for e in net.events[id(winner)] if isinstance(e, Description) and e.what == "reoffer"]


def test_tampered_or_misrouted_bodies_change_nothing() -> None:
    net, alice, bob, a, b = pair()
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    offer = next(c for c in cmds if isinstance(c, Send))
    bad = bytearray(offer.body)
    bad[40] ^= 1
    assert bob.on_envelope(kind="call_offer", sender=a.id, call=call, body=bytes(bad), now=0, wall_s=WALL) == []
    mallory = Identity.generate()
    assert bob.on_envelope(kind="call_offer", sender=mallory.id, call=call, body=offer.body, now=0, wall_s=WALL) == []
    assert bob.on_envelope(kind="call_answer", sender=a.id, call=call, body=offer.body, now=0, wall_s=WALL) == []
    assert bob.calls == {}
    net.run(alice, cmds)
    assert bob.on_envelope(kind="call_offer", sender=a.id, call=call, body=offer.body, now=0, wall_s=WALL) == []


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_tampered_body_changes_no_call_state(data: st.DataObject) -> None:
    """A body with any one byte changed, or under another sender or call id, is dropped by every step of a call."""
    net, alice, bob, a, b = pair()
    call, cmds = alice.start_call(peer=b.id, sdp="v=0", video=False, now=0, wall_s=WALL)
    offer = next(c for c in cmds if isinstance(c, Send))

    def tampered(body: bytes) -> bytes:
        i = data.draw(st.integers(0, len(body) - 1), label="byte")
        flip = data.draw(st.integers(1, 255), label="xor")
        return body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]

    assert (
        bob.on_envelope(kind="call_offer", sender=a.id, call=call, body=tampered(offer.body), now=0, wall_s=WALL) == []
    )
    other_call = data.draw(st.binary(min_size=1, max_size=64).filter(lambda c: c != call), label="call")
    assert bob.on_envelope(kind="call_offer", sender=a.id, call=other_call, body=offer.body, now=0, wall_s=WALL) == []
    assert bob.calls == {}
    net.run(alice, cmds)
    ice = next(c for c in alice.local_candidate(call, Ice(cand="candidate:1"), now=0) if isinstance(c, Send))
    assert bob.on_envelope(kind="call_ice", sender=a.id, call=call, body=tampered(ice.body), now=0, wall_s=WALL) == []
    answer = next(c for c in bob.accept(call, sdp="v=0", video=False, now=1) if isinstance(c, Send))
    out = alice.on_envelope(kind="call_answer", sender=b.id, call=call, body=tampered(answer.body), now=1, wall_s=WALL)
    assert out == [] and alice.calls[call].state is State.OUTGOING
    mallory = Identity.generate()
    assert (
        alice.on_envelope(kind="call_answer", sender=mallory.id, call=call, body=answer.body, now=1, wall_s=WALL) == []
    )
    assert alice.calls[call].state is State.OUTGOING
