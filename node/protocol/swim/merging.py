"""Merging member updates from the network into the table: the half of the SWIM core that decides what to believe.

Mixed into `Swim` (protocol.py), which owns the state declared below. The rules (docs/swim.md "Merge rule" and
"Hostile members"): a record the member signed (alive, left) is verified once and merged by `supersedes`
(members.py); a SUSPECT/DEAD claim by someone else counts only about a member we hold, only at the incarnation of
the record it signed, only as the accusation of its signed accuser (A1-A4 below), starts at most a suspicion and is
budgeted per sender; records about ourselves are answered with a newer signed record of ours, and a claim older than our
incarnation with the record we have, in our next datagram to its sender (the suspecter missed our refutation).
A member we forgot (dead or left for `dead_reclaim_s`) is not brought back by a record at or below the incarnation
we last held of it (`_forgotten`): a live member re-signs its record every `dead_reclaim_s` / 2 (docs/swim.md
"Boot epochs and replays").

New records per member (docs/swim.md "Hostile members"). A member signs what it likes about itself, so one new
record of its own per datagram cost every node a signature check and a re-gossip, with no bound but one per message:
- R1. A record of a member we hold that supersedes our record of it takes a token of that member's budget
  (`records_per_member_per_s`, `records_per_member_burst`) before it is verified. Over the budget it is refused
  unchecked (`Refused(RATE_LIMITED)`, `stats.records_rate_limited`): not verified, not taken, not re-gossiped.
- R2. Exempt: a record of a member we do not hold (a join or a boot: admission and `members_max` bound those), and a
  record above a SUSPECT or DEAD one we hold: it refutes what we hold against the member, so the budget never keeps
  a member from refuting here (only the suspicions started here make records exempt).
- R3. Kept aside: the highest over-budget record of each member we hold (`_deferred`), unless its sender's forgery
  budget is spent. A claim at the incarnation we hold is charged to its sender's claim budget as before, then, if a
  kept record is above that incarnation, the kept record is verified and taken instead of the suspicion (R2: it is
  a refutation): we lagged because of R1, not because the member went quiet. A claim above the incarnation we hold
  but at or below the kept record's (from a node that took that record) is charged the same way and takes the kept
  record, then counts at it; before, it was refused as unsigned, and not passed on, so the suspected member heard
  of it later (a hostile simulated minute declared honest members dead more often). Our own failed probe takes a kept
  record too before it suspects (protocol.py `_check_probe`): a LEFT one ends the member as LEFT, an ALIVE one
  has the suspicion at the incarnation the member holds, which it refutes at once. A kept record is dropped when a
  record at or above it is taken, when it fails verification (its sender's forgery budget pays) or with the member.
- R4. Bound: over T seconds a member makes a node verify at most `records_per_member_burst +
  records_per_member_per_s * T` records of its own, plus one per suspicion of it started there (R2, R3), each
  started by the node's own failed probe or by a claim within its sender's `claims_per_sender_*` budget (and a
  message takes at most one good record per member). So claims about the member, sent by an accomplice or by the
  member itself (a claim's sender may be its subject; its accuser, A1, never is: it needs an accomplice's signed
  accusation), buy exempt records at the rate of the claim budget of each sender,
  as they already bought refutations: at the defaults 10 + 10 per second and 64 + 64 at once per admitted id the
  attacker holds. Honest members' refutations are what the exemption is for.

Accusations (docs/swim.md "Hostile members"). Lifeguard shortens a suspicion as independent accusers confirm it, so
who accused matters. Before, a claim's accuser (`by`) was taken on the sender's word and a DEAD claim shortened a
suspicion to its minimum at once: one hostile member could name k other members as accusers, or send DEAD, and
every node gave the suspect only the minimum window to refute, while its refutation queued behind the flood:
- A1. A claim in a datagram counts only with its accuser's signature over the accusation (records.py
  `accusation_bytes`: member, incarnation, accuser): the accuser is an admitted member other than the subject. A
  claim without one is refused (`Refused(FORGED)`, `stats.accusations_unsigned`); one whose signature does not
  verify is refused and charged to its sender's forgery budget (`stats.accusations_forged`), as a forged record.
- A2. A DEAD claim counts as its accuser's accusation, as a SUSPECT one does: it starts a suspicion or confirms
  one, and never shortens it by itself. A suspicion reaches its minimum timeout only with k accusers other than
  the first, each of whom signed (and each a member a closed federation admitted).
- A3. A claim in a push-pull sync is the sync peer's accusation (the link authenticates it; memberlist takes a
  remote DEAD as a suspicion as well): it counts here, and is not passed on, since we hold no signature of it. A
  claim is never passed on without its accuser's signature (protocol.py `_enqueue`); the claim we send a suspect
  itself (the buddy system) may be unsigned, since a member refutes any claim about itself. So that the suspect
  hears of a suspicion nobody gossips, we send it that claim at once (`_tell_suspect`): without that, a hostile
  sync peer's claim would run its whole timeout where our probe ring did not reach the suspect in time (a ring
  round is N probe intervals, the longest suspicion 6 * 4 * log10 N of them).
- A4. Cost: a signature is checked only for a claim that would count (it starts a suspicion, within its sender's
  claim budget, or it confirms one with a new accuser while fewer than k are in), within its sender's forgery
  budget; results are cached (records.py). So one member alone can start a suspicion at its maximum timeout only,
  and its refutation has that whole window.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable

import attrs

from node.protocol.ratelimit import ForgeryBudget, KeyedBuckets
from node.protocol.refusals import Refusal
from node.protocol.swim.awareness import Awareness
from node.protocol.swim.config import SwimConfig
from node.protocol.swim.members import LIVE, MemberTable, ProbeRing, supersedes
from node.protocol.swim.messages import Command, MemberChanged, MemberInfo, MemberState, Refused, Update
from node.protocol.swim.records import RecordVerifier
from node.protocol.swim.suspicion import Suspicion, Suspicions
from node.protocol.wire.swim import INCARNATION_MAX

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
CLAIMS = (SUSPECT, DEAD)
# Forgotten members whose last incarnation we remember (docs/swim.md "Boot epochs and replays"), oldest forgotten
# first out: about 200 bytes each, 13 MB at most. A replay needs this many other members forgotten after its
# victim, each held, gone and reclaimed here (at most `members_max` per `dead_reclaim_s`: over 3 h at the defaults).
FORGOTTEN_MAX = 65_536
# Newer records we owe one member that passed on stale claims (`_owe_record`): a datagram holds several, and a
# sender behind on more members at once hears of the rest from its next stale claims.
BEHIND_PER_SENDER = 4


@attrs.define(slots=True)
class SwimStats:
    probes_ok: int = 0
    probes_indirect_ok: int = 0
    probes_failed: int = 0
    suspicions_raised: int = 0  # by this node's own failed probes
    suspicions_learned: int = 0  # members that became SUSPECT here, whoever accused them
    confirmations: int = 0
    deaths_declared: int = 0  # suspicion timers that fired here
    refutations: int = 0
    nacks_sent: int = 0
    nacks_received: int = 0
    relays_refused: int = 0
    datagrams_sent: int = 0
    gossip_rounds: int = 0
    push_pulls: int = 0
    unadmitted_dropped: int = 0
    table_full: int = 0
    records_forged: int = 0  # alive/left records whose signature did not verify
    claims_unsigned: int = 0  # suspect/dead claims at an incarnation the member never signed (as far as we know)
    claims_rate_limited: int = 0  # suspect/dead claims over their sender's budget
    accusations_unsigned: int = 0  # claims without their accuser's signature, or naming no admitted accuser (A1)
    accusations_forged: int = 0  # claims whose accuser's signature did not verify (A1)
    records_replayed: int = 0  # records of a forgotten member at or below the incarnation we last held of it
    records_rate_limited: int = 0  # new records of a member over its budget (R1), refused unchecked


class Merging:
    """The merge rules of `Swim` (see the module docstring); `Swim.__init__` sets every attribute below."""

    config: SwimConfig
    stats: SwimStats
    _id: bytes
    _self: MemberInfo
    _left: bool
    _rng: random.Random
    _admit: Callable[[bytes], bool]
    _verifier: RecordVerifier
    _claim_budget: KeyedBuckets[bytes]
    _record_budget: KeyedBuckets[bytes]  # per member: its new records verified here (R1)
    _deferred: dict[bytes, tuple[MemberInfo, bytes]]  # member -> its highest over-budget record and sender (R3)
    _forged_budget: ForgeryBudget[bytes]
    _table: MemberTable
    _ring: ProbeRing
    _suspicions: Suspicions
    _awareness: Awareness
    _gone: dict[bytes, float]
    _forgotten: OrderedDict[bytes, int]  # reclaimed members -> the incarnation we last held (FORGOTTEN_MAX)
    _behind: dict[bytes, list[bytes]]  # senders of a stale claim -> the members whose newer records we owe them
    _msg_incarnation: int  # our incarnation when the message (datagram or sync) being merged arrived
    _msg_verified: set[bytes]  # members of which this message already brought a good signed record

    def _enqueue(self, update: Update) -> None:  # Swim's
        raise NotImplementedError

    def _emit(self, command: Command) -> None:  # Swim's
        raise NotImplementedError

    def _set_self(self, me: MemberInfo, now: float) -> None:  # Swim's
        raise NotImplementedError

    def _tell_suspect(self, suspect: MemberInfo) -> None:  # Swim's
        raise NotImplementedError

    def _apply(
        self, update: Update, now: float, sender: bytes, *, gossip_new: bool = True, vouched: bool = False
    ) -> None:
        """Merge one update from the network (the sender is the authenticated datagram or sync peer; a `vouched`
        claim is the sync peer's own accusation, A3)."""
        m = update.member
        if m.id == self._id:
            self._about_self(update, now, sender)
            return
        old = self._table.get(m.id)
        if m.state in CLAIMS:
            if old is not None:
                self._apply_claim(update, old, now, sender, vouched=vouched)
            return  # a claim about a member we never heard of: nothing it signed to accuse
        if old is None:
            if not self._admit(m.id):
                return
            if len(self._table) >= self.config.members_max:
                self.stats.table_full += 1
                return
            last = self._forgotten.get(m.id)
            if last is not None and m.incarnation <= last:
                # a replay of a record it signed before it died or left (docs/swim.md "Boot epochs and replays"):
                # a restart signs a newer boot epoch, and a member still up re-signs (`_refresh`) well before
                # anyone forgets it
                self.stats.records_replayed += 1
                self._emit(Refused(refusal=Refusal.REPLAYED))
                return
        elif not supersedes(m, old):
            return
        if m.id in self._msg_verified:
            return  # an honest message holds one record per member; a member's own records at 1, 2, 3, ... in one
            # message (it signs what it likes about itself) each cost a verification here before (forged ones
            # have their own budget)
        refutes = old is None or (old.state in CLAIMS and m.incarnation > old.incarnation)  # R2
        if not refutes and not self._record_budget.take(m.id, now):
            self._defer(m, sender, now)  # R1, R3
            return
        self._take(m, old, now, sender, gossip_new=gossip_new)

    def _take(self, m: MemberInfo, old: MemberInfo | None, now: float, sender: bytes, *, gossip_new: bool) -> bool:
        """Verify a member's own record and put it in the table."""
        if not self._verified(m, now, sender):
            return False
        self._msg_verified.add(m.id)
        self._forgotten.pop(m.id, None)
        kept = self._deferred.get(m.id)
        if kept is not None and kept[0].incarnation <= m.incarnation:
            del self._deferred[m.id]
        self._commit(Update(member=m), old, now, gossip_new=gossip_new)
        return True

    def _defer(self, m: MemberInfo, sender: bytes, now: float) -> None:
        """R1: refuse a new record over its member's budget; R3: keep the highest one aside, unchecked."""
        self.stats.records_rate_limited += 1
        self._emit(Refused(refusal=Refusal.RATE_LIMITED))
        kept = self._deferred.get(m.id)
        if (kept is None or m.incarnation > kept[0].incarnation) and self._forged_budget.allows(sender, now):
            self._deferred[m.id] = (m, sender)

    def _refute_with_deferred(self, old: MemberInfo, now: float) -> bool:
        """R3: a suspicion of a member at the incarnation we hold, while a newer record of it is kept aside: take
        that record first (it is a refutation, R2). Called once per suspicion about to start or held here."""
        kept = self._deferred.pop(old.id, None)
        if kept is None:
            return False
        m, sender = kept
        if m.incarnation <= old.incarnation:  # pragma: no cover - such a record is dropped when one is taken
            return False
        return self._take(m, old, now, sender, gossip_new=True)  # forged: its sender's forgery budget paid

    def _verified(self, m: MemberInfo, now: float, sender: bytes) -> bool:
        """The member's own signature over its record (cached); a sender of bad ones gets few verifications."""
        ok = self._signature_ok(lambda: self._verifier.verify(m), now, sender)
        if ok is False:
            self.stats.records_forged += 1
        return ok is True

    def _accused(self, claim: Update, now: float, sender: bytes) -> bool:
        """A1: the accuser's signature over its accusation (cached), within the sender's forgery budget."""
        m = claim.member
        ok = self._signature_ok(
            lambda: self._verifier.verify_accusation(m.id, m.incarnation, claim.by, claim.sig), now, sender
        )
        if ok is False:
            self.stats.accusations_forged += 1
        return ok is True

    def _signature_ok(self, check: Callable[[], bool], now: float, sender: bytes) -> bool | None:
        """Run one signature check for what `sender` sent: None (refused unchecked) when the sender's forgery
        budget is spent, else the result, a failure charged to that budget."""
        if not self._forged_budget.allows(sender, now):
            self._emit(Refused(refusal=Refusal.RATE_LIMITED))
            return None
        if check():
            return True
        self._forged_budget.failed(sender, now)
        self._emit(Refused(refusal=Refusal.FORGED))
        return False

    def _apply_claim(
        self, update: Update, old: MemberInfo, now: float, sender: bytes, *, vouched: bool = False
    ) -> None:
        """A SUSPECT or DEAD claim about a member we hold. It counts only at the incarnation the member signed
        (that of our record), and only as its signed accuser's accusation (A1-A4): it can start a suspicion (which
        the member can refute) or confirm one, never make it DEAD sooner than the suspicion's timeout here,
        never change its address or meta."""
        m = update.member
        if m.incarnation > old.incarnation:
            kept = self._deferred.get(m.id)
            if kept is not None and kept[0].incarnation >= m.incarnation and old.state in LIVE:
                # R3: we are behind the member's budget, and its record at (or above) the claim is kept aside
                if not self._claim_allowed(sender, now):
                    return
                if self._refute_with_deferred(old, now):
                    held = self._table.get(m.id)
                    if held is not None and held.incarnation == m.incarnation:
                        self._apply_claim(update, held, now, sender, vouched=vouched)  # at what we now hold
                    return
            self.stats.claims_unsigned += 1
            self._emit(Refused(refusal=Refusal.FORGED))
            return
        if m.incarnation < old.incarnation:
            if old.state not in CLAIMS:  # our newer record is one the member signed
                self._owe_record(sender, m.id)
            return  # stale
        if old.state not in LIVE:
            return  # already DEAD/LEFT here
        if vouched:  # A3: the sync peer's own accusation, unsigned: it counts here and is not passed on
            claim = Update(member=old.with_state(SUSPECT), by=sender)
        elif update.sig and update.by not in (b"", m.id) and self._admit(update.by):
            claim = Update(member=old.with_state(SUSPECT), by=update.by, sig=update.sig)  # A2: DEAD counts as this
        else:  # A1
            self.stats.accusations_unsigned += 1
            self._emit(Refused(refusal=Refusal.FORGED))
            return
        if old.state is SUSPECT:
            if self._refute_with_deferred(old, now):  # R3 (once per suspicion: it ends it)
                return
            # A4: check only an accusation that would count
            if self._suspicions.counts(m.id, claim.by) and (vouched or self._accused(claim, now, sender)):
                self._maybe_confirm(claim, old)
            return
        if not self._claim_allowed(sender, now):
            return
        if self._refute_with_deferred(old, now):  # R3, after the claim's sender paid
            return
        if vouched or self._accused(claim, now, sender):  # A4, after the claim's sender paid
            self._commit(claim, old, now)
            if vouched:
                self._tell_suspect(old)  # A3: nobody else hears of it from us

    def _claim_allowed(self, sender: bytes, now: float) -> bool:
        """A token of the sender's claim budget (`claims_per_sender_*`); refused and counted when it has none."""
        if self._claim_budget.take(sender, now):
            return True
        self.stats.claims_rate_limited += 1
        self._emit(Refused(refusal=Refusal.RATE_LIMITED))
        return False

    def _owe_record(self, sender: bytes, member_id: bytes) -> None:
        """`sender` passed on a claim about a member older than the record the member signed since, which we hold
        (its refutation missed the sender: its retransmissions went elsewhere, or were lost). Our next datagram to
        the sender carries that record (protocol.py `_send`). Before, only the member itself answered (about us,
        here): under 15 % loss in the simulator, a node that missed a refutation for the whole suspicion declared a
        live member dead while every node it gossiped its claim to held the refutation. Only for a sender in the
        table (made-up ids, which an open federation admits, would fill the table and end these answers for
        everyone), at most BEHIND_PER_SENDER members each; `_forget` drops a member's entries as a sender."""
        if self._table.get(sender) is None:
            return
        owed = self._behind.get(sender)
        if owed is None:
            if len(self._behind) >= self.config.members_max:
                return
            owed = self._behind[sender] = []
        if member_id not in owed and len(owed) < BEHIND_PER_SENDER:
            owed.append(member_id)

    def _commit(self, update: Update, old: MemberInfo | None, now: float, *, gossip_new: bool = True) -> None:
        """Put a checked record in the table: suspicion timers, probe ring, gossip queue and change events."""
        m = update.member
        previous = self._table.put(m, now)
        if m.state is SUSPECT:
            self._start_suspicion(m, update.by or self._id, now)
        else:
            self._suspicions.pop(m.id)
        was_live = old is not None and old.state in LIVE  # the ring holds exactly the other LIVE members
        if m.state in LIVE:
            self._gone.pop(m.id, None)
            if not was_live:
                self._ring.add(m.id, self._rng)
        else:
            self._gone.pop(m.id, None)
            self._gone[m.id] = now
            if was_live:
                self._ring.discard(m.id)
        if old is not None or gossip_new:
            self._enqueue(update if m.state in CLAIMS else Update(member=m))
        if old is None or old.state != m.state or old.addr != m.addr or old.meta != m.meta:
            self._emit(MemberChanged(member=m, previous=previous))

    def _maybe_confirm(self, update: Update, old: MemberInfo) -> None:
        m = update.member
        if not (m.state is SUSPECT and old.state is SUSPECT and m.incarnation == old.incarnation and update.by):
            return
        if self._suspicions.confirm(m.id, update.by):
            self.stats.confirmations += 1
            self._enqueue(update)  # spread the confirmation so others shorten their timers too

    def _start_suspicion(self, m: MemberInfo, by: bytes, now: float) -> None:
        self.stats.suspicions_learned += 1
        n = self._table.live_count
        cfg = self.config
        min_s = cfg.suspicion_min_s(n)
        if cfg.lifeguard:
            k = max(0, min(cfg.suspicion_confirmations, n - 2))
            max_s = cfg.suspicion_max_s(n)
        else:
            k, max_s = 0, min_s
        s = Suspicion(by=by, incarnation=m.incarnation, k=k, min_s=min_s, max_s=max_s, started=now)
        self._suspicions.start(m.id, s)

    def _about_self(self, update: Update, now: float, sender: bytes) -> None:
        """A record about us. A claim counts only at our current incarnation, within its sender's claim budget; a
        signed record only if we signed it (an earlier life of ours, before a restart). Either way we answer with a
        newer signed record, once per message: an honest sender holds one record of us, and our next incarnations
        are predictable, so claims at i, i+1, i+2, ... in one datagram (or thousands in one sync) each cost a
        signature here before."""
        m, me = update.member, self._self
        if me.incarnation != self._msg_incarnation:
            return  # this message moved us already; the rest of it is about incarnations nobody had seen
        if m.state in CLAIMS:
            if m.incarnation > me.incarnation:
                self.stats.claims_unsigned += 1  # we never signed that incarnation: nobody honest accepts it
                self._emit(Refused(refusal=Refusal.FORGED))
                return
            if m.incarnation < me.incarnation:
                # we refuted already, but the sender missed it (its retransmissions went elsewhere, or were lost):
                # our next datagram to it carries our record first, the ack to its buddy ping at the latest
                self._owe_record(sender, self._id)
                return
            if not self._claim_allowed(sender, now):
                # a claim about us goes to the sender's claim budget like any other: before, a member sending us a
                # claim at our incarnation in every datagram had us refute (sign, re-gossip, and lower our own
                # health score) once per datagram, and every node verify our new records up to our record budget
                return
        else:
            if m.incarnation < me.incarnation or m == me:
                return
            if m.state is ALIVE and m.incarnation == me.incarnation and (m.addr, m.meta) == (me.addr, me.meta):
                return
            if not self._verified(m, now, sender):
                return
        step = max(m.incarnation, me.incarnation) + 1
        if step > INCARNATION_MAX:
            return  # unreachable: only our own signed records move us, one step at a time
        if self._left:
            if m.state is not LEFT or m.incarnation > me.incarnation:
                self._set_self(attrs.evolve(me, incarnation=step), now)
            return
        # Someone suspects us, declares us dead, or holds a newer record of us (we restarted): refute.
        self.stats.refutations += 1
        if m.state is not ALIVE:
            self._awareness.apply(1)
        self._set_self(attrs.evolve(me, incarnation=step), now)
