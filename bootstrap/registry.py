"""The registry's rules, pure: approval, bans, leases, `ts` freshness and what the signed list contains.

Rules (docs/bootstrap.md):
- A registration is signed by the node it registers (checked by `node.protocol.nodelist.open_registration`, 400 if not)
  and names this registry's key in `reg` (400 if it names another: a registration cannot be replayed elsewhere).
- A banned node gets 403, whatever else is wrong with its document (a ban is checked before `ts`).
- `ws`, `swim` and `peer` are printable ASCII without spaces (400 if not): they go into the registry's log and
  the admin's terminal (`homing bootstrap nodes list`).
- `ts` (unix seconds, the node's clock) must be within `ts_future_max_s` of our clock in the future, else 400
  (a clock that far ahead is a broken node, and retrying with a newer `ts` would not help), and within
  `ts_past_max_s` in the past, and strictly greater than every `ts` accepted before from that node, else 409.
  Leaves follow the same `ts` rules, so neither a registration nor a leave can be replayed.
- The lease is `seen + ttl`, `ttl` clamped to `[ttl_min_s, ttl_max_s]`; a node is *listed* while it is approved,
  not banned, and its lease runs. With approval `auto` a new node is approved at once; with `manual` it waits
  as `pending` until an admin approves it (`manual` is the default). Approval survives a leave and lease expiry
  until the row is pruned (`expired_keep_s` after its lease ended, see store.prune); only `remove` forgets it sooner.
  An approval that moved to a key by a rotation statement does not move on for `rotation_hold_s` (so the key
  `nodes list` shows is the one an admin's ban reaches).
- The signed list is at most `LIST_BYTES_MAX` bytes. When the listed nodes do not fit, the ones known longest
  (`first_seen`, then id) are listed: a flood of new registrations cannot push established nodes out.
- Live bridges (approved, not banned, lease running, healthy; withheld from distribution or not) appear in the list
  by id only, in `members` (docs/discovery.md "Bridges"): other nodes admit them, clients never see their URL.
  Their ids count against the same byte budget, in the same known-longest-first order.
- The list is cached by the service; `changes_list` says when an accepted document changes what is listed
  (a heartbeat that only renews a listed node's lease does not: `seen` in the list is as of the last rebuild).

Nothing here reads a clock or touches storage: `now` is passed in, records come from and go to `store.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from node.protocol.identity import Identity, encode_document
from node.protocol.nodelist import LIST_BYTES_MAX, NodeEntry, Registration, build_node_list, plain_ws_problem
from node.protocol.numerals import decimal
from node.protocol.refusals import Refusal
from node.protocol.wire import packb

APPROVAL_MODES = ("auto", "manual")
HEALTH_FAILS_MAX = 2  # failed checks in a row that take a node out of the list


@attrs.frozen(kw_only=True, slots=True)
class Policy:
    approval: str = attrs.field(default="manual", validator=attrs.validators.in_(APPROVAL_MODES))
    # How old a document's `ts` may be (a heartbeat is sent at once, so minutes cover clock drift and retries).
    ts_past_max_s: int = 300
    # How far ahead of our clock a `ts` may be (cheap VPS clocks drift; NTP-less ones by seconds to minutes).
    ts_future_max_s: int = 120
    # Lease bounds: shorter leases make the registry churn; longer ones list dead nodes for longer.
    ttl_min_s: int = 30
    ttl_max_s: int = 3600
    # Seconds an approval that moved to a key by a rotation statement stays with that key before another rotation
    # may move it on: without it a hostile node rotating on every registration was never where a ban landed.
    rotation_hold_s: int = 86_400


@attrs.frozen(kw_only=True, slots=True)
class NodeRecord:
    id: bytes
    ws: str = ""
    swim: str = ""
    peer: str = ""
    ttl: int = 0
    last_ts: int = 0  # highest `ts` accepted from this node (registration or leave); the replay floor
    seen: int | None = None  # unix time of the last accepted registration; None after a leave or remove
    approved: bool = False
    banned: bool = False
    first_seen: int = 0
    peers: int | None = None  # other live members the node saw at its last registration (None: not said)
    bridge: bool = False  # registered unlisted: distributed by GET /v1/bridges, never in the public list
    withheld: bool = False  # an admin took it out of distribution (`homing bootstrap bridges remove`)
    card: bytes = b""  # a bridge's own signed node-card document (msgpack)
    card_exp: int = 0
    passed: int | None = None  # unix time of the last passed health check
    fails: int = 0  # failed health checks in a row
    moved_at: int = 0  # unix time its approval moved here from a rotated-away key (0: never)

    def lease_end(self) -> int | None:
        return None if self.seen is None else self.seen + self.ttl

    def live(self, now: float) -> bool:
        """Approved, not banned, its lease runs and it passes the registry's health checks."""
        end = self.lease_end()
        healthy = self.fails < HEALTH_FAILS_MAX
        return self.approved and not self.banned and end is not None and now < end and healthy

    def listed(self, now: float) -> bool:
        """In the public signed list."""
        return self.live(now) and not self.bridge

    def member(self, now: float) -> bool:
        """A bridge named by id only in the signed list's `members` (admitted by other nodes, never handed out)."""
        return self.live(now) and self.bridge

    def in_pool(self, now: float) -> bool:
        """Handed out by the distributor (GET /v1/bridges)."""
        return self.live(now) and self.bridge and not self.withheld and bool(self.card) and now < self.card_exp

    def state(self, now: float) -> str:
        """For admins: banned, pending, listed, expired (lease ran out) or left."""
        if self.banned:
            return "banned"
        if not self.approved:
            return "pending"
        if self.fails >= HEALTH_FAILS_MAX and self.seen is not None:
            return "failing"
        if self.bridge and self.live(now):
            return "withheld" if self.withheld else "bridge"
        if self.listed(now):
            return "listed"
        return "left" if self.seen is None else "expired"


@attrs.frozen(kw_only=True, slots=True)
class Refused:
    status: int  # HTTP status: 400, 403 or 409
    reason: str
    refusal: Refusal  # the metric's reason label (node/protocol/refusals.py)


@attrs.frozen(kw_only=True, slots=True)
class Accepted:
    record: NodeRecord
    status: str  # "approved" or "pending" (registration), "removed" (leave)
    changes_list: bool
    moved: bool = False  # the approval moved here from the key a rotation statement replaces


def _check_ts(ts: int, existing: NodeRecord | None, now: float, policy: Policy) -> Refused | None:
    if ts > now + policy.ts_future_max_s:
        return Refused(
            status=400,
            reason=f"ts is {int(ts - now)} s ahead of the registry clock; fix the node's clock",
            refusal=Refusal.MALFORMED,
        )
    if ts < now - policy.ts_past_max_s:
        return Refused(
            status=409,
            reason=f"ts is stale ({int(now - ts)} s old, at most {policy.ts_past_max_s})",
            refusal=Refusal.REPLAYED,
        )
    if existing is not None and ts <= existing.last_ts:
        return Refused(
            status=409,
            reason="ts is not newer than one already accepted (replayed or reordered)",
            refusal=Refusal.REPLAYED,
        )
    return None


def decide_registration(
    reg: Registration, existing: NodeRecord | None, *, now: float, policy: Policy, registry_key: bytes,
    rotated_from: NodeRecord | None = None,
) -> Refused | Accepted:  # fmt: skip
    """Decide on a verified registration for the registry `registry_key`. `existing` is the node's stored record;
    `rotated_from` the record of the key its `rot` statement replaces (docs/bootstrap.md "Rotating a node key"): a
    banned OLD key bans the new one, an approved OLD key's approval moves to it."""
    if rotated_from is not None and rotated_from.banned:
        return Refused(status=403, reason="the key this node rotated from is banned", refusal=Refusal.UNADMITTED)
    if reg.reg != registry_key:
        return Refused(
            status=400,
            reason="registration names another registry (field 'reg' must be this registry's key, see GET /v1/nodes)",
            refusal=Refusal.MALFORMED,
        )
    if existing is not None and existing.banned:
        return Refused(status=403, reason="this node is banned by the registry", refusal=Refusal.UNADMITTED)
    bad_addr = _check_printable(reg.ws, "ws") or _check_hostport(reg.swim, "swim") or _check_hostport(reg.peer, "peer")
    if bad_addr:
        return Refused(status=400, reason=bad_addr, refusal=Refusal.MALFORMED)
    refused = _check_ts(reg.ts, existing, now, policy)
    if refused is not None:
        return refused
    if not reg.listed and reg.card_exp <= now:
        return Refused(status=400, reason="the card in this registration has expired", refusal=Refusal.REPLAYED)
    plain_ws = "" if reg.listed else plain_ws_problem(reg.ws)  # clients would refuse the card a bridge hands out
    if plain_ws:
        return Refused(status=400, reason=plain_ws, refusal=Refusal.MALFORMED)
    ttl = min(max(reg.ttl, policy.ttl_min_s), policy.ttl_max_s)
    approved = existing.approved if existing is not None else policy.approval == "auto"
    if existing is not None and not existing.approved and policy.approval == "auto":
        approved = True
    moved = (
        not approved
        and rotated_from is not None
        and rotated_from.approved
        and (rotated_from.moved_at == 0 or now >= rotated_from.moved_at + policy.rotation_hold_s)
    )
    approved = approved or moved
    record = NodeRecord(
        id=reg.id,
        ws=reg.ws,
        swim=reg.swim,
        peer=reg.peer,
        ttl=ttl,
        last_ts=reg.ts,
        seen=int(now),
        approved=approved,
        banned=False,
        first_seen=existing.first_seen if existing is not None and existing.first_seen else int(now),
        peers=reg.peers,
        bridge=not reg.listed,
        withheld=existing.withheld if existing is not None else False,
        card=b"" if reg.card is None else encode_document(reg.card),
        card_exp=reg.card_exp,
        passed=existing.passed if existing is not None else None,
        fails=existing.fails if existing is not None else 0,
        moved_at=int(now) if moved else (existing.moved_at if existing is not None else 0),
    )
    same_addresses = existing is not None and (existing.ws, existing.swim, existing.peer) == (
        reg.ws,
        reg.swim,
        reg.peer,
    )
    changes = _shown(record, now) != (_shown(existing, now) if existing is not None else None) or not same_addresses
    changes = changes and (record.live(now) or (existing is not None and existing.live(now)))
    return Accepted(
        record=record, status="approved" if approved else "pending", changes_list=changes or moved, moved=moved
    )


def federated(record: NodeRecord, listed_total: int, now: float) -> bool | None:
    """Whether a listed node looks federated, from the `peers` count its last registration carried
    (docs/bootstrap.md "Listed but not federated"): False when it sees no other live member although other nodes
    are listed (a wrong or missing `--trust` key, a firewalled SWIM or peer port, a wrong advertised address);
    None when it is not listed, said nothing, or is the only listed node. `listed_total`: nodes listed at `now`."""
    if record.peers is None or not record.listed(now) or listed_total < 2:
        return None
    return record.peers > 0


def _shown(record: NodeRecord, now: float) -> str:
    """Where a record shows: "list", "member pool", "member" or "" (a change between them changes a signed answer)."""
    if record.listed(now):
        return "list"
    return ("member " if record.member(now) else "") + ("pool" if record.in_pool(now) else "")


def decide_leave(
    node_id: bytes, ts: int, existing: NodeRecord | None, *, now: float, policy: Policy
) -> Refused | Accepted:
    """Decide on a verified leave document: the node is unlisted at once, its approval and replay floor are kept."""
    if existing is not None and existing.banned:
        return Refused(status=403, reason="this node is banned by the registry", refusal=Refusal.UNADMITTED)
    refused = _check_ts(ts, existing, now, policy)
    if refused is not None:
        return refused
    base = existing if existing is not None else NodeRecord(id=node_id, first_seen=int(now))
    record = attrs.evolve(base, seen=None, last_ts=ts)
    return Accepted(record=record, status="removed", changes_list=base.live(now))


def _check_printable(text: str, field: str) -> str | None:
    """A stranger's field goes into the registry's log and `homing bootstrap nodes list`: a space let it add
    "k=v" fields to the log line (even `event=`), a control or bidi character drove the admin's terminal."""
    if not all("!" <= c <= "~" for c in text):
        return f"field {field!r} must be printable ASCII without spaces (a host name in its xn-- form)"
    return None


def _check_hostport(text: str, field: str) -> str | None:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = decimal(port)
    if not sep or not host or number is None or not 1 <= number <= 65535:
        return f"field {field!r} must be HOST:PORT with a port 1..65535"
    if any(c.isspace() or c in "/@?#" for c in host):
        return f"field {field!r} has an invalid host"
    return _check_printable(text, field)


def listed_entries(
    records: Iterable[NodeRecord], now: float, *, bytes_max: int = LIST_BYTES_MAX, overhead_bytes: int = 0
) -> tuple[list[NodeEntry], list[bytes]]:
    """The entries and bridge ids (`members`) of the signed list, each ordered by id (a stable order keeps the ETag
    stable).

    At most what fits in `bytes_max` with `overhead_bytes` for the rest of the document: the nodes and bridges known
    longest (`first_seen`, then id) first; a bridge costs its id only."""
    shown = sorted((r for r in records if r.listed(now) or r.member(now)), key=lambda r: (r.first_seen, r.id))
    entries: list[NodeEntry] = []
    members: list[bytes] = []
    size = overhead_bytes
    for r in shown:
        if r.bridge:
            size += len(packb(r.id))
            if size > bytes_max:
                break
            members.append(r.id)
            continue
        entry = NodeEntry(
            id=r.id, ws=r.ws, swim=r.swim, peer=r.peer, seen=r.seen if r.seen is not None else 0, ok=r.passed or 0
        )
        size += len(packb(entry.to_body()))
        if size > bytes_max:
            break
        entries.append(entry)
    entries.sort(key=lambda e: e.id)
    members.sort()
    return entries, members


def cache_valid_until(records: Iterable[NodeRecord], now: float, *, issued: int, lifetime_s: int) -> float:
    """Until when a list built at `now` stays right: the first lease among the listed to run out, or half
    the list's lifetime (so a cached list is never served with less than half its life left)."""
    until = float(issued + lifetime_s / 2)
    for r in records:
        end = r.lease_end()
        if (r.listed(now) or r.member(now)) and end is not None:
            until = min(until, float(end))
    return until


# msgpack headers that grow with the list: the nodes array (5 B at most), the body's bin (5 B), the `members` key
# (8 B) and its array (5 B), with slack
_LIST_HEADERS_BYTES = 32


def build_list(
    registry: Identity,
    records: Iterable[NodeRecord],
    now: float,
    *,
    lifetime_s: int,
    bytes_max: int = LIST_BYTES_MAX,
    issued_min: int = 0,
) -> tuple[dict[str, bytes], float]:
    """Sign the current list: `issued` = now (but at least `issued_min`, so that every list this registry signs is
    newer than the one before: readers keep only the newest list per registry, and a list re-signed within the
    same second must not lose to its predecessor), `expires` = issued + lifetime, at most `bytes_max` bytes.
    Returns (document, valid_until)."""
    records = list(records)
    issued = max(int(now), issued_min)
    expires = issued + lifetime_s
    empty = len(encode_document(build_node_list(registry, [], issued=issued, expires=expires)))
    entries, members = listed_entries(records, now, bytes_max=bytes_max, overhead_bytes=empty + _LIST_HEADERS_BYTES)
    doc = build_node_list(registry, entries, issued=issued, expires=expires, members=members)
    assert len(encode_document(doc)) <= bytes_max, "the list size estimate is off"
    return doc, cache_valid_until(records, now, issued=issued, lifetime_s=lifetime_s)
