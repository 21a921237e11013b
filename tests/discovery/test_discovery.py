"""The discovery chain with real parts on loopback: knotd + unbound DoH, an HTTPS registry, real WebSocket nodes
doing the client handshake (docs/client-protocol.md), TCP black holes, real cache files."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from bootstrap.dns_cli import load_tsig_key, publish_dns
from node.client.discovery import DiscoveryConfig, DiscoveryResult, Source, discover, parse_entry
from node.client.discovery.cache import CACHE_NODES_MAX, load_cache
from node.protocol.errors import ConfigError
from node.protocol.identity import Identity, id_text
from node.protocol.nodelist import NodeEntry, build_node_list, make_card
from tests.discovery.servers import black_hole, closed_port, serve_node, serve_registry, server_ssl_context
from tests.fixtures.dns import DnsStack, dns_stack, have_dns_tools

pytestmark = pytest.mark.skipif(
    not have_dns_tools(), reason="needs knotd, unbound and openssl (tests/run installs them)"
)
REGISTRY = Identity.from_seed(b"R" * 32)
NAME = "_homing.example.test"
BOUND_S = 20
# For a test that expects both of its two nodes proven: the run ends when both are, not `settle_s` after the first
# (0.3 s in these tests; on a loaded host the second handshake, started `stagger_s` later, may not be done by then).
BOTH: dict[str, object] = {"want": 2, "settle_s": 5.0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsStack]:
    with dns_stack(tmp_path_factory.mktemp("disco")) as s:
        yield s


def node_list(
    nodes: list[tuple[Identity, str]], *, expires_in: int = 3600, signer: Identity = REGISTRY
) -> dict[str, bytes]:
    now = int(time.time())
    entries = [NodeEntry(id=i.id, ws=url, swim="127.0.0.1:1", peer="127.0.0.1:2", seen=now) for i, url in nodes]
    return build_node_list(signer, entries, issued=now - 60, expires=now + expires_in)


def publish(stack: DnsStack, doc: dict[str, bytes], name: str = NAME) -> None:
    publish_dns(doc, name=name, zone="example.test", server=stack.auth, key=load_tsig_key(stack.key_file))


def cfg(stack: DnsStack | None = None, **kw: object) -> DiscoveryConfig:
    base: dict[str, object] = {"trust": frozenset([REGISTRY.id]), "deadline_s": 5.0, "settle_s": 0.3}
    if stack is not None:
        base["ca_file"] = str(stack.ca_file)
    base.update(kw)
    return DiscoveryConfig(**base)  # type: ignore[arg-type]


def run_discovery(config: DiscoveryConfig) -> tuple[DiscoveryResult, float]:
    async def main() -> tuple[DiscoveryResult, float]:
        start = trio.current_time()
        with trio.fail_after(BOUND_S):
            return await discover(config), trio.current_time() - start

    return trio.run(main)


def with_nodes(count: int, body):  # type: ignore[no-untyped-def]
    """Run `body(nursery, [(identity, url)…])` with `count` real handshake nodes up."""

    async def main():  # type: ignore[no-untyped-def]
        with trio.fail_after(BOUND_S):
            async with trio.open_nursery() as nursery:
                nodes = [
                    (ident, await serve_node(nursery, ident)) for ident in (Identity.generate() for _ in range(count))
                ]
                out = await body(nursery, nodes)
                nursery.cancel_scope.cancel()
                return out

    return trio.run(main)


def test_doh_alone_finds_and_proves_a_node(stack: DnsStack) -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        publish(stack, node_list(nodes))
        return await discover(cfg(stack, doh=(stack.doh_url,), names=(NAME,), **BOTH))

    result = with_nodes(2, body)
    assert result.errors == ()
    assert {f.source for f in result.nodes} == {Source.DOH}
    assert all(f.verified and f.handshake_ms is not None for f in result.nodes)
    assert len(result.proven) == 2


def test_blocked_registry_and_dead_resolver_do_not_hold_the_answer(stack: DnsStack) -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        publish(stack, node_list(nodes))
        hole = await black_hole(nursery)
        config = cfg(
            stack, registries=(f"http://127.0.0.1:{hole}",), deadline_s=6.0,
            doh=(f"https://127.0.0.1:{closed_port()}/dns-query", f"https://127.0.0.1:{hole}/dns-query", stack.doh_url),
            names=(NAME,),
        )  # fmt: skip
        start = trio.current_time()
        result = await discover(config)
        return result, trio.current_time() - start

    result, elapsed = with_nodes(1, body)
    assert len(result.proven) == 1 and result.proven[0].source == Source.DOH
    assert elapsed < 2.0, "a black-holed source held the result back"
    assert any("registry" in e and "not waited for" in e for e in result.errors)
    assert any("ConnectError" in e for e in result.errors)


def test_only_hanging_sources_end_at_the_deadline(stack: DnsStack) -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        hole = await black_hole(nursery)
        start = trio.current_time()
        result = await discover(cfg(registries=(f"http://127.0.0.1:{hole}",), deadline_s=1.0))
        return result, trio.current_time() - start

    result, elapsed = with_nodes(0, body)
    assert 0.9 < elapsed < 2.0
    assert result.nodes == ()
    assert any("no answer within the 1 s deadline" in e for e in result.errors)


def test_tampered_txt_list_is_discarded_and_reported(stack: DnsStack) -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        doc = node_list(nodes)
        forged = dict(doc, body=doc["body"].replace(b"127.0.0.1", b"127.0.0.2"))  # same size, signature now wrong
        publish(stack, forged, name="_forged.example.test")
        return await discover(cfg(stack, doh=(stack.doh_url,), names=("_forged.example.test",)))

    result = with_nodes(1, body)
    assert result.nodes == ()
    assert any("_forged.example.test: list discarded: node-list signature does not verify" in e for e in result.errors)


def test_expired_list_is_discarded_and_reported(stack: DnsStack) -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        publish(stack, node_list(nodes, expires_in=-10), name="_old.example.test")
        return await discover(cfg(stack, doh=(stack.doh_url,), names=("_old.example.test",)))

    result = with_nodes(1, body)
    assert result.nodes == ()
    assert any("list discarded: node list expired" in e for e in result.errors)


def test_untrusted_signer_is_refused_and_no_trust_means_unverified(stack: DnsStack) -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        doc = node_list(nodes, signer=Identity.generate())
        url = await serve_registry(nursery, lambda: doc)
        refused = await discover(cfg(registries=(url,)))
        unverified = await discover(cfg(registries=(url,), trust=frozenset()))
        return refused, unverified

    refused, unverified = with_nodes(1, body)
    assert refused.nodes == () and any("not trusted" in e for e in refused.errors)
    assert [(f.source, f.verified) for f in unverified.nodes] == [(Source.REGISTRY, False)]
    assert unverified.nodes[0].handshake_ms is not None


def test_registry_over_https_needs_the_private_ca(stack: DnsStack) -> None:
    server_ctx = server_ssl_context(str(stack.dir / "server.pem"), str(stack.dir / "server.key"))

    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        doc = node_list(nodes)
        url = await serve_registry(nursery, lambda: doc, ssl_ctx=server_ctx)
        return await discover(cfg(stack, registries=(url,))), await discover(cfg(registries=(url,)))

    ok, untrusted = with_nodes(1, body)
    assert [f.source for f in ok.proven] == [Source.REGISTRY] and ok.proven[0].verified
    assert untrusted.nodes == ()
    assert any("certificate not trusted" in e for e in untrusted.errors), untrusted.errors


def test_cold_start_with_only_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"

    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        first = await discover(cfg(extra=tuple(parse_entry(f"{u}#{i.id_text}") for i, u in nodes), cache=cache, **BOTH))
        assert len(first.proven) == 2
        # the next start has no network source at all: only the cache
        return await discover(cfg(cache=cache, **BOTH))

    result = with_nodes(2, body)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert len(result.proven) == 2
    assert all(f.source == Source.CACHE and f.verified for f in result.nodes)
    entries, errors = load_cache(cache)
    assert errors == [] and all(abs((e.last_success or 0) - time.time()) < 30 for e in entries)


def test_cache_is_bounded_and_a_damaged_cache_is_reported(tmp_path: Path) -> None:
    from node.client.discovery.cache import merge_cache, save_cache
    from node.client.discovery.model import Found

    rows = [Found(id=os.urandom(32), ws=f"ws://h{i}/v1/client", source=Source.MANUAL, verified=True, handshake_ms=1.0)
            for i in range(CACHE_NODES_MAX + 10)]  # fmt: skip
    save_cache(tmp_path / "c.json", merge_cache([], rows, 1000.0))
    assert len(load_cache(tmp_path / "c.json")[0]) == CACHE_NODES_MAX
    (tmp_path / "bad.json").write_text("{not json")
    result = run_discovery(cfg(cache=tmp_path / "bad.json", deadline_s=1.0))
    assert result[0].nodes == () and any("not valid JSON" in e for e in result[0].errors)


def test_wrong_pinned_id_is_dropped_and_reported() -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        (ident, url), stranger = nodes[0], Identity.generate()
        return await discover(
            cfg(extra=(parse_entry(f"{url}#{stranger.id_text}"), parse_entry(f"{url}#{ident.id_text}")))
        )

    result = with_nodes(1, body)
    assert len(result.nodes) == 1 and result.nodes[0].source == Source.MANUAL and result.nodes[0].verified
    assert any("claims id" in e and "manual" in e for e in result.errors)


def test_silent_node_is_skipped_within_the_handshake_timeout() -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        mute = Identity.generate()
        mute_url = await serve_node(nursery, mute, silent=True)
        extra = (parse_entry(f"{mute_url}#{mute.id_text}"), parse_entry(f"{nodes[0][1]}#{nodes[0][0].id_text}"))
        return await discover(cfg(extra=extra, handshake_timeout_s=0.5, stagger_s=0.1, settle_s=2.0))

    result = with_nodes(1, body)
    assert len(result.proven) == 1
    assert any("within 0.5 s" in e and "skipped" in e for e in result.errors), result.errors


def test_referral_card_from_another_node() -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        (a, a_url), (_b, b_url) = nodes
        good = make_card(a, ws=a_url, ts=int(time.time()))
        # a card A signed but pointing at B's address: B cannot prove A's id, so it is dropped
        misdirected = make_card(a, ws=b_url, ts=int(time.time()))
        return await discover(cfg(extra=(parse_entry(good), parse_entry(misdirected))))

    result = with_nodes(2, body)
    assert [(f.source, f.verified) for f in result.nodes] == [(Source.REFERRAL, True)]
    assert result.nodes[0].handshake_ms is not None
    assert any("skipped" in e for e in result.errors)


def test_bad_entries_are_usage_errors() -> None:
    ident = Identity.generate()
    card = make_card(ident, ws="wss://a.example/v1/client", ts=int(time.time()))
    for text, reason in [
        ("wss://a.example:7400", "needs the node id"),
        (f"wss://a.example:7400#{ident.id_text[:-2]}", "not a node id"),
        ("http://a.example#x", "expected homing://node/"),
        (card[:-4] + "AAAA", "referral card rejected"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            parse_entry(text)
    entry = parse_entry(f"wss://a.example:7400#{ident.id_text}")
    assert entry.ws == "wss://a.example:7400/v1/client" and entry.id == ident.id


def test_want_one_stops_at_the_first_proof() -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        extra = tuple(parse_entry(f"{u}#{i.id_text}") for i, u in nodes)
        return await discover(cfg(extra=extra, want=1, stagger_s=5.0))

    result = with_nodes(3, body)
    assert len(result.proven) == 1
    assert sum(f.handshake_ms is None for f in result.nodes) == 2


def test_json_shape_is_the_contract() -> None:
    ident = Identity.generate()
    result = run_discovery(
        cfg(extra=(parse_entry(make_card(ident, ws=f"ws://127.0.0.1:{closed_port()}/v1/client", ts=int(time.time()))),))
    )[0]
    doc = json.loads(json.dumps(result.to_json()))
    assert set(doc) == {"nodes", "errors"} and doc["nodes"] == []
    assert id_text(ident.id)[:8] in doc["errors"][0]


def test_seed_mode_fetches_and_verifies_lists_without_dialling() -> None:
    async def body(nursery, nodes):  # type: ignore[no-untyped-def]
        doc = node_list(nodes)
        url = await serve_registry(nursery, lambda: doc)
        seen: list[tuple[list[str], int]] = []
        result = await discover(cfg(registries=(url,), race=False), progress=lambda p, n: seen.append((p, n)))
        return result, seen

    result, seen = with_nodes(2, body)
    assert len(result.nodes) == 2 and result.proven == ()
    assert all(f.verified and f.swim == "127.0.0.1:1" and f.peer == "127.0.0.1:2" for f in result.nodes)
    assert any(pending for pending, _ in seen) and seen[-1][0] == []
