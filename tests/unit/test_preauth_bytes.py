"""node/protocol/ratelimit.py `PreauthBytes`: the peer port's bytes of unauthenticated first frames (its rules 1-4).

Pure. The end-to-end test with slow senders on real sockets is
tests/integration/test_peer_preauth_bytes.py::test_slow_first_frames_from_many_addresses_hold_no_more_than_the_cap_and_members_still_sync.
"""

from __future__ import annotations

import pytest

from node.protocol.peerlink import PeerLimits
from node.protocol.ratelimit import PreauthBytes


def test_strangers_share_half_and_the_rest_stays_for_members() -> None:
    budget = PreauthBytes(total=100, per_address=30)
    assert budget.take("198.51.100.1", 30, member=False)
    assert budget.take("198.51.100.2", 20, member=False)
    assert not budget.take("198.51.100.3", 1, member=False)  # strangers hold 50 of 100: rule 3
    assert budget.take("192.0.2.1", 30, member=True)
    assert budget.take("192.0.2.2", 20, member=True)
    assert not budget.take("192.0.2.3", 1, member=True)  # 100 of 100: rule 2
    assert (budget.held, budget.strangers) == (100, 50)


def test_one_address_holds_at_most_its_share() -> None:
    budget = PreauthBytes(total=100, per_address=30)
    assert budget.take("192.0.2.1", 20, member=True)
    assert not budget.take("192.0.2.1", 11, member=True)  # rule 4
    assert budget.take("192.0.2.1", 10, member=True)
    assert budget.take("192.0.2.2", 30, member=True)  # another address has its own share


def test_what_is_given_back_can_be_taken_again() -> None:
    budget = PreauthBytes(total=100, per_address=50)
    for _ in range(3):  # rule 1: a reservation given back leaves nothing behind
        assert budget.take("198.51.100.1", 50, member=False)
        assert budget.take("192.0.2.1", 50, member=True)
        assert not budget.take("192.0.2.2", 1, member=True)
        budget.give("198.51.100.1", 50, member=False)
        budget.give("192.0.2.1", 50, member=True)
        assert (budget.held, budget.strangers) == (0, 0)


def test_the_defaults_fit_one_largest_sync_per_address_and_several_for_strangers() -> None:
    limits = PeerLimits()
    largest = 6 * 1024 * 1024 + 1024 + 16  # a PUSH_PULL of 6 MiB, its map and tag
    assert limits.preauth_bytes_per_address_max >= largest
    assert limits.preauth_bytes_max // 2 >= 4 * largest
    with pytest.raises(ValueError, match="must not exceed"):
        PeerLimits(preauth_bytes_max=16 * 1024 * 1024, preauth_bytes_per_address_max=32 * 1024 * 1024)
    with pytest.raises(ValueError):
        PeerLimits(preauth_bytes_per_address_max=1024 * 1024)  # a largest sync would never fit
