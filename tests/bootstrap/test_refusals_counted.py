"""Registry layer: forged, replayed, malformed and banned registrations are refused, counted in /metrics, and
change nothing that is published; what the HTTP server refuses before the API sees a request is counted too."""

from __future__ import annotations

import re
import time
from pathlib import Path

import attrs
import httpx2
import trio

from bootstrap.config import REGISTRY_HTTP_LIMITS
from node.protocol.identity import Identity, decode_document, encode_document
from tests.bootstrap.util import init_registry, make_config, post, registration, running_registry
from tests.helpers import raw_http


def refused(metrics: str, reason: str) -> float:
    m = re.search(r'homing_packets_refused_total\{layer="registry",reason="' + reason + r'"\} (\S+)', metrics)
    return float(m.group(1)) if m else 0.0


async def test_refusals_are_counted_and_change_nothing(tmp_path: Path) -> None:
    init_registry(tmp_path)
    node = Identity.generate()
    async with running_registry(make_config(tmp_path)) as base, httpx2.AsyncClient(timeout=5) as client:
        ts = int(time.time())
        assert (await post(client, base, registration(node, ts=ts)))[0] == 200
        before = await client.get(f"{base}/v1/nodes")

        assert (await post(client, base, registration(node, ts=ts)))[0] == 409  # replayed ts
        doc = decode_document(registration(node, ts=ts + 1))
        doc["sig"] = bytes(64)
        assert (await post(client, base, encode_document(doc)))[0] == 400  # forged signature
        assert (await post(client, base, b"\xc1 not msgpack"))[0] == 400  # malformed

        after = await client.get(f"{base}/v1/nodes")
        assert after.headers["etag"] == before.headers["etag"], "the published list did not change"
        metrics = (await client.get(f"{base}/metrics")).text
        assert refused(metrics, "replayed") == 1
        assert refused(metrics, "forged") == 1
        assert refused(metrics, "malformed") == 1
        assert 'homing_registry_requests_total{route="post_nodes",status="200"} 1.0' in metrics


async def test_refusals_carry_their_reason_from_where_they_were_decided(tmp_path: Path) -> None:
    """#16: banned -> unadmitted, a registration for another registry -> malformed, too many -> rate_limited;
    each counted from the decision's Refusal (bootstrap/service.Outcome), not from the answer's text."""
    from bootstrap.store import Store

    init_registry(tmp_path)
    banned, node = Identity.generate(), Identity.generate()
    Store.open(tmp_path).set_banned(banned.id, time.time(), who="test")
    config = make_config(tmp_path, write_burst=3, write_rate_per_ip_per_s=0.01)
    async with running_registry(config) as base, httpx2.AsyncClient(timeout=5) as client:
        assert (await post(client, base, registration(banned)))[0] == 403
        assert (await post(client, base, registration(node, reg=Identity.generate().id)))[0] == 400
        assert (await post(client, base, registration(node)))[0] == 200
        assert (await post(client, base, registration(node, ts=int(time.time()) + 1)))[0] == 429
        metrics = (await client.get(f"{base}/metrics")).text
        assert refused(metrics, "unadmitted") == 1
        assert refused(metrics, "malformed") == 1
        assert refused(metrics, "rate_limited") == 1
        assert refused(metrics, "forged") == 0


async def test_refusals_by_the_http_layer_are_counted_while_honest_requests_are_served(tmp_path: Path) -> None:
    """An oversized request head (431), an oversized body (413) and a connection over the per-IP cap (503) are
    refused by node/net/httpserver.py before the API sees them; each counts in
    homing_packets_refused_total{layer="registry"} under its reason, and the registry keeps serving."""
    init_registry(tmp_path)
    config = make_config(tmp_path, http=attrs.evolve(REGISTRY_HTTP_LIMITS, connections_per_ip_max=2))
    with trio.fail_after(20):
        async with running_registry(config) as base:
            port = int(base.rsplit(":", 1)[1])
            big_head = b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n"
            assert (await raw_http(port, big_head)).startswith(b"HTTP/1.1 431")
            big_body = b"POST /v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\n" + b"z" * 9000
            assert (await raw_http(port, big_body)).startswith(b"HTTP/1.1 413")

            held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
            for s in held:  # a served request proves the registry counts the connection (it stays open)
                await s.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await s.receive_some(4096)).startswith(b"HTTP/1.1 200")
            assert (await raw_http(port, b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 503")

            # honest requests on the connections the registry holds: a registration, then the metrics
            doc = registration(Identity.generate())
            post_head = f"POST /v1/nodes HTTP/1.1\r\nHost: x\r\nContent-Length: {len(doc)}\r\nConnection: close\r\n\r\n"
            assert (await raw_http(port, post_head.encode() + doc, held[1])).startswith(b"HTTP/1.1 200")
            answer = await raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", held[0])
            assert answer.startswith(b"HTTP/1.1 200")
            metrics = answer.decode()
            assert refused(metrics, "oversized") == 2  # the head and the body
            assert refused(metrics, "rate_limited") == 1  # the third connection
            assert refused(metrics, "malformed") == 0
            assert 'homing_registry_requests_total{route="post_nodes",status="200"} 1.0' in metrics
