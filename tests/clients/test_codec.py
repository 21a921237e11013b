"""The client frame codec (docs/client-protocol.md): both encodings, every refusal with its exact code and ref."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.protocol.wire import Limits, packb
from node.protocol.wire.client import (
    ClientFrameError,
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    GoAway,
    Hello,
    Kind,
    Ping,
    Reason,
    Receipt,
    Status,
    Welcome,
    decode_client_frame,
    encode_client_message,
)

TO = bytes(range(32))


def env_map(**over: object) -> dict[str, object]:
    m: dict[str, object] = {"t": "call_offer", "to": TO, "call": b"c1", "body": b"secret", "ref": 7}
    m.update(over)
    return {k: v for k, v in m.items() if v is not None}


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("kind", list(Kind))
def test_envelope_round_trip(kind: Kind, as_json: bool) -> None:
    env = Envelope(kind=kind, to=TO, call=b"x" * 64, body=b"\x00" * Limits.CLIENT_BODY_MAX, ref=2**64 - 1)
    assert decode_client_frame(encode_client_message(env, json=as_json)) == env


@pytest.mark.parametrize("as_json", [False, True])
def test_node_messages_round_trip(as_json: bool) -> None:
    msgs = [
        Deliver(kind=Kind.CALL_ICE, sender=TO, call=b"c", body=b"", eid=b"e" * 16),
        Receipt(ref=3, status=Status.DELIVERED),
        Receipt(ref=4, status=Status.REJECTED, reason=Reason.TOO_LARGE),
        Error(code=ErrorCode.UNKNOWN_TYPE, ref=9),
        Error(code=ErrorCode.AUTH_FAILED),
        Welcome(id=TO, sig=b"s" * 64),
        GoAway(nodes=("homing://node/abc",)),
        Ping(),
    ]
    for msg in msgs:
        assert decode_client_frame(encode_client_message(msg, json=as_json), from_node=True) == msg


def test_json_uses_unpadded_base64url() -> None:
    text = encode_client_message(Envelope(kind=Kind.CALL_OFFER, to=TO, call=b"\xff\xfe", body=b"", ref=1), json=True)
    assert isinstance(text, str)
    obj = json.loads(text)
    assert obj["call"] == "__4" and obj["to"] == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"


def test_hello_decodes() -> None:
    hello = decode_client_frame(packb({"t": "hello", "id": TO, "nonce": b"n" * 32, "sig": b"s" * 64}))
    assert hello == Hello(id=TO, nonce=b"n" * 32, sig=b"s" * 64)


def refusal(data: bytes | str) -> ClientFrameError:
    with pytest.raises(ClientFrameError) as info:
        decode_client_frame(data)
    return info.value


@pytest.mark.parametrize(
    ("data", "code", "ref", "receipt"),
    [
        (b"\xc1\x00", "bad_request", None, False),  # not msgpack
        ("{not json", "bad_request", None, False),  # not JSON
        (packb([1, 2]), "bad_request", None, False),  # not a map
        ('"text"', "bad_request", None, False),
        (packb({"to": TO, "ref": 3}), "bad_request", 3, False),  # no t
        (packb({"t": "call_dance", "ref": 5}), "unknown_type", 5, False),
        (packb({"t": "welcome"}), "unknown_type", None, False),  # a node's message from a client
        (packb(env_map(ref=None)), "bad_request", None, False),  # no ref
        (packb(env_map(ref=-1)), "bad_request", None, False),
        (packb(env_map(ref=True)), "bad_request", None, False),
        (json.dumps({"t": "call_offer", "ref": 2**64}), "bad_request", None, False),
        (packb(env_map(to=TO[:31])), "bad_request", 7, True),
        (packb(env_map(to="x" * 32)), "bad_request", 7, True),
        (packb(env_map(call=b"")), "bad_request", 7, True),
        (packb(env_map(call=b"c" * 65)), "bad_request", 7, True),
        (packb(env_map(body=None)), "bad_request", 7, True),
        (packb(env_map(body=b"b" * (Limits.CLIENT_BODY_MAX + 1))), "too_large", 7, True),
        (json.dumps({"t": "call_ice", "ref": 8, "to": "!!", "call": "YQ", "body": ""}), "bad_request", 8, True),
        (json.dumps({"t": "call_ice", "ref": 8, "to": "AA", "call": "YQ", "body": "A" * 90000}), "too_large", 8, True),
        (packb({"t": "hello", "id": TO, "nonce": b"n", "sig": b"s" * 64}), "bad_request", None, False),
        (b"\x00" * (Limits.CLIENT_FRAME_MAX + 1), "too_large", None, False),
        ("[" * 100_000, "bad_request", None, False),  # deep nesting: no RecursionError escapes
        ('{"t":"ping","ref":' + "9" * 5000 + "}", "bad_request", None, False),
    ],
)
def test_refusals_carry_exact_code_and_ref(data: bytes | str, code: str, ref: int | None, receipt: bool) -> None:
    err = refusal(data)
    assert (err.code, err.ref, err.receipt) == (code, ref, receipt)


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_input_decodes_or_raises_client_frame_error(data: bytes | str) -> None:
    with contextlib.suppress(ClientFrameError):
        decode_client_frame(data)


@given(
    to=st.binary(min_size=30, max_size=34),
    call=st.binary(max_size=66),
    body=st.binary(max_size=8) | st.text(max_size=4) | st.integers(-(2**63), 2**64 - 1) | st.none(),  # msgpack's ints
    as_json=st.booleans(),
)
def test_an_envelope_is_accepted_exactly_when_each_field_is_within_its_bounds(
    to: bytes, call: bytes, body: object, as_json: bool
) -> None:
    """The decoder's one-test path for the usual envelope and its per-field getters must agree: accepted, with
    these fields, exactly when `to` is 32 bytes, `call` 1-64 and `body` bytes; otherwise bad_request with a
    receipt for its ref."""
    m = env_map(to=to, call=call, body=body)
    if as_json:
        m = {k: base64.urlsafe_b64encode(v).rstrip(b"=").decode() if isinstance(v, bytes) else v for k, v in m.items()}
    data = json.dumps(m) if as_json else packb(m)
    if len(to) == 32 and 1 <= len(call) <= Limits.CALL_ID_MAX and isinstance(body, bytes):
        assert decode_client_frame(data) == Envelope(kind=Kind.CALL_OFFER, to=to, call=call, body=body, ref=7)
    elif not (as_json and isinstance(body, str)):  # JSON: a string body is taken as base64url (or refused by it)
        err = refusal(data)
        assert (err.code, err.ref, err.receipt) == ("bad_request", 7, True)
