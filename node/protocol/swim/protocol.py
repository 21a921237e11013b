"""The sans-IO SWIM core (with Lifeguard).

Contract (after h11): the driver feeds the core with `receive(...)` for each authenticated datagram, `tick(now)`
when `next_deadline()` has passed, and the results of push-pull syncs with `merge_push_pull(...)`; after each
call it `drain()`s the commands (Send, PushPull, MemberChanged, ProbeResult) and carries them out in order.
The core never does I/O, never reads a clock (every input carries `now`, monotonic seconds) and draws every
random choice from the injected `random.Random`, so a seed and a sequence of inputs reproduce a run exactly.

Theory of operation:
- Probing: every (scaled) probe interval the next member of a shuffled round-robin ring gets a PING. No ACK
  within the (scaled) probe timeout: PING_REQ to k random ALIVE members, who ping the target and forward its
  ACK, or send a NACK when their own ping fails (Lifeguard). No ACK by the end of the probe interval: the
  target becomes SUSPECT (or our failed probe confirms an existing suspicion).
- Suspicion: a timer per suspect, from max towards min as independent accusers confirm (suspicion.py). When it
  fires the member is declared DEAD. A member refutes any suspicion or death of itself by bumping its incarnation.
- Dissemination: every state change is queued (broadcasts.py) and piggybacked on every datagram, up to the
  datagram budget; a gossip round every gossip interval sends queued updates to a few random members (recently
  dead ones included). Push-pull syncs the whole table with one random member now and then, on join with a seed,
  and (to heal partitions) with a random DEAD member.
- Local health (awareness.py) scales the probe interval and timeouts.
- Records only the member can change (merging.py, records.py, docs/swim.md "Hostile members"): alive/left
  records are signed by their member and verified (once each) before they are merged; suspect/dead claims count
  only at the incarnation the member signed and as the accusation of the accuser that signed them (merging.py
  A1-A4: a DEAD claim is one accusation, never a death at once), start at most a suspicion, and each sender may
  start only so many suspicions (claims_per_sender_*); a member's own new records are verified within a budget
  per member, refutations exempt (merging.py R1-R4).
Dead and left members are forgotten after dead_reclaim_s, their last incarnation remembered (FORGOTTEN_MAX) so
that a replay of an old record cannot bring them back; a node's first incarnation is its boot epoch (docs/swim.md
"Boot epochs and replays"). Admission (`admit`) is checked for every new member.
"""

from __future__ import annotations

import operator
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping

import attrs

from node.protocol.ratelimit import ForgeryBudget, KeyedBuckets
from node.protocol.swim.awareness import Awareness
from node.protocol.swim.broadcasts import BroadcastQueue
from node.protocol.swim.config import SwimConfig
from node.protocol.swim.members import LIVE, MemberTable, ProbeRing
from node.protocol.swim.merging import CLAIMS, FORGOTTEN_MAX, Merging, SwimStats
from node.protocol.swim.messages import (
    Ack,
    Address,
    Command,
    Gossip,
    MemberChanged,
    MemberInfo,
    MemberState,
    Nack,
    Ping,
    PingReq,
    ProbeResult,
    PushPull,
    PushPullState,
    Send,
    StreamPing,
    SwimMessage,
    Update,
)
from node.protocol.swim.records import RecordVerifier, SignFn, accusation_bytes, sign_record
from node.protocol.swim.suspicion import Suspicions
from node.protocol.wire import Limits
from node.protocol.wire.swim import INCARNATION_MAX, UPDATE_MIN_SIZE, piggyback_budget, update_size

__all__ = [
    "Address",
    "Command",
    "MemberChanged",
    "MemberInfo",
    "MemberState",
    "ProbeResult",
    "PushPull",
    "PushPullState",
    "Send",
    "StreamPing",
    "Swim",
    "SwimMessage",
    "SwimStats",
]

GOSSIP_NEW_FROM_SYNC_MAX = 8  # see merge_push_pull
# Datagrams another member makes us send (acks to its pings, and for a ping-req of its: the relayed ping, the
# forwarded ack or the nack) carry our queued updates only this often for that member: REPLY_UPDATES_BURST at once,
# then one per probe interval. Each update is sent `retransmit_limit` times in all, so a member that pinged us
# fast got every transmit of every new update (a refutation included) in acks it then dropped; honest members then
# heard of it only by direct contact, and declared a refuted member dead. An honest member pings us about once per
# probe round (N probe intervals), plus its relays for others. Beyond the budget the datagram goes without them.
REPLY_UPDATES_BURST = 2
ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
_state_of = operator.attrgetter("state")


@attrs.define(slots=True)
class _Probe:
    seq: int
    target: bytes
    timeout_at: float  # direct ack expected by then
    deadline: float  # end of the probe period: any ack by then, else suspect
    indirect: bool = False
    asked: tuple[bytes, ...] = ()
    nacks: set[bytes] = attrs.Factory(set)


@attrs.define(slots=True)
class _Relay:
    target: bytes  # the only member whose Ack we forward
    origin_id: bytes
    origin_addr: Address
    origin_seq: int
    nack: bool
    deadline: float


class Swim(Merging):
    """One node's SWIM state machine. See the module docstring for the contract."""

    def __init__(
        self,
        *,
        self_id: bytes,
        addr: Address,
        meta: bytes,
        config: SwimConfig,
        rng: random.Random,
        now: float,
        admit: Callable[[bytes], bool],
        sign: SignFn,
        verifier: RecordVerifier,
        incarnation: int = 0,
    ) -> None:
        """`incarnation` is the boot epoch: the node's start time in ms, never going back across restarts
        (node/app/service.py `next_epoch_ms`), so every record of this boot supersedes every record of the ones
        before (docs/swim.md "Boot epochs and replays"). 0 for tests and the simulator, which never restart."""
        if not 0 <= incarnation <= INCARNATION_MAX // 2:
            raise ValueError("boot incarnation out of range")
        self.config = config
        self.stats = SwimStats()
        self._rng = rng
        self._admit = admit
        self._id = self_id
        self._sign = sign
        self._verifier = verifier
        self._self = sign_record(
            MemberInfo(id=self_id, addr=addr, meta=meta, incarnation=incarnation, state=ALIVE), sign
        )
        # per-sender budgets: suspicions/deaths a sender may start here, forged records we verify for it
        self._claim_budget: KeyedBuckets[bytes] = KeyedBuckets(
            config.claims_per_sender_per_s, config.claims_per_sender_burst, config.members_max
        )
        self._forged_budget: ForgeryBudget[bytes] = ForgeryBudget(config.members_max)
        # per member: its own new records verified here, and the newest one over that budget (merging.py R1-R3)
        self._record_budget: KeyedBuckets[bytes] = KeyedBuckets(
            config.records_per_member_per_s, config.records_per_member_burst, config.members_max
        )
        self._deferred: dict[bytes, tuple[MemberInfo, bytes]] = {}
        self._reply_budget: KeyedBuckets[bytes] = KeyedBuckets(
            1.0 / config.probe_interval_s, REPLY_UPDATES_BURST, config.members_max
        )
        self._table = MemberTable()
        self._table.put(self._self, now)
        self._ring = ProbeRing()
        self._queue = BroadcastQueue(config.broadcast_queue_max)
        self._suspicions = Suspicions()
        self._awareness = Awareness(config.awareness_max_multiplier, enabled=config.lifeguard)
        self._gone: dict[bytes, float] = {}  # DEAD/LEFT members by the time they went, oldest first
        self._forgotten: OrderedDict[bytes, int] = OrderedDict()  # reclaimed id -> last incarnation (`_reap`)
        self._behind: dict[bytes, list[bytes]] = {}  # senders of stale claims -> records we owe (`_owe_record`)
        self._msg_incarnation = self._self.incarnation  # set as each message is merged (merging.py `_about_self`)
        self._msg_verified: set[bytes] = set()  # cleared as each message is merged (merging.py `_apply`)
        self._seeds: dict[bytes, Address] = {}
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._relay_of: dict[bytes, int] = {}  # origin -> the seq of its one relay (see `_on_ping_req`)
        self._commands: list[Command] = []
        self._seq = rng.getrandbits(32)
        self._left = False
        self._announced = False  # told members of ourselves after a sync brought us others (the join fan-out)
        self._next_probe_at = now + rng.uniform(0, config.probe_interval_s)
        self._next_gossip_at = now + rng.uniform(0, config.gossip_interval_s)
        self._next_push_pull_at = now + config.push_pull_interval_s * rng.uniform(0.5, 1.0)
        self._next_reconnect_at = now + config.reconnect_interval_s * rng.uniform(0.5, 1.0)
        self._next_join_retry_at = now + config.join_retry_s
        self._next_refresh_at = now + config.dead_reclaim_s / 2  # see `_refresh`
        self._enqueue(Update(member=self._self))

    # ---- inputs ----

    def set_admit(self, admit: Callable[[bytes], bool]) -> None:
        """Replace the admission rule; members it no longer admits are reported DEAD once and forgotten."""
        self._admit = admit
        for m in self._table:
            if m.id != self._id and not admit(m.id):
                self._forget(m.id)
                self.stats.unadmitted_dropped += 1
                if m.state in LIVE:
                    self._emit(MemberChanged(member=m.with_state(DEAD), previous=m.state))
        for seed_id in [s for s in self._seeds if not admit(s)]:
            del self._seeds[seed_id]

    def add_seed(self, member_id: bytes, addr: Address, now: float) -> None:
        """A seed whose id the driver resolved: sync with it now (join) and while we know no one else."""
        if member_id == self._id or not self._admit(member_id):
            return
        self._seeds[member_id] = addr
        self._push_pull(member_id, addr, join=True)
        self._next_join_retry_at = now + self.config.join_retry_s

    def receive(self, sender_id: bytes, sender_addr: Address, msg: SwimMessage, now: float) -> None:
        """One authenticated datagram from `sender_id`. Messages from members we do not admit are ignored."""
        if sender_id == self._id or not self._admit(sender_id):
            return
        known = self._table.get
        self._msg_incarnation = self._self.incarnation
        self._msg_verified.clear()
        for update in msg.updates:
            m = update.member
            if known(m.id) is m and m.state is not SUSPECT:
                continue  # the very record we hold (a shared object, as in the simulator): nothing to merge
            self._apply(update, now, sender_id)
        if isinstance(msg, Ping):
            self._send(sender_id, sender_addr, Ack(seq=msg.seq), asked_by=sender_id, now=now)
        elif isinstance(msg, PingReq):
            self._on_ping_req(sender_id, sender_addr, msg, now)
        elif isinstance(msg, Ack):
            self._on_ack(sender_id, msg, now)
        elif isinstance(msg, Nack):
            p = self._probe
            if p is not None and p.seq == msg.seq and sender_id in p.asked:
                p.nacks.add(sender_id)
                self.stats.nacks_received += 1

    def tick(self, now: float) -> None:
        """Run every timer that is due."""
        self._check_probe(now)
        self._check_relays(now)
        self._check_suspicions(now)
        self._reap(now)
        if not self._left and now >= self._next_probe_at and self._probe is None:
            self._start_probe(now)
        if now >= self._next_gossip_at:
            self._gossip(now)
        if now >= self._next_push_pull_at:
            self._periodic_push_pull(now)
        if now >= self._next_reconnect_at:
            self._reconnect(now)
        if now >= self._next_join_retry_at:
            self._join_retry(now)
        if now >= self._next_refresh_at:
            self._refresh(now)

    def next_deadline(self) -> float:
        """The earliest time `tick` has something to do (the driver sleeps until then or a datagram)."""
        t = min(self._next_push_pull_at, self._next_reconnect_at)
        if not self._left:
            t = min(t, self._next_probe_at, self._next_refresh_at)
        if self._queue:
            t = min(t, self._next_gossip_at)
        if self._seeds and self._table.live_count <= 1:
            t = min(t, self._next_join_retry_at)
        p = self._probe
        if p is not None:
            t = min(t, p.deadline if p.indirect else p.timeout_at)
        for r in self._relays.values():
            t = min(t, r.deadline)
        first = self._suspicions.earliest()
        if first is not None:
            t = min(t, first)
        if self._gone:
            t = min(t, next(iter(self._gone.values())) + self.config.dead_reclaim_s)
        return t

    def leave(self, now: float) -> None:
        """Graceful leave: announce LEFT at a bumped incarnation, stop probing, gossip the news right away."""
        if self._left:
            return
        self._left = True
        self._probe = None
        self._set_self(attrs.evolve(self._self, incarnation=self._self.incarnation + 1, state=LEFT), now)
        self._announce(self.config.leave_fanout, now)

    def set_meta(self, meta: bytes, now: float) -> None:
        """New metadata for this node: bump our incarnation and gossip it."""
        if self._left:
            return
        self._set_self(attrs.evolve(self._self, meta=meta, incarnation=self._self.incarnation + 1), now)

    def preload(self, members: Mapping[bytes, MemberInfo], now: float) -> None:
        """Start from a known converged table (id -> record): the simulator's steady-state start, or a snapshot.

        Only on a fresh core (no other member known yet). Every record must be ALIVE and admitted; our own id is
        skipped. The result is the table a push-pull merge of the same records would give (same order, no
        suspicions, nothing queued), except that nothing is emitted and the probe ring is one random shuffle
        instead of N random inserts: O(N) instead of O(N^2), which is what makes 10,000-node simulations
        start. The records are stored as given, so many cores may share the same immutable objects.
        """
        if len(self._table) != 1 or self._ring or self._seeds:
            raise ValueError("preload needs a fresh core")
        others = dict(members)  # (checks in C where they can be: 10,000 cores x 10,000 records)
        others.pop(self._id, None)
        if set(map(_state_of, others.values())) - {ALIVE} or not all(map(self._admit, others)):
            raise ValueError("preload takes ALIVE, admitted members only")
        if len(others) >= self.config.members_max:
            raise ValueError(f"preload of {len(others)} members exceeds members_max")
        self._table.preload(others, now)
        self._ring.preload(list(others), self._rng)

    def drain(self) -> list[Command]:
        out, self._commands = self._commands, []
        return out

    def members(self) -> list[MemberInfo]:
        """Every member in the table, self included, in table order."""
        return list(self._table)

    def member(self, member_id: bytes) -> MemberInfo | None:
        return self._table.get(member_id)

    @property
    def health_score(self) -> int:
        return self._awareness.score

    def push_pull_state(self) -> PushPullState:
        return PushPullState(members=tuple(self._table))

    def merge_push_pull(self, state: PushPullState, now: float, sender_id: bytes) -> None:
        """Merge a remote full state from `sender_id`. Each record's signed part (the member's own alive or left
        record) is merged as a signed record; a remote SUSPECT or DEAD is then a SUSPECT claim by the sender
        (memberlist also takes a remote DEAD as a suspicion): we let the member refute rather than kill it on
        hearsay. Such a claim is the sender's accusation here only, not passed on (merging.py A3).

        Members new to us are re-gossiped when the sync brought only a few (GOSSIP_NEW_FROM_SYNC_MAX): that is a
        seed learning of a joiner, and gossip from two sources (joiner and seed) instead of one closes the long
        join tail measured by bench/swim (one observer in ~50 missed a joiner until the next push-pull). A node
        that learns a whole cluster in its join sync does not re-gossip it all: the others know it already."""
        self.stats.push_pulls += 1
        table = self._table
        # the first sync that brings us other members; or our join sync, if a datagram brought us one before it
        # arrived (a member the seed told of us pinged us first): then we had announced nothing yet
        joining = (table.live_count <= 1 or not self._announced) and not self._left
        fresh = [m for m in state.members[: self.config.members_max] if m.id not in table and m.id != self._id]
        gossip_new = len(fresh) <= GOSSIP_NEW_FROM_SYNC_MAX
        self._msg_incarnation = self._self.incarnation
        self._msg_verified.clear()
        for m in state.members[: self.config.members_max]:
            old = table.get(m.id)
            if old is m or (old is not None and (old.incarnation > m.incarnation or old == m)):
                continue  # fast path: nothing new (most of a sync)
            if m.state in CLAIMS:
                self._apply(Update(member=m.with_state(ALIVE)), now, sender_id, gossip_new=gossip_new)
                held = table.get(m.id)
                if m.id != self._id and (held is None or held.incarnation < m.incarnation):
                    continue  # its record was not taken (forged, or over its budget: merging.py R1): no claim at it
                m = m.with_state(SUSPECT)
            self._apply(Update(member=m, by=sender_id), now, sender_id, gossip_new=gossip_new, vouched=True)
        if joining and table.live_count > 1:
            self._announced = True
            self._announce(self.config.join_fanout, now, skip=sender_id)  # it has our record
        elif fresh and gossip_new and self._queue and not self._left:
            self._gossip(now)  # a seed passes a joiner on now, not at its next round (up to a gossip interval)

    def _set_self(self, me: MemberInfo, now: float) -> None:
        me = sign_record(me, self._sign)
        self._self = me
        self._table.put(me, now)
        self._enqueue(Update(member=me))

    def _refresh(self, now: float) -> None:
        """Re-sign our record at the next incarnation every `dead_reclaim_s` / 2. Others refuse a record of a member
        they forgot at or below the incarnation they last held (merging.py `_apply`: that is how a replay of a dead
        member's record is refused); they forget a member `dead_reclaim_s` after it went, so by then a member
        that is still up (wrongly declared dead: a long partition or pause) has signed a newer record, and is
        taken back when it is heard again (docs/swim.md "Boot epochs and replays")."""
        self._next_refresh_at = now + self.config.dead_reclaim_s / 2
        if not self._left:
            self._set_self(attrs.evolve(self._self, incarnation=self._self.incarnation + 1), now)

    def _forget(self, member_id: bytes) -> None:
        old = self._table.remove(member_id)
        if old is not None and old.state in LIVE:
            self._ring.discard(member_id)
        self._queue.invalidate(member_id)
        self._suspicions.pop(member_id)
        self._gone.pop(member_id, None)
        self._behind.pop(member_id, None)
        self._deferred.pop(member_id, None)

    # ---- probing ----

    def _start_probe(self, now: float) -> None:
        cfg = self.config
        self._next_probe_at = now + self._awareness.scale(cfg.probe_interval_s)
        for _ in range(len(self._ring)):
            target = self._ring.next(self._rng)
            info = None if target is None else self._table.get(target)
            if info is not None and info.state in LIVE:
                break
            if target is not None:
                self._ring.discard(target)
        else:
            return
        self._seq += 1
        self._probe = _Probe(
            seq=self._seq,
            target=info.id,
            timeout_at=now + self._awareness.scale(cfg.probe_timeout_s),
            deadline=self._next_probe_at,
        )
        first: tuple[Update, ...] = ()
        if cfg.lifeguard and info.state is SUSPECT:
            queued = self._queue.queued(info.id)
            # buddy system: tell the suspect at once so it can refute (it refutes a claim unsigned too: A3)
            first = (queued if queued is not None and queued.member == info else Update(member=info, by=self._id),)
        self._send(info.id, info.addr, Ping(seq=self._seq), first=first)

    def _on_ack(self, sender_id: bytes, msg: Ack, now: float) -> None:
        # An Ack names a sequence number, and a member learns ours from our pings and ping-reqs: a probe takes it
        # only from its target or a member it asked to relay, a relay only from its target. Before, any member's
        # Ack counted, and one that acked our next numbers kept a crashed member alive here.
        p = self._probe
        if p is not None and p.seq == msg.seq and (sender_id == p.target or sender_id in p.asked):
            direct = sender_id == p.target
            if direct:
                self.stats.probes_ok += 1
            else:
                self.stats.probes_indirect_ok += 1
            self._awareness.apply(-1)
            self._emit(ProbeResult(target=p.target, result="ok" if direct else "indirect_ok"))
            self._probe = None
            return
        relay = self._relays.get(msg.seq)
        if relay is not None and relay.target == sender_id:
            self._end_relay(msg.seq)
            self._send(relay.origin_id, relay.origin_addr, Ack(seq=relay.origin_seq), asked_by=relay.origin_id, now=now)

    def _on_ping_req(self, sender_id: bytes, sender_addr: Address, msg: PingReq, now: float) -> None:
        if msg.target == self._id:
            self._send(sender_id, sender_addr, Ack(seq=msg.seq), asked_by=sender_id, now=now)
            return
        # A member holds one relay here, for its newest ping-req (it runs one probe at a time: the older one is
        # over), and we ping the target where our table says it is. Before, one member's ping-reqs took every slot
        # (honest ping-reqs were refused, so their probes failed), and we pinged any address a ping-req named.
        previous = self._relay_of.get(sender_id)
        if previous is not None:
            self._end_relay(previous)
        target = self._table.get(msg.target)
        if target is None or len(self._relays) >= self.config.relays_max or not self._admit(msg.target):
            self.stats.relays_refused += 1
            return
        self._seq += 1
        self._relay_of[sender_id] = self._seq
        self._relays[self._seq] = _Relay(
            target=msg.target,
            origin_id=sender_id,
            origin_addr=sender_addr,
            origin_seq=msg.seq,
            nack=msg.nack,
            deadline=now + self._awareness.scale(self.config.probe_timeout_s),
        )
        self._send(target.id, target.addr, Ping(seq=self._seq), asked_by=sender_id, now=now)

    def _check_probe(self, now: float) -> None:
        p = self._probe
        if p is None:
            return
        if not p.indirect and now >= p.timeout_at:
            p.indirect = True
            self._ask_others(p)
            target = self._table.get(p.target)
            if self.config.stream_fallback and target is not None:
                self._emit(StreamPing(to_id=target.id, to_addr=target.addr, seq=p.seq))
        if now < p.deadline:
            return
        self._probe = None
        self.stats.probes_failed += 1
        missed = len(p.asked) - len(p.nacks) if self.config.lifeguard and p.asked else 1
        self._awareness.apply(missed)
        self._emit(ProbeResult(target=p.target, result="failed"))
        info = self._table.get(p.target)
        if info is not None and info.state in LIVE and self._refute_with_deferred(info, now):
            info = self._table.get(p.target)  # a record it signed since, kept aside over its budget (merging.py R3)
        if info is None or info.state not in LIVE:
            return
        if info.state is ALIVE:
            self.stats.suspicions_raised += 1
            self._commit(self._accuse(info, SUSPECT), info, now)
        else:
            if self._suspicions.counts(info.id, self._id):  # sign only what counts
                self._maybe_confirm(self._accuse(info, SUSPECT), info)

    def _tell_suspect(self, suspect: MemberInfo) -> None:
        """Send a member the suspicion of it we hold and do not gossip (merging.py A3), so that it refutes."""
        self._send(suspect.id, suspect.addr, Gossip(), first=(Update(member=suspect.with_state(SUSPECT), by=self._id),))

    def _accuse(self, info: MemberInfo, state: MemberState) -> Update:
        """Our own claim about a member at the incarnation we hold, signed as its accuser (merging.py A1)."""
        sig = self._sign(accusation_bytes(info.id, info.incarnation, self._id))
        return Update(member=info.with_state(state), by=self._id, sig=sig)

    def _ask_others(self, p: _Probe) -> None:
        info = self._table.get(p.target)
        if info is None:
            return

        asked = self._ring.sample(
            self._rng, self.config.indirect_checks, lambda mid: mid != p.target and self._is_alive(mid)
        )
        p.asked = tuple(asked)
        for member_id in asked:
            m = self._table.get(member_id)
            assert m is not None
            req = PingReq(seq=p.seq, target=info.id, target_addr=info.addr, nack=self.config.lifeguard)
            self._send(m.id, m.addr, req)

    def _check_relays(self, now: float) -> None:
        if not self._relays:
            return
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            r = self._end_relay(seq)
            if r.nack:
                self.stats.nacks_sent += 1
                self._send(r.origin_id, r.origin_addr, Nack(seq=r.origin_seq), asked_by=r.origin_id, now=now)

    def _end_relay(self, seq: int) -> _Relay:
        r = self._relays.pop(seq)
        if self._relay_of.get(r.origin_id) == seq:
            del self._relay_of[r.origin_id]
        return r

    def _check_suspicions(self, now: float) -> None:
        due = self._suspicions.due(now)
        for member_id in due:
            s = self._suspicions.pop(member_id)
            info = self._table.get(member_id)
            if s is None or info is None or info.state is not SUSPECT or info.incarnation != s.incarnation:
                continue
            self.stats.deaths_declared += 1
            self._commit(self._accuse(info, DEAD), info, now)

    # ---- dissemination and sync ----

    def _enqueue(self, update: Update) -> None:
        if update.member.state in CLAIMS and not update.sig:
            return  # a claim without its accuser's signature counts nowhere else: never passed on (merging.py A3)
        self._queue.enqueue(update, update_size(update))

    def _send(
        self,
        to_id: bytes,
        to_addr: Address,
        msg: SwimMessage,
        *,
        first: tuple[Update, ...] = (),
        asked_by: bytes | None = None,
        now: float = 0.0,
    ) -> None:
        """Send `msg` with `first` and as many queued updates as fit. A datagram member `asked_by` made us send
        carries queued updates only within its budget (REPLY_UPDATES_BURST), and only for a member we hold."""
        if self._behind and to_id in self._behind:  # it holds older incarnations of these: their records first
            first = (*self._owed(to_id, piggyback_budget(msg) - sum(update_size(u) for u in first)), *first)
        updates = first
        if asked_by is None or (asked_by in self._table and self._reply_budget.take(asked_by, now)):
            budget = piggyback_budget(msg) - sum(update_size(u) for u in first)
            limit = self.config.retransmit_limit(self._table.live_count)
            room = Limits.SWIM_PIGGYBACK_MAX_ITEMS - len(first)
            updates = first + tuple(self._queue.select(budget, limit, room, min_size=UPDATE_MIN_SIZE))
        if updates:
            msg = attrs.evolve(msg, updates=updates)
        self.stats.datagrams_sent += 1
        self._emit(Send(to_id=to_id, to_addr=to_addr, msg=msg))

    def _owed(self, to_id: bytes, budget: int) -> tuple[Update, ...]:
        """The newer records we owe `to_id` (merging.py `_owe_record`) that fit in `budget` bytes; what does not fit
        stays owed for the next datagram."""
        out: list[Update] = []
        rest: list[bytes] = []
        for member_id in self._behind.pop(to_id):
            m = self._table.get(member_id)
            if m is None or m.state in CLAIMS:
                continue  # forgotten, or suspected since: what we hold now is no record it signed
            u = Update(member=m)
            size = update_size(u)
            if size > budget:
                rest.append(member_id)
                continue
            budget -= size
            out.append(u)
        if rest:
            self._behind[to_id] = rest
        return tuple(out)

    def _gossip(self, now: float) -> None:
        self._next_gossip_at = now + self.config.gossip_interval_s
        if not self._queue:
            return
        self.stats.gossip_rounds += 1
        cutoff = now - self.config.gossip_to_dead_s
        recent_dead: list[bytes] = []
        for mid, t in reversed(self._gone.items()):  # newest first
            if t < cutoff or len(recent_dead) >= self.config.gossip_nodes:
                break
            recent_dead.append(mid)

        def usable(member_id: bytes) -> bool:
            m = self._table.get(member_id)
            return m is not None and m.state in LIVE

        targets = self._ring.sample(self._rng, self.config.gossip_nodes, usable)
        for member_id in recent_dead:  # each recently dead member takes a slot with a fair chance
            if len(targets) < self.config.gossip_nodes or self._rng.random() < 0.5:
                if len(targets) >= self.config.gossip_nodes:
                    targets.pop(self._rng.randrange(len(targets)))
                targets.append(member_id)
        for member_id in targets:
            if not self._queue:
                break
            m = self._table.get(member_id)
            if m is not None:
                self._send(m.id, m.addr, Gossip())

    def _announce(self, fanout: int, now: float, *, skip: bytes = b"") -> None:
        """Tell `fanout` random live members (not `skip`) our own new record at once, then run a gossip round.

        For a leave and a join, not only the gossip round's few: each told member re-gossips it, so every member
        hears within a round or two even if a datagram or two is lost, and a joiner is not waiting for gossip
        rounds (200 ms each) to reach the members its seed's round did not pick."""
        news = (Update(member=self._self),)

        def told(member_id: bytes) -> bool:
            return member_id != skip and self._is_alive(member_id)

        for member_id in self._ring.sample(self._rng, fanout, told):
            m = self._table.get(member_id)
            if m is not None:
                self.stats.datagrams_sent += 1
                self._emit(Send(to_id=m.id, to_addr=m.addr, msg=Gossip(updates=news)))
        self._gossip(now)

    def _push_pull(self, member_id: bytes, addr: Address, *, join: bool) -> None:
        self._emit(PushPull(to_id=member_id, to_addr=addr, join=join))

    def _random_live(self) -> MemberInfo | None:
        picked = self._ring.sample(self._rng, 1, self._is_alive)
        return self._table.get(picked[0]) if picked else None

    def _periodic_push_pull(self, now: float) -> None:
        self._next_push_pull_at = now + self.config.push_pull_interval_for(self._table.live_count)
        m = self._random_live()
        if m is not None:
            self._push_pull(m.id, m.addr, join=False)

    def _reconnect(self, now: float) -> None:
        self._next_reconnect_at = now + self.config.reconnect_interval_s
        dead = [mid for mid in self._gone if (m := self._table.get(mid)) is not None and m.state is DEAD]
        if dead and not self._left:
            m = self._table.get(dead[self._rng.randrange(len(dead))])
            assert m is not None
            self._push_pull(m.id, m.addr, join=False)

    def _join_retry(self, now: float) -> None:
        self._next_join_retry_at = now + self.config.join_retry_s
        if self._seeds and self._table.live_count <= 1 and not self._left:
            seeds = list(self._seeds.items())
            member_id, addr = seeds[self._rng.randrange(len(seeds))]
            self._push_pull(member_id, addr, join=True)

    def _reap(self, now: float) -> None:
        while self._gone:
            member_id, t = next(iter(self._gone.items()))
            if t + self.config.dead_reclaim_s > now:  # the same sum as next_deadline (no float drift)
                break
            gone = self._table.get(member_id)
            if gone is not None:  # remembered, so its old records cannot bring it back (merging.py `_apply`)
                self._forgotten[member_id] = gone.incarnation
                self._forgotten.move_to_end(member_id)
                if len(self._forgotten) > FORGOTTEN_MAX:
                    self._forgotten.popitem(last=False)
            self._forget(member_id)

    def _is_alive(self, member_id: bytes) -> bool:
        m = self._table.get(member_id)
        return m is not None and m.state is ALIVE

    def _emit(self, command: Command) -> None:
        self._commands.append(command)
