"""The registry's pure rules: approval, bans, leases, ts freshness, what the list shows, cache validity."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrap.registry import (
    HEALTH_FAILS_MAX,
    Accepted,
    NodeRecord,
    Policy,
    Refused,
    build_list,
    cache_valid_until,
    decide_leave,
    decide_registration,
    listed_entries,
)
from node.protocol.identity import Identity, encode_document
from node.protocol.nodelist import Registration, open_node_list
from node.protocol.wire import packb

NOW = 1_700_000_000
NODE = Identity.from_seed(b"n" * 32)
REGISTRY_KEY = Identity.from_seed(b"r" * 32).id
AUTO = Policy(approval="auto")


def reg(ts: int = NOW, ttl: int = 180, ws: str = "ws://h:7400/v1/client", swim: str = "h:7401") -> Registration:
    return Registration(id=NODE.id, ws=ws, swim=swim, peer="h:7402", ts=ts, ttl=ttl, reg=REGISTRY_KEY)


def accept(decision: Refused | Accepted) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def test_auto_approves_and_lists_a_new_node() -> None:
    d = accept(decide_registration(reg(), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO))
    assert d.status == "approved" and d.changes_list
    assert d.record.listed(NOW) and not d.record.listed(NOW + 180)
    assert d.record.seen == NOW and d.record.last_ts == NOW


def test_manual_keeps_a_new_node_pending_and_unlisted() -> None:
    d = accept(decide_registration(reg(), None, now=NOW, registry_key=REGISTRY_KEY, policy=Policy(approval="manual")))
    assert d.status == "pending" and not d.changes_list and not d.record.listed(NOW)
    approved = attrs.evolve(d.record, approved=True)
    again = accept(
        decide_registration(
            reg(ts=NOW + 1), approved, now=NOW + 1, registry_key=REGISTRY_KEY, policy=Policy(approval="manual")
        )
    )
    assert again.status == "approved"


def test_a_heartbeat_renews_without_changing_the_list_but_a_new_address_does() -> None:
    first = accept(decide_registration(reg(), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)).record
    beat = accept(decide_registration(reg(ts=NOW + 60), first, now=NOW + 60, registry_key=REGISTRY_KEY, policy=AUTO))
    assert not beat.changes_list and beat.record.lease_end() == NOW + 60 + 180
    moved = accept(
        decide_registration(
            reg(ts=NOW + 61, swim="h:9999"), beat.record, now=NOW + 61, registry_key=REGISTRY_KEY, policy=AUTO
        )
    )
    assert moved.changes_list


def test_a_registration_after_the_lease_ran_out_changes_the_list() -> None:
    first = accept(decide_registration(reg(), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)).record
    late = accept(decide_registration(reg(ts=NOW + 500), first, now=NOW + 500, registry_key=REGISTRY_KEY, policy=AUTO))
    assert late.changes_list


@pytest.mark.parametrize(
    ("ts", "status"),
    [(NOW, 409), (NOW - 1, 409), (NOW - 10_000, 409), (NOW + 10_000, 400)],
    ids=["replayed", "older", "stale", "future"],
)
def test_ts_rules(ts: int, status: int) -> None:
    first = accept(decide_registration(reg(), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)).record
    d = decide_registration(reg(ts=ts), first, now=NOW + 1, registry_key=REGISTRY_KEY, policy=AUTO)
    assert isinstance(d, Refused) and d.status == status, d


def test_stale_ts_is_refused_even_for_a_new_node() -> None:
    d = decide_registration(reg(ts=NOW - 301), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)
    assert isinstance(d, Refused) and d.status == 409 and "stale" in d.reason


def test_a_ban_wins_over_everything() -> None:
    banned = NodeRecord(id=NODE.id, banned=True, last_ts=NOW + 999)
    d = decide_registration(reg(ts=NOW - 10_000), banned, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)
    assert isinstance(d, Refused) and d.status == 403
    assert isinstance(decide_leave(NODE.id, NOW, banned, now=NOW, policy=AUTO), Refused)


@pytest.mark.parametrize("swim", ["nohost", "h:0", "h:70000", ":7401", "a/b:1", "h:x"])
def test_bad_addresses_are_refused(swim: str) -> None:
    d = decide_registration(reg(swim=swim), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)
    assert isinstance(d, Refused) and d.status == 400 and "swim" in d.reason


def test_ttl_is_clamped() -> None:
    p = Policy(approval="auto", ttl_min_s=30, ttl_max_s=600)
    assert accept(decide_registration(reg(ttl=1), None, now=NOW, registry_key=REGISTRY_KEY, policy=p)).record.ttl == 30
    assert (
        accept(decide_registration(reg(ttl=86_400), None, now=NOW, registry_key=REGISTRY_KEY, policy=p)).record.ttl
        == 600
    )


def test_leave_unlists_keeps_approval_and_raises_the_replay_floor() -> None:
    first = accept(decide_registration(reg(), None, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)).record
    left = accept(decide_leave(NODE.id, NOW + 1, first, now=NOW + 1, policy=AUTO))
    assert left.changes_list and not left.record.listed(NOW + 1) and left.record.approved
    assert left.record.state(NOW + 1) == "left"
    replay = decide_registration(reg(ts=NOW), left.record, now=NOW + 2, registry_key=REGISTRY_KEY, policy=AUTO)
    assert isinstance(replay, Refused) and replay.status == 409
    assert isinstance(decide_leave(NODE.id, NOW + 1, left.record, now=NOW + 2, policy=AUTO), Refused)


def test_list_is_sorted_signed_and_cache_ends_at_the_first_lease_end() -> None:
    registry = Identity.from_seed(b"r" * 32)
    records = [
        NodeRecord(
            id=bytes([i]) * 32, ws="ws://x/v1/client", swim="x:1", peer="x:2", ttl=100 + i, seen=NOW, approved=True
        )
        for i in (3, 1, 2)
    ] + [NodeRecord(id=b"\x09" * 32, ttl=100, seen=NOW, approved=False)]
    assert [e.id[0] for e in listed_entries(records, NOW)[0]] == [1, 2, 3]
    doc, until = build_list(registry, records, NOW, lifetime_s=3600)
    assert until == NOW + 101
    opened = open_node_list(doc, {registry.id}, now=NOW)
    assert opened.expires == NOW + 3600 and len(opened.nodes) == 3
    assert cache_valid_until([], NOW, issued=NOW, lifetime_s=3600) == NOW + 1800


@given(st.lists(st.integers(min_value=NOW - 400, max_value=NOW + 400), max_size=30))
def test_accepted_ts_strictly_increase(stamps: list[int]) -> None:
    record: NodeRecord | None = None
    accepted: list[int] = []
    for ts in stamps:
        d = decide_registration(reg(ts=ts), record, now=NOW, registry_key=REGISTRY_KEY, policy=AUTO)
        if isinstance(d, Accepted):
            record = d.record
            accepted.append(ts)
    assert accepted == sorted(set(accepted))
    assert all(NOW - 300 <= t <= NOW + 120 for t in accepted)


def test_bridges_are_listed_by_id_only_and_share_the_byte_budget() -> None:
    """A live bridge shows in `members` (id only: no ws/swim/peer anywhere in the signed bytes); a withheld bridge
    is still a member, a failing or pending one is not; bridge ids count against `bytes_max` like entries."""
    registry = Identity.from_seed(b"r" * 32)
    listed = NodeRecord(id=b"\x01" * 32, ws="ws://pub/v1/client", swim="pub:1", peer="pub:2", ttl=100, seen=NOW,
                        approved=True, first_seen=1)  # fmt: skip
    bridge = attrs.evolve(listed, id=b"\x02" * 32, ws="ws://secret-bridge/x", swim="secret-bridge:1",
                          peer="secret-bridge:2", bridge=True, first_seen=2)  # fmt: skip
    withheld = attrs.evolve(bridge, id=b"\x03" * 32, withheld=True, first_seen=3)
    failing = attrs.evolve(bridge, id=b"\x04" * 32, fails=HEALTH_FAILS_MAX, first_seen=4)
    pending = attrs.evolve(bridge, id=b"\x05" * 32, approved=False, first_seen=5)
    records = [listed, bridge, withheld, failing, pending]
    doc, _ = build_list(registry, records, NOW, lifetime_s=3600)
    opened = open_node_list(doc, {registry.id}, now=NOW)
    assert [n.id for n in opened.nodes] == [listed.id]
    assert opened.members == (bridge.id, withheld.id)
    assert b"secret-bridge" not in encode_document(doc)
    one_entry_bytes = len(packb(listed_entries(records, NOW)[0][0].to_body()))
    entries, members = listed_entries(records, NOW, bytes_max=one_entry_bytes + 40)
    assert [e.id for e in entries] == [listed.id] and members == [bridge.id]  # room for one id (34 B) only
