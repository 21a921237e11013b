"""Node-to-node crypto: sealed datagrams (replay window) and peer-link sessions."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol import noise
from node.protocol.crypto import (
    DEFAULT_REKEY,
    LINK_FRAME_HEADER_BYTES,
    LINK_MAGIC,
    LINK_PROLOGUE,
    REPLAY_WINDOW,
    DatagramSealer,
    LinkHandshake,
    LinkSession,
    RekeyPolicy,
    _ReplayWindow,
)
from node.protocol.errors import RemoteProtocolError, Replayed, TooLarge
from node.protocol.identity import Identity, curve25519_public

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


def _rand(tag: int) -> Callable[[int], bytes]:
    return lambda n: bytes([tag]) * n


def _link(a: Identity = A, b: Identity = B, rekey: RekeyPolicy = DEFAULT_REKEY) -> tuple[LinkSession, LinkSession]:
    """A dials B: (A's session, B's session)."""
    ha = LinkHandshake(a, random_bytes=os.urandom, expected_id=b.id, rekey=rekey)
    hb = LinkHandshake(b, random_bytes=os.urandom, rekey=rekey)
    first = ha.start()
    assert first[: len(LINK_MAGIC)] == LINK_MAGIC
    assert hb.read_hello(first[len(LINK_MAGIC) + 2 :]) == a.id
    answer, sb = hb.answer(0.0)
    sa = ha.finish(answer[2:], 0.0)
    assert ha.handshake_hash == hb.handshake_hash
    return sa, sb


def _open(s: LinkSession, frame: bytes) -> bytes:
    head, body = frame[:LINK_FRAME_HEADER_BYTES], frame[LINK_FRAME_HEADER_BYTES:]
    assert LinkSession.frame_length(head, 1 << 20) == len(body)
    return s.open(head, body)


def test_link_sessions_agree_and_are_directional() -> None:
    sa, sb = _link()
    assert _open(sb, sa.seal(b"ping", 0.0)) == b"ping"
    assert _open(sa, sb.seal(b"pong", 0.0)) == b"pong"
    with pytest.raises(RemoteProtocolError):
        _open(sa, sa.seal(b"mine", 0.0))  # a frame reflected back to its sender fails: the keys are directional


def test_replayed_reordered_and_tampered_frames_fail_and_change_nothing() -> None:
    sa, sb = _link()
    f1, f2, f3 = (sa.seal(b"frame %d" % i, 0.0) for i in (1, 2, 3))
    assert _open(sb, f1) == b"frame 1"
    with pytest.raises(RemoteProtocolError):
        _open(sb, f1)  # replayed
    with pytest.raises(RemoteProtocolError):
        _open(sb, f3)  # reordered (f2 skipped)
    tampered = bytearray(f2)
    tampered[-1] ^= 1
    with pytest.raises(RemoteProtocolError):
        _open(sb, bytes(tampered))
    flagged = bytearray(f2)
    flagged[0] |= 0x80  # the header is authenticated: a forged rekey flag fails too
    with pytest.raises(RemoteProtocolError):
        _open(sb, bytes(flagged))
    assert _open(sb, f2) == b"frame 2"  # nothing changed: the genuine frames still read, in order
    assert _open(sb, f3) == b"frame 3"


def test_rekey_every_n_frames_and_every_t_seconds_keeps_both_sides_in_step() -> None:
    sa, sb = _link(rekey=RekeyPolicy(frames_max=3, interval_s=100.0))
    frames = [sa.seal(b"%d" % i, 1.0) for i in range(10)]
    assert [_open(sb, f) for f in frames] == [b"%d" % i for i in range(10)]
    assert sa.rekeys_sent == sb.rekeys_received == 3  # before frames 3, 6 and 9
    assert _open(sb, sa.seal(b"later", 150.0)) == b"later"  # 149 s since the last rekey: rekeyed by time
    assert sa.rekeys_sent == sb.rekeys_received == 4


def test_the_old_key_does_not_open_frames_after_a_rekey() -> None:
    sa, sb = _link(rekey=RekeyPolicy(frames_max=1))
    stale = sb._recv.copy()  # the receive key before any rekey (what a memory dump would have held)
    _open(sb, sa.seal(b"first", 0.0))
    second = sa.seal(b"second", 0.0)
    stale.n = 1
    with pytest.raises(noise.NoiseError):
        stale.decrypt_with_ad(second[:4], second[4:])
    assert _open(sb, second) == b"second"


def test_the_dialler_pins_the_static_key_of_the_node_it_dialled() -> None:
    """C answers a dial meant for B: C cannot read message 1 (it lacks B's key), and an answer from C fails."""
    ha = LinkHandshake(A, random_bytes=os.urandom, expected_id=B.id)
    first = ha.start()[len(LINK_MAGIC) + 2 :]
    with pytest.raises(RemoteProtocolError):
        LinkHandshake(C, random_bytes=os.urandom).read_hello(first)
    hc = LinkHandshake(C, random_bytes=os.urandom, expected_id=A.id)  # whatever C sends as an "answer"
    with pytest.raises(RemoteProtocolError):
        ha.finish(hc.start()[len(LINK_MAGIC) + 2 :][:48], 0.0)


def test_a_stolen_static_key_of_a_does_not_let_the_thief_pose_as_b_to_a() -> None:
    """Key-compromise impersonation: the thief has A's static key and claims to be B. It can write a message 1
    A accepts (IK's message 1 needs only es and ss, both computable with A's key), but the transport keys also need
    DH(s_B, e_A), so A refuses the thief's first transport frame: nothing from it is ever acted on."""
    sa_kp = noise.ed25519_to_x25519_keypair(A.seed)
    msg1 = _forge_msg1_with_stolen_responder_key(sa_kp, B.id)
    ha = LinkHandshake(A, random_bytes=os.urandom)
    assert ha.read_hello(msg1) == B.id  # message 1 alone is forgeable with A's key: IK's known KCI limit
    answer, session_at_a = ha.answer(0.0)
    # the thief cannot complete: whatever keys it guesses, its first transport frame does not open at A
    guess = noise.CipherState(bytes(32))
    frame = LinkSession(guess, guess.copy(), rekey=RekeyPolicy(), now=0.0).seal(b"i am B", 0.0)
    with pytest.raises(RemoteProtocolError):
        _open(session_at_a, frame)
    assert answer


def _forge_msg1_with_stolen_responder_key(responder: Any, claimed: bytes) -> bytes:
    """Message 1 of Noise IK claiming static `claimed`, built from the responder's private key (es and ss are both
    DH values the responder's key computes: es = DH(r, e_pub), ss = DH(r, claimed_pub))."""
    ss = noise.SymmetricState(noise.protocol_name("IK"))
    ss.mix_hash(LINK_PROLOGUE)
    ss.mix_hash(responder.public)
    e = noise.generate_keypair(os.urandom)
    ss.mix_hash(e.public)
    ss.mix_key(noise._dh(e.private, responder.public))
    out = e.public + ss.encrypt_and_hash(curve25519_public(claimed))
    ss.mix_key(noise._dh(responder.private, curve25519_public(claimed)))
    return out + ss.encrypt_and_hash(claimed)


def test_a_hello_whose_id_does_not_match_its_static_key_is_refused() -> None:
    """The Ed25519 id in message 1 must be the one the static key came from (else A could claim B's id)."""
    hs = noise.HandshakeState(
        pattern="IK", initiator=True, random_bytes=os.urandom, prologue=LINK_PROLOGUE,
        s=noise.ed25519_to_x25519_keypair(C.seed), rs=curve25519_public(B.id),
    )  # fmt: skip
    with pytest.raises(RemoteProtocolError):
        LinkHandshake(B, random_bytes=os.urandom).read_hello(hs.write_message(A.id))


def test_another_protocol_version_cannot_complete_the_handshake() -> None:
    hs = noise.HandshakeState(
        pattern="IK", initiator=True, random_bytes=os.urandom, prologue=b"homing peer link 1",
        s=noise.ed25519_to_x25519_keypair(A.seed), rs=curve25519_public(B.id),
    )  # fmt: skip
    with pytest.raises(RemoteProtocolError):
        LinkHandshake(B, random_bytes=os.urandom).read_hello(hs.write_message(A.id))


def test_the_ephemeral_comes_from_the_injected_source_only() -> None:
    """Two handshakes with different random sources differ; the hello carries no seed of the ephemeral."""
    h1 = LinkHandshake(A, random_bytes=_rand(1), expected_id=B.id).start()
    h2 = LinkHandshake(A, random_bytes=_rand(2), expected_id=B.id).start()
    assert h1[6:38] != h2[6:38]
    assert bytes([1]) * 32 not in h1 and bytes([2]) * 32 not in h2


def test_frame_length_is_bounded() -> None:
    with pytest.raises(TooLarge):
        LinkSession.frame_length((1 << 20).to_bytes(4, "big"), 1024)
    with pytest.raises(RemoteProtocolError):
        LinkSession.frame_length((3).to_bytes(4, "big"), 1024)


def test_a_datagram_reflected_back_to_its_sender_is_refused_and_does_not_block_the_peer() -> None:
    # A and B share one static-static box key, so the nonce must say which way a datagram goes. Without that, an
    # attacker on the path rewrote the sender id of A's datagram to B and sent it back to A, which opened it as
    # B's: A took its own message for B's, and moved B's replay window to A's (newer) epoch, refusing every
    # genuine datagram of B's until B restarted.
    sa, sb = DatagramSealer(A, epoch_ms=2_000), DatagramSealer(B, epoch_ms=1_000)
    to_b = sa.seal(B.id, b"ping from A")
    reflected = bytearray(to_b)
    reflected[1:33] = B.id
    with pytest.raises(RemoteProtocolError):
        sa.open(bytes(reflected))
    assert sa.open(sb.seal(A.id, b"from B")) == (B.id, b"from B")
    assert sb.open(to_b) == (A.id, b"ping from A")


def test_the_two_directions_never_share_a_nonce_even_with_equal_epochs() -> None:
    # Two nodes started in the same millisecond count from the same (epoch, counter): the nonces of A -> B and
    # B -> A must still differ, or XSalsa20-Poly1305 under their shared key reuses its keystream and MAC key.
    sa, sb = DatagramSealer(A, epoch_ms=7), DatagramSealer(B, epoch_ms=7)
    pa, pb = sa.seal(B.id, bytes(32)), sb.seal(A.id, bytes(32))
    assert pa[1 + 32 : 1 + 32 + 16] == pb[1 + 32 : 1 + 32 + 16]  # same epoch and counter in the clear
    assert pa[1 + 32 + 16 :] != pb[1 + 32 + 16 :]  # equal plaintexts, yet different ciphertexts and tags
    assert sb.open(pa)[1] == bytes(32) and sa.open(pb)[1] == bytes(32)


def test_made_up_senders_cannot_evict_an_active_members_replay_window() -> None:
    """The sealer keeps replay windows for at most `peers_max` senders. In an open federation anyone can make up
    sender ids (paced at `[swim] new_keys_per_s`), and the oldest window was dropped first, however active its
    member: once enough made-up senders had come, a member's window was gone and one of its datagrams captured
    earlier was accepted again. The windows now go least recently used first, so a member that keeps sending keeps
    its window. On the code before, the captured datagram was accepted."""
    b = Identity.generate()
    member = DatagramSealer(Identity.generate(), epoch_ms=1)
    receiver = DatagramSealer(b, epoch_ms=1, peers_max=4)
    captured = member.seal(b.id, b"ping 1")
    receiver.open(captured)
    for i in range(12):  # between the member's datagrams, made-up senders, three times the windows kept
        if i % 2 == 0:
            receiver.open(member.seal(b.id, b"ping %d" % (i + 2)))
        receiver.open(DatagramSealer(Identity.generate(), epoch_ms=1).seal(b.id, b"made up"))
    with pytest.raises(Replayed):
        receiver.open(captured)
