"""SWIM values: member states, member records, piggybacked updates, datagrams and driver commands.

Everything here is an immutable value (attrs frozen). The bytes form lives in `node.protocol.wire.swim`.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
from attrs import validators as v

from node.protocol.refusals import Refusal

Address = tuple[str, int]  # (host, port) of a member's SWIM UDP socket

ID_LEN = 32  # an Ed25519 public key
META_MAX = 512  # opaque driver metadata per member (the driver puts peer port and signed card in it)
SIG_LEN = 64  # an Ed25519 signature (records.py)


class MemberState(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# Precedence at equal incarnation (higher wins). See members.py for the whole rule.
STATE_RANK: dict[MemberState, int] = {
    MemberState.ALIVE: 0,
    MemberState.SUSPECT: 1,
    MemberState.DEAD: 2,
    MemberState.LEFT: 3,
}


def _id_validator(_inst: Any, attr: attrs.Attribute[Any], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != ID_LEN:
        raise ValueError(f"{attr.name} must be {ID_LEN} bytes")


def _meta_validator(_inst: Any, attr: attrs.Attribute[Any], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) > META_MAX:
        raise ValueError(f"{attr.name} must be at most {META_MAX} bytes")


def _addr_validator(_inst: Any, attr: attrs.Attribute[Any], value: Address) -> None:
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)):
        raise ValueError(f"{attr.name} must be (host, port)")
    if not 0 <= value[1] <= 65535:
        raise ValueError(f"{attr.name} port out of range")


_inc_validator: Any = [v.instance_of(int), v.ge(0)]


@attrs.frozen(kw_only=True, slots=True)
class MemberInfo:
    """What the table says about one member.

    Checked in one pass by `__attrs_post_init__`: six per-field attrs validators cost a third to a half of building
    one, and a node builds one for every member record it decodes and every state change it makes."""

    id: bytes
    addr: Address
    meta: bytes
    incarnation: int
    state: MemberState
    # The member's own signature over its ALIVE (or LEFT) record at this incarnation (records.py); empty only in
    # a SUSPECT/DEAD claim as decoded from a datagram, which carries no address, meta or signature.
    sig: bytes = b""

    def __attrs_post_init__(self) -> None:
        """ValueError for a wrong id, address, meta, signature or a negative incarnation; TypeError for an
        incarnation that is not an int or a state that is not a MemberState."""
        _id_validator(self, _FIELDS.id, self.id)
        _addr_validator(self, _FIELDS.addr, self.addr)
        _meta_validator(self, _FIELDS.meta, self.meta)
        if not isinstance(self.incarnation, int):
            raise TypeError(f"incarnation must be an int, not {type(self.incarnation).__name__}")
        if self.incarnation < 0:
            raise ValueError("incarnation must be >= 0")
        if not isinstance(self.state, MemberState):
            raise TypeError(f"state must be a MemberState, not {type(self.state).__name__}")
        if not isinstance(self.sig, bytes) or len(self.sig) > SIG_LEN:
            raise ValueError(f"sig must be at most {SIG_LEN} bytes")

    def with_state(self, state: MemberState) -> MemberInfo:
        """This record in another state: `attrs.evolve(self, state=state)` without its introspection (a quarter
        to a half less; SWIM makes one for every suspicion, claim and death)."""
        return MemberInfo(
            id=self.id, addr=self.addr, meta=self.meta, incarnation=self.incarnation, state=state, sig=self.sig
        )


_FIELDS: Any = attrs.fields(MemberInfo)


@attrs.frozen(kw_only=True, slots=True)
class Update:
    """One piggybacked member update: a member record as the sender knows it.

    `by` names the accuser of a SUSPECT or DEAD claim (Lifeguard counts independent accusers as confirmations)
    and `sig` is the accuser's signature over its accusation (records.py `accusation_bytes`); both are empty for
    the other states. A claim without `sig` counts only about ourselves (we refute it) or as the accusation of an
    authenticated sync peer (merging.py A1-A4), and is never passed on.
    """

    member: MemberInfo
    by: bytes = attrs.field(default=b"", validator=v.max_len(ID_LEN))
    sig: bytes = attrs.field(default=b"", validator=v.max_len(SIG_LEN))


@attrs.frozen(kw_only=True, slots=True)
class Ping:
    seq: int = attrs.field(validator=_inc_validator)
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class PingReq:
    """Ask the receiver to ping `target` for us and forward its ack (and a nack if it fails, when `nack`)."""

    seq: int = attrs.field(validator=_inc_validator)
    target: bytes = attrs.field(validator=_id_validator)
    target_addr: Address = attrs.field(validator=_addr_validator)
    nack: bool = True
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class Ack:
    seq: int = attrs.field(validator=_inc_validator)
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class Nack:
    seq: int = attrs.field(validator=_inc_validator)
    updates: tuple[Update, ...] = ()


@attrs.frozen(kw_only=True, slots=True)
class Gossip:
    """Updates only (the gossip round); sent with wire type COMPOUND."""

    updates: tuple[Update, ...] = ()


SwimMessage = Ping | PingReq | Ack | Nack | Gossip


@attrs.frozen(kw_only=True, slots=True)
class PushPullState:
    """The full member table (self included), exchanged over the peer link."""

    members: tuple[MemberInfo, ...] = ()


# ---- commands drained by the driver ----


@attrs.frozen(kw_only=True, slots=True)
class Send:
    """Send one datagram: the driver encodes, seals for `to_id` and sends to `to_addr`."""

    to_id: bytes
    to_addr: Address
    msg: SwimMessage


@attrs.frozen(kw_only=True, slots=True)
class PushPull:
    """Open a TCP full-state sync with that member; feed its reply to `merge_push_pull`."""

    to_id: bytes
    to_addr: Address
    join: bool


@attrs.frozen(kw_only=True, slots=True)
class MemberChanged:
    """Every state transition, including a join (previous None). Forgetting a reclaimed dead member is silent."""

    member: MemberInfo
    previous: MemberState | None


@attrs.frozen(kw_only=True, slots=True)
class ProbeResult:
    target: bytes
    result: str  # 'ok' | 'indirect_ok' | 'failed'


@attrs.frozen(kw_only=True, slots=True)
class StreamPing:
    """The direct UDP probe of a member timed out: also try it over the peer link (TCP), as memberlist does.

    UDP loss alone then no longer makes a live member suspect. If the member answers, the driver feeds
    `Ack(seq=seq)` from `to_id` back to the core; if not, it does nothing.
    """

    to_id: bytes
    to_addr: Address
    seq: int


@attrs.frozen(kw_only=True, slots=True)
class Refused:
    """The core dropped a record from the network (a bad signature, an unsigned incarnation, over a budget)."""

    refusal: Refusal


Command = Send | PushPull | MemberChanged | ProbeResult | StreamPing | Refused
