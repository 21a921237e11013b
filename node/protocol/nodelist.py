"""Signed node lists, registrations and node cards: the documents of docs/bootstrap.md and docs/discovery.md (pure).

- node list (PURPOSE `node-list`, signed by a registry key):
  `{"v":1,"issued":<unix>,"expires":<unix>,"nodes":[{"id","ws","swim","peer","seen","ok"}…]}`; `ok` (unix, 0 for
  never) is when the registry's own check of the node's client endpoint last passed; readers that predate it
  ignore it, and a list without it reads as 0; additive `"members":[<32-byte id>…]` (absent when empty): the ids
  of approved, healthy bridges (docs/discovery.md "Bridges"), ids only, never their URLs or addresses; nodes
  admit `nodes` and `members` as federation members, while discovery hands out `nodes` only
- registration (PURPOSE `node-register`, signed by the node itself): `{"id","ws","swim","peer","ts","ttl","reg"}`,
  `reg` the key of the registry it is meant for (a registration cannot be replayed at another registry);
  a bridge (`[node] listed = false`, docs/discovery.md "Bridges") adds `"listed": false` and `"card"`: its own
  signed node-card document for the same `ws`, which the registry hands out in `bridge-list` documents;
  `ws` at most `REG_WS_MAX` characters, `swim`/`peer` at most `REG_ADDR_MAX` (a registry's list stays small);
  optional `peers`: how many other live members the node sees (so a registry can flag a node that is listed but
  not federated, docs/bootstrap.md "Listed but not federated"); optional `rot`: an encoded key rotation statement
  (node/protocol/rotation.py) naming this node's key as NEW, so the registry moves the OLD key's approval to it
- leave (PURPOSE `node-leave`, signed by the node): `{"id","ts"}`
- node card (PURPOSE `node-card`, signed by the node): `{"id","ws","ts","exp"}`, carried as
  `homing://node/<base64url(msgpack(signed document))>`; refused after `exp` (unix seconds), and refused when
  `ws` is `ws://` to anything but a loopback or private address unless the reader allows plain ws.
- A registry signs lists of at most `LIST_BYTES_MAX` bytes (encoded): below the DNS TXT ceiling
  (`node.protocol.txt.PAYLOAD_MAX_BYTES`) and below what readers accept (`SIGNED_DOC_MAX_BYTES`).

Every parser checks types and sizes and raises RemoteProtocolError (BadSignature, Expired) with a reason.
Time is always passed in (`now`, unix seconds); nothing here reads a clock.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import attrs

from node.protocol.errors import Expired, RemoteProtocolError
from node.protocol.identity import (
    ID_BYTES,
    NODE_CARD,
    NODE_LEAVE,
    NODE_LIST,
    NODE_REGISTER,
    Identity,
    b64u_decode,
    b64u_encode,
    decode_document,
    encode_document,
    open_document,
    sign_document,
)
from node.protocol.rotation import decode_rotation

LIST_VERSION = 1
URL_MAX = 512
ADDR_MAX = 262  # "[" + 255-char host + "]:" + port
NODES_MAX = 5000
MEMBERS_MAX = 5000  # bridge ids in a list
TTL_MAX_S = 86_400
CARD_PREFIX = "homing://node/"
CARD_MAX_CHARS = 2048
CARD_LIFETIME_DEFAULT_S = 30 * 86_400  # a card's `exp` when its maker names none
BRIDGE_CARD_LIFETIME_S = 7 * 86_400  # the card a bridge sends with each registration (renewed every heartbeat)
REG_WS_MAX = 256  # a registration's ws URL: "wss://" + a long host name + port + path
REG_ADDR_MAX = 128  # a registration's swim/peer HOST:PORT
LIST_BYTES_MAX = 40 * 1024  # a signed list, encoded; see the module docstring
CLOCK_SKEW_S = 300  # how far in the future an `issued`/`ts` may be (clocks of cheap VPSes drift)


@attrs.frozen(kw_only=True, slots=True)
class NodeEntry:
    id: bytes
    ws: str
    swim: str
    peer: str
    seen: int
    ok: int = 0  # when the registry's health check last passed (unix), 0: not yet

    def to_body(self) -> dict[str, Any]:
        return {"id": self.id, "ws": self.ws, "swim": self.swim, "peer": self.peer, "seen": self.seen, "ok": self.ok}


@attrs.frozen(kw_only=True, slots=True)
class NodeList:
    issued: int
    expires: int
    nodes: tuple[NodeEntry, ...]
    signer: bytes
    members: tuple[bytes, ...] = ()  # bridge ids: admitted to the federation, never handed out to clients


@attrs.frozen(kw_only=True, slots=True)
class Registration:
    id: bytes
    ws: str
    swim: str
    peer: str
    ts: int
    ttl: int
    reg: bytes  # the registry this registration is for
    peers: int | None = None  # other live members the node sees (None: the node did not say)
    rotated_from: bytes | None = None  # the OLD key of a verified rotation statement naming this node as NEW
    listed: bool = True  # False: a bridge, kept out of the public list
    card: dict[str, bytes] | None = None  # a bridge's signed node-card document (checked: same id and ws)
    card_exp: int = 0  # that card's `exp`


@attrs.frozen(kw_only=True, slots=True)
class Card:
    id: bytes
    ws: str
    ts: int
    exp: int


def _str(m: dict[str, Any], key: str, max_len: int) -> str:
    v = m.get(key)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise RemoteProtocolError(f"field {key!r} must be a non-empty string of at most {max_len} characters")
    return v


def _int(m: dict[str, Any], key: str, lo: int = 0, hi: int = 2**53) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise RemoteProtocolError(f"field {key!r} must be an integer in {lo}..{hi}")
    return v


def _id(m: dict[str, Any]) -> bytes:
    v = m.get("id")
    if not isinstance(v, bytes) or len(v) != ID_BYTES:
        raise RemoteProtocolError("field 'id' must be 32 bytes")
    return v


def _ws(m: dict[str, Any], max_len: int = URL_MAX) -> str:
    url = _str(m, "ws", max_len)
    if not url.startswith(("ws://", "wss://")):
        raise RemoteProtocolError("field 'ws' must be a ws:// or wss:// URL")
    return url


# --- node list -------------------------------------------------------------------------------------------


def build_node_list(
    registry: Identity, nodes: list[NodeEntry], *, issued: int, expires: int, members: list[bytes] | None = None
) -> dict[str, bytes]:
    body: dict[str, Any] = {"v": LIST_VERSION, "issued": issued, "expires": expires}
    body["nodes"] = [n.to_body() for n in nodes]
    if members:
        body["members"] = list(members)
    return sign_document(registry, NODE_LIST, body)


def _members(body: dict[str, Any]) -> tuple[bytes, ...]:
    raw = body.get("members", [])
    if not isinstance(raw, list) or len(raw) > MEMBERS_MAX:
        raise RemoteProtocolError(f"node list 'members' must be a list of at most {MEMBERS_MAX} ids")
    if not all(isinstance(m, bytes) and len(m) == ID_BYTES for m in raw):
        raise RemoteProtocolError("node list 'members' entries must be 32-byte ids")
    return tuple(raw)


def open_node_list(doc: object, trusted: frozenset[bytes] | set[bytes], *, now: float) -> NodeList:
    """Verify a node list against trusted registry keys and check it is current."""
    body, signer = open_document(doc, NODE_LIST, trusted)
    if body.get("v") != LIST_VERSION:
        raise RemoteProtocolError(f"node list version {body.get('v')!r} unsupported")
    issued, expires = _int(body, "issued"), _int(body, "expires")
    if expires < issued:
        raise RemoteProtocolError("node list expires before it was issued")
    if now > expires:
        raise Expired(f"node list expired {int(now - expires)} s ago")
    if issued > now + CLOCK_SKEW_S:
        raise Expired("node list issued in the future")
    raw_nodes = body.get("nodes")
    if not isinstance(raw_nodes, list) or len(raw_nodes) > NODES_MAX:
        raise RemoteProtocolError(f"node list 'nodes' must be a list of at most {NODES_MAX}")
    nodes = []
    for item in raw_nodes:
        if not isinstance(item, dict):
            raise RemoteProtocolError("node list entry is not a map")
        nodes.append(
            NodeEntry(
                id=_id(item),
                ws=_ws(item),
                swim=_str(item, "swim", ADDR_MAX),
                peer=_str(item, "peer", ADDR_MAX),
                seen=_int(item, "seen"),
                ok=_int(item, "ok") if "ok" in item else 0,
            )
        )
    return NodeList(issued=issued, expires=expires, nodes=tuple(nodes), signer=signer, members=_members(body))


# --- registration and leave ------------------------------------------------------------------------------


def build_registration(
    node: Identity, *, ws: str, swim: str, peer: str, ts: int, ttl: int, reg: bytes, listed: bool = True,
    card_lifetime_s: int = BRIDGE_CARD_LIFETIME_S, peers: int | None = None, rot: bytes | None = None,
) -> dict[str, bytes]:
    """A registration; an unlisted node's (a bridge's) carries a fresh card for `ws` valid `card_lifetime_s`;
    `peers` and `rot` as in the module docstring."""
    body: dict[str, Any] = {"id": node.id, "ws": ws, "swim": swim, "peer": peer, "ts": ts, "ttl": ttl, "reg": reg}
    if not listed:
        body["listed"] = False
        body["card"] = sign_document(node, NODE_CARD, {"id": node.id, "ws": ws, "ts": ts, "exp": ts + card_lifetime_s})
    if peers is not None:
        body["peers"] = peers
    if rot is not None:
        body["rot"] = rot
    return sign_document(node, NODE_REGISTER, body)


def open_registration(doc: object) -> Registration:
    """Verify a registration: signed by the very node it registers, fields within the registration caps.
    (Freshness of `ts` and whether `reg` names this registry are the registry's job.)"""
    body, signer = open_document(doc, NODE_REGISTER, None)
    reg_key = body.get("reg")
    if not isinstance(reg_key, bytes) or len(reg_key) != ID_BYTES:
        raise RemoteProtocolError("field 'reg' must be the registry's key (32 bytes)")
    reg = Registration(
        id=_id(body),
        ws=_ws(body, REG_WS_MAX),
        swim=_str(body, "swim", REG_ADDR_MAX),
        peer=_str(body, "peer", REG_ADDR_MAX),
        ts=_int(body, "ts"),
        ttl=_int(body, "ttl", 1, TTL_MAX_S),
        reg=reg_key,
        peers=_int(body, "peers", 0, NODES_MAX * 4) if "peers" in body else None,
        rotated_from=_rotated_from(body.get("rot"), signer) if "rot" in body else None,
    )
    if reg.id != signer:
        raise RemoteProtocolError("registration is not signed by the node it registers")
    listed = body.get("listed", True)
    if not isinstance(listed, bool):
        raise RemoteProtocolError("field 'listed' must be a boolean")
    if listed:
        return reg
    raw_card = body.get("card")
    if not isinstance(raw_card, dict) or len(encode_document(raw_card)) > CARD_MAX_CHARS:
        raise RemoteProtocolError("an unlisted node's registration carries its card (field 'card')")
    card = card_from_document(raw_card)
    if card.id != reg.id or card.ws != reg.ws:
        raise RemoteProtocolError("the card in a registration must name the registering node and its ws URL")
    return attrs.evolve(reg, listed=False, card=raw_card, card_exp=card.exp)


def _rotated_from(raw: object, new: bytes) -> bytes:
    """The OLD key of a registration's `rot` statement, verified, naming `new` as NEW (else RemoteProtocolError).
    Whether `issued` is plausible is not checked here: the statement only moves an approval, which OLD could grant
    by registering itself anyway."""
    if not isinstance(raw, bytes):
        raise RemoteProtocolError("field 'rot' must be an encoded key rotation statement")
    rotation = decode_rotation(raw, now=float(2**53))
    if rotation.new != new:
        raise RemoteProtocolError("field 'rot' does not name this node's key as the new key")
    return rotation.old


def build_leave(node: Identity, *, ts: int) -> dict[str, bytes]:
    return sign_document(node, NODE_LEAVE, {"id": node.id, "ts": ts})


def open_leave(doc: object) -> tuple[bytes, int]:
    body, signer = open_document(doc, NODE_LEAVE, None)
    node_id, ts = _id(body), _int(body, "ts")
    if node_id != signer:
        raise RemoteProtocolError("leave is not signed by the node it removes")
    return node_id, ts


# --- node cards (referral URIs) --------------------------------------------------------------------------


def make_card(node: Identity, *, ws: str, ts: int, exp: int | None = None, allow_plain_ws: bool = False) -> str:
    """A signed card for `ws`, valid until `exp` (default `ts` + 30 days). Raises ValueError for a `ws://` URL
    to a public host unless `allow_plain_ws` (a card is handed to strangers: it should say wss://)."""
    exp = ts + CARD_LIFETIME_DEFAULT_S if exp is None else exp
    if exp <= ts:
        raise ValueError("a card's exp must be after its ts")
    problem = plain_ws_problem(ws, allow_plain_ws)
    if problem:
        raise ValueError(problem)
    doc = sign_document(node, NODE_CARD, {"id": node.id, "ws": ws, "ts": ts, "exp": exp})
    return CARD_PREFIX + b64u_encode(encode_document(doc))


# The ranges docs/discovery.md names (and web/lib/documents.js reads): not `ipaddress.is_private`, which also
# counts Teredo (2001::/32), the rest of 2001::/23, 198.18/15, 240/4 and the documentation networks.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "::1/128",
              "fc00::/7", "fe80::/10")
)  # fmt: skip


def is_private_host(host: str) -> bool:
    """True for `localhost` and loopback, private (RFC 1918, ULA) and link-local IP literals (an IPv4-mapped IPv6
    address counts as its IPv4 address)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in PRIVATE_NETWORKS)


def plain_ws_problem(ws: str, allow_plain_ws: bool = False) -> str:
    """Why a card's `ws` is not acceptable (plain ws:// to a public host), or "" when it is."""
    if allow_plain_ws or not ws.startswith("ws://"):
        return ""
    try:
        host = urlsplit(ws).hostname or ""
    except ValueError:
        host = ""
    if is_private_host(host):
        return ""
    return f"card URL {ws[:80]!r} is plain ws:// to a public host: cards must be wss:// (or a private address)"


def card_from_document(doc: object) -> Card:
    """Verify a signed node-card document (signed by the node it names); the caller checks `exp` and the URL."""
    body, signer = open_document(doc, NODE_CARD, None)
    card = Card(id=_id(body), ws=_ws(body), ts=_int(body, "ts"), exp=_int(body, "exp"))
    if card.id != signer:
        raise RemoteProtocolError("card is not signed by the node it names")
    return card


def card_uri(doc: dict[str, bytes]) -> str:
    """The `homing://node/…` form of a signed node-card document."""
    return CARD_PREFIX + b64u_encode(encode_document(doc))


def parse_card(uri: str, *, now: float, allow_plain_ws: bool = False) -> Card:
    """Parse and verify a `homing://node/…` card: signed by the node it names, not past `exp`, and `wss://`
    unless its host is loopback/private or `allow_plain_ws`."""
    if not isinstance(uri, str) or not uri.startswith(CARD_PREFIX):
        raise RemoteProtocolError(f"a referral URI starts with {CARD_PREFIX}")
    if len(uri) > CARD_MAX_CHARS:
        raise RemoteProtocolError("referral URI too long", code="too_large")
    try:
        raw = b64u_decode(uri[len(CARD_PREFIX) :])
    except ValueError as exc:
        raise RemoteProtocolError("referral URI is not base64url") from exc
    card = card_from_document(decode_document(raw))
    if now > card.exp:
        raise Expired(f"card expired {int(now - card.exp)} s ago")
    problem = plain_ws_problem(card.ws, allow_plain_ws)
    if problem:
        raise RemoteProtocolError(problem)
    return card
