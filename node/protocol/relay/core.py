"""The cross-node relay core, sans-IO: routes client envelopes across the federation (docs/protocol.md).

One `RelayCore` per node plays three roles at once: the *origin* (the sender's node, which owes the sender one
terminal receipt), the *owner* (one of the R rendezvous owners of a client id: leases and a mailbox replica), and
the *home* (the node a recipient is connected to). A node may play all three for one envelope; messages to itself
go through an internal loopback queue, so every path is the same whether the parties are one node or three
(except one shortcut with the same outcome: rule 13).
This module is the origin role and the plumbing; the owner role is node/protocol/relay/owner.py, the home role
node/protocol/relay/home.py.

Rules
1. Exactly one terminal receipt per envelope, decided only at the origin. The origin keeps a pending table
   (eid -> sender conn, ref, phase, deadline). The first terminal outcome for an eid wins and removes the entry;
   any later one finds no entry and is dropped. Every phase has a deadline, and every envelope a give-up time
   (mailbox TTL + a few peer timeouts), so nothing waits forever: at the give-up time the origin says `expired`.
2. `eid` is drawn once, at the origin, from the injected rng; retries, replicas and hand-offs reuse it. A home node
   drops repeats of an eid it delivered recently (`SeenSet`), so R replicas give one delivery.
3. Lookup caching: the origin asks all R owners in parallel (LOOKUP), takes the first non-empty answer (or "offline"
   when all answered empty, failed or timed out) and caches it `lookup_cache_s`. A forward that fails (not_here,
   link down, timeout) invalidates the cache and is retried with a fresh lookup, at most `attempts_max` times;
   then the envelope goes to the mailbox.
4. Forwarding goes straight to the home node(s), not through an owner: one hop when the cache is warm. Owners
   forward only what waits in their mailbox.
5. Mailbox entries are replicated: the origin sends MAILBOX_PUT to every owner. Any STORED answer means `queued`;
   a FORWARDED answer (the owner has a lease and pushed it on) sends nothing yet; FULL from every answering owner
   means `rejected: rate_limited`; CANCELLED (a hangup that removed a queued offer) is terminal
   once no owner stored or forwarded it (rule 14).
   Owners push entries to the home node on LEASE and keep each until the home answers `delivered`; the home then
   sends RECEIPT(delivered) to the origin itself. An owner whose entry expires sends RECEIPT(expired).
6. Order of one call: while an envelope to id X waits for a lookup, later envelopes to X wait behind it; while any
   envelope to X is in the mailbox path, later ones to X take the mailbox path too, so they queue behind it at the
   same owners, which push in arrival order over one FIFO link.
7. Owner change: on `members_changed`, leases and mailbox entries are sent (LEASE, HANDOFF) to owners that did not
   hold them before; a node that is no longer an owner drops its copies. Leases of dead nodes are dropped, home
   nodes re-lease their clients to new owners, and everything waiting on a dead node is treated as a failed link.
8. Every table is bounded by config: pending_max, lookup_cache_max, leases_max, mailbox per id and total, seen_max.
9. Authority (docs/protocol.md, "Relay authority"): a client comes online with its home claim (its signed hello);
   leases carry it, envelopes carry the sender's, and the home delivers an envelope "from X" only when it comes
   from X's claimed home (the origin) or from an owner of the recipient pushing a mailbox entry, with X's valid
   claim naming that origin. A connection is closed (`CloseClient`) a lease period before its claim ages out.
10. Budgets (node/protocol/relay/budgets.py): per sender id and per source address at the origin (mailbox
   envelopes also per source address and recipient); per origin node, per sender id and in bytes at the owners,
   and per sender id and per origin node within one recipient's mailbox (node/protocol/relay/owner.py); signature
   checks per peer, for every role (node/protocol/relay/claims.py, `PeerChecks`).
11. Fail-over scans are batched per node: what waits on a node whose link failed (cache entries, lookups, pending
   envelopes, an owner's in-flight pushes) is found by scanning those tables, and that scan runs at most once per
   `UNREACHABLE_RESCAN_S` for one node; another failure within that window is noted and scanned at its end (by
   `tick`). Each failure still bumps the node's claim epoch at once (rule 9: claims go again on the next link).
   A node that is leaving answers nothing for a few seconds while every re-homed client's lease is sent to it, and
   scanning every table for each refused send made a reconnect storm quadratic (docs/performance.md).
12. A node whose link failed is *down* for `peer_timeout_s`, or until a frame from it arrives: the origin does
   not ask it a lookup (an owner that is down counts as having answered empty), takes none of the homes it
   names or that are down as the recipient's, and so sends no forward there (the mailbox path instead, when no
   other home is left); an owner pushes to a down home only when its recipient has no other. The peer link holds
   frames sent during its redial backoff until the next dial (node/protocol/peerlink.py): a forward to a node
   killed a moment ago waited there up to that backoff (0.1 s doubling), and 180-561 clients per 10,000-client
   kill -9 storm were callable 2 s late (docs/performance.md, "Sixth pass").
13. Local delivery: a new envelope whose recipient is homed here and, by a warm lookup cache, nowhere else, with no
   lookup or mailbox envelope to it ahead of it (rule 6), is delivered and receipted within the call that accepted
   it: the home role checks the sender's claim as for any envelope (`Home.deliver_own`), and the origin counts and
   answers it, with no pending entry, peer envelope or loopback messages. That is what the loopback path does,
   step for step and with nothing that could come between its steps, for 39 % less of a node's CPU per same-node
   message (docs/performance.md, "Tenth pass"). When the home refuses it (no connection, an invalid claim), the
   envelope takes the usual path from the start.
14. Cancel by hangup against replicas: the R owners' mailbox replicas need not agree (one owner pushed the offer and
   its home delivered it while another still holds its copy queued, with no lease or before the TAKE hint), so one
   owner's CANCELLED does not say the call was cancelled. A hangup's CANCELLED counts only when no owner asked
   stored or forwarded it: the origin waits for every owner it asked (or the put's deadline); any STORED or
   FORWARDED makes it an ordinary queued envelope (`queued`, then `delivered` or `expired`), and a CANCELLED after
   that is dropped. An owner's RECEIPT `cancelled` for another envelope of the call (the offer, its ice) is held by
   the origin's hangup of that call (same sender, recipient and call, waiting on that owner's answer) and decided
   with it: `cancelled` only when the hangup ends cancelled, else the envelope stays pending (`delivered` or
   `expired` follows). With no such hangup here (it went through another node: the caller re-homed, or it already
   ended otherwise) the RECEIPT `cancelled` is dropped for the same reason. So `cancelled` is said only when every
   owner that answered removed a queued offer (docs/client-protocol.md, receipts; docs/protocol.md, "Cancel by
   hangup"). State: a set of held eids per pending hangup and an index of pending hangups, both within pending_max.
"""

from __future__ import annotations

import enum
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from node.protocol.deadlines import DeadlineHeap
from node.protocol.relay.budgets import OriginBudgets
from node.protocol.relay.claims import ClaimVerifier, HomeClaim, LinkClaims, PeerChecks
from node.protocol.relay.commands import CloseClient, Command, ToClient, ToPeer
from node.protocol.relay.home import Home
from node.protocol.relay.owner import PEERS_TRACKED_MAX, Owner
from node.protocol.relay.push import PushRole
from node.protocol.relay.rendezvous import INF
from node.protocol.settings import PushSection, RelaySection
from node.protocol.webpush import Subscription
from node.protocol.wire.client import Envelope, Kind, Reason, Receipt, Status
from node.protocol.wire.peer import (
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
from node.protocol.wire.push import PushClaim, PushSub, PushUnsub

__all__ = ["CloseClient", "Command", "RelayCore", "RelayStats", "ToClient", "ToPeer"]


@attrs.frozen(kw_only=True, slots=True)
class RelayStats:
    clients: int  # client ids homed here
    connections: int
    pending: int  # envelopes awaiting their terminal receipt at this origin
    leases: int  # leases held as an owner
    mailbox_envelopes: int  # mailbox entries held as an owner
    outcomes: dict[tuple[str, str], int]  # (kind, terminal status) -> count since start
    latencies_s: tuple[float, ...]  # accept -> delivered, samples since the previous stats() call


class Phase(enum.Enum):
    LOOKUP = "lookup"  # waiting behind a lookup of its recipient
    FORWARD = "forward"  # sent to home node(s), awaiting ENVELOPE_RESULT
    MAILBOX = "mailbox"  # MAILBOX_PUT sent to the owners, awaiting MAILBOX_EVENT
    QUEUED = "queued"  # held by owners, awaiting RECEIPT


@attrs.define(kw_only=True, slots=True)
class Pending:
    conn_id: int
    ref: int
    env: PeerEnvelope
    addr: str  # the sender connection's address key (budgets)
    created: float
    give_up: float
    phase: Phase = Phase.LOOKUP
    deadline: float = INF
    awaiting: set[bytes] = attrs.field(factory=set)
    attempts: int = 0
    full: int = 0
    queued_sent: bool = False
    bare: PeerEnvelope | None = None  # env without the sender's claim, for homes that have it
    claim_resent: set[bytes] = attrs.field(factory=set)  # homes that asked for the claim (once each)
    # rule 14, a hangup only: some owner answered CANCELLED, and the envelopes of its call whose owners said
    # RECEIPT cancelled, which wait for this hangup's outcome (eids, in arrival order)
    cancelled: bool = False
    held: dict[bytes, None] = attrs.field(factory=dict)


@attrs.define(kw_only=True, slots=True)
class LookupState:
    awaiting: set[bytes]
    deadline: float
    waiters: list[bytes] = attrs.field(factory=list)  # eids in arrival order
    homes: set[bytes] = attrs.field(factory=set)


_MAIL_PHASES = (Phase.MAILBOX, Phase.QUEUED)
_LOOPBACK_MAX = 1_000_000  # messages to self handled in one call: a guard against a routing loop bug
_LATENCY_SAMPLES_MAX = 4096
# rule 11: one fail-over scan per unreachable node per window. Short against every deadline that the scan cuts
# short (a peer timeout is seconds), long against a storm's sends (thousands a second to one leaving node).
UNREACHABLE_RESCAN_S = 0.05
CallKey = tuple[bytes, bytes, bytes]  # (sender, recipient, call): the envelopes a hangup may cancel (rule 14)


def _call_key(env: PeerEnvelope) -> CallKey:
    return (env.sender, env.to, env.call)


class RelayCore:
    """See the module docstring. Inputs take `now`; outputs are drained with `drain()`."""

    def __init__(
        self,
        *,
        node_id: bytes,
        config: RelaySection,
        rng: random.Random,
        now: float,
        sign: Callable[[bytes], bytes],
        wall_offset_s: float = 0.0,
        push: PushSection | None = None,
    ) -> None:
        """`sign` is the node key's Ed25519 signature (mailbox envelopes carry it); `wall_offset_s` is unix time
        minus `now` (claims carry unix times; `now` is monotonic)."""
        self.node_id = node_id
        self._sign = sign
        self.config = config
        self._rng = rng
        checks = PeerChecks(
            per_s=config.claim_checks_per_peer_per_s,
            burst=config.claim_checks_per_peer_burst,
            keys_max=PEERS_TRACKED_MAX,
            exempt=node_id,
        )
        self.verifier = ClaimVerifier(
            age_max_s=config.claim_age_max_s,
            skew_s=config.claim_skew_s,
            cache_max=config.claim_cache_max,
            checks=checks,
        )
        self._budgets = OriginBudgets(config)
        self._out: list[Command] = []
        self._loop: deque[tuple[bytes, PeerMessage]] = deque()
        self._links = LinkClaims(entries_max=config.claim_cache_max)  # origin (sent) and home (known) sides
        # owner role
        self.owner = Owner(node_id=node_id, config=config, send=self._send, verifier=self.verifier)
        self.owner.is_down = self.is_down
        self.owner.wall_offset_s = wall_offset_s
        self.refused = self.owner.refused  # Refusal -> count, for every role (metrics: Layer.PEER)
        # home role
        self.home = Home(
            node_id=node_id,
            config=config,
            send=self._send,
            emit=self._emit,
            owner=self.owner,
            verifier=self.verifier,
            links=self._links,
            now=now,
        )
        # origin role
        self._pending: dict[bytes, Pending] = {}
        self._pending_heap: DeadlineHeap[bytes] = DeadlineHeap()
        self._lookups: dict[bytes, LookupState] = {}
        self._lookup_heap: DeadlineHeap[bytes] = DeadlineHeap()
        self._in_mailbox: Counter[bytes] = Counter()  # recipient -> pending envelopes in MAILBOX/QUEUED
        self._hangups: dict[CallKey, dict[bytes, None]] = {}  # rule 14: pending call_hangup eids by call
        self._cache: OrderedDict[bytes, tuple[tuple[bytes, ...], float]] = OrderedDict()
        # rule 11: when each node's last fail-over scan ran (within the window), and the scans that wait for its end
        self._unreachable_scanned: dict[bytes, float] = {}
        self._unreachable_due: DeadlineHeap[bytes] = DeadlineHeap()
        self._down: dict[bytes, float] = {}  # rule 12: node -> until when it is down (failed members only)
        # keyed by the members themselves (str enums: they hash as their values); stats() hands out plain strings
        self._outcomes: Counter[tuple[Kind, Status]] = Counter()
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES_MAX)
        # push wake-up (node/protocol/relay/push.py): subscriptions and the one-owner-pushes rule
        self.push = PushRole(
            node_id=node_id,
            config=push or PushSection(),
            relay=config,
            owner=self.owner,
            send=self._send,
            emit=self._emit,
        )

    # ------------------------------------------------------------------ plumbing
    def drain(self) -> list[Command]:
        """Commands produced since the last call, in order. The driver executes them."""
        out, self._out = self._out, []
        return out

    def _emit(self, cmd: Command) -> None:
        self._out.append(cmd)  # not a bound `self._out.append`: drain() replaces the list

    def _send(self, node: bytes, msg: PeerMessage) -> None:
        if node == self.node_id:
            self._loop.append((node, msg))
        else:
            self._out.append(ToPeer(node, msg))

    def _pump(self, now: float) -> None:
        if not self._loop:  # the usual case, after every input: no range() built for nothing
            return
        for _ in range(_LOOPBACK_MAX):
            if not self._loop:
                return
            node, msg = self._loop.popleft()
            self._handle(node, msg, now)
        raise AssertionError("relay loopback did not settle: a routing loop")  # pragma: no cover

    def _owners(self, client: bytes, members: Sequence[bytes] | None = None) -> tuple[bytes, ...]:
        ranking = self.owner.ranking
        return ranking.of(client) if members is None else ranking.under(client, members)

    @property
    def members(self) -> tuple[bytes, ...]:
        return self.owner.members

    def stats(self) -> RelayStats:
        """A snapshot for metrics; `latencies_s` holds the samples since the previous call (they are taken)."""
        lat = tuple(self._latencies)
        self._latencies.clear()
        return RelayStats(
            clients=len(self.home.homed),
            connections=len(self.home.conns),
            pending=len(self._pending),
            leases=len(self.owner.leases),
            mailbox_envelopes=len(self.owner.mailbox),
            outcomes={(str(k), str(s)): n for (k, s), n in self._outcomes.items()},
            latencies_s=lat,
        )

    # ------------------------------------------------------------------ clients on this node
    @property
    def wall_offset_s(self) -> float:
        """Unix time minus `now`: the driver keeps it current (claims carry unix times, `now` is monotonic)."""
        return self.owner.wall_offset_s

    @wall_offset_s.setter
    def wall_offset_s(self, offset_s: float) -> None:
        self.owner.wall_offset_s = offset_s

    def client_online(
        self, conn_id: int, client_id: bytes, now: float, *, claim: HomeClaim, address_key: str = ""
    ) -> None:
        """A connection authenticated as `client_id`; `claim` is its signed hello (node/protocol/relay/claims.py), which
        the session core has verified (so it is vouched for in the claim cache, not verified again),
        `address_key` its source network (node/protocol/ratelimit.address_key), for the per-address budgets."""
        self.home.online(conn_id, client_id, now, claim, address_key)
        self._pump(now)

    def client_offline(self, conn_id: int, now: float) -> None:
        self.home.offline(conn_id, now)
        self._pump(now)

    def client_envelope(self, conn_id: int, env: Envelope, now: float) -> None:
        """A validated envelope from a local connection. Its receipts go back to `conn_id`."""
        conn = self.home.conns.get(conn_id)
        if conn is None:
            return  # the connection went away before its frame was handled: nobody to answer
        sender, addr, claim = conn.client, conn.addr, conn.claim
        if len(self._pending) >= self.config.pending_max or not self._budgets.pending_admit(sender, addr):
            self._settle(conn_id, env.ref, env.kind, Status.REJECTED, 0.0, Reason.RATE_LIMITED)
            return
        eid = self._rng.getrandbits(128).to_bytes(16, "little")  # `randbytes(16)` without its Python frame
        if self._local_only(env.to, now) and self.home.deliver_own(eid, sender, claim, env, now):  # rule 13
            self._settle(conn_id, env.ref, env.kind, Status.DELIVERED, 0.0)
            return
        penv = PeerEnvelope.checked_by_caller(  # every field checked: `env` by the client decoder, the rest ours
            eid=eid,
            origin=self.node_id,
            to=env.to,
            sender=sender,
            kind=env.kind,
            call=env.call,
            body=env.body,
            claim_nonce=claim.nonce,
            claim_sig=claim.sig,
        )
        slack = (self.config.attempts_max + 3) * self.config.peer_timeout_s
        self._pending[eid] = Pending(
            conn_id=conn_id,
            ref=env.ref,
            env=penv,
            addr=addr,
            created=now,
            give_up=now + self.config.mailbox_ttl + slack,
        )
        self._budgets.pending(sender, addr, 1)
        if env.kind is Kind.CALL_HANGUP:
            self._hangups.setdefault(_call_key(penv), {})[eid] = None
        self._route(self._pending[eid], now)
        self._pump(now)

    # ------------------------------------------------------------------ push wake-up (node/protocol/relay/push.py)
    def push_register(self, conn_id: int, sub: Subscription, now: float) -> bool:
        """A local client's push_register; False when it is not online, or the table or its address's share of it
        is full."""
        conn = self.home.conns.get(conn_id)
        ok = conn is not None and self.push.register(conn.claim, sub, now, conn.addr)
        self._pump(now)
        return ok

    def push_unregister(self, conn_id: int, now: float) -> bool:
        conn = self.home.conns.get(conn_id)
        if conn is not None:
            self.push.unregister(conn.client)
        self._pump(now)
        return conn is not None

    def push_gone(self, client: bytes, endpoint: str, now: float) -> None:
        """The push service answered 404/410 for this subscription: forget it everywhere."""
        self.push.gone(client, endpoint)
        self._pump(now)

    # ------------------------------------------------------------------ origin: routing
    def _mail_mode(self, p: Pending) -> bool:
        """Does another envelope to p's recipient take the mailbox path? Then p must queue behind it (rule 6)."""
        return self._in_mailbox.get(p.env.to, 0) > (1 if p.phase in _MAIL_PHASES else 0)  # get: no __missing__

    def _route(self, p: Pending, now: float) -> None:
        to = p.env.to
        if to in self._lookups:
            self._wait_lookup(p, to)
        elif self._mail_mode(p) or p.attempts >= self.config.attempts_max:
            self._mailbox_put(p, now)
        elif to in self.home.homed and (cached := self._cached(to, now)) is not None:
            self._forward(p, (self.node_id, *(h for h in cached if h != self.node_id)), now)
        elif (homes := self._cached(to, now)) is not None:
            self._dispatch(p, homes, now)
        else:
            targets = [o for o in self._owners(to) if not self.is_down(o, now)]  # rule 12
            self._lookups[to] = LookupState(awaiting=set(targets), deadline=now + self.config.peer_timeout_s)
            self._lookup_heap.push(to, now + self.config.peer_timeout_s)
            self._wait_lookup(p, to)
            for o in targets:
                self._send(o, Lookup(id=to))
            if not targets:
                self._lookup_done(to, now)

    def _local_only(self, to: bytes, now: float) -> bool:
        """Rule 13: would a new envelope to `to` be forwarded to this node alone, with nothing ahead of it?"""
        if to not in self.home.homed or to in self._lookups or self._in_mailbox.get(to, 0):
            return False
        cached = self._cached(to, now)  # sorted distinct ids (`_lookup_done`): "all of them are this node" is
        return cached is not None and (not cached or cached == (self.node_id,))  # this, without a generator

    def _wait_lookup(self, p: Pending, to: bytes) -> None:
        self._set_phase(p, Phase.LOOKUP, INF)
        self._lookups[to].waiters.append(p.env.eid)

    def _cached(self, to: bytes, now: float) -> tuple[bytes, ...] | None:
        hit = self._cache.get(to)
        if hit is None or hit[1] <= now:
            return None
        return hit[0]

    def _dispatch(self, p: Pending, homes: tuple[bytes, ...], now: float) -> None:
        if p.env.to in self.home.homed and self.node_id not in homes:
            homes = (self.node_id, *homes)  # a local device, and (looked up) the recipient's devices elsewhere
        if homes and not self._mail_mode(p) and p.attempts < self.config.attempts_max:
            self._forward(p, homes, now)
        else:
            self._mailbox_put(p, now)

    def _forward(self, p: Pending, homes: Iterable[bytes], now: float) -> None:
        self._set_phase(p, Phase.FORWARD, now + self.config.peer_timeout_s)
        p.awaiting = set(homes)
        for h in sorted(p.awaiting):
            self._send(h, self._for_home(h, p))

    def _for_home(self, home: bytes, p: Pending) -> PeerEnvelope:
        """p's envelope, without the sender's claim when that home already has it (docs/protocol.md)."""
        env = p.env
        if home == self.node_id or not self._links.peer_has(home, env.sender, env.claim_nonce):
            return env
        if p.bare is None:
            p.bare = env.without_claim()
        return p.bare

    def _mailbox_put(self, p: Pending, now: float) -> None:
        env = p.env
        if p.phase not in _MAIL_PHASES and not self._budgets.mail_admit(
            p.addr, env.to, len(env.body), hangup=env.kind is Kind.CALL_HANGUP
        ):
            self._finish(p, Status.REJECTED, now, Reason.RATE_LIMITED)
            return
        if not p.env.origin_sig:  # signed once: a home accepts an owner's push only with the origin's signature
            unsigned = attrs.evolve(p.env, expires_ms=max(0, round((p.give_up + self.wall_offset_s) * 1000)))
            p.env = attrs.evolve(unsigned, origin_sig=self._sign(origin_signed_bytes(unsigned)))
        self._set_phase(p, Phase.MAILBOX, now + self.config.peer_timeout_s)
        targets = self._owners(p.env.to)
        p.awaiting, p.full = set(targets), 0
        ttl_ms = max(1, round(self.config.mailbox_ttl * 1000))
        for o in targets:
            self._send(o, MailboxPut(env=p.env, ttl_ms=ttl_ms))

    def _set_phase(self, p: Pending, phase: Phase, deadline: float) -> None:
        delta = (phase in _MAIL_PHASES) - (p.phase in _MAIL_PHASES)
        if delta:
            self._in_mailbox[p.env.to] += delta
            self._budgets.mail(p.addr, p.env.to, len(p.env.body), delta)
        p.phase = phase
        p.deadline = min(deadline, p.give_up)
        self._pending_heap.push(p.env.eid, p.deadline)

    def _retry(self, p: Pending, now: float) -> None:
        p.attempts += 1
        self._cache.pop(p.env.to, None)
        self._route(p, now)

    def _finish(self, p: Pending, status: Status, now: float, reason: Reason | None = None) -> None:
        del self._pending[p.env.eid]
        self._pending_heap.discard(p.env.eid)
        if p.env.kind is Kind.CALL_HANGUP:
            key = _call_key(p.env)
            same = self._hangups.get(key)
            if same is not None:
                same.pop(p.env.eid, None)
                if not same:
                    del self._hangups[key]
            if status is Status.CANCELLED:  # rule 14: what this hangup held is cancelled with it
                for eid in p.held:
                    if (q := self._pending.get(eid)) is not None:
                        self._finish(q, Status.CANCELLED, now)
        self._budgets.pending(p.env.sender, p.addr, -1)
        if p.phase in _MAIL_PHASES:
            self._budgets.mail(p.addr, p.env.to, len(p.env.body), -1)
            self._in_mailbox[p.env.to] -= 1
            if not self._in_mailbox[p.env.to]:
                del self._in_mailbox[p.env.to]
        self._settle(p.conn_id, p.ref, p.env.kind, status, now - p.created, reason)

    def _settle(
        self, conn_id: int, ref: int, kind: Kind, status: Status, latency_s: float, reason: Reason | None = None
    ) -> None:
        """An envelope's terminal outcome: counted, its latency sampled when delivered, its receipt sent to the
        sender's connection if that is still here."""
        self._outcomes[(kind, status)] += 1
        if status is Status.DELIVERED:
            self._latencies.append(latency_s)
        if conn_id in self.home.conns:
            self._out.append(ToClient(conn_id, Receipt(ref=ref, status=status, reason=reason)))

    def _lookup_done(self, to: bytes, now: float) -> None:
        ls = self._lookups.pop(to)
        self._lookup_heap.discard(to)
        live = self.owner.ranking.member_set
        homes = tuple(sorted(h for h in ls.homes if h in live and not self.is_down(h, now)))
        if self.config.lookup_cache_s > 0:
            self._cache[to] = (homes, now + self.config.lookup_cache_s)
            self._cache.move_to_end(to)
            while len(self._cache) > self.config.lookup_cache_max:
                self._cache.popitem(last=False)
        for eid in ls.waiters:
            p = self._pending.get(eid)
            if p is not None and p.phase is Phase.LOOKUP:
                self._dispatch(p, homes, now)

    # ------------------------------------------------------------------ origin: answers
    def _on_lookup_reply(self, from_node: bytes, msg: LookupReply, now: float) -> None:
        ls = self._lookups.get(msg.id)
        if ls is None or from_node not in ls.awaiting:
            return
        ls.awaiting.discard(from_node)
        live = self.owner.ranking.member_set
        ls.homes.update(h for h in msg.homes if h in live and not self.is_down(h, now))
        if ls.homes or not ls.awaiting:
            self._lookup_done(msg.id, now)

    def _on_result(self, from_node: bytes, msg: EnvelopeResult, now: float) -> None:
        p = self._pending.get(msg.eid)
        if p is None:
            return
        if msg.status is ResultStatus.DELIVERED:
            self._finish(p, Status.DELIVERED, now)
        elif msg.status is ResultStatus.NEED_CLAIM and p.phase is Phase.FORWARD and from_node in p.awaiting:
            self._links.resend(from_node, p.env.sender, p.env.claim_nonce)
            if from_node not in p.claim_resent:  # once per home: a home that keeps asking counts as not_here
                p.claim_resent.add(from_node)
                self._links.peer_has(from_node, p.env.sender, p.env.claim_nonce)
                self._send(from_node, p.env)
                return
            p.awaiting.discard(from_node)
            if not p.awaiting:
                self._retry(p, now)
        elif p.phase is Phase.FORWARD and from_node in p.awaiting:
            p.awaiting.discard(from_node)
            if not p.awaiting:
                self._retry(p, now)

    def _on_mailbox_event(self, from_node: bytes, msg: MailboxEvent, now: float) -> None:
        p = self._pending.get(msg.eid)
        if p is None or p.phase not in (Phase.MAILBOX, Phase.QUEUED):
            return
        p.awaiting.discard(from_node)
        if msg.status is MailboxStatus.NOT_OWNER:  # that owner's member view differs: as if it failed
            self._mailbox_settled(p, now)
        elif msg.status is MailboxStatus.CANCELLED:  # rule 14: counts once no owner asked stored or forwarded it
            p.cancelled = p.cancelled or p.env.kind is Kind.CALL_HANGUP  # owners cancel nothing else
            self._mailbox_settled(p, now)
        elif msg.status in (MailboxStatus.STORED, MailboxStatus.FORWARDED):
            if p.phase is Phase.MAILBOX:
                p.held.clear()  # rule 14: an owner stored this hangup, so the call was not cancelled
                self._set_phase(p, Phase.QUEUED, now + self.config.mailbox_ttl + self.config.peer_timeout_s)
            if msg.status is MailboxStatus.STORED and not p.queued_sent:
                p.queued_sent = True
                if p.conn_id in self.home.conns:
                    self._out.append(ToClient(conn_id=p.conn_id, msg=Receipt(ref=p.ref, status=Status.QUEUED)))
        else:  # FULL
            p.full += 1
            self._mailbox_settled(p, now)

    def _mailbox_settled(self, p: Pending, now: float) -> None:
        """Every owner asked has answered CANCELLED, FULL or failed, none STORED or FORWARDED: cancelled if any
        cancelled (rule 14), else rejected if any was full, else wait for the deadline."""
        if p.phase is Phase.MAILBOX and not p.awaiting:
            if p.cancelled:
                self._finish(p, Status.CANCELLED, now)
            elif p.full:
                self._finish(p, Status.REJECTED, now, Reason.RATE_LIMITED)

    def _on_receipt(self, from_node: bytes, msg: RelayReceipt, now: float) -> None:
        p = self._pending.get(msg.eid)
        if p is None:
            return
        if msg.status is not ReceiptStatus.CANCELLED:
            self._finish(p, Status(msg.status.value), now)
            return
        # rule 14: held by this call's hangup that still waits for that owner's answer; else dropped
        if p.phase not in _MAIL_PHASES:
            return
        for eid in self._hangups.get(_call_key(p.env), ()):
            h = self._pending[eid]
            if eid != p.env.eid and h.phase is Phase.MAILBOX and from_node in h.awaiting:
                h.held[p.env.eid] = None
                return

    def _on_timeout(self, p: Pending, now: float) -> None:
        if now >= p.give_up or p.phase is Phase.QUEUED:
            self._finish(p, Status.EXPIRED, now)
        elif p.phase is Phase.FORWARD:
            p.awaiting.clear()
            self._retry(p, now)
        elif p.phase is Phase.MAILBOX:
            p.awaiting.clear()
            if p.cancelled:  # rule 14: the owners that did not answer in time count as not having stored it
                self._finish(p, Status.CANCELLED, now)
            elif p.full:
                self._finish(p, Status.REJECTED, now, Reason.RATE_LIMITED)
            else:  # no owner answered at all: try again with the (maybe new) owners, within the give-up time
                p.attempts += 1
                self._mailbox_put(p, now)

    # ------------------------------------------------------------------ home: envelopes for local clients
    # ------------------------------------------------------------------ federation
    def peer_message(self, from_node: bytes, msg: PeerMessage, now: float) -> None:
        """A decoded relay frame from an authenticated member. Frames from non-members are ignored."""
        if from_node not in self.owner.ranking.member_set:
            return
        if self._down:
            self._down.pop(from_node, None)  # rule 12: its link is up again
        self._handle(from_node, msg, now)
        self._pump(now)

    def _handle(self, from_node: bytes, msg: PeerMessage, now: float) -> None:
        match msg:
            case PeerEnvelope():
                self.home.on_envelope(from_node, msg, now)
            case EnvelopeResult():
                self.owner.on_result(from_node, msg, now)
                self._on_result(from_node, msg, now)
            case Lease():
                self.owner.on_lease(from_node, msg, now)
            case LeaseDrop():
                self.owner.on_lease_drop(from_node, msg)
            case Lookup():
                self.owner.on_lookup(from_node, msg, now)
            case LookupReply():
                self._on_lookup_reply(from_node, msg, now)
            case MailboxPut():
                self.owner.on_put(from_node, msg, now)
                self.push.on_put(msg.env, now)
            case MailboxTake():
                self.owner.on_take(from_node, msg, now)
            case MailboxEvent():
                self._on_mailbox_event(from_node, msg, now)
            case Handoff():
                self.owner.on_handoff(from_node, msg, now)
            case RelayReceipt():
                self._on_receipt(from_node, msg, now)
            case PushSub() | PushUnsub() | PushClaim():
                self.push.on_message(from_node, msg, now)

    def peer_unreachable(self, node: bytes, now: float) -> None:
        """The link to `node` is down or a send to it failed: whatever waits on it fails over now, or, when it was
        scanned for less than `UNREACHABLE_RESCAN_S`, at the end of that window (rule 11)."""
        if node in self.owner.ranking.member_set and node != self.node_id:
            self._down[node] = now + self.config.peer_timeout_s  # rule 12
        last = self._unreachable_scanned.get(node)
        if last is not None and now - last < UNREACHABLE_RESCAN_S:
            self._links.forget_peer(node)  # at once (rule 11); the scan below does it too
            if node not in self._unreachable_due:
                self._unreachable_due.push(node, last + UNREACHABLE_RESCAN_S)
            return
        self._unreachable_scanned[node] = now
        self._node_failed(node, now, dead=False)
        self._pump(now)

    def is_down(self, node: bytes, now: float) -> bool:
        """Rule 12: did the link to `node` fail less than `peer_timeout_s` ago, with no frame from it since?"""
        until = self._down.get(node)
        if until is None:
            return False
        if until <= now:
            del self._down[node]
            return False
        return True

    def _rescan_unreachable(self, now: float) -> None:
        for node in self._unreachable_due.pop_due(now):
            self._unreachable_scanned[node] = now
            self._node_failed(node, now, dead=False)
        for node in [n for n, t in self._unreachable_scanned.items() if now - t >= UNREACHABLE_RESCAN_S]:
            if node not in self._unreachable_due:
                del self._unreachable_scanned[node]  # bounded: only nodes that failed within the window

    def _node_failed(self, node: bytes, now: float, *, dead: bool) -> None:
        self._links.forget_peer(node)
        self.owner.node_gone(node, now, dead=dead)
        self.push.node_failed(node, now)
        for to in [t for t, (homes, _) in self._cache.items() if node in homes]:
            del self._cache[to]
        for to, ls in list(self._lookups.items()):
            if node in ls.awaiting:
                ls.awaiting.discard(node)
                if not ls.awaiting:
                    self._lookup_done(to, now)
        for p in list(self._pending.values()):
            if node not in p.awaiting or p.env.eid not in self._pending:
                continue
            p.awaiting.discard(node)
            if p.phase is Phase.FORWARD and not p.awaiting:
                self._retry(p, now)
            elif p.phase is Phase.MAILBOX:
                self._mailbox_settled(p, now)

    def members_changed(self, live: Sequence[bytes], now: float) -> None:
        """The live member ids from SWIM (self is always included). Moves records to new owners."""
        old = self.owner.members
        new = tuple(sorted(set(live) | {self.node_id}))
        if new == old:
            return
        self.home.send_drops()  # to the owners they were leased to
        self.owner.members = new  # the one copy of the member list (the owners' ranking uses it)
        for node in sorted(set(old) - set(new)):
            self._down.pop(node, None)
            self._node_failed(node, now, dead=True)
        self.home.members_changed(old)
        self.owner.members_changed(old, new, now)
        self.push.members_changed(old, new, now)
        self._pump(now)

    def begin_leave(self) -> None:
        """A graceful stop has begun: the owner role declines new leases (node/protocol/relay/owner.py)."""
        self.owner.leaving = True

    def handoff_all(self, now: float) -> None:
        """Graceful leave: push leases and mailboxes to the next owners (computed without this node); from now on
        the owner role takes no mail (node/protocol/relay/owner.py)."""
        self.owner.handoff_all(self.owner.members, now)
        self._pump(now)

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> None:
        if self._unreachable_scanned:
            self._rescan_unreachable(now)
        for to in self._lookup_heap.pop_due(now):
            if to in self._lookups:
                self._lookups[to].awaiting.clear()
                self._lookup_done(to, now)
        while due := self._pending_heap.pop_due(now):
            for eid in due:
                p = self._pending.get(eid)
                if p is not None:
                    self._on_timeout(p, now)
        self.home.tick(now)
        self.owner.tick(now)
        self.push.tick(now)
        self._pump(now)

    def next_deadline(self) -> float:
        """The earliest time `tick` has work (inf when none)."""
        return min(
            self._pending_heap.next_deadline(),
            self._lookup_heap.next_deadline(),
            self._unreachable_due.next_deadline(),
            self.home.next_deadline(),
            self.owner.next_deadline(),
            self.push.next_deadline(),
        )
