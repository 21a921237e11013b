"""The rendezvous-owner role of a node, pure: leases, the mailbox replica, pushing queued envelopes to home nodes.

Who may say what to an owner (docs/protocol.md, "Relay authority"):
- LEASE: only for ids this node owns (HRW over its live members; the sender excluded too, so a leaving owner's
  hand-offs land), each backed by a valid home claim naming the lease's home. The sender is the home itself, or
  (a hand-off from an old owner) any member, passing on the claim the home gave.
  The TTL is clamped to the local `lease_ttl_s` and to the claim's age bound; each home holds at most
  `leases_per_home_max` leases here. A claim is checked only when its lease fits (within that share), and a
  renewal with the claim the lease already holds is not checked again (only its age is).
- LEASE_DROP: only from the home it names.
- MAILBOX_PUT: only from the envelope's origin node, for ids this node owns, within the sender's per-second budget
  (`puts_per_peer_per_s`, taken before the claim is checked), with the sender's valid claim naming that origin,
  and within the mailbox's per-origin, per-sender and byte bounds and the recipient's mailbox shares: one sender id
  holds at most `mailbox_per_sender_per_id_max` of it, one origin node `mailbox_per_origin_per_id_max` (so one key,
  or one node and its clients, cannot lock a callee's other callers out); the TTL is clamped to the local
  `mailbox_ttl`. Over any bound the put is answered FULL and nothing stored is dropped.
  A put for an id this node does not own is answered NOT_OWNER.
- HANDOFF: for ids this node owns, with the sender's valid claim and the origin's valid signature (a member
  cannot spend another origin's share with junk), within the sender's put budget and the mailbox bounds.
  A hand-off is an entry another owner already stored (its origin may have told its sender `queued` for that copy
  alone), so the recipient's mailbox shares (per sender id, per origin) do not refuse it when its sender is not its
  origin: the origin is the node that signed it, not the old owner passing it on, and an honest old owner held
  only what fit those shares there; refused here, it would be lost with the old owner's copy. A hand-off whose
  sender is its origin (an origin that was an owner too) counts like a put, so a member cannot pass its own
  entries off as hand-offs to take more than its share (it can sign as no other origin).
  Hand-offs (and hand-off LEASEs) come from any member: after many joins at once the old owner may rank
  anywhere, and refusing would lose the entry.
- MAILBOX_TAKE: only from a node within the top 2R for the entry's recipient (an owner before or after a change),
  and only as a hint: the entries it names are pushed to the recipient's home, whose `delivered` removes them.
- While this node leaves (`leaving`, set when its graceful stop begins): a home's LEASE is declined unchecked unless
  mail waits here for the client (the lease is what pushes it). The node is about to stop answering lookups, so the
  lease would only cost it a signature check while it says goaway to its own clients, and their re-homing sends it
  one lease each (13 % of the stopping node's samples in bench/scale's goaway storm; its CPU fell from 1.98 to 1.74
  s, docs/performance.md "Thirteenth pass"); the other owners hold the lease, and the home leases to the owners
  that follow once the leave is heard (docs/protocol.md, "Membership change"). If every owner of a client is
  stopping at once, a call to it waits for a lease to reach an owner: seconds, not a loss.
- After its hand-off (`handed_off`, `handoff_all`): it takes no mail and no lease. A MAILBOX_PUT is answered
  NOT_OWNER, which the origin treats as a failed owner and retries with the owners it sees later; stored, the entry
  would have been lost when the node exited, and the origin would have told its sender `queued` for it. A HANDOFF
  is ignored (its sender sends it to every new owner).
Every claim and origin signature a peer sends is checked within that peer's check budget
(node/protocol/relay/claims.py, `PeerChecks`); over it, it is refused unchecked (`rate_limited`).
Everything refused is counted in `refused` (node/protocol/refusals.Refusal -> count) and otherwise ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from node.protocol.deadlines import DeadlineHeap
from node.protocol.ratelimit import KeyedBuckets
from node.protocol.refusals import Refusal
from node.protocol.relay.claims import ClaimVerifier, HomeClaim, Verdict
from node.protocol.relay.rendezvous import INF, LeaseTable, Mailbox, MailEntry, MailLimits, PutResult, Ranking, owners
from node.protocol.settings import RelaySection
from node.protocol.wire.client import Kind
from node.protocol.wire.peer import (
    LEASE_CLAIMS_MAX,
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
    origin_signed_bytes,
)

Send = Callable[[bytes, PeerMessage], None]
PEERS_TRACKED_MAX = 4096  # per-peer put buckets kept (members are far fewer)


def origin_verdict(verifier: ClaimVerifier, env: PeerEnvelope, wall_s: float, *, peer: bytes, now: float) -> Verdict:
    """Did `env.origin` sign this mailbox envelope, and is its signature not void yet (`expires_ms`)? Checked within
    `peer`'s budget."""
    if not env.origin_sig:
        return Verdict.FORGED
    if wall_s > env.expires_ms / 1000 + verifier.skew_s:
        return Verdict.STALE
    return verifier.check_signed(env.origin, lambda: origin_signed_bytes(env), env.origin_sig, peer=peer, now=now)


def _ttl_ms(deadline: float, now: float) -> int:
    return max(1, min(TTL_MS_MAX, round((deadline - now) * 1000)))


class Owner:
    """See the module docstring. `send(node, msg)` queues a peer message (the relay core loops messages to itself
    back). The core keeps `members` (live member ids) and `wall_offset_s` (unix time minus `now`) current, and sets
    `is_down` (node/protocol/relay/core.py, rule 12: a node whose link just failed)."""

    def __init__(self, *, node_id: bytes, config: RelaySection, send: Send, verifier: ClaimVerifier) -> None:
        self.node_id = node_id
        self.config = config
        self.verifier = verifier
        self.ranking = Ranking((node_id,), replicas=config.replicas, entries_max=config.leases_max)
        self.wall_offset_s = 0.0
        self.is_down: Callable[[bytes, float], bool] = lambda node, now: False
        self.refused: Counter[Refusal] = Counter()
        self.leaving = False  # a graceful stop has begun (module docstring)
        self.handed_off = False  # ... and `handoff_all` has run
        self.leases_declined = 0  # leases not taken because this node is leaving (for tests)
        self._send = send
        self._puts: KeyedBuckets[bytes] = KeyedBuckets(
            config.puts_per_peer_per_s, config.puts_per_peer_burst, PEERS_TRACKED_MAX
        )
        self._reset()

    def _reset(self) -> None:
        c = self.config
        self.leases = LeaseTable(leases_max=c.leases_max, per_home_max=c.leases_per_home_max)
        self.mailbox = Mailbox(per_id_max=c.mailbox_per_id_max, total_max=c.mailbox_total_max, limits=MailLimits.of(c))
        self._inflight: DeadlineHeap[bytes] = DeadlineHeap()

    @property
    def members(self) -> tuple[bytes, ...]:
        """The live member ids, sorted (set by the core on every membership change)."""
        return self.ranking.members

    @members.setter
    def members(self, members: tuple[bytes, ...]) -> None:
        self.ranking.members = members

    def _owners(self, client: bytes, members: Sequence[bytes]) -> tuple[bytes, ...]:
        return self.ranking.under(client, members)

    # -- authority
    def owns(self, client: bytes, sender: bytes) -> bool:
        """Is this node an owner of `client`, with or without `sender` (a leaving owner hands off first)?"""
        if self.node_id in self.ranking.of(client):
            return True
        return self.node_id in self._owners(client, [m for m in self.members if m != sender])

    def near(self, node: bytes, client: bytes) -> bool:
        """Is `node` an owner of `client` or was one before a membership change (within the top 2R)?"""
        return node in owners(client, self.members, 2 * self.config.replicas)

    def _refuse(self, reason: Refusal) -> None:
        self.refused[reason] += 1

    def _ok(self, verdict: Verdict) -> bool:
        if verdict is Verdict.VALID:
            return True
        self._refuse(verdict.refusal)
        return False

    def _claim_ok(self, peer: bytes, claim: HomeClaim, now: float, extra_age_s: float = 0.0) -> bool:
        """Is `claim`, sent by `peer`, valid (checked within `peer`'s budget)? A refusal is counted."""
        wall = now + self.wall_offset_s
        return self._ok(self.verifier.check(claim, wall, extra_age_s=extra_age_s, peer=peer, now=now))

    def _sender_ok(self, peer: bytes, env: PeerEnvelope, now: float, extra_age_s: float = 0.0) -> bool:
        """Does `env` carry its sender's valid claim naming its origin? (Mailbox envelopes always carry it.)"""
        if not env.has_claim:
            self._refuse(Refusal.FORGED)
            return False
        return self._claim_ok(peer, env.sender_claim, now, extra_age_s)

    def _renewal(self, claim: HomeClaim, now: float) -> bool:
        """Does the lease (claim.client, claim.home) already hold `claim`, still within its age bound? Its
        signature was checked when it was stored."""
        return self.leases.claim(claim.client, claim.home) == claim and self.verifier.fresh(
            claim, now + self.wall_offset_s
        )

    def claim_ends(self, claim: HomeClaim) -> float:
        """The `now` at which `claim` ages out."""
        return claim.issued_s + self.verifier.age_max_s - self.wall_offset_s

    # -- messages
    def on_lease(self, from_node: bytes, msg: Lease, now: float) -> None:
        handoff = msg.home != from_node
        if handoff and msg.home not in self.ranking.member_set:
            self._refuse(Refusal.FORGED)
            return
        ttl_s = min(msg.ttl_ms / 1000, self.config.lease_ttl_s)
        exhausted = self.verifier.exhausted(from_node, now)  # then only renewals are looked at (rank: ~12 µs a claim)
        for claim in msg.claims:
            client = claim.client
            if self.leaving and (self.handed_off or not (handoff or self.mailbox.entries(client))):
                self.leases_declined += 1
                continue
            renewal = self._renewal(claim, now)
            if exhausted and not renewal:
                self._refuse(Refusal.RATE_LIMITED)
            elif not self.owns(client, from_node):
                self._refuse(Refusal.MALFORMED)
            elif not self.leases.fits(client, msg.home):  # before the check: a full share costs no signature
                self._refuse(Refusal.RATE_LIMITED)
            elif renewal or self._claim_ok(from_node, claim, now):
                expires = min(now + ttl_s, self.claim_ends(claim))
                self.leases.put(client, msg.home, expires, claim)
                self._push_waiting(client, now)

    def on_lease_drop(self, from_node: bytes, msg: LeaseDrop) -> None:
        if msg.home != from_node:
            self._refuse(Refusal.FORGED)
            return
        for client in msg.ids:
            self.leases.drop(client, msg.home)

    def on_lookup(self, from_node: bytes, msg: Lookup, now: float) -> None:
        homes = self.leases.homes(msg.id, now)[:PEER_IDS_MAX]
        self._send(from_node, LookupReply(id=msg.id, homes=homes))

    def on_put(self, from_node: bytes, msg: MailboxPut, now: float) -> None:
        env = msg.env
        if env.origin != from_node:
            self._refuse(Refusal.FORGED)
            return
        if self.handed_off:  # it would be lost when this node exits (module docstring)
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.NOT_OWNER))
            return
        if not self.owns(env.to, from_node):
            self._refuse(Refusal.MALFORMED)
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.NOT_OWNER))
            return
        if not self._puts.take(from_node, now):  # before the claim's check: a put over budget costs no signature
            self._refuse(Refusal.RATE_LIMITED)
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.FULL))
            return
        if not self._sender_ok(from_node, env, now):
            return
        if env.kind is Kind.CALL_HANGUP:
            cancelled = self.mailbox.cancel_call(env.to, env.sender, env.call)
            if cancelled:
                for e in cancelled:
                    self._send(e.env.origin, RelayReceipt(eid=e.env.eid, status=ReceiptStatus.CANCELLED))
                self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.CANCELLED))
                return
        ttl_s = min(msg.ttl_ms / 1000, self.config.mailbox_ttl)
        if self.mailbox.put(env, now + ttl_s) is PutResult.FULL:
            self._refuse(Refusal.RATE_LIMITED)
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.FULL))
            return
        self._push_waiting(env.to, now)
        entry = self.mailbox.get(env.eid)
        if entry is not None and entry.inflight_to is not None:
            entry.told_forwarded = True
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.FORWARDED))
        else:
            self._send(from_node, MailboxEvent(eid=env.eid, status=MailboxStatus.STORED))

    def on_handoff(self, from_node: bytes, msg: Handoff, now: float) -> None:
        env = msg.env
        if self.handed_off:
            return
        if not self.owns(env.to, from_node):
            self._refuse(Refusal.MALFORMED)
        elif not self._puts.take(from_node, now):
            self._refuse(Refusal.RATE_LIMITED)
        elif not self._ok(origin_verdict(self.verifier, env, now + self.wall_offset_s, peer=from_node, now=now)):
            pass
        elif self._sender_ok(from_node, env, now, extra_age_s=self.config.mailbox_ttl):
            ttl_s = min(msg.ttl_ms / 1000, self.config.mailbox_ttl)
            if self.mailbox.put(env, now + ttl_s, shares=from_node == env.origin) is PutResult.STORED:
                self._push_waiting(env.to, now)

    def on_take(self, from_node: bytes, msg: MailboxTake, now: float) -> None:
        """A co-owner says these entries were delivered. Its word is no proof (a hostile owner would erase every
        replica but its own, which it may drop): each such entry that waits is pushed to its recipient's home now,
        and only the home's `delivered` (it remembers what it delivered, `SeenSet`) removes it here; with no live
        lease here it waits for the next one, like any entry."""
        clients: dict[bytes, None] = {}
        for eid in msg.eids:
            entry = self.mailbox.get(eid)
            if entry is not None and self.near(from_node, entry.env.to):
                clients[entry.env.to] = None
        for client in clients:  # one push round per recipient
            self._push_waiting(client, now)

    def on_result(self, from_node: bytes, msg: EnvelopeResult, now: float) -> None:
        entry = self.mailbox.get(msg.eid)
        if entry is None or entry.inflight_to != from_node:
            return
        if msg.status is ResultStatus.DELIVERED:
            self._forget(msg.eid)
            # the home told the origin too; this second path matters when the home-origin link is down
            self._send(entry.env.origin, RelayReceipt(eid=msg.eid, status=ReceiptStatus.DELIVERED))
            for o in self._owners(entry.env.to, self.members):
                if o != self.node_id:
                    self._send(o, MailboxTake(eids=(msg.eid,)))
            return
        self.leases.drop(entry.env.to, from_node)  # not_here: that lease is stale
        self._bounce(entry)
        self._push_waiting(entry.env.to, now)

    # -- failures and membership
    def node_gone(self, node: bytes, now: float, *, dead: bool) -> None:
        """The link to `node` failed (or it died: then its leases go too). Its in-flight pushes go to another home
        of their recipient, or wait for the next lease."""
        if dead:
            self.leases.drop_home(node)
        clients: dict[bytes, None] = {}
        for entry in self.mailbox.inflight_to(node):
            self._bounce(entry)
            clients[entry.env.to] = None
        for client in clients:  # one push round per recipient, not per entry
            self._push_waiting(client, now, avoid=node)

    def _send_leases(self, moved: dict[tuple[bytes, bytes], list[tuple[float, bytes]]], now: float) -> None:
        """Send leases grouped by (to, home): one LEASE per LEASE_CLAIMS_MAX claims instead of one per client.
        A group is sorted by expiry and each LEASE carries its earliest one's time left, so no lease is lengthened
        and a chunk's are shortened by at most the spread of its expiries (the home renews every third of a TTL)."""
        for (to, home), items in moved.items():
            items.sort()
            for i in range(0, len(items), LEASE_CLAIMS_MAX):
                chunk = items[i : i + LEASE_CLAIMS_MAX]
                claims = tuple(c for c in (self.leases.claim(client, home) for _, client in chunk) if c is not None)
                if claims:
                    self._send(to, Lease(home=home, claims=claims, ttl_ms=_ttl_ms(chunk[0][0], now)))

    def members_changed(self, old: Sequence[bytes], new: Sequence[bytes], now: float) -> None:
        """Send every lease and mailbox entry to the owners that did not hold it; drop what we no longer own."""
        moved: dict[tuple[bytes, bytes], list[tuple[float, bytes]]] = {}
        for client, home, exp in list(self.leases.items()):
            before, after = self._owners(client, old), self._owners(client, new)
            for o in after:
                if o not in before and o != self.node_id:
                    moved.setdefault((o, home), []).append((exp, client))
            if self.node_id not in after:
                self.leases.drop(client, home)
        self._send_leases(moved, now)
        for entry in self.mailbox.all_entries():
            before, after = self._owners(entry.env.to, old), self._owners(entry.env.to, new)
            for o in after:
                if o not in before and o != self.node_id:
                    self._send(o, Handoff(env=entry.env, ttl_ms=_ttl_ms(entry.deadline, now)))
            if self.node_id not in after:
                self._forget(entry.env.eid)
        for client in sorted({e.env.to for e in self.mailbox.all_entries()}):
            self._push_waiting(client, now)

    def handoff_all(self, members: Sequence[bytes], now: float) -> None:
        """Graceful leave: push every lease and entry to its owners among `members` (self excluded), then forget."""
        others = [m for m in members if m != self.node_id]
        moved: dict[tuple[bytes, bytes], list[tuple[float, bytes]]] = {}
        for client, home, exp in list(self.leases.items()):
            if home != self.node_id:
                for o in self._owners(client, others):
                    moved.setdefault((o, home), []).append((exp, client))
        self._send_leases(moved, now)
        for entry in self.mailbox.all_entries():
            for o in self._owners(entry.env.to, others):
                self._send(o, Handoff(env=entry.env, ttl_ms=_ttl_ms(entry.deadline, now)))
        self._reset()
        self.leaving = self.handed_off = True

    # -- time
    def tick(self, now: float) -> None:
        timed_out: dict[tuple[bytes, bytes | None], None] = {}  # (recipient, home that did not answer)
        for eid in self._inflight.pop_due(now):
            entry = self.mailbox.get(eid)
            if entry is not None:
                timed_out[(entry.env.to, entry.inflight_to)] = None
                self._bounce(entry)
        for client, failed in timed_out:  # one push round per recipient and home, not per entry
            self._push_waiting(client, now, avoid=failed)
        for entry in self.mailbox.expire(now):
            self._inflight.discard(entry.env.eid)
            self._send(entry.env.origin, RelayReceipt(eid=entry.env.eid, status=ReceiptStatus.EXPIRED))
        self.leases.expire(now)

    def next_deadline(self) -> float:
        return min(self._inflight.next_deadline(), self.mailbox.next_deadline(), self.leases.next_deadline())

    # -- internals
    def _forget(self, eid: bytes) -> None:
        self.mailbox.remove(eid)
        self._inflight.discard(eid)

    def _bounce(self, entry: MailEntry) -> None:
        """The push of `entry` failed: it waits again; an origin told FORWARDED now learns it is queued."""
        entry.inflight_to, entry.inflight_until = None, INF
        self._inflight.discard(entry.env.eid)
        if entry.told_forwarded:
            entry.told_forwarded = False
            self._send(entry.env.origin, MailboxEvent(eid=entry.env.eid, status=MailboxStatus.STORED))

    def _push_waiting(self, client: bytes, now: float, avoid: bytes | None = None) -> None:
        """Push every waiting (not in-flight) entry of `client`, oldest first, to its first live home other than
        `avoid` (a home whose push just timed out or whose link failed: it still holds a lease, and waiting for the
        next lease left queued offers 10-20 s behind a callee that had re-homed elsewhere, docs/performance.md)."""
        entries = self.mailbox.entries(client)
        if not entries:  # the common case (every lease renewal): no need to rank the homes
            return
        homes = self.leases.homes(client, now)
        if avoid is not None:
            homes = tuple(h for h in homes if h != avoid)
        if not homes:
            return
        if len(homes) > 1:  # a home whose link just failed only when there is no other (core.py, rule 12)
            homes = tuple(sorted(homes, key=lambda h: self.is_down(h, now)))
        until = now + self.config.peer_timeout_s
        for entry in entries:
            if entry.inflight_to is None:
                entry.inflight_to, entry.inflight_until = homes[0], until
                self._inflight.push(entry.env.eid, until)
                self._send(homes[0], entry.env)


__all__ = ["Owner", "origin_verdict"]
