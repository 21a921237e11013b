"""End-to-end call bodies (node.protocol.e2ee): tampering, a wrong sender, a wrong call id, replays and reorders are
refused and change nothing; every body has one of the fixed padded sizes; garbage never raises anything but a
RemoteProtocolError."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import RemoteProtocolError
from node.identity import Identity
from node.protocol import e2ee, e2ee_plaintext, e2ee_replay
from node.protocol.e2ee import (
    Answer,
    E2eeError,
    Elsewhere,
    Expired,
    Hangup,
    Ice,
    IncomingCall,
    NotForThisDevice,
    Offer,
    OfferReplayCache,
    OutgoingCall,
    Reanswer,
    Reoffer,
    Replayed,
)
from node.protocol.e2ee_plaintext import PAD_SIZES_BYTES, SDP_PAD_MIN_BYTES, BadPlaintext, decode_plaintext

CALLER = Identity.from_seed(b"\x01" * 32)
CALLEE = Identity.from_seed(b"\x02" * 32)
OTHER = Identity.from_seed(b"\x03" * 32)
CALL = b"call-0001"
NOW = 1_800_000_000
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
OVERHEAD = {e2ee.OFFER: 50, e2ee.ANSWER: 50, e2ee.EARLY: 58, e2ee.TRANSPORT: 34, e2ee.SELF: 50}


class Randomness:
    """A deterministic random_bytes: blake2b of a label and a counter."""

    def __init__(self, label: str) -> None:
        self.label, self.count = label.encode(), 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        return hashlib.blake2b(self.label + self.count.to_bytes(8, "big"), digest_size=n).digest()


def negated(ed_id: bytes) -> bytes:
    """The Ed25519 point -P: a different id whose X25519 form is the same as P's."""
    out = bytearray(ed_id)
    out[31] ^= 0x80
    return bytes(out)


def flip(body: bytes, bit: int) -> bytes:
    out = bytearray(body)
    bit %= len(out) * 8
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def start(label: str = "t", call: bytes = CALL) -> tuple[OutgoingCall, bytes]:
    out = OutgoingCall(identity=CALLER, callee=CALLEE.id, call=call, random_bytes=Randomness("caller" + label))
    return out, out.offer(Offer(sdp=SDP, video=True, ts=NOW))


def receive(
    body: bytes, *, cache: OfferReplayCache | None = None, label: str = "a", call: bytes = CALL
) -> IncomingCall:
    dev, _offer = IncomingCall.from_offer(
        identity=CALLEE, sender=CALLER.id, call=call, kind="call_offer", body=body, now_s=NOW,
        replay=cache if cache is not None else OfferReplayCache(), random_bytes=Randomness("device" + label),
    )  # fmt: skip
    return dev


def answered() -> tuple[OutgoingCall, IncomingCall, bytes]:
    out, offer = start()
    dev = receive(offer)
    sid = out.open(sender=CALLEE.id, kind="call_answer", body=dev.answer(Answer(sdp=SDP, video=True))).sid
    assert sid is not None and sid == dev.sid
    return out, dev, sid


# --- the happy path, several devices, elsewhere ---------------------------------------------------------------


def test_two_devices_answer_the_caller_keeps_both_sessions_apart() -> None:
    out, offer = start()
    dev_a, dev_b = receive(offer, label="a"), receive(offer, label="b")
    sid_a = out.open(sender=CALLEE.id, kind="call_answer", body=dev_a.answer(Answer(sdp=SDP, video=False))).sid
    sid_b = out.open(sender=CALLEE.id, kind="call_answer", body=dev_b.answer(Answer(sdp=SDP, video=False))).sid
    assert sid_a and sid_b and sid_a != sid_b and out.sessions == (sid_a, sid_b)
    to_b = out.seal(sid_b, Hangup(reason="answered_elsewhere"))
    with pytest.raises(NotForThisDevice):
        dev_a.open(sender=CALLER.id, kind="call_hangup", body=to_b)
    assert dev_b.open(sender=CALLER.id, kind="call_hangup", body=to_b).msg == Hangup(reason="answered_elsewhere")
    notice = dev_a.elsewhere("answered")
    assert dev_b.open(sender=CALLEE.id, kind="call_hangup", body=notice).msg == Elsewhere(how="answered")
    with pytest.raises(Replayed):
        dev_a.open(sender=CALLEE.id, kind="call_hangup", body=notice)  # our own notice, echoed back


def test_early_messages_before_the_answer_then_transport() -> None:
    out, offer = start()
    dev = receive(offer)
    early = [out.early(Ice(cand=f"candidate:{i} 1 udp 1 127.0.0.1 {i} typ host", mid="0")) for i in range(3)]
    for body in early:
        assert isinstance(dev.open(sender=CALLER.id, kind="call_ice", body=body).msg, Ice)
    sid = out.open(sender=CALLEE.id, kind="call_answer", body=dev.answer(Answer(sdp=SDP, video=True))).sid
    assert sid is not None
    body = dev.seal(Reoffer(sdp=SDP, video=False))
    assert out.open(sender=CALLEE.id, kind="call_offer", body=body).msg == Reoffer(sdp=SDP, video=False)
    body = out.seal(sid, Reanswer(sdp=SDP, video=False))
    assert dev.open(sender=CALLER.id, kind="call_answer", body=body).msg == Reanswer(sdp=SDP, video=False)


def test_caller_cancels_before_any_answer() -> None:
    out, offer = start()
    dev = receive(offer)
    body = out.early(Hangup(reason="cancelled"))
    assert dev.open(sender=CALLER.id, kind="call_hangup", body=body).msg == Hangup(reason="cancelled")


# --- tampering, wrong sender, wrong call: property tests ------------------------------------------------------


def _all_bodies() -> dict[str, tuple[str, bytes]]:
    """One body of each type, with the envelope kind it travels in (fresh states each call)."""
    out, offer = start()
    dev = receive(offer)
    early = out.early(Ice(cand="c", mid="0"))
    answer = dev.answer(Answer(sdp=SDP, video=True))
    return {
        "offer": ("call_offer", offer),
        "early": ("call_ice", early),
        "answer": ("call_answer", answer),
        "transport": ("call_ice", dev.seal(Ice(cand="d"))),
        "self": ("call_hangup", dev.elsewhere("answered")),
    }


def _deliver(which: str, sender: bytes, call: bytes, kind: str, body: bytes) -> object:
    """Deliver a body to a receiver in the state right before it, built afresh (deterministic keys). The receiver
    is the state of call `call` (the call layer routes a body by its envelope's call id); BODIES belong to CALL."""
    out, offer = start(call=call)
    if which == "offer":
        return IncomingCall.from_offer(
            identity=CALLEE, sender=sender, call=call, kind=kind, body=body, now_s=NOW, replay=OfferReplayCache(),
            random_bytes=Randomness("x"),
        )  # fmt: skip
    dev = receive(offer, call=call)
    if which == "early":
        return dev.open(sender=sender, kind=kind, body=body)
    if which == "answer":
        return out.open(sender=sender, kind=kind, body=body)
    out.early(Ice(cand="c", mid="0"))
    out.open(sender=CALLEE.id, kind="call_answer", body=dev.answer(Answer(sdp=SDP, video=True)))
    if which == "transport":
        return out.open(sender=sender, kind=kind, body=body)
    other = receive(offer, label="b", call=call)
    return other.open(sender=sender, kind=kind, body=body)  # "self": another device of the callee


BODIES = _all_bodies()
SENDER = {"offer": CALLER.id, "early": CALLER.id, "answer": CALLEE.id, "transport": CALLEE.id, "self": CALLEE.id}


def test_every_body_is_accepted_as_sent() -> None:
    for which, (kind, body) in BODIES.items():
        assert _deliver(which, SENDER[which], CALL, kind, body) is not None


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(sorted(BODIES)), bit=st.integers(min_value=0))
def test_any_flipped_bit_is_refused(which: str, bit: int) -> None:
    kind, body = BODIES[which]
    with pytest.raises(RemoteProtocolError):
        _deliver(which, SENDER[which], CALL, kind, flip(body, bit))


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(sorted(BODIES)),
    sender=st.one_of(
        st.sampled_from([OTHER.id, negated(CALLER.id), negated(CALLEE.id), CALLER.id, CALLEE.id]),
        st.binary(min_size=32, max_size=32).map(lambda seed: Identity.from_seed(seed).id),
    ),
)
def test_a_wrong_sender_is_refused(which: str, sender: bytes) -> None:
    if sender == SENDER[which]:
        return
    kind, body = BODIES[which]
    with pytest.raises(RemoteProtocolError):
        _deliver(which, sender, CALL, kind, body)


def test_negated_id_is_refused_by_the_prologue_not_by_a_sender_check() -> None:
    """-P has the same X25519 key as P, so only the ids in the prologue tell them apart (for the offer, where the
    receiver has no expected sender yet)."""
    kind, body = BODIES["offer"]
    with pytest.raises(E2eeError, match="does not authenticate"):
        _deliver("offer", negated(CALLER.id), CALL, kind, body)


@settings(max_examples=40, deadline=None)
@given(which=st.sampled_from(sorted(BODIES)), call=st.binary(min_size=1, max_size=64))
def test_a_wrong_call_id_is_refused(which: str, call: bytes) -> None:
    if call == CALL:
        return
    kind, body = BODIES[which]
    with pytest.raises(RemoteProtocolError):
        _deliver(which, SENDER[which], call, kind, body)


@pytest.mark.parametrize("which", sorted(BODIES))
def test_a_wrong_envelope_kind_is_refused(which: str) -> None:
    kind, body = BODIES[which]
    for other in ("call_offer", "call_answer", "call_reject", "call_hangup", "call_ice", "bogus"):
        if other != kind:
            with pytest.raises(RemoteProtocolError):
                _deliver(which, SENDER[which], CALL, other, body)


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from(sorted(BODIES)), garbage=st.binary(max_size=120), cut=st.integers(0, 200))
def test_garbage_and_truncation_raise_only_remote_protocol_errors(which: str, garbage: bytes, cut: int) -> None:
    kind, body = BODIES[which]
    for candidate in (garbage, body[:cut], body[:2] + garbage, body + garbage):
        if candidate == body:
            continue
        with pytest.raises(RemoteProtocolError):
            _deliver(which, SENDER[which], CALL, kind, candidate)


# --- order: replays and reorders --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(schedule=st.lists(st.integers(0, 7), max_size=24), direction=st.sampled_from(["to_callee", "to_caller"]))
def test_transport_accepts_only_increasing_sequence_numbers(schedule: list[int], direction: str) -> None:
    """Whatever order (with repeats) a hostile relay delivers 8 transport bodies in, the receiver accepts exactly
    those above everything accepted before, each at most once; a refused body changes nothing."""
    out, dev, sid = answered()
    if direction == "to_callee":
        bodies = [out.seal(sid, Ice(cand=f"c{i}")) for i in range(8)]
        receive_one = lambda b: dev.open(sender=CALLER.id, kind="call_ice", body=b)  # noqa: E731
    else:
        bodies = [dev.seal(Ice(cand=f"c{i}")) for i in range(8)]
        receive_one = lambda b: out.open(sender=CALLEE.id, kind="call_ice", body=b)  # noqa: E731
    highest = -1
    for index in schedule:
        if index > highest:
            assert receive_one(bodies[index]).msg == Ice(cand=f"c{index}")
            highest = index
        else:
            with pytest.raises(Replayed):
                receive_one(bodies[index])


@settings(max_examples=60, deadline=None)
@given(schedule=st.lists(st.integers(0, 4), max_size=12))
def test_early_messages_accept_only_increasing_sequence_numbers(schedule: list[int]) -> None:
    out, offer = start()
    dev = receive(offer)
    bodies = [out.early(Ice(cand=f"e{i}")) for i in range(5)]
    highest = -1
    for index in schedule:
        if index > highest:
            assert dev.open(sender=CALLER.id, kind="call_ice", body=bodies[index]).msg == Ice(cand=f"e{index}")
            highest = index
        else:
            with pytest.raises(Replayed):
                dev.open(sender=CALLER.id, kind="call_ice", body=bodies[index])


def test_offer_replay_and_answer_replay_are_refused() -> None:
    out, offer = start()
    cache = OfferReplayCache()
    dev = receive(offer, cache=cache)
    with pytest.raises(Replayed):
        receive(offer, cache=cache)
    answer = dev.answer(Answer(sdp=SDP, video=True))
    out.open(sender=CALLEE.id, kind="call_answer", body=answer)
    with pytest.raises(Replayed):
        out.open(sender=CALLEE.id, kind="call_answer", body=answer)


@pytest.mark.parametrize("ts", [NOW - e2ee_replay.OFFER_MAX_AGE_S - 1, NOW + e2ee_replay.OFFER_MAX_FUTURE_S + 1])
def test_offer_outside_the_time_window_is_refused(ts: int) -> None:
    out = OutgoingCall(identity=CALLER, callee=CALLEE.id, call=CALL, random_bytes=Randomness("w"))
    body = out.offer(Offer(sdp=SDP, video=False, ts=ts))
    cache = OfferReplayCache()
    with pytest.raises(Expired):
        receive(body, cache=cache)
    assert len(cache) == 0


@settings(max_examples=150, deadline=None)
@given(
    offers=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 400)), max_size=40),
    cap=st.integers(1, 6),
    clock=st.lists(st.integers(0, 30), min_size=40, max_size=40),
)
def test_replay_cache_never_admits_an_offer_twice(offers: list[tuple[int, int]], cap: int, clock: list[int]) -> None:
    """A replayed offer repeats its call id and its authenticated ts. Even when the cache is full (it drops its
    oldest entry and raises the watermark) and time moves on, no such pair is admitted twice."""
    cache = OfferReplayCache(entries_max=cap, max_age_s=300, max_future_s=120)
    admitted: set[tuple[bytes, int]] = set()
    now = NOW
    for (call_n, age), tick in zip(offers, clock, strict=False):
        now += tick
        call, ts = call_n.to_bytes(2, "big"), NOW - age
        try:
            cache.admit(caller=CALLER.id, call=call, ts=ts, now_s=now)
        except (Replayed, Expired):
            continue
        assert (call, ts) not in admitted
        admitted.add((call, ts))
        assert len(cache) <= cap


# --- padding ----------------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(sdp_bytes=st.integers(1, e2ee_plaintext.SDP_MAX_BYTES), cand=st.text(max_size=300), video=st.booleans())
def test_every_body_has_a_fixed_padded_size(sdp_bytes: int, cand: str, video: bool) -> None:
    if len(cand.encode()) > e2ee_plaintext.CANDIDATE_MAX_BYTES:
        return
    sdp = "v" * sdp_bytes
    out = OutgoingCall(identity=CALLER, callee=CALLEE.id, call=CALL, random_bytes=Randomness("p"))
    offer = out.offer(Offer(sdp=sdp, video=video, ts=NOW))
    dev = receive(offer)
    bodies = [
        (e2ee.OFFER, offer, True),
        (e2ee.EARLY, out.early(Ice(cand=cand)), False),
        (e2ee.ANSWER, dev.answer(Answer(sdp=sdp, video=video)), True),
        (e2ee.TRANSPORT, dev.seal(Ice(cand=cand)), False),
        (e2ee.TRANSPORT, dev.seal(Reoffer(sdp=sdp, video=video)), True),
        (e2ee.SELF, dev.elsewhere("answered"), False),
    ]
    for btype, body, has_sdp in bodies:
        padded = len(body) - OVERHEAD[btype]
        assert padded in PAD_SIZES_BYTES and len(body) <= e2ee.BODY_MAX_BYTES
        assert padded >= (SDP_PAD_MIN_BYTES if has_sdp else PAD_SIZES_BYTES[0])


def test_an_oversized_sdp_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        Offer(sdp="v" * (e2ee_plaintext.SDP_MAX_BYTES + 1), video=False, ts=NOW)


@settings(max_examples=200, deadline=None)
@given(
    obj=st.dictionaries(
        st.sampled_from(["k", "sdp", "video", "ts", "cand", "mid", "mline", "ufrag", "reason", "how", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 2**41),
            st.text(max_size=20),
            st.binary(max_size=4),
            st.sampled_from(sorted(e2ee_plaintext.KINDS)),
        ),
        max_size=6,
    )
)
def test_decode_plaintext_accepts_valid_maps_and_refuses_the_rest(obj: dict[str, object]) -> None:
    from node.wire import packb

    try:
        msg = decode_plaintext(packb(obj))
    except BadPlaintext:
        return
    assert obj["k"] == msg.KIND
    assert decode_plaintext(e2ee_plaintext.encode_plaintext(msg)) == msg


def test_e2ee_modules_are_sans_io() -> None:
    forbidden = {"trio", "socket", "time", "asyncio", "os", "threading", "subprocess", "random", "secrets"}
    for module in (e2ee, e2ee_plaintext, e2ee_replay):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node_ in ast.walk(tree):
            if isinstance(node_, ast.Import):
                assert not {a.name.split(".")[0] for a in node_.names} & forbidden, module.__name__
            elif isinstance(node_, ast.ImportFrom):
                assert (node_.module or "").split(".")[0] not in forbidden, module.__name__
