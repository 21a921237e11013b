"""Every decoder of untrusted input raises only its documented errors, on any input; valid messages round-trip.

The decoders and their documented exceptions are the table in fuzz/targets.py (shared with the atheris
harnesses): RemoteProtocolError and subclasses for wire, documents, TXT and the registry's request parsing,
ClientFrameError for client frames, ConfigError for TOML config and manual entries, ValueError for parse_id and
b64u_decode; the discovery cache and a registry's answer never raise. Three kinds of hostile input per decoder:
arbitrary bytes, valid messages damaged byte by byte, and valid messages edited field by field (dropped,
retyped, oversized, truncated, extra, repeated; signed bodies are re-signed so the checks behind the signature
are reached). Example counts are kept small so the whole file runs in a few seconds; `fuzz.run` goes deeper.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import ASKER, BY_NAME, NODE_A, NOW, REGISTRY, TARGETS, WHOIS_NONCE, Target
from fuzz.targets import _list_doc as list_doc
from fuzz.targets import _peer_messages as peer_messages
from fuzz.targets import _swim_messages as swim_messages
from node.app.config import SECTIONS, NodeConfig, build_config, load_toml, render_toml
from node.protocol.crypto import DatagramSealer
from node.protocol.errors import ConfigError, RemoteProtocolError, TooLarge
from node.protocol.identity import (
    NODE_CARD,
    NODE_LEAVE,
    NODE_LIST,
    NODE_REGISTER,
    SIGNED_DOC_MAX_BYTES,
    b64u_encode,
    decode_document,
    encode_document,
    open_document,
    sign_document,
)
from node.protocol.nodelist import (
    CARD_MAX_CHARS,
    CARD_PREFIX,
    NodeEntry,
    build_leave,
    build_node_list,
    build_registration,
    make_card,
    open_leave,
    open_node_list,
    open_registration,
    parse_card,
)
from node.protocol.swim.messages import META_MAX
from node.protocol.txt import decode_txt, encode_txt
from node.protocol.wire import WIRE_VERSION, Limits, packb
from node.protocol.wire.client import (
    ClientFrameError,
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    FrameTooLarge,
    GoAway,
    Hello,
    Kind,
    Reason,
    Receipt,
    Status,
    Welcome,
    decode_client_frame,
    encode_client_message,
    message_to_map,
)
from node.protocol.wire.peer import decode_peer, encode_peer
from node.protocol.wire.seed import Meta, decode_meta, decode_whois_reply, encode_meta, encode_whois_reply
from node.protocol.wire.swim import SWIM_PAYLOAD_MAX, decode_datagram, decode_push_pull, encode_datagram

from .strategies import msgpack_values, mutated, mutated_bytes

# HOMING_EXAMPLES_SCALE=20 runs twenty times as many examples (a deeper local or nightly pass).
SCALE = max(1, int(os.environ.get("HOMING_EXAMPLES_SCALE", "1")))
FAST = settings(max_examples=25 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IDS = [t.name for t in TARGETS]


# --- 1. arbitrary bytes and damaged valid messages, through every target ------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@FAST
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_documented_errors(target: Target, data: bytes) -> None:
    target.run(data)


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
@FAST
@given(choice=st.data())
def test_damaged_valid_messages_raise_only_documented_errors(target: Target, choice: st.DataObject) -> None:
    seed = choice.draw(st.sampled_from(target.seeds()))
    target.run(choice.draw(mutated_bytes(seed)))


@pytest.mark.parametrize("target", TARGETS, ids=IDS)
def test_every_seed_is_accepted(target: Target) -> None:
    """The seeds are valid messages: each decodes without any error (so the fuzzers start from real inputs)."""
    for seed in target.seeds():
        target.fn(seed)


# --- 2. structured edits of valid messages ---------------------------------------------------------------


def _framed(obj: Any) -> bytes:
    """[type, body] back into a SWIM datagram; any other shape is sent as the body of a PING."""
    if isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int) and 0 <= obj[0] < 256:
        return bytes([WIRE_VERSION, obj[0]]) + packb(obj[1])
    return bytes([WIRE_VERSION, 1]) + packb(obj)


def _swim_valid() -> list[Any]:
    out = []
    for msg in swim_messages():
        data = encode_datagram(msg)
        out.append([data[1], msgpack.unpackb(data[2:], raw=False)])
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return b64u_encode(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def _client_both(m: Any) -> None:
    for frame in (packb(m), json.dumps(_jsonable(m))):
        for from_node in (False, True):
            with contextlib.suppress(ClientFrameError):
                decode_client_frame(frame, from_node=from_node)


CLIENT_VALID = [
    message_to_map(m)
    for m in (
        Envelope(kind=Kind.CALL_OFFER, to=NODE_A.id, call=b"c1", body=b"sdp", ref=1),
        Hello(id=NODE_A.id, nonce=bytes(32), sig=bytes(64)),
        Deliver(kind=Kind.CALL_ICE, sender=NODE_A.id, call=b"c", body=b"x", eid=bytes(16)),
        Receipt(ref=2, status=Status.REJECTED, reason=Reason.RATE_LIMITED),
        Error(code=ErrorCode.TOO_LARGE, ref=3),
        Welcome(id=NODE_A.id, sig=bytes(64)),
        GoAway(nodes=("homing://node/x",)),
    )
]


def _resigned(signer: Any, purpose: str, opener: Callable[[dict[str, bytes]], object]) -> Callable[[Any], None]:
    def check(body: Any) -> None:
        raw = packb(body)
        opener({"body": raw, "key": signer.id, "sig": signer.sign(b"homing/v1/" + purpose.encode() + raw)})

    return check


def _card_uri(doc: Any) -> None:
    parse_card(CARD_PREFIX + b64u_encode(packb(doc)), now=0)


REG = build_registration(NODE_A, ws="wss://a.example/v1/client", swim="a:7401", peer="a:7402", ts=NOW, ttl=180,
                         reg=NODE_A.id)  # fmt: skip
CARD_DOC = sign_document(NODE_A, NODE_CARD, {"id": NODE_A.id, "ws": "wss://a.example/v1/client", "ts": NOW,
                                              "exp": NOW + 3600})  # fmt: skip
META = encode_meta(Meta(peer_port=7402, host="a.example", url="wss://a.example/v1/client"))
WHOIS_REPLY = encode_whois_reply(NODE_A, ASKER, WHOIS_NONCE, META)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


# name, valid decoded objects, how an edited object reaches the decoder, the decoder's documented errors
STRUCTURED: list[tuple[str, list[Any], Callable[[Any], object], tuple[type[BaseException], ...]]] = [
    ("swim_datagram", _swim_valid(), lambda o: decode_datagram(_framed(o)), (RemoteProtocolError,)),
    ("swim_push_pull", [[d[1], _unpack(d[2:])] for d in BY_NAME["swim_push_pull"].seeds()],
     lambda o: decode_push_pull(_framed(o)), (RemoteProtocolError,)),
    ("peer_frame", [_unpack(encode_peer(m)) for m in peer_messages()], lambda o: decode_peer(packb(o)),
     (RemoteProtocolError,)),
    ("client_frame", CLIENT_VALID, _client_both, ()),
    ("whois_reply", [_unpack(WHOIS_REPLY[2:])],
     lambda o: decode_whois_reply(b"\x03\x01" + packb(o), asker=ASKER, nonce=WHOIS_NONCE), (RemoteProtocolError,)),
    ("meta", [_unpack(META)], lambda o: decode_meta(packb(o)), (RemoteProtocolError,)),
    ("list_document", [dict(list_doc())], lambda o: open_document(o, NODE_LIST, {REGISTRY.id}),
     (RemoteProtocolError,)),
    ("registration_document", [dict(REG)], open_registration, (RemoteProtocolError,)),
    ("node_list_body", [_unpack(list_doc()["body"])],
     _resigned(REGISTRY, NODE_LIST, lambda d: open_node_list(d, {REGISTRY.id}, now=NOW)), (RemoteProtocolError,)),
    ("registration_body", [_unpack(REG["body"])], _resigned(NODE_A, NODE_REGISTER, open_registration),
     (RemoteProtocolError,)),
    ("leave_body", [_unpack(build_leave(NODE_A, ts=NOW)["body"])], _resigned(NODE_A, NODE_LEAVE, open_leave),
     (RemoteProtocolError,)),
    ("card_body", [_unpack(CARD_DOC["body"])], _resigned(NODE_A, NODE_CARD, lambda d: _card_uri(d)),
     (RemoteProtocolError,)),
    ("card_document", [dict(CARD_DOC)], _card_uri, (RemoteProtocolError,)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "valid", "decode", "allowed"), STRUCTURED, ids=[s[0] for s in STRUCTURED])
@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice=st.data())
def test_edited_messages_raise_only_documented_errors(
    name: str, valid: list[Any], decode: Callable[[Any], object], allowed: tuple[type[BaseException], ...],
    choice: st.DataObject,
) -> None:  # fmt: skip
    obj = choice.draw(mutated(choice.draw(st.sampled_from(valid))))
    with contextlib.suppress(allowed):
        decode(obj)


@pytest.mark.parametrize(("name", "valid", "decode", "allowed"), STRUCTURED, ids=[s[0] for s in STRUCTURED])
def test_unedited_structured_messages_decode(
    name: str, valid: list[Any], decode: Callable[[Any], object], allowed: tuple[type[BaseException], ...]
) -> None:
    for obj in valid:
        decode(obj)


_toml_scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.datetimes()
    | st.dates()
    | st.times()
)
toml_values: st.SearchStrategy[Any] = st.recursive(
    _toml_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
SETTINGS = {s: [f.name for f in attrs.fields(cls)] for s, cls in SECTIONS.items()}


@settings(max_examples=60 * SCALE, deadline=None)
@given(section=st.sampled_from([*SETTINGS, "bogus"]), choice=st.data())
def test_any_toml_value_in_any_setting_is_a_config_error_or_a_valid_config(section: str, choice: st.DataObject) -> None:
    key = choice.draw(st.sampled_from([*SETTINGS.get(section, []), "unknown_key"]))
    value = choice.draw(toml_values)
    try:
        config = build_config({section: {key: value}})
    except ConfigError as exc:
        assert exc.key.startswith(section) and "\n" not in exc.reason
        return
    assert isinstance(config, NodeConfig)


def test_a_rendered_config_round_trips(tmp_path: Path) -> None:
    config = build_config({"relay": {"mailbox_ttl": 5.5}, "federation": {"open": True, "join": ["[::1]:7401"]}})
    path = tmp_path / "homing-node.toml"
    path.write_text(render_toml(config))
    assert build_config(load_toml(path)) == config


# --- 3. valid messages round-trip ------------------------------------------------------------------------

ids32 = st.binary(min_size=32, max_size=32)
calls = st.binary(min_size=1, max_size=Limits.CALL_ID_MAX)
bodies = st.binary(max_size=300)
refs = st.integers(0, 2**64 - 1)
client_messages = st.one_of(
    st.builds(Envelope, kind=st.sampled_from(Kind), to=ids32, call=calls, body=bodies, ref=refs),
    st.builds(Deliver, kind=st.sampled_from(Kind), sender=ids32, call=calls, body=bodies,
              eid=st.binary(min_size=16, max_size=16)),
    st.builds(Receipt, ref=refs, status=st.sampled_from(Status), reason=st.none() | st.sampled_from(Reason)),
    st.builds(Error, code=st.sampled_from(ErrorCode), ref=st.none() | refs),
    st.builds(Hello, id=ids32, nonce=st.binary(min_size=32, max_size=32), sig=st.binary(min_size=64, max_size=64)),
    st.builds(GoAway, nodes=st.lists(st.text(max_size=80), max_size=4).map(tuple)),
)  # fmt: skip


@FAST
@given(msg=client_messages, as_json=st.booleans())
def test_client_messages_round_trip(msg: Any, as_json: bool) -> None:
    from_node = not isinstance(msg, Envelope | Hello)
    assert decode_client_frame(encode_client_message(msg, json=as_json), from_node=from_node) == msg


def test_swim_and_peer_messages_round_trip() -> None:
    for msg in swim_messages():
        assert decode_datagram(encode_datagram(msg)) == msg
    for pmsg in peer_messages():
        assert decode_peer(encode_peer(pmsg)) == pmsg


hosts = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
entries = st.builds(
    NodeEntry, id=ids32, ws=hosts.map(lambda h: f"wss://{h}/v1/client"), swim=hosts.map(lambda h: h + ":7401"),
    peer=hosts.map(lambda h: h + ":7402"), seen=st.integers(0, 2**40),
)  # fmt: skip


@FAST
@given(nodes=st.lists(entries, max_size=6), lifetime=st.integers(0, 86_400))
def test_node_lists_round_trip_through_msgpack_and_txt(nodes: list[NodeEntry], lifetime: int) -> None:
    doc = build_node_list(REGISTRY, nodes, issued=NOW - 1, expires=NOW + lifetime)
    for carried in (decode_document(encode_document(doc)), decode_txt(encode_txt(doc))):
        opened = open_node_list(carried, {REGISTRY.id}, now=NOW)
        assert opened.nodes == tuple(nodes) and opened.signer == REGISTRY.id


@FAST
@given(ts=st.integers(0, 2**40), ttl=st.integers(1, 86_400), host=hosts)
def test_registrations_leaves_and_cards_round_trip(ts: int, ttl: int, host: str) -> None:
    ws = f"wss://{host}/v1/client"
    reg = open_registration(decode_document(encode_document(
        build_registration(NODE_A, ws=ws, swim=host + ":1", peer=host + ":2", ts=ts, ttl=ttl,
                           reg=NODE_A.id))))  # fmt: skip
    assert (reg.id, reg.ws, reg.ts, reg.ttl) == (NODE_A.id, ws, ts, ttl)
    assert open_leave(build_leave(NODE_A, ts=ts)) == (NODE_A.id, ts)
    card = parse_card(make_card(NODE_A, ws=ws, ts=ts), now=ts)
    assert (card.id, card.ws, card.ts) == (NODE_A.id, ws, ts)


@FAST
@given(plain=st.binary(max_size=1200), peer_port=st.integers(1, 65535), host=st.text(max_size=60))
def test_sealed_datagrams_meta_and_whois_replies_round_trip(plain: bytes, peer_port: int, host: str) -> None:
    a, b = DatagramSealer(NODE_A, epoch_ms=1), DatagramSealer(REGISTRY, epoch_ms=1)
    assert b.open(a.seal(REGISTRY.id, plain)) == (NODE_A.id, plain)
    meta = Meta(peer_port=peer_port, host=host, url="")
    assert decode_meta(encode_meta(meta)) == meta
    reply = encode_whois_reply(NODE_A, ASKER, WHOIS_NONCE, encode_meta(meta))
    assert decode_whois_reply(reply, asker=ASKER, nonce=WHOIS_NONCE) == (NODE_A.id, encode_meta(meta))


# --- 4. one byte over every size limit: refused as too large, before any parsing --------------------------

OVERSIZED: list[tuple[str, Callable[[], object], type[BaseException]]] = [
    ("swim datagram", lambda: decode_datagram(bytes([1, 1]) + bytes(SWIM_PAYLOAD_MAX - 1)), TooLarge),
    ("push-pull", lambda: decode_push_pull(bytes([1, 32]) + bytes(Limits.PUSH_PULL_MAX - 1)), TooLarge),
    ("peer frame", lambda: decode_peer(bytes(Limits.PEER_FRAME_MAX + 1)), TooLarge),
    ("client frame", lambda: decode_client_frame(bytes(Limits.CLIENT_FRAME_MAX + 1)), FrameTooLarge),
    ("client JSON frame", lambda: decode_client_frame(" " * (Limits.CLIENT_FRAME_MAX + 1)), FrameTooLarge),
    ("meta", lambda: decode_meta(bytes(META_MAX + 1)), TooLarge),
    ("document", lambda: decode_document(bytes(SIGNED_DOC_MAX_BYTES + 257)), RemoteProtocolError),
    ("card", lambda: parse_card(CARD_PREFIX + "A" * CARD_MAX_CHARS, now=0), RemoteProtocolError),
    ("TXT chunk", lambda: decode_txt([[b"hm1/0/1/AAAAAAAAAAA/" + b"A" * 2000]]), TooLarge),
]


@pytest.mark.parametrize(("what", "call", "error"), OVERSIZED, ids=[o[0] for o in OVERSIZED])
def test_one_byte_over_the_limit_is_refused_as_too_large(
    what: str, call: Callable[[], object], error: type[BaseException]
) -> None:
    with pytest.raises(error) as info:
        call()
    assert getattr(info.value, "code", "too_large") == "too_large", what


@FAST
@given(value=msgpack_values)
def test_any_value_as_a_whole_client_frame(value: Any) -> None:
    for frame in (packb(value), json.dumps(_jsonable(value), default=str)):
        with contextlib.suppress(ClientFrameError):
            decode_client_frame(frame)


def test_toml_datetimes_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"relay\.mailbox_ttl"):
        build_config({"relay": {"mailbox_ttl": dt.datetime(2020, 1, 1)}})
