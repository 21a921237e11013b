"""SWIM timing and sizing. Defaults follow memberlist's LAN config (docs/swim.md compares them with Serf)."""

from __future__ import annotations

import math
from typing import Any

import attrs
from attrs import validators as v

_pos: Any = v.gt(0)


@attrs.frozen(kw_only=True, slots=True)
class SwimConfig:
    # Time between failure-detection probes of one member. memberlist LAN: 1 s. Lower detects sooner, costs packets.
    probe_interval_s: float = attrs.field(default=1.0, validator=_pos)
    # Wait for a direct ack before asking k others (memberlist LAN: 500 ms; should exceed the network's p99 RTT).
    probe_timeout_s: float = attrs.field(default=0.5, validator=_pos)
    # k: members asked to probe indirectly when a direct probe fails (memberlist IndirectChecks 3).
    indirect_checks: int = attrs.field(default=3, validator=v.ge(0))
    # Suspicion timeout minimum = suspicion_mult * max(1, log10(N)) * probe_interval (memberlist 4).
    suspicion_mult: int = attrs.field(default=4, validator=v.ge(1))
    # Suspicion timeout maximum = this * the minimum, used while no one confirms (Lifeguard; memberlist 6).
    suspicion_max_timeout_mult: int = attrs.field(default=6, validator=v.ge(1))
    # Retransmits of one update = retransmit_mult * ceil(log10(N+1)) (memberlist 4).
    retransmit_mult: int = attrs.field(default=4, validator=v.ge(1))
    # Time between gossip (piggyback-only) rounds between probes (memberlist: 200 ms).
    gossip_interval_s: float = attrs.field(default=0.2, validator=_pos)
    # Random members one gossip round sends to (memberlist GossipNodes 3).
    gossip_nodes: int = attrs.field(default=3, validator=v.ge(0))
    # Lifeguard local health: probe timeouts scale by (1 + score), score capped at this minus one (memberlist 8).
    awareness_max_multiplier: int = attrs.field(default=8, validator=v.ge(1))
    # Full state sync with one random member over the peer link (memberlist LAN: 30 s).
    push_pull_interval_s: float = attrs.field(default=30.0, validator=_pos)
    # Keep dead/left members in the table this long, so late gossip about them cannot resurrect them.
    dead_reclaim_s: float = attrs.field(default=3600.0, validator=_pos)
    # Upper bound of members this node tracks; joins beyond it are refused (memory bound).
    members_max: int = attrs.field(default=20_000, validator=v.ge(1))
    # Lifeguard on (local health awareness, dynamic suspicion, nacks, suspect-in-ping). Off gives plain SWIM with a
    # fixed suspicion timeout (the minimum); only for comparisons in the simulator and the bench.
    lifeguard: bool = True
    # When a direct UDP probe times out, also probe over the peer link's TCP (memberlist's TCP fallback): lossy
    # UDP paths then cause far fewer false suspicions. Off only for comparisons.
    stream_fallback: bool = True
    # k: independent confirmations that shrink a suspicion from its maximum to its minimum timeout
    # (memberlist: SuspicionMult - 2 = 2; capped at N - 2, since the suspect and its first accuser cannot confirm).
    suspicion_confirmations: int = attrs.field(default=2, validator=v.ge(0))
    # Keep gossiping to members this long after they died, so a wrongly declared node hears it and refutes
    # (memberlist GossipToTheDeadTime 30 s).
    gossip_to_dead_s: float = attrs.field(default=30.0, validator=v.ge(0))
    # Push-pull with one random DEAD member this often, so two halves of a healed partition find each other again
    # (Serf's reconnect_interval 30 s; memberlist alone never does this).
    reconnect_interval_s: float = attrs.field(default=30.0, validator=_pos)
    # While this node knows no other live member, retry a push-pull with a seed this often.
    join_retry_s: float = attrs.field(default=2.0, validator=_pos)
    # Indirect probes this node runs for others at once; more ping-reqs are ignored (bounds memory under a storm).
    relays_max: int = attrs.field(default=256, validator=v.ge(1))
    # Queued piggyback updates (one per member at most); beyond it the most-retransmitted one is dropped.
    broadcast_queue_max: int = attrs.field(default=4096, validator=v.ge(1))
    # Suspicions one member may start here per second on average (its suspect/dead claims about members we hold
    # alive, and about us, which we refute): a hostile member cannot keep the federation busy refuting (docs/swim.md
    # "Hostile members").
    claims_per_sender_per_s: float = attrs.field(default=10.0, validator=_pos)
    # Suspicions one member may start here back to back before `claims_per_sender_per_s` applies.
    claims_per_sender_burst: int = attrs.field(default=64, validator=v.ge(1))
    # New records of one member (its own signed record, superseding the one we hold) this node verifies and re-gossips
    # per second on average. A member signs what it likes about itself: one new record per datagram cost every node
    # a signature check and a re-gossip, unbounded. Over it, the record is refused unchecked (`rate_limited`) and
    # kept aside (the newest one per member) to refute a claim at the incarnation we hold. A refutation (a record
    # above a SUSPECT/DEAD one we hold) is never charged. An honest member signs one per `dead_reclaim_s` / 2, one
    # per metadata change and one per refutation; the default matches `claims_per_sender_per_s`, so a member
    # refuting what one accuser may start is not throttled where it is not suspected (docs/swim.md "Hostile members"
    # has what lower values did in the simulator; memberlist: none).
    records_per_member_per_s: float = attrs.field(default=10.0, validator=_pos)
    # Such new records of one member back to back before `records_per_member_per_s` applies (as
    # `claims_per_sender_burst`: a member refuting a burst of suspicions that other nodes started).
    records_per_member_burst: int = attrs.field(default=64, validator=v.ge(1))
    # Key agreements per second, on average, with senders of sealed datagrams that are neither in the member table
    # nor keyed already (node-wide, all such senders together). Each is one X25519 operation before the datagram
    # can be authenticated; in an open federation (`[federation] open`, every id admitted) a datagram with a made-up
    # sender id cost one, unbounded, and churned the key cache. Members and keyed senders are not charged. Over it,
    # the datagram is refused unopened (`rate_limited`); SWIM's next probe or gossip round carries it again
    # (memberlist: none, its keyring is symmetric).
    new_keys_per_s: float = attrs.field(default=100.0, validator=_pos)
    # Such key agreements back to back before `new_keys_per_s` applies: a whole federation's first datagrams after
    # a restart, before push-pull has filled the table.
    new_keys_burst: int = attrs.field(default=1000, validator=v.ge(1))
    # Members told of a graceful leave at once, besides the gossip rounds that follow: as `join_fanout`, all of up
    # to 128, so that none is left to declare the leaver dead instead (simulator, N = 30: 1 run in 200 with 8).
    leave_fanout: int = attrs.field(default=128, validator=v.ge(0))
    # Members a joiner tells of itself at once after its join sync, besides the gossip rounds that follow (memberlist
    # has none: a joiner waits for gossip rounds; at N = 10 that was 0.1-0.4 s of bench/swim's join). Gossip alone
    # misses a given member with a chance of about e^-`retransmit_limit` (e^-8 at 11-100 members), and with 8 told
    # at once bench/swim at N = 30 had one member unaware of a joiner for 12-16 s in 4 runs of 36.
    # All of up to 128 (one datagram each, once): none in the simulator's 400 runs at N = 30 (docs/swim.md "Join").
    join_fanout: int = attrs.field(default=128, validator=v.ge(0))

    def suspicion_min_s(self, n_members: int) -> float:
        return self.suspicion_mult * max(1.0, math.log10(max(1, n_members))) * self.probe_interval_s

    def suspicion_max_s(self, n_members: int) -> float:
        return self.suspicion_max_timeout_mult * self.suspicion_min_s(n_members)

    def push_pull_interval_for(self, n_members: int) -> float:
        """memberlist's pushPullScale: above 32 members, one more interval per doubling (bounds TCP load)."""
        if n_members <= 32:
            return self.push_pull_interval_s
        return (math.ceil(math.log2(n_members) - 5.0) + 1.0) * self.push_pull_interval_s

    def retransmit_limit(self, n_members: int) -> int:
        return self.retransmit_mult * max(1, math.ceil(math.log10(n_members + 1)))


LAN = SwimConfig()
# Fast timings for tests and `homing demo` on loopback: failures are seen within about a second.
LOCAL = SwimConfig(
    probe_interval_s=0.2,
    probe_timeout_s=0.1,
    gossip_interval_s=0.05,
    suspicion_mult=3,
    push_pull_interval_s=5.0,
    gossip_to_dead_s=5.0,
    reconnect_interval_s=2.0,
    join_retry_s=0.5,
)
