"""Nodes that know only a registry URL and its key find each other; a node the registry does not list is refused.

Real registry (HTTP on 127.0.0.1, SQLite), real nodes (UDP, TCP), approval `auto`.
"""

from __future__ import annotations

from pathlib import Path

import trio

from node.app.config import NodeConfig
from node.app.service import NodeHandle, run_node
from node.protocol.identity import Identity
from tests.bootstrap.util import init_registry, make_config, running_registry
from tests.integration.cluster import loopback_config


def cfg(tmp: Path, name: str, url: str, key: str) -> NodeConfig:
    return loopback_config(tmp / name, open_=False, federation={"bootstrap": [url], "trust": [key], "heartbeat_s": 1.0})


def alive(h: NodeHandle) -> set[bytes]:
    return {m.id for m in h.swim.members() if m.state.value == "alive"}


async def test_two_nodes_find_each_other_through_the_registry_only(tmp_path: Path) -> None:
    registry = init_registry(tmp_path / "registry")
    async with running_registry(make_config(tmp_path / "registry")) as url, trio.open_nursery() as nursery:
        a: NodeHandle = await nursery.start(run_node, cfg(tmp_path, "a", url, registry.id_text), Identity.generate())
        b: NodeHandle = await nursery.start(run_node, cfg(tmp_path, "b", url, registry.id_text), Identity.generate())
        both = {a.identity.id, b.identity.id}
        with trio.fail_after(20):
            while not (alive(a) == both and alive(b) == both):
                await trio.sleep(0.1)
        # a registry-trusting node admits only listed nodes: an open node that is not registered stays out
        stranger_cfg = loopback_config(
            tmp_path / "s", federation={"open": True, "join": [f"127.0.0.1:{a.ports['swim']}"]}
        )
        s: NodeHandle = await nursery.start(run_node, stranger_cfg, Identity.generate())
        await trio.sleep(1.5)
        assert s.identity.id not in {m.id for m in a.swim.members()}
        assert s.identity.id not in {m.id for m in b.swim.members()}
        for h in (a, b, s):
            h.request_shutdown()
