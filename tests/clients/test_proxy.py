"""Trusted proxies on the client port (docs/operations.md, "Behind a proxy"): who the client is, and who may say so.

Real sockets on 127.0.0.1: the "proxy" is a raw client that sends a real PROXY v2 header or X-Forwarded-For. A
listed proxy's word sets the session's address and the per-address limits; an unlisted address cannot name
anyone (its PROXY header is refused as not HTTP, its X-Forwarded-For ignored). Per-address limits are keyed by
/32 (IPv4) and /64 (IPv6): two addresses of one /64 share one budget.
"""

from __future__ import annotations

import pytest
import trio

from node.protocol.identity import Identity
from node.protocol.proxy import proxy_v2_header
from tests.clients.fixtures import run, running_node, wait_until
from tests.clients.rawws import RawClient, Refused

ALICE = Identity.from_seed(b"p" * 32)
XFF = b"x-forwarded-for"


async def online_address(node: object, client: RawClient, who: Identity = ALICE) -> tuple[str, str]:
    await client.authenticate(who)
    sessions = node.server.sessions  # type: ignore[attr-defined]
    await wait_until(lambda: any(s.client_id == who.id for s in sessions.values()))
    session = next(s for s in sessions.values() if s.client_id == who.id)
    return session.remote_ip, session.address_key


def test_proxy_v2_header_from_a_listed_proxy_names_the_client() -> None:
    async def main() -> None:
        async with running_node(trusted_proxies=["127.0.0.0/30"], proxy_protocol="v2") as node:
            header = proxy_v2_header("203.0.113.7", 40000, "127.0.0.1", node.port)
            client = await RawClient.connect(node.port, prefix=header)
            assert await online_address(node, client) == ("203.0.113.7", "203.0.113.7")
            v6 = proxy_v2_header("2001:db8:1:2::99", 40000, "::1", node.port)
            client6 = await RawClient.connect(node.port, prefix=v6)
            bob = Identity.from_seed(b"q" * 32)
            assert await online_address(node, client6, bob) == ("2001:db8:1:2::99", "2001:db8:1:2::/64")

    run(main)


def test_a_listed_v2_proxy_without_a_header_or_with_a_bad_one_is_closed() -> None:
    async def main() -> None:
        async with running_node(trusted_proxies=["127.0.0.1"], proxy_protocol="v2") as node:
            with pytest.raises(Refused):
                await RawClient.connect(node.port)  # plain HTTP where the header must be
            bad = bytearray(proxy_v2_header("203.0.113.7", 1, "127.0.0.1", 2))
            bad[12] = 0x31  # version 3
            with pytest.raises(Refused):
                await RawClient.connect(node.port, prefix=bytes(bad))
            huge = proxy_v2_header("203.0.113.7", 1, "127.0.0.1", 2)[:14] + b"\xff\xff"  # 64 KiB declared
            with pytest.raises(Refused):
                await RawClient.connect(node.port, prefix=huge)
            assert not node.server.sessions

    run(main)


def test_proxy_v2_header_from_an_unlisted_address_is_refused() -> None:
    async def main() -> None:
        async with running_node(trusted_proxies=["127.0.0.2"], proxy_protocol="v2") as node:
            header = proxy_v2_header("203.0.113.7", 40000, "127.0.0.1", node.port)
            with pytest.raises(Refused):
                await RawClient.connect(node.port, prefix=header, source="127.0.0.1")
            client = await RawClient.connect(node.port, prefix=header, source="127.0.0.2")  # the listed one
            assert await online_address(node, client) == ("203.0.113.7", "203.0.113.7")

    run(main)


def test_x_forwarded_for_from_a_listed_proxy_uses_the_rightmost_untrusted_hop() -> None:
    async def main() -> None:
        async with running_node(trusted_proxies=["127.0.0.1", "10.0.0.0/8"]) as node:
            # the client wrote 198.51.100.1 itself; our proxies 10.1.1.1 then 127.0.0.1 saw 203.0.113.9
            hops = [(XFF, b"198.51.100.1, 203.0.113.9"), (XFF, b"10.1.1.1")]
            client = await RawClient.connect(node.port, headers=hops)
            assert await online_address(node, client) == ("203.0.113.9", "203.0.113.9")

    run(main)


def test_x_forwarded_for_from_an_unlisted_address_is_ignored() -> None:
    async def main() -> None:
        async with running_node(trusted_proxies=["127.0.0.2"]) as node:
            client = await RawClient.connect(node.port, headers=[(XFF, b"203.0.113.9")], source="127.0.0.1")
            assert await online_address(node, client) == ("127.0.0.1", "127.0.0.1")

    run(main)


def test_per_address_connection_limit_applies_to_the_forwarded_address_by_slash_64() -> None:
    async def main() -> None:
        async with running_node(trusted_proxies=["127.0.0.1"], connections_per_ip_max=1) as node:
            first = await RawClient.connect(node.port, headers=[(XFF, b"2001:db8:5:6::1")])
            with pytest.raises(Refused) as info:  # same /64: the same address for the limits
                await RawClient.connect(node.port, headers=[(XFF, b"2001:db8:5:6:ffff::2")])
            assert info.value.status == 429
            other = await RawClient.connect(node.port, headers=[(XFF, b"2001:db8:5:7::1")])  # another /64
            del first, other

    run(main)


def test_new_handshakes_per_address_are_budgeted() -> None:
    async def main() -> None:
        config = {"handshakes_per_address_per_s": 0.01, "handshakes_per_address_burst": 3}
        async with running_node(**config) as node:
            clients = [await RawClient.connect(node.port) for _ in range(3)]
            with pytest.raises(Refused) as info:
                await RawClient.connect(node.port)
            assert info.value.status == 429
            for c in clients:  # closing does not give the budget back: it refills with time only
                await c.stream.aclose()
            await trio.sleep(0.05)
            with pytest.raises(Refused):
                await RawClient.connect(node.port)

    run(main)
