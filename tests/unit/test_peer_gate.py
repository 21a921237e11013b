"""The peer port's gate (node/net/peerconn.py `_PeerGate`): per-address limits, and one budget for strangers.

Pure: the gate takes `now`, so these tests step time by hand. The end-to-end flood from many addresses is
tests/integration/test_peer_security.py::test_many_addresses_without_a_key_share_one_budget_of_peer_port_handshakes.
"""

from __future__ import annotations

from node.net.peerconn import _PeerGate
from node.protocol.peerlink import PeerLimits

LIMITS = PeerLimits(stranger_handshakes_per_s=2.0, stranger_handshakes_burst=5, handshakes_per_address_burst=3)


def _stranger(i: int) -> str:
    return f"198.51.100.{i}"


def test_strangers_at_many_addresses_share_one_budget() -> None:
    gate = _PeerGate(LIMITS)
    admitted = [gate.enter(_stranger(i), 0.0) for i in range(20)]  # each address well inside its own burst
    assert admitted == [True] * 5 + [False] * 15
    assert not gate.enter(_stranger(30), 0.4)  # 0.8 of a token: still none
    assert gate.enter(_stranger(31), 0.5)  # one token a half second at 2 a second
    assert not gate.enter(_stranger(32), 0.5)


def test_a_members_host_passes_when_the_strangers_budget_is_spent() -> None:
    asked: list[str] = []

    def member_host(key: str) -> bool:
        asked.append(key)
        return key == "192.0.2.7"

    gate = _PeerGate(LIMITS, member_host)
    for i in range(5):
        assert gate.enter(_stranger(i), 0.0)
    assert asked == []  # not asked while strangers' tokens are left
    assert not gate.enter(_stranger(9), 0.0)
    assert gate.enter("192.0.2.7", 0.0)
    assert gate.enter("192.0.2.7", 0.0)
    assert asked == ["198.51.100.9", "192.0.2.7", "192.0.2.7"]


def test_a_members_host_still_has_its_own_per_address_pace() -> None:
    gate = _PeerGate(LIMITS, lambda key: True)
    assert [gate.enter("192.0.2.7", 0.0) for _ in range(4)] == [True, True, True, False]


def test_a_connection_refused_by_its_address_does_not_spend_the_strangers_budget() -> None:
    gate = _PeerGate(LIMITS)
    for _ in range(3):
        assert gate.enter(_stranger(1), 0.0)
    for _ in range(10):
        assert not gate.enter(_stranger(1), 0.0)  # its own burst is spent: closed before the node-wide bucket
    assert gate.enter(_stranger(2), 0.0)
    assert gate.enter(_stranger(3), 0.0)
    assert not gate.enter(_stranger(4), 0.0)
