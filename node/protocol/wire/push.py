"""Peer-link frames of the push wake-up (docs/protocol.md, "Push wake-up"), MsgType 49..51.

- PUSH_SUB (home node -> each rendezvous owner of `id`, and owner -> new owner on a membership change):
  `{"t":49,"id","e":endpoint,"k":p256dh,"a":auth,"ttl":ms,"h":home,"cn":nonce,"cs":sig}`: hold this subscription
  for `ttl` ms. `h`, `cn`, `cs` are the client's home claim (node/protocol/relay/claims.py) naming the node it
  registered at: only that node, or an owner handing the subscription on, may send it.
- PUSH_UNSUB (home -> owners on `push_unregister`): `{"t":50,"id","e":endpoint}`: forget the subscription of `id`
  (only if its endpoint is `e`; `""`: any). Owners take it only from the home the subscription came with.
- PUSH_CLAIM (the owner that sends a push -> its co-owners): `{"t":51,"eid","id"}`: "I wake `id` for `eid`",
  so the later owners in HRW order, which wait `fallback_s` per rank, do not push the same offer again.

Decoders are strict like node/protocol/wire/peer.py: anything off raises RemoteProtocolError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
from attrs import validators as v

from node.protocol.relay.claims import NONCE_BYTES, SIG_BYTES, HomeClaim
from node.protocol.webpush import AUTH_BYTES, ENDPOINT_BYTES_MAX, P256_POINT_BYTES
from node.protocol.wire import MsgType, get_bytes, get_int, get_str

ID_BYTES: Final = 32
EID_BYTES: Final = 16
SUB_TTL_MS_MAX: Final = 30 * 86_400_000  # a subscription travels with at most 30 days to live


def _len(n: int) -> Any:
    return v.and_(v.instance_of(bytes), v.min_len(n), v.max_len(n))


_endpoint: Any = v.and_(v.instance_of(str), v.max_len(ENDPOINT_BYTES_MAX))


@attrs.frozen(kw_only=True, slots=True)
class PushSub:
    id: bytes = attrs.field(validator=_len(ID_BYTES))
    endpoint: str = attrs.field(validator=v.and_(_endpoint, v.min_len(1)))
    p256dh: bytes = attrs.field(validator=_len(P256_POINT_BYTES))
    auth: bytes = attrs.field(validator=_len(AUTH_BYTES))
    ttl_ms: int = attrs.field(validator=v.and_(v.instance_of(int), v.ge(1), v.le(SUB_TTL_MS_MAX)))
    home: bytes = attrs.field(validator=_len(ID_BYTES))
    claim_nonce: bytes = attrs.field(validator=_len(NONCE_BYTES))
    claim_sig: bytes = attrs.field(validator=_len(SIG_BYTES))

    @property
    def claim(self) -> HomeClaim:
        """The client's home claim this subscription travels with."""
        return HomeClaim(client=self.id, home=self.home, nonce=self.claim_nonce, sig=self.claim_sig)


@attrs.frozen(kw_only=True, slots=True)
class PushUnsub:
    id: bytes = attrs.field(validator=_len(ID_BYTES))
    endpoint: str = attrs.field(default="", validator=_endpoint)


@attrs.frozen(kw_only=True, slots=True)
class PushClaim:
    eid: bytes = attrs.field(validator=_len(EID_BYTES))
    id: bytes = attrs.field(validator=_len(ID_BYTES))


PushPeerMessage = PushSub | PushUnsub | PushClaim


def push_to_map(msg: PushPeerMessage) -> dict[str, Any]:
    match msg:
        case PushSub():
            return {
                "t": int(MsgType.PUSH_SUB), "id": msg.id, "e": msg.endpoint, "k": msg.p256dh, "a": msg.auth,
                "ttl": msg.ttl_ms, "h": msg.home, "cn": msg.claim_nonce, "cs": msg.claim_sig,
            }  # fmt: skip
        case PushUnsub():
            return {"t": int(MsgType.PUSH_UNSUB), "id": msg.id, "e": msg.endpoint}
        case PushClaim():
            return {"t": int(MsgType.PUSH_CLAIM), "eid": msg.eid, "id": msg.id}
    raise TypeError(f"not a push message: {msg!r}")  # pragma: no cover


def _id(m: dict[str, Any]) -> bytes:
    return get_bytes(m, "id", min_len=ID_BYTES, max_len=ID_BYTES)


PUSH_DECODERS: Final[dict[int, Callable[[dict[str, Any]], PushPeerMessage]]] = {
    MsgType.PUSH_SUB: lambda m: PushSub(
        id=_id(m),
        endpoint=get_str(m, "e", max_len=ENDPOINT_BYTES_MAX),
        p256dh=get_bytes(m, "k", min_len=P256_POINT_BYTES, max_len=P256_POINT_BYTES),
        auth=get_bytes(m, "a", min_len=AUTH_BYTES, max_len=AUTH_BYTES),
        ttl_ms=get_int(m, "ttl", lo=1, hi=SUB_TTL_MS_MAX),
        home=get_bytes(m, "h", min_len=ID_BYTES, max_len=ID_BYTES),
        claim_nonce=get_bytes(m, "cn", min_len=NONCE_BYTES, max_len=NONCE_BYTES),
        claim_sig=get_bytes(m, "cs", min_len=SIG_BYTES, max_len=SIG_BYTES),
    ),
    MsgType.PUSH_UNSUB: lambda m: PushUnsub(id=_id(m), endpoint=get_str(m, "e", max_len=ENDPOINT_BYTES_MAX)),
    MsgType.PUSH_CLAIM: lambda m: PushClaim(eid=get_bytes(m, "eid", min_len=EID_BYTES, max_len=EID_BYTES), id=_id(m)),
}
