"""Time to the first verified, handshaken node with one discovery channel alive and the others black-holed.

    python -m bench.discovery [--runs N]

Each scenario starts a real DNS stack (knotd + unbound DoH, list published by RFC 2136), an HTTPS registry,
real WebSocket nodes doing the client handshake, and TCP black holes (accept, never answer) standing in for the
blocked channels. Discovery runs with `want=1`; the figure is wall time from the call to its return.
Target (docs/performance.md, "Discovery"): under 2 s on loopback for every channel. `cache` holds nodes a trusted
list named on an earlier run (`listed`); `cache-unlisted` holds nodes no list named (a link's or a bridge's), which
wait for the black-holed lists for `unlisted_hold_s` (1 s) by design (docs/discovery.md, "Racing and ranking").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from bootstrap.dns_cli import load_tsig_key, publish_dns
from node.client.discovery import DiscoveryConfig, discover, parse_entry
from node.client.discovery.cache import merge_cache, save_cache
from node.client.discovery.model import Found, Source
from node.protocol.identity import Identity
from node.protocol.nodelist import NodeEntry, build_node_list, make_card
from tests.discovery.servers import black_hole, serve_node, serve_registry, server_ssl_context
from tests.fixtures.dns import DnsStack, dns_stack

NAME = "_homing.example.test"
CHANNELS = ("registry", "doh", "cache", "cache-unlisted", "referral", "manual")


async def one_run(stack: DnsStack, channel: str, tmp: Path) -> float:
    registry = Identity.generate()
    async with trio.open_nursery() as nursery:
        nodes = [(i, await serve_node(nursery, i)) for i in (Identity.generate() for _ in range(3))]
        now = int(time.time())
        entries = [NodeEntry(id=i.id, ws=u, swim="127.0.0.1:1", peer="127.0.0.1:2", seen=now) for i, u in nodes]
        doc = build_node_list(registry, entries, issued=now, expires=now + 3600)
        hole = await black_hole(nursery)
        dead_https = f"https://127.0.0.1:{hole}"
        kw: dict[str, object] = {"registries": (dead_https,), "doh": (f"{dead_https}/dns-query",), "names": (NAME,)}
        if channel == "registry":
            ctx = server_ssl_context(str(stack.dir / "server.pem"), str(stack.dir / "server.key"))
            kw["registries"] = (await serve_registry(nursery, lambda: doc, ssl_ctx=ctx),)
        elif channel == "doh":
            publish_dns(doc, name=NAME, zone="example.test", server=stack.auth, key=load_tsig_key(stack.key_file))
            kw["doh"] = (stack.doh_url,)
        elif channel in ("cache", "cache-unlisted"):
            found = [Found(id=i.id, ws=u, source=Source.MANUAL, verified=True, handshake_ms=1.0) for i, u in nodes]
            named = {(i.id, u) for i, u in nodes} if channel == "cache" else None
            save_cache(tmp / "cache.json", merge_cache([], found, time.time(), named=named))
            kw["cache"] = tmp / "cache.json"
        elif channel == "referral":
            kw["extra"] = tuple(parse_entry(make_card(i, ws=u, ts=now)) for i, u in nodes)
        else:
            kw["extra"] = tuple(parse_entry(f"{u}#{i.id_text}") for i, u in nodes)
        config = DiscoveryConfig(trust=frozenset([registry.id]), ca_file=str(stack.ca_file), want=1, deadline_s=8.0,
                                 **kw)  # type: ignore[arg-type]  # fmt: skip
        start = time.perf_counter()
        result = await discover(config)
        elapsed = time.perf_counter() - start
        assert result.proven and result.proven[0].verified, (channel, result.errors)
        nursery.cancel_scope.cancel()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, dns_stack(Path(tmp)) as stack:
        print("| channel alive (others black-holed) | median s | max s | runs |")
        print("|---|---|---|---|")
        for channel in CHANNELS:
            times = [trio.run(one_run, stack, channel, Path(tmp)) for _ in range(args.runs)]
            print(f"| {channel} | {statistics.median(times):.3f} | {max(times):.3f} | {len(times)} |")


if __name__ == "__main__":
    main()
