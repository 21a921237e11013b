"""Bridge lists and the distributor's choice (docs/discovery.md, "Bridges"; pure).

- bridge list (PURPOSE `bridge-list`, signed by a registry key): `{"v":1,"issued","expires","cards":[<signed
  node-card documents>]}`, the answer to `GET /v1/bridges`: a few unlisted nodes' own cards.
- The distributor hands each requesting network range (/16 IPv4, /48 IPv6, `range_key`) the same few bridges for
  a whole period: the pool is ordered by BLAKE2b(salt, period, range, bridge id) and the first `count` are given.
  Asking again from the same range in the same period yields the same bridges, so one range learns at most
  `count` per period (plus whatever changes in the pool itself); `salt` is the registry's secret, and a new salt
  (`homing bootstrap bridges rotate`) reshuffles every range's share at once.

Nothing here reads a clock: `now` and `period` are passed in.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

import attrs

from node.protocol.errors import Expired, RemoteProtocolError
from node.protocol.identity import BRIDGE_LIST, Identity, open_document, sign_document
from node.protocol.nodelist import CLOCK_SKEW_S, Card, card_from_document, card_uri, plain_ws_problem

LIST_VERSION = 1
CARDS_MAX = 16  # cards in one bridge list a reader accepts
V4_PREFIX = 16
V6_PREFIX = 48


@attrs.frozen(kw_only=True, slots=True)
class BridgeList:
    issued: int
    expires: int
    cards: tuple[Card, ...]  # verified, unexpired at `now`
    uris: tuple[str, ...]  # the same cards as homing://node/… URIs, for the cache
    signer: bytes


def range_key(address: str) -> str:
    """The network a requester is counted in: its /16 (IPv4) or /48 (IPv6); the text itself when not an address."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = V4_PREFIX if ip.version == 4 else V6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def period_of(now: float, period_s: int) -> int:
    return int(now // period_s)


def pick(pool: Iterable[bytes], *, salt: bytes, period: int, network: str, count: int) -> list[bytes]:
    """The `count` bridge ids of `pool` that `network` is given in `period` (deterministic, see the docstring)."""

    def rank(node_id: bytes) -> bytes:
        h = hashlib.blake2b(digest_size=16, key=salt[:64])
        h.update(period.to_bytes(8, "big") + network.encode() + b"\x00" + node_id)
        return h.digest()

    return sorted(set(pool), key=rank)[:count]


def build_bridge_list(
    registry: Identity, cards: list[dict[str, bytes]], *, issued: int, expires: int
) -> dict[str, bytes]:
    body = {"v": LIST_VERSION, "issued": issued, "expires": expires, "cards": cards}
    return sign_document(registry, BRIDGE_LIST, body)


def open_bridge_list(doc: object, trusted: frozenset[bytes] | set[bytes], *, now: float) -> BridgeList:
    """Verify a bridge list against trusted registry keys; expired cards in it are skipped, and so are cards
    a reader of a referral refuses: plain ws:// to a public host (docs/discovery.md, "Referral card and QR")."""
    body, signer = open_document(doc, BRIDGE_LIST, trusted)
    if body.get("v") != LIST_VERSION:
        raise RemoteProtocolError(f"bridge list version {body.get('v')!r} unsupported")
    issued, expires = body.get("issued"), body.get("expires")
    if not isinstance(issued, int) or not isinstance(expires, int) or expires < issued:
        raise RemoteProtocolError("bridge list 'issued'/'expires' must be integers, issued first")
    if now > expires:
        raise Expired(f"bridge list expired {int(now - expires)} s ago")
    if issued > now + CLOCK_SKEW_S:
        raise Expired("bridge list issued in the future")
    raw = body.get("cards")
    if not isinstance(raw, list) or len(raw) > CARDS_MAX:
        raise RemoteProtocolError(f"bridge list 'cards' must be a list of at most {CARDS_MAX}")
    cards: list[Card] = []
    uris: list[str] = []
    for item in raw:
        card = card_from_document(item)
        if now <= card.exp and not plain_ws_problem(card.ws):
            cards.append(card)
            uris.append(card_uri(item))
    return BridgeList(issued=issued, expires=expires, cards=tuple(cards), uris=tuple(uris), signer=signer)
