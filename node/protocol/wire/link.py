"""Peer-link control frames: what a connection on the peer port is for, and the link's own version answer.

Every frame on a peer connection is a msgpack map `{"t": MsgType.X, ...}` from the one table in
node/protocol/wire/__init__.py: the control frames below (32..35, 47..48) and the relay frames of
node/protocol/wire/peer.py (36..46). The first frame of a connection says what it is for:
- `PUSH_PULL {state, join}` -> `PUSH_PULL_REPLY {state}`, then the connection closes (SWIM full-state sync);
- `LINK_PING` -> `LINK_PONG {card}`, then it closes (SWIM's TCP fallback probe, and the referral card);
- `LINK_HELLO {v, l}` makes it a persistent relay link; the responder's first frame on it is `LINK_HELLO_OK {v, r}`
  with the version both use (the smaller of the two). Version 1 seals one map per frame, version 2 also reads
  a frame holding a batch of maps. A LINK_HELLO without `v` is version 1.
  `l` is the dialler's number for the link; `r` lists the numbers of the responder's own links to the dialler
  that this one replaced (it wrote frames on them before any on this link): the dialler holds this link's frames
  until it has read those links to their end (docs/protocol.md "Peer links", node/protocol/peerlink.py). Absent:
  0 and none.
Decoders raise RemoteProtocolError for anything else.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
from attrs import validators as v

from node.protocol.errors import RemoteProtocolError
from node.protocol.wire import Limits, MsgType, get_bytes, get_int, get_str

LINK_VERSION: Final = 2  # the newest link version this build speaks
LINK_VERSION_MAX: Final = 1000
CARD_MAX_CHARS: Final = 2048
LINK_NUMBER_MAX: Final = 2**53 - 1  # `l` and the items of `r`: a link's number (0 in `l`: none given)
RETIRED_LINKS_MAX: Final = 4  # items in `r`: a node replaces one link per election; a few may still be read out


@attrs.frozen(kw_only=True, slots=True)
class PushPull:
    state: bytes = attrs.field(validator=v.instance_of(bytes))
    join: bool = False


@attrs.frozen(kw_only=True, slots=True)
class PushPullReply:
    state: bytes = attrs.field(validator=v.instance_of(bytes))


@attrs.frozen(kw_only=True, slots=True)
class LinkHello:
    version: int = attrs.field(default=LINK_VERSION, validator=[v.ge(1), v.le(LINK_VERSION_MAX)])
    link: int = attrs.field(default=0, validator=[v.ge(0), v.le(LINK_NUMBER_MAX)])


@attrs.frozen(kw_only=True, slots=True)
class LinkHelloOk:
    version: int = attrs.field(default=LINK_VERSION, validator=[v.ge(1), v.le(LINK_VERSION_MAX)])
    retired: tuple[int, ...] = attrs.field(default=(), validator=v.max_len(RETIRED_LINKS_MAX))


@attrs.frozen(kw_only=True, slots=True)
class LinkPing:
    pass


@attrs.frozen(kw_only=True, slots=True)
class LinkPong:
    card: str = attrs.field(default="", validator=[v.instance_of(str), v.max_len(CARD_MAX_CHARS)])


LinkControl = PushPull | PushPullReply | LinkHello | LinkHelloOk | LinkPing | LinkPong
CONTROL_TYPES: Final = frozenset(
    {MsgType.PUSH_PULL, MsgType.PUSH_PULL_REPLY, MsgType.LINK_HELLO, MsgType.LINK_HELLO_OK, MsgType.LINK_PING,
     MsgType.LINK_PONG}
)  # fmt: skip


def control_to_map(msg: LinkControl) -> dict[str, Any]:
    match msg:
        case PushPull(state=state, join=join):
            return {"t": int(MsgType.PUSH_PULL), "state": state, "join": join}
        case PushPullReply(state=state):
            return {"t": int(MsgType.PUSH_PULL_REPLY), "state": state}
        case LinkHello(version=version, link=link):
            return {"t": int(MsgType.LINK_HELLO), "v": version, "l": link}
        case LinkHelloOk(version=version, retired=retired):
            return {"t": int(MsgType.LINK_HELLO_OK), "v": version, "r": list(retired)}
        case LinkPing():
            return {"t": int(MsgType.LINK_PING)}
        case LinkPong(card=card):
            return {"t": int(MsgType.LINK_PONG), "card": card}
    raise TypeError(f"not a link control frame: {msg!r}")


def is_control(m: dict[str, Any]) -> bool:
    return m.get("t") in CONTROL_TYPES


def _link_numbers(items: Any) -> tuple[int, ...]:
    if not isinstance(items, list) or len(items) > RETIRED_LINKS_MAX:
        raise RemoteProtocolError(f"field 'r' must be a list of at most {RETIRED_LINKS_MAX} link numbers")
    return tuple(get_int({"r": n}, "r", lo=1, hi=LINK_NUMBER_MAX) for n in items)


def control_from_map(m: dict[str, Any]) -> LinkControl:
    """Decode one control frame. Raises RemoteProtocolError."""
    t = m.get("t")
    if t == MsgType.PUSH_PULL:
        return PushPull(state=get_bytes(m, "state", max_len=Limits.PUSH_PULL_MAX), join=m.get("join") is True)
    if t == MsgType.PUSH_PULL_REPLY:
        return PushPullReply(state=get_bytes(m, "state", max_len=Limits.PUSH_PULL_MAX))
    if t in (MsgType.LINK_HELLO, MsgType.LINK_HELLO_OK):
        version = get_int(m, "v", lo=1, hi=LINK_VERSION_MAX) if "v" in m else 1
        if t == MsgType.LINK_HELLO:
            return LinkHello(version=version, link=get_int(m, "l", hi=LINK_NUMBER_MAX) if "l" in m else 0)
        return LinkHelloOk(version=version, retired=_link_numbers(m.get("r", [])))
    if t == MsgType.LINK_PING:
        return LinkPing()
    if t == MsgType.LINK_PONG:
        return LinkPong(card=get_str(m, "card", max_len=CARD_MAX_CHARS))
    raise RemoteProtocolError(f"unknown peer-link control frame type {t!r}")
