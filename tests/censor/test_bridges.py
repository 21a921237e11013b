"""Bridges (docs/discovery.md, "Bridges"): unlisted registrations stay out of the public list and DNS export, and the
distributor hands each network (/16, /48, by the trusted proxy's X-Forwarded-For) only its few per period."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import pytest

from bootstrap.registry import NodeRecord, Policy, build_list
from bootstrap.service import current_signed_list
from bootstrap.store import Store
from node.protocol.bridges import open_bridge_list, pick, range_key
from node.protocol.errors import RemoteProtocolError
from node.protocol.identity import Identity, decode_document, encode_document, id_text
from node.protocol.nodelist import build_registration, open_node_list, open_registration, parse_card
from tests.bootstrap.util import LAST_REGISTRY_KEY, init_registry, make_config, post, running_registry
from tests.clients.fixtures import run


def bridge_registration(node: Identity, port: int, *, listed: bool = False, reg: bytes | None = None) -> bytes:
    doc = build_registration(
        node, ws=f"ws://127.0.0.1:{port}/s3cret/ws", swim=f"127.0.0.1:{port + 1}", peer=f"127.0.0.1:{port + 2}",
        ts=int(time.time()), ttl=600, reg=reg or LAST_REGISTRY_KEY[0], listed=listed,
    )  # fmt: skip
    return encode_document(doc)


def test_range_key_is_16_and_48() -> None:
    assert range_key("203.0.113.7") == range_key("203.0.200.1") == "203.0.0.0/16"
    assert range_key("203.1.113.7") != range_key("203.0.113.7")
    assert range_key("2001:db8:1:2::1") == range_key("2001:db8:1:ffff::9") == "2001:db8:1::/48"
    assert range_key("::ffff:203.0.113.7") == "203.0.0.0/16"


def test_pick_is_deterministic_per_network_period_and_salt() -> None:
    pool = [bytes([i]) * 32 for i in range(20)]
    a = pick(pool, salt=b"s", period=1, network="10.0.0.0/16", count=3)
    assert a == pick(list(reversed(pool)), salt=b"s", period=1, network="10.0.0.0/16", count=3)
    assert len(a) == 3
    others = {tuple(pick(pool, salt=b"s", period=1, network=f"10.{i}.0.0/16", count=3)) for i in range(50)}
    assert len(others) > 10  # networks get different shares
    assert a != pick(pool, salt=b"s", period=2, network="10.0.0.0/16", count=3)
    assert a != pick(pool, salt=b"t", period=1, network="10.0.0.0/16", count=3)


def test_unlisted_registration_carries_a_matching_card() -> None:
    node, reg = Identity.generate(), Identity.generate().id
    opened = open_registration(decode_document(bridge_registration(node, 9000, reg=reg)))
    assert not opened.listed and opened.card is not None and opened.card_exp > time.time()
    # a card for another URL (or another node) is refused
    doc = decode_document(bridge_registration(node, 9000, reg=reg))
    other = decode_document(bridge_registration(Identity.generate(), 9000, reg=reg))
    from node.protocol.identity import NODE_REGISTER, open_document, sign_document

    body, _ = open_document(doc, NODE_REGISTER)
    body["card"] = open_document(other, NODE_REGISTER)[0]["card"]
    with pytest.raises(RemoteProtocolError):
        open_registration(sign_document(node, NODE_REGISTER, body))


def test_bridges_stay_out_of_the_list_and_the_distributor_gives_one_network_few(tmp_path: Path) -> None:
    """Scenario (e) of the censor lab: 1,000 asks from one /16 in a period learn at most its 3 bridges."""
    registry = init_registry(tmp_path)
    bridges = [Identity.generate() for _ in range(12)]
    listed = Identity.generate()
    config = make_config(tmp_path, trusted_proxies=("127.0.0.1",), bridge_rate_per_range_per_s=1000.0,
                         bridge_burst=2000, policy=Policy(approval="auto"))  # fmt: skip

    async def main() -> None:
        async with running_registry(config) as base, httpx2.AsyncClient() as client:
            for i, b in enumerate(bridges):
                status, _ = await post(client, base, bridge_registration(b, 10_000 + 10 * i))
                assert status == 200
            status, _ = await post(client, base, bridge_registration(listed, 9000, listed=True))
            assert status == 200
            resp = await client.get(f"{base}/v1/nodes")
            nodes = open_node_list(decode_document(resp.content), {registry.id}, now=time.time())
            assert [n.id for n in nodes.nodes] == [listed.id]  # no bridge in the public list
            learned: set[bytes] = set()
            for i in range(1000):
                xff = f"198.51.{i % 256}.{i % 7 + 1}"  # one /16, many addresses
                resp = await client.get(f"{base}/v1/bridges", headers={"X-Forwarded-For": xff})
                assert resp.status_code == 200
                got = open_bridge_list(decode_document(resp.content), {registry.id}, now=time.time())
                assert len(got.cards) == 3
                learned |= {c.id for c in got.cards}
                for uri in got.uris:
                    parse_card(uri, now=time.time())  # the node's own signed card
            assert len(learned) == 3
            assert learned <= {b.id for b in bridges}
            other = await client.get(f"{base}/v1/bridges", headers={"X-Forwarded-For": "192.0.2.9"})
            theirs = {c.id for c in open_bridge_list(decode_document(other.content), {registry.id},
                                                     now=time.time()).cards}  # fmt: skip
            assert len(theirs) == 3
            # rotate: the same network gets another share
            store = Store.open(tmp_path)
            store.rotate_salt(12345, time.time(), who="test")
            withheld = next(iter(learned))
            store.set_withheld(withheld, True, time.time(), who="test")
            assert [e.action for e in store.audit()][-2:] == ["bridge_rotate", "bridge_remove"]
            store.close()
            resp = await client.get(f"{base}/v1/bridges", headers={"X-Forwarded-For": "198.51.0.1"})
            after = {c.id for c in open_bridge_list(decode_document(resp.content), {registry.id},
                                                    now=time.time()).cards}  # fmt: skip
            assert len(after) == 3 and withheld not in after
        # DNS export signs the same list: no bridge there either
        doc = current_signed_list(tmp_path, time.time())
        assert [n.id for n in open_node_list(doc, {registry.id}, now=time.time()).nodes] == [listed.id]

    run(main, limit_s=60)


def test_distributor_rate_limits_per_network(tmp_path: Path) -> None:
    init_registry(tmp_path)
    config = make_config(tmp_path, trusted_proxies=("127.0.0.1",), bridge_burst=5)

    async def main() -> None:
        async with running_registry(config) as base, httpx2.AsyncClient() as client:
            codes = []
            for i in range(20):
                resp = await client.get(f"{base}/v1/bridges", headers={"X-Forwarded-For": f"198.51.{i}.1"})
                codes.append(resp.status_code)
            assert codes.count(200) == 5 and codes.count(429) == 15
            resp = await client.get(f"{base}/v1/bridges", headers={"X-Forwarded-For": "192.0.2.1"})
            assert resp.status_code == 200  # another network has its own budget

    run(main)


def test_failing_nodes_leave_the_list() -> None:
    reg = Identity.generate()
    ok = NodeRecord(id=b"a" * 32, ws="ws://x/", swim="x:1", peer="x:2", ttl=600, seen=int(time.time()), approved=True)
    bad = NodeRecord(id=b"b" * 32, ws="ws://y/", swim="y:1", peer="y:2", ttl=600, seen=int(time.time()),
                     approved=True, fails=2)  # fmt: skip
    doc, _ = build_list(reg, [ok, bad], time.time(), lifetime_s=600)
    assert [n.id for n in open_node_list(doc, {reg.id}, now=time.time()).nodes] == [ok.id]
    assert bad.state(time.time()) == "failing"


def test_expired_bridge_card_is_refused(tmp_path: Path) -> None:
    init_registry(tmp_path)

    async def main() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as client:
            node = Identity.generate()
            doc = build_registration(node, ws="ws://127.0.0.1:9/x", swim="127.0.0.1:1", peer="127.0.0.1:2",
                                     ts=int(time.time()), ttl=600, reg=LAST_REGISTRY_KEY[0], listed=False,
                                     card_lifetime_s=-10)  # fmt: skip
            status, answer = await post(client, base, encode_document(doc))
            assert status == 400 and "expired" in answer["reason"]

    run(main)


def test_old_readers_of_the_list_ignore_ok() -> None:
    """`ok` is additive: a list entry with it still opens, one without it reads as 0."""
    reg = Identity.generate()
    rec = NodeRecord(id=b"a" * 32, ws="ws://x/", swim="x:1", peer="x:2", ttl=600, seen=int(time.time()),
                     approved=True, passed=int(time.time()) - 5)  # fmt: skip
    doc, _ = build_list(reg, [rec], time.time(), lifetime_s=600)
    entry = open_node_list(doc, {reg.id}, now=time.time()).nodes[0]
    assert entry.ok == rec.passed


def test_discovery_asks_the_distributor_and_caches_the_bridges(tmp_path: Path) -> None:
    from node.client.discovery import DiscoveryConfig, Source, discover
    from node.client.discovery.cache import load_cache
    from tests.clients.fixtures import running_node
    from tests.discovery.servers import closed_port

    registry = init_registry(tmp_path / "reg")
    cache = tmp_path / "cache.json"

    async def main() -> None:
        async with running_registry(make_config(tmp_path / "reg")) as base, running_node(path="/s3cret/ws") as node:
            async with httpx2.AsyncClient() as client:
                doc = build_registration(node.identity, ws=f"ws://127.0.0.1:{node.port}/s3cret/ws",
                                         swim="127.0.0.1:1", peer="127.0.0.1:2", ts=int(time.time()), ttl=600,
                                         reg=registry.id, listed=False)  # fmt: skip
                assert (await post(client, base, encode_document(doc)))[0] == 200
                dead = Identity.generate()
                assert (await post(client, base, bridge_registration(dead, min(closed_port(), 65_000))))[0] == 200
            cfg = DiscoveryConfig(trust=frozenset([registry.id]), registries=(base,), bridges=True, cache=cache,
                                  deadline_s=8, settle_s=1.0)  # fmt: skip
            result = await discover(cfg)
            proven = {f.id: f for f in result.proven}
            assert proven[node.identity.id].source == Source.REFERRAL and proven[node.identity.id].verified
            cached, errors = load_cache(cache)
            assert not errors and node.identity.id in {c.id for c in cached}
            assert dead.id not in {c.id for c in cached}  # refuted in this run: not kept

    run(main, limit_s=30)


def test_untried_bridge_cards_are_cached_after_the_proven_nodes(tmp_path: Path) -> None:
    from node.client.discovery import Candidate, Found, Source
    from node.client.discovery.cache import load_cache, merge_cache, save_cache

    bridge = Candidate(id=b"b" * 32, ws="wss://b.example/s/ws", source=Source.REFERRAL, verified=True)
    proven = Found(id=b"a" * 32, ws="wss://a.example/v1/client", source=Source.DOH, verified=True, handshake_ms=5.0)
    rows = merge_cache([], [proven], 1_700_000_000.0, learned=[bridge])
    assert [r["id"] for r in rows] == [id_text(b"a" * 32), id_text(b"b" * 32)]
    assert rows[1]["last_success"] == 0 and rows[1]["source"] == "referral"
    save_cache(tmp_path / "c.json", rows)
    cached, errors = load_cache(tmp_path / "c.json")
    assert not errors and {c.id for c in cached} == {b"a" * 32, b"b" * 32}


def test_a_bridge_card_saying_plain_ws_to_a_public_host_is_neither_stored_nor_handed_out(tmp_path: Path) -> None:
    """Cards must say wss:// except to private addresses (docs/discovery.md), but a bridge's card reached clients
    through the distributor unchecked: the registry stored a bridge registered with ws:// to a public host and
    handed it out, and discovery raced it and kept it in the cache, so the client's upgrade, path and handshake
    (its id, the bridge's id) crossed the censor's network in clear. Now the registry refuses such a registration
    (400 naming wss://) and a reader skips such a card in a bridge list, as it skips an expired one."""
    from node.protocol.bridges import build_bridge_list
    from node.protocol.identity import NODE_CARD, sign_document

    registry = init_registry(tmp_path)
    plain_ws = "ws://bridge.example.net/s3cret/ws"

    async def main() -> None:
        async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient() as client:
            node = Identity.generate()
            doc = build_registration(node, ws=plain_ws, swim="bridge.example.net:1", peer="bridge.example.net:2",
                                     ts=int(time.time()), ttl=600, reg=registry.id, listed=False)  # fmt: skip
            status, answer = await post(client, base, encode_document(doc))
            assert status == 400 and "wss://" in answer["reason"]
            private = bridge_registration(Identity.generate(), 9000, reg=registry.id)  # ws://127.0.0.1: allowed
            assert (await post(client, base, private))[0] == 200

    run(main)
    now = int(time.time())
    plain, good = Identity.generate(), Identity.generate()
    cards = [
        sign_document(plain, NODE_CARD, {"id": plain.id, "ws": plain_ws, "ts": now, "exp": now + 600}),
        sign_document(good, NODE_CARD, {"id": good.id, "ws": "wss://b.example/s/ws", "ts": now, "exp": now + 600}),
    ]
    got = open_bridge_list(build_bridge_list(registry, cards, issued=now, expires=now + 600), {registry.id}, now=now)
    assert [c.id for c in got.cards] == [good.id]
    assert len(got.uris) == 1
