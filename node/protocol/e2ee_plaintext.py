"""What is inside an end-to-end encrypted call body: one small msgpack map, padded (docs/e2ee.md, "Plaintext").

Rules
- The plaintext is one msgpack map with string keys; `"k"` names its kind. Encoding (so that fixed-key test
  vectors are byte-identical across implementations): keys sorted bytewise, optional keys omitted (never nil),
  shortest msgpack forms (what msgpack-python and @msgpack/msgpack with `sortKeys: true` produce).
  A receiver accepts any valid msgpack of the right shape, ignores unknown keys and refuses unknown kinds.
- The encoded map is padded with ISO/IEC 7816-4 padding (libsodium's `sodium_pad`: 0x80 then zero bytes) to the
  smallest size in PAD_SIZES_BYTES that is at least its length + 1 and at least the kind's floor (8192 bytes for a
  kind that carries SDP, so nodes learn neither SDP lengths nor audio versus video). A receiver refuses any other
  padded length.
- Every string and number has a limit (below); a value outside it is refused.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import attrs
import msgpack
import nacl.bindings as sodium
import nacl.exceptions

from node.errors import LocalProtocolError, RemoteProtocolError
from node.wire import packb

PAD_SIZES_BYTES = (512, 2048, 8192, 32768, 65024)
SDP_PAD_MIN_BYTES = 8192
SDP_MAX_BYTES = 60000
REASON_MAX_BYTES = 64
CANDIDATE_MAX_BYTES = 2048
MID_MAX_BYTES = 64
UFRAG_MAX_BYTES = 256
MLINE_MAX = 1023
TS_MAX = 2**40
PLAINTEXT_KEYS_MAX = 16

HANGUP_REASONS = ("ended", "cancelled", "answered_elsewhere", "timeout", "failed", "busy")
REJECT_REASONS = ("declined", "busy", "unsupported", "failed")
ELSEWHERE_HOW = ("answered", "rejected")


class E2eeError(RemoteProtocolError):
    """A body is refused: malformed, not authentic, or not fitting its envelope. No state changed.
    (Replays and stale offers raise node.errors.Replayed / Expired; all are RemoteProtocolError.)"""


class NotForThisDevice(E2eeError):
    """A transport body of a session this device does not hold (another device of the same id answered)."""


class BadPlaintext(E2eeError):
    """A decrypted body is not a valid plaintext (bad padding, bad map, unknown kind, a value out of bounds)."""


def _utf8_max(limit: int, *, min_bytes: int = 0) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str):
            raise ValueError(f"{attr.name} must be a string")
        size = len(value.encode("utf-8"))
        if not min_bytes <= size <= limit:
            raise ValueError(f"{attr.name} must be {min_bytes}..{limit} UTF-8 bytes, is {size}")

    return check


def _opt_utf8_max(limit: int) -> Any:
    inner = _utf8_max(limit)

    def check(inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            inner(inst, attr, value)

    return check


def _token(limit: int) -> Any:
    """A reason-like token: 1..limit bytes of [a-z0-9_]. Unknown tokens are allowed (forward compatibility)."""

    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            raise ValueError(f"{attr.name} must be a string of 1..{limit} characters")
        if any(c not in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in value):
            raise ValueError(f"{attr.name} must be lower-case letters, digits and _")

    return check


def _is_bool(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attr.name} must be a boolean")


def _int_range(lo: int, hi: int, *, optional: bool = False) -> Any:
    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{attr.name} must be an integer in {lo}..{hi}")

    return check


_SDP = _utf8_max(SDP_MAX_BYTES, min_bytes=1)


@attrs.frozen(kw_only=True, slots=True)
class Offer:
    """Message 1 of a call (envelope `call_offer`): the caller's SDP offer. `ts` is the caller's wall clock (unix s)."""

    KIND = "offer"
    sdp: str = attrs.field(validator=_SDP)
    video: bool = attrs.field(validator=_is_bool)
    ts: int = attrs.field(validator=_int_range(0, TS_MAX))


@attrs.frozen(kw_only=True, slots=True)
class Answer:
    """Message 2 from one callee device (envelope `call_answer`): its SDP answer."""

    KIND = "answer"
    sdp: str = attrs.field(validator=_SDP)
    video: bool = attrs.field(validator=_is_bool)


@attrs.frozen(kw_only=True, slots=True)
class Reject:
    """Message 2 from one callee device (envelope `call_reject`). `reason`: REJECT_REASONS or a newer token."""

    KIND = "reject"
    reason: str = attrs.field(validator=_token(REASON_MAX_BYTES))


@attrs.frozen(kw_only=True, slots=True)
class Ice:
    """A trickled ICE candidate (envelope `call_ice`), RTCIceCandidateInit's fields; `cand == ""` ends the list."""

    KIND = "ice"
    cand: str = attrs.field(validator=_utf8_max(CANDIDATE_MAX_BYTES))
    mid: str | None = attrs.field(default=None, validator=_opt_utf8_max(MID_MAX_BYTES))
    mline: int | None = attrs.field(default=None, validator=_int_range(0, MLINE_MAX, optional=True))
    ufrag: str | None = attrs.field(default=None, validator=_opt_utf8_max(UFRAG_MAX_BYTES))


@attrs.frozen(kw_only=True, slots=True)
class Hangup:
    """The end of the call (envelope `call_hangup`). `reason`: HANGUP_REASONS or a newer token."""

    KIND = "hangup"
    reason: str = attrs.field(validator=_token(REASON_MAX_BYTES))


@attrs.frozen(kw_only=True, slots=True)
class Reoffer:
    """A renegotiation offer from either side of an answered call (envelope `call_offer`)."""

    KIND = "reoffer"
    sdp: str = attrs.field(validator=_SDP)
    video: bool = attrs.field(validator=_is_bool)


@attrs.frozen(kw_only=True, slots=True)
class Reanswer:
    """The answer to a Reoffer (envelope `call_answer`)."""

    KIND = "reanswer"
    sdp: str = attrs.field(validator=_SDP)
    video: bool = attrs.field(validator=_is_bool)


@attrs.frozen(kw_only=True, slots=True)
class Elsewhere:
    """A callee device tells the other devices of its own id to stop ringing (envelope `call_hangup` to itself)."""

    KIND = "elsewhere"
    how: str = attrs.field(validator=attrs.validators.in_(ELSEWHERE_HOW))


Plaintext = Offer | Answer | Reject | Ice | Hangup | Reoffer | Reanswer | Elsewhere
KINDS: dict[str, type[Plaintext]] = {
    cls.KIND: cls for cls in (Offer, Answer, Reject, Ice, Hangup, Reoffer, Reanswer, Elsewhere)
}
SDP_KINDS = frozenset({"offer", "answer", "reoffer", "reanswer"})


def encode_plaintext(msg: Plaintext) -> bytes:
    """The canonical msgpack map of a plaintext (keys sorted, optional keys left out)."""
    fields = {"k": msg.KIND}
    for field in attrs.fields(type(msg)):
        value = getattr(msg, field.name)
        if value is not None:
            fields[field.name] = value
    return packb(dict(sorted(fields.items())))


def decode_plaintext(data: bytes) -> Plaintext:
    """Parse a plaintext map (after unpadding). Raises BadPlaintext."""
    try:  # node.wire's profile, with strings allowed up to a whole SDP
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0, max_str_len=PAD_SIZES_BYTES[-1],
            max_array_len=0, max_map_len=PLAINTEXT_KEYS_MAX,
        )  # fmt: skip
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError, ...
        raise BadPlaintext(f"plaintext is not msgpack: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise BadPlaintext("plaintext is not a map")
    cls = KINDS.get(obj.get("k"))  # type: ignore[arg-type]
    if cls is None:
        raise BadPlaintext("plaintext kind missing or unknown")
    args = {f.name: obj[f.name] for f in attrs.fields(cls) if f.name in obj}
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise BadPlaintext(f"{cls.KIND}: {exc}") from exc


def pad_size(length: int, floor: int = 0) -> int:
    """The padded size for an encoded plaintext of `length` bytes."""
    for size in PAD_SIZES_BYTES:
        if size >= length + 1 and size >= floor:
            return size
    raise LocalProtocolError(f"plaintext of {length} bytes does not fit the largest padded size")


def pad(encoded: bytes, floor: int = 0) -> bytes:
    """ISO/IEC 7816-4 padding (sodium_pad) to a size from PAD_SIZES_BYTES."""
    return bytes(sodium.sodium_pad(encoded, pad_size(len(encoded), floor)))


def unpad(padded: bytes) -> bytes:
    """Inverse of pad; refuses a length outside PAD_SIZES_BYTES or bad padding."""
    if len(padded) not in PAD_SIZES_BYTES:
        raise BadPlaintext(f"padded plaintext of {len(padded)} bytes is not one of the fixed sizes")
    try:
        return bytes(sodium.sodium_unpad(padded, len(padded)))
    except (nacl.exceptions.CryptoError, ValueError, nacl.exceptions.ValueError) as exc:
        raise BadPlaintext("bad padding") from exc


def seal_plaintext(msg: Plaintext) -> bytes:
    """encode_plaintext, then pad with the kind's floor: the bytes that go into a Noise payload."""
    return pad(encode_plaintext(msg), SDP_PAD_MIN_BYTES if msg.KIND in SDP_KINDS else 0)


def open_plaintext(padded: bytes) -> Plaintext:
    """Inverse of seal_plaintext; also refuses an SDP kind padded below its floor."""
    msg = decode_plaintext(unpad(padded))
    if msg.KIND in SDP_KINDS and len(padded) < SDP_PAD_MIN_BYTES:
        raise BadPlaintext(f"{msg.KIND} padded to {len(padded)} bytes, below {SDP_PAD_MIN_BYTES}")
    return msg
