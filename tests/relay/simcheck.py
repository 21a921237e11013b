"""Invariant checks over a RelaySim run, shared by the stateful test and the scenario tests."""

from __future__ import annotations

import attrs

from node.protocol.settings import RelaySection
from node.protocol.wire.client import Envelope, Kind, Status
from node.testing.relaysim import RelaySim

TERMINAL = {Status.DELIVERED, Status.EXPIRED, Status.CANCELLED, Status.REJECTED}

# Short timers so a whole scenario takes a few hundred simulated steps.
# A recipient's mailbox holds 8; its shares per sender and per origin (24 and 32 by default) are then the whole of it.
SIM_CONFIG = attrs.evolve(
    RelaySection(),
    mailbox_ttl=5.0,
    lease_ttl_s=6.0,
    peer_timeout_s=0.5,
    lookup_cache_s=1.0,
    mailbox_per_id_max=8,
)
# Longer than any envelope may wait for its terminal receipt (mailbox TTL + the give-up slack).
SETTLE_S = SIM_CONFIG.mailbox_ttl + (SIM_CONFIG.attempts_max + 4) * SIM_CONFIG.peer_timeout_s


@attrs.define(kw_only=True, slots=True)
class Sent:
    conn: int
    ref: int
    to: bytes
    kind: Kind
    call: bytes
    body: bytes
    at: float


class Tracker:
    """Sends envelopes with unique bodies and checks the relay's promises against what clients observed."""

    def __init__(self, sim: RelaySim) -> None:
        self.sim = sim
        self.sent: list[Sent] = []
        self._ref = 0

    def send(self, conn: int, to: bytes, kind: Kind, call: bytes) -> Sent:
        self._ref += 1
        body = b"body-%d-%d" % (conn, self._ref)
        s = Sent(conn=conn, ref=self._ref, to=to, kind=kind, call=call, body=body, at=self.sim.now)
        self.sent.append(s)
        self.sim.send(conn, Envelope(kind=kind, to=to, call=call, body=body, ref=self._ref))
        return s

    def statuses(self, s: Sent) -> list[Status]:
        return [r.status for r in self.sim.receipts[s.conn] if r.ref == s.ref]

    def terminal(self, s: Sent) -> Status | None:
        t = [x for x in self.statuses(s) if x in TERMINAL]
        return t[0] if t else None

    def deliveries(self, s: Sent) -> list[tuple[int, bytes]]:
        """(conn, eid) of every delivery of this envelope."""
        return [(c, d.eid) for c, ds in self.sim.delivered.items() for d in ds if d.body == s.body]

    def check_safety(self) -> None:
        """At any moment: at most one terminal receipt, `queued` at most once and before it; one eid per envelope."""
        for s in self.sent:
            st = self.statuses(s)
            seed = self.sim.seed
            assert sum(x in TERMINAL for x in st) <= 1, f"seed={seed}: ref {s.ref} got {st}"
            assert st.count(Status.QUEUED) <= 1, f"seed={seed}: ref {s.ref} got {st}"
            if Status.QUEUED in st and len(st) == 2:
                assert st[0] is Status.QUEUED, f"seed={seed}: ref {s.ref} got {st}"
            eids = {eid for _, eid in self.deliveries(s)}
            assert len(eids) <= 1, f"seed={seed}: envelope {s.body!r} delivered under {len(eids)} eids"
            if self.terminal(s) is Status.DELIVERED:
                assert eids, f"seed={seed}: ref {s.ref} receipted delivered but never delivered"

    def check_liveness(self) -> None:
        """After settling: every envelope whose sender is still connected has its one terminal receipt."""
        for s in self.sent:
            conn = self.sim.conns[s.conn]
            if conn.online and self.sim.now >= s.at + SETTLE_S:
                assert self.terminal(s) is not None, f"seed={self.sim.seed}: ref {s.ref} never finished: {s}"
