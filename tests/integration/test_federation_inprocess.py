"""Real nodes in one process: real UDP and TCP sockets on 127.0.0.1, real crypto, the real SWIM core."""

from __future__ import annotations

from pathlib import Path

import trio

from node.app.config import NodeConfig
from node.app.service import NodeHandle, run_node
from node.protocol.identity import Identity
from tests.integration.cluster import loopback_config


def node_config(tmp: Path, name: str, join: list[str]) -> NodeConfig:
    return loopback_config(tmp / name, join=join)


def alive_ids(h: NodeHandle) -> set[bytes]:
    return {m.id for m in h.swim.members() if m.state.value == "alive"}


async def wait_until(pred: object, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.05)


async def test_three_nodes_converge_and_see_a_leave(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        first: NodeHandle = await nursery.start(run_node, node_config(tmp_path, "a", []), Identity.generate())
        seed = f"127.0.0.1:{first.ports['swim']}"
        others = [
            await nursery.start(run_node, node_config(tmp_path, n, [seed]), Identity.generate()) for n in ("b", "c")
        ]
        handles = [first, *others]
        everyone = {h.identity.id for h in handles}
        await wait_until(lambda: all(alive_ids(h) == everyone for h in handles), 10)

        leaver = handles[2]
        leaver.request_shutdown()
        await wait_until(
            lambda: all(
                any(m.id == leaver.identity.id and m.state.value == "left" for m in h.swim.members())
                for h in handles[:2]
            ),
            10,
        )
        for h in handles[:2]:
            h.request_shutdown()


async def test_closed_federation_refuses_unlisted_node(tmp_path: Path) -> None:
    a_id, b_id, c_id = Identity.generate(), Identity.generate(), Identity.generate()
    async with trio.open_nursery() as nursery:
        cfg_a = loopback_config(tmp_path / "a", open_=False, federation={"allow": [b_id.id_text]})
        a: NodeHandle = await nursery.start(run_node, cfg_a, a_id)
        seed = f"127.0.0.1:{a.ports['swim']}"
        cfg_b = loopback_config(tmp_path / "b", open_=False, federation={"join": [seed], "allow": [a_id.id_text]})
        cfg_c = loopback_config(tmp_path / "c", open_=False, federation={"join": [seed], "open": True})
        b: NodeHandle = await nursery.start(run_node, cfg_b, b_id)
        c: NodeHandle = await nursery.start(run_node, cfg_c, c_id)
        await wait_until(lambda: alive_ids(a) == {a_id.id, b_id.id} and alive_ids(b) == {a_id.id, b_id.id}, 10)
        # c is open itself, but a admits only b: a never lists c, and c does not get a's member table
        await trio.sleep(1.0)
        assert c_id.id not in {m.id for m in a.swim.members()}
        assert b_id.id not in {m.id for m in c.swim.members()}
        for h in (a, b, c):
            h.request_shutdown()


async def test_stream_ping_answers_only_for_the_real_node(tmp_path: Path) -> None:
    """SWIM's TCP fallback probe over the peer link: the node proves its id and answers; a wrong id is refused."""
    from node.net.peerconn import stream_ping

    async with trio.open_nursery() as nursery:
        h: NodeHandle = await nursery.start(run_node, node_config(tmp_path, "a", []), Identity.generate())
        addr = ("127.0.0.1", h.ports["peer"])
        me = Identity.generate()
        assert await stream_ping(addr, me, h.identity.id, lambda i: True, timeout_s=5)
        assert not await stream_ping(addr, me, Identity.generate().id, lambda i: True, timeout_s=5)
        h.request_shutdown()


async def test_operations_endpoint_serves_every_contract_metric(tmp_path: Path) -> None:
    """docs/operations.md over real HTTP from a running node: /metrics names, /healthz, /v1/members."""
    import json

    import httpx2

    async with trio.open_nursery() as nursery:
        h: NodeHandle = await nursery.start(run_node, node_config(tmp_path, "a", []), Identity.generate())
        base = f"http://127.0.0.1:{h.ports['metrics']}"
        async with httpx2.AsyncClient(timeout=5) as client:
            metrics = (await client.get(f"{base}/metrics")).text
            for name in (
                "homing_members{state=",
                "homing_clients_connected",
                "homing_envelopes_total{",
                "homing_relay_seconds_bucket",
                "homing_mailbox_envelopes",
                "homing_swim_probes_total{",
            ):
                assert name in metrics, name
            assert 'homing_members{state="alive"} 1.0' in metrics
            assert (await client.get(f"{base}/healthz")).status_code == 200
            doc = json.loads((await client.get(f"{base}/v1/members")).text)
            assert doc["members"] == [
                {
                    "id": doc["self"],
                    "address": f"127.0.0.1:{h.ports['swim']}",
                    "state": "alive",
                    "incarnation": doc["members"][0]["incarnation"],
                }
            ]
        h.request_shutdown()
