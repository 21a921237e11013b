"""A small, generic HTTP/1.1 server on trio: a thin driver over h11 (sans-IO HTTP) with routing and limits.

Used by the bootstrap registry (docs/bootstrap.md) and the node's metrics endpoint (docs/operations.md).

Theory of operation:
- One task per connection. h11 parses and frames; this module only moves bytes between the socket and h11,
  enforces limits, and calls the handler once per complete request (bodies are read whole, up to a limit).
- Limits (all in `HttpLimits`): header bytes (h11's max incomplete event size), body bytes (413), concurrent
  connections in total and per client IP (503 then close), request rate per client IP (token bucket, 429 with
  Retry-After), a keep-alive idle timeout, a read timeout for a request once it has started, a write timeout,
  a TLS handshake timeout and a cap on requests per connection.
- Bad input never escapes a connection task: a malformed request gets 400 and the connection closes; a handler
  that raises gets 500 (logged) and the server carries on.
- Every refusal this module makes on its own, before a handler sees a request, is reported to `on_refused` with its
  `Refusal` (node/protocol/refusals.py), decided where it happens (never recovered from the answer's status):
  a request head or body over its limit (431, 413) -> oversized; a request that does not parse (400), is not
  complete within the read timeout (408), or a TLS handshake that fails or does not finish in time -> malformed;
  a connection over the total or per-IP cap (503) and a request over the per-IP rate (429) -> rate_limited.
  Whoever runs the server counts them (the registry under layer `registry`, a node under layer `http`:
  docs/operations.md, "Monitoring"); a peer that merely closes, or goes idle between requests, is not refused.
- Time comes from `trio.current_time()`, so tests can run it under `trio.testing.MockClock`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import h11
import trio

from node.net.listen import open_listeners
from node.protocol.forwarded import Network, client_address, is_trusted_proxy
from node.protocol.httplimits import HttpLimits
from node.protocol.numerals import decimal
from node.protocol.ratelimit import KeyedBuckets, address_key
from node.protocol.refusals import Refusal

log = logging.getLogger("homing.http")

_SERVER_HEADER = b"homing"
_READ_CHUNK_BYTES = 64 * 1024


@attrs.frozen(kw_only=True, slots=True)
class Request:
    method: str  # upper case, e.g. "GET"
    path: str  # the target without the query string, percent-encoding kept
    query: str
    headers: dict[str, str]  # names lower case; repeated headers joined with ", "
    body: bytes
    client_ip: str
    params: dict[str, str] = attrs.field(factory=dict)  # filled in by Router from `{name}` segments


@attrs.frozen(kw_only=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]
OnRefused = Callable[[Refusal], None]  # told of each refusal the server makes before a handler sees the request


def _ignore_refusal(reason: Refusal) -> None:
    return None


def text_response(status: int, text: str, *, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status=status, body=(text + "\n").encode("utf-8"), headers=headers)


def json_response(status: int, obj: Any, *, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return Response(status=status, body=body, content_type="application/json", headers=headers)


class Router:
    """Routes by method and path pattern; `{name}` matches one non-empty path segment.

    An unknown path gets 404, a known path with another method 405 with `Allow`; HEAD falls back to GET.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), tuple(pattern.strip("/").split("/")), handler))

    @staticmethod
    def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
        if len(pattern) != len(segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(pattern, segments, strict=True):
            if want.startswith("{") and want.endswith("}"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params

    async def __call__(self, request: Request) -> Response:
        segments = request.path.strip("/").split("/")
        allowed: list[str] = []
        for method in (request.method, "GET") if request.method == "HEAD" else (request.method,):
            for route_method, pattern, handler in self._routes:
                params = self._match(pattern, segments)
                if params is None:
                    continue
                if route_method == method:
                    return await handler(attrs.evolve(request, params=params))
                allowed.append(route_method)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            return text_response(405, f"method {request.method} not allowed here", headers=(("Allow", allow),))
        return text_response(404, "not found")


class RateLimiter:
    """Per-key token buckets (node/protocol/ratelimit.py) with a bounded number of keys. Pure: `now` passed in."""

    def __init__(self, *, rate_per_s: float, burst: int, keys_max: int) -> None:
        self._buckets: KeyedBuckets[str] = KeyedBuckets(rate_per_s, burst, keys_max)

    def allow(self, key: str, now: float) -> float:
        """Take one token for `key`. Returns 0.0 when allowed, else the seconds until a token is available."""
        if self._buckets.take(key, now):
            return 0.0
        return self._buckets.wait_s(key, now)


class _Closed(Exception):
    """The connection is over (peer closed, timed out, or we decided to close)."""


class _HttpError(Exception):
    def __init__(self, status: int, text: str, refusal: Refusal) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.refusal = refusal


class _ServerState:
    def __init__(
        self, limits: HttpLimits, trusted_proxies: tuple[Network, ...] = (), on_refused: OnRefused = _ignore_refusal
    ) -> None:
        self.limits = limits
        self.trusted_proxies = trusted_proxies
        self.on_refused = on_refused
        self.connections = 0
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.rate = RateLimiter(
            rate_per_s=limits.rate_per_ip_per_s, burst=limits.rate_per_ip_burst, keys_max=limits.rate_ips_max
        )


def _peer_ip(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return "?"
    return str(addr[0]) if isinstance(addr, tuple) else str(addr)


def _h11_response(resp: Response, *, close: bool, head: bool) -> tuple[h11.Response, bytes]:
    headers = [("Server", _SERVER_HEADER.decode())]
    if resp.status not in (204, 304):  # these have no body, and no body headers
        headers += [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body)))]
    headers += resp.headers
    if close:
        headers.append(("Connection", "close"))
    import http  # on the first answer: building HTTPStatus (~60 enum members) is ~1 ms of every start (issue #17)

    try:
        reason = http.HTTPStatus(resp.status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    body = b"" if head or resp.status in (204, 304) else resp.body
    return h11.Response(status_code=resp.status, headers=headers, reason=reason), body


class _Conn:
    """One connection's driver: socket <-> h11."""

    def __init__(self, stream: trio.abc.Stream, ip: str, handler: Handler, state: _ServerState) -> None:
        self.stream = stream
        self.ip = ip
        self.handler = handler
        self.state = state
        self.limits = state.limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.header_bytes_max)

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint  # 431 when the head outgrew max_incomplete_event_size
                refusal = Refusal.OVERSIZED if status == 431 else Refusal.MALFORMED
                raise _HttpError(status, f"bad request: {exc}", refusal) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(_READ_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise _Closed from exc
            self.h11.receive_data(bytes(data))

    async def _read_request(self) -> Request:
        if not self.h11.trailing_data[0]:  # nothing pipelined: idle until the next request's first bytes
            with trio.move_on_after(self.limits.keepalive_timeout_s) as idle:
                try:
                    data = await self.stream.receive_some(_READ_CHUNK_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise _Closed from exc
            if idle.cancelled_caught or not data:
                raise _Closed
            self.h11.receive_data(bytes(data))
        with trio.move_on_after(self.limits.read_timeout_s) as reading:
            request = await self._read_rest()
        if reading.cancelled_caught:
            raise _HttpError(408, "request not received in time", Refusal.MALFORMED)  # a step too late
        return request

    async def _read_rest(self) -> Request:
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            raise _Closed
        if not isinstance(event, h11.Request):
            raise _HttpError(400, "expected a request", Refusal.MALFORMED)
        header_bytes = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
        if header_bytes > self.limits.header_bytes_max:  # h11 bounds only an incomplete head
            limit = self.limits.header_bytes_max
            raise _HttpError(431, f"request head larger than {limit} bytes", Refusal.OVERSIZED)
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        declared = decimal(headers.get("content-length", "0"))
        if declared is not None and declared > self.limits.body_bytes_max:
            raise _HttpError(413, f"body larger than {self.limits.body_bytes_max} bytes", Refusal.OVERSIZED)
        body = bytearray()
        while True:
            part = await self._next_event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.limits.body_bytes_max:
                    raise _HttpError(413, f"body larger than {self.limits.body_bytes_max} bytes", Refusal.OVERSIZED)
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise _Closed
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        return Request(
            method=event.method.decode("ascii", "replace").upper(),
            path=path,
            query=query,
            headers=headers,
            body=bytes(body),
            client_ip=client_address(self.ip, headers.get("x-forwarded-for"), self.state.trusted_proxies),
        )

    async def _send(self, resp: Response, *, close: bool, head: bool = False) -> None:
        head_event, body = _h11_response(resp, close=close, head=head)
        data = self.h11.send(head_event) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        with trio.move_on_after(self.limits.write_timeout_s) as writing:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise _Closed from exc
        if writing.cancelled_caught:
            raise _Closed

    async def _answer(self, request: Request) -> Response:
        wait = self.state.rate.allow(address_key(request.client_ip), trio.current_time())
        if wait > 0:
            self.state.on_refused(Refusal.RATE_LIMITED)
            retry = str(max(1, math.ceil(wait)))
            return text_response(429, "too many requests", headers=(("Retry-After", retry),))
        try:
            return await self.handler(request)
        except Exception:
            log.exception("event=http_handler_error method=%s path=%s", request.method, request.path[:200])
            return text_response(500, "internal error")

    async def run(self) -> None:
        served = 0
        while True:
            try:
                request = await self._read_request()
            except _HttpError as err:
                self.state.on_refused(err.refusal)
                if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(text_response(err.status, err.text), close=True)
                    await _linger(self.stream)
                return
            served += 1
            response = await self._answer(request)
            close = served >= self.limits.requests_per_connection_max or self.h11.their_state is not h11.DONE
            await self._send(response, close=close, head=request.method == "HEAD")
            if close or self.h11.our_state is not h11.DONE:
                return
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return


LINGER_S = 0.5
LINGER_BYTES_MAX = 256 * 1024


async def _linger(stream: trio.abc.Stream) -> None:
    """Before closing on an error answer, read (and drop) what the client is still sending, briefly.

    Closing a socket with unread input makes the kernel send RST, which can destroy our answer before the
    client reads it; this lets a 413/431/503 arrive. Bounded in time and bytes.
    """
    with trio.move_on_after(LINGER_S), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        drained = 0
        while drained < LINGER_BYTES_MAX:
            chunk = await stream.receive_some(_READ_CHUNK_BYTES)
            if not chunk:
                return
            drained += len(chunk)


async def _refuse(stream: trio.abc.Stream, text: str) -> None:
    conn = h11.Connection(h11.SERVER)
    head, body = _h11_response(text_response(503, text), close=True, head=False)
    data = (conn.send(head) or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(data)
    await _linger(stream)


def _tls_refused(exc: BaseException) -> bool:
    """Whether a failed TLS handshake was the client's bad input (not TLS, a TLS error), rather than a client that
    closed the connection before or during the handshake (a port probe, a load balancer's TCP check)."""
    cause = exc.__cause__
    return isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError)


async def _handle(
    stream: trio.SocketStream, handler: Handler, state: _ServerState, ssl_ctx: ssl.SSLContext | None
) -> None:
    ip = _peer_ip(stream)
    limits = state.limits
    over = state.connections >= limits.connections_max or (
        state.per_ip[ip] >= limits.connections_per_ip_max and not is_trusted_proxy(ip, state.trusted_proxies)
    )
    state.connections += 1
    state.per_ip[ip] += 1
    conn_stream: trio.abc.Stream = stream
    try:
        if ssl_ctx is not None:
            tls = trio.SSLStream(stream, ssl_ctx, server_side=True, https_compatible=True)
            handshook = False
            with trio.move_on_after(limits.tls_handshake_timeout_s):
                try:
                    await tls.do_handshake()
                    handshook = True
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    if _tls_refused(exc):
                        state.on_refused(Refusal.MALFORMED)
                    return
            if not handshook:
                state.on_refused(Refusal.MALFORMED)  # the handshake did not finish in time
                return
            conn_stream = tls
        if over:
            state.on_refused(Refusal.RATE_LIMITED)
            await _refuse(conn_stream, "too many connections")
            return
        with contextlib.suppress(_Closed):
            await _Conn(conn_stream, ip, handler, state).run()
    finally:
        state.connections -= 1
        state.per_ip[ip] -= 1
        if state.per_ip[ip] <= 0:
            del state.per_ip[ip]
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await trio.aclose_forcefully(conn_stream)


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: HttpLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    trusted_proxies: tuple[Network, ...] = (),
    on_refused: OnRefused = _ignore_refusal,
    key: str = "listen",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP(S) on host:port until cancelled. `task_status.started(port)` reports the bound port (for port 0);
    a port that cannot be opened raises ListenError naming `key`, the setting that gave host:port.

    With `trusted_proxies`, a request from one of them is from the client its X-Forwarded-For names
    (node/protocol/forwarded.py): `Request.client_ip` and the per-address rate are that client's, and the
    proxies' own connections are not held to `connections_per_ip_max`.

    `on_refused(reason)` is called for each refusal the server makes itself (see the module's docstring); it must
    not block or raise (a counter's `inc`)."""
    state = _ServerState(limits or HttpLimits(), trusted_proxies, on_refused)
    listeners = await open_listeners(host, port, key=key, backlog=min(4096, state.limits.connections_max))
    bound = int(listeners[0].socket.getsockname()[1])

    async def on_connection(stream: trio.SocketStream) -> None:
        await _handle(stream, handler, state, ssl_context)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(on_connection, listeners, handler_nursery=nursery)
