"""Node-to-node crypto: sealed datagrams (replay window) and peer-link sessions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.crypto import REPLAY_WINDOW, DatagramSealer, LinkHandshake, _ReplayWindow
from node.protocol.errors import RemoteProtocolError, Replayed
from node.protocol.identity import Identity

A = Identity.from_seed(b"a" * 32)
B = Identity.from_seed(b"b" * 32)
C = Identity.from_seed(b"c" * 32)


def test_seal_open_round_trip_and_replay_refused() -> None:
    sa, sb = DatagramSealer(A, epoch_ms=5), DatagramSealer(B, epoch_ms=7)
    p = sa.seal(B.id, b"hello")
    assert sb.open(p) == (A.id, b"hello")
    with pytest.raises(Replayed):
        sb.open(p)


def test_only_the_addressee_can_open() -> None:
    p = DatagramSealer(A, epoch_ms=1).seal(B.id, b"secret")
    with pytest.raises(RemoteProtocolError):
        DatagramSealer(C, epoch_ms=1).open(p)


def test_claimed_sender_must_hold_the_key() -> None:
    p = bytearray(DatagramSealer(A, epoch_ms=1).seal(B.id, b"x"))
    p[1:33] = C.id  # claim to be C
    with pytest.raises(RemoteProtocolError):
        DatagramSealer(B, epoch_ms=1).open(bytes(p))


def test_failed_packet_does_not_advance_the_window() -> None:
    sa, sb = DatagramSealer(A, epoch_ms=1), DatagramSealer(B, epoch_ms=1)
    good = sa.seal(B.id, b"ok")
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(RemoteProtocolError):
        sb.open(bytes(bad))
    assert sb.open(good)[1] == b"ok"


def test_restart_with_newer_epoch_accepted_older_refused() -> None:
    sb = DatagramSealer(B, epoch_ms=1)
    old = DatagramSealer(A, epoch_ms=100).seal(B.id, b"old")
    new = DatagramSealer(A, epoch_ms=200).seal(B.id, b"new")
    assert sb.open(new)[1] == b"new"
    with pytest.raises(Replayed):
        sb.open(old)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 200)), max_size=300))
def test_replay_window_accepts_each_packet_at_most_once(packets: list[tuple[int, int]]) -> None:
    w = _ReplayWindow()
    accepted: set[tuple[int, int]] = set()
    max_epoch = -1
    for epoch, counter in packets:
        if w.acceptable(epoch, counter):
            assert (epoch, counter) not in accepted
            assert epoch >= max_epoch, "an older epoch is never accepted"
            w.accept(epoch, counter)
            accepted.add((epoch, counter))
            max_epoch = max(max_epoch, epoch)


def test_replay_window_allows_reordering_within_the_window() -> None:
    w = _ReplayWindow()
    for c in (10, 8, 9, 3):
        assert w.acceptable(1, c)
        w.accept(1, c)
    assert not w.acceptable(1, 8)
    w.accept(1, 10 + REPLAY_WINDOW)
    assert not w.acceptable(1, 10), "too old once the window moved past it"


def test_link_sessions_agree_and_are_directional() -> None:
    ha, hb = LinkHandshake(A, b"1" * 32), LinkHandshake(B, b"2" * 32)
    peer_b, sa = ha.finish(hb.hello(), initiator=True)
    peer_a, sb = hb.finish(ha.hello(), initiator=False)
    assert (peer_b, peer_a) == (B.id, A.id)
    assert sb.open(sa.seal(b"ping")) == b"ping"
    assert sa.open(sb.seal(b"pong")) == b"pong"
    frame = sa.seal(b"once")
    assert sb.open(frame) == b"once"
    with pytest.raises(RemoteProtocolError):
        sb.open(frame)  # a replayed frame fails: the counter moved on


def test_link_handshake_with_an_impostor_derives_different_keys() -> None:
    """C claims to be B in its hello; C cannot derive A's keys because it lacks B's private key."""
    ha = LinkHandshake(A, b"1" * 32)
    hc = LinkHandshake(C, b"3" * 32)
    forged_hello = B.id + hc.hello()[32:]
    _, sa = ha.finish(forged_hello, initiator=True)
    _, sc = hc.finish(ha.hello(), initiator=False)
    with pytest.raises(RemoteProtocolError):
        sa.open(sc.seal(b"let me in"))
