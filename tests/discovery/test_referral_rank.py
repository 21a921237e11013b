"""A node learned once from a link (referral card or manual entry) and remembered in the cache must not outrank the
nodes of a trusted signed list on later runs, yet stay reachable when the lists are blocked (docs/discovery.md,
"Racing and ranking"; docs/security.md, the hostile-link attacker). Real handshake nodes, a real HTTP registry
serving a signed list, TCP black holes and real cache files on loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from node.client.discovery import DiscoveryConfig, DiscoveryResult, Source, discover, parse_entry
from node.client.discovery.cache import load_cache
from node.protocol.identity import Identity
from node.protocol.nodelist import NodeEntry, build_node_list, make_card
from tests.discovery.servers import black_hole, closed_port, serve_node, serve_registry

REGISTRY = Identity.from_seed(b"Q" * 32)
BOUND_S = 20
T = TypeVar("T")


def signed_list(nodes: list[tuple[Identity, str]]) -> dict[str, bytes]:
    now = int(time.time())
    entries = [NodeEntry(id=i.id, ws=url, swim="127.0.0.1:1", peer="127.0.0.1:2", seen=now) for i, url in nodes]
    return build_node_list(REGISTRY, entries, issued=now - 60, expires=now + 3600)


def cfg(**kw: object) -> DiscoveryConfig:
    base: dict[str, object] = {"trust": frozenset([REGISTRY.id]), "deadline_s": 6.0, "settle_s": 0.3}
    base.update(kw)
    return DiscoveryConfig(**base)  # type: ignore[arg-type]


def with_two_nodes(body: Callable[[trio.Nursery, tuple[Identity, str], tuple[Identity, str]], Awaitable[T]]) -> T:
    """Run `body(nursery, listed, referred)` with two real handshake nodes up: one the registry lists, one only a
    link names (the hostile link's node, answering like any node)."""

    async def main() -> T:
        with trio.fail_after(BOUND_S):
            async with trio.open_nursery() as nursery:
                listed, referred = Identity.generate(), Identity.generate()
                a = (listed, await serve_node(nursery, listed))
                b = (referred, await serve_node(nursery, referred))
                out = await body(nursery, a, b)
                nursery.cancel_scope.cancel()
                return out

    return trio.run(main)


async def card_once(cache: Path, node: tuple[Identity, str]) -> None:
    """The visit a hostile link gave: its card proves its node, which goes to the cache."""
    first = await discover(cfg(extra=(parse_entry(make_card(node[0], ws=node[1], ts=int(time.time()))),), cache=cache))
    assert [f.source for f in first.proven] == [Source.REFERRAL]


def test_a_card_given_once_ranks_after_a_trusted_list_on_later_runs(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"

    async def body(
        nursery: trio.Nursery, listed: tuple[Identity, str], referred: tuple[Identity, str]
    ) -> tuple[DiscoveryResult, DiscoveryResult]:
        await card_once(cache, referred)
        registry = await serve_registry(nursery, lambda: signed_list([listed]))
        # a later run without the card, the trusted list reachable: the first node to prove wins (a client's want=1)
        first = await discover(cfg(registries=(registry,), cache=cache, want=1))
        # and with every node raced, the listed one leads the result even if the referred one answered faster
        every = await discover(cfg(registries=(registry,), cache=cache))
        return first, every

    first, every = with_two_nodes(body)
    assert first.proven[0].source == Source.REGISTRY, first.nodes
    assert every.proven[0].source == Source.REGISTRY, every.nodes
    entries, _ = load_cache(cache)
    assert {(e.source, e.listed) for e in entries} == {(Source.CACHE, True), (Source.CACHE, False)}
    doc = json.loads(cache.read_text())
    assert sorted(n.get("listed", False) for n in doc["nodes"]) == [False, True]


def test_an_old_cache_entry_without_the_field_is_unlisted(tmp_path: Path) -> None:
    """Migration: a file written before `listed` existed names the link's node as the newest success; it is
    read as unlisted, so it does not keep its rank (reading it as listed would keep the hostile link's effect)."""
    cache = tmp_path / "cache.json"

    async def body(
        nursery: trio.Nursery, listed: tuple[Identity, str], referred: tuple[Identity, str]
    ) -> DiscoveryResult:
        old = {"v": 1, "nodes": [{"id": referred[0].id_text, "ws": referred[1], "last_success": int(time.time())}]}
        cache.write_text(json.dumps(old))
        registry = await serve_registry(nursery, lambda: signed_list([listed]))
        return await discover(cfg(registries=(registry,), cache=cache, want=1))

    result = with_two_nodes(body)
    assert result.proven[0].source == Source.REGISTRY, result.nodes


def test_a_cached_referral_node_is_still_found_when_the_lists_are_blocked(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"

    async def body(
        nursery: trio.Nursery, listed: tuple[Identity, str], referred: tuple[Identity, str]
    ) -> tuple[DiscoveryResult, float, DiscoveryResult, float]:
        await card_once(cache, referred)
        hole = await black_hole(nursery)
        start = trio.current_time()
        # the list's registry refuses connections (a censor's reset): nothing to wait for
        refused = await discover(cfg(registries=(f"http://127.0.0.1:{closed_port()}",), cache=cache))
        mid = trio.current_time()
        # the list's registry is black-holed: the cached node waits out the hold (1 s), then is tried
        held = await discover(cfg(registries=(f"http://127.0.0.1:{hole}",), cache=cache))
        return refused, mid - start, held, trio.current_time() - mid

    refused, refused_s, held, held_s = with_two_nodes(body)
    for result in (refused, held):
        assert [f.source for f in result.proven] == [Source.CACHE], result
    assert refused_s < 1.5, "a refused list source held the cached node back"
    assert 1.0 <= held_s < 3.0, held_s


def test_a_listed_cached_node_is_not_held_back(tmp_path: Path) -> None:
    """The cost for honest users: a cached node a trusted list named is tried at once, lists answering or not."""
    cache = tmp_path / "cache.json"

    async def body(nursery: trio.Nursery, listed: tuple[Identity, str], referred: tuple[Identity, str]) -> float:
        registry = await serve_registry(nursery, lambda: signed_list([listed]))
        await discover(cfg(registries=(registry,), cache=cache))
        hole = await black_hole(nursery)
        start = trio.current_time()
        result = await discover(cfg(registries=(f"http://127.0.0.1:{hole}",), cache=cache, want=1))
        assert [f.source for f in result.proven] == [Source.CACHE]
        return trio.current_time() - start

    assert with_two_nodes(body) < 1.0


def test_listed_follows_the_trusted_lists_of_the_last_run_that_read_one() -> None:
    """`listed` is set and cleared by the rows of the trusted lists a run read (a node a newer list dropped is
    unlisted again), and kept by a run that read none (its lists were blocked)."""
    from node.client.discovery.cache import merge_cache
    from node.client.discovery.model import Candidate

    a, b = (Identity.generate().id, "wss://a.example/v1/client"), (Identity.generate().id, "wss://b.example/v1/client")
    previous = [Candidate(id=k[0], ws=k[1], source=Source.CACHE, verified=False, last_success=1.0, listed=True)
                for k in (a, b)]  # fmt: skip

    def flags(named: set[tuple[bytes, str]] | None) -> dict[str, bool]:
        return {e["ws"]: e.get("listed", False) for e in merge_cache(previous, [], 2.0, named=named)}

    assert flags(None) == {a[1]: True, b[1]: True}
    assert flags({a}) == {a[1]: True, b[1]: False}
    assert flags(set()) == {a[1]: False, b[1]: False}
