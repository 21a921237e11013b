"""Nodes use the discovery chain for their own seeds: with every registry black-holed, the signed list published
in DNS (read over DoH) still lets two nodes admit and join each other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from node.app.config import build_config
from node.app.service import NodeHandle, run_node
from node.protocol.identity import Identity
from node.protocol.nodelist import NodeEntry, build_node_list
from tests.discovery.servers import black_hole
from tests.discovery.test_discovery import NAME, REGISTRY, publish
from tests.fixtures.dns import DnsStack, dns_stack, have_dns_tools

pytestmark = pytest.mark.skipif(
    not have_dns_tools(), reason="needs knotd, unbound and openssl (tests/run installs them)"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStack]:
    with dns_stack(tmp_path_factory.mktemp("seeds")) as s:
        yield s


async def test_blocked_registry_nodes_join_through_doh(
    stack: DnsStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.ca_file))  # the test PKI's CA, as an operator would set it
    with trio.fail_after(40):
        async with trio.open_nursery() as outer:
            hole = await black_hole(outer)
            async with trio.open_nursery() as nursery:
                await _two_nodes(nursery, stack, tmp_path, hole)
            outer.cancel_scope.cancel()


async def _two_nodes(nursery: trio.Nursery, stack: DnsStack, tmp_path: Path, hole: int) -> None:
    handles: list[NodeHandle] = []
    for name in ("a", "b"):
        config = build_config(
            {
                "node": {
                    "data_dir": str(tmp_path / name),
                    "ws": "127.0.0.1:0",
                    "swim": "127.0.0.1:0",
                    "peer": "127.0.0.1:0",
                    "metrics": "127.0.0.1:0",
                },
                "federation": {
                    "bootstrap": [f"http://127.0.0.1:{hole}"],
                    "trust": [REGISTRY.id_text],
                    "doh": [stack.doh_url],
                    "dns_names": [NAME],
                    "heartbeat_s": 1.0,
                },
            },
            preset="local",
        )
        handles.append(await nursery.start(run_node, config, Identity.generate()))
    now = int(time.time())
    entries = [
        NodeEntry(
            id=h.identity.id,
            ws=f"ws://127.0.0.1:{h.ports['ws']}/v1/client",
            swim=f"127.0.0.1:{h.ports['swim']}",
            peer=f"127.0.0.1:{h.ports['peer']}",
            seen=now,
        )
        for h in handles
    ]
    publish(stack, build_node_list(REGISTRY, entries, issued=now - 5, expires=now + 600))
    both = {h.identity.id for h in handles}
    while not all({m.id for m in h.swim.members() if m.state.value == "alive"} == both for h in handles):
        await trio.sleep(0.1)
    for h in handles:
        assert h.admission.registry_listed == both
        h.request_shutdown()
