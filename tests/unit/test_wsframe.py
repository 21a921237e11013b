"""The node's WebSocket frame reader (node/protocol/wire/wsframe.py) against wsproto, the library it replaces.

Random streams of client frames, valid and broken (reserved bits, bad opcodes, unmasked, fragmented or long
control frames, stray continuations, bad UTF-8 split across frames, close codes of every kind), cut into random
pieces, go to both; after joining each frame's pieces (the two cut long frames at different points, which is
allowed: rule 3) the event sequences must be the same, failures with the same close code.
"""

from __future__ import annotations

import itertools
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from node.protocol.wire.wsframe import (
    PING_FRAME,
    CloseFrame,
    Data,
    Failed,
    FrameReader,
    PingFrame,
    PongFrame,
    close_frame,
    frame,
    unmask,
)


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True, long: int = 0
) -> bytes:
    """A client frame as a (possibly broken) client would send it. `long` forces the 16- (2) or 64-bit (8) length."""
    mask = os.urandom(4) if masked else b""
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | rsv << 4 | opcode,))
    bit = 0x80 if masked else 0
    if long == 8 or n >= 65536:
        head += bytes((bit | 127,)) + struct.pack("!Q", n)
    elif long == 2 or n >= 126:
        head += bytes((bit | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((bit | n,))
    return head + mask + (unmask(payload, mask, 0) if masked else payload)


def joined(parts: list[bytes | str]) -> bytes | str:
    """The pieces of one frame as one value (text pieces are str, binary ones bytes)."""
    return "".join(parts) if parts and isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]


def normalise_ours(events: list[object]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    acc: list[bytes | str] = []
    for e in events:
        if isinstance(e, Data):
            acc.append(e.data)
            if e.frame_end:
                out.append(("data", joined(acc), e.fin))
                acc = []
        elif isinstance(e, PingFrame):
            out.append(("ping", e.payload))
        elif isinstance(e, PongFrame):
            out.append(("pong", e.payload))
        elif isinstance(e, CloseFrame):
            out.append(("close", e.code, e.reason))
        elif isinstance(e, Failed):
            out.append(("failed", e.code))
            return out  # what arrived of an unfinished frame before the failure does not count (as below)
    if acc:  # an unfinished frame: what arrived of it
        out.append(("partial", joined(acc)))
    return out


def normalise_wsproto(conn: Connection, chunks: list[bytes]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    acc: list[bytes | str] = []
    for chunk in chunks:
        if conn.state is not ConnectionState.OPEN:
            break
        conn.receive_data(chunk)
        for e in conn.events():
            if isinstance(e, (TextMessage, BytesMessage)):
                acc.append(bytes(e.data) if isinstance(e.data, bytearray) else e.data)
                if e.frame_finished:
                    out.append(("data", joined(acc), e.message_finished))
                    acc = []
            elif isinstance(e, Ping):
                out.append(("ping", bytes(e.payload)))
            elif isinstance(e, Pong):
                out.append(("pong", bytes(e.payload)))
            elif isinstance(e, CloseConnection):
                if conn.state is ConnectionState.REMOTE_CLOSING:
                    out.append(("close", int(e.code), e.reason or ""))
                else:  # a ParseFailed
                    out.append(("failed", int(e.code)))
                    return out
    if acc:
        out.append(("partial", joined(acc)))
    return out


def feed_ours(chunks: list[bytes]) -> list[tuple[object, ...]]:
    reader = FrameReader()
    events: list[object] = []
    for chunk in chunks:
        events += reader.feed(chunk)
    return normalise_ours(events)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


TEXTS = st.sampled_from(["", "hi", "é", "😀 call", "x" * 130, "ü" * 40_000])
BROKEN_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\xe2\x82"])
CODES = st.sampled_from([1000, 1001, 1002, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999, 3000, 4999, 5000, 999])


@st.composite
def frame_stream(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 14))
        if kind <= 2:  # a text or binary message, maybe fragmented
            text = draw(TEXTS)
            raw = text.encode() if kind != 2 else draw(st.binary(max_size=300))
            op = 0x1 if kind != 2 else 0x2
            parts = draw(st.integers(1, 3))
            step = max(1, len(raw) // parts)
            pieces = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
            for j, piece in enumerate(pieces):
                long = draw(st.sampled_from([0, 0, 2, 8])) if len(piece) < 126 else 0
                out += client_frame(op if j == 0 else 0x0, piece, fin=j == len(pieces) - 1, long=long)
                if draw(st.booleans()):
                    out += client_frame(0x9, draw(st.binary(max_size=20)))  # control between fragments
        elif kind == 3:
            out += client_frame(0x9, draw(st.binary(max_size=125)))
        elif kind == 4:
            out += client_frame(0xA, draw(st.binary(max_size=125)))
        elif kind == 5:
            out += client_frame(0x1, draw(BROKEN_UTF8), fin=draw(st.booleans()))
        elif kind == 6:
            code = draw(CODES)
            reason = draw(st.sampled_from([b"", b"bye", b"\xff"]))
            out += client_frame(0x8, struct.pack("!H", code) + reason)
        elif kind == 7:
            out += client_frame(0x8, draw(st.sampled_from([b"", b"\x03"])))
        elif kind == 8:
            out += client_frame(draw(st.sampled_from([0x3, 0x7, 0xB, 0xF])), b"x")
        elif kind == 9:
            out += client_frame(0x2, b"rsv", rsv=draw(st.integers(1, 7)))
        elif kind == 10:
            out += client_frame(0x2, b"plain", masked=False)
        elif kind == 11:
            out += client_frame(0x9, b"x", fin=False)
        elif kind == 12:
            out += client_frame(0x9, b"p" * 126)
        elif kind == 13:
            out += client_frame(0x0, b"stray")
        else:
            out += client_frame(0x1, b"open", fin=False) + client_frame(0x2, b"new")
    return out


@settings(max_examples=400, deadline=None)
@given(frame_stream(), st.lists(st.integers(0, 200_000), max_size=12))
def test_the_reader_agrees_with_wsproto_on_random_cut_streams(stream: bytes, points: list[int]) -> None:
    chunks = cut(stream, points)
    theirs = normalise_wsproto(Connection(ConnectionType.SERVER), chunks)
    ours = feed_ours(chunks)
    assert ours == theirs


def test_a_long_frame_is_handed_over_as_it_arrives_not_buffered() -> None:
    reader = FrameReader()
    wire = client_frame(0x2, b"z" * 100_000)
    events = reader.feed(wire[:5000])
    assert events and all(isinstance(e, Data) and not e.frame_end for e in events)
    assert len(reader._buf) == 0  # nothing of the payload is kept
    rest = reader.feed(wire[5000:])
    assert isinstance(rest[-1], Data) and rest[-1].frame_end and rest[-1].fin
    assert sum(len(e.data) for e in events + rest if isinstance(e, Data)) == 100_000


def test_nothing_is_parsed_after_a_close_or_a_failure() -> None:
    reader = FrameReader()
    events = reader.feed(client_frame(0x8, struct.pack("!H", 1000)) + client_frame(0x2, b"after"))
    assert events == [CloseFrame(1000, "")] and reader.done
    assert reader.feed(client_frame(0x2, b"more")) == []
    broken = FrameReader()
    assert broken.feed(client_frame(0x2, b"x", masked=False) + client_frame(0x2, b"y")) == [
        Failed(1002, "unmasked client frame")
    ]


def test_server_frames_are_what_wsproto_would_send() -> None:
    from wsproto.frame_protocol import FrameProtocol

    proto = FrameProtocol(client=False, extensions=[])
    assert bytes(proto.ping(b"")) == PING_FRAME
    assert frame(0xA, b"p" * 125) == bytes(proto.pong(b"p" * 125))
    assert close_frame(1000, "bye") == bytes(proto.close(1000, "bye"))
    assert close_frame(4429, "x" * 300) == bytes(proto.close(4429, "x" * 123))
    assert close_frame(1005) == bytes(proto.close(None))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200), st.binary(min_size=4, max_size=4), st.integers(0, 2**20))
def test_unmask_is_the_rfc_xor_on_both_sides_of_the_strided_threshold(data: bytes, mask: bytes, offset: int) -> None:
    """RFC 6455 §5.3: byte i of the payload is XORed with mask[i % 4]; `offset` is where `data` starts in it."""
    want = bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))
    assert unmask(data, mask, offset) == want
    for n in (255, 256, 257, 1027):  # the sizes around the switch to strided translation, whatever hypothesis drew
        long = (data * (n // max(len(data), 1) + 1))[:n] if data else bytes(n)
        assert unmask(long, mask, offset) == bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(long))
