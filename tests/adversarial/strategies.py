"""Hypothesis strategies that turn valid messages into hostile ones.

- `msgpack_values`: any value msgpack can carry (the wrong types an attacker would send).
- `mutated(obj)`: a valid decoded message (maps and arrays, nested) with one to three edits at random places:
  drop a field, give it a value of the wrong type, make it oversized, truncate it, add an unknown field,
  repeat a list item. The result is still packable, so the decoder's schema checks, not msgpack, must refuse it.
- `mutated_bytes(data)`: byte-level damage to an encoded message: truncation, bit flips, inserted bytes,
  a splice of its own bytes (repeats), or padding past the size limit.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from node.protocol.wire import packb

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack can encode
EDITED_MAX_BYTES = 512 * 1024  # an edited message stays around the largest limit it tests (peer frame 256 KiB)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, INT_MAX, INT_MIN])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=80)
)
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)

Path = tuple[Any, ...]


def _paths(obj: Any, prefix: Path = ()) -> list[Path]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def _oversized(value: Any, factor: int) -> Any:
    if isinstance(value, bytes | str):
        return (value or type(value)(b"x" if isinstance(value, bytes) else "x")) * factor
    if isinstance(value, list):
        return (value or [0]) * factor
    if isinstance(value, int) and not isinstance(value, bool):
        return INT_MAX if value >= 0 else INT_MIN
    return value


def _edit(draw: st.DrawFn, root: Any) -> Any:
    path = draw(st.sampled_from(_paths(root)))
    op = draw(st.sampled_from(["drop", "retype", "oversize", "truncate", "extra", "repeat"]))
    if not path:
        return draw(msgpack_values) if op == "retype" else root
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    value = parent[key]
    if op == "drop":
        del parent[key]
    elif op == "retype":
        parent[key] = draw(msgpack_values)
    elif op == "oversize":
        parent[key] = _oversized(value, draw(st.sampled_from([2, 17, 300, 5000])))
    elif op == "truncate" and isinstance(value, bytes | str | list):
        parent[key] = value[: draw(st.integers(0, max(0, len(value) - 1)))]
    elif op == "extra" and isinstance(value, dict):
        value[draw(st.text(max_size=6))] = draw(msgpack_values)
    elif op == "repeat" and isinstance(value, list) and value:
        value.extend(value[: draw(st.integers(1, len(value)))])
    return root


@st.composite
def mutated(draw: st.DrawFn, obj: Any) -> Any:
    """`obj` (a decoded valid message) with one to three hostile edits."""
    root = _copy(obj)
    for _ in range(draw(st.integers(1, 3))):
        before = _copy(root)
        root = _edit(draw, root)
        if len(packb(root)) > EDITED_MAX_BYTES:  # repeated oversizing would grow without bound: undo
            root = before
    return root


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, limit: int = 0) -> bytes:
    """`data` damaged at the byte level; with `limit`, sometimes padded to just past it."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "splice", "pad"]))
        if op == "truncate" and out:
            del out[draw(st.integers(0, len(out) - 1)) :]
        elif op == "flip" and out:
            out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            at = draw(st.integers(0, len(out)))
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "splice" and out:
            start = draw(st.integers(0, len(out) - 1))
            at = draw(st.integers(0, len(out)))
            out[at:at] = out[start : start + draw(st.integers(1, 64))]
        elif op == "pad" and limit:
            out += bytes(limit + 1 - len(out)) if len(out) <= limit else b""
    return bytes(out)
