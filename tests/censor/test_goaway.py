"""A listed node's `goaway` referrals never name a bridge (docs/discovery.md, "Bridges"): real nodes in one process."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from node.app.service import NodeHandle, run_node
from node.protocol.identity import Identity
from node.protocol.nodelist import parse_card
from tests.censor.nginx import free_port
from tests.integration.cluster import loopback_config


async def test_goaway_referrals_leave_bridges_out(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a: NodeHandle = await nursery.start(run_node, loopback_config(tmp_path / "a"), Identity.generate())
            seed = f"127.0.0.1:{a.ports['swim']}"
            port = free_port()
            bridge_cfg = loopback_config(
                tmp_path / "b", join=[seed],
                node={"ws": f"127.0.0.1:{port}", "listed": False, "public_url": f"ws://127.0.0.1:{port}/x/ws"},
                clients={"path": "/x/ws"},
            )  # fmt: skip
            b: NodeHandle = await nursery.start(run_node, bridge_cfg, Identity.generate())
            c: NodeHandle = await nursery.start(
                run_node, loopback_config(tmp_path / "c", join=[seed]), Identity.generate()
            )
            everyone = {h.identity.id for h in (a, b, c)}
            while not all({m.id for m in h.swim.members() if m.state.value == "alive"} == everyone for h in (a, b, c)):
                await trio.sleep(0.05)
            for h in (a, c):
                named = {parse_card(card, now=time.time()).id for card in await h.referrals()}
                assert b.identity.id not in named
                assert named == everyone - {h.identity.id, b.identity.id}
            # the bridge's own goaway may name listed nodes (its clients can try them)
            named = {parse_card(card, now=time.time()).id for card in await b.referrals()}
            assert named == {a.identity.id, c.identity.id}
            for h in (a, b, c):
                h.request_shutdown()
