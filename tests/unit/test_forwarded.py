"""node/protocol/forwarded.py: the client behind trusted proxies is the rightmost untrusted X-Forwarded-For hop."""

from __future__ import annotations

import pytest

from node.protocol.errors import ConfigError
from node.protocol.forwarded import FORWARDED_HOPS_MAX, client_address, parse_networks

PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"], key="--trusted-proxy")


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not from a trusted proxy: the header is not believed
        ("127.0.0.1", None, "127.0.0.1"),  # a proxy that says nothing is the client
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "192.0.2.9, 198.51.100.1", "198.51.100.1"),  # the client wrote the left part: ignored
        ("127.0.0.1", "192.0.2.9, 198.51.100.1, 10.1.2.3", "198.51.100.1"),  # a chain of trusted proxies
        ("127.0.0.1", "10.1.2.3, 10.2.3.4", "10.1.2.3"),  # all trusted: the leftmost
        ("127.0.0.1", "garbage, 10.1.2.3", "10.1.2.3"),  # a broken chain stops at the last trusted hop
        ("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:127.0.0.1", "198.51.100.1:5555", "198.51.100.1"),
    ],
)
def test_client_address(peer: str, header: str | None, client: str) -> None:
    assert client_address(peer, header, PROXIES) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_a_long_chain_is_cut() -> None:
    header = ", ".join(["10.0.0.1"] * (FORWARDED_HOPS_MAX + 5))
    assert client_address("127.0.0.1", header, PROXIES) == "10.0.0.1"


def test_bad_networks_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--trusted-proxy"):
        parse_networks(["not-an-ip"], key="--trusted-proxy")
