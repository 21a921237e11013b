"""`{"t":"ice_servers"}` over a real client connection to a real node (docs/client-protocol.md, "ICE servers")."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from node.app.config import build_config
from node.app.service import NodeHandle, run_node
from node.cli.node import format_status
from node.client.connection import IceServersRefused, connect_client, open_websocket
from node.protocol.errors import ConfigError
from node.protocol.identity import Identity
from node.protocol.turn import turn_credential
from node.protocol.wire.client import encode_client_message
from tests.integration.cluster import loopback_config, url

SECRET = b"node-test-secret-0123456789"
URLS = ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"]


def secret_file(tmp: Path, secret: bytes = SECRET, mode: int = 0o600) -> Path:
    path = tmp / "turn-secret"
    path.write_bytes(secret + b"\n")
    os.chmod(path, mode)
    return path


async def start(nursery: trio.Nursery, tmp: Path, **turn: object) -> NodeHandle:
    handle: NodeHandle = await nursery.start(run_node, loopback_config(tmp / "n", turn=dict(turn)), Identity.generate())
    return handle


async def test_a_node_with_turn_hands_out_a_credential_coturn_would_accept(tmp_path: Path) -> None:
    alice = Identity.generate()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, tmp_path, urls=URLS, secret_file=str(secret_file(tmp_path)), ttl_s=600)
            async with connect_client(url(node), alice) as conn:
                reply = await conn.ice_servers()
            assert reply.ttl == 600
            (server,) = reply.servers
            assert list(server.urls) == URLS
            assert server.username is not None and server.credential is not None
            expiry, _, who = server.username.partition(":")
            assert who == alice.id_text
            assert abs(int(expiry) - (time.time() + 600)) < 5
            assert server.credential == turn_credential(SECRET, server.username)
            node.request_shutdown()


async def test_json_form_byte_for_byte_and_stun_only_without_a_secret(tmp_path: Path) -> None:
    alice = Identity.generate()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, tmp_path, urls=URLS)
            async with connect_client(url(node), alice, json=True) as conn:
                await conn.send_raw('{"t":"ice_servers"}')
                msg = await conn.receive()
            assert msg.__class__.__name__ == "IceServers"
            ws = await open_websocket(url(node), subprotocols=["homing.v1.json"])
            await ws.receive_message()  # challenge
            await ws.send_message('{"t":"ice_servers"}')
            refused = await ws.receive_message()
            assert json.loads(refused) == {"t": "error", "code": "auth_failed"}, "only after the handshake"
            await ws.aclose()
            text = encode_client_message(msg, json=True)  # type: ignore[arg-type]
            assert text == '{"t":"ice_servers","ttl":0,"servers":[{"urls":["stun:127.0.0.1:3478"]}]}'
            node.request_shutdown()


async def test_a_node_without_turn_answers_an_empty_list(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, tmp_path)
            async with connect_client(url(node), Identity.generate()) as conn:
                reply = await conn.ice_servers()
            assert reply.ttl == 0 and reply.servers == ()
            node.request_shutdown()


async def test_requests_are_rate_limited_per_connection_and_per_id(tmp_path: Path) -> None:
    alice = Identity.generate()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, tmp_path, urls=URLS, request_burst=3, request_rate_per_s=0.01)
            async with connect_client(url(node), alice) as conn:
                for _ in range(3):
                    await conn.ice_servers()
                with pytest.raises(IceServersRefused, match="rate_limited"):
                    await conn.ice_servers()
            async with connect_client(url(node), alice) as again:
                with pytest.raises(IceServersRefused, match="rate_limited"):
                    await again.ice_servers()  # a new connection of the same id: the per-id bucket is empty
            async with connect_client(url(node), Identity.generate()) as other:
                await other.ice_servers()
            node.request_shutdown()


async def test_rotation_is_picked_up_and_status_shows_it(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    alice = Identity.generate()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, tmp_path, urls=URLS, secret_file=str(path), realm="example.org")
            status = await trio.to_thread.run_sync(_members, node)
            assert status["turn"]["configured"] is True and status["turn"]["realm"] == "example.org"
            first_change = status["turn"]["secret_changed"]
            assert "turn: configured realm example.org" in format_status(status)
            new = b"rotated-secret-abcdefghijkl"
            path.write_bytes(new)
            os.utime(path, (first_change + 100, first_change + 100))
            node.turn.refresh()  # what a request does at most every SECRET_CHECK_S
            async with connect_client(url(node), alice) as conn:
                (server,) = (await conn.ice_servers()).servers
            assert server.credential == turn_credential(new, server.username or "")
            assert (await trio.to_thread.run_sync(_members, node))["turn"]["secret_changed"] == first_change + 100
            node.request_shutdown()


async def test_one_address_gets_credentials_for_at_most_ids_per_address_max_ids(tmp_path: Path) -> None:
    """Rule T1 (node/protocol/turn.py): key pairs made on one address get credentials for at most `[turn]
    ids_per_address_max` (default 10) ids per credential lifetime, so they cannot use up coturn's total-quota
    (docs/security.md); the rest get the STUN URLs without a credential (not an error: behind one address, CGNAT,
    they keep their server-reflexive candidates), counted in /v1/members' turn.refused. An id that holds one may
    ask again, and another address is not affected."""
    bound = 10  # the default of [turn] ids_per_address_max
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, tmp_path, urls=URLS, secret_file=str(secret_file(tmp_path)))
            granted: list[Identity] = []
            refused = 0
            for _ in range(bound + 3):
                me = Identity.generate()
                async with connect_client(url(node), me, local_address="127.0.0.1") as conn:
                    answer = await conn.ice_servers()
                    (server,) = answer.servers
                    if server.credential is None:
                        assert server.username is None and all(u.startswith("stun:") for u in server.urls)
                        assert answer.ttl == 0, "nothing to renew: the client asks again for its next call"
                        refused += 1
                    else:
                        assert server.credential == turn_credential(SECRET, server.username or "")
                        granted.append(me)
            assert (len(granted), refused) == (bound, 3)
            async with connect_client(url(node), granted[0], local_address="127.0.0.1") as again:
                (server,) = (await again.ice_servers()).servers  # an id the address already holds one for
                assert server.credential is not None
            async with connect_client(url(node), Identity.generate(), local_address="127.0.0.2") as other:
                (server,) = (await other.ice_servers()).servers
                assert server.credential is not None
            status = await trio.to_thread.run_sync(_members, node)
            assert status["turn"]["refused"] == {"connection": 0, "id": 0, "address": 3}  # type: ignore[index]
            counted = [
                sample.value
                for family in text_string_to_metric_families(node.metrics.render().decode())
                for sample in family.samples
                if sample.name == "homing_packets_refused_total"
                and sample.labels == {"layer": "client", "reason": "rate_limited"}
            ]
            assert sum(counted) == 0, "T1 withholds the credential; it refuses no request"
            node.request_shutdown()


def _members(node: NodeHandle) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.ports['metrics']}/v1/members", timeout=5) as resp:
        data: dict[str, object] = json.loads(resp.read())
    return data


def test_a_secret_file_open_to_others_is_refused(tmp_path: Path) -> None:
    from node.app.turn import TurnService

    config = build_config({"turn": {"urls": URLS, "secret_file": str(secret_file(tmp_path, mode=0o644))}})
    with pytest.raises(ConfigError, match="chmod"):
        TurnService(config.turn, now=lambda: 0.0)
    os.chmod(tmp_path / "turn-secret", 0o640)
    assert TurnService(config.turn, now=lambda: 0.0).status()["configured"] is True
