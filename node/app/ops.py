"""The node's operations endpoint (docs/operations.md): `/metrics`, `/healthz`, `/v1/members`, on the metrics port.

A thin set of handlers over node/net/httpserver.py; keep the port on loopback or a private network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.app.metrics import NodeMetrics
from node.net.httpserver import HttpLimits, Request, Response, Router, json_response, text_response

# The metrics port is for operators and Prometheus: small bodies, a modest rate.
OPS_LIMITS = HttpLimits(body_bytes_max=1024, connections_max=64, rate_per_ip_per_s=20.0, rate_per_ip_burst=50)


def ops_router(
    *,
    metrics: NodeMetrics,
    members: Callable[[], dict[str, Any]],
    healthy: Callable[[], bool],
    refresh: Callable[[], None] = lambda: None,
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
    router.add("GET", "/v1/members", get_members)
    return router
