"""A node's metrics/health HTTP server counts what it refuses before a handler sees a request (node/net/httpserver.py)
in homing_packets_refused_total{layer="http"} (docs/operations.md, "Monitoring"), and keeps answering."""

from __future__ import annotations

from pathlib import Path

import trio

from node.app.ops import OPS_LIMITS
from node.app.service import NodeHandle, run_node
from node.protocol.identity import Identity
from tests.helpers import raw_http, refused_by_reason
from tests.integration.cluster import loopback_config


async def test_the_metrics_port_counts_what_its_http_server_refuses(tmp_path: Path) -> None:
    """An oversized head (431), an oversized body (413), a request line that does not parse (400) and a connection
    over the server's cap (503): each counted under its reason; the node still answers a scrape."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node: NodeHandle = await nursery.start(run_node, loopback_config(tmp_path / "n0"), Identity.generate())
            port = node.ports["metrics"]
            big_head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n"
            assert (await raw_http(port, big_head)).startswith(b"HTTP/1.1 431")
            big_body = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"z" * 2000
            assert (await raw_http(port, big_body)).startswith(b"HTTP/1.1 413")
            assert (await raw_http(port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")

            # the server's cap (64 connections) from two other loopback addresses, each under its request burst (50)
            sources = ("127.0.0.2", "127.0.0.3")
            per_source = OPS_LIMITS.connections_max // len(sources)
            assert per_source < OPS_LIMITS.rate_per_ip_burst and per_source <= OPS_LIMITS.connections_per_ip_max
            held = [
                await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
                for source in sources
                for _ in range(per_source)
            ]
            for s in held:  # a served request proves the node counts the connection (it stays open)
                await s.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await s.receive_some(4096)).startswith(b"HTTP/1.1 200")
            assert (await raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 503")

            answer = await raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", held[0])
            assert answer.startswith(b"HTTP/1.1 200"), "the node still answers an honest scrape"
            refused = refused_by_reason(answer.decode(), "http")
            assert refused["oversized"] == 2  # the head and the body
            assert refused["malformed"] == 1  # the request line that does not parse
            assert refused["rate_limited"] == 1  # the connection over the cap
            assert refused["forged"] == refused["replayed"] == refused["unadmitted"] == 0
            for s in held[1:]:
                await s.aclose()
            node.request_shutdown()
