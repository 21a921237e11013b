"""The node's operations endpoint (docs/operations.md): `/metrics`, `/healthz`, `/v1/members`, `/v1/clients`, on
the metrics port.

`/v1/clients` gives client connection counts per address range (IPv4 /24, IPv6 /48; the `RANGES_MAX` largest),
never a client id or a full address: enough to see a flood or a big NAT, not who is connected.

A thin set of handlers over node/net/httpserver.py; keep the port on loopback or a private network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from node.app.metrics import NodeMetrics
from node.net.httpserver import Request, Response, Router, json_response, text_response
from node.protocol.httplimits import HttpLimits

# The metrics port is for operators and Prometheus: small bodies, a modest rate.
OPS_LIMITS = HttpLimits(body_bytes_max=1024, connections_max=64, rate_per_ip_per_s=20.0, rate_per_ip_burst=50)
RANGES_MAX = 50  # ranges listed by /v1/clients, largest first
V4_PREFIX, V6_PREFIX = 24, 48


def range_of(address_key: str) -> str:
    """The operator-facing range of a per-address key: an IPv4 /24, an IPv6 /48; anything else is "other"."""
    try:
        net = ipaddress.ip_network(address_key, strict=False)
    except ValueError:
        return "other"
    prefix = V4_PREFIX if net.version == 4 else V6_PREFIX
    return str(net.supernet(new_prefix=prefix)) if net.prefixlen > prefix else str(net)


def range_counts(per_address: Mapping[str, int], *, top: int = RANGES_MAX) -> dict[str, Any]:
    """The /v1/clients document: connections summed per range, the `top` largest (ties by prefix)."""
    sums: dict[str, int] = {}
    for key, n in per_address.items():
        r = range_of(key)
        sums[r] = sums.get(r, 0) + n
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "ranges": [{"prefix": p, "connections": n} for p, n in ranked[:top]],
        "ranges_total": len(sums),
        "connections": sum(sums.values()),
    }


def ops_router(
    *,
    metrics: NodeMetrics,
    members: Callable[[], dict[str, Any]],
    healthy: Callable[[], bool],
    refresh: Callable[[], None] = lambda: None,
    per_address: Callable[[], Mapping[str, int]] = dict,
) -> Router:
    """`members()` returns the /v1/members document; `refresh()` updates gauges just before a scrape."""
    router = Router()

    async def get_metrics(request: Request) -> Response:
        refresh()
        return Response(status=200, body=metrics.render(), content_type=NodeMetrics.CONTENT_TYPE)

    async def get_health(request: Request) -> Response:
        if healthy():
            return text_response(200, "ok")
        return text_response(503, "not serving")

    async def get_members(request: Request) -> Response:
        return json_response(200, members())

    router.add("GET", "/metrics", get_metrics)
    router.add("GET", "/healthz", get_health)

    async def get_clients(request: Request) -> Response:
        return json_response(200, range_counts(per_address()))

    router.add("GET", "/v1/members", get_members)
    router.add("GET", "/v1/clients", get_clients)
    return router
