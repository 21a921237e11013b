"""`unpack_all` (node/protocol/wire/__init__.py) reuses msgpack Unpackers: whatever one call was given, truncated
or malformed, the next call decodes exactly what msgpack decodes, on any thread."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.protocol.errors import RemoteProtocolError
from node.protocol.wire import Limits, packb, unpack_all

MAX = Limits.PEER_FRAME_MAX

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,  # enough to cut inside nested containers; larger ones only made drawing them slow (70 ms each)
)
maps = st.dictionaries(st.text(max_size=8), values, min_size=1, max_size=4)


def reference(data: bytes) -> list[Any] | None:
    """What a fresh msgpack Unpacker makes of `data`: its objects, or None unless it is whole objects only. Ext
    types are refused, as the node's one decoding profile refuses them (node/protocol/wire/__init__.py)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_ext_len=0, max_buffer_size=max(len(data), 1))
    objs, end = [], 0
    try:
        unpacker.feed(data)
        for obj in unpacker:
            objs.append(obj)
            end = unpacker.tell()  # read after each whole object: after a partial one it counts what it read of it
    except Exception:
        return None
    return objs if objs and end == len(data) else None


def decode(data: bytes) -> list[Any] | None:
    try:
        return unpack_all(data, max_bytes=MAX)
    except RemoteProtocolError:
        return None


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(maps, min_size=1, max_size=5), cut=st.integers(0, 400), junk=st.binary(max_size=4))
@example(batch=[{"": None}], cut=0, junk=b"\xd4\x00\x00")  # an ext type alone: refused by both, not decoded
def test_a_damaged_batch_is_refused_and_leaves_the_next_one_intact(batch: list[Any], cut: int, junk: bytes) -> None:
    whole = b"".join(packb(m) for m in batch)
    damaged = whole[: cut % (len(whole) + 1)] + junk
    assert decode(damaged) == reference(damaged)
    assert decode(whole) == batch  # the Unpacker the damaged call used, if any, was not put back with its leftovers


def test_a_truncated_object_is_an_error_and_not_carried_into_the_next_call() -> None:
    first, second = packb({"t": 36, "b": b"x" * 1000}), packb({"t": 37, "s": "delivered"})
    with pytest.raises(RemoteProtocolError, match="OutOfData"):
        unpack_all(first[:-10], max_bytes=MAX)
    assert unpack_all(second, max_bytes=MAX) == [{"t": 37, "s": "delivered"}]
    with pytest.raises(RemoteProtocolError, match="empty"):
        unpack_all(b"", max_bytes=MAX)
    assert unpack_all(first + second, max_bytes=MAX) == [{"t": 36, "b": b"x" * 1000}, {"t": 37, "s": "delivered"}]


def test_threads_decoding_at_once_each_get_their_own_batches() -> None:
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(300):
            batch = [{"n": n, "i": i, "b": bytes([n]) * (i % 50)}, {"n": n}]
            if unpack_all(b"".join(packb(m) for m in batch), max_bytes=MAX) != batch:
                wrong.append(f"thread {n} batch {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert wrong == []
