"""Rendezvous state, pure: who owns a client id, where it is homed, and what waits for it.

Rules
- Owner selection is highest-random-weight (HRW) hashing: each live member gets the score
  blake2b(person="homing-hrw", member_id + client_id) and the R highest scores own the id (ties, which need a
  64-bit collision, go to the smaller member id). Every node with the same member list computes the same owners;
  when a member joins or dies only the ids it owned (or now owns) move: about R/N of them.
- Every table is bounded (`leases_max`, `mailbox_per_id_max`, `mailbox_total_max`, `seen_max`) and every entry
  carries a deadline: nothing here lives forever. A full table refuses the new entry; it never evicts a
  live one silently.
- No clock: every call that depends on time takes `now` (monotonic seconds); `next_deadline()` says when
  `expire(now)` has work. Expiry uses heaps with lazy deletion, so a tick costs O(expired · log n).

Theory of operation
- `LeaseTable` is held by an owner: (client id, home node) -> expiry. A home node renews its leases every
  lease_ttl/3; a lease of a node that died is dropped by the relay core on the membership change.
- `Mailbox` is held by an owner: envelopes for an offline id, in arrival order per id, each with its TTL.
  An entry pushed to a home node is "in flight" until that node acknowledges it; only then is it removed.
  `cancel_call` implements cancel-by-hangup: it removes the still-queued (not in-flight) envelopes of one call
  from one sender, if a call_offer is among them.
- `SeenSet` is held by a home node: eids it has handed to clients recently, so that the R owner replicas
  pushing the same queued envelope produce one delivery.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from node.protocol.settings import RelaySection
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import (
    PEER_IDS_MAX,
    TTL_MS_MAX,
    EnvelopeResult,
    Handoff,
    Lease,
    LeaseDrop,
    Lookup,
    LookupReply,
    MailboxEvent,
    MailboxPut,
    MailboxStatus,
    MailboxTake,
    PeerEnvelope,
    PeerMessage,
    ReceiptStatus,
    RelayReceipt,
    ResultStatus,
)

INF = float("inf")


def hrw_score(member: bytes, client: bytes) -> int:
    """The rendezvous weight of `member` for `client` (64 bits of blake2b)."""
    return int.from_bytes(hashlib.blake2b(member + client, digest_size=8, person=b"homing-hrw").digest(), "big")


def owners(client: bytes, members: Iterable[bytes], replicas: int) -> tuple[bytes, ...]:
    """The `replicas` members with the highest HRW score for `client`, best first."""
    ranked = sorted(set(members), key=lambda m: (-hrw_score(m, client), m))
    return tuple(ranked[:replicas])


class LeaseTable:
    """(client id, home node) -> expiry, bounded by `leases_max` pairs."""

    def __init__(self, *, leases_max: int) -> None:
        self._max = leases_max
        self._t: dict[bytes, dict[bytes, float]] = {}
        self._count = 0
        self._heap: list[tuple[float, bytes, bytes]] = []

    def __len__(self) -> int:
        return self._count

    def put(self, client: bytes, home: bytes, expires: float) -> bool:
        """Add or renew a lease. False when the table is full (the lease is refused)."""
        homes = self._t.get(client)
        if homes is None or home not in homes:
            if self._count >= self._max:
                return False
            self._count += 1
        self._t.setdefault(client, {})[home] = expires
        heapq.heappush(self._heap, (expires, client, home))
        return True

    def drop(self, client: bytes, home: bytes) -> None:
        homes = self._t.get(client)
        if homes is not None and homes.pop(home, None) is not None:
            self._count -= 1
            if not homes:
                del self._t[client]

    def drop_home(self, home: bytes) -> None:
        """Forget every lease of `home` (it died or left)."""
        for client in [c for c, homes in self._t.items() if home in homes]:
            self.drop(client, home)

    def homes(self, client: bytes, now: float) -> tuple[bytes, ...]:
        return tuple(sorted(h for h, exp in self._t.get(client, {}).items() if exp > now))

    def items(self) -> Iterator[tuple[bytes, bytes, float]]:
        """(client, home, expires) for every lease, in a stable order."""
        for client in sorted(self._t):
            for home, exp in sorted(self._t[client].items()):
                yield client, home, exp

    def expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            exp, client, home = heapq.heappop(self._heap)
            if self._t.get(client, {}).get(home) == exp:
                self.drop(client, home)

    def next_deadline(self) -> float:
        return self._heap[0][0] if self._heap else INF


class PutResult(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    FULL = "full"


@attrs.define(kw_only=True, slots=True)
class MailEntry:
    env: PeerEnvelope
    deadline: float
    inflight_to: bytes | None = None  # home node it was pushed to, awaiting ENVELOPE_RESULT
    inflight_until: float = INF
    told_forwarded: bool = False  # the origin was told FORWARDED (not STORED), so it sent no `queued` yet


class Mailbox:
    """Envelopes waiting for offline client ids: per-id FIFO, TTL, per-id and total bounds."""

    def __init__(self, *, per_id_max: int, total_max: int) -> None:
        self._per_id_max = per_id_max
        self._total_max = total_max
        self._by_eid: dict[bytes, MailEntry] = {}
        self._by_id: dict[bytes, dict[bytes, MailEntry]] = {}  # insertion-ordered: arrival order
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._by_eid)

    def __contains__(self, eid: bytes) -> bool:
        return eid in self._by_eid

    def get(self, eid: bytes) -> MailEntry | None:
        return self._by_eid.get(eid)

    def put(self, env: PeerEnvelope, deadline: float) -> PutResult:
        if env.eid in self._by_eid:
            return PutResult.DUPLICATE
        queue = self._by_id.get(env.to, {})
        if len(queue) >= self._per_id_max or len(self._by_eid) >= self._total_max:
            return PutResult.FULL
        entry = MailEntry(env=env, deadline=deadline)
        self._by_eid[env.eid] = entry
        self._by_id.setdefault(env.to, {})[env.eid] = entry
        heapq.heappush(self._heap, (deadline, env.eid))
        return PutResult.STORED

    def remove(self, eid: bytes) -> MailEntry | None:
        entry = self._by_eid.pop(eid, None)
        if entry is not None:
            queue = self._by_id[entry.env.to]
            del queue[eid]
            if not queue:
                del self._by_id[entry.env.to]
        return entry

    def entries(self, client: bytes) -> list[MailEntry]:
        """The entries waiting for `client`, oldest first."""
        return list(self._by_id.get(client, {}).values())

    def all_entries(self) -> list[MailEntry]:
        return [e for q in self._by_id.values() for e in q.values()]

    def inflight_to(self, home: bytes) -> list[MailEntry]:
        return [e for e in self._by_eid.values() if e.inflight_to == home]

    def cancel_call(self, to: bytes, sender: bytes, call: bytes) -> list[MailEntry]:
        """Cancel-by-hangup: if a queued (not in-flight) call_offer of (sender, call) waits for `to`, remove it and
        every other queued envelope of that call from that sender, and return them; else remove nothing."""
        same = [
            e
            for e in self._by_id.get(to, {}).values()
            if e.env.sender == sender and e.env.call == call and e.inflight_to is None
        ]
        if not any(e.env.kind is Kind.CALL_OFFER for e in same):
            return []
        for e in same:
            self.remove(e.env.eid)
        return same

    def expire(self, now: float) -> list[MailEntry]:
        """Remove and return the entries whose TTL passed."""
        out: list[MailEntry] = []
        while self._heap and self._heap[0][0] <= now:
            _, eid = heapq.heappop(self._heap)
            entry = self._by_eid.get(eid)
            if entry is not None and entry.deadline <= now:
                self.remove(eid)
                out.append(entry)
        return out

    def next_deadline(self) -> float:
        while self._heap and self._heap[0][1] not in self._by_eid:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else INF


class SeenSet:
    """Recently delivered eids with their expiry, bounded by `seen_max` (oldest forgotten first)."""

    def __init__(self, *, seen_max: int) -> None:
        self._max = seen_max
        self._d: OrderedDict[bytes, float] = OrderedDict()

    def __contains__(self, eid: bytes) -> bool:
        return eid in self._d

    def __len__(self) -> int:
        return len(self._d)

    def add(self, eid: bytes, until: float) -> None:
        """Remember `eid` until `until`; callers use one fixed lifetime, so entries stay in expiry order."""
        self._d[eid] = until
        self._d.move_to_end(eid)
        while len(self._d) > self._max:
            self._d.popitem(last=False)

    def expire(self, now: float) -> None:
        # callers add with a fixed lifetime, so the oldest entry expires first
        while self._d:
            eid, until = next(iter(self._d.items()))
            if until > now:
                break
            del self._d[eid]

    def next_deadline(self) -> float:
        return next(iter(self._d.values()), INF)


Send = Callable[[bytes, PeerMessage], None]


def _ttl_ms(deadline: float, now: float) -> int:
    return max(1, min(TTL_MS_MAX, round((deadline - now) * 1000)))


class Owner:
    """The rendezvous-owner role of a node: leases, the mailbox replica, pushing queued envelopes to home nodes.

    `send(node, msg)` queues a peer message (the relay core loops messages to itself back). Owners of an id are
    computed by `owners_of(client, members)` with the membership the caller passes in.
    """

    def __init__(self, *, node_id: bytes, config: RelaySection, send: Send) -> None:
        self.node_id = node_id
        self.config = config
        self._send = send
        self.leases = LeaseTable(leases_max=config.leases_max)
        self.mailbox = Mailbox(per_id_max=config.mailbox_per_id_max, total_max=config.mailbox_total_max)
        self._inflight_heap: list[tuple[float, bytes]] = []

    def _owners(self, client: bytes, members: Sequence[bytes]) -> tuple[bytes, ...]:
        return owners(client, members, self.config.replicas)

    # -- messages
    def on_lease(self, msg: Lease, now: float) -> None:
        for client in msg.ids:
            self.leases.put(client, msg.home, now + msg.ttl_ms / 1000)
            self._push_waiting(client, now)

    def on_lease_drop(self, msg: LeaseDrop) -> None:
        for client in msg.ids:
            self.leases.drop(client, msg.home)

    def on_lookup(self, from_node: bytes, msg: Lookup, now: float) -> None:
        homes = self.leases.homes(msg.id, now)[:PEER_IDS_MAX]
        self._send(from_node, LookupReply(id=msg.id, homes=homes))

    def on_put(self, from_node: bytes, msg: MailboxPut, now: float) -> None:
        env = msg.env
        if env.kind is Kind.CALL_HANGUP:
            cancelled = self.mailbox.cancel_call(env.to, env.sender, env.call)
            if cancelled:
                for e in cancelled:
                    self._send(e.env.origin, RelayReceipt(eid=e.env.eid, status=ReceiptStatus.CANCELLED))
                self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.CANCELLED))
                return
        if self.mailbox.put(env, now + msg.ttl_ms / 1000) is PutResult.FULL:
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.FULL))
            return
        self._push_waiting(env.to, now)
        entry = self.mailbox.get(env.eid)
        if entry is not None and entry.inflight_to is not None:
            entry.told_forwarded = True
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.FORWARDED))
        else:
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.STORED))

    def on_handoff(self, msg: Handoff, now: float) -> None:
        if self.mailbox.put(msg.env, now + msg.ttl_ms / 1000) is PutResult.STORED:
            self._push_waiting(msg.env.to, now)

    def on_take(self, msg: MailboxTake) -> None:
        for eid in msg.eids:
            self.mailbox.remove(eid)

    def on_result(self, from_node: bytes, msg: EnvelopeResult, members: Sequence[bytes], now: float) -> None:
        entry = self.mailbox.get(msg.eid)
        if entry is None or entry.inflight_to != from_node:
            return
        if msg.status is ResultStatus.DELIVERED:
            self.mailbox.remove(msg.eid)
            # the home told the origin too; this second path matters when the home-origin link is down
            self._send(entry.env.origin, RelayReceipt(eid=msg.eid, status=ReceiptStatus.DELIVERED))
            for o in self._owners(entry.env.to, members):
                if o != self.node_id:
                    self._send(o, MailboxTake(eids=(msg.eid,)))
            return
        self.leases.drop(entry.env.to, from_node)  # not_here: that lease is stale
        self._bounce(entry)
        self._push_waiting(entry.env.to, now)

    # -- failures and membership
    def node_gone(self, node: bytes, *, dead: bool) -> None:
        """The link to `node` failed (or it died: then its leases go too). Its in-flight pushes wait again."""
        if dead:
            self.leases.drop_home(node)
        for entry in self.mailbox.inflight_to(node):
            self._bounce(entry)

    def members_changed(self, old: Sequence[bytes], new: Sequence[bytes], now: float) -> None:
        """Send every lease and mailbox entry to the owners that did not hold it; drop what we no longer own."""
        for client, home, exp in list(self.leases.items()):
            before, after = self._owners(client, old), self._owners(client, new)
            for o in after:
                if o not in before and o != self.node_id:
                    self._send(o, Lease(home=home, ids=(client,), ttl_ms=_ttl_ms(exp, now)))
            if self.node_id not in after:
                self.leases.drop(client, home)
        for entry in self.mailbox.all_entries():
            before, after = self._owners(entry.env.to, old), self._owners(entry.env.to, new)
            for o in after:
                if o not in before and o != self.node_id:
                    self._send(o, Handoff(env=entry.env, ttl_ms=_ttl_ms(entry.deadline, now)))
            if self.node_id not in after:
                self.mailbox.remove(entry.env.eid)
        for client in sorted({e.env.to for e in self.mailbox.all_entries()}):
            self._push_waiting(client, now)

    def handoff_all(self, members: Sequence[bytes], now: float) -> None:
        """Graceful leave: push every lease and entry to its owners among `members` (self excluded), then forget."""
        others = [m for m in members if m != self.node_id]
        for client, home, exp in list(self.leases.items()):
            if home != self.node_id:
                for o in self._owners(client, others):
                    self._send(o, Lease(home=home, ids=(client,), ttl_ms=_ttl_ms(exp, now)))
        for entry in self.mailbox.all_entries():
            for o in self._owners(entry.env.to, others):
                self._send(o, Handoff(env=entry.env, ttl_ms=_ttl_ms(entry.deadline, now)))
        self.leases = LeaseTable(leases_max=self.config.leases_max)
        self.mailbox = Mailbox(per_id_max=self.config.mailbox_per_id_max, total_max=self.config.mailbox_total_max)
        self._inflight_heap = []

    # -- time
    def tick(self, now: float) -> None:
        while self._inflight_heap and self._inflight_heap[0][0] <= now:
            until, eid = heapq.heappop(self._inflight_heap)
            entry = self.mailbox.get(eid)
            if entry is not None and entry.inflight_until == until:
                self._bounce(entry)
        for entry in self.mailbox.expire(now):
            self._send(entry.env.origin, RelayReceipt(eid=entry.env.eid, status=ReceiptStatus.EXPIRED))
        self.leases.expire(now)

    def next_deadline(self) -> float:
        while self._inflight_heap:
            until, eid = self._inflight_heap[0]
            entry = self.mailbox.get(eid)
            if entry is not None and entry.inflight_until == until:
                break
            heapq.heappop(self._inflight_heap)
        inflight = self._inflight_heap[0][0] if self._inflight_heap else INF
        return min(inflight, self.mailbox.next_deadline(), self.leases.next_deadline())

    # -- internals
    def _bounce(self, entry: MailEntry) -> None:
        """The push of `entry` failed: it waits again; an origin told FORWARDED now learns it is queued."""
        entry.inflight_to, entry.inflight_until = None, INF
        if entry.told_forwarded:
            entry.told_forwarded = False
            self._send(entry.env.origin, MailboxEvent(eid=entry.env.eid, status=MailboxStatus.STORED))

    def _push_waiting(self, client: bytes, now: float) -> None:
        """Push every waiting (not in-flight) entry of `client`, oldest first, to its first live home."""
        homes = self.leases.homes(client, now)
        if not homes:
            return
        until = now + self.config.peer_timeout_s
        for entry in self.mailbox.entries(client):
            if entry.inflight_to is None:
                entry.inflight_to, entry.inflight_until = homes[0], until
                heapq.heappush(self._inflight_heap, (until, entry.env.eid))
                self._send(homes[0], entry.env)
