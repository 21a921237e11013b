"""Push wake-up, pure: who holds a client's push subscription and which rendezvous owner wakes it (docs/protocol.md,
"Push wake-up").

Rules
1. A subscription is registered at the client's home node, which sends it (PUSH_SUB) to every rendezvous owner of
   the client id, keeps a copy while it lives, and sends it again to new owners on a membership change; owners
   hand it to new owners too, so it outlives the client's connection (that is the point: the app sleeps).
   Every copy expires (`subscription_ttl_s` from the registration) unless the client registers again.
2. When a `call_offer` is stored in an owner's mailbox replica for an id that has no live lease (nobody is
   connected) and a subscription, exactly one owner sends one push: the owner of rank k in HRW order waits
   k * `fallback_s`, the first to act sends PUSH_CLAIM to its co-owners and a `SendPush` command to its driver;
   a claim seen before the wait ends cancels it. So rank 0 pushes at once, rank 1 only if rank 0 is gone (or
   does not hold the subscription), and a link or member failure of the earlier owners shortens the wait.
3. No push for an entry that is in flight to a home, delivered, expired, or for an id with a live lease; none
   for hand-offs and repeated puts (one eid is considered once); at most `per_callee_per_minute_max` per id.
4. Every table is bounded (`subscriptions_max`, per-eid state by the mailbox bounds) and every entry expires. As an
   owner, one home's clients hold at most `subscriptions_per_home_max` of it: a member mints client keys at will,
   each signing a claim naming it, and alone it filled the table, so that honest subscriptions were refused. As a
   home, the clients of one address (/32, /64) hold at most `subscriptions_per_address_max` of it: a stranger mints
   keys too, and one address registering a fresh key per handshake filled it in hours, for the 7 days of the TTL.
5. Authority (docs/protocol.md, "Relay authority"): a PUSH_SUB carries the client's home claim naming the node it
   registered at, valid for `claim_age_max_s` + `subscription_ttl_s` (a subscription outlives its connection) and
   checked within the sender's check budget. From that node it is taken (and replaces what is held); from a node
   within the id's top 2R owners (a hand-off) only when nothing is held for the id yet, because the claim does not
   cover the endpoint: a hand-off must not replace the home's word. A PUSH_UNSUB is taken only from the home the
   subscription came with, a PUSH_CLAIM only from an owner of the id. A 404/410 from the push service drops the
   subscription where it was seen only: each owner learns it with its own next push. So a member can neither
   replace nor drop the subscription of a client it does not home; an owner that claims a push and does not send
   it drops what it was given, as any owner may.
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from collections.abc import Callable, Hashable, Sequence

import attrs

from node.protocol.deadlines import DeadlineHeap
from node.protocol.ratelimit import KeyedBuckets
from node.protocol.refusals import Refusal
from node.protocol.relay.claims import HomeClaim, Verdict
from node.protocol.relay.owner import Owner
from node.protocol.relay.rendezvous import INF
from node.protocol.settings import PushSection, RelaySection
from node.protocol.webpush import BadSubscription, Subscription, check_subscription
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import PeerEnvelope, PeerMessage
from node.protocol.wire.push import SUB_TTL_MS_MAX, PushClaim, PushSub, PushUnsub

__all__ = ["PushDropped", "PushRole", "SendPush"]


@attrs.frozen(kw_only=True, slots=True)
class SendPush:
    """Command: send one wake-up push for `eid` to `client`'s subscription, with `ttl_s` (time left in the mailbox)."""

    eid: bytes
    client: bytes
    sub: Subscription
    ttl_s: int
    created: float  # the core's `now` when the push was decided (for latency measurements)


class DropReason(enum.Enum):
    RATE_LIMITED = "rate_limited"  # the callee had its pushes for this minute


@attrs.frozen(kw_only=True, slots=True)
class PushDropped:
    """Command (for metrics): a push that was due but is not sent."""

    client: bytes
    reason: DropReason


@attrs.define(kw_only=True, slots=True)
class _Held:
    sub: Subscription
    expires: float
    claim: HomeClaim  # the client's home claim naming the node it registered at (rule 5)


Send = Callable[[bytes, PeerMessage], None]
Emit = Callable[[SendPush | PushDropped], None]


class SubTable:
    """client id -> subscription with its expiry, bounded in total and per share (the claim's home node at an owner,
    the registering connection's address at the home); a full table, or a share over its bound, refuses new ids
    (never evicts).

    Expiries are one `DeadlineHeap` entry per id: a client re-registers on every connect, and a bare heap kept an
    entry per registration until the TTL (7 days) passed, so one connection registering in a loop grew the node
    by ~90 bytes a registration at home and at each owner (tests/push/test_push_limits.py)."""

    def __init__(self, *, size_max: int, per_share_max: int | None = None) -> None:
        self._max = size_max
        self._per_share_max = size_max if per_share_max is None else per_share_max
        self._t: dict[bytes, _Held] = {}
        self._share_of: dict[bytes, Hashable] = {}
        self._per_share: Counter[Hashable] = Counter()
        self._due: DeadlineHeap[bytes] = DeadlineHeap()

    def count_share(self, share: Hashable) -> int:
        return self._per_share[share]

    def _remove(self, client: bytes) -> None:
        self._due.discard(client)
        del self._t[client]
        share = self._share_of.pop(client)
        self._per_share[share] -= 1
        if not self._per_share[share]:
            del self._per_share[share]

    def __len__(self) -> int:
        return len(self._t)

    def get(self, client: bytes, now: float) -> _Held | None:
        held = self._t.get(client)
        return held if held is not None and held.expires > now else None

    def put(self, client: bytes, sub: Subscription, expires: float, claim: HomeClaim, share: Hashable) -> bool:
        old = self._t.get(client)
        if old is None and len(self._t) >= self._max:
            return False
        if self._share_of.get(client) != share and self._per_share[share] >= self._per_share_max:
            return False
        if old is not None:
            self._remove(client)
        self._t[client] = _Held(sub=sub, expires=expires, claim=claim)
        self._share_of[client] = share
        self._per_share[share] += 1
        self._due.push(client, expires)
        return True

    def drop(self, client: bytes, endpoint: str = "") -> None:
        held = self._t.get(client)
        if held is not None and (not endpoint or held.sub.endpoint == endpoint):
            self._remove(client)

    def items(self) -> list[tuple[bytes, _Held]]:
        return sorted(self._t.items())

    def expire(self, now: float) -> None:
        for client in self._due.pop_due(now):
            if client in self._t:
                self._remove(client)

    def next_deadline(self) -> float:
        return self._due.next_deadline()


@attrs.define(kw_only=True, slots=True)
class _Due:
    client: bytes
    due: float


def _usable(sub: Subscription) -> bool:
    """A subscription from a peer is checked like one from a client (its point, its URL) before it is held."""
    try:
        check_subscription(sub)
    except BadSubscription:
        return False
    return True


def _ttl_ms(expires: float, now: float) -> int:
    return max(1, min(SUB_TTL_MS_MAX, round((expires - now) * 1000)))


class PushRole:
    """See the module docstring. The relay core (node/protocol/relay/core.py) owns one and feeds it."""

    def __init__(
        self,
        *,
        node_id: bytes,
        config: PushSection,
        relay: RelaySection,
        owner: Owner,
        send: Send,
        emit: Emit,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self._relay = relay
        self._owner = owner
        self._send = send
        self._emit = emit
        self.held = SubTable(  # as a rendezvous owner: each home gets its share (rule 4)
            size_max=config.subscriptions_max, per_share_max=config.subscriptions_per_home_max
        )
        self.homed = SubTable(  # as the home node that registered it: each address gets its share (rule 4)
            size_max=config.subscriptions_max, per_share_max=config.subscriptions_per_address_max
        )
        self._due: dict[bytes, _Due] = {}  # eid -> waiting owner's fallback
        self._due_heap: list[tuple[float, bytes]] = []
        self._considered: dict[bytes, float] = {}  # eid -> forget-at: pushed, claimed or skipped once
        self._considered_heap: list[tuple[float, bytes]] = []
        self._buckets: KeyedBuckets[bytes] = KeyedBuckets(
            config.per_callee_per_minute_max / 60.0, config.per_callee_per_minute_max, config.subscriptions_max
        )

    def _owners(self, client: bytes, members: Sequence[bytes] | None = None) -> tuple[bytes, ...]:
        ranking = self._owner.ranking
        return ranking.of(client) if members is None else ranking.under(client, members)

    # ------------------------------------------------------------------ home role
    def register(self, claim: HomeClaim, sub: Subscription, now: float, address: str) -> bool:
        """A local client's push_register (`claim`: its connection's home claim, `address`: its connection's address
        key). False when the table is full or the address has its share of it (rule 4)."""
        expires = now + self.config.subscription_ttl_s
        if not self.homed.put(claim.client, sub, expires, claim, address):
            return False
        self._send_sub(_Held(sub=sub, expires=expires, claim=claim), self._owners(claim.client), now)
        return True

    def unregister(self, client: bytes) -> None:
        self.homed.drop(client)
        for o in self._owners(client):
            self._send(o, PushUnsub(id=client))

    def _send_sub(self, held: _Held, targets: Sequence[bytes], now: float) -> None:
        sub, claim = held.sub, held.claim
        msg = PushSub(
            id=claim.client,
            endpoint=sub.endpoint,
            p256dh=sub.p256dh,
            auth=sub.auth,
            ttl_ms=_ttl_ms(held.expires, now),
            home=claim.home,
            claim_nonce=claim.nonce,
            claim_sig=claim.sig,
        )
        for o in targets:
            self._send(o, msg)

    # ------------------------------------------------------------------ owner role
    def _refuse(self, reason: Refusal) -> None:
        self._owner.refused[reason] += 1

    def _sub_authorised(self, from_node: bytes, msg: PushSub, now: float) -> bool:
        """Rule 5 for a PUSH_SUB: from the client's claimed home, or a (former) co-owner's hand-off of a
        subscription not held here yet; with a valid claim."""
        if msg.home != from_node:
            if not self._owner.near(from_node, msg.id):
                self._refuse(Refusal.FORGED)
                return False
            if self.held.get(msg.id, now) is not None:
                return False  # the home's word stands (a hand-off of what the home sent us too is normal)
        wall = now + self._owner.wall_offset_s
        extra = self.config.subscription_ttl_s
        verdict = self._owner.verifier.check(msg.claim, wall, extra_age_s=extra, peer=from_node, now=now)
        if verdict is not Verdict.VALID:
            self._refuse(verdict.refusal)
            return False
        return True


    def on_message(self, from_node: bytes, msg: PushSub | PushUnsub | PushClaim, now: float) -> None:
        match msg:
            case PushSub():
                sub = Subscription(endpoint=msg.endpoint, p256dh=msg.p256dh, auth=msg.auth)
                if self.node_id not in self._owners(msg.id) or not _usable(sub):
                    return
                if self._sub_authorised(from_node, msg, now):
                    ttl_s = min(msg.ttl_ms / 1000, self.config.subscription_ttl_s)
                    self.held.put(msg.id, sub, now + ttl_s, msg.claim, msg.claim.home)
            case PushUnsub():  # rule 5: only from the home the subscription came with
                held = self.held.get(msg.id, now)
                if held is None or held.claim.home != from_node:
                    self._refuse(Refusal.FORGED)
                    return
                self.held.drop(msg.id, msg.endpoint)
            case PushClaim():
                if from_node not in self._owners(msg.id):
                    self._refuse(Refusal.FORGED)
                    return
                self._due.pop(msg.eid, None)
                self._consider(msg.eid, now)

    def on_put(self, env: PeerEnvelope, now: float) -> None:
        """A MAILBOX_PUT was handled by the owner role: maybe schedule this owner's push (rule 2)."""
        if env.kind is not Kind.CALL_OFFER or env.eid in self._considered or env.eid in self._due:
            return
        if not self._wanted(env.eid, env.to, now):
            return
        ranked = self._owners(env.to)
        if self.node_id not in ranked:
            return
        rank = ranked.index(self.node_id)
        if rank == 0:
            self._fire(env.eid, env.to, now)
            return
        due = now + rank * self.config.fallback_s
        self._due[env.eid] = _Due(client=env.to, due=due)
        heapq.heappush(self._due_heap, (due, env.eid))

    def _wanted(self, eid: bytes, client: bytes, now: float) -> bool:
        entry = self._owner.mailbox.get(eid)
        return (
            entry is not None
            and entry.inflight_to is None
            and not self._owner.leases.homes(client, now)
            and self.held.get(client, now) is not None
        )

    def _consider(self, eid: bytes, now: float) -> None:
        until = now + self._relay.mailbox_ttl + 4 * self._relay.peer_timeout_s
        self._considered[eid] = until
        heapq.heappush(self._considered_heap, (until, eid))
        while len(self._considered) > 2 * self._relay.mailbox_total_max:  # bound: the oldest are forgotten first
            old_until, old = heapq.heappop(self._considered_heap)
            if self._considered.get(old) == old_until:
                del self._considered[old]

    def _fire(self, eid: bytes, client: bytes, now: float) -> None:
        self._due.pop(eid, None)
        self._consider(eid, now)
        if not self._wanted(eid, client, now):
            return
        for o in self._owners(client):
            if o != self.node_id:
                self._send(o, PushClaim(eid=eid, id=client))
        if not self._buckets.take(client, now):
            self._emit(PushDropped(client=client, reason=DropReason.RATE_LIMITED))
            return
        held = self.held.get(client, now)
        entry = self._owner.mailbox.get(eid)
        assert held is not None and entry is not None  # _wanted checked both
        ttl_s = max(0, int(entry.deadline - now))
        self._emit(SendPush(eid=eid, client=client, sub=held.sub, ttl_s=ttl_s, created=now))

    def gone(self, client: bytes, endpoint: str) -> None:
        """The push service said 404/410: the subscription is dead here (rule 5: the co-owners learn it from their
        own next push; a word from one owner cannot drop another's copy)."""
        self.held.drop(client, endpoint)
        self.homed.drop(client, endpoint)

    # ------------------------------------------------------------------ failures and membership
    def node_failed(self, node: bytes, now: float) -> None:
        """A link to `node` failed or it died: a push waiting on it as an earlier owner waits less (rule 2)."""
        for eid, d in list(self._due.items()):
            ranked = self._owners(d.client)
            if node not in ranked or self.node_id not in ranked:
                continue
            earlier = ranked[: ranked.index(self.node_id)]
            if node in earlier:
                due = now + sum(1 for o in earlier if o != node) * self.config.fallback_s
                if due < d.due:
                    d.due = due
                    heapq.heappush(self._due_heap, (due, eid))

    def members_changed(self, old: Sequence[bytes], new: Sequence[bytes], now: float) -> None:
        """Hand held subscriptions to new owners (and drop those no longer ours); re-send homed ones (rule 1)."""
        for client, held in self.held.items():
            before, after = self._owners(client, old), self._owners(client, new)
            self._send_sub(held, [o for o in after if o not in before], now)
            if self.node_id not in after:
                self.held.drop(client)
        for client, held in self.homed.items():
            before, after = self._owners(client, old), self._owners(client, new)
            self._send_sub(held, [o for o in after if o not in before], now)

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> None:
        while self._due_heap and self._due_heap[0][0] <= now:
            due, eid = heapq.heappop(self._due_heap)
            d = self._due.get(eid)
            if d is not None and d.due == due:
                self._fire(eid, d.client, now)
        while self._considered_heap and self._considered_heap[0][0] <= now:
            until, eid = heapq.heappop(self._considered_heap)
            if self._considered.get(eid) == until:
                del self._considered[eid]
        self.held.expire(now)
        self.homed.expire(now)

    def next_deadline(self) -> float:
        while self._due_heap:
            due, eid = self._due_heap[0]
            d = self._due.get(eid)
            if d is not None and d.due == due:
                break
            heapq.heappop(self._due_heap)
        return min(
            self._due_heap[0][0] if self._due_heap else INF,
            self._considered_heap[0][0] if self._considered_heap else INF,
            self.held.next_deadline(),
            self.homed.next_deadline(),
        )
