"""node.net.httpserver over real loopback sockets: routing, keep-alive, limits, bad input, timeouts, TLS."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
import pytest
import trio
import trio.testing

from node.net.httpserver import RateLimiter, Request, Response, Router, serve_http, text_response
from node.protocol.httplimits import HttpLimits
from node.protocol.refusals import Refusal
from tests.helpers import raw_http


async def echo(request: Request) -> Response:
    return text_response(200, f"{request.method} {request.params.get('name', '-')} {len(request.body)}")


async def boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


def make_router() -> Router:
    router = Router()
    router.add("GET", "/hello/{name}", echo)
    router.add("POST", "/hello/{name}", echo)
    router.add("GET", "/boom", boom)
    return router


def serve(
    limits: HttpLimits,
    body: Callable[[int], Awaitable[None]],
    *,
    clock: trio.abc.Clock | None = None,
    ssl_context: ssl.SSLContext | None = None,
    refused: list[Refusal] | None = None,
) -> None:
    async def main() -> None:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    lambda task_status: serve_http(
                        make_router(),
                        "127.0.0.1",
                        0,
                        limits=limits,
                        ssl_context=ssl_context,
                        on_refused=(refused if refused is not None else []).append,
                        task_status=task_status,
                    )
                )
                await body(port)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


def test_routing_keepalive_head_and_errors() -> None:
    async def body(port: int) -> None:
        base = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient() as c:
            r = await c.get(f"{base}/hello/world")
            assert (r.status_code, r.text) == (200, "GET world 0\n")
            r = await c.post(f"{base}/hello/x", content=b"12345")
            assert r.text == "POST x 5\n"
            head = await c.head(f"{base}/hello/world")
            assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "13"
            assert (await c.get(f"{base}/nothing")).status_code == 404
            r = await c.delete(f"{base}/hello/x")
            assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
            assert (await c.get(f"{base}/boom")).status_code == 500
            assert (await c.get(f"{base}/hello/again")).status_code == 200  # still serving
        two = await raw_http(
            port,
            b"GET /hello/a HTTP/1.1\r\nHost: x\r\n\r\nGET /hello/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert two.count(b"HTTP/1.1 200") == 2 and b"GET a 0" in two and b"GET b 0" in two
        assert (await raw_http(port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")

    serve(HttpLimits(), body)


def test_size_limits() -> None:
    async def body(port: int) -> None:
        big_header = b"GET /hello/a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        assert (await raw_http(port, big_header)).startswith(b"HTTP/1.1 431")
        declared = b"POST /hello/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
        assert (await raw_http(port, declared)).startswith(b"HTTP/1.1 413")
        chunked = (
            b"POST /hello/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"400\r\n"
            + b"z" * 1024
            + b"\r\n"
            + b"400\r\n"
            + b"z" * 1024
            + b"\r\n0\r\n\r\n"
        )
        assert (await raw_http(port, chunked)).startswith(b"HTTP/1.1 413")

    serve(HttpLimits(header_bytes_max=4096, body_bytes_max=1500), body)


def test_request_rate_per_ip() -> None:
    async def body(port: int) -> None:
        async with httpx2.AsyncClient() as c:
            codes = [(await c.get(f"http://127.0.0.1:{port}/hello/a")).status_code for _ in range(6)]
        assert codes[:4] == [200] * 4 and codes[4:] == [429, 429]

    serve(HttpLimits(rate_per_ip_per_s=0.001, rate_per_ip_burst=4), body)


def test_connection_limit_per_ip() -> None:
    async def body(port: int) -> None:
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for s in held:  # a served request proves the server has counted the connection (it stays open)
            await s.send_all(b"GET /hello/a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await s.receive_some(4096)).startswith(b"HTTP/1.1 200")
        assert (await raw_http(port, b"GET /hello/a HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 503")
        for s in held:
            await s.aclose()

    serve(HttpLimits(connections_per_ip_max=2), body)


def test_idle_and_slow_requests_time_out() -> None:
    async def body(port: int) -> None:
        # a client that connects and says nothing is dropped after the keep-alive timeout (virtual time)
        start = trio.current_time()
        assert await raw_http(port, b"") == b""
        assert 5 <= trio.current_time() - start < 6
        # a request that starts but never finishes gets 408 after the read timeout
        assert (await raw_http(port, b"GET /hello/a HTTP/1.1\r\nHo")).startswith(b"HTTP/1.1 408")

    serve(HttpLimits(keepalive_timeout_s=5, read_timeout_s=2), body, clock=trio.testing.MockClock(autojump_threshold=0))


def test_each_refusal_is_reported_with_its_reason() -> None:
    """`on_refused` hears of every request the server refuses itself, with the reason decided where it refused
    (the registry and the node count these: docs/operations.md, "Monitoring"); an idle client is not refused."""
    refused: list[Refusal] = []

    async def body(port: int) -> None:
        assert (await raw_http(port, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await raw_http(port, b"GET /hello/a HTTP/1.1\r\nHo")).startswith(b"HTTP/1.1 408")
        assert await raw_http(port, b"") == b""  # idle until the keep-alive timeout: closed, not refused
        assert refused == [Refusal.MALFORMED, Refusal.MALFORMED]
        async with httpx2.AsyncClient() as c:
            codes = [(await c.get(f"http://127.0.0.1:{port}/hello/a")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert refused == [Refusal.MALFORMED, Refusal.MALFORMED, Refusal.RATE_LIMITED]

    limits = HttpLimits(keepalive_timeout_s=5, read_timeout_s=2, rate_per_ip_per_s=0.001, rate_per_ip_burst=2)
    serve(limits, body, clock=trio.testing.MockClock(autojump_threshold=0), refused=refused)


def test_rate_limiter_forgets_least_recently_used() -> None:
    rl = RateLimiter(rate_per_s=1.0, burst=1, keys_max=2)
    assert rl.allow("a", 0.0) == 0.0 and rl.allow("a", 0.0) == pytest.approx(1.0)
    assert rl.allow("a", 1.0) == 0.0
    rl.allow("b", 1.0)
    rl.allow("c", 1.0)  # forgets "a": it starts with a full bucket again
    assert rl.allow("a", 1.0) == 0.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_tls(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))

    async def body(port: int) -> None:
        async with httpx2.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as c:
            r = await c.get(f"https://127.0.0.1:{port}/hello/tls")
            assert r.text == "GET tls 0\n"
        async with httpx2.AsyncClient() as c:  # the system store does not trust our self-signed cert
            with pytest.raises(httpx2.ConnectError):
                await c.get(f"https://127.0.0.1:{port}/hello/tls")
        assert await raw_http(port, b"GET / HTTP/1.1\r\n\r\n") == b""  # plain HTTP on a TLS port: dropped

    serve(HttpLimits(), body, ssl_context=ctx)


def test_failed_and_slow_tls_handshakes_are_reported(tls_files: tuple[Path, Path]) -> None:
    """Plain HTTP on the TLS port and a handshake that does not finish in time are refused as malformed; a client
    that connects and closes (a port probe) is not reported."""
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    refused: list[Refusal] = []

    async def body(port: int) -> None:
        probe = await trio.open_tcp_stream("127.0.0.1", port)
        await probe.aclose()
        assert await raw_http(port, b"GET / HTTP/1.1\r\n\r\n") == b""  # not TLS
        assert refused == [Refusal.MALFORMED]
        start = trio.current_time()
        assert await raw_http(port, b"") == b""  # says nothing: dropped at the handshake timeout
        assert trio.current_time() - start >= 3
        assert refused == [Refusal.MALFORMED, Refusal.MALFORMED]

    limits = HttpLimits(tls_handshake_timeout_s=3)
    serve(limits, body, clock=trio.testing.MockClock(autojump_threshold=0), ssl_context=ctx, refused=refused)
