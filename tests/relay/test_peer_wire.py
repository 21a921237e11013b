"""Relay peer frames: every message round-trips, every bad frame raises RemoteProtocolError and nothing else."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.protocol.errors import RemoteProtocolError, TooLarge
from node.protocol.relay.claims import HomeClaim
from node.protocol.wire import Limits, MsgType
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import (
    EnvelopeResult,
    Handoff,
    Lease,
    LeaseDrop,
    Lookup,
    LookupReply,
    MailboxEvent,
    MailboxPut,
    MailboxStatus,
    MailboxTake,
    PeerEnvelope,
    PeerMessage,
    ReceiptStatus,
    RelayReceipt,
    ResultStatus,
    decode_peer,
    encode_peer,
)

I1, I2, I3, I4 = (bytes([n]) * 32 for n in (1, 2, 3, 4))
N, G = b"n" * 32, b"g" * 64  # a claim's nonce and signature (the codec does not verify)
E = PeerEnvelope(
    eid=b"e" * 16,
    origin=I1,
    to=I2,
    sender=I3,
    kind=Kind.CALL_OFFER,
    call=b"c",
    body=b"\x00" * 65536,
    claim_nonce=N,
    claim_sig=G,
)
E_MAIL = attrs.evolve(E, expires_ms=1_800_000_000_000, origin_sig=b"o" * 64)
FULL_LEASE = Lease(
    home=I4, claims=tuple(HomeClaim(client=bytes([i]) * 32, home=I4, nonce=N, sig=G) for i in range(256)), ttl_ms=1
)
ALL: list[PeerMessage] = [
    E,
    E_MAIL,
    attrs.evolve(E, claim_nonce=b"", claim_sig=b""),  # a home that has the claim gets the envelope without it
    EnvelopeResult(eid=b"e" * 16, status=ResultStatus.NOT_HERE),
    EnvelopeResult(eid=b"e" * 16, status=ResultStatus.NEED_CLAIM),
    Lease(home=I4, claims=(HomeClaim(client=I1, home=I4, nonce=N, sig=G),), ttl_ms=30_000),
    FULL_LEASE,
    LeaseDrop(home=I4, ids=(I1,)),
    Lookup(id=I2),
    LookupReply(id=I2, homes=()),
    MailboxPut(env=E_MAIL, ttl_ms=60_000),
    MailboxEvent(eid=b"e" * 16, status=MailboxStatus.NOT_OWNER),
    MailboxTake(eids=(b"e" * 16,)),
    MailboxEvent(eid=b"e" * 16, status=MailboxStatus.FORWARDED),
    Handoff(env=E, ttl_ms=1),
    RelayReceipt(eid=b"e" * 16, status=ReceiptStatus.CANCELLED),
]


@pytest.mark.parametrize("msg", ALL, ids=lambda m: type(m).__name__)
def test_round_trip(msg: PeerMessage) -> None:
    frame = encode_peer(msg)
    assert len(frame) <= Limits.PEER_FRAME_MAX
    assert decode_peer(frame) == msg


def test_type_numbers_are_the_reserved_ones() -> None:
    got = {type(m).__name__: msgpack.unpackb(encode_peer(m))["t"] for m in ALL}
    assert got["PeerEnvelope"] == MsgType.ENVELOPE == 36 and got["RelayReceipt"] == MsgType.RECEIPT == 46


BAD = [
    ({"t": 36}, "missing fields"),
    ({"t": 99}, "unknown type"),
    ({"t": True}, "bool type"),
    ({"t": 40, "id": b"short"}, "id length"),
    ({"t": 37, "eid": b"e" * 16, "s": "maybe"}, "unknown status"),
    ({"t": 38, "h": I1, "ids": [I1] * 257, "ns": [N] * 257, "sg": [G] * 257, "ttl": 5}, "too many claims"),
    ({"t": 38, "h": I1, "ids": [I1], "ns": [N], "sg": [G], "ttl": 0}, "ttl zero"),
    ({"t": 38, "h": I1, "ids": "nope", "ns": [N], "sg": [G], "ttl": 5}, "ids not a list"),
    ({"t": 38, "h": I1, "ids": [I1], "ttl": 5}, "lease without claims"),
    ({"t": 38, "h": I1, "ids": [I1, I2], "ns": [N], "sg": [G, G], "ttl": 5}, "claims of unequal length"),
    ({"t": 38, "h": I1, "ids": [I1], "ns": [N], "sg": [b"short"], "ttl": 5}, "claim signature length"),
    ({**{k: v for k, v in msgpack.unpackb(encode_peer(E)).items() if k != "cs"}}, "envelope without claim"),
    ({**msgpack.unpackb(encode_peer(E)), "os": b"x" * 10}, "origin signature length"),
    ({**msgpack.unpackb(encode_peer(E)), "cs": b""}, "half a claim"),
    ({"t": 36, "eid": b"e" * 16, "o": I1, "to": I2, "from": I3, "k": "call_dance", "c": b"c", "b": b""}, "kind"),
    ({"t": 36, "eid": b"e" * 16, "o": I1, "to": I2, "from": I3, "k": "call_ice", "c": b"", "b": b""}, "empty call"),
    ({"t": int(MsgType.ENVELOPE_RESULT), "eid": b"e" * 15, "s": "delivered"}, "result eid length"),
    ({"t": int(MsgType.ENVELOPE_RESULT), "eid": "e" * 16, "s": "delivered"}, "result eid type"),
    ({"t": int(MsgType.ENVELOPE_RESULT), "eid": b"e" * 16, "s": "lost"}, "result status"),
]


@pytest.mark.parametrize(("obj", "why"), BAD, ids=[w for _, w in BAD])
def test_bad_frames_are_refused(obj: dict[str, object], why: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_peer(msgpack.packb(obj, use_bin_type=True))


def test_oversized_frame_is_too_large() -> None:
    with pytest.raises(TooLarge):
        decode_peer(b"\x00" * (Limits.PEER_FRAME_MAX + 1))


@given(st.binary(max_size=300))
def test_garbage_raises_only_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_peer(data)


@given(
    st.dictionaries(
        st.sampled_from(
            ["t", "eid", "o", "to", "from", "k", "c", "b", "s", "h", "ids", "ttl", "id", "ns", "sg", "cn", "cs"]
        ),
        st.one_of(
            st.integers(30, 50),
            st.binary(max_size=40),
            st.text(max_size=12),
            st.lists(st.binary(min_size=32, max_size=32), max_size=3),
            st.none(),
        ),
    )
)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
def test_random_maps_raise_only_remote_protocol_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_peer(msgpack.packb(obj, use_bin_type=True))


# an envelope of E or E_MAIL with these changed (for the tests of the constructors that skip the checks)
ENVELOPE_VARIANTS: dict[str, st.SearchStrategy[Any]] = {
    "mail": st.booleans(),
    "claim": st.booleans(),
    "body": st.binary(max_size=64),
    "call": st.binary(min_size=1, max_size=Limits.CALL_ID_MAX),
    "kind": st.sampled_from(Kind),
}


@given(**ENVELOPE_VARIANTS)
def test_without_claim_is_the_checked_envelope_with_the_claim_emptied(
    mail: bool, claim: bool, body: bytes, call: bytes, kind: Kind
) -> None:
    """`without_claim` fills a bare instance field by field, skipping the checks: it must give exactly what the
    checked constructor gives (every field set, equal, same hash, same wire bytes), for every kind of envelope."""
    env = attrs.evolve(E_MAIL if mail else E, body=body, call=call, kind=kind)
    if not claim:
        env = attrs.evolve(env, claim_nonce=b"", claim_sig=b"")
    bare = env.without_claim()
    checked = attrs.evolve(env, claim_nonce=b"", claim_sig=b"")
    assert attrs.asdict(bare) == attrs.asdict(checked)
    assert bare == checked and hash(bare) == hash(checked) and not bare.has_claim
    assert encode_peer(bare) == encode_peer(checked) and decode_peer(encode_peer(bare)) == checked
    assert env.has_claim is claim  # the original is untouched


@given(**ENVELOPE_VARIANTS)
def test_an_envelope_built_unchecked_is_the_checked_one(
    mail: bool, claim: bool, body: bytes, call: bytes, kind: Kind
) -> None:
    """`checked_by_caller` (an origin wrapping its client's envelope) skips `__init__`'s checks: for fields that
    pass them it must give exactly what the checked constructor gives (equal, same hash, same wire bytes)."""
    checked = attrs.evolve(E_MAIL if mail else E, body=body, call=call, kind=kind)
    if not claim:
        checked = attrs.evolve(checked, claim_nonce=b"", claim_sig=b"")
    fields = attrs.asdict(checked, recurse=False)
    bare = PeerEnvelope.checked_by_caller(**fields)
    assert attrs.asdict(bare, recurse=False) == fields
    assert bare == checked and hash(bare) == hash(checked)
    assert encode_peer(bare) == encode_peer(checked) and decode_peer(encode_peer(bare)) == checked


@pytest.mark.parametrize("status", list(ResultStatus))
def test_a_result_built_for_an_envelope_is_the_checked_one(status: ResultStatus) -> None:
    """`EnvelopeResult.of` (a home answering an envelope) skips the checks the envelope's eid has passed."""
    result, checked = EnvelopeResult.of(E, status), EnvelopeResult(eid=E.eid, status=status)
    assert result == checked and hash(result) == hash(checked)
    assert decode_peer(encode_peer(result)) == result
