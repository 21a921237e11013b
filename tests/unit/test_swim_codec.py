"""node/protocol/wire/swim.py: round trips, the size budget, and every class of malformed input."""

from __future__ import annotations

import contextlib

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.errors import RemoteProtocolError
from node.protocol.swim.messages import (
    META_MAX,
    Ack,
    Gossip,
    MemberInfo,
    MemberState,
    Nack,
    Ping,
    PingReq,
    PushPullState,
    SwimMessage,
    Update,
)
from node.protocol.wire import WIRE_VERSION, Limits, MsgType
from node.protocol.wire.swim import (
    PUSH_PULL_MEMBERS_MAX,
    SWIM_PAYLOAD_MAX,
    UPDATE_MIN_SIZE,
    decode_datagram,
    decode_push_pull,
    encode_datagram,
    encode_push_pull,
    piggyback_budget,
    update_size,
)
from node.testing.keys import VERIFIER, nid, signed

ids = st.binary(min_size=32, max_size=32)
addrs = st.tuples(st.text(max_size=40), st.integers(0, 65535))
CLAIMS = (MemberState.SUSPECT, MemberState.DEAD)
members = st.builds(
    MemberInfo,
    id=ids,
    addr=addrs,
    meta=st.binary(max_size=256),
    incarnation=st.integers(0, 2**53),
    state=st.sampled_from(MemberState),
    sig=st.binary(min_size=64, max_size=64),
)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    """Alive/left records travel whole (signed); suspect/dead claims as (id, incarnation, state, accuser), with the
    accuser's signature or (to its subject) without."""
    m = draw(members)
    if m.state in CLAIMS:
        claim = MemberInfo(id=m.id, addr=("", 0), meta=b"", incarnation=m.incarnation, state=m.state)
        if draw(st.booleans()):
            return Update(member=claim, by=draw(ids), sig=draw(st.binary(min_size=64, max_size=64)))
        return Update(member=claim, by=draw(st.one_of(ids, st.just(b""))))
    return Update(member=m)


upd_lists = st.lists(updates(), max_size=4).map(tuple)
seqs = st.integers(0, 2**63 - 1)
messages = st.one_of(
    st.builds(Ping, seq=seqs, updates=upd_lists),
    st.builds(Ack, seq=seqs, updates=upd_lists),
    st.builds(Nack, seq=seqs, updates=upd_lists),
    st.builds(Gossip, updates=upd_lists),
    st.builds(PingReq, seq=seqs, target=ids, target_addr=addrs, nack=st.booleans(), updates=upd_lists),
)


@given(messages)
def test_datagram_round_trip(msg: SwimMessage) -> None:
    data = encode_datagram(msg)
    assert data[0] == WIRE_VERSION
    assert decode_datagram(data) == msg


@given(st.lists(members, max_size=20).map(tuple))
@settings(max_examples=50)
def test_push_pull_round_trip(ms: tuple[MemberInfo, ...]) -> None:
    state = PushPullState(members=ms)
    assert decode_push_pull(encode_push_pull(state)) == state
    assert decode_push_pull(encode_push_pull(state, reply=True)) == state


@given(updates())
def test_update_size_is_exact(u: Update) -> None:
    base = encode_datagram(Gossip())
    assert len(encode_datagram(Gossip(updates=(u,)))) == len(base) + update_size(u)
    assert update_size(u) >= UPDATE_MIN_SIZE


def test_budget_filled_datagram_fits() -> None:
    big = [
        Update(
            member=MemberInfo(
                id=bytes([i]) * 32,
                addr=("x" * 253, 65535),
                meta=b"m" * 256,
                incarnation=2**53,
                state=MemberState.ALIVE,
                sig=b"s" * 64,
            ),
        )
        for i in range(20)
    ]
    msg = PingReq(seq=2**63 - 1, target=b"t" * 32, target_addr=("y" * 253, 65535), nack=True)
    budget = piggyback_budget(msg)
    chosen: list[Update] = []
    for u in big:
        if update_size(u) <= budget:
            chosen.append(u)
            budget -= update_size(u)
    data = encode_datagram(PingReq(seq=msg.seq, target=msg.target, target_addr=msg.target_addr, updates=tuple(chosen)))
    assert len(chosen) >= 1
    assert len(data) <= SWIM_PAYLOAD_MAX == Limits.SWIM_DATAGRAM_MAX - 65
    assert decode_datagram(data).updates == tuple(chosen)


def raw(msg_type: int, body: object, version: int = WIRE_VERSION) -> bytes:
    return bytes((version, msg_type)) + msgpack.packb(body, use_bin_type=True)


GOOD_MEMBER = [b"i" * 32, "10.0.0.1", 7401, b"meta", 3, 0, b"s" * 64]
GOOD_CLAIM = [b"i" * 32, 3, 1, b"b" * 32]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("header only", bytes((WIRE_VERSION, MsgType.PING))),
        ("wrong version", raw(MsgType.PING, {"s": 1, "u": []}, version=2)),
        ("version zero", raw(MsgType.PING, {"s": 1, "u": []}, version=0)),
        ("unknown type", raw(31, {"s": 1, "u": []})),
        ("peer-link type", raw(MsgType.PUSH_PULL, {"m": []})),
        ("oversized", raw(MsgType.PING, {"s": 1, "u": [], "pad": b"x" * SWIM_PAYLOAD_MAX})),
        ("not msgpack", bytes((WIRE_VERSION, MsgType.PING)) + b"\xc1\xc1\xc1"),
        ("trailing bytes", raw(MsgType.PING, {"s": 1, "u": []}) + b"\x00"),
        ("body not a map", raw(MsgType.PING, [1, []])),
        ("seq missing", raw(MsgType.PING, {"u": []})),
        ("seq negative", raw(MsgType.ACK, {"s": -1, "u": []})),
        ("seq a string", raw(MsgType.ACK, {"s": "1", "u": []})),
        ("seq a bool", raw(MsgType.ACK, {"s": True, "u": []})),
        ("updates missing", raw(MsgType.NACK, {"s": 1})),
        ("updates a map", raw(MsgType.COMPOUND, {"u": {}})),
        ("too many updates", raw(MsgType.COMPOUND, {"u": [GOOD_MEMBER] * (Limits.SWIM_PIGGYBACK_MAX_ITEMS + 1)})),
        ("update short", raw(MsgType.COMPOUND, {"u": [GOOD_MEMBER[:6]]})),
        ("update id short", raw(MsgType.COMPOUND, {"u": [[b"i" * 31, *GOOD_MEMBER[1:]]]})),
        ("update host bytes", raw(MsgType.COMPOUND, {"u": [[GOOD_MEMBER[0], b"h", *GOOD_MEMBER[2:]]]})),
        ("update port big", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:2], 70000, *GOOD_MEMBER[3:]]]})),
        (
            "update meta big",
            raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:3], b"m" * (META_MAX + 1), *GOOD_MEMBER[4:]]]}),
        ),
        ("update inc float", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:4], 1.5, *GOOD_MEMBER[5:]]]})),
        ("update state 9", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:5], 9, b"s" * 64]]})),
        ("update sig short", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:6], b"s" * 63]]})),
        ("update unsigned", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:6], b""]]})),
        ("update inc above 2^53", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:4], 2**53 + 1, *GOOD_MEMBER[5:]]]})),
        ("inc 2^63-1 (issue #11)", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 2**63 - 1, 2, b""]]})),
        ("claim by short", raw(MsgType.COMPOUND, {"u": [[*GOOD_CLAIM[:3], b"b"]]})),
        ("claim sig short", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 1, b"b" * 32, b"s" * 63]]})),
        ("claim sig empty", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 1, b"b" * 32, b""]]})),
        ("claim sig a string", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 1, b"b" * 32, "s" * 64]]})),
        ("signed claim, no accuser", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 2, b"", b"s" * 64]]})),
        ("claim of alive", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 0, b""]]})),
        ("signed claim of alive", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 0, b"b" * 32, b"s" * 64]]})),
        ("claim of left", raw(MsgType.COMPOUND, {"u": [[GOOD_CLAIM[0], 3, 3, b""]]})),
        ("suspect as a record", raw(MsgType.COMPOUND, {"u": [[*GOOD_MEMBER[:5], 1, b"s" * 64]]})),
        ("ping-req nack not bool", raw(MsgType.PING_REQ, {"s": 1, "t": b"t" * 32, "h": "h", "p": 1, "n": 1, "u": []})),
        ("ping-req target short", raw(MsgType.PING_REQ, {"s": 1, "t": b"t", "h": "h", "p": 1, "n": True, "u": []})),
        ("ping-req port str", raw(MsgType.PING_REQ, {"s": 1, "t": b"t" * 32, "h": "h", "p": "1", "n": True, "u": []})),
        (
            "ping-req host long",
            raw(MsgType.PING_REQ, {"s": 1, "t": b"t" * 32, "h": "h" * 300, "p": 1, "n": True, "u": []}),
        ),
        ("non-str map key", raw(MsgType.COMPOUND, {1: []})),
    ],
)
def test_malformed_datagram(name: str, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_datagram(data)


def test_every_truncation_is_refused() -> None:
    msg = PingReq(
        seq=77,
        target=b"t" * 32,
        target_addr=("10.0.0.9", 7401),
        updates=(
            Update(
                member=MemberInfo(
                    id=b"i" * 32, addr=("a", 1), meta=b"m", incarnation=1, state=MemberState.ALIVE, sig=b"s" * 64
                )
            ),
        ),
    )
    data = encode_datagram(msg)
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_datagram(data[:cut])


@given(st.binary(max_size=1500))
def test_random_bytes_only_raise_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_datagram(data)
    with contextlib.suppress(RemoteProtocolError):
        decode_push_pull(data)


@given(st.binary(max_size=200))
def test_random_body_after_valid_header(body: bytes) -> None:
    for t in (MsgType.PING, MsgType.PING_REQ, MsgType.ACK, MsgType.NACK, MsgType.COMPOUND):
        with contextlib.suppress(RemoteProtocolError):
            decode_datagram(bytes((WIRE_VERSION, t)) + body)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        raw(MsgType.PING, {"m": []}),
        raw(MsgType.PUSH_PULL, {"m": []}, version=9),
        raw(MsgType.PUSH_PULL, {"m": {}}),
        raw(MsgType.PUSH_PULL, {"x": []}),
        raw(MsgType.PUSH_PULL, {"m": [[*GOOD_MEMBER[:5], 1, b""]]}),  # a suspect without the signature
        raw(MsgType.PUSH_PULL, {"m": [GOOD_CLAIM]}),  # a claim is no state record
        raw(MsgType.PUSH_PULL, {"m": [GOOD_MEMBER[:3]]}),
        bytes((WIRE_VERSION, MsgType.PUSH_PULL)) + b"\x00" * (Limits.PUSH_PULL_MAX),
    ],
)
def test_malformed_push_pull(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_push_pull(data)


def test_push_pull_of_many_members_fits() -> None:
    ms = tuple(
        MemberInfo(
            id=i.to_bytes(32, "big"),
            addr=("10.0.0.1", 7401),
            meta=b"m" * 64,
            incarnation=i,
            state=MemberState.ALIVE,
            sig=bytes(64),
        )
        for i in range(10_000)
    )
    data = encode_push_pull(PushPullState(members=ms))
    assert len(data) <= Limits.PUSH_PULL_MAX
    assert len(decode_push_pull(data).members) == 10_000


def test_push_pull_is_compressed_and_a_zip_bomb_is_refused() -> None:
    import zlib

    from node.protocol.errors import TooLarge
    from node.protocol.wire import packb

    state = PushPullState(
        members=tuple(
            MemberInfo(
                id=bytes([i]) * 32,
                addr=("127.0.0.1", 7000 + i),
                meta=b"ws://127.0.0.1/v1/client" * 2,
                incarnation=1,
                state=MemberState.ALIVE,
                sig=bytes([i]) * 64,
            )
            for i in range(30)
        )
    )
    data = encode_push_pull(state)
    assert decode_push_pull(data) == state
    assert len(data) < 0.7 * len(packb({"m": [[m.id, m.addr[0], m.addr[1], m.meta] for m in state.members]}))
    bomb = bytes((WIRE_VERSION, MsgType.PUSH_PULL)) + packb({"z": zlib.compress(bytes(Limits.PUSH_PULL_MAX + 10))})
    with pytest.raises(TooLarge):
        decode_push_pull(bomb)
    garbage = bytes((WIRE_VERSION, MsgType.PUSH_PULL)) + packb({"z": b"not deflate"})
    with pytest.raises(RemoteProtocolError):
        decode_push_pull(garbage)


GOOD_MEMBER = dict(
    id=b"i" * 32, addr=("10.0.0.1", 7400), meta=b"m", incarnation=3, state=MemberState.ALIVE, sig=b"s" * 64
)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("id", b"i" * 31, ValueError),
        ("id", "i" * 32, ValueError),
        ("addr", ("10.0.0.1",), ValueError),
        ("addr", ["10.0.0.1", 7400], ValueError),
        ("addr", (b"10.0.0.1", 7400), ValueError),
        ("addr", ("10.0.0.1", 65536), ValueError),
        ("addr", ("10.0.0.1", -1), ValueError),
        ("meta", b"m" * (META_MAX + 1), ValueError),
        ("meta", "m", ValueError),
        ("incarnation", -1, ValueError),
        ("incarnation", "3", TypeError),
        ("state", "alive", TypeError),
        ("sig", b"s" * 65, ValueError),
        ("sig", None, ValueError),
    ],
)
def test_a_member_record_refuses_every_bad_field(field: str, value: object, error: type[Exception]) -> None:
    """MemberInfo checks its fields in one pass (not per-field validators): each bad one is still refused."""
    with pytest.raises(error, match=field):
        MemberInfo(**{**GOOD_MEMBER, field: value})  # type: ignore[arg-type]


@given(state=st.sampled_from(MemberState), incarnation=st.integers(0, 2**32), meta=st.binary(max_size=META_MAX))
def test_with_state_is_evolve(state: MemberState, incarnation: int, meta: bytes) -> None:
    m = MemberInfo(**{**GOOD_MEMBER, "incarnation": incarnation, "meta": meta})  # type: ignore[arg-type]
    assert m.with_state(state) == attrs.evolve(m, state=state)
    assert hash(m.with_state(state)) == hash(attrs.evolve(m, state=state))


def test_boot_epoch_incarnations_fit_the_wire() -> None:
    """A node's first incarnation is its boot epoch (its start time in ms, about 2^41; docs/swim.md "Boot epochs
    and replays"): records and claims at such incarnations, signed by a real key, go through datagrams and
    push-pull unchanged and still verify, the piggyback budget counts their real size, and a push-pull state of
    `PUSH_PULL_MEMBERS_MAX` members at such incarnations stays within `Limits.PUSH_PULL_MAX`."""
    epoch = 1_764_000_000_000 + 12_345  # a boot epoch, some refutations and refreshes later
    me = signed(
        MemberInfo(id=nid(1), addr=("10.0.0.1", 7401), meta=b"m" * 64, incarnation=epoch, state=MemberState.ALIVE)
    )
    claim = Update(
        member=MemberInfo(id=nid(1), addr=("", 0), meta=b"", incarnation=epoch, state=MemberState.DEAD), by=nid(2)
    )
    msg = Gossip(updates=(Update(member=me), claim))
    back = decode_datagram(encode_datagram(msg))
    assert back == msg and VERIFIER.verify(back.updates[0].member)
    assert len(encode_datagram(msg)) == len(encode_datagram(Gossip())) + update_size(Update(member=me)) + update_size(
        claim
    )
    ms = tuple(
        attrs.evolve(me, id=i.to_bytes(32, "big"), incarnation=epoch + i, sig=bytes(64))
        for i in range(PUSH_PULL_MEMBERS_MAX)
    )
    data = encode_push_pull(PushPullState(members=ms))
    assert len(data) <= Limits.PUSH_PULL_MAX
    assert decode_push_pull(data).members[-1].incarnation == epoch + PUSH_PULL_MEMBERS_MAX - 1
    assert decode_push_pull(encode_push_pull(PushPullState(members=(me,)))).members == (me,)
