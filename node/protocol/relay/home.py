"""The home role of a node, pure: its clients' connections, their leases at the owners, and delivering envelopes.

- A connection comes online with its home claim (its signed hello, node/protocol/relay/claims.py) and its source
  address key. The first connection of an id leases it to the id's owners with the newest claim among its
  connections; leases are renewed every `lease_ttl_s / 3`, in `RENEW_SLICES` slices spread over that period
  (renewing 19,000 clients at once held the event loop for a noticeable time every period); the last
  connection's end sends LEASE_DROP, batched: the ids that went offline are sent at the next `tick` (the driver's
  timer runs it at the end of the scheduler batch), up to PEER_IDS_MAX per owner and frame. One frame per id
  filled the peer link's queue when 10,000 clients left a stopping node at once, and the drops it refused left
  stale leases at the owners (docs/performance.md, "Fourth pass"). An id that comes back online first is not
  dropped.
- A connection is closed (`CloseClient`) one lease period before its claim ages out (`claim_age_max_s`), so its
  client reconnects with a fresh claim instead of silently losing its leases.
- An envelope "from X" is delivered only when it comes from the origin named in X's valid claim, or from a node
  within the top 2R owners of the recipient (a mailbox push) with the origin's valid, unexpired signature. A claim
  left out by an origin that sent it before is taken from `LinkClaims`; a forgotten one is asked for (`need_claim`).
- Each eid is delivered once (`SeenSet`, keyed by origin and eid: another origin's envelope cannot use it up),
  remembered past any origin's give-up time.
- An envelope between two clients of this node, to a recipient homed nowhere else, is delivered by `deliver_own`
  without a peer envelope (rule 13 of node/protocol/relay/core.py): same checks, no eid to remember, since its
  origin settles it at once and never sends it again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

import attrs

from node.protocol.deadlines import DeadlineHeap
from node.protocol.refusals import Refusal
from node.protocol.relay.claims import ClaimVerifier, HomeClaim, LinkClaims, Verdict
from node.protocol.relay.commands import CloseClient, Command, ToClient
from node.protocol.relay.owner import Owner, origin_verdict
from node.protocol.relay.rendezvous import INF, SeenSet
from node.protocol.settings import RelaySection
from node.protocol.wire.client import Deliver, Envelope
from node.protocol.wire.peer import (
    LEASE_CLAIMS_MAX,
    PEER_IDS_MAX,
    EnvelopeResult,
    Lease,
    LeaseDrop,
    PeerEnvelope,
    PeerMessage,
    ReceiptStatus,
    RelayReceipt,
    ResultStatus,
)

RENEW_SLICES = 10  # a renewal period's clients are leased in this many slices, one every period / RENEW_SLICES


@attrs.define(kw_only=True, slots=True)
class _Renewal:
    """The renewal period in progress: its clients in homing order, the next one's index, and the slice size."""

    clients: list[bytes]
    at: int = 0
    chunk: int = 1


@attrs.define(kw_only=True, slots=True)
class Conn:
    client: bytes
    claim: HomeClaim  # the client's signed hello: "client was at this node at time t"
    addr: str  # the connection's address key (/32, /64): per-address budgets at the origin


class Home:
    """See the module docstring. `send` queues a peer message, `emit` a command for the driver."""

    def __init__(
        self,
        *,
        node_id: bytes,
        config: RelaySection,
        send: Callable[[bytes, PeerMessage], None],
        emit: Callable[[Command], None],
        owner: Owner,
        verifier: ClaimVerifier,
        links: LinkClaims,
        now: float,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self._send = send
        self._emit = emit
        self._owner = owner
        self._verifier = verifier
        self._links = links
        self.conns: dict[int, Conn] = {}
        self.homed: dict[bytes, set[int]] = {}
        self._closing: DeadlineHeap[int] = DeadlineHeap()  # conn -> when its claim is too old to renew leases
        self._seen = SeenSet(seen_max=config.seen_max)
        # eids that came as mailbox pushes (another node's copy of an origin-signed envelope): remembered for as long
        # as that signature is taken here, its expiry plus the clock skew allowed (see on_envelope)
        self._seen_pushed = SeenSet(seen_max=config.seen_max)
        # how long a delivered eid is remembered: past the origin's give-up time (see on_envelope)
        self._seen_s = config.mailbox_ttl + (config.attempts_max + 4) * config.peer_timeout_s
        self._renewal = _Renewal(clients=[])
        self._dropping: dict[bytes, None] = {}  # ids gone offline, in order, for the next send_drops()
        self._drops_at = INF  # when the first of them went offline
        self._renew_at = now + config.lease_ttl_s / 3 / RENEW_SLICES

    def _owners(self, client: bytes, members: Sequence[bytes] | None = None) -> tuple[bytes, ...]:
        ranking = self._owner.ranking
        return ranking.of(client) if members is None else ranking.under(client, members)

    # -- connections
    def online(self, conn_id: int, client_id: bytes, now: float, claim: HomeClaim, address_key: str) -> None:
        if conn_id in self.conns:
            return
        if claim.client != client_id or claim.home != self.node_id:
            self._owner.refused[Refusal.FORGED] += 1
            self._emit(CloseClient(conn_id=conn_id))
            return
        self._verifier.vouch(claim)  # the session verified this hello before calling it a home claim
        self.conns[conn_id] = Conn(client=client_id, claim=claim, addr=address_key)
        self._closing.push(conn_id, max(now, self._owner.claim_ends(claim) - self.config.lease_ttl_s))
        first = client_id not in self.homed
        self._dropping.pop(client_id, None)  # back before its drop went out: the lease below stands
        self.homed.setdefault(client_id, set()).add(conn_id)
        if first:
            self._lease([client_id], self._owners(client_id))

    def offline(self, conn_id: int, now: float) -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self._closing.discard(conn_id)
        conns = self.homed[conn.client]
        conns.discard(conn_id)
        if not conns:
            del self.homed[conn.client]
            if not self._dropping:
                self._drops_at = now
            self._dropping[conn.client] = None

    def send_drops(self) -> None:
        """LEASE_DROP every id that went offline since the last call: one frame per owner per PEER_IDS_MAX ids."""
        if not self._dropping:
            return
        by_owner: dict[bytes, list[bytes]] = {}
        for client in self._dropping:
            for o in self._owners(client):
                by_owner.setdefault(o, []).append(client)
        self._dropping.clear()
        for o, ids in sorted(by_owner.items()):
            for i in range(0, len(ids), PEER_IDS_MAX):
                self._send(o, LeaseDrop(home=self.node_id, ids=tuple(ids[i : i + PEER_IDS_MAX])))

    # -- leases
    def _claim_of(self, client: bytes) -> HomeClaim:
        """The newest claim among `client`'s connections here (runs for every client at every lease renewal)."""
        conns = self.homed[client]
        if len(conns) == 1:
            for c in conns:
                return self.conns[c].claim
        return max((self.conns[c].claim for c in conns), key=lambda k: (k.issued_s, k.nonce))

    def _lease(self, clients: Iterable[bytes], targets: Iterable[bytes]) -> None:
        claims = tuple(self._claim_of(c) for c in clients)
        ttl_ms = max(1, round(self.config.lease_ttl_s * 1000))
        for o in targets:
            for i in range(0, len(claims), LEASE_CLAIMS_MAX):
                self._send(o, Lease(home=self.node_id, claims=claims[i : i + LEASE_CLAIMS_MAX], ttl_ms=ttl_ms))

    def _renew(self, now: float) -> None:
        """Lease the next slice of this period's clients (a new period starts with the clients homed now)."""
        r = self._renewal
        if r.at >= len(r.clients):
            r.clients, r.at = list(self.homed), 0
            r.chunk = max(1, -(-len(r.clients) // RENEW_SLICES))
        by_owner: dict[bytes, list[bytes]] = {}
        for client in r.clients[r.at : r.at + r.chunk]:
            if client in self.homed:  # gone since the period began: its LEASE_DROP was sent
                for o in self._owners(client):
                    by_owner.setdefault(o, []).append(client)
        r.at += r.chunk
        if r.at >= len(r.clients):
            r.clients = []  # do not hold the ids past their period
        for o, clients in sorted(by_owner.items()):
            self._lease(clients, [o])
        self._renew_at = now + self.config.lease_ttl_s / 3 / RENEW_SLICES

    def members_changed(self, old: Sequence[bytes]) -> None:
        """Lease every client to its owners that were not owners under `old`: one LEASE per new owner (in chunks of
        LEASE_CLAIMS_MAX), not one per client and owner (a node that leaves moves thousands of clients at once)."""
        gained: dict[bytes, list[bytes]] = {}
        for client in sorted(self.homed):
            before = self._owners(client, old)
            for o in self._owners(client):
                if o not in before:
                    gained.setdefault(o, []).append(client)
        for o, clients in gained.items():
            self._lease(clients, [o])

    # -- envelopes
    def _sender_claim(self, from_node: bytes, env: PeerEnvelope) -> tuple[bytes, bytes] | None:
        """The sender's claim (nonce, sig): carried, or learned earlier from this origin (None: ask for it)."""
        if env.has_claim:
            return env.claim_nonce, env.claim_sig
        return self._links.known(from_node, env.sender) if from_node == env.origin else None

    def _authorised(self, from_node: bytes, env: PeerEnvelope, claim: tuple[bytes, bytes], now: float) -> Verdict:
        """The sender's claim, and for a mailbox push by an owner the origin's signature, each checked within
        `from_node`'s check budget."""
        if from_node != env.origin:
            if not self._owner.near(from_node, env.to):
                return Verdict.FORGED
            wall = now + self._owner.wall_offset_s
            pushed = origin_verdict(self._verifier, env, wall, peer=from_node, now=now)
            if pushed is not Verdict.VALID:
                return pushed
        return self._sender_verdict(from_node, env.sender, env.origin, claim, now)

    def _sender_verdict(
        self, from_node: bytes, sender: bytes, origin: bytes, claim: tuple[bytes, bytes], now: float
    ) -> Verdict:
        """Is `claim` (nonce, sig) `sender`'s valid claim naming `origin`, within `from_node`'s check budget?"""
        wall = now + self._owner.wall_offset_s
        return self._verifier.check_parts(
            sender, origin, *claim, wall, extra_age_s=self.config.mailbox_ttl, peer=from_node, now=now
        )

    def _deliver(self, conns: Collection[int], msg: Deliver) -> None:
        for conn in conns if len(conns) == 1 else sorted(conns):  # in order; one connection needs no sort
            self._emit(ToClient(conn, msg))

    def _admit(self, from_node: bytes, env: PeerEnvelope, now: float) -> bool:
        claim = self._sender_claim(from_node, env)
        if claim is None and from_node == env.origin:
            self._send(from_node, EnvelopeResult.of(env, ResultStatus.NEED_CLAIM))
            return False
        verdict = Verdict.FORGED if claim is None else self._authorised(from_node, env, claim, now)
        if claim is None or verdict is not Verdict.VALID:
            self._owner.refused[verdict.refusal] += 1
            return False
        if from_node == env.origin and env.has_claim and from_node != self.node_id:  # own envelopes keep theirs
            self._links.learn(from_node, env.sender, *claim)
        return True

    def on_envelope(self, from_node: bytes, env: PeerEnvelope, now: float) -> None:
        # an eid is drawn by its origin and means nothing across origins: keyed by both, another member cannot spend
        # an honest envelope's eid (learned as its owner) on one of its own so that the real one counts as a repeat
        key = env.origin + env.eid
        seen = key in self._seen or key in self._seen_pushed
        if not seen and not self._admit(from_node, env, now):
            return
        conns = self.homed.get(env.to)
        if not conns and not seen:
            self._send(from_node, EnvelopeResult.of(env, ResultStatus.NOT_HERE))
            return
        # remembered past the origin's give-up time, so a replayed mailbox envelope is never delivered twice; its
        # signature's expiry is that give-up time on the origin's clock, taken here up to `claim_skew_s` late and
        # from a clock up to as much ahead, so a pushed eid is remembered twice the skew longer (before, an owner
        # that kept a copy could have it delivered again from 74 s to 372 s after it was sent)
        if from_node != env.origin:
            self._seen_pushed.add(key, now + self._seen_s + 2 * self._verifier.skew_s)
        if not seen:
            if from_node == env.origin:
                self._seen.add(key, now + self._seen_s)
            msg = Deliver(kind=env.kind, sender=env.sender, call=env.call, body=env.body, eid=env.eid)
            self._deliver(conns or (), msg)
        self._send(from_node, EnvelopeResult.of(env, ResultStatus.DELIVERED))
        if from_node != env.origin:
            self._send(env.origin, RelayReceipt(eid=env.eid, status=ReceiptStatus.DELIVERED))

    def deliver_own(self, eid: bytes, sender: bytes, claim: HomeClaim, env: Envelope, now: float) -> bool:
        """Deliver `env` from `sender`, a client on this node, to its connections here (rule 13 of
        node/protocol/relay/core.py): what `on_envelope` does for an envelope this node originated, checked the
        same way. False, with nothing done, when the recipient has no connection here or the claim is not valid
        (the origin then takes its usual path, which decides what that means)."""
        conns = self.homed.get(env.to)
        me = self.node_id
        if not conns or self._sender_verdict(me, sender, me, (claim.nonce, claim.sig), now) is not Verdict.VALID:
            return False
        self._deliver(conns, Deliver(kind=env.kind, sender=sender, call=env.call, body=env.body, eid=eid))
        return True

    # -- time
    def tick(self, now: float) -> None:
        self.send_drops()
        for conn_id in self._closing.pop_due(now):
            self._emit(CloseClient(conn_id=conn_id))
        self._seen.expire(now)
        self._seen_pushed.expire(now)
        if now >= self._renew_at:
            self._renew(now)

    def next_deadline(self) -> float:
        if self._dropping:
            return self._drops_at  # due now: the driver's timer runs it at the end of this scheduler batch
        return min(
            self._closing.next_deadline(),
            self._seen.next_deadline(),
            self._seen_pushed.next_deadline(),
            self._renew_at,
        )
