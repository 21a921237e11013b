"""Registry layer: forged, replayed, malformed and banned registrations are refused, counted in /metrics, and
change nothing that is published."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx2

from node.protocol.identity import Identity, decode_document, encode_document
from tests.bootstrap.util import init_registry, make_config, post, registration, running_registry


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
