"""The registry's HTTP API v1 (docs/bootstrap.md) on `node.net.httpserver`.

- `GET /v1/nodes`: the cached signed list; msgpack by default, JSON on `Accept: application/json`;
  `ETag` + `If-None-Match` -> 304; `Cache-Control: no-cache` (caches must revalidate, which the ETag makes cheap).
- `POST /v1/nodes`: a `node-register` document (msgpack body, or JSON with `Content-Type: application/json`).
- `DELETE /v1/nodes/{id}`: a `node-leave` document signed by that node.
- `GET /v1/bridges`: a `bridge-list` document of a few bridges' cards, chosen for the requester's network (/16
  IPv4, /48 IPv6, after trusted proxies) and the current period (docs/discovery.md, "Bridges"); per-network rate
  limit (429 with Retry-After); `Cache-Control: private, no-store` (each network gets its own answer).
- `GET /healthz`: 200 `ok` while serving (the database answers).
- `GET /metrics`: Prometheus text: `homing_packets_refused_total{layer="registry",reason}` for every refused
  request (the same series the nodes use for their layers) and `homing_registry_requests_total{route,status}`.
  Each refusal carries its `Refusal` (node/protocol/refusals.py) from where it was decided: a parse error's
  exception, the registry rule's `Refused`, the rate limiter; nothing is recovered from the answer's text.
  What the HTTP server refuses before the API sees a request (an oversized head or body, a connection over the
  per-IP cap, the shared per-IP rate: node/net/httpserver.py) counts under the same series through
  `RegistryMetrics.http_refused`, which bootstrap/app.py passes to the server as its `on_refused`.
- Per-address write limits are keyed by `address_key` of the client address, which behind trusted proxies
  (`--trusted-proxy`) is the one their X-Forwarded-For names (node/protocol/forwarded.py).
Answers to POST/DELETE and every error are a map: `{"status": ...}` or `{"error": CODE, "reason": TEXT}`,
in JSON when the request asked for it (Accept or Content-Type application/json), else msgpack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bootstrap.service import RegistryService
from node.net.httpserver import Handler, RateLimiter, Request, Response, Router, text_response
from node.protocol.bridges import range_key
from node.protocol.errors import RemoteProtocolError
from node.protocol.identity import (
    b64u_encode,
    decode_document,
    document_from_json,
    document_to_json,
    encode_document,
    parse_id,
)
from node.protocol.nodelist import open_leave, open_registration
from node.protocol.ratelimit import KeyedBuckets, address_key
from node.protocol.refusals import Layer, Refusal
from node.protocol.wire import packb

MSGPACK = "application/msgpack"
JSON = "application/json"

_ERROR_CODES = {
    400: "bad_request",
    403: "banned",
    404: "not_found",
    409: "stale",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    ctype = request.headers.get("content-type", "")
    return JSON in accept or (ctype.startswith(JSON) and MSGPACK not in accept)


def _answer(request: Request, status: int, obj: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    if _wants_json(request):
        body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        return Response(status=status, body=body, content_type=JSON, headers=headers)
    return Response(status=status, body=packb(obj), content_type=MSGPACK, headers=headers)


def _error(request: Request, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return _answer(request, status, {"error": _ERROR_CODES.get(status, "error"), "reason": reason}, headers)


def _parse_doc(request: Request) -> dict[str, Any]:
    """The signed document in a request body (msgpack, or JSON by Content-Type). Raises RemoteProtocolError."""
    if not request.body:
        raise RemoteProtocolError("empty body: send a signed document")
    if request.headers.get("content-type", "").startswith(JSON):
        try:
            obj = json.loads(request.body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply (it was an HTTP 500)
            raise RemoteProtocolError("body is not JSON") from exc
        return document_from_json(obj)
    return decode_document(request.body)


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


# An answer and, when it refuses the request, why (the `reason` label of homing_packets_refused_total).
Answer = tuple[Response, Refusal | None]
ApiHandler = Callable[[Request], Awaitable[Answer]]


class RegistryMetrics:
    """The registry's counters, on a registry of their own (tests run several services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refused = Counter(
            "homing_packets_refused",
            "Inputs dropped at a trust boundary (HTTP requests the server refuses itself too), by layer and reason.",
            ["layer", "reason"],
            registry=self.registry,
        )
        self.requests = Counter(
            "homing_registry_requests", "API requests answered, by route and HTTP status.", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip

    def http_refused(self, reason: Refusal) -> None:
        """A refusal the HTTP server made itself (node/net/httpserver.py `on_refused`): no route, no answer counted."""
        self.refused.labels(layer=Layer.REGISTRY.value, reason=reason.value).inc()

    def answered(self, route: str, answer: Answer) -> Response:
        response, refusal = answer
        self.requests.labels(route=route, status=str(response.status)).inc()
        if refusal is not None:
            self.refused.labels(layer=Layer.REGISTRY.value, reason=refusal.value).inc()
        return response


class RegistryApi:
    def __init__(self, service: RegistryService) -> None:
        self.service = service
        self.metrics = RegistryMetrics()
        cfg = service.config
        self.write_rate = RateLimiter(
            rate_per_s=cfg.write_rate_per_ip_per_s, burst=cfg.write_burst, keys_max=cfg.http.rate_ips_max
        )

        self.bridge_rate: KeyedBuckets[str] = KeyedBuckets(
            cfg.bridge_rate_per_range_per_s, cfg.bridge_burst, cfg.bridge_ranges_max
        )

    async def get_bridges(self, request: Request) -> Answer:
        network = range_key(request.client_ip)
        now = trio.current_time()
        if not self.bridge_rate.take(network, now):
            retry = str(max(1, math.ceil(self.bridge_rate.wait_s(network, now))))
            answer = _error(request, 429, "too many bridge requests from your network", (("Retry-After", retry),))
            return answer, Refusal.RATE_LIMITED
        doc = self.service.bridge_list(network)
        headers = (("Cache-Control", "private, no-store"), ("Vary", "Accept"), ("Access-Control-Allow-Origin", "*"))
        if JSON in request.headers.get("accept", ""):
            body = json.dumps(document_to_json(doc), sort_keys=True, separators=(",", ":")).encode()
            return Response(status=200, body=body, content_type=JSON, headers=headers), None
        return Response(status=200, body=encode_document(doc), content_type=MSGPACK, headers=headers), None

    def _rate_limited(self, request: Request) -> Answer | None:
        wait = self.write_rate.allow(address_key(request.client_ip), trio.current_time())
        if wait <= 0:
            return None
        retry = str(max(1, math.ceil(wait)))
        response = _error(request, 429, "too many registrations from this address", (("Retry-After", retry),))
        return response, Refusal.RATE_LIMITED

    async def get_nodes(self, request: Request) -> Answer:
        return self._get_nodes(request), None

    def _get_nodes(self, request: Request) -> Response:
        cached = self.service.signed_list()
        as_json = JSON in request.headers.get("accept", "")
        etag = cached.etag[:-1] + '-j"' if as_json else cached.etag
        # The list is public and signed: any web page may read it (browser clients race the registry, docs/web.md).
        headers = (
            ("ETag", etag),
            ("Cache-Control", "no-cache"),
            ("Vary", "Accept"),
            ("Access-Control-Allow-Origin", "*"),
        )
        inm = request.headers.get("if-none-match")
        if inm is not None and _etag_matches(inm, etag):
            return Response(status=304, headers=headers, content_type=JSON if as_json else MSGPACK)
        if as_json:
            return Response(status=200, body=cached.json, content_type=JSON, headers=headers)
        return Response(status=200, body=cached.msgpack, content_type=MSGPACK, headers=headers)

    async def get_rotation(self, request: Request) -> Answer:
        """GET /v1/rotation: the registry's key rotation statements (docs/bootstrap.md), `rot` as served with the
        list, and the key in use."""
        rot = self.service.rot
        obj = {"key": self.service.identity.id_text, "rot": b64u_encode(rot) if _wants_json(request) else rot}
        return _answer(request, 200, obj), None

    async def post_nodes(self, request: Request) -> Answer:
        limited = self._rate_limited(request)
        if limited is not None:
            return limited
        try:
            reg = open_registration(_parse_doc(request))
        except RemoteProtocolError as exc:
            return _error(request, 400, str(exc)), exc.refusal
        outcome = await self.service.register(reg)
        if outcome.http_status != 200:
            return _error(request, outcome.http_status, outcome.reason), outcome.refusal
        return _answer(request, 200, {"status": outcome.status, "ttl": outcome.ttl}), None

    async def delete_node(self, request: Request) -> Answer:
        limited = self._rate_limited(request)
        if limited is not None:
            return limited
        try:
            path_id = parse_id(request.params["id"])
        except ValueError as exc:
            return _error(request, 400, f"bad node id in path: {exc}"), Refusal.MALFORMED
        try:
            node_id, ts = open_leave(_parse_doc(request))
        except RemoteProtocolError as exc:
            return _error(request, 400, str(exc)), exc.refusal
        if node_id != path_id:
            return _error(request, 400, "the leave document is for another node than the path names"), Refusal.MALFORMED
        outcome = await self.service.leave(node_id, ts)
        if outcome.http_status != 200:
            return _error(request, outcome.http_status, outcome.reason), outcome.refusal
        return _answer(request, 200, {"status": outcome.status}), None

    async def healthz(self, request: Request) -> Response:
        self.service.reader.generation()  # raises (-> 500) if the database is unusable
        return text_response(200, "ok")


def make_handler(service: RegistryService, api: RegistryApi | None = None) -> Handler:
    """The registry's router. Pass `api` to keep hold of its metrics (bootstrap/app.py counts the HTTP server's own
    refusals on them)."""
    api = api if api is not None else RegistryApi(service)
    router = Router()

    def counted(route: str, fn: ApiHandler) -> Handler:
        async def handler(request: Request) -> Response:
            return api.metrics.answered(route, await fn(request))

        return handler

    async def metrics(request: Request) -> Response:
        return Response(status=200, body=generate_latest(api.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    router.add("GET", "/v1/nodes", counted("get_nodes", api.get_nodes))
    router.add("POST", "/v1/nodes", counted("post_nodes", api.post_nodes))
    router.add("GET", "/v1/rotation", counted("get_rotation", api.get_rotation))
    router.add("DELETE", "/v1/nodes/{id}", counted("delete_node", api.delete_node))
    router.add("GET", "/v1/bridges", counted("get_bridges", api.get_bridges))
    router.add("GET", "/healthz", api.healthz)
    router.add("GET", "/metrics", metrics)
    return router
