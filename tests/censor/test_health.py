"""Registry health checks (docs/bootstrap.md, "Health checks"): a node whose client port is firewalled leaves the
signed list within two check periods and comes back when it answers again; the list says when it last passed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import trio

from node.protocol.identity import Identity, decode_document, encode_document
from node.protocol.nodelist import build_registration, open_node_list
from tests.bootstrap.util import LAST_REGISTRY_KEY, init_registry, make_config, post, running_registry
from tests.censor.forward import Forwarder
from tests.clients.fixtures import run, running_node

INTERVAL_S = 0.5


def test_firewalled_node_leaves_the_list_and_comes_back(tmp_path: Path) -> None:
    registry = init_registry(tmp_path)
    config = make_config(tmp_path, health_interval_s=INTERVAL_S, health_timeout_s=0.4, list_lifetime_s=60)

    async def listed_ids(client: httpx2.AsyncClient, base: str) -> dict[bytes, int]:
        resp = await client.get(f"{base}/v1/nodes")
        nodes = open_node_list(decode_document(resp.content), {registry.id}, now=time.time()).nodes
        return {n.id: n.ok for n in nodes}

    async def main() -> None:
        async with running_node() as node, running_registry(config) as base, trio.open_nursery() as nursery:
            fwd = Forwarder(node.port)
            await nursery.start(fwd.serve)
            impostor = Identity.generate()  # registers a URL where another node answers: never passes
            async with httpx2.AsyncClient() as client:
                for who, port in ((node.identity, fwd.port), (impostor, node.port)):
                    doc = build_registration(who, ws=f"ws://127.0.0.1:{port}/v1/client", swim="127.0.0.1:1",
                                             peer="127.0.0.1:2", ts=int(time.time()), ttl=600,
                                             reg=LAST_REGISTRY_KEY[0])  # fmt: skip
                    assert (await post(client, base, encode_document(doc)))[0] == 200
                ids = await listed_ids(client, base)
                assert set(ids) == {node.identity.id, impostor.id}
                await trio.sleep(INTERVAL_S * 2.5)  # two checks
                ids = await listed_ids(client, base)
                assert set(ids) == {node.identity.id} and ids[node.identity.id] > 0, ids  # the impostor failed twice
                fwd.blocked = True
                t0 = trio.current_time()
                while node.identity.id in await listed_ids(client, base):
                    await trio.sleep(0.05)
                    assert trio.current_time() - t0 < 2 * INTERVAL_S + 2 * 0.4 + 1.0, "not unlisted in two periods"
                fwd.blocked = False
                t0 = trio.current_time()
                while node.identity.id not in await listed_ids(client, base):
                    await trio.sleep(0.05)
                    assert trio.current_time() - t0 < INTERVAL_S + 2.0, "not listed again"
            nursery.cancel_scope.cancel()

    run(main, limit_s=30)
